//! Alarms: conditions one member raises that the whole cluster acts on
//! (etcd's model).
//!
//! An alarm is raised and disarmed only through the Raft log
//! ([`AlarmCommand`]), applied by every node's state machine into the
//! `alarms` column family and into an in-memory [`AlarmTable`] shared with
//! the request paths. So while a `nospace` alarm is active, every node
//! refuses writes that could add data, whichever member ran short, and the
//! alarm survives restarts and travels in snapshots.
//!
//! Rows of the `alarms` column family: key `kind u8 | member u64 BE`, value
//! the encoded [`Alarm`]; and key `disarms` (7 bytes, so never an alarm's),
//! the encoded count of disarm commands applied ([`AlarmTable::disarms`]).

use std::collections::BTreeSet;
use std::io;
use std::sync::{Arc, RwLock};

use rocksdb::{IteratorMode, WriteBatch, DB};
use serde::{Deserialize, Serialize};

use crate::codec;
use crate::db::{cf, io_err, CF_ALARMS};

/// What an alarm is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum AlarmKind {
    /// A member's data directory has less free space than `--min-free-bytes`:
    /// writes that could add data are refused on every node.
    NoSpace,
}

impl AlarmKind {
    /// Every kind.
    pub const ALL: [AlarmKind; 1] = [AlarmKind::NoSpace];

    /// The name used in JSON, metrics labels and the CLI.
    pub const fn as_str(self) -> &'static str {
        match self {
            AlarmKind::NoSpace => "nospace",
        }
    }

    /// Parses a name given by [`AlarmKind::as_str`].
    pub fn parse(name: &str) -> Option<AlarmKind> {
        Self::ALL.into_iter().find(|k| k.as_str() == name)
    }

    fn tag(self) -> u8 {
        match self {
            AlarmKind::NoSpace => 0,
        }
    }
}

impl std::fmt::Display for AlarmKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One active alarm: which member raised which kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Alarm {
    /// The member that raised it.
    pub member: u64,
    /// What it is about.
    pub kind: AlarmKind,
}

/// A change to the replicated alarms.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AlarmCommand {
    /// Raises an alarm (a no-op when it is already active).
    Activate(Alarm),
    /// Disarms the active alarms that match: of `member` only when given,
    /// of `kind` only when given (both absent: every alarm).
    Deactivate {
        /// Only this member's alarms.
        member: Option<u64>,
        /// Only alarms of this kind.
        kind: Option<AlarmKind>,
    },
    /// Raises an alarm only if no disarm was applied since the raising
    /// member read the table ([`AlarmTable::disarms`] was `disarms`) and
    /// then measured: a raise decided before an operator's disarm and
    /// committed after it is dropped, rather than standing with no shortage
    /// behind it. The member measures again and raises anew if it is still
    /// short.
    Raise {
        /// The alarm.
        alarm: Alarm,
        /// The disarm count the member read before it measured.
        disarms: u64,
    },
}

impl std::fmt::Display for AlarmCommand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AlarmCommand::Activate(a) => {
                write!(f, "alarm-activate({}, member {})", a.kind, a.member)
            }
            AlarmCommand::Deactivate { member, kind } => write!(
                f,
                "alarm-deactivate({}, member {})",
                kind.map_or("any", AlarmKind::as_str),
                member.map_or_else(|| "any".to_string(), |m| m.to_string())
            ),
            AlarmCommand::Raise { alarm, disarms } => write!(
                f,
                "alarm-raise({}, member {}, after {disarms} disarms)",
                alarm.kind, alarm.member
            ),
        }
    }
}

/// The active alarms, in (member, kind) order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AlarmTable {
    active: BTreeSet<Alarm>,
    disarms: u64,
}

/// Key of the disarm count's row.
const DISARMS_KEY: &[u8] = b"disarms";

/// The alarm table shared by the state machine (which writes it) and the
/// request paths (which read it on every write).
pub type SharedAlarms = Arc<RwLock<AlarmTable>>;

fn row_key(alarm: &Alarm) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = alarm.kind.tag();
    k[1..].copy_from_slice(&alarm.member.to_be_bytes());
    k
}

