//! Watches: ordered, gap-free change streams served by every node from its own
//! applied state.
//!
//! - [`hub`]: the node's window of recent revisions, encoded once, and the
//!   stream limit.
//! - [`stream`]: one watcher's pull-driven stream, catching up from storage
//!   when it falls behind.
//! - [`event`]: the SSE frame format.

pub mod event;
pub mod hub;
pub mod stream;

pub use hub::{run_feeder, WatchHub, WatchOptions};
