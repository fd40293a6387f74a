//! A TCP fault proxy on every directed peer link. Node `i` dials node `j`
//! through the proxy `(i, j)` (ballastd `--dial-overrides`), so a link can be
//! cut one way, both ways, delayed (with jitter) or reset, without root and
//! without `tc`. Every fault change is recorded on the history's clock.
//!
//! A connection carries bytes both ways: `i → j` requests go "forward" on
//! proxy `(i, j)`, and `j → i` responses go "back" on it. Cutting the
//! directed link `i → j` therefore holds the forward half of proxy `(i, j)`
//! and the back half of proxy `(j, i)`. A held half keeps its connection open
//! and stops forwarding (a blackhole: like a partition, bytes are late, not
//! corrupt); healing lets them through, and `reset` closes every connection.
//! Cuts are counted: two faults that cut the same link each restore only
//! their own, and the link carries bytes again when neither holds it.
//! A node can also be made unreachable: its links' connections are closed
//! and new ones refused at once, as if its machine were down, while its
//! process keeps running.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::history::{EventType, Recorder};

/// State of one direction of one proxy.
#[derive(Default)]
pub struct Half {
    /// Faults holding this half; it forwards nothing while any does.
    cuts: AtomicU32,
    /// Faults refusing new connections (counted on the dialing half).
    refusals: AtomicU32,
    delay_ms: AtomicU64,
    jitter_ms: AtomicU64,
}

impl Half {
    fn blocked(&self) -> bool {
        self.cuts.load(Ordering::Relaxed) > 0
    }

    fn refusing(&self) -> bool {
        self.refusals.load(Ordering::Relaxed) > 0
    }

    /// Adds (`cut`) or removes one hold; the number of holds left.
    fn hold(&self, cut: bool) -> u32 {
        count(&self.cuts, cut)
    }

    fn delay(&self) -> Option<Duration> {
        let d = self.delay_ms.load(Ordering::Relaxed);
        let j = self.jitter_ms.load(Ordering::Relaxed);
        if d == 0 && j == 0 {
            return None;
        }
        let extra = if j > 0 {
            rand::thread_rng().gen_range(0..=j)
        } else {
            0
        };
        Some(Duration::from_millis(d + extra))
    }
}

/// Adds one to (`up`) or takes one from `counter`; the count left.
fn count(counter: &AtomicU32, up: bool) -> u32 {
    if up {
        counter.fetch_add(1, Ordering::Relaxed) + 1
    } else {
        match counter.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
            Some(n.saturating_sub(1))
        }) {
            Ok(n) | Err(n) => n.saturating_sub(1),
        }
    }
}

/// One directed link's proxy.
pub struct LinkProxy {
    /// Dialing node.
    pub from: u64,
    /// Dialed node.
    pub to: u64,
    /// Where the proxy listens.
    pub listen: String,
    fwd: Arc<Half>,
    back: Arc<Half>,
    reset: watch::Sender<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for LinkProxy {
    fn drop(&mut self) {
        self.task.abort();
        let _ = self.reset.send(u64::MAX);
    }
}

async fn pump(
    mut r: tokio::net::tcp::OwnedReadHalf,
    mut w: tokio::net::tcp::OwnedWriteHalf,
    half: Arc<Half>,
    mut reset: watch::Receiver<u64>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = tokio::select! {
            r = r.read(&mut buf) => match r { Ok(0) | Err(_) => break, Ok(n) => n },
            _ = reset.changed() => break,
        };
        while half.blocked() {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(5)) => {}
                _ = reset.changed() => return,
            }
        }
        if let Some(d) = half.delay() {
            tokio::select! {
                _ = tokio::time::sleep(d) => {}
                _ = reset.changed() => return,
            }
        }
        if w.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
}

async fn serve(
    listener: TcpListener,
    target: String,
    fwd: Arc<Half>,
    back: Arc<Half>,
    reset: watch::Receiver<u64>,
) {
    loop {
        let Ok((inbound, _)) = listener.accept().await else {
            continue;
        };
        if fwd.refusing() {
            // Closed before a byte is read: the dialer fails at once.
            drop(inbound);
            continue;
        }
        let (fwd, back, target, mut reset) =
            (fwd.clone(), back.clone(), target.clone(), reset.clone());
        tokio::spawn(async move {
            reset.mark_unchanged();
            // A blocked link also holds new connections before they reach the peer.
            while fwd.blocked() {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(5)) => {}
                    _ = reset.changed() => return,
                }
            }
            let Ok(outbound) = TcpStream::connect(&target).await else {
                return;
            };
            let _ = inbound.set_nodelay(true);
            let _ = outbound.set_nodelay(true);
            let (ir, iw) = inbound.into_split();
            let (or, ow) = outbound.into_split();
            tokio::select! {
                _ = pump(ir, ow, fwd, reset.clone()) => {}
                _ = pump(or, iw, back, reset) => {}
            }
        });
    }
}