impl AlarmTable {
    /// Every active alarm.
    pub fn active(&self) -> Vec<Alarm> {
        self.active.iter().copied().collect()
    }

    /// Whether an alarm of `kind` is active, raised by any member.
    pub fn any(&self, kind: AlarmKind) -> bool {
        self.active.iter().any(|a| a.kind == kind)
    }

    /// Whether `alarm` is active.
    pub fn contains(&self, alarm: &Alarm) -> bool {
        self.active.contains(alarm)
    }

    /// How many disarm commands were applied (whether or not they matched
    /// an alarm): a [`AlarmCommand::Raise`] carries the count its member
    /// read.
    pub fn disarms(&self) -> u64 {
        self.disarms
    }

    /// Applies `command`, adding its row changes to `batch` (when given),
    /// and returns the alarms it changed (raised or disarmed).
    fn apply(&mut self, command: &AlarmCommand, mut rows: impl FnMut(RowOp)) -> Vec<Alarm> {
        match command {
            AlarmCommand::Activate(alarm) => self.activate(*alarm, rows),
            AlarmCommand::Raise { alarm, disarms } => {
                if *disarms == self.disarms {
                    self.activate(*alarm, rows)
                } else {
                    tracing::info!(
                        member = alarm.member,
                        alarm = %alarm.kind,
                        read = disarms,
                        applied = self.disarms,
                        "a raise decided before a disarm was dropped"
                    );
                    Vec::new()
                }
            }
            AlarmCommand::Deactivate { member, kind } => {
                self.disarms += 1;
                rows(RowOp::Disarms(self.disarms));
                let gone: Vec<Alarm> = self
                    .active
                    .iter()
                    .filter(|a| member.is_none_or(|m| a.member == m))
                    .filter(|a| kind.is_none_or(|k| a.kind == k))
                    .copied()
                    .collect();
                for alarm in &gone {
                    self.active.remove(alarm);
                    rows(RowOp::Delete(*alarm));
                }
                gone
            }
        }
    }

    fn activate(&mut self, alarm: Alarm, mut rows: impl FnMut(RowOp)) -> Vec<Alarm> {
        if self.active.insert(alarm) {
            rows(RowOp::Put(alarm));
            vec![alarm]
        } else {
            Vec::new()
        }
    }
}

enum RowOp {
    Put(Alarm),
    Delete(Alarm),
    Disarms(u64),
}

/// Reads the alarm table from the `alarms` column family.
pub fn load_table(db: &DB) -> io::Result<AlarmTable> {
    let handle = cf(db, CF_ALARMS)?;
    let mut table = AlarmTable::default();
    for row in db.iterator_cf(handle, IteratorMode::Start) {
        let (key, value) = row.map_err(io_err)?;
        if &*key == DISARMS_KEY {
            table.disarms = codec::decode::<u64>(&value)?;
        } else {
            table.active.insert(codec::decode::<Alarm>(&value)?);
        }
    }
    Ok(table)
}

