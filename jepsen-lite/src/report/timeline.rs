//! HTML timeline of one key's operations around a violation: one row per
//! client process, one bar per operation from invoke to completion, the
//! non-linearizable window shaded, faults as vertical marks.

use std::fmt::Write;

use crate::checker::register::{CompletedOp, RegisterError};
use crate::history::{Event, EventType, Func};

pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn label(op: &CompletedOp) -> String {
    let out = match (op.f, op.kind) {
        (_, EventType::Fail) => "fail".to_string(),
        (_, EventType::Info) => "info?".to_string(),
        (Func::Read, _) => match &op.read {
            Some(r) => format!("→ {} (v{} @{})", r.value, r.version, r.mod_revision),
            None => "→ absent".to_string(),
        },
        (Func::Cas, _) if op.succeeded == Some(false) => format!(
            "✗ saw {}",
            op.read
                .as_ref()
                .map_or("absent".to_string(), |r| r.value.clone())
        ),
        _ => format!("ok @{}", op.revision.unwrap_or(0)),
    };
    match op.f {
        Func::Read => format!("read {out}"),
        Func::Write => format!("write {} {out}", op.value.as_deref().unwrap_or("")),
        Func::Cas => format!(
            "cas {}→{} {out}",
            op.expected.as_deref().unwrap_or(""),
            op.value.as_deref().unwrap_or("")
        ),
        Func::Nemesis => out,
    }
}

/// Renders the timeline of `error`'s key; `None` for errors without a window.
pub fn render(ops: &[CompletedOp], history: &[Event], error: &RegisterError) -> Option<String> {
    let (key, focus, witness): (&str, usize, Option<usize>) = match error {
        RegisterError::NonLinearizable { key, stuck, .. } => (key, *stuck, None),
        RegisterError::StaleRead {
            key, read, witness, ..
        } => (key, *read, Some(*witness)),
        _ => return None,
    };
    let f = ops.get(focus)?;
    let end_of_run = history.last().map_or(0, |e| e.time);
    let ret = |o: &CompletedOp| if o.ret == u64::MAX { end_of_run } else { o.ret };
    let win_start = witness
        .and_then(|w| ops.get(w))
        .map_or(f.call, |w| w.call.min(f.call));
    let win_end = ret(f);
    let margin = (win_end - win_start).max(50_000_000);
    let (t0, t1) = (win_start.saturating_sub(margin), win_end + margin);
    let shown: Vec<(usize, &CompletedOp)> = ops
        .iter()
        .enumerate()
        .filter(|(_, o)| o.key == key && o.call <= t1 && ret(o) >= t0)
        .take(400)
        .collect();
    let mut procs: Vec<u64> = shown.iter().map(|(_, o)| o.process).collect();
    procs.sort_unstable();
    procs.dedup();
    let (w, row, left) = (1400.0_f64, 26.0_f64, 70.0_f64);
    let x = |t: u64| left + (t.clamp(t0, t1) - t0) as f64 / (t1 - t0) as f64 * (w - left - 10.0);
    let h = row * (procs.len() as f64 + 2.0);
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg width="{w}" height="{h}" font-family="monospace" font-size="11">"#
    );
    let _ = write!(
        svg,
        r##"<rect x="{:.1}" y="0" width="{:.1}" height="{h}" fill="#ffdddd"><title>non-linearizable window</title></rect>"##,
        x(win_start),
        (x(win_end) - x(win_start)).max(2.0)
    );
    for e in history.iter().filter(|e| {
        e.f == Func::Nemesis && e.time >= t0 && e.time <= t1 && e.kind != EventType::Info
    }) {
        let xe = x(e.time);
        let _ = write!(
            svg,
            r##"<line x1="{xe:.1}" y1="0" x2="{xe:.1}" y2="{h}" stroke="#8844cc" stroke-dasharray="4,3"><title>{}</title></line>"##,
            esc(e.error.as_deref().unwrap_or(""))
        );
    }
    for (r, p) in procs.iter().enumerate() {
        let y = row * (r as f64 + 1.0);
        let _ = write!(svg, r#"<text x="2" y="{:.1}">p{p}</text>"#, y + 15.0);
    }
    for (i, o) in &shown {
        let r = procs.iter().position(|p| *p == o.process).unwrap_or(0);
        let y = row * (r as f64 + 1.0) + 3.0;
        let color = if *i == focus {
            "#e03030"
        } else if Some(*i) == witness {
            "#ff9900"
        } else {
            match (o.f, o.kind) {
                (_, EventType::Info) => "#bbbbbb",
                (_, EventType::Fail) => "#eeeeee",
                (Func::Read, _) => "#88bbee",
                _ => "#88dd99",
            }
        };
        let (x0, x1) = (x(o.call), x(ret(o)));
        let lab = esc(&label(o));
        let _ = write!(
            svg,
            r##"<g><title>op {i} p{} node {} {lab} [{:.3}s – {}]</title><rect x="{x0:.1}" y="{y:.1}" width="{:.1}" height="20" fill="{color}" stroke="#333"/><text x="{:.1}" y="{:.1}">{lab}</text></g>"##,
            o.process,
            o.node.unwrap_or(0),
            o.call as f64 / 1e9,
            if o.ret == u64::MAX {
                "never".to_string()
            } else {
                format!("{:.3}s", o.ret as f64 / 1e9)
            },
            (x1 - x0).max(2.0),
            x0 + 2.0,
            y + 14.0
        );
    }
    svg.push_str("</svg>");
    Some(format!(
        "<h2>key {}</h2><p>{}</p><p>Red: the operation that cannot be linearized (or the stale read); orange: the operation that had already completed with a newer revision; shaded: the non-linearizable window; dashed purple: faults. Hover for details. Time {:.3}s – {:.3}s.</p><div style=\"overflow-x:auto\">{svg}</div>",
        esc(key),
        esc(&error.to_string()),
        t0 as f64 / 1e9,
        t1 as f64 / 1e9
    ))
}

/// Wraps sections into a page.
pub fn page(title: &str, sections: &[String]) -> String {
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{0}</title></head><body style=\"font-family:sans-serif\"><h1>{0}</h1>{1}</body></html>",
        esc(title),
        sections.join("\n<hr>\n")
    )
}
