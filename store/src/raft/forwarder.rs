//! Group forwarding on a follower: the writes that wait while earlier ones
//! are on their way to the leader go in one peer request.
//!
//! Every write a follower receives is forwarded to the leader. One request
//! per write costs four system calls and two wake-ups on each side for a few
//! hundred bytes; under load, most of a follower's time went there. The
//! forwarder keeps at most eight requests of small writes open to the leader
//! (see [`BOUNDS`] and `batch.rs`) and sends whatever queued meanwhile as one
//! [`PeerRequest::ForwardBatch`]; the leader proposes the writes one by one
//! (its proposer batches them again) and answers each. Under light load a
//! batch holds one write and nothing waits.
//!
//! Only writes whose answers are small are batched: puts and single-key
//! deletes that do not ask for the previous value. Writes that return
//! values (`prev_kv`, prefix deletes, transactions) go alone, as
//! [`PeerRequest::Forward`], so no answer frame outgrows its cap.
//!
//! A leader running an older build cannot decode a batch; it answers so
//! without proposing anything, and the forwarder then sends that batch's
//! writes one by one and stops batching for that leader.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::batch::{BatchQueue, Bounds, Queued};
use super::pool::PeerPool;
use super::types::NodeId;
use super::wire::{CallError, ForwardError, PeerRequest, PeerResponse};
use crate::kv::limits::command_bytes;
use crate::kv::{Command, CommandResponse, SessionOp};

/// The batches: at most eight requests of small writes open to the leader at
/// once, at most 256 writes and 1 MiB each (see `batch.rs`). Eight rather
/// than two keeps the pipeline to the leader full when a few dozen clients
/// write (see docs/benchmarks.md, "Batches in flight").
pub const BOUNDS: Bounds = Bounds {
    in_flight: 8,
    entries: 256,
    bytes: super::wire::APPEND_BATCH_BYTES,
};

/// What the leader answered to one forwarded write, or why it could not be
/// asked.
pub type Answer = Result<Result<CommandResponse, ForwardError>, CallError>;

/// Whether `command` may share a request with others: its answer is a
/// revision and a few flags, never a value (a batch of small puts asking for
/// their previous values could be answered with many large ones). A client
/// session's registration and its writes of such commands answer as small
/// (a replay answers what the write itself did).
pub fn batchable(command: &Command) -> bool {
    match command {
        Command::Put { prev_kv: false, .. }
        | Command::Delete {
            prefix: false,
            prev_kv: false,
            ..
        } => true,
        Command::Session(s) => match &s.op {
            SessionOp::Register => true,
            SessionOp::Write { command, .. } => batchable(command),
        },
        _ => false,
    }
}

struct Item {
    leader: NodeId,
    addr: String,
    command: Command,
    reply: oneshot::Sender<Answer>,
}

/// The handle batchable writes are forwarded through.
pub struct Forwarder {
    queue: mpsc::UnboundedSender<Item>,
}

impl Forwarder {
    /// Starts the forwarding task; it ends when the forwarder is dropped.
    /// `timeout` bounds each request to the leader.
    pub fn start(pool: Arc<PeerPool>, timeout: Duration) -> Self {
        let (queue, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(pool, timeout, rx));
        Forwarder { queue }
    }

    /// Queues `command` for the leader `leader` at `addr`.
    pub fn forward(
        &self,
        leader: NodeId,
        addr: String,
        command: Command,
    ) -> oneshot::Receiver<Answer> {
        let (reply, rx) = oneshot::channel();
        let _ = self.queue.send(Item {
            leader,
            addr,
            command,
            reply,
        });
        rx
    }
}

/// The leader known not to take batches (an older build).
type NoBatches = Arc<Mutex<Option<NodeId>>>;

impl Queued for Item {
    fn bytes(&self) -> usize {
        command_bytes(&self.command)
    }
    fn joins(&self, first: &Self) -> bool {
        self.leader == first.leader
    }
}

async fn run(pool: Arc<PeerPool>, timeout: Duration, rx: mpsc::UnboundedReceiver<Item>) {
    let no_batches: NoBatches = Arc::new(Mutex::new(None));
    let mut queue = BatchQueue::new(rx, BOUNDS);
    while let Some((batch, slot)) = queue.next().await {
        let pool = pool.clone();
        let no_batches = no_batches.clone();
        tokio::spawn(async move {
            send(&pool, timeout, batch, &no_batches).await;
            drop(slot);
        });
    }
}

async fn send(pool: &PeerPool, timeout: Duration, batch: Vec<Item>, no_batches: &NoBatches) {
    let leader = batch[0].leader;
    let addr = batch[0].addr.clone();
    let refuses_batches = *lock(no_batches) == Some(leader);
    if batch.len() == 1 || refuses_batches {
        futures::future::join_all(batch.into_iter().map(|item| send_one(pool, timeout, item)))
            .await;
        return;
    }
    let (commands, replies): (Vec<_>, Vec<_>) =
        batch.into_iter().map(|i| (i.command, i.reply)).unzip();
    let request = PeerRequest::ForwardBatch(commands);
    match pool.call(&addr, leader, &request, timeout).await {
        Ok(PeerResponse::ForwardBatch(answers)) if answers.len() == replies.len() => {
            for (reply, answer) in replies.into_iter().zip(answers) {
                let _ = reply.send(Ok(answer));
            }
        }
        Ok(other) => {
            let message = format!("unexpected answer to a forwarded batch: {other:?}");
            for reply in replies {
                let _ = reply.send(Err(CallError::Remote(message.clone())));
            }
        }
        Err(CallError::Remote(message)) if message.starts_with(UNDECODABLE) => {
            // Nothing was proposed: send them one by one, and from now on
            // to this leader.
            tracing::info!(
                leader,
                "the leader does not take batched writes; forwarding one by one"
            );
            *lock(no_batches) = Some(leader);
            let PeerRequest::ForwardBatch(commands) = request else {
                return;
            };
            let items = commands
                .into_iter()
                .zip(replies)
                .map(|(command, reply)| Item {
                    leader,
                    addr: addr.clone(),
                    command,
                    reply,
                });
            futures::future::join_all(items.map(|item| send_one(pool, timeout, item))).await;
        }
        Err(e) => {
            for reply in replies {
                let _ = reply.send(Err(e.clone()));
            }
        }
    }
}

async fn send_one(pool: &PeerPool, timeout: Duration, item: Item) {
    let request = PeerRequest::Forward(item.command);
    let answer = match pool.call(&item.addr, item.leader, &request, timeout).await {
        Ok(PeerResponse::Forward(result)) => Ok(result),
        Ok(other) => Err(CallError::Remote(format!(
            "unexpected answer to a forwarded write: {other:?}"
        ))),
        Err(e) => Err(e),
    };
    let _ = item.reply.send(answer);
}

/// How an older leader answers a request it cannot decode (see `peer.rs`).
pub const UNDECODABLE: &str = "undecodable request";

fn lock(m: &Mutex<Option<NodeId>>) -> std::sync::MutexGuard<'_, Option<NodeId>> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
#[path = "forwarder_test.rs"]
mod tests;
