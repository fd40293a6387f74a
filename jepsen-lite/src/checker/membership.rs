//! What the membership nemeses saw of the members themselves: a node the
//! leader counts as a voter must not consider itself removed (it would
//! serve nothing and never catch up: a voter lost for good). The nemesis
//! checks each new voter's `/v1/status` after its promotion and records
//! what it found; this checker turns those records into a verdict.

use crate::history::{Event, Func};

use super::Verdict;

/// What the member nemeses record when a voter reports itself removed.
pub const SELF_REMOVED_VOTER: &str =
    "is a voter in the leader's view, but its /v1/status says raft.state Removed";

/// `not_serving_voter`: every promoted voter serves.
pub fn check(events: &[Event]) -> Verdict<String> {
    let errors: Vec<String> = events
        .iter()
        .filter(|e| e.f == Func::Nemesis)
        .filter_map(|e| e.error.as_deref())
        .filter(|what| what.contains(SELF_REMOVED_VOTER) && !what.contains("heal failed"))
        .map(|what| format!("not_serving_voter: {what}"))
        .collect();
    if errors.is_empty() {
        Verdict::Pass
    } else {
        Verdict::Fail { errors }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{Clock, EventType, Recorder};

    #[test]
    fn a_voter_that_says_it_was_removed_fails_the_run() {
        let rec = Recorder::new(Clock::new());
        rec.nemesis(
            EventType::Info,
            "member: node 4 promoted to voter after 1.8 s".into(),
        );
        assert!(check(&rec.snapshot()).is_pass());
        rec.nemesis(
            EventType::Info,
            format!("member: node 4 {SELF_REMOVED_VOTER} (see its log)"),
        );
        // The same text again in the failed injection: counted once.
        rec.nemesis(
            EventType::Fail,
            format!("member: heal failed: node 4 {SELF_REMOVED_VOTER} (see its log)"),
        );
        match check(&rec.snapshot()) {
            Verdict::Fail { errors } => assert_eq!(errors.len(), 1, "{errors:?}"),
            other => panic!("expected a failure, got {other:?}"),
        }
    }
}
