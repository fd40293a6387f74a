//! openraft type configuration for ballast.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::kv::types::{Command, CommandResponse};

/// A node's id in the cluster.
pub type NodeId = u64;

/// What the cluster knows about a member: where peers and clients reach it.
/// Stored in every membership log entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Address of the client (HTTP API) listener, for leader hints.
    pub client_addr: String,
    /// Address of the peer (Raft RPC) listener.
    pub peer_addr: String,
}

impl fmt::Display for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "client={} peer={}", self.client_addr, self.peer_addr)
    }
}

openraft::declare_raft_types!(
    /// The openraft types of a ballast cluster.
    pub TypeConfig:
        D = Command,
        R = CommandResponse,
        NodeId = NodeId,
        Node = Member,
);

/// A ballast Raft node handle.
pub type Raft = openraft::Raft<TypeConfig, crate::storage::StateMachine>;
/// A Raft log entry.
pub type Entry = openraft::alias::EntryOf<TypeConfig>;
/// A Raft log id.
pub type LogId = openraft::alias::LogIdOf<TypeConfig>;
/// A vote.
pub type Vote = openraft::alias::VoteOf<TypeConfig>;
/// A snapshot's metadata.
pub type SnapshotMeta = openraft::alias::SnapshotMetaOf<TypeConfig>;
/// Membership as stored by the state machine.
pub type StoredMembership = openraft::alias::StoredMembershipOf<TypeConfig>;
