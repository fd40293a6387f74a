//! A single-key register with unique values, no deletes, and compare-and-swap.
//!
//! Values are interned to `u32` ids by the checker (0 = key absent), so the
//! state is one integer and the search's memo stays small. Per-key `version`
//! and `mod_revision` are verified by the register checker's metadata passes,
//! not by this model: indeterminate writes that nobody observed are dropped
//! before the search, and they would have bumped the version.

use super::Model;

/// Interned value; [`ABSENT`] when the key does not exist.
pub type ValueId = u32;

/// The key does not exist.
pub const ABSENT: ValueId = 0;

/// A register operation with what it observed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegisterOp {
    /// A read that returned `observed`.
    Read {
        /// Value read (or [`ABSENT`]).
        observed: ValueId,
    },
    /// A put of `value`.
    Write {
        /// Value written.
        value: ValueId,
    },
    /// A compare-and-swap that took effect: the register held `expected`.
    CasOk {
        /// Compared value.
        expected: ValueId,
        /// Value written.
        value: ValueId,
    },
    /// A compare-and-swap whose compare failed; its failure branch read
    /// `observed`.
    CasFail {
        /// Compared value.
        expected: ValueId,
        /// Value read by the failure branch.
        observed: ValueId,
    },
}

/// The register model.
#[derive(Clone, Copy, Debug, Default)]
pub struct Register;

impl Model for Register {
    type State = ValueId;
    type Op = RegisterOp;

    fn init(&self) -> ValueId {
        ABSENT
    }

    fn step(&self, state: &ValueId, op: &RegisterOp) -> Option<ValueId> {
        match *op {
            RegisterOp::Read { observed } => (observed == *state).then_some(*state),
            RegisterOp::Write { value } => Some(value),
            // A compare on the value of a missing key always fails.
            RegisterOp::CasOk { expected, value } => {
                (*state != ABSENT && expected == *state).then_some(value)
            }
            RegisterOp::CasFail { expected, observed } => {
                (observed == *state && (*state == ABSENT || expected != *state)).then_some(*state)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps() {
        let m = Register;
        assert_eq!(
            m.step(&ABSENT, &RegisterOp::Read { observed: ABSENT }),
            Some(ABSENT)
        );
        assert_eq!(m.step(&ABSENT, &RegisterOp::Read { observed: 1 }), None);
        assert_eq!(m.step(&ABSENT, &RegisterOp::Write { value: 1 }), Some(1));
        assert_eq!(
            m.step(
                &1,
                &RegisterOp::CasOk {
                    expected: 1,
                    value: 2
                }
            ),
            Some(2)
        );
        assert_eq!(
            m.step(
                &3,
                &RegisterOp::CasOk {
                    expected: 1,
                    value: 2
                }
            ),
            None
        );
        assert_eq!(
            m.step(
                &ABSENT,
                &RegisterOp::CasOk {
                    expected: ABSENT,
                    value: 2
                }
            ),
            None
        );
        assert_eq!(
            m.step(
                &3,
                &RegisterOp::CasFail {
                    expected: 1,
                    observed: 3
                }
            ),
            Some(3)
        );
        assert_eq!(
            m.step(
                &1,
                &RegisterOp::CasFail {
                    expected: 1,
                    observed: 1
                }
            ),
            None
        );
        assert_eq!(
            m.step(
                &ABSENT,
                &RegisterOp::CasFail {
                    expected: 1,
                    observed: ABSENT
                }
            ),
            Some(ABSENT)
        );
    }
}
