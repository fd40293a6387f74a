//! Membership changes under load: `member` and `member-replace`.
//!
//! `member` does one of two changes, at random among those that are safe:
//! - **remove and add back**: remove a voter (the leader too: the server
//!   hands leadership over first) and stop its process (SIGTERM); on heal,
//!   wipe its data directory, start it with `--join` (it asks to be added
//!   as a learner itself), wait until it has caught up and promote it.
//! - **grow and shrink**: start the two spare nodes with `--join`, promote
//!   each once caught up (3 → 5 voters); on heal, remove them and stop their
//!   processes (5 → 3).
//!
//! `member-replace` is etcd's robustness-suite member replacement: remove
//! a voter, SIGKILL it and wipe its data directory; on heal add it back as
//! a learner (`POST /v1/members`), start it with `--join`, and promote it
//! once caught up.
//!
//! A voter is removed only if every other voter is alive (running, not
//! paused, no link cut, and answering the leader), so the voters left
//! always form a working quorum; otherwise the nemesis skips (recorded).
//! When the server refuses a change (`409 would_lose_quorum`, ...) that is
//! recorded too: it is the strict check doing its job. Both nemeses are
//! injected after the faults they are combined with (so they see them) and
//! healed after them (so a node rejoins a healed cluster).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::Rng;

use super::admin::{Admin, Op, Skipped, View};
use super::{Context, Nemesis};
use crate::checker::membership::SELF_REMOVED;
use crate::history::EventType;

/// How long one step (a removal, a node joining, a promotion) may take.
const STEP_LIMIT: Duration = Duration::from_secs(30);

/// How long a stopped node gets to exit after SIGTERM.
const STOP_GRACE: Duration = Duration::from_secs(3);

/// How long to watch a removed node notice it was removed.
const REMOVED_NOTICE: Duration = Duration::from_secs(3);

/// Spare nodes the grow change adds.
pub const GROW_BY: usize = 2;

/// Which membership nemesis.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Remove and add back, or grow and shrink.
    Member,
    /// etcd's member replacement.
    Replace,
}

/// What the cluster looks like to the nemesis when it picks a change.
#[derive(Clone, Debug, Default)]
pub struct Situation {
    /// The leader.
    pub leader: u64,
    /// Voters, the leader included.
    pub voters: Vec<u64>,
    /// Learners.
    pub learners: Vec<u64>,
    /// Members that are alive: running, not paused, no link held by a
    /// fault, and healthy in the leader's view.
    pub alive: BTreeSet<u64>,
    /// Nodes that are neither members nor running.
    pub spares: Vec<u64>,
    /// Voters the run started with.
    pub base: usize,
}

/// A change to make.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    /// Remove this voter (and add it back on heal).
    Remove(u64),
    /// Add these spares as voters (and remove them on heal).
    Grow(Vec<u64>),
    /// Nothing is safe: why.
    Skip(String),
}

/// Picks a change that keeps a working quorum whatever else is going on.
pub fn plan(mode: Mode, s: &Situation, rng: &mut impl Rng) -> Plan {
    if !s.learners.is_empty() {
        return Plan::Skip(format!(
            "learners {:?} are members: an earlier change is unfinished",
            s.learners
        ));
    }
    // A voter may go if every other voter is alive: the voters left are then
    // all healthy, a quorum of the new configuration and then some.
    let removable: Vec<u64> = if s.voters.len() >= 3 {
        s.voters
            .iter()
            .copied()
            .filter(|&v| {
                s.alive.contains(&v)
                    && s.voters
                        .iter()
                        .filter(|&&o| o != v)
                        .all(|o| s.alive.contains(o))
            })
            .collect()
    } else {
        Vec::new()
    };
    // New members can only be added and caught up through a leader that
    // works: alive, with a quorum of live voters.
    let alive_voters = s.voters.iter().filter(|v| s.alive.contains(v)).count();
    let can_grow = mode == Mode::Member
        && s.voters.len() == s.base
        && s.spares.len() >= GROW_BY
        && s.alive.contains(&s.leader)
        && alive_voters > s.voters.len() / 2;
    let mut options = Vec::new();
    if let Some(&v) = removable.choose(rng) {
        options.push(Plan::Remove(v));
    }
    if can_grow {
        options.push(Plan::Grow(s.spares[..GROW_BY].to_vec()));
    }
    match options.choose(rng) {
        Some(p) => p.clone(),
        None => Plan::Skip(format!(
            "no voter can be removed safely (voters {:?}, alive {:?}){}",
            s.voters,
            s.alive,
            if mode == Mode::Member {
                format!(
                    " and no growing ({} voters of {} at start, spares {:?})",
                    s.voters.len(),
                    s.base,
                    s.spares
                )
            } else {
                String::new()
            }
        )),
    }
}

