//! [`Client`] and [`ClientBuilder`]: the typed API. Each method builds a
//! [`Call`] and hands it to the [`Transport`], which owns retries.

use std::sync::Arc;
use std::time::Duration;

use reqwest::Method;
use serde::de::DeserializeOwned;
use tracing::instrument;

use crate::endpoints::{kv_path, Endpoints};
use crate::error::{Error, Result};
use crate::retry::RetryPolicy;
use crate::session::{Carrier, Session};
use crate::tls::TlsOptions;
use crate::transport::{chain, truncate, Answer, Call, Kind, Transport};
use crate::txn::{cas_result, cas_txn, CasResult, Txn, TxnResponse, WireTxnResponse};
use crate::types::{
    DeleteOptions, DeleteResponse, GetResponse, PutOptions, PutResponse, RangeOptions,
    RangeResponse, ReadOptions, Status, WireDelete, WireGet, WirePut, WireRange,
};

/// Default for [`ClientBuilder::request_timeout`].
const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Default for [`ClientBuilder::connect_timeout`].
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// A connection to a ballast cluster for control-plane work: linearizable reads,
/// writes and transactions.
///
/// Cheap to clone (the clones share the HTTP connection pool and the preferred
/// endpoint). See the [crate docs](crate) for the retry and error rules.
#[derive(Debug, Clone)]
pub struct Client {
    pub(crate) inner: Arc<Transport>,
}

/// Configures and builds a [`Client`].
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    endpoints: Vec<String>,
    request_timeout: Duration,
    connect_timeout: Duration,
    retry: RetryPolicy,
    pool_max_idle_per_endpoint: Option<usize>,
    http2: bool,
    exactly_once: bool,
    tls: TlsOptions,
    token: Option<BearerToken>,
    auto_sync: Option<Duration>,
    /// The auto-sync asks for the answering node's own view (serializable),
    /// without a read barrier: set for a [`Replica`](crate::Replica)'s client.
    pub(crate) auto_sync_local: bool,
}

/// A bearer token, kept out of `Debug` output (and so out of logs).
#[derive(Clone, PartialEq, Eq)]
pub struct BearerToken(String);

impl BearerToken {
    /// Wraps a token.
    pub fn new(token: impl Into<String>) -> Self {
        BearerToken(token.into())
    }

    /// The `Authorization` header value, marked sensitive (never logged by
    /// the HTTP stack).
    fn header(&self) -> Result<reqwest::header::HeaderValue> {
        let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {}", self.0))
            .map_err(|_| {
                Error::InvalidArgument("the token has characters a header cannot hold".to_owned())
            })?;
        value.set_sensitive(true);
        Ok(value)
    }
}

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BearerToken(<redacted>)")
    }
}

impl ClientBuilder {
    /// A builder with the defaults: 5 s request timeout, 2 s connect timeout,
    /// [`RetryPolicy::default`].
    pub fn new(endpoints: Vec<String>) -> Self {
        Self {
            endpoints,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            retry: RetryPolicy::default(),
            pool_max_idle_per_endpoint: None,
            http2: false,
            exactly_once: true,
            tls: TlsOptions::default(),
            token: None,
            auto_sync: None,
            auto_sync_local: false,
        }
    }

