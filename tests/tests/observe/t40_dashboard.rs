use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use ballast_client::Replica;
use ballast_tests::TestCluster;
use serde_json::json;
use tokio::time::Instant;
use tracing::info;

/// Debian's `chromium` (or the one `BALLAST_CHROMIUM` names); `None` when
/// there is none (`scripts/chromium.sh` installs it).
fn chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("BALLAST_CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| ["chromium", "chromium-browser"].map(|n| dir.join(n)))
        .find(|p| p.is_file())
}

/// Where test artefacts go: `<target>/test-artefacts/`, next to the build.
fn artefact_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    // <target>/<profile>/deps/<test binary>
    let target = exe
        .ancestors()
        .nth(3)
        .context("unexpected test binary path")?;
    let dir = target.join("test-artefacts");
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Runs headless chromium on `url` with `args`; returns its stdout. The
/// browser (and its profile directory) never outlive the call.
async fn headless(browser: &Path, profile: &Path, url: &str, args: &[String]) -> Result<String> {
    let mut cmd = tokio::process::Command::new(browser);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-extensions",
        "--disable-background-networking",
        "--window-size=1280,900",
        // Let the page run its timers (it polls every 500 ms here).
        "--virtual-time-budget=8000",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .args(args)
    .arg(url)
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .kill_on_drop(true);
    let child = cmd.spawn().context("starting chromium")?;
    let out = tokio::time::timeout(Duration::from_secs(90), child.wait_with_output())
        .await
        .context("chromium did not finish within 90 s")??;
    if !out.status.success() {
        bail!(
            "chromium failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The `<tr data-member="id">...</tr>` of the members table in `dom`.
fn member_row(dom: &str, id: u64) -> Option<&str> {
    let start = dom.find(&format!("<tr data-member=\"{id}\""))?;
    let len = dom[start..].find("</tr>")?;
    Some(&dom[start..start + len])
}

async fn replica(tc: &TestCluster, dir: &Path, id: &str) -> Result<Replica> {
    let endpoints = tc.ids().iter().map(|n| tc.endpoint(*n)).collect::<Vec<_>>();
    Ok(Replica::builder(endpoints)
        .prefix("/web/")
        .cache_dir(dir)
        .id(id)
        .progress_interval(Duration::from_millis(200))
        .report_interval(Duration::from_millis(300))
        .backoff(Duration::from_millis(20), Duration::from_millis(300))
        .initial_sync_timeout(Duration::from_secs(15))
        .request_timeout(Duration::from_secs(2))
        .start()
        .await?)
}

/// The dashboard, in a real headless browser against a cluster with
/// replicas reporting: after it has polled, the page lists every member
/// and every replica; a screenshot is kept as a test artefact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_shows_members_and_replicas_in_a_headless_browser() -> Result<()> {
    let Some(browser) = chromium() else {
        ballast_tests::skipped(
            "dashboard_shows_members_and_replicas_in_a_headless_browser: no chromium \
             on PATH (run scripts/chromium.sh, or set BALLAST_CHROMIUM)",
        );
        return Ok(());
    };
    let tc = TestCluster::start(3).await?;
    let leader = tc.wait_leader(Duration::from_secs(10)).await?;
    let mut rev = 0;
    for i in 0..20 {
        rev = tc
            .put(leader, &format!("web/k{}", i % 5), &format!("v{i}"))
            .await?;
    }
    let dirs = [tempfile::tempdir()?, tempfile::tempdir()?];
    let web1 = replica(&tc, dirs[0].path(), "web-1").await?;
    let web2 = replica(&tc, dirs[1].path(), "web-2").await?;
    web1.wait_for_revision(rev, Duration::from_secs(20)).await?;
    web2.wait_for_revision(rev, Duration::from_secs(20)).await?;
    // A replica stuck behind, so the page has lag to show.
    let r = tc
        .http()
        .post(format!("{}/v1/replicas/report", tc.endpoint(leader)))
        .json(&json!({ "id": "batch-7", "prefix": "/web/", "revision": rev - 12 }))
        .send()
        .await?;
    assert_eq!(r.status(), 200);

    info!("--- wait until the status endpoint lists the three replicas");
    let viewer = tc.others(leader)[0];
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = tc.status(viewer).await?;
        if s["data_plane"]["replicas_reporting"] == 3 {
            break;
        }
        if Instant::now() > deadline {
            bail!("replicas did not report: {}", s["data_plane"]);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    info!("--- open watch streams: the n-th member gets n of them, beside the replicas'");
    let mut streams = Vec::new();
    for (n, id) in tc.ids().into_iter().enumerate() {
        for _ in 0..=n {
            let r = tc
                .stream_http()
                .get(format!("{}/v1/watch/other/?prefix=true", tc.endpoint(id)))
                .send()
                .await?;
            assert_eq!(r.status(), 200);
            streams.push(r);
        }
    }
    // What each member counts itself, asked directly (no fan-out).
    let mut watch_streams = Vec::new();
    for (n, id) in tc.ids().into_iter().enumerate() {
        let s: serde_json::Value = tc
            .http()
            .get(format!("{}/v1/status?data_plane=false", tc.endpoint(id)))
            .send()
            .await?
            .json()
            .await?;
        let count = s["watch_streams"].as_u64().context("watch_streams")?;
        assert!(count > n as u64, "node {id} counts {count} streams");
        watch_streams.push((id, count));
    }

    info!("--- load /ui on a follower in headless chromium");
    let url = format!("{}/ui?interval=500", tc.endpoint(viewer));
    let profile = tempfile::tempdir()?;
    let dom = headless(&browser, profile.path(), &url, &["--dump-dom".into()]).await?;
    assert!(dom.contains("data-polls="), "the page never polled:\n{dom}");
    for id in tc.ids() {
        assert!(
            dom.contains(&format!("data-member=\"{id}\"")),
            "member {id} missing:\n{dom}"
        );
    }
    for id in ["web-1", "web-2", "batch-7"] {
        assert!(
            dom.contains(&format!("data-replica=\"{id}\"")),
            "replica {id} missing:\n{dom}"
        );
    }
    assert!(dom.contains(">leader<"), "no leader role shown:\n{dom}");
    assert!(dom.contains(">healthy<"), "no member health shown:\n{dom}");
    assert!(
        dom.contains("2 of 3 replicas"),
        "no rollout convergence:\n{dom}"
    );
    for (id, count) in &watch_streams {
        let row = member_row(&dom, *id).context("member row")?;
        assert!(
            row.contains(&format!("data-watch-streams=\"{count}\"")),
            "member {id} should show {count} watch streams: {row}"
        );
    }
    assert!(
        !dom.contains("data-removed="),
        "a member shown removed:\n{dom}"
    );
    drop(streams);

    let shot = artefact_dir()?.join("dashboard.png");
    let _ = std::fs::remove_file(&shot);
    let profile = tempfile::tempdir()?;
    headless(
        &browser,
        profile.path(),
        &url,
        &[format!("--screenshot={}", shot.display())],
    )
    .await?;
    let png =
        std::fs::read(&shot).with_context(|| format!("no screenshot at {}", shot.display()))?;
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    info!(path = %shot.display(), "dashboard screenshot saved");
    eprintln!("dashboard screenshot: {}", shot.display());
    drop(web1);
    drop(web2);
    tc.shutdown().await;
    Ok(())
}

/// A node removed from the cluster still serves `/ui` and the status it
/// polls, and the page says the node is no longer a member (over HTTP
/// always; in headless chromium when there is one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_on_a_removed_node_says_it_is_no_longer_a_member() -> Result<()> {
    let tc = TestCluster::start(3).await?;
    let leader = tc.wait_leader(Duration::from_secs(10)).await?;
    let gone = tc.others(leader)[0];

    info!(gone, "--- remove a follower");
    let (status, doc) = tc
        .admin(
            leader,
            reqwest::Method::DELETE,
            &format!("/v1/members/{gone}"),
            None,
        )
        .await?;
    assert_eq!(status, 200, "{doc}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while tc.node(gone)?.removed().is_none() {
        if Instant::now() > deadline {
            bail!("node {gone} never learnt it was removed");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    info!("--- its /ui and /v1/status answer, and the status says it was removed");
    let page = tc
        .http()
        .get(format!("{}/ui", tc.endpoint(gone)))
        .send()
        .await?;
    assert_eq!(page.status(), 200);
    let html = page.text().await?;
    assert!(
        html.contains("id=\"removed\""),
        "no removed banner in the page"
    );
    let s = tc.status(gone).await?;
    assert_eq!(s["raft"]["state"], "Removed", "{s}");
    let reason = s["removed"]
        .as_str()
        .context("no removal reason in the status")?;
    assert!(reason.contains("removed"), "{reason}");
    // What the page shows for members comes from the status alone there.
    let r = tc
        .http()
        .get(format!("{}/v1/members", tc.endpoint(gone)))
        .send()
        .await?;
    assert_eq!(r.status(), 410);
    // The members still serve theirs, with no removal.
    let s = tc.status(leader).await?;
    assert!(s.get("removed").is_none(), "{s}");

    let Some(browser) = chromium() else {
        ballast_tests::skipped(
            "the browser part of dashboard_on_a_removed_node_says_it_is_no_longer_a_member: \
             no chromium on PATH (run scripts/chromium.sh, or set BALLAST_CHROMIUM)",
        );
        tc.shutdown().await;
        return Ok(());
    };
    info!("--- the page, in headless chromium, shows the node removed");
    let url = format!("{}/ui?interval=500", tc.endpoint(gone));
    let profile = tempfile::tempdir()?;
    let dom = headless(&browser, profile.path(), &url, &["--dump-dom".into()]).await?;
    assert!(dom.contains("data-polls="), "the page never polled:\n{dom}");
    assert!(
        dom.contains("data-removed=\"true\""),
        "the page does not show the node removed:\n{dom}"
    );
    let banner = dom
        .find("id=\"removed\"")
        .map(|i| &dom[i.saturating_sub(10)..(i + 40).min(dom.len())])
        .context("no banner")?;
    assert!(!banner.contains("hidden"), "the banner is hidden: {banner}");
    assert!(dom.contains("no longer a member"), "{dom}");
    assert!(
        member_row(&dom, gone).is_some_and(|r| r.contains(">removed<")),
        "the node's row does not say removed:\n{dom}"
    );
    tc.shutdown().await;
    Ok(())
}
