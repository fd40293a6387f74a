//! The key space: command types, input limits, the MVCC store on RocksDB,
//! the client session table (exactly-once writes), what has been applied
//! ([`Applied`]), and the JSON form of a key-value.

pub mod alarms;
pub mod applied;
pub mod auth;
pub mod compactor;
pub mod error;
pub mod gate;
pub mod index;
pub mod json;
pub mod limits;
pub mod mvcc;
pub mod range;
pub mod sessions;
pub mod size;
pub mod types;

pub use applied::Applied;
pub use error::KvError;
pub use limits::Limits;
pub use mvcc::{KvReader, ReadError};
pub use range::{RangeScan, Visit};
pub use types::{
    AuthCommand, AuthOutcome, AuthRefusal, Command, CommandResponse, Compare, CompareOp,
    CompareTarget, KeyValue, Role, RoleKind, SessionCommand, SessionLimits, SessionOp,
    SessionRefusal, SessionStamp, TxnOp, TxnOpResponse, TxnRequest,
};

#[cfg(test)]
mod mvcc_test;
#[cfg(test)]
mod range_test;
