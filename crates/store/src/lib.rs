//! repave-store: the durable journal in SQLite — runs, steps (intent before
//! the side effect, output after), the append-only event audit, and group
//! leases with fencing tokens, the scheduler's state and the webhook outbox. The schema and its migrations live here and
//! nowhere else.
//!
//! Several processes (CLI runs, `repave serve`) share one database file:
//! WAL mode, a 5 s busy timeout, and every write a short transaction.

mod driver;
mod error;
mod events;
mod leases;
mod outbox;
mod runs;
mod schedules;
mod schema;
mod steps;
mod types;

pub use driver::Driver;
pub use error::StoreError;
pub use events::CANCEL_REQUESTED;
pub use outbox::{Notice, NoticeState};
pub use schedules::ScheduleRecord;
pub use types::{
    lease_key, EventRecord, Lease, NewEvent, NewRun, RunFilter, RunKind, RunRecord, RunState, StepRecord, StepState,
    UnknownName,
};

use rusqlite::types::Type;
use rusqlite::{Connection, Row};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

/// How long a write waits for another process's transaction to finish.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// A handle on the database. Cheap calls, safe to share between threads;
/// open one per process.
pub struct Store {
    conn: Mutex<Connection>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

impl Store {
    /// Open (creating it and its parent directory if needed) the database
    /// at `path` and bring its schema up to date.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
                path: dir.into(),
                source,
            })?;
        }
        let err = |source| StoreError::OpenDatabase {
            path: path.into(),
            source,
        };
        let conn = Connection::open(path).map_err(err)?;
        Self::setup(conn, path.into())
    }

    /// A private database that lives as long as the handle (tests, dry runs).
    pub fn open_in_memory() -> Result<Store, StoreError> {
        let path = PathBuf::from(":memory:");
        let conn = Connection::open_in_memory().map_err(|source| StoreError::OpenDatabase {
            path: path.clone(),
            source,
        })?;
        Self::setup(conn, path)
    }

    /// The schema version this build of repave writes.
    pub fn schema_version() -> u32 {
        schema::SCHEMA_VERSION
    }

    fn setup(mut conn: Connection, path: PathBuf) -> Result<Store, StoreError> {
        let configure = |conn: &Connection| -> rusqlite::Result<()> {
            conn.busy_timeout(BUSY_TIMEOUT)?;
            // Readers never block the writer and the writer never blocks
            // readers; an in-memory database answers "memory". The mode is
            // persistent, so only the first opener has to switch it.
            let mode: String = conn.pragma_query_value(None, "journal_mode", |r| r.get(0))?;
            if !mode.eq_ignore_ascii_case("wal") && !mode.eq_ignore_ascii_case("memory") {
                conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get::<_, String>(0))?;
            }
            conn.pragma_update(None, "foreign_keys", true)
        };
        // Switching to WAL takes an exclusive lock without consulting the
        // busy handler, so two processes creating the database at the same
        // moment can see SQLITE_BUSY: retry within the busy timeout.
        let started = std::time::Instant::now();
        loop {
            match configure(&conn) {
                Ok(()) => break,
                Err(rusqlite::Error::SqliteFailure(e, _))
                    if matches!(
                        e.code,
                        rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
                    ) && started.elapsed() < BUSY_TIMEOUT =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(source) => return Err(StoreError::OpenDatabase { path, source }),
            }
        }
        schema::migrate(&mut conn)?;
        Ok(Store { conn: Mutex::new(conn) })
    }

    /// The connection. A panic while it was held leaves no open
    /// transaction behind (they roll back on drop), so poisoning is ignored.
    pub(crate) fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A JSON column.
pub(crate) fn json_at(row: &Row<'_>, idx: usize) -> rusqlite::Result<serde_json::Value> {
    let text: String = row.get(idx)?;
    parse_json(idx, &text)
}

/// A nullable JSON column.
pub(crate) fn opt_json_at(row: &Row<'_>, idx: usize) -> rusqlite::Result<Option<serde_json::Value>> {
    let text: Option<String> = row.get(idx)?;
    text.map(|t| parse_json(idx, &t)).transpose()
}

fn parse_json(idx: usize, text: &str) -> rusqlite::Result<serde_json::Value> {
    serde_json::from_str(text).map_err(|e| rusqlite::Error::FromSqlConversionFailure(idx, Type::Text, Box::new(e)))
}
