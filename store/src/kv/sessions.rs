//! Client sessions: the replicated table that applies a retried write
//! exactly once (the Raft dissertation's client sessions, §6.3).
//!
//! A client registers once ([`SessionOp::Register`]) and gets a session: the
//! log index of the entry that opened it. It then tags every write with the
//! session, a sequence number and the lowest sequence number it has not had
//! an answer for ([`SessionOp::Write`]). For each client the state machine
//! remembers the result of every applied sequence number until the client
//! acknowledges it, so a retry of a write that was applied returns the first
//! result (same revision, same `prev_kv`, same transaction outcome) instead
//! of applying it again.
//!
//! The table is part of the replicated state: it changes only by applying
//! log entries, with the clock and bounds stamped into each session entry
//! by the leader ([`SessionStamp`]), never with a node's own clock or
//! settings. Every node therefore holds the same table after the same
//! entries. It is bounded:
//!
//! - at most `max_clients` sessions: registering one more evicts the least
//!   recently active one;
//! - at most `max_results` remembered results per client: past it the
//!   lowest sequence numbers are forgotten;
//! - at most `max_bytes` of remembered results in the whole table (by
//!   [`result_size`], a measure that does not depend on any encoding): past
//!   it the oldest results are forgotten; a result larger than
//!   1/[`MAX_RESULT_SHARE`] of it is not remembered at all;
//! - a client with no session entry for longer than `ttl_ms` of the table's
//!   clock (the largest stamp applied so far) loses its session.
//!
//! Nothing forgotten is ever applied again: a write whose sequence number is
//! below what its session still remembers, or whose session is gone, is
//! refused with [`CommandResponse::SessionExpired`], and the client reports
//! it as indeterminate. A session, once gone, is never revived: a new
//! registration opens a new one (a new log index), so a stale request of
//! the old one cannot slip into it.
//!
//! Persistence: the table lives in the `sessions` column family, written in
//! the same RocksDB batch as the entries that changed it (rows from
//! [`RowOp`]s), read back at start-up and after a snapshot install
//! ([`load_table`]), and carried in snapshots like the key space. A client's
//! row holds its session and its small remembered results
//! ([`INLINE_MAX_RESULTS`] of at most [`INLINE_MAX_RESULT_BYTES`] each), so
//! the usual write (remember its result, forget the one just acknowledged,
//! mark the client active) rewrites one row rather than three. A larger
//! result, or one past that count, gets a row of its own.
//!
//! Builds before inline results wrote a client row without results (format
//! version 1) and every result in a row of its own. Such rows are still
//! read; a client row of the current shape carries [`CLIENT_ROW_VERSION`],
//! so an earlier build refuses it clearly (an unsupported format version)
//! rather than misreading it.

use std::collections::{BTreeMap, BTreeSet};
use std::io;

use rocksdb::{ColumnFamily, IteratorMode, WriteBatch, DB};
use serde::{Deserialize, Serialize};

use super::mvcc::ApplyBatch;
use super::types::{
    Command, CommandResponse, KeyValue, SessionCommand, SessionLimits, SessionOp, SessionRefusal,
    SessionStamp, TxnOpResponse,
};
use crate::codec;
use crate::db::{cf, io_err, CF_SESSIONS};

/// Default of [`SessionLimits::max_clients`].
pub const DEFAULT_MAX_CLIENTS: u64 = 10_000;
/// Default of [`SessionLimits::max_results`].
pub const DEFAULT_MAX_RESULTS: u64 = 256;
/// Default of [`SessionLimits::max_bytes`]: 64 MiB.
pub const DEFAULT_MAX_BYTES: u64 = 64 * 1024 * 1024;
/// Default of [`SessionLimits::ttl_ms`]: one hour.
pub const DEFAULT_TTL_MS: u64 = 60 * 60 * 1000;
/// A result larger than `max_bytes / MAX_RESULT_SHARE` is not remembered, so
/// one large answer never pushes every other client's results out.
pub const MAX_RESULT_SHARE: u64 = 16;
/// Bytes counted for each remembered result on top of its data (its place
/// in the table's maps).
pub const RESULT_OVERHEAD_BYTES: u64 = 64;
/// Bytes counted per key-value in a result on top of its key and value.
const KV_OVERHEAD_BYTES: u64 = 24;

