//! Sequential specifications the checkers search against.
//!
//! A [`Model`] is a pure state machine: `step` says whether an operation with
//! its observed output is legal in a state, and what state follows. The
//! linearizability search (checker/linearizable.rs) is generic over it, so a
//! later `replica` or membership model plugs into the same search.

pub mod register;

use std::hash::Hash;

/// A sequential specification.
pub trait Model {
    /// Model state; hashed for the search's memo of visited configurations.
    type State: Clone + Eq + Hash + std::fmt::Debug;
    /// An operation with its input and observed output.
    type Op: std::fmt::Debug;

    /// The state before any operation.
    fn init(&self) -> Self::State;

    /// The state after `op` in `state`, or `None` when `op`'s observed output
    /// is impossible in `state`.
    fn step(&self, state: &Self::State, op: &Self::Op) -> Option<Self::State>;
}
