//! Replica reports reach `GET /v1/replicas` and `ballastctl rollout status`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use ballast_client::Client;
use ballast_tests::TestCluster;
use serde_json::Value;
use tracing::info;

use crate::common::{endpoints, put, replica, WAIT};

static BUILD: Mutex<()> = Mutex::new(());

/// `target/<profile>/ballastctl`, built first if missing.
fn ballastctl() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| anyhow!("unexpected test path {}", exe.display()))?;
    let path = profile_dir.join("ballastctl");
    let _guard = BUILD.lock().map_err(|_| anyhow!("build lock poisoned"))?;
    if path.exists() {
        return Ok(path);
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "-p", "ballast-client", "--bin", "ballastctl"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .context("building ballastctl")?;
    if !status.success() || !path.exists() {
        bail!("could not build ballastctl at {}", path.display());
    }
    Ok(path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_show_up_in_replicas_and_rollout_status() -> Result<()> {
    let ctl = ballastctl()?;
    let tc = TestCluster::start(3).await?;
    let client = Client::new(endpoints(&tc))?;
    let dir = tempfile::tempdir()?;
    let rev = put(&client, "/web/a", "1").await?;
    let r = replica(endpoints(&tc), "/web/", dir.path(), "web-1").await?;
    r.wait_for_revision(rev, WAIT).await?;

    info!("--- the report reaches GET /v1/replicas");
    let deadline = Instant::now() + WAIT;
    loop {
        let resp = client.rollout(rev).await?;
        let mine = resp.replicas.iter().find(|x| x.id == "web-1");
        if let (Some(mine), Some(rollout)) = (mine, &resp.rollout) {
            if mine.revision >= rev && rollout.converged() {
                assert_eq!(mine.prefix, "/web/");
                assert!(!mine.serving_from_disk);
                break;
            }
        }
        if Instant::now() > deadline {
            bail!("report of web-1 at {rev} never showed: {resp:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    info!(
        "--- ballastctl rollout status: converged (exit 0), then a future revision lags (exit 1)"
    );
    let eps = endpoints(&tc).join(",");
    let run = move |revision: u64| {
        Command::new(&ctl)
            .args([
                "--endpoints",
                &eps,
                "-o",
                "json",
                "rollout",
                "status",
                "--revision",
            ])
            .arg(revision.to_string())
            .output()
    };
    let ctl_run = tokio::task::spawn_blocking({
        let run = run.clone();
        move || run(rev)
    });
    let out = ctl_run.await??;
    let doc: Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{doc} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(doc["converged"], true, "{doc}");
    assert!(doc["applied"].as_u64() >= Some(1), "{doc}");
    let future = rev + 1_000_000;
    let out = tokio::task::spawn_blocking(move || run(future)).await??;
    let doc: Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(out.status.code(), Some(1), "{doc}");
    let lagging = doc["lagging"].as_array().cloned().unwrap_or_default();
    assert!(
        lagging
            .iter()
            .any(|l| l["id"] == "web-1" && l["behind"].as_u64() > Some(0)),
        "{doc}"
    );
    r.shutdown().await;
    tc.shutdown().await;
    Ok(())
}