impl Default for SessionLimits {
    fn default() -> Self {
        SessionLimits {
            max_clients: DEFAULT_MAX_CLIENTS,
            max_results: DEFAULT_MAX_RESULTS,
            max_bytes: DEFAULT_MAX_BYTES,
            ttl_ms: DEFAULT_TTL_MS,
        }
    }
}

/// Milliseconds since the Unix epoch by this machine's clock (0 before it).
pub fn wall_clock_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Stamps a session command with `now_ms` and `limits`; other commands are
/// left alone. The leader calls this when it proposes, so the table runs on
/// the leader's clock and settings, recorded in the log.
pub fn stamp(command: &mut Command, now_ms: u64, limits: SessionLimits) {
    if let Command::Session(s) = command {
        s.stamp = SessionStamp { now_ms, limits };
    }
}

/// The size a remembered result counts for: its keys and values plus a
/// fixed amount per key-value and per result. Defined on the data, not on
/// an encoding, so that every build counts the same (the table's bounds
/// depend on it, and every node must decide them alike).
pub fn result_size(response: &CommandResponse) -> u64 {
    fn kv(kv: &KeyValue) -> u64 {
        kv.key.len() as u64 + kv.value.len() as u64 + KV_OVERHEAD_BYTES
    }
    let data = match response {
        CommandResponse::Put { prev_kv, .. } => prev_kv.as_ref().map_or(0, kv),
        CommandResponse::Delete { prev_kvs, .. } => prev_kvs.iter().map(kv).sum(),
        CommandResponse::Txn { responses, .. } => responses
            .iter()
            .map(|r| match r {
                TxnOpResponse::Get { kvs } => kvs.iter().map(kv).sum::<u64>() + 8,
                TxnOpResponse::Put { .. } | TxnOpResponse::Delete { .. } => 8,
            })
            .sum(),
        CommandResponse::None
        | CommandResponse::Compact { .. }
        | CommandResponse::Registered { .. }
        | CommandResponse::SessionExpired { .. }
        | CommandResponse::Auth(_)
        | CommandResponse::Alarms(_) => 0,
    };
    data + RESULT_OVERHEAD_BYTES
}

/// At most this many of a client's remembered results are kept inside its
/// row: the row is rewritten with each of the client's writes, so this
/// bounds what that rewrite costs.
pub const INLINE_MAX_RESULTS: usize = 8;
/// A remembered result larger than this ([`result_size`]) gets a row of its
/// own instead of a place in its client's row.
pub const INLINE_MAX_RESULT_BYTES: u64 = 512;
/// Format version of a client row of the current shape ([`ClientRowV2`]:
/// with its inline results). Rows of the earlier shape ([`ClientRow`])
/// carry [`codec::FORMAT_VERSION`] (1).
pub const CLIENT_ROW_VERSION: u8 = 2;

/// Row tags of the `sessions` column family (the first key byte).
const META_TAG: u8 = 0;
const CLIENT_TAG: u8 = 1;
const RESULT_TAG: u8 = 2;

/// The table's own state: its clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct MetaRow {
    clock_ms: u64,
}

/// One client's session, under [`client_key`], as builds before inline
/// results wrote it (format version 1); read, never written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct ClientRow {
    session: u64,
    last_active_ms: u64,
    floor: u64,
}

/// One client's session with its inline results, under [`client_key`]
/// (format version [`CLIENT_ROW_VERSION`]). `R` is `&CommandResponse` when
/// written and `CommandResponse` when read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct ClientRowV2<R> {
    session: u64,
    last_active_ms: u64,
    floor: u64,
    results: Vec<InlineResult<R>>,
}

/// A remembered result inside its client's row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct InlineResult<R> {
    seq: u64,
    index: u64,
    response: Option<R>,
}

/// One remembered result, under [`result_key`]. `response` is `None` for a
/// write that was applied but whose result was too large to remember.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct ResultRow {
    index: u64,
    response: Option<CommandResponse>,
}

