//! What the membership nemeses saw of the members themselves: a node the
//! leader lists as a member must not consider itself removed (it would
//! serve nothing and never catch up: a voter, or a learner about to be
//! promoted, lost for good). The nemesis checks each new member's
//! `/v1/status` after its promotion (or the promotion's failure) and
//! records what it found; this checker turns those records into a verdict.

use crate::history::{Event, EventType, Func};

use super::Verdict;

/// What the member nemeses record when a voter reports itself removed.
pub const SELF_REMOVED: &str =
    "is a voter in the leader's view, but its /v1/status says raft.state Removed";

/// `not_serving_voter`: every promoted voter serves.
pub fn check(events: &[Event]) -> Verdict<String> {
    // The nemesis's own note (`info`); the failed injection or heal that
    // follows repeats the text and is not counted again.
    let errors: Vec<String> = events
        .iter()
        .filter(|e| e.f == Func::Nemesis && e.kind == EventType::Info)
        .filter_map(|e| e.error.as_deref())
        .filter(|what| what.contains(SELF_REMOVED))
        .map(|what| format!("not_serving_member: {what}"))
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
    use crate::history::{Clock, Recorder};

    #[test]
    fn a_member_that_says_it_was_removed_fails_the_run() {
        let rec = Recorder::new(Clock::new());
        rec.nemesis(
            EventType::Info,
            "member: node 4 promoted to voter after 1.8 s".into(),
        );
        assert!(check(&rec.snapshot()).is_pass());
        rec.nemesis(
            EventType::Info,
            format!("member: node 4 {SELF_REMOVED} (see its log)"),
        );
        // The same text again in the failed injection: counted once.
        rec.nemesis(
            EventType::Fail,
            format!("member: heal failed: node 4 {SELF_REMOVED} (see its log)"),
        );
        match check(&rec.snapshot()) {
            Verdict::Fail { errors } => assert_eq!(errors.len(), 1, "{errors:?}"),
            other => panic!("expected a failure, got {other:?}"),
        }
    }
}
