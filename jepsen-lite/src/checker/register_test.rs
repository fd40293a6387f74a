use super::*;
use crate::checker::test_util::error_names;
use crate::history::{Event, EventType, Func, Observed};

/// A tiny history builder: ops are (process, f, value/expected, outcome,
/// call, ret) on key "k".
struct H(Vec<Event>);

impl H {
    fn new() -> Self {
        H(Vec::new())
    }
    fn ev(&mut self, p: u64, kind: EventType, f: Func, t: u64) -> &mut Event {
        self.0.push(Event::new(p, kind, f, "k", t));
        self.0.last_mut().expect("just pushed")
    }
    fn write(&mut self, p: u64, v: &str, call: u64, ret: u64, kind: EventType, rev: Option<u64>) {
        self.ev(p, EventType::Invoke, Func::Write, call).value = Some(v.into());
        let e = self.ev(p, kind, Func::Write, ret);
        e.value = Some(v.into());
        e.revision = rev;
    }
    fn read(&mut self, p: u64, got: Option<(&str, u64, u64)>, call: u64, ret: u64) {
        self.ev(p, EventType::Invoke, Func::Read, call);
        let e = self.ev(p, EventType::Ok, Func::Read, ret);
        e.read = got.map(|(v, version, rev)| Observed {
            value: v.into(),
            version,
            mod_revision: rev,
            create_revision: 1,
        });
    }
    #[allow(clippy::too_many_arguments)]
    fn cas(
        &mut self,
        p: u64,
        exp: &str,
        v: &str,
        call: u64,
        ret: u64,
        kind: EventType,
        ok: Option<bool>,
        rev: Option<u64>,
    ) {
        let e = self.ev(p, EventType::Invoke, Func::Cas, call);
        e.value = Some(v.into());
        e.expected = Some(exp.into());
        let e = self.ev(p, kind, Func::Cas, ret);
        e.succeeded = ok;
        e.revision = rev;
    }
    fn check(mut self) -> RegisterReport {
        self.0.sort_by_key(|e| e.time);
        check(&self.0, Duration::from_secs(10))
    }
}

fn errors(r: &RegisterReport) -> Vec<String> {
    error_names(&r.verdict)
}

#[test]
fn good_history_passes() {
    let mut h = H::new();
    h.read(1, None, 0, 1);
    h.write(1, "a", 2, 3, EventType::Ok, Some(1));
    h.read(2, Some(("a", 1, 1)), 4, 5);
    h.cas(1, "a", "b", 6, 8, EventType::Ok, Some(true), Some(2));
    h.read(2, Some(("b", 2, 2)), 7, 9);
    let r = h.check();
    assert!(r.verdict.is_pass(), "{:?}", r.verdict);
}

#[test]
fn stale_read_fails_with_both_errors() {
    let mut h = H::new();
    h.write(1, "a", 0, 1, EventType::Ok, Some(1));
    h.write(1, "b", 2, 3, EventType::Ok, Some(2));
    h.read(2, Some(("a", 1, 1)), 4, 5);
    let r = h.check();
    let e = errors(&r);
    assert!(e.contains(&"non_linearizable".to_string()), "{e:?}");
    assert!(e.contains(&"stale_read".to_string()), "{e:?}");
}

#[test]
fn unobserved_indeterminate_write_is_dropped() {
    let mut h = H::new();
    h.write(1, "a", 0, 1, EventType::Ok, Some(1));
    h.write(2, "x", 2, 3, EventType::Info, None);
    h.read(3, Some(("a", 1, 1)), 10, 11);
    assert!(h.check().verdict.is_pass());
}

#[test]
fn observed_indeterminate_write_took_effect() {
    let mut h = H::new();
    h.write(1, "a", 0, 1, EventType::Ok, Some(1));
    h.write(2, "x", 2, 3, EventType::Info, None);
    h.read(3, Some(("x", 2, 2)), 10, 11);
    h.read(3, Some(("x", 2, 2)), 12, 13);
    assert!(h.check().verdict.is_pass());
}

#[test]
fn indeterminate_write_observed_then_reverted_fails() {
    let mut h = H::new();
    h.write(1, "a", 0, 1, EventType::Ok, Some(1));
    h.write(2, "x", 2, 3, EventType::Info, None);
    h.read(3, Some(("x", 2, 2)), 10, 11);
    h.read(3, Some(("a", 1, 1)), 12, 13);
    let e = errors(&h.check());
    assert!(e.contains(&"non_linearizable".to_string()), "{e:?}");
}

