//! A data-plane process for tests that run `ballastd` as separate processes
//! (in network namespaces, say): it runs one `ballast_client::Replica` for a
//! prefix and prints the replica's state as one JSON line every
//! `--print-ms`, until it is killed.
//!
//! ```text
//! replica-probe --endpoints http://node-1:2379,http://node-2:2379 \
//!     --prefix /app/ --cache-dir /tmp/r --id web-1
//! {"revision":12,"connected":true,"endpoint":"http://node-2:2379","serving_from_disk":false,"kvs":{"/app/a":"1"}}
//! ```

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use ballast_client::Replica;
use serde_json::json;

struct Args {
    endpoints: Vec<String>,
    prefix: String,
    cache_dir: PathBuf,
    id: String,
    print_every: Duration,
}

fn parse() -> Result<Args> {
    let mut endpoints = None;
    let mut prefix = None;
    let mut cache_dir = None;
    let mut id = None;
    let mut print_ms = 200u64;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--endpoints" => {
                endpoints = Some(value()?.split(',').map(str::to_owned).collect::<Vec<_>>())
            }
            "--prefix" => prefix = Some(value()?),
            "--cache-dir" => cache_dir = Some(PathBuf::from(value()?)),
            "--id" => id = Some(value()?),
            "--print-ms" => print_ms = value()?.parse().context("--print-ms")?,
            other => bail!("unknown argument {other:?}"),
        }
    }
    Ok(Args {
        endpoints: endpoints.context("--endpoints is required")?,
        prefix: prefix.context("--prefix is required")?,
        cache_dir: cache_dir.context("--cache-dir is required")?,
        id: id.context("--id is required")?,
        print_every: Duration::from_millis(print_ms.max(10)),
    })
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let args = parse()?;
    let replica = Replica::builder(args.endpoints)
        .prefix(args.prefix.clone())
        .cache_dir(args.cache_dir)
        .id(args.id)
        .progress_interval(Duration::from_millis(200))
        .report_interval(Duration::from_millis(300))
        .backoff(Duration::from_millis(20), Duration::from_millis(300))
        .initial_sync_timeout(Duration::from_secs(20))
        .request_timeout(Duration::from_secs(2))
        .start()
        .await?;
    let mut stdout = std::io::stdout();
    loop {
        let status = replica.status();
        let snapshot = replica.snapshot();
        let kvs: BTreeMap<&str, String> = snapshot
            .range(&args.prefix)
            .map(|kv| {
                (
                    kv.key.as_str(),
                    String::from_utf8_lossy(&kv.value).into_owned(),
                )
            })
            .collect();
        let line = json!({
            "revision": snapshot.revision(),
            "connected": status.connected,
            "endpoint": status.endpoint,
            "serving_from_disk": status.serving_from_disk,
            "last_error": status.last_error,
            "kvs": kvs,
        });
        // The reader went away: nothing left to report to.
        if writeln!(stdout, "{line}")
            .and_then(|()| stdout.flush())
            .is_err()
        {
            return Ok(());
        }
        tokio::time::sleep(args.print_every).await;
    }
}
