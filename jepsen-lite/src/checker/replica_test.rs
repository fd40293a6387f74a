use super::*;
use crate::checker::test_util::{error_names as names, put, write};

fn change(rev: u64, key: &str, value: &str) -> Update {
    Update::Change {
        revision: rev,
        events: put(rev, key, value),
    }
}

/// Revisions 3 to 7 under the prefix; 6 is indeterminate (it happened).
fn writes() -> Vec<Write> {
    vec![
        write("p/a", "3", Some(3)),
        write("p/b", "4", Some(4)),
        write("p/a", "5", Some(5)),
        write("p/b", "6", None),
        write("p/a", "7", Some(7)),
    ]
}

fn replica(name: &str, start_revision: u64, updates: Vec<Update>) -> ReplicaHistory {
    ReplicaHistory {
        name: name.into(),
        start_revision,
        updates,
    }
}

fn all_from(start: u64) -> Vec<Update> {
    [
        change(3, "p/a", "3"),
        change(4, "p/b", "4"),
        change(5, "p/a", "5"),
        change(6, "p/b", "6"),
        change(7, "p/a", "7"),
    ]
    .into_iter()
    .filter(|u| matches!(u, Update::Change { revision, .. } if *revision > start))
    .collect()
}

/// Revisions 3, 6 and 7 applied, with `instead` (a reset or a lag) where
/// 4 and 5 would be.
fn without_4_and_5(instead: Update) -> Vec<Update> {
    vec![
        change(3, "p/a", "3"),
        instead,
        change(6, "p/b", "6"),
        change(7, "p/a", "7"),
    ]
}

#[test]
fn good_histories_pass() {
    let v = check(
        &writes(),
        &[
            replica("r1", 2, all_from(2)),
            // Started later: everything up to 4 came with the bootstrap.
            replica("r2", 4, all_from(4)),
            // A re-bootstrap at 5 replaces the state: 4 and 5 are covered.
            replica("r3", 2, without_4_and_5(Update::Reset { revision: 5 })),
            // The recorder fell behind: what it missed is not judged.
            replica("r4", 2, without_4_and_5(Update::Lagged { missed: 2 })),
        ],
        Some(7),
    );
    assert!(v.is_pass(), "{v:?}");
}

/// The planted bug (`--unsafe-replica-skip-first-change`): after a reconnect
/// the first change of the new stream is dropped, the next one applied. The
/// replica's revision goes on, its state lacks revision 5.
#[test]
fn a_change_dropped_after_a_reconnect_is_a_gap() {
    let dropped = vec![
        change(3, "p/a", "3"),
        change(4, "p/b", "4"),
        // reconnect: 5 dropped
        change(6, "p/b", "6"),
        change(7, "p/a", "7"),
    ];
    let v = check(&writes(), &[replica("r1", 2, dropped)], Some(7));
    assert_eq!(names(&v), vec!["gap"]);
    let Verdict::Fail { errors } = &v else {
        panic!("{v:?}")
    };
    assert_eq!(
        errors[0],
        ReplicaError::Gap {
            replica: "r1".into(),
            revision: 5,
            up_to: 4,
            next: 6
        }
    );
    assert_eq!(
        errors[0].to_string(),
        "r1: gap: revision 5 was never applied (applied up to 4, then 6)"
    );
}

/// An indeterminate write that happened counts once another replica applied
/// it: dropping it is a gap too.
#[test]
fn a_dropped_indeterminate_write_that_another_replica_applied_is_a_gap() {
    let dropped = vec![
        change(3, "p/a", "3"),
        change(4, "p/b", "4"),
        change(5, "p/a", "5"),
        change(7, "p/a", "7"),
    ];
    let v = check(
        &writes(),
        &[replica("r1", 2, all_from(2)), replica("r2", 2, dropped)],
        Some(7),
    );
    assert_eq!(names(&v), vec!["gap"]);
}

/// The first change of the replica's life dropped, and the last one: both
/// gaps, the last found against the final revision.
#[test]
fn gaps_at_the_start_and_at_the_end() {
    let v = check(
        &writes(),
        &[replica(
            "r1",
            2,
            vec![
                change(4, "p/b", "4"),
                change(5, "p/a", "5"),
                change(6, "p/b", "6"),
            ],
        )],
        Some(7),
    );
    assert_eq!(names(&v), vec!["gap", "gap"]);
    assert!(check(&writes(), &[replica("r1", 2, all_from(2))], Some(7)).is_pass());
}

#[test]
fn each_other_guarantee_has_its_error() {
    let w = writes();
    let mut m = all_from(2);
    m.swap(1, 2);
    assert!(names(&check(&w, &[replica("r", 2, m)], None)).contains(&"unordered".to_string()));

    let mut m = all_from(2);
    m.insert(2, change(4, "p/b", "4"));
    assert!(names(&check(&w, &[replica("r", 2, m)], None)).contains(&"duplicate".to_string()));

    let mut m = all_from(2);
    m[1] = change(4, "p/b", "9");
    assert!(names(&check(&w, &[replica("r", 2, m)], None)).contains(&"wrong_change".to_string()));

    // A value applied at another revision than the one acknowledged.
    let m = vec![
        change(3, "p/a", "3"),
        change(4, "p/a", "5"),
        change(5, "p/a", "5"),
    ];
    assert!(names(&check(&w, &[replica("r", 2, m)], None)).contains(&"wrong_change".to_string()));
}
