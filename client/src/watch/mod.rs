//! [`Client::watch`]: a change stream that survives node failures.
//!
//! One background task per watch (the *engine*) holds the SSE connection. It
//! remembers the last revision it delivered and, whenever the connection ends
//! (node killed, network error, idle timeout), reconnects to the next endpoint
//! with `Last-Event-ID: <last>` after a jittered backoff. Anything at or below
//! the last delivered revision is dropped, so a node that replays (or a
//! lagging node) can never cause a duplicate or a step backwards; a lagging
//! node's stream simply starts once it reaches `last + 1`.
//!
//! - `mod.rs`: the public types ([`WatchOptions`], [`WatchEvent`], [`Event`],
//!   [`WatchStream`]) and [`Client::watch`].
//! - `engine.rs`: the reconnect/resume loop, shared with the replica.
//! - `decode.rs`: one SSE message to a [`WatchEvent`] (or a reason to stop or
//!   reconnect).
//! - `sse.rs`: the incremental Server-Sent Events parser (bytes to messages).

mod decode;
mod engine;
mod sse;

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::instrument;

use crate::client::Client;
use crate::error::Result;
use crate::types::KeyValue;

pub(crate) use engine::{backoff, run_engine, EngineItem, WatchSpec};

/// Default idle limit of a watch connection: the server sends a keepalive at
/// least every 30 s, so a silent minute means the connection is dead.
const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(65);
/// Events buffered between the engine and the reader before the engine waits.
const CHANNEL_CAPACITY: usize = 256;

/// Options for [`Client::watch`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WatchOptions {
    /// Watch every key starting with the given key.
    pub prefix: bool,
    /// First revision to deliver (inclusive). `None` (or 0): changes after the
    /// cluster's current revision, as read (linearizably when possible) when
    /// the watch starts.
    pub start_revision: Option<u64>,
    /// Include each key's previous value in [`Event::prev_kv`].
    pub prev_kv: bool,
    /// Ask for [`WatchEvent::Progress`] bookmarks while the watched keys are idle.
    pub progress_notify: bool,
}

/// What happened to a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// The key was created or overwritten.
    Put,
    /// The key was deleted ([`Event::kv`] holds the key, an empty value and
    /// `mod_revision` = the deletion revision).
    Delete,
}

/// One key's change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Put or delete.
    pub kind: EventKind,
    /// The key after the change.
    pub kv: KeyValue,
    /// The key before the change, when asked for with `prev_kv` and it existed.
    pub prev_kv: Option<KeyValue>,
}

/// One item of a watch stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// Every watched change of one revision (a transaction is one revision,
    /// never split across items).
    Change {
        /// The revision.
        revision: u64,
        /// The changes, in the order they were applied.
        events: Vec<Event>,
    },
    /// A bookmark: every watched change up to `revision` has been delivered.
    Progress {
        /// The revision.
        revision: u64,
    },
}

impl WatchEvent {
    /// The revision of the item.
    pub fn revision(&self) -> u64 {
        match self {
            WatchEvent::Change { revision, .. } | WatchEvent::Progress { revision } => *revision,
        }
    }
}

/// The stream returned by [`Client::watch`]: `Ok` items in revision order, each
/// revision once. It ends after an `Err` item:
/// [`Error::Compacted`](crate::Error::Compacted) (re-read and watch again), or
/// a request the server refuses (`Error::Api` 4xx, such as an invalid key). Connection failures are not items: the stream reconnects by
/// itself. Dropping the stream closes the connection.
#[derive(Debug)]
pub struct WatchStream {
    rx: mpsc::Receiver<EngineItem>,
    task: JoinHandle<()>,
}

impl Drop for WatchStream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Stream for WatchStream {
    type Item = Result<WatchEvent>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            match self.rx.poll_recv(cx) {
                Poll::Ready(Some(EngineItem::Event(e))) => return Poll::Ready(Some(Ok(e))),
                Poll::Ready(Some(EngineItem::Fatal(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(Some(_)) => continue,
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl Client {
    /// Watches a key (or, with `options.prefix`, every key under a prefix).
    ///
    /// The stream reconnects by itself after any disconnect, to the next
    /// endpoint after a jittered backoff, resuming right after the last
    /// revision it delivered: no gaps, no duplicates, never backwards. It ends
    /// with [`Error::Compacted`](crate::Error::Compacted) when the history it
    /// needs is gone.
    ///
    /// Must be called inside a Tokio runtime (the connection runs on a task).
    ///
    /// ```no_run
    /// use futures::StreamExt as _;
    /// use ballast_client::{Client, Error, WatchEvent, WatchOptions};
    ///
    /// # async fn run() -> Result<(), Error> {
    /// let client = Client::new(vec!["127.0.0.1:2379".to_owned()])?;
    /// let options = WatchOptions { prefix: true, ..WatchOptions::default() };
    /// let mut stream = client.watch("/services/api/", options);
    /// while let Some(item) = stream.next().await {
    ///     match item {
    ///         Ok(WatchEvent::Change { revision, events }) => {
    ///             for e in events {
    ///                 println!("{revision} {:?} {}", e.kind, e.kv.key);
    ///             }
    ///         }
    ///         Ok(WatchEvent::Progress { .. }) => {}
    ///         Err(Error::Compacted { .. }) => break, // re-read, then watch again
    ///         Err(e) => return Err(e),
    ///     }
    /// }
    /// # Ok(())
    /// # }
    /// ```
    #[instrument(skip(self), level = "debug")]
    pub fn watch(&self, key: &str, options: WatchOptions) -> WatchStream {
        let spec = WatchSpec {
            key: key.to_owned(),
            prefix: options.prefix,
            prev_kv: options.prev_kv,
            progress: options.progress_notify.then_some(None),
            resume_after: options.start_revision.filter(|r| *r > 0).map(|r| r - 1),
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            data_plane: false,
        };
        let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
        let task = tokio::spawn(run_engine(self.inner.clone(), spec, tx));
        WatchStream { rx, task }
    }
}
