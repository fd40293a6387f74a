//! Node identity: which cluster a node belongs to, and the rule that keeps a
//! node that lost its data from forming (or re-forming) a cluster.
//!
//! - The cluster id is derived at bootstrap from `--cluster-token` and the
//!   `--initial-cluster` member list, so every founding member computes the
//!   same id without talking to the others, and two clusters with different
//!   members or tokens get different ids. Each node stores it with its own id
//!   on first start; from then on the stored id is authoritative.
//! - Every peer request carries the sender's cluster id and the target's node
//!   id (`wire::Envelope`); a node refuses any other.
//! - Every node remembers which peers it has seen holding Raft log entries (as
//!   leader: followers that acknowledged entries; as follower: its leader).
//!   A node starting on an empty data directory first asks its peers
//!   (`Hello`). If one of them has seen it hold data, its data was lost: it
//!   refuses to start, because running `initialize` again with a forgotten
//!   vote and log is how committed writes get lost. The operator adds it back
//!   as a new member instead.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rocksdb::DB;
use tokio::sync::watch;

use super::join::{ClusterInfo, JoinError};
use super::network::{dial_addr, DialMap};
use super::node::Node;
use super::types::{Member, NodeId};
use super::wire::{self, FrameCaps, PeerIdentity, PeerRequest, PeerResponse};
use crate::stop::stopped;
use crate::storage::identity::{self as stored, Identity};

/// How often Raft's view is checked for peers that hold data.
const RECORD_INTERVAL: Duration = Duration::from_secs(1);
/// A node that knows a leader asks its peers whether it is still a member
/// every this many intervals (one that knows none, every interval).
const ASK_EVERY_TICKS: u64 = 3;

/// Why a node may not start with this data directory and configuration.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The data directory belongs to another node.
    #[error("the data directory belongs to node {stored}, not node {configured}")]
    WrongNode {
        /// The node id stored in the data directory.
        stored: NodeId,
        /// The configured node id.
        configured: NodeId,
    },
    /// An empty data directory and nothing to form or join.
    #[error(
        "the data directory is empty and neither --initial-cluster (form a new cluster) nor \
         --join (join a running one) is given"
    )]
    NothingToStart,
    /// A peer belongs to another cluster.
    #[error(
        "peer {peer} at {addr} belongs to cluster {theirs:032x}, but this node's \
         --initial-cluster and --cluster-token make cluster {ours:032x}; check the member list"
    )]
    OtherCluster {
        /// The peer's id.
        peer: NodeId,
        /// Where it was reached.
        addr: String,
        /// Its cluster id.
        theirs: u128,
        /// The id this node would form.
        ours: u128,
    },
    /// This node held data once; its data directory has been wiped.
    #[error(
        "node {node} has been a member of cluster {cluster:032x} and held data (peer {peer} saw \
         it), but its data directory is empty: it was wiped or lost. It must not form the \
         cluster again with --initial-cluster, which would forget its vote and acknowledged \
         entries. Remove it from the cluster and add it back as a new member with an empty data \
         directory"
    )]
    DataLost {
        /// This node's id.
        node: NodeId,
        /// The cluster.
        cluster: u128,
        /// The peer that saw its data.
        peer: NodeId,
    },
    /// `--join` names a cluster other than the one this data directory
    /// belongs to.
    #[error(
        "this data directory belongs to cluster {ours:032x}, but the --join endpoint {endpoint} \
         belongs to cluster {theirs:032x}; a node joins only its own cluster (wipe the data \
         directory to join another as a new member)"
    )]
    JoinOtherCluster {
        /// The endpoint that answered.
        endpoint: String,
        /// Its cluster id.
        theirs: u128,
        /// This node's cluster id.
        ours: u128,
    },
    /// An empty data directory, and the cluster lists this node as a voter.
    #[error(
        "node {node} is a voter of cluster {cluster:032x}, but its data directory is empty: it was \
         wiped or lost. Remove it first (ballastctl members remove {node}), then join again"
    )]
    WipedVoter {
        /// This node's id.
        node: NodeId,
        /// The cluster.
        cluster: u128,
    },
    /// The cluster lists this node's id with other addresses.
    #[error(
        "node id {node} is already a member of cluster {cluster:032x} with other addresses \
         ({theirs}); pick an unused id or remove that member first"
    )]
    IdTaken {
        /// This node's id.
        node: NodeId,
        /// The cluster.
        cluster: u128,
        /// The member's addresses.
        theirs: Member,
    },
    /// The cluster could not be asked.
    #[error(transparent)]
    Join(#[from] super::join::JoinError),
    /// State without identity, and `--join`.
    #[error(
        "the data directory holds Raft state but no cluster identity; start it with the \
         --initial-cluster it was formed with"
    )]
    JoinWithState,
    /// Storage failed.
    #[error("storage: {0}")]
    Storage(#[from] std::io::Error),
}

