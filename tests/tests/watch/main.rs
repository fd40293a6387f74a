//! Watch: the six guarantees (ordered, unique, reliable, atomic, resumable,
//! bookmarkable), compaction, limits, slow watchers, and all of it across
//! leader changes, restarts and reconnects to other nodes.

mod common;
mod t10_guarantees;
mod t20_failures;
mod t30_compaction;
mod t40_limits;
