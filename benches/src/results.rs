//! The files of `--out DIR`, written after a run and read back by
//! `ballast-bench report`:
//!
//! - `DIR/<target>.csv`: one line per row ([`ROWS_HEADER`]);
//! - `DIR/<target>.md`: the markdown table printed on stdout;
//! - `DIR/hist/<target>/<workload>-c<clients>.csv`: the row's latency
//!   distribution ([`HISTOGRAM_HEADER`]), one line per histogram bucket that
//!   holds a request, with the share of requests at or below it: a CDF.
//!
//! Plain CSV without quoting: no field holds a comma (target and workload
//! names are fixed words).

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};

use crate::report::{Report, RowResult};

/// First line of a rows file. The first ten columns are the comparison; the
/// rest say how much was measured.
pub const ROWS_HEADER: &str = "target,workload,clients,ops_per_sec,p50_ms,p90_ms,p99_ms,p999_ms,max_ms,errors,ops,compare_failed,connections,elapsed_s";
/// First line of a histogram file.
pub const HISTOGRAM_HEADER: &str = "latency_ms,count,cumulative_fraction";

/// One row as read back from a rows file.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredRow {
    /// System under test.
    pub target: String,
    /// Workload name.
    pub workload: String,
    /// Concurrent clients.
    pub clients: usize,
    /// Completed requests per second.
    pub ops_per_sec: f64,
    /// Latency percentiles and maximum, milliseconds.
    pub p50_ms: f64,
    /// 90th percentile, milliseconds.
    pub p90_ms: f64,
    /// 99th percentile, milliseconds.
    pub p99_ms: f64,
    /// 99.9th percentile, milliseconds.
    pub p999_ms: f64,
    /// Slowest request, milliseconds.
    pub max_ms: f64,
    /// Failed requests.
    pub errors: u64,
    /// Completed requests.
    pub ops: u64,
    /// `txn-cas` requests whose compare failed (completed).
    pub compare_failed: u64,
    /// Connections the clients shared.
    pub connections: usize,
    /// Length of the row, seconds.
    pub elapsed_s: f64,
}

/// A point of a latency CDF: latency in milliseconds, share of requests at
/// or below it (0..=1).
pub type CdfPoint = (f64, f64);

/// Path of the histogram file of one row.
pub fn histogram_path(dir: &Path, target: &str, workload: &str, clients: usize) -> PathBuf {
    dir.join("hist")
        .join(target)
        .join(format!("{workload}-c{clients}.csv"))
}

fn row_line(target: &str, r: &RowResult) -> String {
    format!(
        "{target},{},{},{:.3},{:.3},{:.3},{:.3},{:.3},{:.3},{},{},{},{},{:.3}",
        r.workload,
        r.clients,
        r.ops_per_sec,
        r.p50_ms,
        r.p90_ms,
        r.p99_ms,
        r.p999_ms,
        r.max_ms,
        r.errors,
        r.ops,
        r.compare_failed,
        r.connections,
        r.elapsed_secs
    )
}

fn histogram_csv(r: &RowResult) -> String {
    let mut out = String::from(HISTOGRAM_HEADER);
    out.push('\n');
    for v in r.latencies.iter_recorded() {
        out.push_str(&format!(
            "{:.3},{},{:.6}\n",
            v.value_iterated_to() as f64 / 1000.0,
            v.count_since_last_iteration(),
            v.percentile() / 100.0
        ));
    }
    out
}

/// Writes the rows, the table and one histogram per row of `report` under
/// `dir`, replacing the files of an earlier run of the same target.
pub fn write_run(dir: &Path, report: &Report) -> Result<()> {
    let target = report.target;
    let hist_dir = dir.join("hist").join(target);
    fs::create_dir_all(&hist_dir).with_context(|| format!("creating {}", hist_dir.display()))?;
    let mut rows = String::from(ROWS_HEADER);
    rows.push('\n');
    for r in &report.rows {
        rows.push_str(&row_line(target, r));
        rows.push('\n');
        let path = histogram_path(dir, target, r.workload, r.clients);
        fs::write(&path, histogram_csv(r))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let csv = dir.join(format!("{target}.csv"));
    fs::write(&csv, rows).with_context(|| format!("writing {}", csv.display()))?;
    let md = dir.join(format!("{target}.md"));
    fs::write(&md, report.to_table()).with_context(|| format!("writing {}", md.display()))?;
    Ok(())
}

fn field<T: std::str::FromStr>(fields: &[&str], i: usize, name: &str) -> Result<T> {
    let raw = fields.get(i).copied().unwrap_or_default();
    raw.trim()
        .parse()
        .map_err(|_| anyhow::anyhow!("column {name}: {raw:?} is not a number"))
}

/// Parses a rows file.
pub fn parse_rows(text: &str) -> Result<Vec<StoredRow>> {
    let mut lines = text.lines();
    if lines.next().map(str::trim) != Some(ROWS_HEADER) {
        bail!("not a ballast-bench rows file (first line is not {ROWS_HEADER:?})");
    }
    let mut rows = Vec::new();
    for (n, line) in lines.enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split(',').collect();
        let row = (|| {
            if f.len() != ROWS_HEADER.split(',').count() {
                bail!("{} columns", f.len());
            }
            Ok(StoredRow {
                target: f[0].trim().to_owned(),
                workload: f[1].trim().to_owned(),
                clients: field(&f, 2, "clients")?,
                ops_per_sec: field(&f, 3, "ops_per_sec")?,
                p50_ms: field(&f, 4, "p50_ms")?,
                p90_ms: field(&f, 5, "p90_ms")?,
                p99_ms: field(&f, 6, "p99_ms")?,
                p999_ms: field(&f, 7, "p999_ms")?,
                max_ms: field(&f, 8, "max_ms")?,
                errors: field(&f, 9, "errors")?,
                ops: field(&f, 10, "ops")?,
                compare_failed: field(&f, 11, "compare_failed")?,
                connections: field(&f, 12, "connections")?,
                elapsed_s: field(&f, 13, "elapsed_s")?,
            })
        })()
        .with_context(|| format!("line {}", n + 2))?;
        rows.push(row);
    }
    Ok(rows)
}