/// The cluster id founded by `members` with `token`.
pub fn cluster_id_for(token: &str, members: &BTreeMap<NodeId, Member>) -> u128 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(b"ballast-cluster-v1\0");
    h.update(token.as_bytes());
    h.update(b"\0");
    for (id, member) in members {
        h.update(&id.to_be_bytes());
        h.update(member.peer_addr.as_bytes());
        h.update(b"\0");
    }
    h.digest128()
}

/// What a node needs to decide who it is.
pub struct Bootstrap<'a> {
    /// The configured node id.
    pub node_id: NodeId,
    /// `--initial-cluster`, when given.
    pub members: Option<&'a BTreeMap<NodeId, Member>>,
    /// `--cluster-token`.
    pub token: &'a str,
    /// Dial overrides.
    pub dial: &'a DialMap,
    /// Bound of each probe of a peer.
    pub probe_timeout: Duration,
    /// Frame caps for the probes.
    pub caps: FrameCaps,
    /// TLS for the probes.
    pub tls: &'a crate::tls::PeerTls,
    /// With `--join`: what the cluster's endpoints said (or why they did not).
    pub join: Option<&'a Result<ClusterInfo, JoinError>>,
    /// How this node appears in the membership.
    pub advertised: &'a Member,
}

/// Loads this node's identity, or establishes it on a first start: see the
/// module docs for the rules.
pub async fn resolve(db: &DB, b: Bootstrap<'_>) -> Result<Identity, IdentityError> {
    if let Some(identity) = stored::load(db)? {
        if identity.node_id != b.node_id {
            return Err(IdentityError::WrongNode {
                stored: identity.node_id,
                configured: b.node_id,
            });
        }
        match b.join {
            Some(Ok(info)) if info.cluster_id != identity.cluster_id => {
                return Err(IdentityError::JoinOtherCluster {
                    endpoint: info.endpoint.clone(),
                    theirs: info.cluster_id,
                    ours: identity.cluster_id,
                })
            }
            Some(Err(e)) => {
                tracing::warn!(error = %e, "could not check the --join endpoints; starting with the stored identity");
            }
            _ => {}
        }
        return Ok(identity);
    }
    if let Some(join) = b.join {
        return joined_identity(db, &b, join);
    }
    let Some(members) = b.members else {
        return Err(IdentityError::NothingToStart);
    };
    let identity = Identity {
        cluster_id: cluster_id_for(b.token, members),
        node_id: b.node_id,
    };
    if stored::has_raft_state(db)? {
        // Written by a build that kept no identity: this node is a founding
        // member whose data is intact.
        tracing::info!(
            cluster_id = format!("{:032x}", identity.cluster_id),
            "storing the cluster identity of an existing data directory"
        );
    } else {
        probe_peers(&b, members, identity).await?;
    }
    stored::store(db, &identity)?;
    Ok(identity)
}

/// The identity of a node joining the cluster `join` on an empty data
/// directory.
fn joined_identity(
    db: &DB,
    b: &Bootstrap<'_>,
    join: &Result<ClusterInfo, JoinError>,
) -> Result<Identity, IdentityError> {
    if stored::has_raft_state(db)? {
        return Err(IdentityError::JoinWithState);
    }
    let info = match join {
        Ok(info) => info,
        Err(e) => return Err(IdentityError::Join(JoinError::Unreachable(e.to_string()))),
    };
    if let Some((member, voter)) = info.members.get(&b.node_id) {
        if *voter {
            return Err(IdentityError::WipedVoter {
                node: b.node_id,
                cluster: info.cluster_id,
            });
        }
        if member != b.advertised {
            return Err(IdentityError::IdTaken {
                node: b.node_id,
                cluster: info.cluster_id,
                theirs: member.clone(),
            });
        }
    }
    let identity = Identity {
        cluster_id: info.cluster_id,
        node_id: b.node_id,
    };
    tracing::info!(
        cluster_id = format!("{:032x}", identity.cluster_id),
        endpoint = %info.endpoint,
        "joining a running cluster"
    );
    stored::store(db, &identity)?;
    Ok(identity)
}

