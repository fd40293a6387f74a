use super::*;
use crate::checker::test_util::{error_names as names, put, write};

fn change(rev: u64, key: &str, value: &str) -> Message {
    Message::Change {
        revision: rev,
        events: put(rev, key, value),
    }
}

fn writes() -> Vec<Write> {
    vec![
        write("p/a", "1", Some(1)),
        write("p/b", "2", Some(2)),
        write("p/a", "3", None), // indeterminate, happened at 3
        write("p/b", "4", Some(4)),
    ]
}

fn full() -> Vec<Message> {
    vec![
        change(1, "p/a", "1"),
        change(2, "p/b", "2"),
        change(3, "p/a", "3"),
        Message::Progress { revision: 3 },
        change(4, "p/b", "4"),
    ]
}

fn watcher(name: &str, sessions: Vec<(u64, Vec<Message>)>) -> Watcher {
    Watcher {
        name: name.into(),
        sessions: sessions
            .into_iter()
            .map(|(start_revision, messages)| Session {
                start_revision,
                messages,
            })
            .collect(),
    }
}

fn check_all(w: &[Write], ws: &[Watcher]) -> Verdict<WatchError> {
    check(w, ws, None)
}

#[test]
fn good_histories_pass() {
    let resumed = {
        let mut a = full();
        let b = a.split_off(2);
        watcher("w2", vec![(1, a), (3, b)])
    };
    let v = check_all(&writes(), &[watcher("w1", vec![(1, full())]), resumed]);
    assert!(v.is_pass(), "{v:?}");
}

#[test]
fn each_guarantee_has_its_error() {
    let w = writes();
    let mut m = full();
    m.swap(0, 1);
    assert!(names(&check_all(&w, &[watcher("w", vec![(1, m)])])).contains(&"unordered".to_string()));

    let m = vec![change(1, "p/a", "1"), change(2, "p/b", "2")];
    let again = vec![change(2, "p/b", "2"), change(3, "p/a", "3")];
    assert!(
        names(&check_all(&w, &[watcher("w", vec![(1, m), (2, again)])]))
            .contains(&"duplicate".to_string())
    );

    let m = vec![
        change(1, "p/a", "1"),
        change(3, "p/a", "3"),
        change(4, "p/b", "4"),
    ];
    assert!(names(&check_all(&w, &[watcher("w", vec![(1, m)])])).contains(&"gap".to_string()));

    let m = vec![
        change(1, "p/a", "1"),
        change(2, "p/b", "2"),
        change(2, "p/b", "2"),
    ];
    assert!(
        names(&check_all(&w, &[watcher("w", vec![(1, m)])])).contains(&"not_atomic".to_string())
    );

    let a = vec![change(1, "p/a", "1")];
    let b = vec![change(3, "p/a", "3")];
    assert!(names(&check_all(&w, &[watcher("w", vec![(1, a), (2, b)])]))
        .contains(&"not_resumable".to_string()));

    let m = vec![
        change(1, "p/a", "1"),
        Message::Progress { revision: 2 },
        change(2, "p/b", "2"),
    ];
    assert!(names(&check_all(&w, &[watcher("w", vec![(1, m)])]))
        .contains(&"early_bookmark".to_string()));

    let m = vec![change(1, "p/a", "9")];
    assert!(
        names(&check_all(&w, &[watcher("w", vec![(1, m)])])).contains(&"wrong_event".to_string())
    );

    let x = vec![change(3, "p/a", "3")];
    let y = vec![Message::Change {
        revision: 3,
        events: vec![
            WatchEvent {
                kind: "put".into(),
                key: "p/a".into(),
                value: Some("3".into()),
                mod_revision: 3,
            },
            WatchEvent {
                kind: "delete".into(),
                key: "p/b".into(),
                value: None,
                mod_revision: 3,
            },
        ],
    }];
    assert!(names(&check_all(
        &w,
        &[watcher("x", vec![(3, x)]), watcher("y", vec![(3, y)])]
    ))
    .contains(&"divergent".to_string()));
}

#[test]
fn a_watcher_short_of_the_final_revision_has_a_gap() {
    let short = vec![change(1, "p/a", "1"), change(2, "p/b", "2")];
    let v = check(&writes(), &[watcher("w", vec![(1, short)])], Some(4));
    assert!(names(&v).contains(&"gap".to_string()));
    assert!(check(&writes(), &[watcher("w", vec![(1, full())])], Some(4)).is_pass());
}

#[test]
fn a_lagging_node_may_bookmark_below_the_resume_point() {
    let a = vec![
        change(1, "p/a", "1"),
        change(2, "p/b", "2"),
        change(3, "p/a", "3"),
    ];
    let b = vec![Message::Progress { revision: 2 }, change(4, "p/b", "4")];
    assert!(check(&writes(), &[watcher("w", vec![(1, a), (4, b)])], Some(4)).is_pass());
}