    /// Sends `token` as `Authorization: Bearer <token>` on every request
    /// (needed when the cluster runs with auth on).
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(BearerToken::new(token));
        self
    }

    /// Like [`ClientBuilder::token`], with a token already wrapped.
    pub fn bearer_token(mut self, token: BearerToken) -> Self {
        self.token = Some(token);
        self
    }

    /// Time limit for one attempt, from sending the request to reading the whole
    /// answer. A write that hits it is sent again under its session (see
    /// [`ClientBuilder::exactly_once`]); without one it is `Indeterminate`.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Time limit for opening a TCP connection. A write that hits it was not sent.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Attempts per call, the first included; `1` disables retries.
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.retry.max_attempts = attempts;
        self
    }

    /// No retry starts later than this after the call began.
    pub fn retry_deadline(mut self, deadline: Duration) -> Self {
        self.retry.deadline = deadline;
        self
    }

    /// Backoff after the first failed pass over all endpoints, doubling per pass
    /// up to `max` (jittered).
    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.retry.initial_backoff = initial;
        self.retry.max_backoff = max;
        self
    }

    /// The whole retry policy at once.
    pub fn retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// Exactly-once writes (on by default). Every write (put, delete, txn)
    /// carries this client's session and a sequence number, and the cluster
    /// applies it at most once; so a write whose answer was lost (timeout,
    /// broken connection, `503 timeout`) is sent again, to the next endpoint,
    /// within the retry policy's attempts and deadline, and is reported
    /// [`Error::Indeterminate`] only when the budget runs out or the cluster
    /// no longer remembers its result (see `docs/client.md`). The first
    /// write registers the session (one more round through Raft).
    ///
    /// `false`: writes carry no session and are never sent again once they
    /// may have reached a node (an unknown outcome is `Indeterminate` at
    /// once). A cluster without sessions (an older build) is detected and
    /// treated the same way.
    pub fn exactly_once(mut self, on: bool) -> Self {
        self.exactly_once = on;
        self
    }

    /// Idle keep-alive connections kept per endpoint (unbounded by default).
    /// Load generators set this to pin a client to a fixed number of connections.
    pub fn pool_max_idle_per_endpoint(mut self, max: usize) -> Self {
        self.pool_max_idle_per_endpoint = Some(max);
        self
    }

    /// Keeps the endpoints in step with the cluster's membership: about every
    /// `every` (jittered by ±10 %), a background task calls
    /// [`Client::sync_endpoints`]. Off by default. A failed sync is logged
    /// and the endpoints stay as they were; the task ends once every clone
    /// of the client is dropped. [`build`](Self::build) must then run inside
    /// a Tokio runtime, and an interval under one second is
    /// `InvalidArgument`. Any token may sync (`GET /v1/endpoints`).
    pub fn auto_sync_interval(mut self, every: Duration) -> Self {
        self.auto_sync = Some(every);
        self
    }

    /// Sends requests over HTTP/2 (prior knowledge, "h2c") instead of
    /// HTTP/1.1: one connection per endpoint carries up to 256 requests at
    /// once (the server's limit per connection), where HTTP/1.1 needs a
    /// connection per request in flight. Plain `http://` endpoints only (the
    /// client port's TLS offers HTTP/1.1); with an `https://` endpoint
    /// [`build`](Self::build) is `InvalidArgument`. Watches stay on HTTP/1.1.
    pub fn http2(mut self, on: bool) -> Self {
        self.http2 = on;
        self
    }

    /// TLS: the CA `https://` endpoints must chain to, and an optional
    /// client certificate. Without a CA only `http://` endpoints work.
    pub fn tls(mut self, tls: TlsOptions) -> Self {
        self.tls = tls;
        self
    }

    /// Trust `https://` endpoints whose certificate chains to the CA in this
    /// PEM file (read by [`build`](Self::build)).
    pub fn ca_file(mut self, path: impl AsRef<std::path::Path>) -> Self {
        self.tls = self.tls.ca_file(path);
        self
    }

    /// Present this client certificate and key (PEM files) to nodes that
    /// require one (mutual TLS).
    pub fn client_identity_files(
        mut self,
        cert: impl AsRef<std::path::Path>,
        key: impl AsRef<std::path::Path>,
    ) -> Self {
        self.tls = self.tls.identity_files(cert, key);
        self
    }

    /// Validates the settings and builds the client. No network call is made.
    /// An `https://` endpoint without a CA ([`ca_file`](Self::ca_file)) is
    /// `InvalidArgument`: the client has no built-in roots.
    pub fn build(self) -> Result<Client> {
        let endpoints = Endpoints::new(&self.endpoints)?;
        let urls = endpoints.urls();
        let https = urls.iter().find(|u| u.starts_with("https://"));
        if self.http2 {
            if let Some(url) = https {
                return Err(Error::InvalidArgument(format!(
                    "endpoint {url}: HTTP/2 is offered on plain http:// endpoints only"
                )));
            }
        }
        if !self.tls.has_ca() {
            if let Some(url) = https {
                return Err(Error::InvalidArgument(format!(
                    "endpoint {url}: https:// needs the CA that signed the cluster's \
                     certificates (ca_file / --cacert)"
                )));
            }
        }
        if self.retry.max_attempts == 0 {
            return Err(Error::InvalidArgument(
                "max_attempts must be at least 1".to_owned(),
            ));
        }
        if self.request_timeout.is_zero() || self.connect_timeout.is_zero() {
            return Err(Error::InvalidArgument(
                "timeouts must be greater than zero".to_owned(),
            ));
        }
        let auto_sync = match self.auto_sync {
            None => None,
            Some(every) if every < MIN_AUTO_SYNC_INTERVAL => {
                return Err(Error::InvalidArgument(format!(
                    "auto_sync_interval must be at least {MIN_AUTO_SYNC_INTERVAL:?}, not {every:?}"
                )));
            }
            Some(every) => match tokio::runtime::Handle::try_current() {
                Ok(runtime) => Some((runtime, every)),
                Err(_) => {
                    return Err(Error::InvalidArgument(
                        "auto_sync_interval needs a Tokio runtime: build the client inside one"
                            .to_owned(),
                    ))
                }
            },
        };
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(token) = &self.token {
            headers.insert(reqwest::header::AUTHORIZATION, token.header()?);
        }
        let mut http = reqwest::Client::builder()
            .default_headers(headers.clone())
            .timeout(self.request_timeout)
            .connect_timeout(self.connect_timeout)
            .tcp_nodelay(true)
            // Below the server's idle limit (its header read timeout, 30 s
            // by default), so a pooled connection is dropped here before
            // the server closes it under a request being sent.
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .user_agent(concat!("ballast-client/", env!("CARGO_PKG_VERSION")));
        if let Some(max) = self.pool_max_idle_per_endpoint {
            http = http.pool_max_idle_per_host(max);
        }
        if self.http2 {
            http = http.http2_prior_knowledge();
        }
        let http = self
            .tls
            .apply(http)?
            .build()
            .map_err(|e| Error::InvalidArgument(format!("HTTP client: {}", chain(&e))))?;
        let stream_http = reqwest::Client::builder()
            .default_headers(headers)
            .connect_timeout(self.connect_timeout)
            .tcp_nodelay(true)
            .user_agent(concat!("ballast-client/", env!("CARGO_PKG_VERSION")));
        let stream_http = self
            .tls
            .apply(stream_http)?
            .build()
            .map_err(|e| Error::InvalidArgument(format!("HTTP client: {}", chain(&e))))?;
        let client = Client {
            inner: Arc::new(Transport {
                http,
                stream_http,
                endpoints,
                retry: self.retry,
                session: self.exactly_once.then(Session::new),
            }),
        };
        if let Some((runtime, every)) = auto_sync {
            runtime.spawn(auto_sync_endpoints(
                Arc::downgrade(&client.inner),
                every,
                !self.auto_sync_local,
            ));
        }
        Ok(client)
    }
}