fn meta_key() -> Vec<u8> {
    vec![META_TAG]
}

fn client_key(client: u128) -> Vec<u8> {
    let mut k = Vec::with_capacity(17);
    k.push(CLIENT_TAG);
    k.extend_from_slice(&client.to_be_bytes());
    k
}

fn result_key(client: u128, seq: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(25);
    k.push(RESULT_TAG);
    k.extend_from_slice(&client.to_be_bytes());
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// A change to one row of the `sessions` column family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RowOp {
    /// Set the row.
    Put(Vec<u8>, Vec<u8>),
    /// Remove the row.
    Delete(Vec<u8>),
}

/// A remembered result.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Remembered {
    index: u64,
    response: Option<CommandResponse>,
    bytes: u64,
    /// Kept in its client's row rather than a row of its own.
    inline: bool,
}

/// One client's session.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ClientSession {
    /// The log index of the registration that opened it.
    session: u64,
    /// The table's clock when the client last sent a session command.
    last_active_ms: u64,
    /// Sequence numbers below this are never applied: acknowledged by the
    /// client, or forgotten to keep the table in its bounds.
    floor: u64,
    /// Results of applied sequence numbers at or above `floor`.
    results: BTreeMap<u64, Remembered>,
}

impl ClientSession {
    /// The client's row: its session and its inline results.
    fn encode_row(&self) -> io::Result<Vec<u8>> {
        let row = ClientRowV2 {
            session: self.session,
            last_active_ms: self.last_active_ms,
            floor: self.floor,
            results: self
                .results
                .iter()
                .filter(|(_, r)| r.inline)
                .map(|(&seq, r)| InlineResult {
                    seq,
                    index: r.index,
                    response: r.response.as_ref(),
                })
                .collect(),
        };
        postcard::to_extend(&row, vec![CLIENT_ROW_VERSION])
            .map_err(|e| codec::CodecError::from(e).into())
    }

    /// Whether a result of `bytes` goes into the client's row.
    fn fits_inline(&self, bytes: u64) -> bool {
        bytes <= INLINE_MAX_RESULT_BYTES
            && self.results.values().filter(|r| r.inline).count() < INLINE_MAX_RESULTS
    }
}

/// What applying session commands did that the table's state does not
/// keep, counted for the node's metrics ([`SessionTable::take_events`]).
/// Not replicated state: a restarted node counts from zero.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionEvents {
    /// Retried writes answered with the result the table remembered,
    /// instead of being applied again.
    pub replayed: u64,
    /// Sessions removed because their client was idle past the TTL.
    pub expired: u64,
    /// Sessions removed to make room for a new one at `max_clients`.
    pub evicted: u64,
}

/// The session table (see the module docs). Its indexes are derived from
/// the sessions and rebuilt when it is loaded.
#[derive(Debug, Clone, Default)]
pub struct SessionTable {
    clock_ms: u64,
    clients: BTreeMap<u128, ClientSession>,
    /// (last active, client): the next client to expire or evict first.
    by_activity: BTreeSet<(u64, u128)>,
    /// Remembered results by the log index that produced them, oldest first.
    by_index: BTreeMap<u64, (u128, u64)>,
    /// Sum of the remembered results' sizes.
    bytes: u64,
    /// Counted since the last [`SessionTable::take_events`]; not part of
    /// the table's state (equality ignores it).
    events: SessionEvents,
    /// Clients whose row the command being applied changed: written once,
    /// when it is done. Empty between commands.
    dirty: BTreeSet<u128>,
}

impl PartialEq for SessionTable {
    fn eq(&self, other: &Self) -> bool {
        self.clock_ms == other.clock_ms
            && self.clients == other.clients
            && self.by_activity == other.by_activity
            && self.by_index == other.by_index
            && self.bytes == other.bytes
    }
}

impl Eq for SessionTable {}

fn encode_row<T: Serialize>(value: &T) -> io::Result<Vec<u8>> {
    Ok(codec::encode(value)?)
}

fn invalid_data(message: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.into())
}

