//! Turning auth on: the bootstrap entry of a node started with `--auth`.
//!
//! Whether auth is on is replicated state, never a node's own flag: a node
//! started with `--auth` waits until it sees the cluster's current state
//! (a linearizable barrier), and if auth is still off it writes a new admin
//! token to its token file (mode 0600) and proposes the bootstrap entry
//! ([`AuthCommand::Enable`]) carrying only the token's hash. The first such
//! entry to commit turns auth on for every node; a node whose entry lost
//! (another node's committed first) removes its file. A retried entry after
//! an unknown outcome carries the same token, so it either finds its own
//! token committed or loses the same way.
//!
//! The file is written before the entry is proposed: once auth is on, the
//! token that turned it on is always on disk somewhere. The token itself is
//! never logged; the log names the file and the token's id.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::kv::auth::generate_token;
use crate::kv::sessions::wall_clock_ms;
use crate::kv::{AuthCommand, AuthOutcome, Command, CommandResponse};
use crate::raft::node::Node;
use crate::stop::stopped;

/// Pause between attempts while the cluster has no leader or the entry
/// did not commit.
const RETRY: Duration = Duration::from_millis(250);

fn enabled(node: &Node) -> bool {
    node.auth().read().map(|t| t.enabled()).unwrap_or(false)
}

/// Writes `secret` to `path` with mode 0600, through a temporary file that
/// is synced and renamed.
pub fn write_token_file(path: &Path, secret: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&tmp)?;
    #[cfg(unix)]
    {
        // A leftover file from an earlier attempt keeps its mode: set it.
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    file.write_all(secret.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Waits `RETRY`; false when the node stops meanwhile.
async fn pause(stop: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = stopped(stop) => false,
        _ = tokio::time::sleep(RETRY) => true,
    }
}

/// Runs the bootstrap of a node started with `--auth` (see the module docs),
/// writing the initial admin token to `path`.
pub async fn run(node: Arc<Node>, path: PathBuf, mut stop: watch::Receiver<bool>) {
    // See the cluster's current state first: auth may be on already.
    loop {
        if enabled(&node) {
            return;
        }
        if node.linearizable_barrier().await.is_ok() {
            break;
        }
        if !pause(&mut stop).await {
            return;
        }
    }
    if enabled(&node) {
        return;
    }
    let new = generate_token("admin", wall_clock_ms(), None);
    if let Err(e) = write_token_file(&path, &new.secret) {
        tracing::error!(
            path = %path.display(),
            error = %e,
            "cannot write the initial admin token file; auth stays off"
        );
        return;
    }
    let id = new.record.id.clone();
    let command = Command::Auth(AuthCommand::Enable { admin: new.record });
    loop {
        match node.write(command.clone()).await {
            Ok(CommandResponse::Auth(AuthOutcome::Done)) => {
                tracing::info!(
                    path = %path.display(),
                    token = %id,
                    "auth is on; the initial admin token is in the token file"
                );
                return;
            }
            Ok(CommandResponse::Auth(AuthOutcome::Refused(_))) => {
                // Another node's bootstrap entry committed first.
                let _ = std::fs::remove_file(&path);
                tracing::info!("auth was turned on by another node's bootstrap entry");
                return;
            }
            Ok(other) => {
                tracing::error!(response = ?other, "unexpected answer to the auth bootstrap entry");
                return;
            }
            Err(e) => {
                tracing::info!(error = %e, "auth bootstrap entry not committed yet; retrying");
            }
        }
        if !pause(&mut stop).await {
            return;
        }
    }
}
