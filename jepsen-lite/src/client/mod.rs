//! HTTP client of one node, classifying every answer as Jepsen does:
//! ok, fail (definitely not applied) or info (outcome unknown). Values are
//! padded to the run's value size on the way out and reduced to the unique
//! value on the way back (`padding`).

pub mod padding;
pub mod retrying;

use std::time::Duration;

use serde_json::{json, Value};

pub use padding::Padding;
pub use retrying::RetryingClient;

use crate::history::Observed;

/// Outcome of one request.
#[derive(Clone, Debug)]
pub enum Outcome<T> {
    /// It completed with this result.
    Ok(T),
    /// It definitely did not take effect.
    Fail(String),
    /// Unknown whether it took effect.
    Info(String),
}

impl<T> Outcome<T> {
    /// The result, or the event type of the failure with its error recorded
    /// on `done` (`Fail`: did not take effect; `Info`: unknown).
    pub fn or_record(
        self,
        done: &mut crate::history::Event,
    ) -> Result<T, crate::history::EventType> {
        match self {
            Outcome::Ok(v) => Ok(v),
            Outcome::Fail(e) => {
                done.error = Some(e);
                Err(crate::history::EventType::Fail)
            }
            Outcome::Info(e) => {
                done.error = Some(e);
                Err(crate::history::EventType::Info)
            }
        }
    }
}

/// How an answer `410 removed` is recorded: the node was removed from the
/// cluster and served nothing (a write it answered so was not applied).
pub const REMOVED: &str = "410 removed";

/// A completed read: what was found, and the revision the read reflects.
#[derive(Clone, Debug)]
pub struct ReadResult {
    /// The key-value, `None` when not found.
    pub kv: Option<Observed>,
    /// Response revision.
    pub revision: Option<u64>,
}

/// A completed CAS.
#[derive(Clone, Debug)]
pub struct CasResult {
    /// Whether the compare held (and the put happened).
    pub succeeded: bool,
    /// Response revision.
    pub revision: Option<u64>,
    /// The failure branch's read, when it ran.
    pub read: Option<Observed>,
}

/// Client of one node's HTTP API.
#[derive(Clone)]
pub struct NodeClient {
    http: reqwest::Client,
    base: String,
    padding: Padding,
    /// Node id this client talks to.
    pub node: u64,
}

fn observed(v: &Value, padding: &Padding) -> Option<Observed> {
    Some(Observed {
        value: padding.unpad(v.get("value")?.as_str()?),
        version: v.get("version")?.as_u64()?,
        mod_revision: v.get("mod_revision")?.as_u64()?,
        create_revision: v.get("create_revision")?.as_u64()?,
    })
}

impl NodeClient {
    /// A client of the node serving `addr`, giving up on a request after `timeout`.
    pub fn new(node: u64, addr: &str, timeout: Duration) -> anyhow::Result<Self> {
        let http = crate::tls::apply(reqwest::Client::builder())
            .timeout(timeout)
            .connect_timeout(Duration::from_millis(500))
            .pool_max_idle_per_host(4)
            .build()?;
        Ok(Self {
            http,
            base: crate::tls::url(addr),
            padding: Padding::none(),
            node,
        })
    }

    /// The same client, sending values padded by `padding`.
    pub fn with_padding(mut self, padding: Padding) -> Self {
        self.padding = padding;
        self
    }

    /// How this client pads values.
    pub fn padding(&self) -> &Padding {
        &self.padding
    }

