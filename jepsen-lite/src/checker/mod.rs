//! Checkers: each turns a history into a [`Verdict`], with one named error
//! per guarantee.

pub mod linearizable;
pub mod membership;
pub mod register;
pub mod replica;
mod stream;
#[cfg(test)]
mod test_util;
pub mod watch;

use serde::Serialize;

/// What a checker concluded.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "verdict", rename_all = "lowercase")]
pub enum Verdict<E> {
    /// Every guarantee held.
    Pass,
    /// At least one guarantee was violated.
    Fail {
        /// The violations found.
        errors: Vec<E>,
    },
    /// The checker could not decide (time limit): never counted as a pass.
    Unknown {
        /// Why.
        reason: String,
    },
}

impl<E> Verdict<E> {
    /// Whether this is a pass.
    pub fn is_pass(&self) -> bool {
        matches!(self, Verdict::Pass)
    }

    /// Short label: `pass`, `FAIL`, `UNKNOWN`.
    pub fn label(&self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail { .. } => "FAIL",
            Verdict::Unknown { .. } => "UNKNOWN",
        }
    }
}
