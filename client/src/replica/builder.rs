//! [`ReplicaBuilder`]: settings, the cache load and the first bootstrap.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tokio::sync::{broadcast, watch};
use tracing::{info, instrument, warn};

use super::{cache, sync, tasks, Health, Replica, Shared};
use crate::client::Client;
use crate::error::{Error, Result};
use crate::tls::TlsOptions;

/// Default for [`ReplicaBuilder::persist_interval`].
const DEFAULT_PERSIST_INTERVAL: Duration = Duration::from_millis(200);
/// Default for [`ReplicaBuilder::report_interval`].
const DEFAULT_REPORT_INTERVAL: Duration = Duration::from_secs(5);
/// Reports are never sent more often than this, however fast revisions move.
const DEFAULT_MIN_REPORT_GAP: Duration = Duration::from_secs(1);
/// Default for [`ReplicaBuilder::progress_interval`].
const DEFAULT_PROGRESS_INTERVAL: Duration = Duration::from_secs(1);
/// Default for [`ReplicaBuilder::initial_sync_timeout`].
const DEFAULT_INITIAL_SYNC_TIMEOUT: Duration = Duration::from_secs(10);
/// Subscribers of [`Replica::updates`] may fall this far behind before they
/// get `Lagged`.
const UPDATES_CAPACITY: usize = 1024;

/// Configures and starts a [`Replica`].
#[derive(Debug, Clone)]
pub struct ReplicaBuilder {
    endpoints: Vec<String>,
    prefix: String,
    cache_dir: Option<PathBuf>,
    id: Option<String>,
    persist_interval: Duration,
    report_interval: Duration,
    min_report_gap: Duration,
    progress_interval: Duration,
    initial_sync_timeout: Duration,
    request_timeout: Duration,
    connect_timeout: Duration,
    backoff: (Duration, Duration),
    tls: TlsOptions,
    token: Option<crate::client::BearerToken>,
    auto_sync: Option<Duration>,
    in_order: bool,
    /// A planted bug (test only, see `unsafe_skip_first_change`); always
    /// false unless the `planted-bugs` feature is on and a test sets it.
    planted_skip_first_change: bool,
}

impl ReplicaBuilder {
    /// A builder replicating the whole key space (set [`prefix`](Self::prefix)).
    /// The replica starts at one of `endpoints` at random, so replicas
    /// given the same list spread over the nodes (see
    /// [`endpoints_in_order`](Self::endpoints_in_order)).
    pub fn new(endpoints: Vec<String>) -> Self {
        Self {
            endpoints,
            prefix: String::new(),
            cache_dir: None,
            id: None,
            persist_interval: DEFAULT_PERSIST_INTERVAL,
            report_interval: DEFAULT_REPORT_INTERVAL,
            min_report_gap: DEFAULT_MIN_REPORT_GAP,
            progress_interval: DEFAULT_PROGRESS_INTERVAL,
            initial_sync_timeout: DEFAULT_INITIAL_SYNC_TIMEOUT,
            request_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(1),
            token: None,
            auto_sync: None,
            in_order: false,
            backoff: (Duration::from_millis(50), Duration::from_secs(2)),
            tls: TlsOptions::default(),
            planted_skip_first_change: false,
        }
    }

    /// TEST ONLY (feature `planted-bugs`): plants a real replica bug, so that
    /// a checker can be shown to catch it. The replica drops the first change
    /// of every watch stream it opens (the first connection and every
    /// reconnection), as if the node repeated the revision it resumes after:
    /// the revision moves on, but that revision's changes are never applied.
    #[cfg(feature = "planted-bugs")]
    pub fn unsafe_skip_first_change(mut self, on: bool) -> Self {
        self.planted_skip_first_change = on;
        self
    }

    /// TLS: the CA `https://` endpoints must chain to, and an optional
    /// client certificate (see [`TlsOptions`]).
    pub fn tls(mut self, tls: TlsOptions) -> Self {
        self.tls = tls;
        self
    }