    /// Base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Outcome<(u16, Value)> {
        match req.headers(crate::auth::headers()).send().await {
            Err(e) if e.is_connect() => Outcome::Fail(format!("connect: {e}")),
            Err(e) if e.is_timeout() => Outcome::Info("client timeout".to_string()),
            Err(e) => Outcome::Info(format!("transport: {e}")),
            Ok(resp) => {
                let status = resp.status().as_u16();
                match resp.bytes().await {
                    Err(e) => Outcome::Info(format!("body: {e}")),
                    Ok(b) => {
                        let v: Value = serde_json::from_slice(&b).unwrap_or(Value::Null);
                        Outcome::Ok((status, v))
                    }
                }
            }
        }
    }

    /// Classifies an error answer.
    fn error<T>(status: u16, v: &Value) -> Outcome<T> {
        let code = v
            .pointer("/error/code")
            .and_then(Value::as_str)
            .unwrap_or("?")
            .to_string();
        match (status, code.as_str()) {
            // Refused before it was proposed: no leader, or the leader's
            // backlog is full.
            (503, "no_leader" | "too_many_requests") => Outcome::Fail(code),
            // A removed node refuses every request before handling it.
            (410, _) => Outcome::Fail(REMOVED.to_string()),
            (400..=499, _) => Outcome::Fail(format!("{status} {code}")),
            _ => Outcome::Info(format!("{status} {code}")),
        }
    }

    /// `GET /v1/kv/{key}` (linearizable).
    pub async fn read(&self, key: &str) -> Outcome<ReadResult> {
        let url = format!("{}/v1/kv/{key}", self.base);
        match self.send(self.http.get(url)).await {
            Outcome::Ok((200, v)) => Outcome::Ok(ReadResult {
                kv: v.get("kv").and_then(|kv| observed(kv, &self.padding)),
                revision: v.get("revision").and_then(Value::as_u64),
            }),
            Outcome::Ok((404, v)) if v.pointer("/error/code") == Some(&json!("key_not_found")) => {
                Outcome::Ok(ReadResult {
                    kv: None,
                    revision: v.get("revision").and_then(Value::as_u64),
                })
            }
            Outcome::Ok((s, v)) => Self::error(s, &v),
            Outcome::Fail(e) => Outcome::Fail(e),
            Outcome::Info(e) => Outcome::Info(e),
        }
    }

    /// `PUT /v1/kv/{key}` of `value` (padded); the revision of the write.
    pub async fn write(&self, key: &str, value: &str) -> Outcome<Option<u64>> {
        let url = format!("{}/v1/kv/{key}", self.base);
        match self
            .send(self.http.put(url).body(self.padding.pad(value)))
            .await
        {
            Outcome::Ok((200, v)) => Outcome::Ok(v.get("revision").and_then(Value::as_u64)),
            Outcome::Ok((s, v)) => Self::error(s, &v),
            Outcome::Fail(e) => Outcome::Fail(e),
            Outcome::Info(e) => Outcome::Info(e),
        }
    }

    /// Compare value = `expected`, then put `value` (both padded: the
    /// compare is on the whole stored value); the failure branch reads.
    pub async fn cas(&self, key: &str, expected: &str, value: &str) -> Outcome<CasResult> {
        let body = json!({
            "compare": [{"key": key, "target": "value", "op": "=", "value": self.padding.pad(expected)}],
            "success": [{"put": {"key": key, "value": self.padding.pad(value)}}],
            "failure": [{"get": {"key": key}}],
        });
        let url = format!("{}/v1/txn", self.base);
        match self.send(self.http.post(url).json(&body)).await {
            Outcome::Ok((200, v)) => {
                let succeeded = v.get("succeeded").and_then(Value::as_bool).unwrap_or(false);
                let read = v
                    .pointer("/responses/0/get/kvs/0")
                    .and_then(|kv| observed(kv, &self.padding));
                Outcome::Ok(CasResult {
                    succeeded,
                    revision: v.get("revision").and_then(Value::as_u64),
                    read,
                })
            }
            Outcome::Ok((s, v)) => Self::error(s, &v),
            Outcome::Fail(e) => Outcome::Fail(e),
            Outcome::Info(e) => Outcome::Info(e),
        }
    }

    /// `GET /v1/status`, without the data-plane view (which asks every
    /// other member, and would wait for a paused one).
    pub async fn status(&self) -> Option<Value> {
        match self
            .send(
                self.http
                    .get(format!("{}/v1/status?data_plane=false", self.base)),
            )
            .await
        {
            Outcome::Ok((200, v)) => Some(v),
            _ => None,
        }
    }

    /// `GET /health/ready` answered 200.
    pub async fn ready(&self) -> bool {
        matches!(
            self.send(self.http.get(format!("{}/health/ready", self.base)))
                .await,
            Outcome::Ok((200, _))
        )
    }

    /// `PUT` (action) or `DELETE` (`None`) a failpoint.
    pub async fn failpoint(&self, name: &str, action: Option<&str>) -> anyhow::Result<()> {
        let url = format!("{}/debug/failpoints/{name}", self.base);
        let req = match action {
            Some(a) => self.http.put(url).body(a.to_string()),
            None => self.http.delete(url),
        };
        let resp = req.send().await?;
        anyhow::ensure!(
            resp.status() != reqwest::StatusCode::NOT_FOUND,
            "failpoint {name} on node {}: HTTP 404, this ballastd has no failpoints; build one with `cargo build -p ballast-store --features failpoints --bin ballastd` (and pass it with --ballastd if it is elsewhere)",
            self.node
        );
        anyhow::ensure!(
            resp.status().is_success(),
            "failpoint {name} on node {}: HTTP {} (is ballastd built with --features failpoints?)",
            self.node,
            resp.status()
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_before_proposing_are_failures() {
        let err = |code: &str| json!({"error": {"code": code}});
        let kind = |o: Outcome<()>| match o {
            Outcome::Ok(()) => "ok",
            Outcome::Fail(_) => "fail",
            Outcome::Info(_) => "info",
        };
        assert_eq!(kind(NodeClient::error(503, &err("no_leader"))), "fail");
        assert_eq!(
            kind(NodeClient::error(503, &err("too_many_requests"))),
            "fail"
        );
        assert_eq!(
            kind(NodeClient::error(413, &err("request_too_large"))),
            "fail"
        );
        assert_eq!(kind(NodeClient::error(503, &err("timeout"))), "info");
        assert!(
            matches!(NodeClient::error::<()>(410, &err("removed")), Outcome::Fail(e) if e == REMOVED)
        );
        assert_eq!(kind(NodeClient::error(500, &err("internal"))), "info");
    }
}
