//! The schema, as an ordered list of migrations. `PRAGMA user_version`
//! records how many have been applied; new migrations are appended, never
//! edited.

use crate::StoreError;
use rusqlite::{Connection, TransactionBehavior};

/// Migration `i` moves the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    // 1: runs, steps, events, leases.
    r#"
    CREATE TABLE runs (
        id          TEXT PRIMARY KEY,
        pipeline    TEXT NOT NULL,
        group_name  TEXT NOT NULL,
        kind        TEXT NOT NULL CHECK (kind IN ('run', 'bake', 'roll', 'rollback')),
        provider    TEXT NOT NULL,
        state       TEXT NOT NULL,
        error       TEXT,
        started_at  INTEGER NOT NULL,
        ended_at    INTEGER,
        config      TEXT NOT NULL,
        summary     TEXT
    );
    CREATE INDEX runs_by_start ON runs (started_at DESC, id DESC);
    CREATE INDEX runs_by_pipeline ON runs (pipeline, started_at DESC);

    CREATE TABLE steps (
        run_id      TEXT NOT NULL REFERENCES runs (id),
        name        TEXT NOT NULL,
        seq         INTEGER NOT NULL,  -- order of first start within the run
        state       TEXT NOT NULL CHECK (state IN ('running', 'done', 'failed', 'skipped')),
        intent      TEXT NOT NULL,
        output      TEXT,
        error       TEXT,
        attempts    INTEGER NOT NULL,
        started_at  INTEGER NOT NULL,
        ended_at    INTEGER,
        PRIMARY KEY (run_id, name)
    );

    CREATE TABLE events (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        run_id      TEXT NOT NULL REFERENCES runs (id),
        at          INTEGER NOT NULL,
        level       TEXT NOT NULL CHECK (level IN ('info', 'warn', 'error')),
        step        TEXT,
        message     TEXT NOT NULL,
        data        TEXT NOT NULL
    );
    CREATE INDEX events_by_run ON events (run_id, id);
    -- The audit trail is append-only, whoever holds the database file.
    CREATE TRIGGER events_no_update BEFORE UPDATE ON events
        BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;
    CREATE TRIGGER events_no_delete BEFORE DELETE ON events
        BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;

    -- One row per group ever leased; the row outlives releases so the
    -- fencing token only ever grows.
    CREATE TABLE leases (
        group_name  TEXT PRIMARY KEY,
        holder      TEXT,              -- NULL once released
        token       INTEGER NOT NULL,
        expires_at  INTEGER NOT NULL
    );
    "#,
    // 2: the scheduler's state per pipeline (a schedule that disabled itself
    // stays disabled across restarts) and the webhook outbox (a notice
    // queued before a shutdown is delivered after the next start).
    r#"
    CREATE TABLE schedules (
        pipeline              TEXT PRIMARY KEY,
        enabled               INTEGER NOT NULL CHECK (enabled IN (0, 1)),
        consecutive_failures  INTEGER NOT NULL,
        disabled_reason       TEXT,
        updated_at            INTEGER NOT NULL
    );

    CREATE TABLE outbox (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        hook        TEXT NOT NULL,     -- a digest of the hook's URL, never the URL
        event       TEXT NOT NULL,
        run_id      TEXT,
        body        TEXT NOT NULL,
        state       TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'failed')),
        attempts    INTEGER NOT NULL,
        next_at     INTEGER NOT NULL,
        last_error  TEXT,
        created_at  INTEGER NOT NULL,
        ended_at    INTEGER
    );
    CREATE INDEX outbox_due ON outbox (state, next_at);
    "#,
    // 3: a long step's progress checkpoint (the roll's capacity bookkeeping),
    // rewritten as the step goes and kept when the step is resumed.
    r#"
    ALTER TABLE steps ADD COLUMN checkpoint TEXT;
    "#,
    // 4: the process holding a lease (pid, host, boot, start time), so a
    // second driver of the same run is refused while the first is alive.
    r#"
    ALTER TABLE leases ADD COLUMN driver TEXT;
    "#,
    // 5: where a run's group lives when group names repeat across places
    // (AWS: account/region), so its lease and unfinished-run checks are
    // that group's alone. NULL: the one place (local, sim) or a run from
    // before schema 5.
    r#"
    ALTER TABLE runs ADD COLUMN place TEXT;
    "#,
];

/// The schema version this build writes.
pub(crate) const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// Apply the missing migrations in one immediate transaction, so two
/// processes opening a fresh file at once don't both migrate it.
pub(crate) fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let err = |version| move |source| StoreError::Migrate { version, source };
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(err(SCHEMA_VERSION))?;
    let found: u32 = tx
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(err(SCHEMA_VERSION))?;
    if found > SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            found,
            supported: SCHEMA_VERSION,
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        let version = i as u32 + 1;
        tx.execute_batch(sql).map_err(err(version))?;
        tx.pragma_update(None, "user_version", version).map_err(err(version))?;
    }
    tx.commit().map_err(err(SCHEMA_VERSION))
}