    /// Trust `https://` endpoints whose certificate chains to the CA in this
    /// PEM file.
    pub fn ca_file(mut self, path: impl AsRef<std::path::Path>) -> Self {
        self.tls = self.tls.ca_file(path);
        self
    }

    /// The prefix to replicate (`/services/api/`).
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Where the last-known-good copy is kept. Without one, a replica that
    /// starts while the cluster is down cannot serve (start fails after
    /// [`initial_sync_timeout`](Self::initial_sync_timeout)).
    pub fn cache_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cache_dir = Some(dir.into());
        self
    }

    /// The id reported to the cluster (default: `replica-<pid>-<random>`).
    /// Use something stable per process, such as host and service name.
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// The cache is written at most this often (the latest state always ends
    /// up on disk). Default 200 ms.
    pub fn persist_interval(mut self, every: Duration) -> Self {
        self.persist_interval = every;
        self
    }

    /// The applied revision is reported to the cluster at least this often,
    /// and on change (at most once a second). Default 5 s.
    pub fn report_interval(mut self, every: Duration) -> Self {
        self.report_interval = every;
        self
    }

    /// How often an idle cluster confirms the replica is current (a progress
    /// bookmark); a stream silent for 2.5 of these is reconnected elsewhere
    /// (a node cut off from its leader stops sending them), and one silent
    /// for 2 reports `connected: false`.
    /// Default 1 s.
    pub fn progress_interval(mut self, every: Duration) -> Self {
        self.progress_interval = every;
        self
    }

    /// Without a usable cache, how long [`start`](Self::start) tries to read
    /// the prefix from the cluster before failing. Default 10 s.
    pub fn initial_sync_timeout(mut self, timeout: Duration) -> Self {
        self.initial_sync_timeout = timeout;
        self
    }

    /// Per-request timeout of bootstrap reads and reports. Default 5 s.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Start at the first endpoint given, then the next ones in order,
    /// instead of at a random one: for a replica that should follow one node
    /// while it can (the one in its own zone, say). Off by default, so that
    /// a fleet given the same list spreads over the nodes.
    pub fn endpoints_in_order(mut self, in_order: bool) -> Self {
        self.in_order = in_order;
        self
    }

    /// Reconnect backoff: jittered, from `initial` doubling up to `max`, after
    /// every endpoint failed once. Default 50 ms to 2 s.
    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.backoff = (initial, max);
        self
    }

    /// Sends `token` as a bearer token (a cluster with auth on needs one; a
    /// `reader` token of the replica's prefix is enough).
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(crate::client::BearerToken::new(token));
        self
    }

    /// Keeps the endpoints in step with the cluster's membership: about
    /// every `every` (jittered by ±10 %) the replica asks a node for the
    /// voters' client addresses (`GET /v1/endpoints`, answered from that
    /// node's own state, without a round trip to the leader) and follows
    /// them, so a replica started with a few seed addresses keeps finding
    /// the cluster after nodes are added, replaced or removed. Off by
    /// default; at least one second. A failed sync is logged and the
    /// endpoints stay as they were. Any token may sync.
    pub fn auto_sync_interval(mut self, every: Duration) -> Self {
        self.auto_sync = Some(every);
        self
    }

    /// Starts the replica.
    ///
    /// With a cache file for this prefix in the cache directory, it is loaded
    /// and the replica serves it at once (flagged `serving_from_disk`) while
    /// it connects in the background — even if no node is reachable. Without
    /// one, the prefix is read from the cluster first (linearizable, else
    /// serializable), for up to [`initial_sync_timeout`](Self::initial_sync_timeout).
    #[instrument(skip(self), fields(prefix = %self.prefix))]
    pub async fn start(self) -> Result<Replica> {
        if self.progress_interval < Duration::from_millis(100) || self.persist_interval.is_zero() {
            return Err(Error::InvalidArgument(
                "progress_interval must be at least 100ms and persist_interval above zero"
                    .to_owned(),
            ));
        }
        let id = self.id.clone().unwrap_or_else(default_id);
        if id.is_empty() {
            return Err(Error::InvalidArgument("empty replica id".to_owned()));
        }
        let mut builder = Client::builder(self.endpoints.clone())
            .request_timeout(self.request_timeout)
            .connect_timeout(self.connect_timeout)
            .backoff(self.backoff.0, self.backoff.1)
            .max_attempts(1)
            .tls(self.tls.clone());
        if let Some(token) = &self.token {
            builder = builder.bearer_token(token.clone());
        }
        if let Some(every) = self.auto_sync {
            builder = builder.auto_sync_interval(every);
            builder.auto_sync_local = true;
        }
        let client = builder.build()?;
        let transport = client.inner.clone();
        // Replicas are usually given the same list, in the same order: each
        // starts at one of the nodes at random (its bootstrap, then its
        // watch), so a fleet spreads its bootstraps and watch streams over
        // the nodes instead of putting all of them on the first one listed.
        let first = if self.in_order {
            0
        } else {
            rand::random::<usize>() % transport.endpoints.len().max(1)
        };
        transport.endpoints.prefer(first);
        let loaded = match &self.cache_dir {
            None => None,
            Some(dir) => match cache::load(dir, &self.prefix) {
                Ok(s) => s,
                Err(e) => {
                    warn!(error = %e, "replica cache unusable, reading from the cluster");
                    None
                }
            },
        };
        let from_disk = loaded.is_some();
        let (snapshot, contact) = match loaded {
            Some(s) => {
                info!(
                    revision = s.revision,
                    keys = s.len(),
                    "serving the on-disk copy"
                );
                (s, None)
            }
            None => {
                let deadline = Instant::now() + self.initial_sync_timeout;
                let mut failures = 0u32;
                loop {
                    let start = first + failures as usize;
                    match sync::bootstrap(&transport, &self.prefix, 0, start).await {
                        Ok(s) => break (s, Some(Instant::now())),
                        Err(f) if f.fatal || Instant::now() >= deadline => return Err(f.error),
                        Err(f) => {
                            failures += 1;
                            // One last try at the deadline rather than a
                            // sleep past it.
                            let left = deadline.saturating_duration_since(Instant::now());
                            tokio::time::sleep(f.pause(&transport, failures).min(left)).await;
                        }
                    }
                }
            }
        };
        let revision = snapshot.revision;
        let (revision_tx, _) = watch::channel(revision);
        let (updates, _) = broadcast::channel(UPDATES_CAPACITY);
        let shared = Arc::new(Shared {
            id,
            prefix: self.prefix.clone(),
            state: ArcSwap::from_pointee(snapshot),
            revision_tx,
            health: Mutex::new(Health {
                endpoint: None,
                last_contact: contact,
                serving_from_disk: from_disk,
                last_error: None,
            }),
            updates,
            persist_lock: Mutex::new(()),
            contact_window: self.progress_interval * 2,
        });
        let sync_config = sync::SyncConfig {
            progress_interval: self.progress_interval,
            // A node out of contact with its leader stops sending
            // bookmarks: this much silence means "stale, move on".
            idle_timeout: self.progress_interval * 5 / 2,
            planted_skip_first_change: self.planted_skip_first_change,
        };
        let mut handles = vec![tokio::spawn(sync::run(
            shared.clone(),
            transport.clone(),
            sync_config,
        ))];
        if let Some(dir) = &self.cache_dir {
            let written = if from_disk { revision } else { 0 };
            handles.push(tokio::spawn(tasks::persist_loop(
                shared.clone(),
                dir.clone(),
                self.persist_interval,
                written,
            )));
        }
        handles.push(tokio::spawn(tasks::report_loop(
            shared.clone(),
            transport.clone(),
            self.report_interval,
            self.min_report_gap.min(self.report_interval),
        )));
        Ok(Replica {
            shared,
            tasks: handles,
            cache_dir: self.cache_dir,
            transport,
        })
    }
}

fn default_id() -> String {
    format!(
        "replica-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    )
}
