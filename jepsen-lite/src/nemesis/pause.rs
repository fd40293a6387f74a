//! SIGSTOP / SIGCONT of a node (random or the leader).

use futures::future::BoxFuture;
use rand::rngs::StdRng;

use super::{Context, Nemesis, Target};

/// Pause a node's process group; resume it on heal.
pub struct PauseNemesis {
    target: Target,
    paused: Option<u64>,
}

impl PauseNemesis {
    /// Pauses the `target`.
    pub fn new(target: Target) -> Self {
        Self {
            target,
            paused: None,
        }
    }
}

impl Nemesis for PauseNemesis {
    fn name(&self) -> &'static str {
        match self.target {
            Target::Random => "pause",
            Target::Leader => "pause-leader",
        }
    }

    fn inject<'a>(
        &'a mut self,
        ctx: &'a Context,
        rng: &'a mut StdRng,
    ) -> BoxFuture<'a, anyhow::Result<String>> {
        Box::pin(async move {
            anyhow::ensure!(self.paused.is_none(), "a node is already paused");
            let id = ctx
                .pick(self.target, rng)
                .await
                .ok_or_else(|| anyhow::anyhow!("no running node"))?;
            let pid = ctx.cluster.pause(id)?;
            self.paused = Some(id);
            Ok(format!("SIGSTOP node {id} (pid {pid})"))
        })
    }

    fn heal<'a>(&'a mut self, ctx: &'a Context) -> BoxFuture<'a, anyhow::Result<String>> {
        Box::pin(async move {
            let Some(id) = self.paused.take() else {
                return Ok(String::new());
            };
            // The node may have been killed meanwhile by another nemesis.
            if !ctx.cluster.running(id) {
                return Ok(format!("node {id} is no longer running"));
            }
            let pid = ctx.cluster.resume(id)?;
            Ok(format!("SIGCONT node {id} (pid {pid})"))
        })
    }
}