impl SessionTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// The table's clock: the largest stamp applied, ms since the Unix epoch.
    #[cfg(test)]
    pub fn clock_ms(&self) -> u64 {
        self.clock_ms
    }

    /// Clients with a session.
    pub fn clients(&self) -> usize {
        self.clients.len()
    }

    /// Remembered results, in all sessions.
    pub fn results(&self) -> usize {
        self.by_index.len()
    }

    /// Sum of the remembered results' sizes ([`result_size`]).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// What the table did since the last call (replays, expiries,
    /// evictions), and starts counting again from zero.
    pub fn take_events(&mut self) -> SessionEvents {
        std::mem::take(&mut self.events)
    }

    /// The session `client` holds, if any.
    pub fn session_of(&self, client: u128) -> Option<u64> {
        self.clients.get(&client).map(|c| c.session)
    }

    /// Applies one session command of the log entry at `index`. A write
    /// that is neither a replay nor refused goes through `run`, which
    /// applies it to the key space. The rows to store go to `rows`, to be
    /// written in the same batch as the key space's changes.
    ///
    /// Only `run`'s storage errors are errors. Should the batch then not be
    /// written, the node stops (a storage error stops Raft) and reloads the
    /// table from disk when it starts again.
    pub fn apply(
        &mut self,
        index: u64,
        command: &SessionCommand,
        rows: &mut Vec<RowOp>,
        run: impl FnOnce(&Command) -> io::Result<CommandResponse>,
    ) -> io::Result<CommandResponse> {
        let applied = self.apply_command(index, command, rows, run);
        let dirty = std::mem::take(&mut self.dirty);
        let response = applied?;
        for client in dirty {
            if let Some(c) = self.clients.get(&client) {
                rows.push(RowOp::Put(client_key(client), c.encode_row()?));
            }
        }
        Ok(response)
    }

    fn apply_command(
        &mut self,
        index: u64,
        command: &SessionCommand,
        rows: &mut Vec<RowOp>,
        run: impl FnOnce(&Command) -> io::Result<CommandResponse>,
    ) -> io::Result<CommandResponse> {
        let limits = sanitized(command.stamp.limits);
        self.advance_clock(command.stamp.now_ms, rows)?;
        self.expire_idle(limits.ttl_ms, rows);
        let client = command.client;
        match &command.op {
            SessionOp::Register => self.register(index, client, limits, rows),
            SessionOp::Write {
                session,
                seq,
                acked_below,
                command: write,
            } => {
                if self.session_of(client) != Some(*session) {
                    tracing::debug!(client = %format_args!("{client:032x}"), session, seq, "session write refused: unknown session");
                    return Ok(refused(SessionRefusal::UnknownSession));
                }
                self.touch(client);
                // A request never acknowledges itself.
                self.raise_floor(client, (*acked_below).min(*seq), rows);
                let Some(c) = self.clients.get(&client) else {
                    return Ok(refused(SessionRefusal::UnknownSession));
                };
                let replay = if planted_double_apply() {
                    None
                } else {
                    c.results.get(seq)
                };
                if let Some(r) = replay {
                    self.events.replayed += 1;
                    tracing::debug!(client = %format_args!("{client:032x}"), session, seq, "session write replayed: its first result answers");
                    return Ok(match &r.response {
                        Some(response) => response.clone(),
                        None => refused(SessionRefusal::ResultForgotten),
                    });
                }
                if *seq < c.floor {
                    tracing::debug!(client = %format_args!("{client:032x}"), session, seq, floor = c.floor, "session write refused: result forgotten");
                    return Ok(refused(SessionRefusal::ResultForgotten));
                }
                // Validation refuses a nested session or auth command before
                // it is proposed; should one be in the log anyway, it does nothing.
                if matches!(
                    **write,
                    Command::Session(_) | Command::Auth(_) | Command::Alarm(_)
                ) {
                    return Ok(CommandResponse::None);
                }
                let response = run(write)?;
                self.remember(client, *seq, index, &response, limits, rows)?;
                Ok(response)
            }
        }
    }

    fn advance_clock(&mut self, now_ms: u64, rows: &mut Vec<RowOp>) -> io::Result<()> {
        if now_ms > self.clock_ms {
            self.clock_ms = now_ms;
            rows.push(RowOp::Put(
                meta_key(),
                encode_row(&MetaRow {
                    clock_ms: self.clock_ms,
                })?,
            ));
        }
        Ok(())
    }

    /// Removes every client idle for longer than `ttl_ms` of the clock.
    fn expire_idle(&mut self, ttl_ms: u64, rows: &mut Vec<RowOp>) {
        let cutoff = self.clock_ms.saturating_sub(ttl_ms);
        while let Some(&(last_active, client)) = self.by_activity.first() {
            if last_active >= cutoff {
                break;
            }
            self.events.expired += 1;
            self.remove_client(client, rows);
        }
    }

    fn register(
        &mut self,
        index: u64,
        client: u128,
        limits: SessionLimits,
        rows: &mut Vec<RowOp>,
    ) -> io::Result<CommandResponse> {
        if let Some(session) = self.session_of(client) {
            self.touch(client);
            return Ok(CommandResponse::Registered { session });
        }
        while self.clients.len() as u64 >= limits.max_clients {
            let Some(&(_, victim)) = self.by_activity.first() else {
                break;
            };
            self.events.evicted += 1;
            self.remove_client(victim, rows);
        }
        let new = ClientSession {
            session: index,
            last_active_ms: self.clock_ms,
            floor: 0,
            results: BTreeMap::new(),
        };
        self.dirty.insert(client);
        self.by_activity.insert((new.last_active_ms, client));
        self.clients.insert(client, new);
        Ok(CommandResponse::Registered { session: index })
    }

    fn remove_client(&mut self, client: u128, rows: &mut Vec<RowOp>) {
        let Some(c) = self.clients.remove(&client) else {
            return;
        };
        self.by_activity.remove(&(c.last_active_ms, client));
        self.dirty.remove(&client);
        for (seq, r) in c.results {
            self.by_index.remove(&r.index);
            self.bytes -= r.bytes;
            if !r.inline {
                rows.push(RowOp::Delete(result_key(client, seq)));
            }
        }
        rows.push(RowOp::Delete(client_key(client)));
    }

    /// Marks `client` active now (its row is written when the command is
    /// done).
    fn touch(&mut self, client: u128) {
        let clock = self.clock_ms;
        let Some(c) = self.clients.get_mut(&client) else {
            return;
        };
        self.by_activity.remove(&(c.last_active_ms, client));
        c.last_active_ms = clock;
        self.by_activity.insert((clock, client));
        self.dirty.insert(client);
    }

    /// Never applies a sequence number below `floor` again, forgetting the
    /// results below it.
    fn raise_floor(&mut self, client: u128, floor: u64, rows: &mut Vec<RowOp>) {
        let Some(c) = self.clients.get_mut(&client) else {
            return;
        };
        if floor <= c.floor {
            return;
        }
        c.floor = floor;
        let kept = c.results.split_off(&floor);
        let dropped = std::mem::replace(&mut c.results, kept);
        self.dirty.insert(client);
        for (seq, r) in dropped {
            self.by_index.remove(&r.index);
            self.bytes -= r.bytes;
            if !r.inline {
                rows.push(RowOp::Delete(result_key(client, seq)));
            }
        }
    }

    fn remember(
        &mut self,
        client: u128,
        seq: u64,
        index: u64,
        response: &CommandResponse,
        limits: SessionLimits,
        rows: &mut Vec<RowOp>,
    ) -> io::Result<()> {
        let size = result_size(response);
        let (kept, bytes) = if size > limits.max_bytes / MAX_RESULT_SHARE {
            (None, RESULT_OVERHEAD_BYTES)
        } else {
            (Some(response.clone()), size)
        };
        let Some(c) = self.clients.get_mut(&client) else {
            return Ok(());
        };
        let row = ResultRow {
            index,
            response: kept,
        };
        let inline = c.fits_inline(bytes);
        if inline {
            self.dirty.insert(client);
        } else {
            rows.push(RowOp::Put(result_key(client, seq), encode_row(&row)?));
        }
        c.results.insert(
            seq,
            Remembered {
                index,
                response: row.response,
                bytes,
                inline,
            },
        );
        self.by_index.insert(index, (client, seq));
        self.bytes += bytes;
        // Per client: forget the lowest sequence numbers.
        while let Some(lowest) = self
            .clients
            .get(&client)
            .filter(|c| c.results.len() as u64 > limits.max_results)
            .and_then(|c| c.results.keys().next().copied())
        {
            self.raise_floor(client, lowest + 1, rows);
        }
        // The whole table: forget the oldest results.
        while self.bytes > limits.max_bytes {
            let Some((_, &(owner, oldest))) = self.by_index.first_key_value() else {
                break;
            };
            self.raise_floor(owner, oldest + 1, rows);
        }
        Ok(())
    }

    /// Rebuilds a table from the rows of the `sessions` column family, in
    /// key order.
    pub fn from_rows(
        rows: impl IntoIterator<Item = io::Result<(Box<[u8]>, Box<[u8]>)>>,
    ) -> io::Result<Self> {
        let mut table = SessionTable::new();
        for row in rows {
            let (key, value) = row?;
            match key.first() {
                Some(&META_TAG) if key.len() == 1 => {
                    let meta: MetaRow = codec::decode(&value)?;
                    table.clock_ms = meta.clock_ms;
                }
                Some(&CLIENT_TAG) if key.len() == 17 => {
                    let client = u128::from_be_bytes(fixed(&key[1..17])?);
                    let row = decode_client_row(&value)?;
                    table.by_activity.insert((row.last_active_ms, client));
                    table.clients.insert(
                        client,
                        ClientSession {
                            session: row.session,
                            last_active_ms: row.last_active_ms,
                            floor: row.floor,
                            results: BTreeMap::new(),
                        },
                    );
                    for r in row.results {
                        table.load_result(client, r.seq, r.index, r.response, true)?;
                    }
                }
                Some(&RESULT_TAG) if key.len() == 25 => {
                    let client = u128::from_be_bytes(fixed(&key[1..17])?);
                    let seq = u64::from_be_bytes(fixed(&key[17..25])?);
                    let row: ResultRow = codec::decode(&value)?;
                    table.load_result(client, seq, row.index, row.response, false)?;
                }
                _ => return Err(invalid_data("malformed key in the sessions column family")),
            }
        }
        Ok(table)
    }
}

