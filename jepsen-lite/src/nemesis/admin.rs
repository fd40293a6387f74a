//! The membership API as the membership and transfer nemeses use it:
//! `GET/POST /v1/members`, `POST /v1/members/{id}/promote`,
//! `DELETE /v1/members/{id}` and `POST /v1/leader/transfer`, sent to any
//! member (the leader first; the others forward).
//!
//! A change whose answer is lost or unknown (a timeout, a connection lost,
//! `503`) may or may not have happened, so [`Admin::ensure`] reads the
//! membership before every attempt and stops as soon as the goal holds:
//! it never repeats a change that took effect.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::cluster::Cluster;

/// How long one admin request may take: a change waits for its commit, a
/// transfer for the new leader, both bounded by the nodes' request timeout
/// (2 s in a run), plus a hop when a follower forwards.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Pause between attempts while the cluster cannot serve a request yet.
const RETRY: Duration = Duration::from_millis(250);

/// How long the leader gets to commit what its log holds, for a settled
/// view.
const SETTLE: Duration = Duration::from_secs(3);

/// The server said no, deliberately (a `4xx` other than `410`): the
/// membership stays as it was. For the strict checks (`409
/// would_lose_quorum`, ...) this is correct behaviour, not a failure.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{status} {code}: {message}")]
pub struct Refused {
    /// HTTP status.
    pub status: u16,
    /// The error code (`would_lose_quorum`, `learner_not_ready`, ...).
    pub code: String,
    /// The server's explanation.
    pub message: String,
}

/// A membership nemesis found nothing it could do without risking the
/// cluster's quorum (or with nothing to act on): recorded, not a failure.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{0}")]
pub struct Skipped(pub String);

/// One member in the leader's view.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberView {
    /// Node id.
    pub id: u64,
    /// `leader`, `voter` or `learner`.
    pub role: String,
    /// Last log index the leader knows it holds.
    pub match_index: Option<u64>,
    /// Whether it answered the leader within the election timeout.
    pub healthy: bool,
}

/// `GET /v1/members`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct View {
    /// The leader.
    pub leader: u64,
    /// Its term.
    pub term: u64,
    /// Its last log index.
    pub last_log_index: u64,
    /// Log index of the membership in force.
    pub membership_log_index: u64,
    /// Every member.
    pub members: Vec<MemberView>,
}

impl View {
    /// Parses the body of `GET /v1/members` (and of a change's answer).
    pub fn parse(v: &Value) -> Option<View> {
        let members = v
            .get("members")?
            .as_array()?
            .iter()
            .map(|m| {
                Some(MemberView {
                    id: m.get("id")?.as_u64()?,
                    role: m.get("role")?.as_str()?.to_string(),
                    match_index: m.get("match_index").and_then(Value::as_u64),
                    healthy: m.get("healthy").and_then(Value::as_bool).unwrap_or(false),
                })
            })
            .collect::<Option<Vec<_>>>()?;
        Some(View {
            leader: v.get("leader")?.as_u64()?,
            term: v.get("term").and_then(Value::as_u64).unwrap_or(0),
            last_log_index: v.get("last_log_index").and_then(Value::as_u64).unwrap_or(0),
            membership_log_index: v
                .get("membership_log_index")
                .and_then(Value::as_u64)
                .unwrap_or(0),
            members,
        })
    }

    /// The member `id`, if it is one.
    pub fn member(&self, id: u64) -> Option<&MemberView> {
        self.members.iter().find(|m| m.id == id)
    }

    /// Voters (the leader included), in id order.
    pub fn voters(&self) -> Vec<u64> {
        let mut v: Vec<u64> = self
            .members
            .iter()
            .filter(|m| m.role != "learner")
            .map(|m| m.id)
            .collect();
        v.sort_unstable();
        v
    }

    /// Learners, in id order.
    pub fn learners(&self) -> Vec<u64> {
        let mut v: Vec<u64> = self
            .members
            .iter()
            .filter(|m| m.role == "learner")
            .map(|m| m.id)
            .collect();
        v.sort_unstable();
        v
    }

    /// Whether `id` is a voter.
    pub fn is_voter(&self, id: u64) -> bool {
        self.member(id).is_some_and(|m| m.role != "learner")
    }

    /// Whether learner `id` may be promoted: the server's rule, 90% of the
    /// leader's log, and an answer within the election timeout.
    pub fn promotable(&self, id: u64) -> bool {
        self.member(id).is_some_and(|m| {
            m.healthy
                && m.match_index
                    .is_some_and(|i| i.saturating_mul(10) >= self.last_log_index.saturating_mul(9))
        })
    }
}

