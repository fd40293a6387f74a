//! Consensus: openraft types, the peer network and the node that ties Raft to
//! the key space.

pub mod types;