impl SessionTable {
    /// Adds a remembered result read back from the rows (`inline`: from its
    /// client's row) to the session of `client`, which must be loaded.
    fn load_result(
        &mut self,
        client: u128,
        seq: u64,
        index: u64,
        response: Option<CommandResponse>,
        inline: bool,
    ) -> io::Result<()> {
        let bytes = response.as_ref().map_or(RESULT_OVERHEAD_BYTES, result_size);
        let c = self.clients.get_mut(&client).ok_or_else(|| {
            invalid_data(format!(
                "a remembered result of client {client:032x} has no session row"
            ))
        })?;
        c.results.insert(
            seq,
            Remembered {
                index,
                response,
                bytes,
                inline,
            },
        );
        self.by_index.insert(index, (client, seq));
        self.bytes += bytes;
        Ok(())
    }
}

/// A client row of either shape: the current one (with inline results) or
/// the one builds before them wrote (none).
fn decode_client_row(value: &[u8]) -> io::Result<ClientRowV2<CommandResponse>> {
    match value.first() {
        Some(&CLIENT_ROW_VERSION) => {
            Ok(postcard::from_bytes(&value[1..]).map_err(codec::CodecError::from)?)
        }
        Some(&codec::FORMAT_VERSION) => {
            let row: ClientRow = codec::decode(value)?;
            Ok(ClientRowV2 {
                session: row.session,
                last_active_ms: row.last_active_ms,
                floor: row.floor,
                results: Vec::new(),
            })
        }
        Some(found) => Err(invalid_data(format!(
            "a client session row has format version {found}; this build reads {} and \
             {CLIENT_ROW_VERSION}",
            codec::FORMAT_VERSION
        ))),
        None => Err(invalid_data("an empty client session row")),
    }
}

