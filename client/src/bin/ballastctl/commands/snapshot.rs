//! `ballastctl snapshot save FILE` and `ballastctl snapshot status FILE`.
//!
//! `save` downloads into `FILE.part`, verifies the bytes as they arrive and
//! once more as they are on disk, syncs, and renames to `FILE` (then syncs
//! the directory). On any failure `FILE.part` is removed and `FILE` does not
//! exist. An existing `FILE` is never overwritten.

use std::path::{Path, PathBuf};

use ballast_client::{verify_snapshot_file, Client, SnapshotInfo};
use serde_json::json;
use tokio::io::AsyncWriteExt as _;

use super::{Ctx, Outcome};
use crate::cli::{OutputFormat, SnapshotCommand, SnapshotSaveArgs, SnapshotStatusArgs};
use crate::exit::CliError;
use crate::output::{json_bytes, Table};
use crate::progress::Transfer;

/// Write buffer of the downloaded file.
const WRITE_BUFFER_BYTES: usize = 1 << 20;

/// Runs `snapshot save` or `snapshot status`.
pub async fn run(ctx: &Ctx, command: SnapshotCommand) -> Result<Outcome, CliError> {
    match command {
        SnapshotCommand::Save(args) => save(ctx, args).await,
        SnapshotCommand::Status(args) => {
            let format = if args.json {
                OutputFormat::Json
            } else {
                ctx.format()
            };
            status(format, args).await
        }
    }
}

fn local(path: &Path, e: std::io::Error) -> CliError {
    CliError::Snapshot(format!("{}: {e}", path.display()))
}

/// `FILE.part` next to `FILE`.
fn part_path(file: &Path) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(".part");
    PathBuf::from(name)
}

async fn save(ctx: &Ctx, args: SnapshotSaveArgs) -> Result<Outcome, CliError> {
    let file = args.file;
    if tokio::fs::symlink_metadata(&file).await.is_ok() {
        return Err(CliError::Usage(format!(
            "{} already exists; choose a new file name",
            file.display()
        )));
    }
    let client = ctx.client()?;
    let part = part_path(&file);
    let saved = match download(&client, &part).await {
        Ok(info) => finish(&part, &file).await.map(|()| info),
        Err(e) => Err(e),
    };
    match saved {
        Ok(info) => Ok(Outcome::ok(render_saved(ctx.format(), &file, &info))),
        Err(e) => {
            let _ = tokio::fs::remove_file(&part).await;
            Err(e)
        }
    }
}

/// Downloads into `part`, synced; verifies what is on disk.
async fn download(client: &Client, part: &Path) -> Result<SnapshotInfo, CliError> {
    let out = tokio::fs::File::create(part)
        .await
        .map_err(|e| local(part, e))?;
    let mut out = tokio::io::BufWriter::with_capacity(WRITE_BUFFER_BYTES, out);
    let mut progress = Transfer::new("snapshot");
    let downloaded = client
        .snapshot(&mut out, |received, total| progress.update(received, total))
        .await;
    progress.finish();
    let info = downloaded?;
    out.flush().await.map_err(|e| local(part, e))?;
    out.into_inner()
        .sync_all()
        .await
        .map_err(|e| local(part, e))?;
    let path = part.to_path_buf();
    let on_disk = tokio::task::spawn_blocking(move || verify_snapshot_file(&path))
        .await
        .map_err(|e| CliError::Snapshot(format!("verifying {}: {e}", part.display())))??;
    if on_disk != info {
        return Err(CliError::Snapshot(format!(
            "{} differs from what was downloaded (checksum {} on disk, {} received)",
            part.display(),
            on_disk.checksum,
            info.checksum
        )));
    }
    Ok(info)
}

