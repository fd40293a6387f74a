//! The recorded history: one JSON line per event, on one monotonic clock
//! shared by clients, nemeses and the fault proxies.

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::{Deserialize, Serialize};

/// Monotonic clock of a run: nanoseconds since the run started.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    start: Instant,
}

impl Clock {
    /// A clock starting now.
    pub fn new() -> Self {
        Self {
            start: Instant::now(),
        }
    }

    /// Nanoseconds since the start.
    pub fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

/// Kind of a history event, as in Jepsen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventType {
    /// The operation was sent.
    Invoke,
    /// It completed and took effect (or, for a read, returned this value).
    Ok,
    /// It definitely did not take effect.
    Fail,
    /// Its outcome is unknown (timeout, lost connection): it may or may not
    /// have taken effect.
    Info,
}

/// Operation function.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Func {
    /// Linearizable single-key read.
    Read,
    /// Unconditional put of a unique value.
    Write,
    /// Compare value, then put a unique value; the failure branch reads.
    Cas,
    /// Fault injected or healed (process `nemesis`).
    Nemesis,
}

/// What a read observed of a key (absent = key not found).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Observed {
    /// Value read.
    pub value: String,
    /// Writes since creation.
    pub version: u64,
    /// Revision of the write that produced `value`.
    pub mod_revision: u64,
    /// Revision that created the key.
    pub create_revision: u64,
}

/// One line of the history.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Event {
    /// Logical client process; a process whose operation ended `info` is
    /// retired and its client continues under a new process id.
    pub process: u64,
    /// invoke / ok / fail / info.
    #[serde(rename = "type")]
    pub kind: EventType,
    /// Operation function.
    pub f: Func,
    /// Key operated on (empty for nemesis events).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub key: String,
    /// Written value (write, cas) or expected value (cas, in `expected`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// For cas: the value compared against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected: Option<String>,
    /// For an ok read, or a failed cas (its failure branch reads): what was
    /// read; `None` with `found: false` means key not found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read: Option<Observed>,
    /// For an ok read: false when the key was not found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub found: Option<bool>,
    /// For an ok cas: whether the compare held.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub succeeded: Option<bool>,
    /// Revision in the response body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<u64>,
    /// Node the request was sent to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<u64>,
    /// Error or fault description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Monotonic timestamp, nanoseconds since the run started.
    pub time: u64,
}

impl Event {
    /// An event with only the mandatory fields set.
    pub fn new(process: u64, kind: EventType, f: Func, key: &str, time: u64) -> Self {
        Self {
            process,
            kind,
            f,
            key: key.to_string(),
            value: None,
            expected: None,
            read: None,
            found: None,
            succeeded: None,
            revision: None,
            node: None,
            error: None,
            time,
        }
    }
}

/// Shared, append-only recorder of a run's events.
#[derive(Clone)]
pub struct Recorder {
    clock: Clock,
    events: Arc<Mutex<Vec<Event>>>,
}

impl Recorder {
    /// A recorder on `clock`.
    pub fn new(clock: Clock) -> Self {
        Self {
            clock,
            events: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// The run's clock.
    pub fn clock(&self) -> Clock {
        self.clock
    }

    /// Appends an event, stamping it with the current time.
    pub fn record(&self, mut e: Event) {
        let mut events = self.events.lock().unwrap_or_else(|p| p.into_inner());
        // Stamp under the lock so the recorded order is the time order.
        e.time = self.clock.now();
        events.push(e);
    }

    /// Records a nemesis event (`invoke` on inject, `ok` on heal, `info` for
    /// proxy-level fault events, `fail` when an injection failed).
    pub fn nemesis(&self, kind: EventType, what: String) {
        let mut e = Event::new(0, kind, Func::Nemesis, "", 0);
        e.error = Some(what);
        self.record(e);
    }

    /// A copy of every event so far.
    pub fn snapshot(&self) -> Vec<Event> {
        self.events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// Writes events as JSON lines.
pub fn write_jsonl(path: &Path, events: &[Event]) -> anyhow::Result<()> {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    for e in events {
        serde_json::to_writer(&mut f, e)?;
        f.write_all(b"\n")?;
    }
    f.flush()?;
    Ok(())
}

/// Reads a JSON-lines history.
pub fn read_jsonl(path: &Path) -> anyhow::Result<Vec<Event>> {
    let text = std::fs::read_to_string(path)?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| Ok(serde_json::from_str(l)?))
        .collect()
}
