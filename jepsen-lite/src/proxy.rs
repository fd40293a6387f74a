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

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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
    blocked: AtomicBool,
    delay_ms: AtomicU64,
    jitter_ms: AtomicU64,
}

impl Half {
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
        while half.blocked.load(Ordering::Relaxed) {
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
        let (fwd, back, target, mut reset) =
            (fwd.clone(), back.clone(), target.clone(), reset.clone());
        tokio::spawn(async move {
            reset.mark_unchanged();
            // A blocked link also holds new connections before they reach the peer.
            while fwd.blocked.load(Ordering::Relaxed) {
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

    /// Cuts (or restores) the directed link `from → to`: nothing `from`
    /// sends reaches `to`.
    pub fn set_cut(&self, from: u64, to: u64, cut: bool) {
        for h in self.halves(from, to) {
            h.blocked.store(cut, Ordering::Relaxed);
        }
        let what = if cut { "cut" } else { "restored" };
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

    /// Removes every cut and delay.
    pub fn heal_all(&self) {
        for l in self.links.values() {
            for h in [&l.fwd, &l.back] {
                h.blocked.store(false, Ordering::Relaxed);
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
        net.heal_all();
        tokio::time::timeout(Duration::from_secs(2), c.read_exact(&mut b))
            .await
            .expect("delivered after heal")
            .expect("read");
        assert_eq!(&b, b"yo");
        net.reset_all();
        let n = tokio::time::timeout(Duration::from_secs(2), c.read(&mut b))
            .await
            .expect("closed");
        assert!(matches!(n, Ok(0) | Err(_)));
    }
}