/// The shortest [`ClientBuilder::auto_sync_interval`].
const MIN_AUTO_SYNC_INTERVAL: Duration = Duration::from_secs(1);

/// Syncs the endpoints of the client behind `transport` about every `every`
/// (after a read barrier when `linearizable`) until the client is dropped.
/// It holds the client only while it syncs.
async fn auto_sync_endpoints(
    transport: std::sync::Weak<Transport>,
    every: Duration,
    linearizable: bool,
) {
    loop {
        // ±10 %, so that a fleet started together does not ask together.
        let jitter = rand::Rng::gen_range(&mut rand::thread_rng(), 0.9..1.1);
        tokio::time::sleep(every.mul_f64(jitter)).await;
        let Some(inner) = transport.upgrade() else {
            return;
        };
        let client = Client { inner };
        if let Err(e) = client.sync_endpoints_with(linearizable).await {
            tracing::warn!(error = %e, "endpoint sync failed, keeping the endpoints");
        }
    }
}

impl Client {
    /// A client with default settings. `endpoints` are `http://host:port` or
    /// `host:port`; an empty list or a malformed entry is `InvalidArgument`.
    pub fn new(endpoints: Vec<String>) -> Result<Self> {
        ClientBuilder::new(endpoints).build()
    }

    /// A builder for custom timeouts and retry settings.
    pub fn builder(endpoints: Vec<String>) -> ClientBuilder {
        ClientBuilder::new(endpoints)
    }