/// The answer to one admin request.
#[derive(Debug)]
enum Answer {
    Ok(Value),
    Refused(Refused),
    /// No answer, or one that does not say whether the change happened.
    Unknown(String),
}

/// An admin request.
#[derive(Clone, Debug)]
pub enum Op {
    /// `POST /v1/members`.
    AddLearner {
        /// Node id.
        id: u64,
        /// Its client address.
        client_addr: String,
        /// Its peer address.
        peer_addr: String,
    },
    /// `POST /v1/members/{id}/promote`.
    Promote(u64),
    /// `DELETE /v1/members/{id}`.
    Remove(u64),
    /// `POST /v1/leader/transfer`.
    Transfer(u64),
}

impl Op {
    /// Whether the membership `v` already is what the request asks for.
    pub fn done(&self, v: &View) -> bool {
        match self {
            Op::AddLearner { id, .. } => v.member(*id).is_some(),
            Op::Promote(id) => v.is_voter(*id),
            Op::Remove(id) => v.member(*id).is_none(),
            Op::Transfer(id) => v.leader == *id,
        }
    }

    /// Refusals that only mean "not yet": another change is completing, or
    /// the learner is still catching up.
    fn retry(&self, r: &Refused) -> bool {
        r.code == "change_in_progress"
            || (matches!(self, Op::Promote(_)) && r.code == "learner_not_ready")
    }
}

impl std::fmt::Display for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Op::AddLearner { id, .. } => write!(f, "POST /v1/members (add learner {id})"),
            Op::Promote(id) => write!(f, "POST /v1/members/{id}/promote"),
            Op::Remove(id) => write!(f, "DELETE /v1/members/{id}"),
            Op::Transfer(id) => write!(f, "POST /v1/leader/transfer (to {id})"),
        }
    }
}

/// Client of the membership API.
pub struct Admin {
    http: reqwest::Client,
}

impl Admin {
    /// A client.
    pub fn new() -> anyhow::Result<Self> {
        Ok(Self {
            http: crate::tls::apply(reqwest::Client::builder())
                .timeout(REQUEST_TIMEOUT)
                .connect_timeout(Duration::from_millis(500))
                .build()?,
        })
    }

    async fn call(&self, base: &str, op: Option<&Op>) -> Answer {
        let req = match op {
            None => self.http.get(format!("{base}/v1/members")),
            Some(Op::AddLearner {
                id,
                client_addr,
                peer_addr,
            }) => self.http.post(format!("{base}/v1/members")).json(
                &serde_json::json!({"id": id, "client_addr": client_addr, "peer_addr": peer_addr}),
            ),
            Some(Op::Promote(id)) => self.http.post(format!("{base}/v1/members/{id}/promote")),
            Some(Op::Remove(id)) => self.http.delete(format!("{base}/v1/members/{id}")),
            Some(Op::Transfer(to)) => self
                .http
                .post(format!("{base}/v1/leader/transfer"))
                .json(&serde_json::json!({ "to": to })),
        };
        let resp = match req.headers(crate::auth::headers()).send().await {
            Ok(r) => r,
            Err(e) => return Answer::Unknown(format!("{base}: {e}")),
        };
        let status = resp.status().as_u16();
        let body: Value = match resp.bytes().await {
            Ok(b) => serde_json::from_slice(&b).unwrap_or(Value::Null),
            Err(e) => return Answer::Unknown(format!("{base}: body: {e}")),
        };
        let text = |p: &str| {
            body.pointer(p)
                .and_then(Value::as_str)
                .unwrap_or("?")
                .to_string()
        };
        match status {
            200..=299 => Answer::Ok(body),
            // A removed node speaks for nobody: ask another member.
            410 => Answer::Unknown(format!("{base}: 410 removed")),
            400..=499 => Answer::Refused(Refused {
                status,
                code: text("/error/code"),
                message: text("/error/message"),
            }),
            _ => Answer::Unknown(format!("{base}: {status} {}", text("/error/code"))),
        }
    }

    /// The members' client endpoints, the node `first` first.
    fn endpoints(cluster: &Cluster, first: Option<u64>) -> Vec<String> {
        let mut ids = cluster.ids();
        ids.retain(|&id| cluster.running(id));
        if let Some(f) = first {
            ids.sort_by_key(|&id| id != f);
        }
        ids.into_iter()
            .filter_map(|id| cluster.spec(id))
            .map(|s| crate::tls::url(&s.client_addr))
            .collect()
    }

