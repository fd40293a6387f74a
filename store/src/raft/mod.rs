//! Consensus: openraft types, the peer network and the node that ties Raft to
//! the key space.

pub mod alarm;
pub mod batch;
pub mod forwarder;
pub mod identity;
pub mod inbox;
pub mod join;
pub mod membership;
pub mod network;
pub mod node;
pub mod observe;
pub mod peer;
pub mod pool;
pub mod proposer;
pub mod retention;
pub mod types;
pub mod wire;
