//! The `nospace` alarm on the node: the refusal of writes that could add
//! data, the monitor that raises the alarm when this node's disk runs short,
//! and disarming.
//!
//! A write that could add data (`observe::may_add_data`) is refused with
//! `507 no_space` when this node's own measurement is below the floor (taken
//! before the write, one `statvfs`) or when a `nospace` alarm of any member
//! is active in the replicated table. The node that receives the write and
//! the leader both check, so a write through any member is refused as soon
//! as the alarm is applied there.
//!
//! The monitor measures every `--disk-check-interval-ms` (and at once when a
//! write found the disk short). Short of space with no alarm of its own
//! active, it proposes one through Raft; it keeps doing so after a disarm
//! for as long as space stays short, so disarming too early re-raises it.

use std::sync::Arc;

use tokio::sync::watch;

use super::node::{Node, NodeError};
use super::observe::may_add_data;
use crate::kv::alarms::{Alarm, AlarmCommand, AlarmKind};
use crate::kv::{Command, CommandResponse};
use crate::stop::stopped;
use crate::storage::space::DiskSpace;

impl Node {
    /// The active alarms, in (member, kind) order.
    pub fn alarms(&self) -> Vec<Alarm> {
        match self.options().alarms.read() {
            Ok(t) => t.active(),
            Err(_) => Vec::new(),
        }
    }

    /// Free space of this node's data directory, when watched.
    pub fn disk_space(&self) -> Option<&Arc<DiskSpace>> {
        self.options().space.as_ref()
    }

    /// Refuses a write that could add data while this node is short of disk
    /// space or any member's `nospace` alarm is active.
    pub(crate) fn check_space(&self, command: &Command) -> Result<(), NodeError> {
        if !may_add_data(command) {
            return Ok(());
        }
        if let Some(space) = self.disk_space() {
            match space.measure() {
                Ok(true) => {
                    space.wake();
                    self.metrics().no_space_refusals.inc();
                    return Err(NodeError::NoSpace(format!(
                        "member {} has {} bytes free on its data directory, below the floor \
                         of {} bytes (--min-free-bytes); free space there, then disarm the \
                         nospace alarm (reads, watches, deletes and compaction still work)",
                        self.id(),
                        space.free(),
                        space.options().min_free_bytes
                    )));
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "cannot measure free disk space"),
            }
        }
        let short: Vec<u64> = self
            .alarms()
            .iter()
            .filter(|a| a.kind == AlarmKind::NoSpace)
            .map(|a| a.member)
            .collect();
        if short.is_empty() {
            return Ok(());
        }
        self.metrics().no_space_refusals.inc();
        Err(NodeError::NoSpace(format!(
            "a nospace alarm is active (members {short:?} ran short of disk space); free \
             space there, then disarm it (reads, watches, deletes and compaction still work)"
        )))
    }

    /// Disarms the active alarms that match (every alarm when both are
    /// absent) through Raft; returns the alarms disarmed. A member still
    /// short of space raises its alarm again at its next check.
    pub async fn disarm(
        &self,
        member: Option<u64>,
        kind: Option<AlarmKind>,
    ) -> Result<Vec<Alarm>, NodeError> {
        match self
            .write(Command::Alarm(AlarmCommand::Deactivate { member, kind }))
            .await?
        {
            CommandResponse::Alarms(changed) => Ok(changed),
            other => Err(NodeError::Internal(format!(
                "unexpected answer to an alarm command: {other:?}"
            ))),
        }
    }

    fn raised(&self, kind: AlarmKind) -> bool {
        let alarm = Alarm {
            member: self.id(),
            kind,
        };
        self.options()
            .alarms
            .read()
            .is_ok_and(|t| t.contains(&alarm))
    }
}

/// Watches the free space of the data directory: raises this member's
/// `nospace` alarm while it is short, and keeps the reserve file settled.
pub async fn run_space_monitor(
    node: Arc<Node>,
    space: Arc<DiskSpace>,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(space.options().check_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stopped(&mut stop) => return,
            _ = tick.tick() => {}
            _ = space.woken() => {}
        }
        // Read before measuring: a disarm applied after this read makes a
        // raise decided on this measurement stale, and it is dropped.
        let disarms = node.options().alarms.read().map_or(0, |t| t.disarms());
        let checking = space.clone();
        let low = match tokio::task::spawn_blocking(move || checking.check()).await {
            Ok(Ok(low)) => low,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot measure free disk space");
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "the disk space check failed");
                continue;
            }
        };
        let metrics = node.metrics();
        metrics
            .disk_free_bytes
            .set(i64::try_from(space.free()).unwrap_or(i64::MAX));
        metrics
            .disk_reserve_present
            .set(i64::from(space.reserve_present()));
        if !low || node.raised(AlarmKind::NoSpace) {
            continue;
        }
        let alarm = Alarm {
            member: node.id(),
            kind: AlarmKind::NoSpace,
        };
        tracing::warn!(
            member = node.id(),
            free_bytes = space.free(),
            min_free_bytes = space.options().min_free_bytes,
            "short of disk space: raising the nospace alarm"
        );
        if let Err(e) = node
            .write(Command::Alarm(AlarmCommand::Raise { alarm, disarms }))
            .await
        {
            // No leader yet, or a timeout: the next check tries again.
            tracing::warn!(error = %e, "cannot raise the nospace alarm yet");
        }
    }
}