/// Reads every rows file at the top of `dir` (`*.csv`, in name order).
pub fn read_rows(dir: &Path) -> Result<Vec<StoredRow>> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "csv"))
        .collect();
    files.sort();
    let mut rows = Vec::new();
    for path in files {
        let text =
            fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        rows.extend(parse_rows(&text).with_context(|| format!("in {}", path.display()))?);
    }
    Ok(rows)
}

/// Parses a histogram file into CDF points.
pub fn parse_cdf(text: &str) -> Result<Vec<CdfPoint>> {
    let mut lines = text.lines();
    if lines.next().map(str::trim) != Some(HISTOGRAM_HEADER) {
        bail!("not a ballast-bench histogram file (first line is not {HISTOGRAM_HEADER:?})");
    }
    lines
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let f: Vec<&str> = line.split(',').collect();
            Ok((
                field(&f, 0, "latency_ms")?,
                field(&f, 2, "cumulative_fraction")?,
            ))
        })
        .collect()
}

/// The CDF of one row, if its histogram file exists.
pub fn read_cdf(
    dir: &Path,
    target: &str,
    workload: &str,
    clients: usize,
) -> Result<Option<Vec<CdfPoint>>> {
    let path = histogram_path(dir, target, workload, clients);
    if !path.exists() {
        return Ok(None);
    }
    let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    parse_cdf(&text)
        .map(Some)
        .with_context(|| format!("in {}", path.display()))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use hdrhistogram::Histogram;

    use super::*;
    use crate::config::{Config, Workload};
    use crate::report::Counts;

    fn row(workload: Workload, clients: usize, latencies_us: &[u64]) -> RowResult {
        let mut h = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).expect("bounds");
        for &us in latencies_us {
            h.record(us).expect("in range");
        }
        let counts = Counts {
            errors: 1,
            compare_failed: 2,
        };
        RowResult::new(
            workload,
            clients,
            clients,
            h,
            counts,
            vec![],
            Duration::from_secs(2),
        )
    }

    #[test]
    fn a_run_round_trips_through_its_files() {
        let dir = tempfile::tempdir().expect("temp dir");
        let report = Report {
            target: "etcd",
            config: Config::default(),
            rows: vec![
                row(Workload::Put, 1, &[1000, 2000, 3000, 4000]),
                row(Workload::TxnCas, 16, &[500, 500, 10_000]),
            ],
        };
        write_run(dir.path(), &report).expect("written");
        assert!(dir.path().join("etcd.md").exists());

        let rows = read_rows(dir.path()).expect("read back");
        assert_eq!(rows.len(), 2);
        assert_eq!(
            (rows[0].target.as_str(), rows[0].workload.as_str()),
            ("etcd", "put")
        );
        assert_eq!((rows[0].clients, rows[0].ops, rows[0].errors), (1, 4, 1));
        assert!((rows[0].ops_per_sec - 2.0).abs() < 1e-9);
        assert!((rows[0].p50_ms - 2.0).abs() < 0.01, "{:?}", rows[0]);
        assert_eq!(
            (rows[1].workload.as_str(), rows[1].compare_failed),
            ("txn-cas", 2)
        );

        let cdf = read_cdf(dir.path(), "etcd", "txn-cas", 16)
            .expect("readable")
            .expect("exists");
        assert_eq!(cdf.len(), 2);
        assert!((cdf[0].0 - 0.5).abs() < 0.01 && (cdf[0].1 - 2.0 / 3.0).abs() < 1e-4);
        assert!((cdf[1].1 - 1.0).abs() < 1e-9);
        assert!(read_cdf(dir.path(), "etcd", "put", 256)
            .expect("no error")
            .is_none());
    }

    #[test]
    fn refuses_foreign_files() {
        assert!(parse_rows("a,b,c\n1,2,3\n").is_err());
        let short = format!("{ROWS_HEADER}\nballast,put,1,5\n");
        let err = parse_rows(&short).expect_err("too few columns");
        assert!(format!("{err:#}").contains("line 2"), "{err:#}");
        assert!(parse_cdf("latency,count\n").is_err());
        assert!(parse_cdf(&format!("{HISTOGRAM_HEADER}\n1.0,x,abc\n")).is_err());
    }
}
