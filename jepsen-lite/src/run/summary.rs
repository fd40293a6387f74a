//! The human-readable summary of a run (`summary.txt`, also printed).

use std::path::Path;

use super::RunConfig;
use crate::checker::register::RegisterReport;
use crate::checker::watch::WatchError;
use crate::checker::Verdict;
use crate::nemesis::lagging::LagSummary;
use crate::nemesis::NemesisStats;
use crate::report;
use crate::workload::replica::ReplicaReport;

/// What a run found, for the summary.
pub(super) struct Findings<'a> {
    pub(super) c: &'a report::Counts,
    pub(super) stats: &'a NemesisStats,
    pub(super) reg: &'a RegisterReport,
    pub(super) watch: Option<&'a Verdict<WatchError>>,
    pub(super) conv: &'a Verdict<String>,
    pub(super) starts: &'a [(u64, u32)],
    pub(super) lagging: Option<&'a LagSummary>,
    /// Every member the leader lists serves (membership nemeses).
    pub(super) members: &'a Verdict<String>,
    /// Writes and successful CAS acknowledged.
    pub(super) writes_acknowledged: usize,
    /// Whether the replica checker (if it ran) passed.
    pub(super) replica_ok: bool,
}

pub(super) fn summary(cfg: &RunConfig, f: &Findings<'_>, hist: &Path) -> String {
    use std::fmt::Write;
    let Findings {
        c,
        stats,
        reg,
        watch,
        conv,
        starts,
        lagging,
        members,
        writes_acknowledged,
        replica_ok,
    } = *f;
    let mut s = String::new();
    let _ = writeln!(s, "== jepsen-lite summary");
    let _ = writeln!(
        s,
        "workload {:?}, {} nodes, {} clients{}, {} keys, {}s, nemesis {:?}, seed {}, values {}",
        cfg.workload,
        cfg.nodes,
        cfg.register.clients,
        if cfg.register.client_retries {
            " (ballast Client, exactly-once retries)"
        } else {
            ""
        },
        cfg.register.keys,
        cfg.time.as_secs(),
        cfg.nemeses,
        cfg.seed,
        match cfg.padding.size() {
            Some(n) => format!("{n} bytes"),
            None => "unpadded".to_string(),
        }
    );
    let _ = writeln!(
        s,
        "operations: {} (ok {}, fail {}, info {}); ok by function: {:?}",
        c.ops, c.ok, c.fail, c.info, c.ok_by_f
    );
    if writes_acknowledged == 0 {
        let _ = writeln!(
            s,
            "no write was acknowledged in {}s: the checkers had nothing to check",
            cfg.time.as_secs()
        );
    }
    let _ = writeln!(
        s,
        "faults injected: {:?} (failed injections: {}); node starts: {:?}",
        stats.injected, stats.failed, starts
    );
    if !stats.refused.is_empty() || !stats.skipped.is_empty() {
        let _ = writeln!(
            s,
            "membership changes refused by the server: {:?}; skipped (nothing safe to do): {:?}",
            stats.refused, stats.skipped
        );
    }
    if let Some(l) = lagging {
        let _ = writeln!(
            s,
            "lagging followers: {} cut off; caught up by snapshot {}, by log replication {}, not within {:?} {}, not observed {} (snapshot-logs {})",
            l.cut_off,
            l.by_snapshot,
            l.by_log,
            crate::nemesis::lagging::CATCH_UP_LIMIT,
            l.not_caught_up,
            l.cut_off
                .saturating_sub(l.by_snapshot + l.by_log + l.not_caught_up),
            cfg.nemesis_options.lagging.snapshot_logs
        );
    }
    let _ = writeln!(
        s,
        "checker register (linearizability + version/mod_revision): {} in {} ms over {} keys",
        reg.verdict.label(),
        reg.elapsed_ms,
        reg.keys.len()
    );
    match &reg.verdict {
        Verdict::Fail { errors } => {
            for e in errors.iter().take(10) {
                let _ = writeln!(s, "  - {e}");
            }
            if errors.len() > 10 {
                let _ = writeln!(s, "  ... and {} more", errors.len() - 10);
            }
            let _ = writeln!(s, "  timeline: {}", cfg.out.join("timeline.html").display());
        }
        Verdict::Unknown { reason } => {
            let _ = writeln!(s, "  unknown: {reason}");
        }
        Verdict::Pass => {}
    }
    let _ = writeln!(
        s,
        "checker convergence (equal revision and state_hash after healing): {}",
        conv.label()
    );
    if let Verdict::Fail { errors } = conv {
        for e in errors {
            let _ = writeln!(s, "  - {e}");
        }
    }
    if let Some(w) = watch {
        let _ = writeln!(
            s,
            "checker watch (ordered, unique, reliable, atomic, resumable, bookmarkable, same events on every watcher): {}",
            w.label()
        );
        if let Verdict::Fail { errors } = w {
            for e in errors.iter().take(10) {
                let _ = writeln!(s, "  - {e}");
            }
            if errors.len() > 10 {
                let _ = writeln!(s, "  ... and {} more", errors.len() - 10);
            }
        }
    }
    if let Verdict::Fail { errors } = members {
        let _ = writeln!(
            s,
            "checker membership (every member the leader lists serves): FAIL"
        );
        for e in errors {
            let _ = writeln!(s, "  - {e}");
        }
    }
    let watch_fail = watch.is_some_and(|w| !w.is_pass());
    let verdict = if matches!(reg.verdict, Verdict::Fail { .. })
        || matches!(conv, Verdict::Fail { .. })
        || watch_fail
        || !members.is_pass()
        || !replica_ok
    {
        "FAIL"
    } else if reg.verdict.is_pass() && conv.is_pass() && writes_acknowledged > 0 {
        "PASS"
    } else {
        "UNKNOWN"
    };
    let _ = writeln!(
        s,
        "history: {}  node logs: {}",
        hist.display(),
        cfg.out.display()
    );
    let _ = write!(s, "verdict: {verdict}");
    s
}

/// Adds the replica checker's section (when it ran) before the history line
/// and the verdict, with the other checkers.
pub(super) fn with_replica_section(
    summary: String,
    replica_report: Option<&ReplicaReport>,
) -> String {
    match replica_report {
        None => summary,
        Some(r) => {
            let reads: u64 = r.logs.iter().map(|l| l.reads).sum();
            let offline: u64 = r.logs.iter().map(|l| l.reads_disconnected).sum();
            let mut section = format!(
                "checker replica (never backwards, answering through outages, converging): {}\n  {} replicas, {reads} reads, {offline} while disconnected from the cluster\n",
                if r.is_pass() { "pass" } else { "FAIL" },
                r.logs.len()
            );
            for e in &r.errors {
                section.push_str(&format!("  - {e}\n"));
            }
            // Before the history line and the verdict, with the other checkers.
            match summary.find("history: ") {
                Some(at) => format!("{}{section}{}", &summary[..at], &summary[at..]),
                None => format!("{summary}{section}"),
            }
        }
    }
}