    /// The endpoints, normalized (`http://host:port`): those configured,
    /// or the cluster's members since the last
    /// [`sync_endpoints`](Self::sync_endpoints).
    pub fn endpoints(&self) -> Vec<String> {
        self.inner.endpoints.urls()
    }

    /// The endpoint the next call will try first.
    pub fn preferred_endpoint(&self) -> String {
        self.inner.endpoints.preferred().1.to_string()
    }

    /// Linearizable read of one key. A missing key is `Ok` with `kv: None`.
    #[instrument(skip(self), level = "debug")]
    pub async fn get(&self, key: &str) -> Result<GetResponse> {
        self.get_with(key, ReadOptions::default()).await
    }

    /// Read of one key with a chosen consistency and optional past revision.
    #[instrument(skip(self), level = "debug")]
    pub async fn get_with(&self, key: &str, options: ReadOptions) -> Result<GetResponse> {
        require_key(key)?;
        let mut query = Query::default();
        query.push("consistency", options.consistency.as_query());
        if let Some(rev) = options.revision {
            query.push("revision", rev);
        }
        let call = Call {
            method: Method::GET,
            target: format!("{}{}", kv_path(key)?, query.finish()),
            body: None,
            kind: Kind::Read,
        };
        match self.inner.execute(call).await {
            Ok(answer) => decode::<WireGet>(&answer)?.into_response(answer.revision_header),
            Err(Error::Api {
                status: 404,
                code,
                revision: Some(revision),
                ..
            }) if code == "key_not_found" => Ok(GetResponse { revision, kv: None }),
            Err(e) => Err(e),
        }
    }

    /// Reads every key starting with `prefix` (`""` = the whole key space), in
    /// key order, up to `options.limit`.
    #[instrument(skip(self), level = "debug")]
    pub async fn range(&self, prefix: &str, options: RangeOptions) -> Result<RangeResponse> {
        let answer = self.inner.execute(range_call(prefix, options)?).await?;
        decode::<WireRange>(&answer)?.into_response(answer.revision_header)
    }

    /// Sets `key` to `value`.
    #[instrument(skip(self, value), level = "debug")]
    pub async fn put(&self, key: &str, value: impl Into<Vec<u8>>) -> Result<PutResponse> {
        self.put_with(key, value, PutOptions::default()).await
    }

    /// Sets `key` to `value`, optionally returning the previous value.
    #[instrument(skip(self, value), level = "debug")]
    pub async fn put_with(
        &self,
        key: &str,
        value: impl Into<Vec<u8>>,
        options: PutOptions,
    ) -> Result<PutResponse> {
        require_key(key)?;
        let mut query = Query::default();
        if options.prev_kv {
            query.push("prev_kv", "true");
        }
        let call = Call {
            method: Method::PUT,
            target: format!("{}{}", kv_path(key)?, query.finish()),
            body: Some(("application/octet-stream", value.into())),
            kind: Kind::Write,
        };
        let answer = self.inner.write(call, Carrier::Query).await?;
        decode::<WirePut>(&answer)?.into_response(answer.revision_header)
    }

    /// Deletes `key`. Deleting a missing key succeeds with `deleted: 0`.
    #[instrument(skip(self), level = "debug")]
    pub async fn delete(&self, key: &str) -> Result<DeleteResponse> {
        self.delete_with(key, DeleteOptions::default()).await
    }

    /// Deletes every key starting with `prefix`. An empty prefix deletes every key.
    #[instrument(skip(self), level = "debug")]
    pub async fn delete_prefix(&self, prefix: &str) -> Result<DeleteResponse> {
        let options = DeleteOptions {
            prefix: true,
            ..DeleteOptions::default()
        };
        self.delete_with(prefix, options).await
    }

