//! Fault injectors behind one trait, and the schedule that runs them.
//!
//! A nemesis injects one fault and later heals exactly what it injected.
//! Several nemeses may be active at once (faults combine); the scheduler
//! heals them in reverse order, except that a nemesis whose heal waits for
//! the cluster to make progress (`lagging`) is healed after the faults that
//! could stop that progress. Membership changes and leader transfer are
//! nemeses of the same shape (`inject` = remove a member, grow the cluster or
//! transfer leadership; `heal` = add it back, shrink); the membership ones
//! are injected after the faults they are combined with, so that they see
//! them (see [`round_order`]).

pub mod admin;
mod failpoint;
pub mod lagging;
pub mod member;
mod outage;
mod partition;
mod process;
mod transfer;

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

pub use admin::{Refused, Skipped};
pub use failpoint::FailpointNemesis;
pub use lagging::{LaggingNemesis, LaggingOptions};
pub use outage::OutageNemesis;
pub use partition::{DelayNemesis, PartitionNemesis};
pub use process::ProcessNemesis;
pub use transfer::TransferNemesis;

use crate::cluster::Cluster;
use crate::history::{EventType, Recorder};
use crate::proxy::Network;

/// What a nemesis acts on.
pub struct Context {
    /// The processes.
    pub cluster: Arc<Cluster>,
    /// The peer-link proxies.
    pub net: Arc<Network>,
    /// The history.
    pub recorder: Recorder,
    /// Turns true when the workload is over: a heal that waits for progress
    /// stops waiting.
    pub stop: tokio::sync::watch::Receiver<bool>,
    /// What nemeses leave running after a heal.
    pub background: Background,
}

/// Tasks a nemesis leaves running after its heal, such as watching a node
/// recover and recording how it did. The run waits for them (bounded)
/// before it takes the history, so their last records are not lost.
#[derive(Clone, Default)]
pub struct Background(Arc<Mutex<tokio::task::JoinSet<()>>>);

impl Background {
    /// Runs `task` in the background.
    pub fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).spawn(task);
    }

    /// Waits up to `limit` for every task; aborts the rest and returns how
    /// many there were.
    pub async fn finish(&self, limit: Duration) -> usize {
        let mut set = std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()));
        let deadline = Instant::now() + limit;
        while !set.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if tokio::time::timeout(left, set.join_next()).await.is_err() {
                break;
            }
        }
        let unfinished = set.len();
        set.abort_all();
        unfinished
    }
}

/// Which node a fault hits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// A random running node.
    Random,
    /// The current leader (a random node when none is known).
    Leader,
}

impl Context {
    /// Picks a node: the leader or a random running one.
    pub async fn pick(&self, target: Target, rng: &mut StdRng) -> Option<u64> {
        if target == Target::Leader {
            if let Some(l) = self.cluster.leader().await {
                return Some(l);
            }
        }
        let ids: Vec<u64> = self
            .cluster
            .ids()
            .into_iter()
            .filter(|id| self.cluster.running(*id))
            .collect();
        ids.choose(rng).copied()
    }
}

/// A fault injector.
pub trait Nemesis: Send {
    /// Name, as used on the command line.
    fn name(&self) -> &'static str;
    /// Injects a fault; returns what it did.
    fn inject<'a>(
        &'a mut self,
        ctx: &'a Context,
        rng: &'a mut StdRng,
    ) -> BoxFuture<'a, anyhow::Result<String>>;
    /// Heals what `inject` did (a no-op when nothing is injected).
    fn heal<'a>(&'a mut self, ctx: &'a Context) -> BoxFuture<'a, anyhow::Result<String>>;
    /// Whether the heal waits for the cluster to make progress, so that the
    /// faults combined with this one are healed first.
    fn heal_last(&self) -> bool {
        false
    }
    /// Whether it is injected after the faults combined with it, so that
    /// it can see them (a membership change that must keep a quorum).
    fn inject_last(&self) -> bool {
        false
    }
}

