//! [`Target`] for an etcd cluster, through the `etcd-client` crate (gRPC).
//!
//! Each connection is one `etcd_client::Client` given a single endpoint, so one
//! HTTP/2 connection to one member. gRPC multiplexes, so clients that share a
//! connection send at the same time; the runner spreads them over
//! `--grpc-connections` connections, as the etcd baseline was measured.
//! Reads, writes and transactions mirror the ballast ones: a linearizable get
//! is etcd's default range request, a serializable one sets `serializable`.

use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, GetOptions, KvClient, Txn, TxnOp, TxnOpResponse,
};

use crate::target::{CasOutcome, Connection, OpError, ReadConsistency, Target};

/// Key read by the warm-up request; it need not exist.
const WARM_UP_KEY: &str = "ballast-bench/warm-up";

/// Drives etcd's v3 KV API.
#[derive(Debug, Clone)]
pub struct EtcdTarget {
    request_timeout: Duration,
}

impl EtcdTarget {
    /// A target whose requests (and connection attempts) time out after
    /// `request_timeout`.
    pub fn new(request_timeout: Duration) -> Self {
        Self { request_timeout }
    }
}

impl Target for EtcdTarget {
    type Conn = EtcdConn;

    fn name(&self) -> &'static str {
        "etcd"
    }

    fn multiplexed(&self) -> bool {
        true
    }

    async fn connect(&self, endpoint: &str) -> anyhow::Result<EtcdConn> {
        let options = ConnectOptions::new()
            .with_timeout(self.request_timeout)
            .with_connect_timeout(self.request_timeout);
        let client = Client::connect([endpoint], Some(options)).await?;
        Ok(EtcdConn {
            kv: client.kv_client(),
        })
    }
}

/// One etcd connection. `KvClient` methods take `&mut self`; a clone shares
/// the same channel, so each request works on a cheap clone.
#[derive(Clone)]
pub struct EtcdConn {
    kv: KvClient,
}

fn op_error(e: etcd_client::Error) -> OpError {
    match e {
        etcd_client::Error::GRpcStatus(status) => {
            OpError(format!("grpc {:?}: {}", status.code(), status.message()))
        }
        other => OpError(other.to_string()),
    }
}

fn revision(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

impl Connection for EtcdConn {
    async fn warm_up(&self) -> Result<(), OpError> {
        let options = GetOptions::new().with_serializable();
        self.kv
            .clone()
            .get(WARM_UP_KEY, Some(options))
            .await
            .map(|_| ())
            .map_err(op_error)
    }

    async fn put(&self, key: &str, value: &[u8]) -> Result<(), OpError> {
        self.kv
            .clone()
            .put(key, value, None)
            .await
            .map(|_| ())
            .map_err(op_error)
    }

    async fn get(&self, key: &str, consistency: ReadConsistency) -> Result<u64, OpError> {
        let options = match consistency {
            ReadConsistency::Linearizable => None,
            ReadConsistency::Serializable => Some(GetOptions::new().with_serializable()),
        };
        let resp = self.kv.clone().get(key, options).await.map_err(op_error)?;
        resp.kvs()
            .first()
            .map(|kv| revision(kv.mod_revision()))
            .ok_or_else(|| OpError("key not found".to_owned()))
    }

    async fn cas(&self, key: &str, expected: u64, value: &[u8]) -> Result<CasOutcome, OpError> {
        let expected = i64::try_from(expected)
            .map_err(|_| OpError(format!("revision {expected} does not fit etcd's i64")))?;
        let txn = Txn::new()
            .when([Compare::mod_revision(key, CompareOp::Equal, expected)])
            .and_then([TxnOp::put(key, value, None)])
            .or_else([TxnOp::get(key, None)]);
        let resp = self.kv.clone().txn(txn).await.map_err(op_error)?;
        if resp.succeeded() {
            let revision = resp.header().map_or(0, |h| revision(h.revision()));
            return Ok(CasOutcome::Swapped { revision });
        }
        match resp.op_responses().first() {
            Some(TxnOpResponse::Get(get)) => Ok(CasOutcome::CompareFailed {
                current: get
                    .kvs()
                    .first()
                    .map_or(0, |kv| revision(kv.mod_revision())),
            }),
            _ => Err(OpError(
                "failure branch did not answer the get it asked for".to_owned(),
            )),
        }
    }
}
