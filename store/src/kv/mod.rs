//! The key space: command types, input limits, and the MVCC store on RocksDB.

pub mod compactor;
pub mod error;
pub mod gate;
pub mod limits;
pub mod mvcc;
pub mod types;

pub use error::KvError;
pub use limits::Limits;
pub use mvcc::{KvReader, RangeResult, ReadError};
pub use types::{
    Command, CommandResponse, Compare, CompareOp, CompareTarget, KeyValue, TxnOp, TxnOpResponse,
    TxnRequest,
};

#[cfg(test)]
mod mvcc_test;