/// Whether node `id`'s status reports `raft.state` `Removed`.
async fn removed_state(ctx: &Context, id: u64) -> bool {
    let Some(client) = ctx.cluster.client(id) else {
        return false;
    };
    client
        .status()
        .await
        .is_some_and(|s| s.pointer("/raft/state").and_then(|v| v.as_str()) == Some("Removed"))
}

/// A change in place, undone by the heal.
#[derive(Clone, Debug)]
enum Change {
    /// `id` was removed and stopped (or killed and wiped).
    Removed { id: u64 },
    /// These spares were started (and added, unless a step failed).
    Grown { added: Vec<u64> },
}

/// The `member` and `member-replace` nemeses.
pub struct MemberNemesis {
    mode: Mode,
    base: usize,
    admin: Admin,
    active: Option<Change>,
}

impl MemberNemesis {
    /// A membership nemesis for a cluster started with `base` voters.
    pub fn new(mode: Mode, base: usize) -> anyhow::Result<Self> {
        Ok(Self {
            mode,
            base,
            admin: Admin::new()?,
            active: None,
        })
    }

    fn name_of(&self) -> &'static str {
        match self.mode {
            Mode::Member => "member",
            Mode::Replace => "member-replace",
        }
    }

    fn note(&self, ctx: &Context, what: String) {
        tracing::info!(nemesis = self.name_of(), %what);
        ctx.recorder
            .nemesis(EventType::Info, format!("{}: {what}", self.name_of()));
    }

    fn situation(&self, ctx: &Context, view: &View) -> Situation {
        let alive = view
            .members
            .iter()
            .filter(|m| {
                m.healthy
                    && ctx.cluster.running(m.id)
                    && !ctx.cluster.paused(m.id)
                    && !ctx.net.impaired(m.id)
            })
            .map(|m| m.id)
            .collect();
        Situation {
            leader: view.leader,
            voters: view.voters(),
            learners: view.learners(),
            alive,
            spares: ctx.cluster.spares(),
            base: self.base,
        }
    }

    /// Removes voter `id`: the membership first, then the process.
    async fn remove(&mut self, ctx: &Context, id: u64, was_leader: bool) -> anyhow::Result<String> {
        let started = Instant::now();
        let out = self
            .admin
            .ensure(&ctx.cluster, &Op::Remove(id), STEP_LIMIT, |_| true)
            .await?;
        ctx.cluster.members().remove(id);
        self.active = Some(Change::Removed { id });
        let at = out
            .view
            .as_ref()
            .map_or_else(|| "?".to_string(), |v| v.membership_log_index.to_string());
        self.note(
            ctx,
            format!(
                "node {id} removed{} in {:.1} s (membership log index {at})",
                if was_leader {
                    " (it was the leader)"
                } else {
                    ""
                },
                started.elapsed().as_secs_f64()
            ),
        );
        let notice = self.removed_notice(ctx, id).await;
        let what = match self.mode {
            Mode::Member => {
                let pid = ctx.cluster.stop(id, STOP_GRACE).await?;
                format!("stopped (SIGTERM, pid {pid})")
            }
            Mode::Replace => {
                let pid = ctx.cluster.kill(id)?;
                ctx.cluster.wipe(id)?;
                format!("SIGKILL (pid {pid}), data dir wiped")
            }
        };
        Ok(format!(
            "removed voter {id}{}; {notice}; {what}",
            if was_leader { " (the leader)" } else { "" }
        ))
    }

    /// Whether the removed node says so in its status within a moment.
    async fn removed_notice(&self, ctx: &Context, id: u64) -> String {
        let Some(client) = ctx.cluster.client(id) else {
            return "no client".into();
        };
        let deadline = Instant::now() + REMOVED_NOTICE;
        loop {
            let state = client.status().await.and_then(|s| {
                s.pointer("/raft/state")
                    .and_then(|v| v.as_str())
                    .map(String::from)
            });
            if state.as_deref() == Some("Removed") {
                return "it reports raft.state Removed".into();
            }
            if Instant::now() >= deadline {
                return format!(
                    "it did not report Removed within {REMOVED_NOTICE:?} (state {})",
                    state.unwrap_or_else(|| "unknown".into())
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Adds `id` as a new member: (explicitly as a learner,) started with
    /// `--join` on an empty data dir, promoted once caught up. Each step
    /// checks first whether it is done already, so a heal that failed
    /// halfway can be run again.
    async fn add(&self, ctx: &Context, id: u64, explicit: bool) -> anyhow::Result<String> {
        let started = Instant::now();
        let spec = ctx
            .cluster
            .spec(id)
            .ok_or_else(|| anyhow::anyhow!("no node {id}"))?;
        if explicit {
            let op = Op::AddLearner {
                id,
                client_addr: spec.client_addr.clone(),
                peer_addr: spec.peer_addr.clone(),
            };
            self.admin
                .ensure(&ctx.cluster, &op, STEP_LIMIT, |_| true)
                .await?;
            self.note(ctx, format!("node {id} added as a learner ({op})"));
        }
        // A node that stopped (a refused join) is started again from empty.
        let _ = ctx.cluster.exited(id);
        if !ctx.cluster.running(id) {
            ctx.cluster.wipe(id)?;
            let pid = ctx.cluster.start_joining(id)?;
            self.note(
                ctx,
                format!("node {id} started with --join, empty data dir (pid {pid})"),
            );
        }
        let cluster = ctx.cluster.clone();
        let view = self
            .admin
            .wait_for(&ctx.cluster, STEP_LIMIT, |v| {
                if let Some(how) = cluster.exited(id) {
                    return Err(format!("node {id} exited ({how}); see its log"));
                }
                Ok(v.member(id).is_some())
            })
            .await
            .map_err(|e| anyhow::anyhow!("waiting for node {id} to be a learner: {e:#}"))?;
        let learner_after = started.elapsed();
        // Clients may use it from now on: it is a member.
        ctx.cluster.members().add(id);
        self.note(
            ctx,
            format!(
                "node {id} is a {} after {:.1} s",
                view.member(id).map_or("member", |m| m.role.as_str()),
                learner_after.as_secs_f64()
            ),
        );
        let promoted = self
            .admin
            .ensure(&ctx.cluster, &Op::Promote(id), STEP_LIMIT, |v| {
                v.promotable(id)
            })
            .await;
        // A new member must not consider itself removed: promoted or not
        // (a learner that stopped following the log never catches up).
        if removed_state(ctx, id).await {
            let role = if promoted.is_ok() { "voter" } else { "learner" };
            let what = format!("node {id} {SELF_REMOVED}: a {role} (see its log)");
            self.note(ctx, what.clone());
            anyhow::bail!(what);
        }
        let out = promoted?;
        self.note(
            ctx,
            format!(
                "node {id} promoted to voter after {:.1} s ({} promote request(s))",
                started.elapsed().as_secs_f64(),
                out.attempts
            ),
        );
        Ok(format!(
            "node {id} is a new voter: learner after {:.1} s, voter after {:.1} s",
            learner_after.as_secs_f64(),
            started.elapsed().as_secs_f64()
        ))
    }

    /// Removes a spare that `grow` added and stops it.
    async fn shrink(&self, ctx: &Context, id: u64) -> anyhow::Result<String> {
        // Sent once the strict check would let it pass: the voters left that
        // answer the leader are a quorum of them (right after a fault they
        // may not answer yet).
        let others_healthy = |v: &View| {
            let left: Vec<_> = v
                .members
                .iter()
                .filter(|m| m.id != id && m.role != "learner")
                .collect();
            left.iter().filter(|m| m.healthy).count() > left.len() / 2
        };
        self.admin
            .ensure(&ctx.cluster, &Op::Remove(id), STEP_LIMIT, others_healthy)
            .await?;
        ctx.cluster.members().remove(id);
        let _ = ctx.cluster.exited(id);
        let stopped = if ctx.cluster.running(id) {
            format!(
                ", stopped (pid {})",
                ctx.cluster.stop(id, STOP_GRACE).await?
            )
        } else {
            String::new()
        };
        ctx.cluster.wipe(id)?;
        Ok(format!("node {id} removed{stopped}"))
    }
}

impl Nemesis for MemberNemesis {
    fn name(&self) -> &'static str {
        self.name_of()
    }

    fn heal_last(&self) -> bool {
        true
    }

    fn inject_last(&self) -> bool {
        true
    }

    fn inject<'a>(
        &'a mut self,
        ctx: &'a Context,
        rng: &'a mut StdRng,
    ) -> BoxFuture<'a, anyhow::Result<String>> {
        Box::pin(async move {
            anyhow::ensure!(
                self.active.is_none(),
                "a membership change is still in place"
            );
            let view = self
                .admin
                .view(&ctx.cluster)
                .await
                .map_err(|e| anyhow::anyhow!("no membership view: {e}"))?;
            let situation = self.situation(ctx, &view);
            match plan(self.mode, &situation, rng) {
                Plan::Skip(why) => Err(Skipped(why).into()),
                Plan::Remove(id) => self.remove(ctx, id, id == view.leader).await,
                Plan::Grow(ids) => {
                    self.active = Some(Change::Grown { added: Vec::new() });
                    let mut done = Vec::new();
                    for id in ids {
                        if let Some(Change::Grown { added }) = &mut self.active {
                            added.push(id);
                        }
                        done.push(self.add(ctx, id, false).await?);
                    }
                    Ok(format!(
                        "grew from {} to {} voters: {}",
                        situation.voters.len(),
                        situation.voters.len() + done.len(),
                        done.join("; ")
                    ))
                }
            }
        })
    }

    fn heal<'a>(&'a mut self, ctx: &'a Context) -> BoxFuture<'a, anyhow::Result<String>> {
        Box::pin(async move {
            // On an error the change stays in place, for the next heal.
            match self.active.clone() {
                None => Ok(String::new()),
                Some(Change::Removed { id }) => {
                    let what = self.add(ctx, id, self.mode == Mode::Replace).await?;
                    self.active = None;
                    Ok(what)
                }
                Some(Change::Grown { mut added }) => {
                    let mut done = Vec::new();
                    while let Some(&id) = added.last() {
                        done.push(self.shrink(ctx, id).await?);
                        added.pop();
                        self.active = Some(Change::Grown {
                            added: added.clone(),
                        });
                    }
                    self.active = None;
                    Ok(format!("shrank back: {}", done.join("; ")))
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    fn situation(voters: &[u64], alive: &[u64], spares: &[u64]) -> Situation {
        Situation {
            leader: voters[0],
            voters: voters.to_vec(),
            learners: Vec::new(),
            alive: alive.iter().copied().collect(),
            spares: spares.to_vec(),
            base: 3,
        }
    }

    fn plans(mode: Mode, s: &Situation) -> BTreeSet<String> {
        let mut rng = StdRng::seed_from_u64(7);
        (0..200)
            .map(|_| format!("{:?}", plan(mode, s, &mut rng)))
            .collect()
    }

    #[test]
    fn removes_any_voter_when_all_are_alive_or_grows() {
        let s = situation(&[1, 2, 3], &[1, 2, 3], &[4, 5]);
        let seen = plans(Mode::Member, &s);
        let want: BTreeSet<String> = ["Remove(1)", "Remove(2)", "Remove(3)", "Grow([4, 5])"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(seen, want);
        // member-replace never grows.
        let seen = plans(Mode::Replace, &s);
        assert!(seen.iter().all(|p| p.starts_with("Remove")), "{seen:?}");
    }

    #[test]
    fn removes_only_the_dead_voters_peer_never_a_live_one_leaving_a_dead_one() {
        // Node 2 is down: removing 1 or 3 would leave 2 voters with one dead.
        // Removing node 2 itself is not chosen either: it is not alive, and
        // a membership change is not what brings a dead node back.
        let s = situation(&[1, 2, 3], &[1, 3], &[]);
        assert!(matches!(
            plan(Mode::Member, &s, &mut StdRng::seed_from_u64(1)),
            Plan::Skip(_)
        ));
        // With spares it can still grow: two healthy voters and the new one
        // are a quorum of four.
        let s = situation(&[1, 2, 3], &[1, 3], &[4, 5]);
        assert_eq!(plans(Mode::Member, &s).len(), 1);
        assert_eq!(
            plan(Mode::Member, &s, &mut StdRng::seed_from_u64(1)),
            Plan::Grow(vec![4, 5])
        );
    }

    #[test]
    fn never_goes_below_three_voters_nor_acts_during_an_unfinished_change() {
        let s = situation(&[1, 3], &[1, 3], &[]);
        assert!(matches!(
            plan(Mode::Replace, &s, &mut StdRng::seed_from_u64(1)),
            Plan::Skip(_)
        ));
        let mut s = situation(&[1, 2, 3], &[1, 2, 3], &[4, 5]);
        s.learners = vec![4];
        assert!(matches!(
            plan(Mode::Member, &s, &mut StdRng::seed_from_u64(1)),
            Plan::Skip(_)
        ));
        // Grown to five: shrinking is the heal's job; one more voter may
        // still be removed and added back.
        let s = situation(&[1, 2, 3, 4, 5], &[1, 2, 3, 4, 5], &[]);
        assert!(plans(Mode::Member, &s)
            .iter()
            .all(|p| p.starts_with("Remove")));
        // Only one spare: no growing.
        let s = situation(&[1, 2, 3], &[1, 3], &[4]);
        assert!(matches!(
            plan(Mode::Member, &s, &mut StdRng::seed_from_u64(1)),
            Plan::Skip(_)
        ));
    }

    #[test]
    fn grows_only_through_a_live_leader_with_a_live_quorum() {
        // The leader (1) is cut off or paused: nothing could be committed.
        let s = situation(&[1, 2, 3], &[2, 3], &[4, 5]);
        assert!(matches!(
            plan(Mode::Member, &s, &mut StdRng::seed_from_u64(1)),
            Plan::Skip(_)
        ));
        // Only the leader is alive.
        let s = situation(&[1, 2, 3], &[1], &[4, 5]);
        assert!(matches!(
            plan(Mode::Member, &s, &mut StdRng::seed_from_u64(1)),
            Plan::Skip(_)
        ));
    }
}
