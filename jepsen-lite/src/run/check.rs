//! The check: the checkers over the recorded history, then the files a run
//! leaves (history, summary, results, and the timeline of a violation).

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde_json::json;

use super::summary;
use super::teardown::Settled;
use super::{RunConfig, RunOutcome, Workload};
use crate::checker::membership;
use crate::checker::register::{self, RegisterError, RegisterReport};
use crate::checker::watch as watch_checker;
use crate::checker::Verdict;
use crate::history::{self, Event, Recorder};
use crate::nemesis::lagging::LagSummary;
use crate::report::{self, timeline};
use crate::workload::watch as watch_workload;

/// Checks the history and writes the run's files.
pub(super) fn check_and_report(
    cfg: &RunConfig,
    rec: &Recorder,
    settled: Settled,
    interrupted: bool,
) -> anyhow::Result<RunOutcome> {
    let Settled {
        stats,
        convergence,
        replica_report,
        watch_logs,
        starts,
    } = settled;
    let events = rec.snapshot();
    let hist_path = cfg.out.join("history.jsonl");
    history::write_jsonl(&hist_path, &events)?;
    tracing::info!(events = events.len(), "--- checking");
    let reg = register::check(&events, cfg.check_limit);
    let members = membership::check(&events);
    let watch = (cfg.workload == Workload::Watch).then(|| {
        let writes = watch_workload::writes(&events);
        let last = writes.iter().filter_map(|w| w.revision).max();
        watch_checker::check(&writes, &watch_logs, last)
    });
    let counts = report::count(&events);
    let lagging = cfg
        .nemeses
        .iter()
        .any(|n| n == "lagging")
        .then(|| LagSummary::of(&events));
    // A run in which no write took effect checked nothing: not a pass.
    let writes_acknowledged = acknowledged_writes(&events);
    let idle = writes_acknowledged == 0;
    if idle {
        tracing::warn!("no write was acknowledged during the whole run: nothing was checked");
    }
    let replica_ok = replica_report.as_ref().is_none_or(|r| r.is_pass());
    let pass = reg.verdict.is_pass()
        && convergence.is_pass()
        && members.is_pass()
        && watch.as_ref().is_none_or(|w| w.is_pass())
        && replica_ok
        && !idle;
    let failed = matches!(reg.verdict, Verdict::Fail { .. })
        || matches!(convergence, Verdict::Fail { .. })
        || !members.is_pass()
        || watch.as_ref().is_some_and(|w| !w.is_pass())
        || !replica_ok;
    // Not failed and not passed: a checker could not decide, or no write
    // took effect.
    let unknown = !failed && !pass;
    let summary = summary::summary(
        cfg,
        &summary::Findings {
            c: &counts,
            stats: &stats,
            reg: &reg,
            watch: watch.as_ref(),
            conv: &convergence,
            starts: &starts,
            lagging: lagging.as_ref(),
            members: &members,
            writes_acknowledged,
            replica_ok,
        },
        &hist_path,
    );
    let summary = summary::with_replica_section(summary, replica_report.as_ref());
    println!("{summary}");
    std::fs::write(cfg.out.join("summary.txt"), &summary)?;
    std::fs::write(
        cfg.out.join("results.json"),
        serde_json::to_string_pretty(&json!({
            "counts": counts, "nemesis": stats, "register": reg, "watch": watch, "convergence": convergence,
            "pass": pass, "nodes": cfg.nodes, "time_s": cfg.time.as_secs(), "nemeses": cfg.nemeses, "seed": cfg.seed,
            "value_size": cfg.padding.size(), "client_retries": cfg.register.client_retries,
            "lagging": lagging, "membership": members,
        }))?,
    )?;
    if let Verdict::Fail { .. } = reg.verdict {
        write_timeline(&cfg.out, &reg, &events)?;
    }
    Ok(RunOutcome {
        register: reg,
        watch,
        convergence,
        pass,
        unknown,
        interrupted,
    })
}

/// Writes `timeline.html` for the first violations of a register report.
pub fn write_timeline(
    out: &Path,
    reg: &RegisterReport,
    events: &[Event],
) -> anyhow::Result<PathBuf> {
    let mut sections = Vec::new();
    if let Verdict::Fail { errors } = &reg.verdict {
        // Per key: its non-linearizable search result first, then its first
        // stale read; other errors as text.
        let mut picked: Vec<&RegisterError> = Vec::new();
        let mut seen_stale = std::collections::HashSet::new();
        for e in errors
            .iter()
            .filter(|e| matches!(e, RegisterError::NonLinearizable { .. }))
        {
            picked.push(e);
        }
        for e in errors {
            match e {
                RegisterError::NonLinearizable { .. } => {}
                RegisterError::StaleRead { key, .. } => {
                    if seen_stale.insert(key.clone()) {
                        picked.push(e);
                    }
                }
                other => picked.push(other),
            }
        }
        for e in picked.into_iter().take(12) {
            if let Some(s) = timeline::render(&reg.ops, events, e) {
                sections.push(s);
            } else {
                sections.push(
                    format!("<p>{}</p>", e)
                        .replace('<', "&lt;")
                        .replacen("&lt;p>", "<p>", 1)
                        .replace("&lt;/p>", "</p>"),
                );
            }
        }
    }
    let path = out.join("timeline.html");
    std::fs::write(
        &path,
        timeline::page("jepsen-lite: register violations", &sections),
    )
    .context("writing timeline.html")?;
    Ok(path)
}

/// Writes and successful CAS that were acknowledged (took effect).
fn acknowledged_writes(events: &[Event]) -> usize {
    events
        .iter()
        .filter(|e| {
            e.kind == history::EventType::Ok
                && match e.f {
                    history::Func::Write => true,
                    history::Func::Cas => e.succeeded == Some(true),
                    _ => false,
                }
        })
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{EventType, Func};

    #[test]
    fn only_writes_that_took_effect_count_as_acknowledged() {
        let ev = |kind, f, succeeded| {
            let mut e = Event::new(1, kind, f, "k", 0);
            e.succeeded = succeeded;
            e
        };
        let events = vec![
            ev(EventType::Ok, Func::Read, None),
            ev(EventType::Info, Func::Write, None),
            ev(EventType::Fail, Func::Write, None),
            ev(EventType::Ok, Func::Cas, Some(false)),
        ];
        assert_eq!(acknowledged_writes(&events), 0);
        let more = [
            ev(EventType::Ok, Func::Write, None),
            ev(EventType::Ok, Func::Cas, Some(true)),
        ];
        let events: Vec<Event> = events.into_iter().chain(more).collect();
        assert_eq!(acknowledged_writes(&events), 2);
    }
}
