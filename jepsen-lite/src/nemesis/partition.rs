//! Network faults through the peer-link proxies: partitions of several shapes
//! and link delay.

use futures::future::BoxFuture;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::Rng;

use super::{Context, Nemesis, Target};

/// The partition shapes.
#[derive(Clone, Copy, Debug)]
enum Shape {
    /// The leader alone on one side (it may keep believing it leads).
    IsolateLeader,
    /// A random minority against the majority.
    MajorityMinority,
    /// Two halves that only one bridge node talks to.
    Bridge,
    /// The leader hears the others but nothing it sends arrives.
    LeaderOutboundCut,
    /// The leader's messages arrive, it hears nothing back.
    LeaderInboundCut,
}

const SHAPES: &[Shape] = &[
    Shape::IsolateLeader,
    Shape::IsolateLeader,
    Shape::MajorityMinority,
    Shape::Bridge,
    Shape::LeaderOutboundCut,
    Shape::LeaderInboundCut,
];

/// Cuts links in a random shape; restores them on heal.
pub struct PartitionNemesis {
    cut: Vec<(u64, u64)>,
}

impl PartitionNemesis {
    /// A partition nemesis.
    pub fn new() -> Self {
        Self { cut: Vec::new() }
    }
}

impl Default for PartitionNemesis {
    fn default() -> Self {
        Self::new()
    }
}

fn both_ways(a: &[u64], b: &[u64]) -> Vec<(u64, u64)> {
    let mut v = Vec::new();
    for &x in a {
        for &y in b {
            v.push((x, y));
            v.push((y, x));
        }
    }
    v
}

impl Nemesis for PartitionNemesis {
    fn name(&self) -> &'static str {
        "partition"
    }

    fn inject<'a>(
        &'a mut self,
        ctx: &'a Context,
        rng: &'a mut StdRng,
    ) -> BoxFuture<'a, anyhow::Result<String>> {
        Box::pin(async move {
            anyhow::ensure!(self.cut.is_empty(), "a partition is already active");
            let mut ids = ctx.cluster.ids();
            let shape = *SHAPES
                .choose(rng)
                .ok_or_else(|| anyhow::anyhow!("no shapes"))?;
            let leader = ctx
                .pick(Target::Leader, rng)
                .await
                .ok_or_else(|| anyhow::anyhow!("no running node"))?;
            let others: Vec<u64> = ids.iter().copied().filter(|&i| i != leader).collect();
            let (cut, what) = match shape {
                Shape::IsolateLeader => (
                    both_ways(&[leader], &others),
                    format!("isolate leader {leader} from {others:?}"),
                ),
                Shape::MajorityMinority => {
                    ids.shuffle(rng);
                    let minority = ids.len().saturating_sub(1) / 2;
                    let (a, b) = ids.split_at(minority.max(1));
                    (both_ways(a, b), format!("split {a:?} | {b:?}"))
                }
                Shape::Bridge => {
                    ids.shuffle(rng);
                    let bridge = ids[0];
                    let rest = &ids[1..];
                    let (a, b) = rest.split_at(rest.len() / 2);
                    (
                        both_ways(a, b),
                        format!("bridge {bridge} between {a:?} and {b:?}"),
                    )
                }
                Shape::LeaderOutboundCut => (
                    others.iter().map(|&o| (leader, o)).collect(),
                    format!("one-way: nothing from leader {leader} reaches {others:?}"),
                ),
                Shape::LeaderInboundCut => (
                    others.iter().map(|&o| (o, leader)).collect(),
                    format!("one-way: nothing from {others:?} reaches leader {leader}"),
                ),
            };
            for &(a, b) in &cut {
                ctx.net.set_cut(a, b, true);
            }
            self.cut = cut;
            Ok(what)
        })
    }

    fn heal<'a>(&'a mut self, ctx: &'a Context) -> BoxFuture<'a, anyhow::Result<String>> {
        Box::pin(async move {
            if self.cut.is_empty() {
                return Ok(String::new());
            }
            for (a, b) in std::mem::take(&mut self.cut) {
                ctx.net.set_cut(a, b, false);
            }
            Ok("links restored".to_string())
        })
    }
}

/// Delays every peer link (with jitter); sometimes resets all connections.
pub struct DelayNemesis {
    active: bool,
}

impl DelayNemesis {
    /// A delay nemesis.
    pub fn new() -> Self {
        Self { active: false }
    }
}

impl Default for DelayNemesis {
    fn default() -> Self {
        Self::new()
    }
}

impl Nemesis for DelayNemesis {
    fn name(&self) -> &'static str {
        "delay"
    }

    fn inject<'a>(
        &'a mut self,
        ctx: &'a Context,
        rng: &'a mut StdRng,
    ) -> BoxFuture<'a, anyhow::Result<String>> {
        Box::pin(async move {
            let ms = rng.gen_range(20..150);
            let jitter = rng.gen_range(0..100);
            for (a, b) in ctx.net.links() {
                ctx.net.set_delay(a, b, ms, jitter);
            }
            let reset = rng.gen_bool(0.3);
            if reset {
                ctx.net.reset_all();
            }
            self.active = true;
            Ok(format!(
                "every link delayed {ms}ms +{jitter}ms jitter{}",
                if reset { ", connections reset" } else { "" }
            ))
        })
    }

    fn heal<'a>(&'a mut self, ctx: &'a Context) -> BoxFuture<'a, anyhow::Result<String>> {
        Box::pin(async move {
            if !std::mem::take(&mut self.active) {
                return Ok(String::new());
            }
            for (a, b) in ctx.net.links() {
                ctx.net.set_delay(a, b, 0, 0);
            }
            Ok("delays removed".to_string())
        })
    }
}