fn fixed<const N: usize>(bytes: &[u8]) -> io::Result<[u8; N]> {
    <[u8; N]>::try_from(bytes).map_err(|_| invalid_data("malformed sessions key"))
}

fn refused(reason: SessionRefusal) -> CommandResponse {
    CommandResponse::SessionExpired { reason }
}

/// Bounds that keep every loop finite: at least one client and one result.
fn sanitized(limits: SessionLimits) -> SessionLimits {
    SessionLimits {
        max_clients: limits.max_clients.max(1),
        max_results: limits.max_results.max(1),
        ..limits
    }
}

/// Reads the table from the `sessions` column family of `db`.
pub fn load_table(db: &DB) -> io::Result<SessionTable> {
    let handle = cf(db, CF_SESSIONS)?;
    SessionTable::from_rows(
        db.iterator_cf(handle, IteratorMode::Start)
            .map(|r| r.map_err(io_err)),
    )
}

/// The session rows of a batch of entries, each key's last change only.
///
/// In one atomic RocksDB write only a key's last put or delete counts, so
/// keeping just that one leaves the same state with fewer memtable inserts:
/// the table's clock row changes with nearly every session command and a
/// client's row with every write it sends (twice when the write also
/// acknowledges earlier results), and a batch holds many of them.
#[derive(Debug, Default)]
pub struct SessionRows {
    rows: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
}