#[test]
fn failed_write_must_not_be_seen() {
    let mut h = H::new();
    h.write(1, "a", 0, 1, EventType::Ok, Some(1));
    h.write(2, "x", 2, 3, EventType::Fail, None);
    h.read(3, Some(("x", 2, 2)), 10, 11);
    let e = errors(&h.check());
    assert!(e.contains(&"non_linearizable".to_string()), "{e:?}");
}

#[test]
fn cas_failure_branch_read_is_checked() {
    let mut h = H::new();
    h.write(1, "a", 0, 1, EventType::Ok, Some(1));
    // Compare against "z" fails; its failure branch read must see "a".
    let e = {
        let mut h2 = H::new();
        h2.write(1, "a", 0, 1, EventType::Ok, Some(1));
        h2.cas(2, "z", "c", 2, 3, EventType::Ok, Some(false), Some(1));
        if let Some(last) = h2.0.last_mut() {
            last.read = Some(Observed {
                value: "a".into(),
                version: 1,
                mod_revision: 1,
                create_revision: 1,
            });
        }
        h2.check()
    };
    assert!(e.verdict.is_pass(), "{:?}", e.verdict);
    // A CAS that claims success against a value that was never there fails.
    h.cas(2, "z", "c", 2, 3, EventType::Ok, Some(true), Some(2));
    assert!(errors(&h.check()).contains(&"non_linearizable".to_string()));
}

#[test]
fn indeterminate_cas_observed_counts_as_success() {
    let mut h = H::new();
    h.write(1, "a", 0, 1, EventType::Ok, Some(1));
    h.cas(2, "a", "c", 2, 3, EventType::Info, None, None);
    h.read(3, Some(("c", 2, 2)), 10, 11);
    assert!(h.check().verdict.is_pass());
}

#[test]
fn metadata_errors_are_named() {
    let mut h = H::new();
    h.write(1, "a", 0, 1, EventType::Ok, Some(5));
    h.read(2, Some(("a", 1, 4)), 2, 3);
    let e = errors(&h.check());
    assert!(e.contains(&"mod_revision_mismatch".to_string()), "{e:?}");

    let mut h = H::new();
    h.write(1, "a", 0, 1, EventType::Ok, Some(1));
    h.write(1, "b", 2, 3, EventType::Ok, Some(2));
    h.read(2, Some(("a", 1, 1)), 0, 10);
    h.read(3, Some(("b", 1, 2)), 0, 10);
    let e = errors(&h.check());
    assert!(e.contains(&"version_order".to_string()), "{e:?}");

    let mut h = H::new();
    h.read(2, Some(("ghost", 1, 1)), 0, 10);
    assert!(errors(&h.check()).contains(&"phantom_value".to_string()));
}

#[test]
fn unfinished_operations_are_indeterminate() {
    let mut h = H::new();
    h.write(1, "a", 0, 1, EventType::Ok, Some(1));
    h.ev(2, EventType::Invoke, Func::Write, 2).value = Some("b".into());
    h.read(3, Some(("b", 2, 2)), 10, 11);
    assert!(h.check().verdict.is_pass());
}

/// A planted double apply: a retried write whose first attempt already
/// applied is applied again after another client's write (what a broken
/// exactly-once table would do). Readers see "a", then "b", then "a" again at
/// a new revision, though "a" was written once: the checker must fail it.
#[test]
fn double_applied_retry_fails() {
    let mut h = H::new();
    // p1's write of "a" spans the whole run: its answer was lost and the
    // client retried it; the answer that came back names the second apply.
    h.write(1, "a", 0, 20, EventType::Ok, Some(3));
    h.read(2, Some(("a", 1, 1)), 2, 3);
    h.write(3, "b", 4, 5, EventType::Ok, Some(2));
    h.read(2, Some(("b", 2, 2)), 6, 7);
    h.read(2, Some(("a", 3, 3)), 8, 9);
    let e = errors(&h.check());
    assert!(e.contains(&"non_linearizable".to_string()), "{e:?}");
}

/// The same double apply with no write in between: the value does not
/// change, but its version and mod_revision move twice for one write.
#[test]
fn double_applied_retry_without_interleaving_fails() {
    let mut h = H::new();
    h.write(1, "a", 0, 20, EventType::Ok, Some(1));
    h.read(2, Some(("a", 1, 1)), 2, 3);
    h.read(2, Some(("a", 2, 2)), 8, 9);
    let e = errors(&h.check());
    assert!(e.contains(&"mod_revision_mismatch".to_string()), "{e:?}");
}
