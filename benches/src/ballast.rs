//! [`Target`] for a ballast cluster, through `ballast-client`.
//!
//! Each connection is a `ballast_client::Client` pinned to one endpoint with
//! retries off (so every failure is counted, not hidden) and a single pooled
//! connection: HTTP/1.1, or HTTP/2 shared by several clients.

use std::time::Duration;

use ballast_client::{
    Client, Compare, CompareOp, Consistency, ReadOptions, Txn, TxnOp, TxnOpResponse,
};

use crate::target::{CasOutcome, Connection, OpError, ReadConsistency, Target};

/// Drives ballastd's HTTP API.
#[derive(Debug, Clone)]
pub struct BallastTarget {
    request_timeout: Duration,
    http2: bool,
    sessions: bool,
}

impl BallastTarget {
    /// A target whose requests time out after `request_timeout`.
    pub fn new(request_timeout: Duration) -> Self {
        Self {
            request_timeout,
            http2: false,
            sessions: true,
        }
    }

    /// Whether connections speak HTTP/2 (prior knowledge) instead of HTTP/1.1.
    pub fn http2(self, on: bool) -> Self {
        Self { http2: on, ..self }
    }

    /// Whether writes carry a client session (exactly-once, the client's
    /// default).
    pub fn sessions(self, on: bool) -> Self {
        Self {
            sessions: on,
            ..self
        }
    }
}

impl Target for BallastTarget {
    type Conn = BallastConn;

    fn name(&self) -> &'static str {
        "ballast"
    }

    fn multiplexed(&self) -> bool {
        self.http2
    }

    async fn connect(&self, endpoint: &str) -> anyhow::Result<BallastConn> {
        let client = Client::builder(vec![endpoint.to_owned()])
            .request_timeout(self.request_timeout)
            .max_attempts(1)
            .pool_max_idle_per_endpoint(1)
            .http2(self.http2)
            .exactly_once(self.sessions)
            .build()?;
        Ok(BallastConn { client })
    }
}

/// One ballast connection.
#[derive(Debug, Clone)]
pub struct BallastConn {
    client: Client,
}

fn op_error(e: ballast_client::Error) -> OpError {
    match e {
        ballast_client::Error::Api { status, code, .. } => OpError(format!("{status} {code}")),
        other => OpError(other.to_string()),
    }
}

impl Connection for BallastConn {
    async fn warm_up(&self) -> Result<(), OpError> {
        self.client.status().await.map(|_| ()).map_err(op_error)
    }

    async fn put(&self, key: &str, value: &[u8]) -> Result<(), OpError> {
        self.client
            .put(key, value.to_vec())
            .await
            .map(|_| ())
            .map_err(op_error)
    }

    async fn get(&self, key: &str, consistency: ReadConsistency) -> Result<u64, OpError> {
        let options = ReadOptions {
            consistency: match consistency {
                ReadConsistency::Linearizable => Consistency::Linearizable,
                ReadConsistency::Serializable => Consistency::Serializable,
            },
            revision: None,
        };
        match self.client.get_with(key, options).await {
            Ok(resp) => resp
                .kv
                .map(|kv| kv.mod_revision)
                .ok_or_else(|| OpError("404 key_not_found".to_owned())),
            Err(e) => Err(op_error(e)),
        }
    }

    async fn cas(&self, key: &str, expected: u64, value: &[u8]) -> Result<CasOutcome, OpError> {
        let txn = Txn::new()
            .when(vec![Compare::mod_revision(key, CompareOp::Equal, expected)])
            .and_then(vec![TxnOp::put(key, value.to_vec())])
            .or_else(vec![TxnOp::get(key)]);
        let resp = self.client.txn(txn).await.map_err(op_error)?;
        if resp.succeeded {
            return Ok(CasOutcome::Swapped {
                revision: resp.revision,
            });
        }
        match resp.responses.first() {
            Some(TxnOpResponse::Get { kvs }) => Ok(CasOutcome::CompareFailed {
                current: kvs.first().map_or(0, |kv| kv.mod_revision),
            }),
            other => Err(OpError(format!(
                "failure branch answered {other:?}, not the get it asked for"
            ))),
        }
    }
}