/// Every directed link's proxy of a cluster.
pub struct Network {
    links: BTreeMap<(u64, u64), LinkProxy>,
    recorder: Recorder,
}

impl Network {
    /// Starts a proxy for every ordered pair of `peers` (`id → peer address`).
    pub async fn start(peers: &BTreeMap<u64, String>, recorder: Recorder) -> anyhow::Result<Self> {
        let mut links = BTreeMap::new();
        for &from in peers.keys() {
            for (&to, target) in peers {
                if from == to {
                    continue;
                }
                let listener = TcpListener::bind("127.0.0.1:0").await?;
                let listen = listener.local_addr()?.to_string();
                let fwd = Arc::new(Half::default());
                let back = Arc::new(Half::default());
                let (reset, rx) = watch::channel(0u64);
                let task = tokio::spawn(serve(
                    listener,
                    target.clone(),
                    fwd.clone(),
                    back.clone(),
                    rx,
                ));
                links.insert(
                    (from, to),
                    LinkProxy {
                        from,
                        to,
                        listen,
                        fwd,
                        back,
                        reset,
                        task,
                    },
                );
            }
        }
        Ok(Self { links, recorder })
    }

    /// `--dial-overrides` for node `id`: its outgoing links' proxies.
    pub fn dial_overrides(&self, id: u64) -> String {
        self.links
            .values()
            .filter(|l| l.from == id)
            .map(|l| format!("{}={}", l.to, l.listen))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn halves(&self, from: u64, to: u64) -> Vec<&Arc<Half>> {
        let mut v = Vec::new();
        if let Some(l) = self.links.get(&(from, to)) {
            v.push(&l.fwd);
        }
        if let Some(l) = self.links.get(&(to, from)) {
            v.push(&l.back);
        }
        v
    }

    /// Cuts the directed link `from → to` (nothing `from` sends reaches
    /// `to`), or takes back one such cut: the link is restored when every
    /// fault that cut it has taken its cut back.
    pub fn set_cut(&self, from: u64, to: u64, cut: bool) {
        let mut held = 0;
        for h in self.halves(from, to) {
            held = held.max(h.hold(cut));
        }
        let what = match (cut, held) {
            (true, _) => "cut".to_string(),
            (false, 0) => "restored".to_string(),
            (false, n) => format!("still cut by {n} other fault(s)"),
        };
        self.recorder
            .nemesis(EventType::Info, format!("proxy: link {from}->{to} {what}"));
    }

    /// Delays every message on `from → to` by `ms` plus up to `jitter` ms.
    pub fn set_delay(&self, from: u64, to: u64, ms: u64, jitter: u64) {
        for h in self.halves(from, to) {
            h.delay_ms.store(ms, Ordering::Relaxed);
            h.jitter_ms.store(jitter, Ordering::Relaxed);
        }
        self.recorder.nemesis(
            EventType::Info,
            format!("proxy: link {from}->{to} delay {ms}ms +{jitter}ms jitter"),
        );
    }

    /// Closes every connection through the proxies (new ones are accepted).
    pub fn reset_all(&self) {
        for l in self.links.values() {
            l.reset.send_modify(|g| *g += 1);
        }
        self.recorder
            .nemesis(EventType::Info, "proxy: every connection reset".to_string());
    }

    /// Makes `node` unreachable over its peer links, both ways: closes
    /// their connections and refuses new ones, so every request to or from
    /// it fails at once (a cut, by contrast, leaves them pending). `false`
    /// takes one such fault back; the node is reachable again when no fault
    /// holds it.
    pub fn set_unreachable(&self, node: u64, unreachable: bool) {
        let mut held = 0;
        for l in self
            .links
            .values()
            .filter(|l| l.from == node || l.to == node)
        {
            held = held.max(count(&l.fwd.refusals, unreachable));
            if unreachable {
                l.reset.send_modify(|g| *g += 1);
            }
        }
        let what = match (unreachable, held) {
            (true, _) => "unreachable: its links' connections closed, new ones refused".to_string(),
            (false, 0) => "reachable again".to_string(),
            (false, n) => format!("still unreachable for {n} other fault(s)"),
        };
        self.recorder
            .nemesis(EventType::Info, format!("proxy: node {node} {what}"));
    }

    /// Whether a fault holds any of `node`'s links: cut (either way) or
    /// unreachable.
    pub fn impaired(&self, node: u64) -> bool {
        self.links
            .values()
            .filter(|l| l.from == node || l.to == node)
            .any(|l| l.fwd.blocked() || l.back.blocked() || l.fwd.refusing())
    }

    /// Removes every cut and delay.
    pub fn heal_all(&self) {
        for l in self.links.values() {
            for h in [&l.fwd, &l.back] {
                h.cuts.store(0, Ordering::Relaxed);
                h.delay_ms.store(0, Ordering::Relaxed);
                h.jitter_ms.store(0, Ordering::Relaxed);
            }
        }
        self.recorder
            .nemesis(EventType::Info, "proxy: every link healed".to_string());
    }

    /// Node pairs (directed).
    pub fn links(&self) -> Vec<(u64, u64)> {
        self.links.keys().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Clock;

    #[tokio::test]
    async fn forwards_cuts_and_heals() {
        let echo = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = echo.local_addr().expect("addr").to_string();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = echo.accept().await {
                tokio::spawn(async move {
                    let mut b = [0u8; 16];
                    while let Ok(n) = s.read(&mut b).await {
                        if n == 0 || s.write_all(&b[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        let mut peers = BTreeMap::new();
        peers.insert(1, "127.0.0.1:1".to_string());
        peers.insert(2, addr);
        let net = Network::start(&peers, Recorder::new(Clock::new()))
            .await
            .expect("start");
        let via = net.links[&(1, 2)].listen.clone();
        let mut c = TcpStream::connect(&via).await.expect("connect");
        c.write_all(b"hi").await.expect("write");
        let mut b = [0u8; 2];
        c.read_exact(&mut b).await.expect("echo");
        assert_eq!(&b, b"hi");
        // Cut 2 -> 1: the request arrives, the answer is held.
        net.set_cut(2, 1, true);
        c.write_all(b"yo").await.expect("write");
        let r = tokio::time::timeout(Duration::from_millis(200), c.read_exact(&mut b)).await;
        assert!(r.is_err(), "held while cut");
        // A second fault cuts it too; taking the first cut back leaves it cut.
        net.set_cut(2, 1, true);
        net.set_cut(2, 1, false);
        let r = tokio::time::timeout(Duration::from_millis(200), c.read_exact(&mut b)).await;
        assert!(r.is_err(), "held while the second cut remains");
        net.set_cut(2, 1, false);
        tokio::time::timeout(Duration::from_secs(2), c.read_exact(&mut b))
            .await
            .expect("delivered after heal")
            .expect("read");
        assert_eq!(&b, b"yo");
        net.set_cut(1, 2, true);
        net.heal_all();
        c.write_all(b"ok").await.expect("write");
        tokio::time::timeout(Duration::from_secs(2), c.read_exact(&mut b))
            .await
            .expect("heal_all lifts every cut")
            .expect("read");
        assert_eq!(&b, b"ok");
        // Unreachable: the open connection is closed, a new one refused.
        net.set_unreachable(2, true);
        let n = tokio::time::timeout(Duration::from_secs(2), c.read(&mut b))
            .await
            .expect("closed");
        assert!(matches!(n, Ok(0) | Err(_)));
        let mut d = TcpStream::connect(&via)
            .await
            .expect("accepted, then closed");
        let _ = d.write_all(b"hi").await;
        let n = tokio::time::timeout(Duration::from_secs(2), d.read(&mut b))
            .await
            .expect("closed at once");
        assert!(matches!(n, Ok(0) | Err(_)));
        net.set_unreachable(2, false);
        let mut c = TcpStream::connect(&via).await.expect("connect");
        c.write_all(b"hi").await.expect("write");
        tokio::time::timeout(Duration::from_secs(2), c.read_exact(&mut b))
            .await
            .expect("reachable again")
            .expect("read");
        assert_eq!(&b, b"hi");
        net.reset_all();
        let n = tokio::time::timeout(Duration::from_secs(2), c.read(&mut b))
            .await
            .expect("closed");
        assert!(matches!(n, Ok(0) | Err(_)));
    }
}