    /// Deletes a key or a prefix, optionally returning what was deleted.
    #[instrument(skip(self), level = "debug")]
    pub async fn delete_with(&self, key: &str, options: DeleteOptions) -> Result<DeleteResponse> {
        if !options.prefix {
            require_key(key)?;
        }
        let mut query = Query::default();
        if options.prefix {
            query.push("prefix", "true");
        }
        if options.prev_kv {
            query.push("prev_kv", "true");
        }
        let call = Call {
            method: Method::DELETE,
            target: format!("{}{}", kv_path(key)?, query.finish()),
            body: None,
            kind: Kind::Write,
        };
        let answer = self.inner.write(call, Carrier::Query).await?;
        decode::<WireDelete>(&answer)?.into_response(answer.revision_header)
    }

    /// Runs a transaction atomically, at most once (see
    /// [`ClientBuilder::exactly_once`]); an outcome that stays unknown is
    /// [`Error::Indeterminate`].
    #[instrument(
        skip(self, txn),
        level = "debug",
        fields(compare = txn.compare.len(), success = txn.success.len(), failure = txn.failure.len())
    )]
    pub async fn txn(&self, txn: Txn) -> Result<TxnResponse> {
        let body = serde_json::to_vec(&txn.to_wire())
            .map_err(|e| Error::InvalidArgument(format!("txn does not serialize: {e}")))?;
        let call = Call {
            method: Method::POST,
            target: "/v1/txn".to_owned(),
            body: Some(("application/json", body)),
            kind: Kind::Write,
        };
        let answer = self.inner.write(call, Carrier::JsonBody).await?;
        decode::<WireTxnResponse>(&answer)?.into_response(answer.revision_header)
    }

    /// Sets `key` to `new_value` only if it currently holds `expected`
    /// (`None` = only if the key does not exist). One transaction; on failure
    /// [`CasResult::current`] holds what the key held instead.
    #[instrument(skip(self, expected, new_value), level = "debug")]
    pub async fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new_value: impl Into<Vec<u8>>,
    ) -> Result<CasResult> {
        require_key(key)?;
        let resp = self.txn(cas_txn(key, expected, new_value.into())).await?;
        Ok(cas_result(resp))
    }

    /// Status of the node that answers (the preferred endpoint, or the next
    /// healthy one).
    #[instrument(skip(self), level = "debug")]
    pub async fn status(&self) -> Result<Status> {
        let call = Call {
            method: Method::GET,
            target: "/v1/status".to_owned(),
            body: None,
            kind: Kind::Read,
        };
        let answer = self.inner.execute(call).await?;
        decode::<Status>(&answer)
    }
}

/// How long an idle pooled connection is kept (see `build`).
const POOL_IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

pub(crate) fn decode<T: DeserializeOwned>(answer: &Answer) -> Result<T> {
    serde_json::from_slice(&answer.body).map_err(|e| {
        Error::Decode(format!(
            "{e} in {}",
            truncate(&String::from_utf8_lossy(&answer.body))
        ))
    })
}

fn require_key(key: &str) -> Result<()> {
    if key.is_empty() {
        return Err(Error::InvalidArgument("empty key".to_owned()));
    }
    Ok(())
}

/// A query string of simple `name=value` pairs (values here never need escaping).
#[derive(Default)]
pub(crate) struct Query(String);

impl Query {
    pub(crate) fn push(&mut self, name: &str, value: impl std::fmt::Display) {
        self.0.push(if self.0.is_empty() { '?' } else { '&' });
        self.0.push_str(name);
        self.0.push('=');
        self.0.push_str(&value.to_string());
    }

    pub(crate) fn finish(self) -> String {
        self.0
    }
}

/// The read of every key under `prefix` (also the watch start and the replica
/// bootstrap).
pub(crate) fn range_call(prefix: &str, options: RangeOptions) -> Result<Call> {
    let mut query = Query::default();
    query.push("prefix", "true");
    if let Some(limit) = options.limit {
        query.push("limit", limit);
    }
    if let Some(rev) = options.revision {
        query.push("revision", rev);
    }
    query.push("consistency", options.consistency.as_query());
    Ok(Call {
        method: Method::GET,
        target: format!("{}{}", kv_path(prefix)?, query.finish()),
        body: None,
        kind: Kind::Read,
    })
}

#[cfg(test)]
#[path = "client_test.rs"]
mod tests;
