//! Group proposal on the leader: the writes that wait while earlier ones are
//! being appended go to the Raft core together, as one message.
//!
//! openraft turns every message it takes from its API channel into its own
//! log append (one RocksDB write) and its own round of replication; one
//! `client_write` per request therefore costs a storage write per request.
//! The proposer keeps at most eight batches of small writes between the core
//! and the state machine (see [`BOUNDS`] and `batch.rs`). While they are on their way the next writes
//! queue here, and then go in one `client_write_many`: one append, one
//! AppendEntries per follower, however many writes it carries. Under light
//! load a batch holds one write and nothing waits (the same path as before);
//! under heavy load batches grow until the log keeps up, which is group
//! commit one level above the log's fsync.

use futures::StreamExt;
use openraft::errors::{ClientWriteError, Fatal};
use openraft::raft::WriteResponse;
use tokio::sync::{mpsc, oneshot};

use super::batch::{BatchQueue, Bounds, Queued};
use super::types::{Raft, TypeConfig};
use crate::kv::limits::command_bytes;
use crate::kv::Command;

/// The batches: at most eight of small writes proposed and not yet applied
/// (some being synced and replicated while the next are appended; the rest
/// of the queue forms the batch after them), at most 512 writes and 1 MiB
/// each. With two, a few dozen writers left the log idle between batches;
/// eight did 3–12 % more puts at 16 writers, with a lower p99 (see
/// docs/benchmarks.md, "Batches in flight").
/// A batch becomes one log append and, on the wire, one AppendEntries
/// message, whose target size the byte cap matches.
pub const BOUNDS: Bounds = Bounds {
    in_flight: 8,
    entries: 512,
    bytes: super::wire::APPEND_BATCH_BYTES,
};

/// What a proposal ends with: the applied result, or why Raft refused or
/// lost it.
pub type Outcome = Result<WriteResponse<TypeConfig>, ProposeError>;

/// Why a proposal has no result.
#[derive(Debug)]
pub enum ProposeError {
    /// Raft refused or discarded the entry.
    Write(ClientWriteError<TypeConfig>),
    /// Raft stopped.
    Fatal(Fatal<TypeConfig>),
}

/// One write waiting to be proposed. `guard` is dropped with the answer, so
/// whatever it accounts for (the bytes in flight) lasts until Raft is done
/// with the write, also when its caller gave up waiting.
struct Proposal<G> {
    command: Command,
    reply: oneshot::Sender<Outcome>,
    guard: G,
}

/// The handle writes are proposed through.
pub struct Proposer<G> {
    queue: mpsc::UnboundedSender<Proposal<G>>,
}

impl<G: Send + 'static> Proposer<G> {
    /// Starts the batching task for `raft`; it ends when the proposer is
    /// dropped. The queue is unbounded because what enters it is bounded
    /// before: the node admits a write only within its in-flight byte limit.
    pub fn start(raft: Raft) -> Self {
        let (queue, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(raft, rx));
        Proposer { queue }
    }

    /// Queues `command`; the receiver gets its outcome. `guard` is held until
    /// then.
    pub fn propose(&self, command: Command, guard: G) -> oneshot::Receiver<Outcome> {
        let (reply, rx) = oneshot::channel();
        // If the task is gone the proposal is dropped with its reply, and the
        // receiver sees the channel closed.
        let _ = self.queue.send(Proposal {
            command,
            reply,
            guard,
        });
        rx
    }
}

impl<G> Queued for Proposal<G> {
    fn bytes(&self) -> usize {
        command_bytes(&self.command)
    }
    fn joins(&self, _first: &Self) -> bool {
        true
    }
}

async fn run<G: Send + 'static>(raft: Raft, rx: mpsc::UnboundedReceiver<Proposal<G>>) {
    let mut queue = BatchQueue::new(rx, BOUNDS);
    while let Some((batch, slot)) = queue.next().await {
        let (commands, waiting): (Vec<_>, Vec<_>) = batch
            .into_iter()
            .map(|p| (p.command, (p.reply, p.guard)))
            .unzip();
        match raft.client_write_many(commands).await {
            Ok(mut results) => {
                tokio::spawn(async move {
                    let mut waiting = waiting.into_iter();
                    while let Some(result) = results.next().await {
                        let Some((reply, guard)) = waiting.next() else {
                            break;
                        };
                        let _ = reply.send(
                            result
                                .map_err(ProposeError::Fatal)
                                .and_then(|written| written.map_err(ProposeError::Write)),
                        );
                        drop(guard);
                    }
                    // Raft stopped before answering the rest: their replies
                    // drop, and the callers see the channel closed.
                    drop(slot);
                });
            }
            Err(fatal) => {
                for (reply, _guard) in waiting {
                    let _ = reply.send(Err(ProposeError::Fatal(fatal.clone())));
                }
            }
        }
    }
}
