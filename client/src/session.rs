//! Exactly-once writes: the client's session, and the write loop that
//! retries a write whose answer was lost without risking a second
//! application.
//!
//! A [`Client`](crate::Client) has one random 128-bit client id. Before its
//! first write it registers (`POST /v1/sessions`, itself safe to retry) and
//! learns its session. Every write then carries the client id, the session,
//! a sequence number of its own, and `acked_below`: the lowest sequence
//! number still waiting for an answer, so the cluster may forget the results
//! below it. Writes run concurrently; each holds its sequence number until
//! it is answered (or given up), which keeps `acked_below` from passing it.
//!
//! The cluster applies each (session, sequence number) at most once and
//! answers a retry of an applied write with its first result. So a write
//! whose answer was lost (a timeout, a broken connection, a `503 timeout`)
//! is sent again, to the next endpoint, within the retry budget, always in
//! the session it was first sent in (in a newer one, registered meanwhile
//! by another write of the client, the same sequence number would be a new
//! write). When the cluster no longer remembers the result (`410
//! session_expired`: the session expired or was evicted, or the result was
//! forgotten), a write that may have been applied is
//! [`Error::Indeterminate`]; one that certainly was not (every earlier
//! attempt was refused) is sent again under a new sequence number,
//! registering a new session if needed.
//!
//! A cluster without sessions (an older build) answers the registration
//! `404`: the client then writes as before, without retrying writes whose
//! answer was lost.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::Instant;

use reqwest::Method;
use serde::Deserialize;
use serde_json::{json, Value};
use tracing::{debug, warn};

use crate::error::{Error, Result};
use crate::transport::{gave_up, Answer, Call, Kind, Outcome, Transport};

/// The error code of a refused session write.
const SESSION_EXPIRED: &str = "session_expired";

/// Where a write carries its session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Carrier {
    /// Query parameters (`PUT`, `DELETE`).
    Query,
    /// A `session` object in the JSON body (`POST /v1/txn`).
    JsonBody,
}

/// A client's session state, shared by its clones.
#[derive(Debug)]
pub(crate) struct Session {
    client: u128,
    state: Mutex<State>,
    /// Held while registering, so concurrent writes register once.
    registering: tokio::sync::Mutex<()>,
}

#[derive(Debug)]
struct State {
    /// The registered session, once known.
    session: Option<u64>,
    /// The cluster has no sessions (an older build).
    unsupported: bool,
    /// The next sequence number to hand out.
    next_seq: u64,
    /// Sequence numbers of writes still waiting for an answer.
    outstanding: BTreeSet<u64>,
}

/// A sequence number held by a write until it is answered or given up.
#[derive(Debug)]
pub(crate) struct Seq<'a> {
    session: &'a Session,
    seq: u64,
}

impl Drop for Seq<'_> {
    fn drop(&mut self) {
        self.session.state().outstanding.remove(&self.seq);
    }
}

/// The session fields one attempt of a write carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Tag {
    client: u128,
    session: u64,
    seq: u64,
    acked_below: u64,
}

#[derive(Deserialize)]
struct Registered {
    session: u64,
}

impl Session {
    /// A session with a new random client id, not registered yet.
    pub(crate) fn new() -> Self {
        Session {
            client: rand::random(),
            state: Mutex::new(State {
                session: None,
                unsupported: false,
                next_seq: 1,
                outstanding: BTreeSet::new(),
            }),
            registering: tokio::sync::Mutex::new(()),
        }
    }

    /// The client id, as it goes on the wire.
    pub(crate) fn client_id(&self) -> String {
        format!("{:032x}", self.client)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // The state stays consistent whatever panicked while holding it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Hands out the next sequence number.
    pub(crate) fn begin(&self) -> Seq<'_> {
        let mut state = self.state();
        let seq = state.next_seq;
        state.next_seq += 1;
        state.outstanding.insert(seq);
        Seq { session: self, seq }
    }

    /// The lowest sequence number still waiting for an answer.
    fn acked_below(&self) -> u64 {
        let state = self.state();
        state.outstanding.first().copied().unwrap_or(state.next_seq)
    }

