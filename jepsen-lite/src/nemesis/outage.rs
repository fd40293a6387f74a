//! A full control-plane outage: SIGKILL every node, restart them all on heal.
//! The data plane (replicas) must keep serving throughout.

use futures::future::BoxFuture;
use rand::rngs::StdRng;

use super::{Context, Nemesis};

/// Kills every running node; restarts them on heal.
#[derive(Default)]
pub struct OutageNemesis {
    killed: Vec<u64>,
}

impl Nemesis for OutageNemesis {
    fn name(&self) -> &'static str {
        "outage"
    }

    fn inject<'a>(
        &'a mut self,
        ctx: &'a Context,
        _rng: &'a mut StdRng,
    ) -> BoxFuture<'a, anyhow::Result<String>> {
        Box::pin(async move {
            anyhow::ensure!(self.killed.is_empty(), "the cluster is already down");
            for id in ctx.cluster.ids() {
                if ctx.cluster.running(id) {
                    ctx.cluster.kill(id)?;
                    self.killed.push(id);
                }
            }
            Ok(format!("SIGKILL every node {:?}", self.killed))
        })
    }

    fn heal<'a>(&'a mut self, ctx: &'a Context) -> BoxFuture<'a, anyhow::Result<String>> {
        Box::pin(async move {
            let killed = std::mem::take(&mut self.killed);
            for id in &killed {
                ctx.cluster.start(*id)?;
            }
            Ok(if killed.is_empty() {
                String::new()
            } else {
                format!("restarted every node {killed:?}")
            })
        })
    }
}
