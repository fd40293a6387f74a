//! The forwarder against a scripted leader on a real socket: writes that
//! queue behind open requests share one request and each gets its own
//! answer, and a leader that cannot decode batches gets them one by one.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio::sync::Notify;

use super::*;
use crate::codec;
use crate::kv::Limits;
use crate::raft::network::NetFault;
use crate::raft::wire::{serve_framed, Envelope, FrameCaps, PeerIdentity};

const LEADER: NodeId = 2;

fn put(n: u64) -> Command {
    Command::Put {
        key: format!("k{n}"),
        value: n.to_le_bytes().to_vec(),
        prev_kv: false,
    }
}

/// The revision the fake leader answers for `command`: the number in its key.
fn revision_of(command: &Command) -> u64 {
    match command {
        Command::Put { key, .. } => key[1..].parse().unwrap_or(0),
        _ => 0,
    }
}

/// What the fake leader saw.
#[derive(Default)]
struct Seen {
    singles: AtomicU64,
    batches: AtomicU64,
    largest_batch: AtomicU64,
}

/// A leader that answers every put with the revision named by its key. It
/// holds its answers until `release` is notified; `batches` says whether it
/// can decode batch requests (an older build cannot).
async fn fake_leader(batches: bool, release: Arc<Notify>, seen: Arc<Seen>) -> String {
    let caps = FrameCaps::for_limits(&Limits::default());
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let released = Arc::new(tokio::sync::OnceCell::new());
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (release, seen, released) = (release.clone(), seen.clone(), released.clone());
            tokio::spawn(async move {
                let mut conn = serve_framed(crate::tls::PeerStream::Plain(stream), caps);
                while let Some(Ok(frame)) = conn.requests.next().await {
                    let env: Envelope<PeerRequest> = codec::decode(&frame).expect("decode");
                    released
                        .get_or_init(|| async { release.notified().await })
                        .await;
                    let response = match env.request {
                        PeerRequest::Forward(c) => {
                            seen.singles.fetch_add(1, Ordering::SeqCst);
                            PeerResponse::Forward(Ok(CommandResponse::Put {
                                revision: revision_of(&c),
                                prev_kv: None,
                            }))
                        }
                        PeerRequest::ForwardBatch(_) if !batches => {
                            PeerResponse::Error(format!("{UNDECODABLE}: unknown variant"))
                        }
                        PeerRequest::ForwardBatch(cs) => {
                            seen.batches.fetch_add(1, Ordering::SeqCst);
                            seen.largest_batch
                                .fetch_max(cs.len() as u64, Ordering::SeqCst);
                            PeerResponse::ForwardBatch(
                                cs.iter()
                                    .map(|c| {
                                        Ok(CommandResponse::Put {
                                            revision: revision_of(c),
                                            prev_kv: None,
                                        })
                                    })
                                    .collect(),
                            )
                        }
                        other => PeerResponse::Error(format!("unexpected {other:?}")),
                    };
                    let bytes = codec::encode(&response).expect("encode");
                    if conn.responses.send(Bytes::from(bytes)).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

fn forwarder() -> Forwarder {
    let pool = PeerPool::new(
        NetFault::default(),
        Duration::from_secs(5),
        FrameCaps::for_limits(&Limits::default()),
        PeerIdentity {
            cluster_id: 7,
            node_id: 1,
        },
        crate::tls::PeerTls::plain(),
    );
    Forwarder::start(Arc::new(pool), Duration::from_secs(10))
}

/// Queues `n` puts, releases the leader, and checks every answer.
async fn forward_all(forwarder: &Forwarder, addr: &str, release: &Notify, n: u64) {
    let answers: Vec<_> = (1..=n)
        .map(|i| forwarder.forward(LEADER, addr.to_string(), put(i)))
        .collect();
    release.notify_one();
    for (i, answer) in (1..=n).zip(answers) {
        match answer.await {
            Ok(Ok(Ok(CommandResponse::Put { revision, .. }))) => assert_eq!(revision, i),
            other => panic!("write {i}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn writes_queued_behind_open_requests_share_one_and_each_gets_its_answer() {
    let (release, seen) = (Arc::new(Notify::new()), Arc::new(Seen::default()));
    let addr = fake_leader(true, release.clone(), seen.clone()).await;
    forward_all(&forwarder(), &addr, &release, 100).await;
    // The first requests went out before the rest were queued; the rest
    // waited for a slot and went together.
    assert!(seen.batches.load(Ordering::SeqCst) >= 1);
    assert!(seen.largest_batch.load(Ordering::SeqCst) > 1);
    assert!(seen.batches.load(Ordering::SeqCst) + seen.singles.load(Ordering::SeqCst) < 100);
}

#[tokio::test]
async fn a_leader_that_cannot_decode_batches_gets_the_writes_one_by_one() {
    let (release, seen) = (Arc::new(Notify::new()), Arc::new(Seen::default()));
    let addr = fake_leader(false, release.clone(), seen.clone()).await;
    let forwarder = forwarder();
    forward_all(&forwarder, &addr, &release, 50).await;
    assert_eq!(seen.batches.load(Ordering::SeqCst), 0);
    assert_eq!(seen.singles.load(Ordering::SeqCst), 50);
    // And it stays so for that leader.
    let before = seen.singles.load(Ordering::SeqCst);
    forward_all(&forwarder, &addr, &release, 20).await;
    assert_eq!(seen.singles.load(Ordering::SeqCst), before + 20);
    assert_eq!(seen.batches.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn an_unreachable_leader_fails_every_queued_write_with_a_connect_error() {
    // A port nothing listens on.
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").to_string()
    };
    let forwarder = forwarder();
    let answers: Vec<_> = (1..=10)
        .map(|i| forwarder.forward(LEADER, addr.clone(), put(i)))
        .collect();
    for answer in answers {
        assert!(matches!(answer.await, Ok(Err(CallError::Connect { .. }))));
    }
}

#[test]
fn only_writes_with_small_answers_are_batched() {
    assert!(batchable(&put(1)));
    assert!(batchable(&Command::Delete {
        key: "a".into(),
        prefix: false,
        prev_kv: false
    }));
    assert!(!batchable(&Command::Delete {
        key: "a".into(),
        prefix: false,
        prev_kv: true
    }));
    assert!(!batchable(&Command::Put {
        key: "a".into(),
        value: vec![1],
        prev_kv: true
    }));
    assert!(!batchable(&Command::Delete {
        key: "a".into(),
        prefix: true,
        prev_kv: true
    }));
    assert!(!batchable(&Command::Txn(Default::default())));
    assert!(!batchable(&Command::Compact { revision: 1 }));
    let session = |op| {
        Command::Session(crate::kv::SessionCommand {
            client: 1,
            stamp: crate::kv::SessionStamp {
                now_ms: 0,
                limits: crate::kv::SessionLimits::default(),
            },
            op,
        })
    };
    let write = |command| crate::kv::SessionOp::Write {
        session: 1,
        seq: 1,
        acked_below: 1,
        command: Box::new(command),
    };
    assert!(batchable(&session(crate::kv::SessionOp::Register)));
    assert!(batchable(&session(write(put(1)))));
    assert!(!batchable(&session(write(
        Command::Txn(Default::default())
    ))));
}