/// The order of one round's nemeses, given `(heal_last, inject_last)` of
/// each: (inject order, heal order), as indexes. Injected first: those
/// whose heal waits for progress (so that the fault they combine with
/// starts inside theirs), then the others, then those that must see the
/// other faults. Healed in reverse order of injection, except that those
/// whose heal waits for progress or must find a healed cluster
/// (`heal_last`) come after all the others.
pub fn round_order(traits: &[(bool, bool)]) -> (Vec<usize>, Vec<usize>) {
    let rank = |&(heal_last, inject_last): &(bool, bool)| match (heal_last, inject_last) {
        (_, true) => 2,
        (true, false) => 0,
        (false, false) => 1,
    };
    let mut inject: Vec<usize> = (0..traits.len()).collect();
    inject.sort_by_key(|&i| rank(&traits[i]));
    let mut heal: Vec<usize> = inject.iter().rev().copied().collect();
    heal.sort_by_key(|&i| traits[i].0);
    (inject, heal)
}

/// Every nemesis name, as accepted by [`by_name`].
pub const NAMES: &[&str] = &[
    "kill",
    "kill-leader",
    "pause",
    "pause-leader",
    "partition",
    "delay",
    "failpoint",
    "outage",
    "lagging",
    "member",
    "member-replace",
    "transfer",
];

/// Settings of the nemeses that need more than a name.
#[derive(Clone, Copy, Debug)]
pub struct NemesisOptions {
    /// For `lagging`.
    pub lagging: LaggingOptions,
    /// Voters the cluster starts with (the membership nemeses come back to
    /// it).
    pub nodes: usize,
}

/// Builds a nemesis by name.
pub fn by_name(name: &str, opts: &NemesisOptions) -> anyhow::Result<Box<dyn Nemesis>> {
    Ok(match name {
        "kill" => Box::new(ProcessNemesis::kill(Target::Random)),
        "kill-leader" => Box::new(ProcessNemesis::kill(Target::Leader)),
        "pause" => Box::new(ProcessNemesis::pause(Target::Random)),
        "pause-leader" => Box::new(ProcessNemesis::pause(Target::Leader)),
        "partition" => Box::new(PartitionNemesis::new()),
        "delay" => Box::new(DelayNemesis::new()),
        "failpoint" => Box::new(FailpointNemesis::new()),
        "outage" => Box::new(OutageNemesis::default()),
        "lagging" => Box::new(LaggingNemesis::new(opts.lagging)),
        "member" => Box::new(member::MemberNemesis::new(
            member::Mode::Member,
            opts.nodes,
        )?),
        "member-replace" => Box::new(member::MemberNemesis::new(
            member::Mode::Replace,
            opts.nodes,
        )?),
        "transfer" => Box::new(TransferNemesis::new()?),
        other => anyhow::bail!("unknown nemesis {other:?} ({})", NAMES.join(", ")),
    })
}

/// When faults happen.
#[derive(Clone, Debug)]
pub struct Schedule {
    /// Quiet time between faults.
    pub interval: Duration,
    /// How long a fault lasts.
    pub duration: Duration,
    /// Probability that a second nemesis joins the first.
    pub combine: f64,
}

/// Counts of what the scheduler did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct NemesisStats {
    /// Faults injected, by nemesis name.
    pub injected: std::collections::BTreeMap<String, u64>,
    /// Injections that failed.
    pub failed: u64,
    /// Changes the server refused on purpose (`409 would_lose_quorum`, ...),
    /// by nemesis name: correct behaviour, recorded.
    pub refused: std::collections::BTreeMap<String, u64>,
    /// Times a nemesis found nothing safe to do, by name.
    pub skipped: std::collections::BTreeMap<String, u64>,
}

