//! kill -9 of a node (random or the leader), restarted on the same data
//! directory when healed.

use futures::future::BoxFuture;
use rand::rngs::StdRng;

use super::{Context, Nemesis, Target};

/// SIGKILL a node; restart it on heal.
pub struct KillNemesis {
    target: Target,
    killed: Option<u64>,
}

impl KillNemesis {
    /// Kills the `target`.
    pub fn new(target: Target) -> Self {
        Self {
            target,
            killed: None,
        }
    }
}

impl Nemesis for KillNemesis {
    fn name(&self) -> &'static str {
        match self.target {
            Target::Random => "kill",
            Target::Leader => "kill-leader",
        }
    }

    fn inject<'a>(
        &'a mut self,
        ctx: &'a Context,
        rng: &'a mut StdRng,
    ) -> BoxFuture<'a, anyhow::Result<String>> {
        Box::pin(async move {
            anyhow::ensure!(self.killed.is_none(), "a node is already down");
            let id = ctx
                .pick(self.target, rng)
                .await
                .ok_or_else(|| anyhow::anyhow!("no running node"))?;
            let pid = ctx.cluster.kill(id)?;
            self.killed = Some(id);
            Ok(format!("SIGKILL node {id} (pid {pid})"))
        })
    }

    fn heal<'a>(&'a mut self, ctx: &'a Context) -> BoxFuture<'a, anyhow::Result<String>> {
        Box::pin(async move {
            let Some(id) = self.killed.take() else {
                return Ok(String::new());
            };
            let pid = ctx.cluster.start(id)?;
            Ok(format!("restarted node {id} (pid {pid})"))
        })
    }
}
