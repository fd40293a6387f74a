//! Failpoints of a `--features failpoints` ballastd, set over
//! `PUT /debug/failpoints/{name}` on one node and cleared on heal.

use futures::future::BoxFuture;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

use super::{Context, Nemesis, Target};

/// (failpoint, action) pairs that slow a node down without stopping it.
const ACTIONS: &[(&str, &str)] = &[
    ("log-sync", "sleep(300)"),
    ("log-sync", "50%sleep(100)"),
    ("apply", "20%sleep(200)"),
];

/// Sets a random failpoint on a random node.
pub struct FailpointNemesis {
    active: Option<(u64, &'static str)>,
}

impl FailpointNemesis {
    /// A failpoint nemesis.
    pub fn new() -> Self {
        Self { active: None }
    }
}

impl Default for FailpointNemesis {
    fn default() -> Self {
        Self::new()
    }
}

impl Nemesis for FailpointNemesis {
    fn name(&self) -> &'static str {
        "failpoint"
    }

    fn inject<'a>(
        &'a mut self,
        ctx: &'a Context,
        rng: &'a mut StdRng,
    ) -> BoxFuture<'a, anyhow::Result<String>> {
        Box::pin(async move {
            let id = ctx
                .pick(Target::Random, rng)
                .await
                .ok_or_else(|| anyhow::anyhow!("no running node"))?;
            let &(name, action) = ACTIONS
                .choose(rng)
                .ok_or_else(|| anyhow::anyhow!("no actions"))?;
            let c = ctx
                .cluster
                .client(id)
                .ok_or_else(|| anyhow::anyhow!("no client"))?;
            c.failpoint(name, Some(action)).await?;
            self.active = Some((id, name));
            Ok(format!("node {id}: failpoint {name}={action}"))
        })
    }

    fn heal<'a>(&'a mut self, ctx: &'a Context) -> BoxFuture<'a, anyhow::Result<String>> {
        Box::pin(async move {
            let Some((id, name)) = self.active.take() else {
                return Ok(String::new());
            };
            if !ctx.cluster.running(id) {
                return Ok(format!("node {id} is down; failpoint {name} went with it"));
            }
            let c = ctx
                .cluster
                .client(id)
                .ok_or_else(|| anyhow::anyhow!("no client"))?;
            c.failpoint(name, None).await?;
            Ok(format!("node {id}: failpoint {name} cleared"))
        })
    }
}