/// Asks every other founding member who it is, and refuses to go on when one
/// belongs to another cluster or has seen this node hold data. Peers that do
/// not answer in time are skipped: on a first start they may not be up yet.
async fn probe_peers(
    b: &Bootstrap<'_>,
    members: &BTreeMap<NodeId, Member>,
    me: Identity,
) -> Result<(), IdentityError> {
    let peer_identity = PeerIdentity {
        cluster_id: me.cluster_id,
        node_id: me.node_id,
    };
    let probes = members
        .iter()
        .filter(|(id, _)| **id != me.node_id)
        .map(|(id, member)| {
            let addr = dial_addr(b.dial, *id, member);
            async move {
                let answer = async {
                    let mut conn = wire::connect_with(&addr, b.probe_timeout, b.caps, b.tls)
                        .await
                        .ok()?;
                    wire::call(
                        &mut conn,
                        &addr,
                        peer_identity,
                        *id,
                        &PeerRequest::Hello,
                        b.probe_timeout,
                    )
                    .await
                    .ok()
                };
                (*id, addr.clone(), answer.await)
            }
        });
    for (peer, addr, answer) in futures::future::join_all(probes).await {
        match answer {
            Some(PeerResponse::Hello {
                cluster_id,
                saw_your_data,
                ..
            }) => {
                if cluster_id != me.cluster_id {
                    return Err(IdentityError::OtherCluster {
                        peer,
                        addr,
                        theirs: cluster_id,
                        ours: me.cluster_id,
                    });
                }
                if saw_your_data {
                    return Err(IdentityError::DataLost {
                        node: me.node_id,
                        cluster: me.cluster_id,
                        peer,
                    });
                }
            }
            Some(_) | None => {
                tracing::info!(peer, %addr, "peer did not answer the bootstrap check; not up yet?");
            }
        }
    }
    Ok(())
}

/// Keeps `node`'s record of peers holding data current and durable, and
/// notices (and records) this node's removal from the cluster, until `stop`.
pub async fn run_recorder(node: Arc<Node>, db: Arc<DB>, mut stop: watch::Receiver<bool>) {
    match stored::load_peers_with_data(&db) {
        Ok(known) => {
            node.note_data_of(known);
        }
        Err(e) => tracing::warn!(error = %e, "could not read the peers seen holding data"),
    }
    let mut removed = node.subscribe_removed();
    let mut removal_stored = removed.borrow_and_update().is_some();
    let mut tick = tokio::time::interval(RECORD_INTERVAL);
    let mut asks = 0u64;
    loop {
        tokio::select! {
            _ = stopped(&mut stop) => return,
            _ = tick.tick() => {}
            _ = removed.changed() => {}
        }
        if node.removed().is_none() {
            match node.removed_by_membership() {
                Some(index) => node.mark_removed(format!(
                    "node {} is not in the membership committed at log index {index} of cluster \
                     {:032x}: it was removed",
                    node.id(),
                    node.cluster_id()
                )),
                // A member removed while it was down or cut off never applies
                // its removal: ask the others, every tick while it knows no
                // leader, less often otherwise.
                None => {
                    asks += 1;
                    if node.leader().is_none() || asks.is_multiple_of(ASK_EVERY_TICKS) {
                        node.ask_peers_whether_removed().await;
                    }
                }
            }
        }
        if let (false, Some(reason)) = (removal_stored, node.removed()) {
            let db = db.clone();
            let saved =
                tokio::task::spawn_blocking(move || stored::store_removed(&db, &reason)).await;
            if matches!(saved, Ok(Ok(()))) {
                removal_stored = true;
            } else {
                tracing::warn!("could not record this node's removal");
            }
        }
        if let Some(all) = node.note_data_of(node.peers_holding_data_now()) {
            let db = db.clone();
            let saved =
                tokio::task::spawn_blocking(move || stored::store_peers_with_data(&db, &all)).await;
            if !matches!(saved, Ok(Ok(()))) {
                tracing::warn!("could not store the peers seen holding data");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(spec: &[(NodeId, &str)]) -> BTreeMap<NodeId, Member> {
        spec.iter()
            .map(|(id, peer)| {
                (
                    *id,
                    Member {
                        client_addr: String::new(),
                        peer_addr: peer.to_string(),
                    },
                )
            })
            .collect()
    }

    #[test]
    fn cluster_ids_depend_on_members_and_token() {
        let a = members(&[(1, "h1:2380"), (2, "h2:2380")]);
        let b = members(&[(1, "h1:2380"), (2, "h3:2380")]);
        assert_eq!(cluster_id_for("t", &a), cluster_id_for("t", &a.clone()));
        assert_ne!(cluster_id_for("t", &a), cluster_id_for("t", &b));
        assert_ne!(cluster_id_for("t", &a), cluster_id_for("u", &a));
    }
}