/// Runs `nemeses` on `schedule` until `stop` turns true, then heals everything.
pub async fn run(
    mut nemeses: Vec<Box<dyn Nemesis>>,
    ctx: Context,
    schedule: Schedule,
    seed: u64,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> NemesisStats {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut stats = NemesisStats::default();
    let rec = ctx.recorder.clone();
    let sleep_or_stop = |d: Duration, stop: &mut tokio::sync::watch::Receiver<bool>| {
        let mut stop = stop.clone();
        async move {
            tokio::select! {
                _ = tokio::time::sleep(d) => false,
                _ = stop.wait_for(|s| *s) => true,
            }
        }
    };
    if nemeses.is_empty() {
        let _ = stop.wait_for(|s| *s).await;
        return stats;
    }
    loop {
        if sleep_or_stop(schedule.interval, &mut stop).await {
            break;
        }
        let mut order: Vec<usize> = (0..nemeses.len()).collect();
        order.shuffle(&mut rng);
        let count = if nemeses.len() > 1 && rng.gen_bool(schedule.combine) {
            2
        } else {
            1
        };
        let drawn: Vec<usize> = order.into_iter().take(count).collect();
        let traits: Vec<(bool, bool)> = drawn
            .iter()
            .map(|&i| (nemeses[i].heal_last(), nemeses[i].inject_last()))
            .collect();
        let (inject_order, heal_order) = round_order(&traits);
        for &i in inject_order.iter().map(|&k| &drawn[k]) {
            let name = nemeses[i].name();
            rec.nemesis(EventType::Invoke, format!("{name}: inject"));
            match nemeses[i].inject(&ctx, &mut rng).await {
                Ok(what) => {
                    *stats.injected.entry(name.to_string()).or_default() += 1;
                    tracing::info!(nemesis = name, %what, "fault injected");
                    rec.nemesis(EventType::Ok, format!("{name}: {what}"));
                }
                Err(e) => {
                    if let Some(r) = e.downcast_ref::<Refused>() {
                        *stats.refused.entry(name.to_string()).or_default() += 1;
                        tracing::info!(nemesis = name, refused = %r, "the server refused");
                        rec.nemesis(
                            EventType::Info,
                            format!("{name}: refused by the server: {r}"),
                        );
                    } else if let Some(s) = e.downcast_ref::<Skipped>() {
                        *stats.skipped.entry(name.to_string()).or_default() += 1;
                        tracing::info!(nemesis = name, why = %s, "skipped");
                        rec.nemesis(EventType::Info, format!("{name}: skipped: {s}"));
                    } else {
                        stats.failed += 1;
                        tracing::warn!(nemesis = name, error = %e, "injection failed");
                        rec.nemesis(EventType::Fail, format!("{name}: {e:#}"));
                    }
                }
            }
        }
        let stopped = sleep_or_stop(schedule.duration, &mut stop).await;
        for &i in heal_order.iter().map(|&k| &drawn[k]) {
            heal(&mut *nemeses[i], &ctx).await;
        }
        if stopped {
            break;
        }
    }
    // Heal everything, whatever state it is in (again: a heal that failed
    // left its fault in place); those that need a healed cluster last.
    let traits: Vec<(bool, bool)> = nemeses
        .iter()
        .map(|n| (n.heal_last(), n.inject_last()))
        .collect();
    for i in round_order(&traits).1 {
        heal(&mut *nemeses[i], &ctx).await;
    }
    stats
}

async fn heal(n: &mut dyn Nemesis, ctx: &Context) {
    let name = n.name();
    match n.heal(ctx).await {
        Ok(what) if what.is_empty() => {}
        Ok(what) => {
            tracing::info!(nemesis = name, %what, "healed");
            ctx.recorder
                .nemesis(EventType::Ok, format!("{name}: heal: {what}"));
        }
        Err(e) => {
            tracing::warn!(nemesis = name, error = %e, "heal failed");
            ctx.recorder
                .nemesis(EventType::Fail, format!("{name}: heal failed: {e:#}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_round_injects_lagging_first_and_membership_last_and_heals_both_last() {
        // (heal_last, inject_last): kill, lagging, member.
        let kill = (false, false);
        let lagging = (true, false);
        let member = (true, true);
        assert_eq!(round_order(&[kill]), (vec![0], vec![0]));
        assert_eq!(round_order(&[kill, lagging]), (vec![1, 0], vec![0, 1]));
        assert_eq!(round_order(&[lagging, kill]), (vec![0, 1], vec![1, 0]));
        assert_eq!(round_order(&[member, kill]), (vec![1, 0], vec![1, 0]));
        assert_eq!(round_order(&[kill, member]), (vec![0, 1], vec![0, 1]));
        assert_eq!(round_order(&[member, lagging]), (vec![1, 0], vec![0, 1]));
        let transfer = (false, false);
        assert_eq!(
            round_order(&[member, transfer, kill]),
            (vec![1, 2, 0], vec![2, 1, 0])
        );
    }

    #[test]
    fn kill_and_pause_keep_their_names() {
        let built = [
            ProcessNemesis::kill(Target::Random),
            ProcessNemesis::kill(Target::Leader),
            ProcessNemesis::pause(Target::Random),
            ProcessNemesis::pause(Target::Leader),
        ];
        let names: Vec<&str> = built.iter().map(|n| n.name()).collect();
        assert_eq!(names, ["kill", "kill-leader", "pause", "pause-leader"]);
    }
}
