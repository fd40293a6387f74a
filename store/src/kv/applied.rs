//! [`Applied`]: how far a node's key space has got, as the state machine
//! publishes it. Kept with the key space so every layer that follows it (the
//! compactor here, the node and the watch hub above) can name it.

/// What the state machine has applied, published after every applied batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Applied {
    /// Raft log index of the last applied entry.
    pub log_index: u64,
    /// Key-space revision after it.
    pub revision: u64,
    /// Oldest revision still readable and watchable.
    pub compact_revision: u64,
    /// Digest of the key space at `revision`.
    pub state_hash: u128,
}
