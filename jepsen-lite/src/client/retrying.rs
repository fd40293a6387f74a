//! The register workload's operations through `ballast_client::Client`
//! with its exactly-once sessions (`--client-retries`): a write whose answer
//! is lost is sent again by the client, to the next endpoint, and is
//! recorded as `info` only when the client itself reports the outcome
//! unknown ([`Error::Indeterminate`]). The checker then verifies that the
//! retries never turned one operation into two.

use std::time::Duration;

use ballast_client::{Client, Compare, CompareOp, Error, KeyValue, Txn, TxnOp, TxnOpResponse};

use super::{CasResult, Outcome, Padding, ReadResult};
use crate::history::Observed;

/// Attempts per operation: enough to ride out an election, a killed node
/// and a partition (the client's default, 6, is spent in two passes over
/// three nodes while a new leader is elected).
pub const ATTEMPTS: u32 = 40;
/// No new attempt starts later than this after an operation began.
pub const RETRY_DEADLINE: Duration = Duration::from_secs(10);

/// A `Client` of the whole cluster, preferring one node first.
#[derive(Clone)]
pub struct RetryingClient {
    client: Client,
    padding: Padding,
}

fn observed(kv: &KeyValue, padding: &Padding) -> Observed {
    Observed {
        value: padding.unpad(&String::from_utf8_lossy(&kv.value)),
        version: kv.version,
        mod_revision: kv.mod_revision,
        create_revision: kv.create_revision,
    }
}

/// How an error of a write is recorded: `fail` when it certainly was not
/// applied, else `info`.
fn write_error<T>(e: Error) -> Outcome<T> {
    if e.is_definitely_not_applied() {
        Outcome::Fail(e.to_string())
    } else {
        Outcome::Info(e.to_string())
    }
}

impl RetryingClient {
    /// A client of `endpoints` (`http://host:port`, the preferred first),
    /// each attempt limited to `timeout`.
    pub fn new(
        endpoints: Vec<String>,
        timeout: Duration,
        padding: Padding,
    ) -> anyhow::Result<Self> {
        let mut builder = Client::builder(endpoints)
            .request_timeout(timeout)
            .connect_timeout(Duration::from_millis(500))
            .max_attempts(ATTEMPTS)
            .retry_deadline(RETRY_DEADLINE)
            .tls(crate::tls::client_options());
        if let Some(token) = crate::auth::token() {
            builder = builder.token(token);
        }
        let client = builder.build()?;
        Ok(Self { client, padding })
    }

    /// A linearizable read; any error is a failed read (a read changes
    /// nothing).
    pub async fn read(&self, key: &str) -> Outcome<ReadResult> {
        match self.client.get(key).await {
            Ok(r) => Outcome::Ok(ReadResult {
                kv: r.kv.as_ref().map(|kv| observed(kv, &self.padding)),
                revision: Some(r.revision),
            }),
            Err(e) => Outcome::Fail(e.to_string()),
        }
    }

    /// Puts `value` (padded); the revision of the write.
    pub async fn write(&self, key: &str, value: &str) -> Outcome<Option<u64>> {
        match self.client.put(key, self.padding.pad(value)).await {
            Ok(r) => Outcome::Ok(Some(r.revision)),
            Err(e) => write_error(e),
        }
    }

    /// Compare value = `expected`, then put `value` (both padded); the
    /// failure branch reads.
    pub async fn cas(&self, key: &str, expected: &str, value: &str) -> Outcome<CasResult> {
        let txn = Txn::new()
            .when(vec![Compare::value(
                key,
                CompareOp::Equal,
                self.padding.pad(expected),
            )])
            .and_then(vec![TxnOp::put(key, self.padding.pad(value))])
            .or_else(vec![TxnOp::get(key)]);
        match self.client.txn(txn).await {
            Ok(r) => {
                let read = r.responses.first().and_then(|op| match op {
                    TxnOpResponse::Get { kvs } => kvs.first().map(|kv| observed(kv, &self.padding)),
                    _ => None,
                });
                Outcome::Ok(CasResult {
                    succeeded: r.succeeded,
                    revision: Some(r.revision),
                    read,
                })
            }
            Err(e) => write_error(e),
        }
    }
}