/// Applies `command` to the shared table and adds its rows to `batch`;
/// returns the alarms it changed.
pub fn apply_command(
    table: &SharedAlarms,
    db: &DB,
    batch: &mut WriteBatch,
    command: &AlarmCommand,
) -> io::Result<Vec<Alarm>> {
    let handle = cf(db, CF_ALARMS)?;
    let mut t = table
        .write()
        .map_err(|_| io::Error::other("the alarm table lock is poisoned"))?;
    let mut failed = None;
    let changed = t.apply(command, |row| match row {
        RowOp::Put(alarm) => match codec::encode(&alarm) {
            Ok(value) => batch.put_cf(handle, row_key(&alarm), value),
            Err(e) => failed = Some(e),
        },
        RowOp::Delete(alarm) => batch.delete_cf(handle, row_key(&alarm)),
        RowOp::Disarms(count) => match codec::encode(&count) {
            Ok(value) => batch.put_cf(handle, DISARMS_KEY, value),
            Err(e) => failed = Some(e),
        },
    });
    match failed {
        Some(e) => Err(e.into()),
        None => Ok(changed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nospace(member: u64) -> Alarm {
        Alarm {
            member,
            kind: AlarmKind::NoSpace,
        }
    }

    fn open() -> (tempfile::TempDir, Arc<DB>) {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = crate::db::open(dir.path()).expect("open db");
        (dir, db)
    }

    #[test]
    fn activate_is_idempotent_and_deactivate_filters() {
        let mut t = AlarmTable::default();
        let mut rows = 0;
        assert_eq!(
            t.apply(&AlarmCommand::Activate(nospace(3)), |_| rows += 1),
            vec![nospace(3)]
        );
        assert!(t
            .apply(&AlarmCommand::Activate(nospace(3)), |_| rows += 1)
            .is_empty());
        t.apply(&AlarmCommand::Activate(nospace(1)), |_| rows += 1);
        assert_eq!(rows, 2);
        assert!(t.any(AlarmKind::NoSpace));
        let gone = t.apply(
            &AlarmCommand::Deactivate {
                member: Some(1),
                kind: None,
            },
            |_| {},
        );
        assert_eq!(gone, vec![nospace(1)]);
        assert_eq!(t.active(), vec![nospace(3)]);
        let gone = t.apply(
            &AlarmCommand::Deactivate {
                member: None,
                kind: Some(AlarmKind::NoSpace),
            },
            |_| {},
        );
        assert_eq!(gone, vec![nospace(3)]);
        assert!(!t.any(AlarmKind::NoSpace));
    }

    #[test]
    fn the_table_is_stored_and_loaded_back() {
        let (_dir, db) = open();
        let table: SharedAlarms = Arc::default();
        let mut batch = WriteBatch::default();
        apply_command(&table, &db, &mut batch, &AlarmCommand::Activate(nospace(2))).expect("apply");
        apply_command(&table, &db, &mut batch, &AlarmCommand::Activate(nospace(3))).expect("apply");
        db.write(batch).expect("write");
        assert_eq!(
            load_table(&db).expect("load").active(),
            vec![nospace(2), nospace(3)]
        );
        let mut batch = WriteBatch::default();
        let gone = apply_command(
            &table,
            &db,
            &mut batch,
            &AlarmCommand::Deactivate {
                member: Some(2),
                kind: Some(AlarmKind::NoSpace),
            },
        )
        .expect("apply");
        assert_eq!(gone, vec![nospace(2)]);
        db.write(batch).expect("write");
        let loaded = load_table(&db).expect("load");
        assert_eq!(loaded.active(), vec![nospace(3)]);
        assert_eq!(loaded.disarms(), 1, "the disarm count is stored too");
        assert_eq!(&loaded, &*table.read().expect("lock"));
    }

    #[test]
    fn a_raise_decided_before_a_disarm_is_dropped() {
        let mut t = AlarmTable::default();
        let read = t.disarms();
        // The operator disarms (nothing is active yet: it still counts)...
        t.apply(
            &AlarmCommand::Deactivate {
                member: None,
                kind: None,
            },
            |_| {},
        );
        // ...and the raise the member decided before arrives after it.
        let stale = AlarmCommand::Raise {
            alarm: nospace(3),
            disarms: read,
        };
        assert!(t.apply(&stale, |_| {}).is_empty());
        assert!(!t.any(AlarmKind::NoSpace));
        // Measured again after the disarm, still short: it stands.
        let fresh = AlarmCommand::Raise {
            alarm: nospace(3),
            disarms: t.disarms(),
        };
        assert_eq!(t.apply(&fresh, |_| {}), vec![nospace(3)]);
        assert!(t.contains(&nospace(3)));
        // The unconditional raise of earlier builds' log entries stays.
        assert_eq!(
            t.apply(&AlarmCommand::Activate(nospace(1)), |_| {}),
            vec![nospace(1)]
        );
    }

    #[test]
    fn kinds_round_trip_through_their_names() {
        for kind in AlarmKind::ALL {
            assert_eq!(AlarmKind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(AlarmKind::parse("NOSPACE"), None);
    }
}
