//! [`ReplicaSnapshot`]: the immutable key map a replica serves reads from.
//! A new one is built per applied batch and swapped in whole, so readers never
//! wait for a writer and always see one revision's complete state.
//!
//! Both of its maps are persistent (`imbl`): a clone shares every node with
//! the original, and a change copies only the nodes on one key's path. So
//! the next snapshot costs O(1) to start from the current one and O(log n)
//! per changed key, whatever the number of keys, while the snapshot readers
//! hold stays untouched.

use std::ops::Bound;
use std::sync::Arc;

use crate::types::KeyValue;

/// The point-read index: a hash trie with foldhash (randomly seeded per
/// map; imbl's default, std's SipHash, made point reads half as fast).
type Index = imbl::GenericHashMap<
    Arc<str>,
    Arc<KeyValue>,
    foldhash::fast::RandomState,
    imbl::shared_ptr::DefaultSharedPtr,
>;
use crate::watch::{Event, EventKind};

/// The replica's keys at one revision. Obtained with
/// [`Replica::snapshot`](crate::Replica::snapshot); reading it takes no lock
/// and makes no network call. May be stale: see
/// [`Replica::status`](crate::Replica::status).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplicaSnapshot {
    pub(crate) revision: u64,
    /// Ordered, for range reads and the cache file.
    pub(crate) kvs: imbl::OrdMap<Arc<str>, Arc<KeyValue>>,
    /// The same entries hashed, for point reads: the data plane's hot path
    /// (a B-tree lookup costs a dozen string comparisons on 10,000 keys; a
    /// hash trie, one hash and a few array lookups).
    index: Index,
}

impl ReplicaSnapshot {
    /// The cluster revision this state reflects.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// One key (no allocation: the value is shared).
    pub fn get(&self, key: &str) -> Option<&Arc<KeyValue>> {
        self.index.get(key)
    }

    /// Every key starting with `prefix`, in key order.
    pub fn range<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = &'a Arc<KeyValue>> + 'a {
        self.kvs
            .range::<_, str>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(move |(k, _)| k.starts_with(prefix))
            .map(|(_, v)| v)
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.kvs.len()
    }

    /// True when the replica holds no key.
    pub fn is_empty(&self) -> bool {
        self.kvs.is_empty()
    }

    /// A detached snapshot of `kvs` at `revision`. A [`Replica`](crate::Replica)
    /// builds its own; this is for benchmarks and tests of the structure.
    #[doc(hidden)]
    pub fn from_kvs(revision: u64, kvs: impl IntoIterator<Item = KeyValue>) -> Self {
        let kvs: imbl::OrdMap<Arc<str>, Arc<KeyValue>> = kvs
            .into_iter()
            .map(|kv| (Arc::from(kv.key.as_str()), Arc::new(kv)))
            .collect();
        let index = kvs.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        Self {
            revision,
            kvs,
            index,
        }
    }

    /// The cluster confirmed nothing under the prefix changed up to
    /// `revision` (a progress bookmark): the state is valid at it.
    pub(crate) fn advance(&mut self, revision: u64) -> bool {
        if revision <= self.revision {
            return false;
        }
        self.revision = revision;
        true
    }

    /// Applies one revision's events (`revision` must be newer than ours;
    /// older ones are ignored, which keeps the revision monotonic). Costs
    /// O(log n) per event; snapshots cloned before are not changed. Public
    /// for benchmarks: a [`Replica`](crate::Replica)'s own snapshots are
    /// only ever changed by the replica.
    #[doc(hidden)]
    pub fn apply(&mut self, revision: u64, events: &[Event], prefix: &str) -> bool {
        if revision <= self.revision {
            return false;
        }
        for e in events {
            if !e.kv.key.starts_with(prefix) {
                continue;
            }
            match e.kind {
                EventKind::Put => {
                    let key: Arc<str> = Arc::from(e.kv.key.as_str());
                    let kv = Arc::new(e.kv.clone());
                    self.kvs.insert(key.clone(), kv.clone());
                    self.index.insert(key, kv);
                }
                EventKind::Delete => {
                    self.kvs.remove(e.kv.key.as_str());
                    self.index.remove(e.kv.key.as_str());
                }
            }
        }
        self.revision = revision;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(key: &str, value: &str, rev: u64) -> KeyValue {
        KeyValue {
            key: key.to_owned(),
            value: value.as_bytes().to_vec(),
            create_revision: rev,
            mod_revision: rev,
            version: 1,
        }
    }

    #[test]
    fn applies_in_order_only() {
        let mut s = ReplicaSnapshot::from_kvs(3, [kv("/a/x", "1", 2), kv("/a/y", "2", 3)]);
        let put = Event {
            kind: EventKind::Put,
            kv: kv("/a/z", "3", 4),
            prev_kv: None,
        };
        let del = Event {
            kind: EventKind::Delete,
            kv: kv("/a/x", "", 5),
            prev_kv: None,
        };
        assert!(s.apply(4, std::slice::from_ref(&put), "/a/"));
        assert!(!s.apply(4, std::slice::from_ref(&del), "/a/"));
        assert!(s.apply(5, std::slice::from_ref(&del), "/a/"));
        assert_eq!(s.revision(), 5);
        assert!(s.get("/a/x").is_none());
        let keys: Vec<&str> = s.range("/a/").map(|kv| kv.key.as_str()).collect();
        assert_eq!(keys, ["/a/y", "/a/z"]);
        assert_eq!(s.range("/a/z").count(), 1);
        assert_eq!(s.range("/b").count(), 0);
    }

    #[test]
    fn a_change_leaves_earlier_clones_as_they_were() {
        let keys: Vec<KeyValue> = (0..1000)
            .map(|i| kv(&format!("/a/{i:04}"), "v", 2))
            .collect();
        let before = ReplicaSnapshot::from_kvs(2, keys);
        let mut after = before.clone();
        let events = [
            Event {
                kind: EventKind::Put,
                kv: kv("/a/0500", "changed", 3),
                prev_kv: None,
            },
            Event {
                kind: EventKind::Delete,
                kv: kv("/a/0007", "", 3),
                prev_kv: None,
            },
            Event {
                kind: EventKind::Put,
                kv: kv("/a/new", "n", 3),
                prev_kv: None,
            },
        ];
        assert!(after.apply(3, &events, "/a/"));
        // The earlier state, for readers that still hold it.
        assert_eq!(before.revision(), 2);
        assert_eq!(before.len(), 1000);
        assert_eq!(
            before.get("/a/0500").map(|kv| kv.value.as_slice()),
            Some(&b"v"[..])
        );
        assert!(before.get("/a/0007").is_some());
        assert!(before.get("/a/new").is_none());
        // The new one.
        assert_eq!(after.revision(), 3);
        assert_eq!(after.len(), 1000);
        assert_eq!(
            after.get("/a/0500").map(|kv| kv.value.as_slice()),
            Some(&b"changed"[..])
        );
        assert!(after.get("/a/0007").is_none());
        assert!(after.get("/a/new").is_some());
        let keys: Vec<&str> = after.range("/a/").map(|kv| kv.key.as_str()).collect();
        assert_eq!(keys.len(), 1000);
        assert!(keys.windows(2).all(|w| w[0] < w[1]));
        // Point reads and range reads agree.
        for kv in after.range("") {
            assert_eq!(after.get(&kv.key), Some(kv));
        }
    }
}