/// Renames `part` to `file` and syncs the directory.
async fn finish(part: &Path, file: &Path) -> Result<(), CliError> {
    tokio::fs::rename(part, file)
        .await
        .map_err(|e| local(file, e))?;
    let dir = match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let synced = async { tokio::fs::File::open(&dir).await?.sync_all().await }.await;
    if let Err(e) = synced {
        let _ = tokio::fs::remove_file(file).await;
        return Err(local(&dir, e));
    }
    Ok(())
}

async fn status(format: OutputFormat, args: SnapshotStatusArgs) -> Result<Outcome, CliError> {
    let path = args.file.clone();
    let info = tokio::task::spawn_blocking(move || verify_snapshot_file(&path))
        .await
        .map_err(|e| CliError::Snapshot(format!("verifying {}: {e}", args.file.display())))?
        .map_err(|e| CliError::Snapshot(format!("{}: {e}", args.file.display())))?;
    Ok(Outcome::ok(render_status(format, &args.file, &info)))
}

fn info_json(file: &Path, info: &SnapshotInfo) -> serde_json::Value {
    json!({
        "file": file.display().to_string(),
        "revision": info.revision,
        "compact_revision": info.compact_revision,
        "key_count": info.key_count,
        "size": info.size,
        "cluster_id": info.cluster_id,
        "node_id": info.node_id,
        "state_hash": info.state_hash,
        "checksum": info.checksum,
        "created_unix_secs": info.created_unix_secs,
        "format": info.format,
    })
}

/// Output of `snapshot save`.
pub fn render_saved(format: OutputFormat, file: &Path, info: &SnapshotInfo) -> Vec<u8> {
    match format {
        OutputFormat::Json => json_bytes(&info_json(file, info)),
        OutputFormat::Table => format!(
            "saved {}: revision {}, {} keys, {} bytes (node {}, checksum {})\n",
            file.display(),
            info.revision,
            info.key_count,
            info.size,
            info.node_id,
            info.checksum
        )
        .into_bytes(),
    }
}

/// Output of `snapshot status`.
pub fn render_status(format: OutputFormat, file: &Path, info: &SnapshotInfo) -> Vec<u8> {
    match format {
        OutputFormat::Json => json_bytes(&info_json(file, info)),
        OutputFormat::Table => {
            let mut t = Table::new(&[
                "REVISION",
                "COMPACT_REV",
                "KEYS",
                "SIZE",
                "CLUSTER_ID",
                "CHECKSUM",
            ]);
            t.row(vec![
                info.revision.to_string(),
                info.compact_revision.to_string(),
                info.key_count.to_string(),
                info.size.to_string(),
                info.cluster_id.clone(),
                info.checksum.clone(),
            ]);
            t.render().into_bytes()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> SnapshotInfo {
        SnapshotInfo {
            format: 1,
            cluster_id: "c1".into(),
            node_id: 2,
            revision: 40,
            compact_revision: 3,
            key_count: 17,
            state_hash: "h".into(),
            created_unix_secs: 5,
            size: 1234,
            checksum: "00ff".into(),
        }
    }

    #[test]
    fn renders() {
        let file = Path::new("b.snap");
        assert_eq!(
            String::from_utf8_lossy(&render_saved(OutputFormat::Table, file, &info())),
            "saved b.snap: revision 40, 17 keys, 1234 bytes (node 2, checksum 00ff)\n"
        );
        let table = String::from_utf8_lossy(&render_status(OutputFormat::Table, file, &info()))
            .into_owned();
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 2, "{table}");
        assert!(lines[0].starts_with("REVISION"), "{table}");
        assert!(lines[1].starts_with("40 "), "{table}");
        let doc: serde_json::Value =
            serde_json::from_slice(&render_status(OutputFormat::Json, file, &info()))
                .unwrap_or_default();
        assert_eq!(doc["key_count"], 17);
        assert_eq!(doc["file"], "b.snap");
    }

    #[test]
    fn the_part_file_sits_next_to_the_file() {
        assert_eq!(
            part_path(Path::new("/backups/b.snap")),
            PathBuf::from("/backups/b.snap.part")
        );
    }
}
