//! # Layout
//!
//! The control-plane client for ballast, a strongly consistent configuration store.
//!
//! - `client.rs`: [`Client`] and [`ClientBuilder`], the typed async API.
//! - `transport.rs`: the single request loop: sends a call, classifies the
//!   outcome (not sent / not applied / unknown / answered) and decides what may
//!   be retried and on which endpoint.
//! - `endpoints.rs`: endpoint normalization, the preferred endpoint and leader
//!   hints, and the percent-encoding of keys into `/v1/kv/...` paths.
//! - `retry.rs`: [`RetryPolicy`], the retry budget and jittered backoff.
//! - `session.rs`: exactly-once writes: the client's session (client id,
//!   sequence numbers, registration) and the write loop that sends a write
//!   again after a lost answer.
//! - `types.rs`: options and responses for reads and single-key writes
//!   ([`KeyValue`], [`GetResponse`], [`RangeResponse`], [`Status`], ...) and the
//!   value wire encoding (UTF-8 string or base64).
//! - `txn.rs`: the [`Txn`] builder ([`Compare`], [`TxnOp`]) and [`TxnResponse`],
//!   [`CasResult`].
//! - `error.rs`: [`Error`].
//! - `tls.rs`: [`TlsOptions`]: the CA for `https://` endpoints and an
//!   optional client certificate.
//! - `watch/`: [`Client::watch`], the resuming change stream ([`WatchStream`],
//!   [`WatchEvent`], [`WatchOptions`]): the public types in `mod.rs`, the
//!   reconnect/resume engine (shared with the replica) in `engine.rs`, message
//!   decoding in `decode.rs`, the SSE parser in `sse.rs`.
//! - `admin.rs`: [`Client::compact`], [`Client::replicas`], [`Client::rollout`].
//! - `auth.rs`: tokens and roles ([`Client::create_token`], [`Client::revoke_token`],
//!   ...); a client sends its own token with [`ClientBuilder::token`].
//! - `snapshot.rs`: backups: [`Client::snapshot`] streams one from a node,
//!   [`verify_snapshot_file`] checks a saved one ([`SnapshotInfo`]).
//! - `replica/`: [`Replica`], the data plane's local, statically stable copy
//!   of a prefix (see `docs/data-plane.md`).
//!
//! # Errors and retries
//!
//! The client keeps three outcomes apart:
//!
//! - [`Error::Transport`]: no endpoint could be reached; a write was never sent.
//! - [`Error::Api`]: a node answered with an error document (`invalid_key`,
//!   `compacted`, `no_leader` after the retry budget ran out, ...).
//! - [`Error::Indeterminate`]: a write was (or may have been) applied and its
//!   answer was lost, and the client could not learn the outcome within its
//!   retry budget; read the key to find out.
//!
//! Reads (`get`, `range`, `status`) are retried across endpoints with jittered
//! exponential backoff, within [`RetryPolicy`]'s attempt count and deadline.
//! Writes (`put`, `delete`, `txn`) run under the client's session by default
//! ([`ClientBuilder::exactly_once`]): the cluster applies each at most once
//! and answers a retry with the first result, so a write whose answer was lost
//! (a timeout, a broken connection, a 503 `timeout`) is sent again, to the
//! next endpoint, within the same budget. Writes that certainly were not
//! applied (the connection could not be opened, a 503 `no_leader` /
//! `not_ready` / `too_many_requests`) are retried with or without a session.
//! Any node accepts writes (followers forward them to the leader); a 503 that
//! names the leader (`X-Ballast-Leader` or `error.leader`) sends the next
//! attempt there.
//!
//! # Example
//!
//! ```no_run
//! use ballast_client::{Client, Compare, CompareOp, Txn, TxnOp};
//!
//! # async fn run() -> Result<(), ballast_client::Error> {
//! let client = Client::new(vec![
//!     "http://127.0.0.1:2379".to_owned(),
//!     "127.0.0.1:2479".to_owned(),
//! ])?;
//!
//! let put = client.put("/services/api/timeout", "250ms").await?;
//! let got = client.get("/services/api/timeout").await?;
//! assert_eq!(got.kv.map(|kv| kv.value), Some(b"250ms".to_vec()));
//! println!("written at revision {}", put.revision);
//!
//! // Create-if-absent, then flip a flag only if nobody changed it meanwhile.
//! let cas = client.compare_and_swap("/app/mode", None, "green").await?;
//! if !cas.succeeded {
//!     println!("already set: {:?}", cas.current);
//! }
//! let txn = Txn::new()
//!     .when(vec![Compare::value("/app/mode", CompareOp::Equal, "green")])
//!     .and_then(vec![TxnOp::put("/app/mode", "blue")])
//!     .or_else(vec![TxnOp::get("/app/mode")]);
//! match client.txn(txn).await {
//!     Ok(resp) => println!("succeeded={} at {}", resp.succeeded, resp.revision),
//!     Err(ballast_client::Error::Indeterminate { message }) => {
//!         // Retries did not settle it: re-read before deciding anything.
//!         eprintln!("unknown outcome: {message}");
//!     }
//!     Err(e) => return Err(e),
//! }
//! # Ok(())
//! # }
//! ```

#![deny(missing_docs)]

mod admin;
mod auth;
mod client;
mod endpoints;
mod error;
mod members;
mod replica;
mod retry;
mod session;
mod snapshot;
mod tls;
mod transport;
mod txn;
mod types;
mod watch;

pub use admin::{
    AlarmInfo, AlarmsResponse, CompactResponse, LaggingReplica, ReplicaInfo, ReplicasResponse,
    Rollout,
};
pub use auth::{CreatedToken, RoleInfo, TokenInfo};
pub use client::{BearerToken, Client, ClientBuilder};
pub use error::{Error, Result};
pub use members::{EndpointsView, MemberInfo, MembersView, TransferResponse, VoterEndpoint};
pub use replica::{
    Replica, ReplicaBuilder, ReplicaSnapshot, ReplicaStatus, ReplicaUpdate, WaitTimeout,
};
pub use retry::RetryPolicy;
pub use snapshot::{verify_snapshot_file, SnapshotInfo, SnapshotVerifier, SNAPSHOT_IDLE_TIMEOUT};
pub use tls::TlsOptions;
pub use txn::{
    CasResult, Compare, CompareOp, CompareTarget, Txn, TxnOp, TxnOpResponse, TxnResponse,
};
pub use types::{
    Consistency, DeleteOptions, DeleteResponse, GetResponse, KeyValue, Member, PutOptions,
    PutResponse, RaftStatus, RangeOptions, RangeResponse, ReadOptions, Status,
};
pub use watch::{Event, EventKind, WatchEvent, WatchOptions, WatchStream};