impl SessionRows {
    /// Adds changes made after those already held.
    pub fn extend(&mut self, rows: Vec<RowOp>) {
        for row in rows {
            match row {
                RowOp::Put(k, v) => self.rows.insert(k, Some(v)),
                RowOp::Delete(k) => self.rows.insert(k, None),
            };
        }
    }

    /// Rows held (one per key).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether no row is held.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Adds the held rows to `batch`, in the `sessions` column family
    /// `handle`.
    pub fn write(self, batch: &mut WriteBatch, handle: &ColumnFamily) {
        for (k, v) in self.rows {
            match v {
                Some(v) => batch.put_cf(handle, k, v),
                None => batch.delete_cf(handle, k),
            }
        }
    }
}

/// Planted bug for the exactly-once tests and the fault-injection checker,
/// compiled in only with the `failpoints` feature: with the
/// `unsafe-session-double-apply` failpoint set to `return`, a retried write
/// whose first attempt applied is applied again instead of answered from the
/// table.
fn planted_double_apply() -> bool {
    fail::fail_point!("unsafe-session-double-apply", |_| true);
    false
}

/// Applies the command of a log entry at `index` on its own: a session
/// command through `table`, anything else straight to the key space. Every
/// change lands in `batch`. The state machine uses [`apply_entry_into`], which
/// leaves the session rows for one write per batch.
#[cfg(test)]
pub fn apply_entry(
    table: &mut SessionTable,
    db: &DB,
    batch: &mut ApplyBatch<'_>,
    index: u64,
    command: &Command,
) -> io::Result<CommandResponse> {
    if !matches!(command, Command::Session(_)) {
        return batch.apply(command);
    }
    let mut rows = SessionRows::default();
    let response = apply_entry_into(table, batch, index, command, &mut rows)?;
    rows.write(batch.write_batch(), cf(db, CF_SESSIONS)?);
    Ok(response)
}

/// The hook where the state machine applies the command of a log entry at
/// `index`, as `apply_entry` does but collecting the session rows to
/// write in `rows` instead of the batch, so that a batch of entries writes each row once
/// ([`SessionRows::write`] once they are all applied).
pub fn apply_entry_into(
    table: &mut SessionTable,
    batch: &mut ApplyBatch<'_>,
    index: u64,
    command: &Command,
    rows: &mut SessionRows,
) -> io::Result<CommandResponse> {
    let Command::Session(session) = command else {
        return batch.apply(command);
    };
    let mut changed = Vec::new();
    let response = table.apply(index, session, &mut changed, |write| batch.apply(write))?;
    rows.extend(changed);
    Ok(response)
}

#[cfg(test)]
#[path = "sessions_test.rs"]
mod tests;
