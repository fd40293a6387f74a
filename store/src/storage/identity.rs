//! The node's identity on disk: which cluster and which node this data
//! directory belongs to, and which peers this node has seen holding data.
//!
//! Both live in the Raft metadata column family and are written with a WAL
//! sync, like the vote.

use std::collections::BTreeSet;
use std::io;

use rocksdb::DB;
use serde::{Deserialize, Serialize};

use crate::codec;
use crate::db::{cf, io_err, CF_RAFT_META};
use crate::raft::types::NodeId;

const IDENTITY_KEY: &[u8] = b"identity";
const PEERS_WITH_DATA_KEY: &[u8] = b"peers_with_data";
const REMOVED_KEY: &[u8] = b"removed";

/// Which cluster and node a data directory belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// The cluster's id, fixed when the cluster was formed.
    pub cluster_id: u128,
    /// This node's id.
    pub node_id: NodeId,
}

fn get<T: serde::de::DeserializeOwned>(db: &DB, key: &[u8]) -> io::Result<Option<T>> {
    match db.get_cf(cf(db, CF_RAFT_META)?, key).map_err(io_err)? {
        Some(bytes) => Ok(Some(codec::decode(&bytes)?)),
        None => Ok(None),
    }
}

fn put_synced<T: Serialize>(db: &DB, key: &[u8], value: &T) -> io::Result<()> {
    db.put_cf(cf(db, CF_RAFT_META)?, key, codec::encode(value)?)
        .map_err(io_err)?;
    crate::db::sync_wal(db).map_err(io_err)
}

/// The stored identity, if this data directory has one.
pub fn load(db: &DB) -> io::Result<Option<Identity>> {
    get(db, IDENTITY_KEY)
}

/// Stores the identity (durably).
pub fn store(db: &DB, identity: &Identity) -> io::Result<()> {
    put_synced(db, IDENTITY_KEY, identity)
}

/// The peers this node has seen holding Raft log entries.
pub fn load_peers_with_data(db: &DB) -> io::Result<BTreeSet<NodeId>> {
    Ok(get(db, PEERS_WITH_DATA_KEY)?.unwrap_or_default())
}

/// Stores the peers this node has seen holding Raft log entries (durably).
pub fn store_peers_with_data(db: &DB, peers: &BTreeSet<NodeId>) -> io::Result<()> {
    put_synced(db, PEERS_WITH_DATA_KEY, peers)
}

/// Why this node was removed from its cluster, if it was.
pub fn load_removed(db: &DB) -> io::Result<Option<String>> {
    get(db, REMOVED_KEY)
}

/// Records (durably) that this node was removed from its cluster.
pub fn store_removed(db: &DB, reason: &str) -> io::Result<()> {
    put_synced(db, REMOVED_KEY, &reason.to_string())
}

/// Whether the Raft side of the store holds anything: a vote, log entries or
/// applied state. A data directory without an identity but with any of these
/// was written by a build that kept no identity.
pub fn has_raft_state(db: &DB) -> io::Result<bool> {
    for name in [CF_RAFT_META, crate::db::CF_RAFT_LOG, crate::db::CF_SM_META] {
        let handle = cf(db, name)?;
        if db
            .iterator_cf(handle, rocksdb::IteratorMode::Start)
            .next()
            .transpose()
            .map_err(io_err)?
            .is_some()
        {
            return Ok(true);
        }
    }
    Ok(false)
}