    /// The known session, or `None` when the cluster has none, registering
    /// first if needed.
    async fn ensure(&self, transport: &Transport) -> Result<Option<u64>> {
        if let Some(known) = self.known() {
            return Ok(known);
        }
        let _registering = self.registering.lock().await;
        if let Some(known) = self.known() {
            return Ok(known);
        }
        let body = serde_json::to_vec(&json!({ "client": self.client_id() }))
            .map_err(|e| Error::InvalidArgument(format!("registration: {e}")))?;
        let call = Call {
            method: Method::POST,
            target: "/v1/sessions".to_owned(),
            body: Some(("application/json", body)),
            kind: Kind::Idempotent,
        };
        match transport.execute(call).await {
            Ok(answer) => {
                let registered: Registered = serde_json::from_slice(&answer.body)
                    .map_err(|e| Error::Decode(format!("session registration: {e}")))?;
                debug!(client = %self.client_id(), session = registered.session, "registered");
                self.state().session = Some(registered.session);
                Ok(Some(registered.session))
            }
            Err(Error::Api { status: 404, .. }) => {
                warn!("the cluster has no client sessions: writes whose answer is lost are not retried");
                self.state().unsupported = true;
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// `Some(session)` once registered, `Some(None)` when unsupported,
    /// `None` when a registration is needed.
    fn known(&self) -> Option<Option<u64>> {
        let state = self.state();
        if state.unsupported {
            return Some(None);
        }
        state.session.map(Some)
    }

    /// Forgets `session` (the cluster no longer knows it), so the next write
    /// registers again; a newer session already known is kept.
    fn forget(&self, session: u64) {
        let mut state = self.state();
        if state.session == Some(session) {
            state.session = None;
        }
    }
}

impl Carrier {
    /// `call` carrying `tag`.
    fn carry(
        self,
        call: &Call,
        body: Option<&serde_json::Map<String, Value>>,
        tag: Tag,
    ) -> Result<Call> {
        let client = format!("{:032x}", tag.client);
        match self {
            Carrier::Query => {
                let sep = if call.target.contains('?') { '&' } else { '?' };
                Ok(Call {
                    method: call.method.clone(),
                    target: format!(
                        "{}{sep}client={client}&session={}&seq={}&acked_below={}",
                        call.target, tag.session, tag.seq, tag.acked_below
                    ),
                    body: call.body.clone(),
                    kind: call.kind,
                })
            }
            Carrier::JsonBody => {
                let mut doc = body.cloned().unwrap_or_default();
                doc.insert(
                    "session".to_owned(),
                    json!({
                        "client": client,
                        "session": tag.session,
                        "seq": tag.seq,
                        "acked_below": tag.acked_below,
                    }),
                );
                let bytes = serde_json::to_vec(&doc)
                    .map_err(|e| Error::InvalidArgument(format!("request body: {e}")))?;
                Ok(Call {
                    method: call.method.clone(),
                    target: call.target.clone(),
                    body: Some(("application/json", bytes)),
                    kind: call.kind,
                })
            }
        }
    }
}

/// The outcome once an attempt whose answer was lost may have applied the
/// write: whatever comes after, the caller must not take it as "not applied".
fn indeterminate(lost: &str, after: impl std::fmt::Display) -> Error {
    Error::Indeterminate {
        message: format!("{lost}; then {after}"),
    }
}

impl Transport {
    /// Sends a write (`call`, whose kind is [`Kind::Write`]) under the
    /// client's session, retrying lost answers (see the module docs).
    pub(crate) async fn execute_session(
        &self,
        session: &Session,
        call: Call,
        carrier: Carrier,
    ) -> Result<Answer> {
        let body = match (carrier, &call.body) {
            (Carrier::JsonBody, Some((_, bytes))) => Some(
                serde_json::from_slice::<serde_json::Map<String, Value>>(bytes)
                    .map_err(|e| Error::InvalidArgument(format!("request body: {e}")))?,
            ),
            _ => None,
        };
        let policy = self.retry;
        let started = Instant::now();
        let mut seq = session.begin();
        let mut attempt: u32 = 0;
        // Set once an attempt was (or may have been) applied and its answer lost.
        let mut lost: Option<String> = None;
        // The session of that attempt: every retry goes under it. Sent under
        // a newer session (another write of this client registered again),
        // the same sequence number would be a new write there.
        let mut pinned: Option<u64> = None;
        let last_error = loop {
            attempt += 1;
            let ensured = match pinned {
                Some(id) => Ok(Some(id)),
                None => session.ensure(self).await,
            };
            let registered = match ensured {
                Ok(Some(id)) => id,
                Ok(None) => {
                    if let Some(lost) = lost {
                        return Err(indeterminate(&lost, "the cluster has no sessions"));
                    }
                    drop(seq);
                    return self.execute(call).await;
                }
                Err(e) => {
                    return Err(match lost {
                        Some(lost) => indeterminate(&lost, format!("registering failed: {e}")),
                        None => e,
                    })
                }
            };
            let tag = Tag {
                client: session.client,
                session: registered,
                seq: seq.seq,
                acked_below: session.acked_below(),
            };
            let sent = carrier.carry(&call, body.as_ref(), tag)?;
            let (index, endpoint) = self.endpoints.preferred();
            let endpoint: &str = &endpoint;
            let (last_error, retry_after);
            match self.attempt(endpoint, &sent).await {
                Outcome::Done(answer) => return Ok(answer),
                Outcome::Final(error) if error.code() == Some(SESSION_EXPIRED) => {
                    if let Some(lost) = lost {
                        return Err(indeterminate(
                            &lost,
                            format!("a retry was refused: {error}"),
                        ));
                    }
                    // Every attempt so far was refused, none applied: the
                    // write goes again as a new one, in a live session.
                    debug!(endpoint, attempt, %error, "session refused, registering again");
                    session.forget(registered);
                    seq = session.begin();
                    last_error = error;
                    retry_after = None;
                }
                Outcome::Final(error) => {
                    return Err(match lost {
                        Some(lost) => indeterminate(&lost, format!("a retry failed: {error}")),
                        None => error,
                    })
                }
                Outcome::Unknown { error, message } => {
                    self.endpoints.mark_failed(index);
                    debug!(endpoint, attempt, %message, "answer lost, retrying the write");
                    lost.get_or_insert(message);
                    pinned = Some(registered);
                    last_error = error;
                    retry_after = None;
                }
                Outcome::NotApplied {
                    error,
                    hint,
                    retry_after: after,
                } => {
                    self.follow_hint_or_move_on(index, hint.as_deref());
                    debug!(endpoint, attempt, %error, "not applied, trying again");
                    last_error = error;
                    retry_after = after;
                }
            }
            if !policy
                .wait_for_next(attempt, self.endpoints.len(), retry_after, started)
                .await
            {
                break last_error;
            }
        };
        let message = format!(
            "gave up after {attempt} attempt(s) in {:?}",
            started.elapsed()
        );
        Err(match lost {
            Some(lost) => indeterminate(&lost, format!("{message}: {last_error}")),
            None => gave_up(last_error, &message),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acked_below_waits_for_the_oldest_write_in_flight() {
        let s = Session::new();
        assert_eq!(s.acked_below(), 1);
        let one = s.begin();
        let two = s.begin();
        let three = s.begin();
        assert_eq!((one.seq, two.seq, three.seq), (1, 2, 3));
        assert_eq!(s.acked_below(), 1);
        drop(two);
        assert_eq!(s.acked_below(), 1, "1 is still waiting");
        drop(one);
        assert_eq!(s.acked_below(), 3);
        drop(three);
        assert_eq!(
            s.acked_below(),
            4,
            "nothing waits: everything below next is answered"
        );
    }

    #[test]
    fn forgetting_keeps_a_newer_session() {
        let s = Session::new();
        s.state().session = Some(7);
        s.forget(5);
        assert_eq!(s.known(), Some(Some(7)));
        s.forget(7);
        assert_eq!(s.known(), None);
    }

    #[test]
    fn the_session_goes_in_the_query_or_the_body() {
        let tag = Tag {
            client: 0xab,
            session: 9,
            seq: 4,
            acked_below: 2,
        };
        let put = Call {
            method: Method::PUT,
            target: "/v1/kv/a?prev_kv=true".to_owned(),
            body: Some(("application/octet-stream", b"v".to_vec())),
            kind: Kind::Write,
        };
        let sent = Carrier::Query.carry(&put, None, tag).expect("carry");
        assert_eq!(
            sent.target,
            "/v1/kv/a?prev_kv=true&client=000000000000000000000000000000ab&session=9&seq=4&acked_below=2"
        );
        let txn = Call {
            method: Method::POST,
            target: "/v1/txn".to_owned(),
            body: Some(("application/json", br#"{"success":[]}"#.to_vec())),
            kind: Kind::Write,
        };
        let doc = serde_json::from_slice(br#"{"success":[]}"#).expect("json");
        let sent = Carrier::JsonBody
            .carry(&txn, Some(&doc), tag)
            .expect("carry");
        let body: Value = serde_json::from_slice(&sent.body.expect("body").1).expect("json");
        assert_eq!(
            body,
            json!({"success": [], "session": {"client": "000000000000000000000000000000ab", "session": 9, "seq": 4, "acked_below": 2}})
        );
    }
}
