//! The queue behind the proposer and the forwarder: requests wait here while
//! earlier batches are on their way, then leave together.
//!
//! A batch of small requests holds one of a few slots until it is answered;
//! while every slot is taken, new requests queue and form the next batch. A
//! batch of large requests (a quarter of the byte cap or more) takes no slot:
//! it has nothing to gain from waiting, and holding a slot for the time a
//! megabyte takes to commit would stall the writes behind it (a burst of
//! large values must keep the log's pipeline full).

use std::sync::Arc;

use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

/// What the queue needs to know of a request.
pub trait Queued {
    /// Bytes the request adds to a batch.
    fn bytes(&self) -> usize;
    /// Whether it may share a batch with `first`, the batch's first request.
    fn joins(&self, first: &Self) -> bool;
}

/// The bounds of a batch.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// Most small batches unanswered at once.
    pub in_flight: usize,
    /// Most requests in a batch.
    pub entries: usize,
    /// Most bytes in a batch; a larger request still goes, alone.
    pub bytes: usize,
}

/// A queue of requests handed out in batches.
pub struct BatchQueue<T> {
    rx: mpsc::UnboundedReceiver<T>,
    carry: Option<T>,
    slots: Arc<Semaphore>,
    bounds: Bounds,
}

/// A batch, with the slot it holds until it is answered (`None` for a batch
/// of large requests).
pub type Batch<T> = (Vec<T>, Option<OwnedSemaphorePermit>);

impl<T: Queued> BatchQueue<T> {
    /// A queue over `rx`.
    pub fn new(rx: mpsc::UnboundedReceiver<T>, bounds: Bounds) -> Self {
        BatchQueue {
            rx,
            carry: None,
            slots: Arc::new(Semaphore::new(bounds.in_flight)),
            bounds,
        }
    }

    /// The next batch; `None` once every sender is gone and the queue is
    /// empty.
    pub async fn next(&mut self) -> Option<Batch<T>> {
        let first = match self.carry.take() {
            Some(item) => item,
            None => self.rx.recv().await?,
        };
        let mut bytes = first.bytes();
        let mut batch = vec![first];
        self.fill(&mut batch, &mut bytes);
        if bytes >= self.bounds.bytes / 4 {
            return Some((batch, None));
        }
        let slot = self.slots.clone().acquire_owned().await.ok()?;
        // More may have queued while every slot was taken.
        self.fill(&mut batch, &mut bytes);
        Some((batch, Some(slot)))
    }

    /// Moves queued requests into `batch` while they fit; the first that
    /// does not waits for the next batch.
    fn fill(&mut self, batch: &mut Vec<T>, bytes: &mut usize) {
        while self.carry.is_none() && batch.len() < self.bounds.entries {
            let Ok(next) = self.rx.try_recv() else { return };
            let size = next.bytes();
            if !next.joins(&batch[0]) || *bytes + size > self.bounds.bytes {
                self.carry = Some(next);
                return;
            }
            *bytes += size;
            batch.push(next);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    struct Req {
        group: u8,
        bytes: usize,
    }

    impl Queued for Req {
        fn bytes(&self) -> usize {
            self.bytes
        }
        fn joins(&self, first: &Self) -> bool {
            self.group == first.group
        }
    }

    const BOUNDS: Bounds = Bounds {
        in_flight: 1,
        entries: 3,
        bytes: 100,
    };

    fn queue(reqs: Vec<Req>) -> BatchQueue<Req> {
        let (tx, rx) = mpsc::unbounded_channel();
        for r in reqs {
            tx.send(r).ok();
        }
        BatchQueue::new(rx, BOUNDS)
    }

    fn sizes(batch: &[Req]) -> Vec<usize> {
        batch.iter().map(|r| r.bytes).collect()
    }

    #[tokio::test]
    async fn batches_are_cut_by_count_bytes_and_group() {
        let req = |group, bytes| Req { group, bytes };
        let mut q = queue(vec![
            req(1, 5),
            req(1, 5),
            req(1, 5),
            req(1, 5), // count: 4th starts the next batch
            req(1, 10),
            req(2, 5), // group: starts the next batch
            req(2, 20),
            req(2, 90), // bytes: 20 + 90 > 100
        ]);
        let (b, slot) = q.next().await.expect("batch");
        assert_eq!(sizes(&b), vec![5, 5, 5]);
        drop(slot);
        let (b, slot) = q.next().await.expect("batch");
        assert_eq!(sizes(&b), vec![5, 10]);
        drop(slot);
        let (b, slot) = q.next().await.expect("batch");
        assert_eq!(sizes(&b), vec![5, 20]);
        drop(slot);
        // 90 is large (a quarter of the cap or more): no slot.
        let (b, slot) = q.next().await.expect("batch");
        assert_eq!(sizes(&b), vec![90]);
        assert!(slot.is_none());
    }

    #[tokio::test]
    async fn small_batches_wait_for_a_slot_and_large_ones_do_not() {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut q = BatchQueue::new(rx, BOUNDS);
        tx.send(Req { group: 1, bytes: 1 }).ok();
        let (_, held) = q.next().await.expect("batch");
        assert!(held.is_some());
        // A large request passes while the only slot is held.
        tx.send(Req {
            group: 1,
            bytes: 50,
        })
        .ok();
        let (b, slot) = q.next().await.expect("batch");
        assert_eq!(sizes(&b), vec![50]);
        assert!(slot.is_none());
        // A small one waits for the slot, and meanwhile others join it.
        tx.send(Req { group: 1, bytes: 1 }).ok();
        let waiting = tokio::spawn(async move { q.next().await.map(|(b, _)| sizes(&b)) });
        tokio::task::yield_now().await;
        tx.send(Req { group: 1, bytes: 2 }).ok();
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(!waiting.is_finished());
        drop(held);
        assert_eq!(waiting.await.expect("join"), Some(vec![1, 2]));
    }

    #[tokio::test]
    async fn the_queue_ends_when_the_senders_are_gone() {
        let mut q = queue(vec![]);
        assert!(q.next().await.is_none());
    }
}