    /// The leader's view of the membership, from the first member that
    /// gives it.
    pub async fn view(&self, cluster: &Cluster) -> Result<View, String> {
        let mut errors = Vec::new();
        for base in Self::endpoints(cluster, None) {
            match self.call(&base, None).await {
                Answer::Ok(v) => match View::parse(&v) {
                    Some(view) => return Ok(view),
                    None => errors.push(format!("{base}: unexpected answer {v}")),
                },
                Answer::Refused(r) => errors.push(format!("{base}: {r}")),
                Answer::Unknown(e) => errors.push(e),
            }
        }
        Err(if errors.is_empty() {
            "no running member to ask".to_string()
        } else {
            errors.join("; ")
        })
    }

    /// A view that no change still pending in the leader's log can alter:
    /// the leader's last log index when first asked has been committed,
    /// in the same term, before the view is read again. A change whose
    /// answer was lost (the proposer timed out, a partition held the
    /// commit) may commit later; a view read before that would wrongly
    /// say it did not happen.
    pub async fn settled_view(&self, cluster: &Cluster) -> Result<View, String> {
        let first = self.view(cluster).await?;
        let leader = cluster
            .client(first.leader)
            .ok_or_else(|| format!("no client of leader {}", first.leader))?;
        let field = |s: &Value, p: &str| s.pointer(p).and_then(Value::as_u64).unwrap_or(0);
        let status = leader
            .status()
            .await
            .ok_or_else(|| format!("leader {} did not answer its status", first.leader))?;
        let last = field(&status, "/raft/last_log_index");
        let deadline = Instant::now() + SETTLE;
        loop {
            let s = leader
                .status()
                .await
                .ok_or_else(|| format!("leader {} did not answer its status", first.leader))?;
            if field(&s, "/term") != first.term
                || s.pointer("/raft/state").and_then(Value::as_str) != Some("Leader")
            {
                return Err(format!("leader {} lost its leadership", first.leader));
            }
            if field(&s, "/raft/committed") >= last {
                break;
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "leader {} did not commit its log up to {last} within {SETTLE:?}",
                    first.leader
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let v = self.view(cluster).await?;
        if (v.leader, v.term) != (first.leader, first.term) {
            return Err(format!(
                "leadership moved from {} to {}",
                first.leader, v.leader
            ));
        }
        Ok(v)
    }

    /// Waits up to `limit` for a view in which `cond` holds.
    pub async fn wait_for(
        &self,
        cluster: &Cluster,
        limit: Duration,
        mut cond: impl FnMut(&View) -> Result<bool, String>,
    ) -> anyhow::Result<View> {
        let deadline = Instant::now() + limit;
        loop {
            let last = match self.view(cluster).await {
                Ok(v) => {
                    if cond(&v).map_err(anyhow::Error::msg)? {
                        return Ok(v);
                    }
                    format!("last view: {v:?}")
                }
                Err(e) => e,
            };
            anyhow::ensure!(Instant::now() < deadline, "not within {limit:?} ({last})");
            tokio::time::sleep(RETRY).await;
        }
    }

    /// Brings the cluster to what `op` asks for, within `limit`: reads the
    /// membership, stops if the goal holds, sends `op` once `ready` holds
    /// (for a promotion: the learner has caught up), and tries again while
    /// the cluster cannot answer or answers "not yet". A refusal ends it
    /// with a [`Refused`] error. Returns the view in which the goal held,
    /// or the change's own answer.
    pub async fn ensure(
        &self,
        cluster: &Cluster,
        op: &Op,
        limit: Duration,
        ready: impl Fn(&View) -> bool,
    ) -> anyhow::Result<Outcome> {
        let deadline = Instant::now() + limit;
        let mut attempts = 0u32;
        loop {
            let last: String;
            let mut view = self.view(cluster).await;
            let mut settling = false;
            if view.as_ref().is_ok_and(|v| op.done(v)) {
                // Done, unless a change still pending says otherwise.
                settling = true;
                view = self.settled_view(cluster).await;
            }
            match &view {
                // Not known yet whether it is done: ask again, send nothing.
                Err(e) if settling => last = format!("not settled: {e}"),
                Ok(v) if op.done(v) => {
                    return Ok(Outcome {
                        view: Some(v.clone()),
                        answer: None,
                        attempts,
                    })
                }
                Ok(v) if !ready(v) => last = format!("not ready: {v:?}"),
                _ => {
                    // The leader when it is known (it answered the view);
                    // otherwise the members in turn, one per round.
                    let leader = view.as_ref().ok().map(|v| v.leader);
                    let endpoints = Self::endpoints(cluster, leader);
                    let pick = if leader.is_some() {
                        0
                    } else {
                        attempts as usize
                    };
                    attempts += 1;
                    let Some(base) = endpoints.get(pick % endpoints.len().max(1)) else {
                        anyhow::bail!("{op}: no running member to ask");
                    };
                    match self.call(base, Some(op)).await {
                        Answer::Ok(body) => {
                            return Ok(Outcome {
                                view: View::parse(&body),
                                answer: Some(body),
                                attempts,
                            })
                        }
                        Answer::Refused(r) if op.retry(&r) => last = r.to_string(),
                        Answer::Refused(r) => return Err(r.into()),
                        // Unknown: it may have happened; the next round
                        // reads the membership first.
                        Answer::Unknown(e) => last = e,
                    }
                }
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "{op}: not done within {limit:?} after {attempts} attempt(s) ({last})"
            );
            tokio::time::sleep(RETRY).await;
        }
    }
}

/// How [`Admin::ensure`] ended.
#[derive(Debug)]
pub struct Outcome {
    /// The membership after it (when the answer carried one).
    pub view: Option<View>,
    /// The change's own answer; `None` when the goal already held.
    pub answer: Option<Value>,
    /// Requests sent.
    pub attempts: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view() -> View {
        View::parse(&serde_json::json!({
            "leader": 1, "term": 4, "last_log_index": 100, "membership_log_index": 40,
            "members": [
                {"id": 1, "client_addr": "a", "peer_addr": "b", "role": "leader", "match_index": 100, "lag": 0, "last_ack_ms": null, "healthy": true},
                {"id": 3, "client_addr": "a", "peer_addr": "b", "role": "voter", "match_index": 99, "lag": 1, "last_ack_ms": 20, "healthy": true},
                {"id": 4, "client_addr": "a", "peer_addr": "b", "role": "learner", "match_index": 89, "lag": 11, "last_ack_ms": 20, "healthy": true},
                {"id": 5, "client_addr": "a", "peer_addr": "b", "role": "learner", "match_index": 95, "lag": 5, "last_ack_ms": 900, "healthy": false},
                {"id": 6, "client_addr": "a", "peer_addr": "b", "role": "learner", "match_index": 90, "lag": 10, "last_ack_ms": 10, "healthy": true},
            ]
        }))
        .expect("parses")
    }

    #[test]
    fn reads_the_members_view() {
        let v = view();
        assert_eq!((v.leader, v.term, v.last_log_index), (1, 4, 100));
        assert_eq!(v.voters(), vec![1, 3]);
        assert_eq!(v.learners(), vec![4, 5, 6]);
        assert!(v.is_voter(1) && v.is_voter(3) && !v.is_voter(4) && !v.is_voter(2));
        assert!(View::parse(&serde_json::json!({"members": []})).is_none());
    }

    #[test]
    fn promotes_only_a_healthy_learner_with_ninety_percent_of_the_log() {
        let v = view();
        assert!(!v.promotable(4), "89 of 100");
        assert!(!v.promotable(5), "not healthy");
        assert!(v.promotable(6), "90 of 100");
        assert!(!v.promotable(2), "not a member");
    }

    #[test]
    fn an_operation_is_done_when_the_membership_says_so() {
        let v = view();
        let add = |id| Op::AddLearner {
            id,
            client_addr: String::new(),
            peer_addr: String::new(),
        };
        assert!(add(4).done(&v) && !add(2).done(&v));
        assert!(Op::Promote(3).done(&v) && !Op::Promote(4).done(&v));
        assert!(Op::Remove(2).done(&v) && !Op::Remove(4).done(&v));
        assert!(Op::Transfer(1).done(&v) && !Op::Transfer(3).done(&v));
        let refused = |code: &str| Refused {
            status: 409,
            code: code.into(),
            message: String::new(),
        };
        assert!(Op::Promote(4).retry(&refused("learner_not_ready")));
        assert!(!Op::Remove(4).retry(&refused("learner_not_ready")));
        assert!(Op::Remove(4).retry(&refused("change_in_progress")));
        assert!(!Op::Remove(4).retry(&refused("would_lose_quorum")));
    }
}
