//! Faults on one node's process (random or the leader), undone on heal:
//! kill -9 and a restart on the same data directory, or SIGSTOP and SIGCONT
//! of its process group.

use futures::future::BoxFuture;
use rand::rngs::StdRng;

use super::{Context, Nemesis, Target};

/// What is done to the node's process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Action {
    /// SIGKILL; restarted on heal.
    Kill,
    /// SIGSTOP of its process group; SIGCONT on heal.
    Pause,
}

/// Kills or pauses a node; restarts or resumes it on heal.
pub struct ProcessNemesis {
    action: Action,
    target: Target,
    /// The node killed or paused.
    hit: Option<u64>,
}

impl ProcessNemesis {
    /// SIGKILLs the `target`; restarts it on heal.
    pub fn kill(target: Target) -> Self {
        Self::new(Action::Kill, target)
    }

    /// Pauses the `target`; resumes it on heal.
    pub fn pause(target: Target) -> Self {
        Self::new(Action::Pause, target)
    }

    fn new(action: Action, target: Target) -> Self {
        Self {
            action,
            target,
            hit: None,
        }
    }
}

impl Nemesis for ProcessNemesis {
    fn name(&self) -> &'static str {
        match (self.action, self.target) {
            (Action::Kill, Target::Random) => "kill",
            (Action::Kill, Target::Leader) => "kill-leader",
            (Action::Pause, Target::Random) => "pause",
            (Action::Pause, Target::Leader) => "pause-leader",
        }
    }

    fn inject<'a>(
        &'a mut self,
        ctx: &'a Context,
        rng: &'a mut StdRng,
    ) -> BoxFuture<'a, anyhow::Result<String>> {
        Box::pin(async move {
            let busy = match self.action {
                Action::Kill => "a node is already down",
                Action::Pause => "a node is already paused",
            };
            anyhow::ensure!(self.hit.is_none(), "{busy}");
            let id = ctx
                .pick(self.target, rng)
                .await
                .ok_or_else(|| anyhow::anyhow!("no running node"))?;
            let (signal, pid) = match self.action {
                Action::Kill => ("SIGKILL", ctx.cluster.kill(id)?),
                Action::Pause => ("SIGSTOP", ctx.cluster.pause(id)?),
            };
            self.hit = Some(id);
            Ok(format!("{signal} node {id} (pid {pid})"))
        })
    }

    fn heal<'a>(&'a mut self, ctx: &'a Context) -> BoxFuture<'a, anyhow::Result<String>> {
        Box::pin(async move {
            let Some(id) = self.hit.take() else {
                return Ok(String::new());
            };
            match self.action {
                Action::Kill => {
                    let pid = ctx.cluster.start(id)?;
                    Ok(format!("restarted node {id} (pid {pid})"))
                }
                Action::Pause => {
                    // The node may have been killed meanwhile by another nemesis.
                    if !ctx.cluster.running(id) {
                        return Ok(format!("node {id} is no longer running"));
                    }
                    let pid = ctx.cluster.resume(id)?;
                    Ok(format!("SIGCONT node {id} (pid {pid})"))
                }
            }
        })
    }
}
