//! Leader transfer to a random other voter (`POST /v1/leader/transfer`),
//! which answers once the new leader leads. Nothing to heal.

use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

use super::admin::{Admin, Op, Skipped};
use super::{Context, Nemesis};

/// How long a transfer may take, retries included.
const TRANSFER_LIMIT: Duration = Duration::from_secs(10);

/// Moves leadership to another voter.
pub struct TransferNemesis {
    admin: Admin,
}

impl TransferNemesis {
    /// A transfer nemesis.
    pub fn new() -> anyhow::Result<Self> {
        Ok(Self {
            admin: Admin::new()?,
        })
    }
}

impl Nemesis for TransferNemesis {
    fn name(&self) -> &'static str {
        "transfer"
    }

    fn inject<'a>(
        &'a mut self,
        ctx: &'a Context,
        rng: &'a mut StdRng,
    ) -> BoxFuture<'a, anyhow::Result<String>> {
        Box::pin(async move {
            let view = self
                .admin
                .view(&ctx.cluster)
                .await
                .map_err(|e| anyhow::anyhow!("no membership view: {e}"))?;
            // A voter that can take over: the server refuses one that has
            // not answered the leader lately, so pick among the live ones.
            let candidates: Vec<u64> = view
                .members
                .iter()
                .filter(|m| {
                    m.role == "voter"
                        && m.healthy
                        && ctx.cluster.running(m.id)
                        && !ctx.cluster.paused(m.id)
                })
                .map(|m| m.id)
                .collect();
            let Some(&to) = candidates.choose(rng) else {
                return Err(Skipped(format!(
                    "no healthy voter besides leader {} to take over",
                    view.leader
                ))
                .into());
            };
            let started = Instant::now();
            let out = self
                .admin
                .ensure(&ctx.cluster, &Op::Transfer(to), TRANSFER_LIMIT, |_| true)
                .await?;
            let term = out
                .answer
                .as_ref()
                .and_then(|a| a.get("term"))
                .and_then(serde_json::Value::as_u64)
                .map_or_else(|| "?".to_string(), |t| t.to_string());
            Ok(format!(
                "leader {} -> {to}: node {to} leads in term {term} after {:.2} s (was term {})",
                view.leader,
                started.elapsed().as_secs_f64(),
                view.term
            ))
        })
    }

    fn heal<'a>(&'a mut self, _ctx: &'a Context) -> BoxFuture<'a, anyhow::Result<String>> {
        Box::pin(async { Ok(String::new()) })
    }
}
