//! The `ballast-bench` binary as scripts use it: the report step on files a
//! run would have written, and the exit codes when there is nothing to
//! measure. (A run against a real cluster is `benches/smoke.sh`.)

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use ballast_bench::results::{HISTOGRAM_HEADER, ROWS_HEADER};

fn bench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ballast-bench"))
        .args(args)
        .output()
        .expect("run ballast-bench")
}

fn write_target(dir: &Path, target: &str, ops_per_sec: [f64; 2]) {
    let rows = format!(
        "{ROWS_HEADER}\n\
         {target},put,1,{},1.0,1.5,2.0,2.5,3.0,0,100,0,1,1.0\n\
         {target},put,16,{},4.0,5.0,9.0,12.0,15.0,0,800,0,16,1.0\n\
         {target},txn-cas,16,{},4.0,5.0,9.0,12.0,15.0,2,700,40,16,1.0\n",
        ops_per_sec[0], ops_per_sec[1], ops_per_sec[1]
    );
    fs::write(dir.join(format!("{target}.csv")), rows).expect("rows");
    fs::write(
        dir.join(format!("{target}.md")),
        format!("{target} at somewhere (1000 keys)\n\n| table |\n"),
    )
    .expect("table");
    let hist = dir.join("hist").join(target);
    fs::create_dir_all(&hist).expect("hist dir");
    for name in ["put-c16.csv", "txn-cas-c16.csv"] {
        fs::write(
            hist.join(name),
            format!("{HISTOGRAM_HEADER}\n1.000,10,0.5\n4.000,10,1.0\n"),
        )
        .expect("histogram");
    }
}

#[test]
fn report_writes_a_summary_and_charts() {
    let dir = tempfile::tempdir().expect("temp dir");
    write_target(dir.path(), "ballast", [1300.0, 6000.0]);
    write_target(dir.path(), "etcd", [650.0, 3000.0]);
    let dir_arg = dir.path().to_str().expect("utf-8 path");
    let out = bench(&["report", dir_arg, "--cdf-clients", "256"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = fs::read_to_string(dir.path().join("summary.md")).expect("summary.md");
    assert!(summary.contains("| 1 | 1,300 | 650 | 2.00× | 2.00 ms | 2.00 ms | 0 / 0 |"));
    assert!(summary.contains("- etcd: etcd at somewhere (1000 keys)"));
    assert!(
        summary.contains("| 16 | 6,000 | 3,000 | 2.00× | 9.00 ms | 9.00 ms | 2 / 2 | 40 / 40 |")
    );
    // No row at 256 clients: the CDFs are drawn at the largest common count.
    for chart in [
        "throughput-put.svg",
        "throughput-txn-cas.svg",
        "cdf-put-c16.svg",
        "cdf-txn-cas-c16.svg",
    ] {
        let svg = fs::read_to_string(dir.path().join(chart)).expect(chart);
        assert!(svg.contains("<svg") && svg.contains("etcd"), "{chart}");
        assert!(
            summary.contains(&format!("]({chart})")),
            "{chart} not linked"
        );
    }
}

#[test]
fn report_without_rows_fails() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = bench(&["report", dir.path().to_str().expect("utf-8 path")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no rows"));
}

#[test]
fn an_unreachable_cluster_fails_the_run() {
    // A loopback port that nothing listens on once the listener is gone.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let endpoint = format!("http://127.0.0.1:{port}");
    for target in ["ballast", "etcd"] {
        let out = bench(&[
            "--smoke",
            "--target",
            target,
            "--endpoints",
            &endpoint,
            "--wait-ready",
            "1s",
            "--request-timeout",
            "1s",
            "--no-progress",
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{target}: {stderr}");
        assert!(stderr.contains("not ready"), "{target}: {stderr}");
    }
}

#[test]
fn bad_flags_are_usage_errors() {
    let out = bench(&["--clients", "0", "--duration", "1s"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--clients"));
    let out = bench(&["--target", "zookeeper"]);
    assert_eq!(out.status.code(), Some(2));
}
