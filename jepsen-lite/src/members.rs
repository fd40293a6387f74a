//! Which nodes are members of the cluster right now, as jepsen-lite made it:
//! the endpoints clients and watchers send their requests to.
//!
//! The membership nemeses change it when the server has confirmed a change
//! (a node leaves the set once its removal committed, and joins it once the
//! leader lists it as a learner). Between a removal and that update a client
//! may still reach the removed node, which answers `410 removed`: the client
//! reports it with [`MemberSet::gone`] and is sent elsewhere until the
//! membership changes again.

use std::collections::BTreeSet;
use std::sync::{Arc, RwLock};

use crate::client::NodeClient;

/// A client of every node, and which of them are members: what a workload
/// client sends its requests through.
#[derive(Clone)]
pub struct Endpoints {
    clients: Vec<NodeClient>,
    members: Arc<MemberSet>,
}

impl Endpoints {
    /// `clients` of every node (spares included), following `members`.
    pub fn new(clients: Vec<NodeClient>, members: Arc<MemberSet>) -> Self {
        Self { clients, members }
    }

    /// The client of the node for client `index` (see [`MemberSet::pick`]),
    /// with the epoch to report a `410` against.
    pub fn pick(&self, index: usize) -> Option<(&NodeClient, u64)> {
        let (id, epoch) = self.members.pick(index)?;
        let c = self.clients.iter().find(|c| c.node == id)?;
        Some((c, epoch))
    }

    /// The base URLs of the current members, starting with the node
    /// [`pick`](Self::pick) gives client `index`.
    pub fn urls_from(&self, index: usize) -> Vec<String> {
        let members = self.members.all();
        let mut urls: Vec<String> = members
            .iter()
            .filter_map(|id| self.clients.iter().find(|c| c.node == *id))
            .map(|c| c.base().to_string())
            .collect();
        if let Some((first, _)) = self.members.pick(index) {
            if let Some(at) = members.iter().position(|id| *id == first) {
                urls.rotate_left(at);
            }
        }
        urls
    }

    /// Node `id` answered `410 removed` (see [`MemberSet::gone`]).
    pub fn gone(&self, id: u64, epoch: u64) {
        self.members.gone(id, epoch);
    }

    /// How values are padded (the same for every node).
    pub fn padding(&self) -> crate::client::Padding {
        self.clients
            .first()
            .map(|c| *c.padding())
            .unwrap_or_default()
    }
}

/// The current members, shared by the clients and the nemeses.
#[derive(Debug, Default)]
pub struct MemberSet {
    state: RwLock<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Bumped on every change, so a `410` seen before a node was added back
    /// does not hide the new member.
    epoch: u64,
    members: BTreeSet<u64>,
    /// Members a client saw answer `410 removed` in this epoch.
    gone: BTreeSet<u64>,
}

impl MemberSet {
    /// A set of `ids`.
    pub fn new(ids: impl IntoIterator<Item = u64>) -> Self {
        Self {
            state: RwLock::new(State {
                epoch: 0,
                members: ids.into_iter().collect(),
                gone: BTreeSet::new(),
            }),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Every member, in id order.
    pub fn all(&self) -> Vec<u64> {
        self.read().members.iter().copied().collect()
    }

    /// Whether `id` is a member.
    pub fn contains(&self, id: u64) -> bool {
        self.read().members.contains(&id)
    }

    /// Adds `id` (a new epoch).
    pub fn add(&self, id: u64) {
        let mut s = self.write();
        if s.members.insert(id) {
            s.epoch += 1;
            s.gone.clear();
        }
    }

    /// Removes `id` (a new epoch).
    pub fn remove(&self, id: u64) {
        let mut s = self.write();
        if s.members.remove(&id) {
            s.epoch += 1;
            s.gone.clear();
        }
    }

    /// The node for client `index`: the `index`-th (modulo) of the members
    /// that no client has seen answer `410` in this epoch (all members when
    /// every one has), with the epoch to report a `410` against. `None`
    /// when the set is empty.
    pub fn pick(&self, index: usize) -> Option<(u64, u64)> {
        let s = self.read();
        let usable: Vec<u64> = s.members.difference(&s.gone).copied().collect();
        let from = if usable.is_empty() {
            s.members.iter().copied().collect()
        } else {
            usable
        };
        if from.is_empty() {
            return None;
        }
        Some((from[index % from.len()], s.epoch))
    }

    /// A client saw `id`, picked in `epoch`, answer `410 removed`: skip it
    /// until the membership changes. Ignored when it has changed since.
    pub fn gone(&self, id: u64, epoch: u64) {
        let mut s = self.write();
        if s.epoch == epoch && s.members.contains(&id) {
            s.gone.insert(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_spread_over_the_members_in_id_order() {
        let m = MemberSet::new([3, 1, 2]);
        let picked: Vec<u64> = (0..6)
            .map(|i| m.pick(i).map(|p| p.0).unwrap_or(0))
            .collect();
        assert_eq!(picked, vec![1, 2, 3, 1, 2, 3]);
        assert_eq!(MemberSet::new([]).pick(0), None);
    }

    #[test]
    fn follows_removals_and_additions() {
        let m = MemberSet::new([1, 2, 3]);
        m.remove(2);
        assert_eq!(m.all(), vec![1, 3]);
        assert!(!m.contains(2));
        let picked: Vec<u64> = (0..4)
            .map(|i| m.pick(i).map(|p| p.0).unwrap_or(0))
            .collect();
        assert_eq!(picked, vec![1, 3, 1, 3]);
        m.add(4);
        m.add(2);
        assert_eq!(m.all(), vec![1, 2, 3, 4]);
        assert_eq!(m.pick(5).map(|p| p.0), Some(2));
    }

    #[test]
    fn a_node_that_answered_gone_is_skipped_until_the_membership_changes() {
        let m = MemberSet::new([1, 2, 3]);
        let (node, epoch) = m.pick(1).expect("a member");
        assert_eq!(node, 2);
        m.gone(2, epoch);
        // Client 1 now lands on the third usable member, modulo two.
        assert_eq!(m.pick(1).map(|p| p.0), Some(3));
        assert_eq!(m.pick(0).map(|p| p.0), Some(1));
        // The removal is confirmed: a new epoch, the node is out.
        m.remove(2);
        assert_eq!(m.all(), vec![1, 3]);
        // It comes back as a new member; an old report does not hide it.
        m.add(2);
        m.gone(2, epoch);
        assert_eq!(m.pick(1).map(|p| p.0), Some(2));
    }

    #[test]
    fn when_every_member_answered_gone_they_are_all_tried_again() {
        let m = MemberSet::new([1, 2]);
        let epoch = m.pick(0).expect("a member").1;
        m.gone(1, epoch);
        m.gone(2, epoch);
        assert_eq!(m.pick(0).map(|p| p.0), Some(1));
        assert_eq!(m.pick(1).map(|p| p.0), Some(2));
        // Not a member: ignored.
        let m = MemberSet::new([1]);
        m.gone(7, 0);
        assert_eq!(m.pick(0).map(|p| p.0), Some(1));
    }
}
