//! Events: the append-only audit trail of a run. Triggers in the schema
//! reject UPDATE and DELETE, so history can't be rewritten through SQL.

use crate::{json_at, EventRecord, NewEvent, Store, StoreError};
use repave_core::{RunId, Timestamp};
use rusqlite::{params, Row};

fn event_from_row(row: &Row<'_>) -> rusqlite::Result<EventRecord> {
    Ok(EventRecord {
        id: row.get(0)?,
        run: RunId(row.get(1)?),
        at: Timestamp(row.get(2)?),
        level: row.get(3)?,
        step: row.get(4)?,
        message: row.get(5)?,
        data: json_at(row, 6)?,
    })
}

/// Message of the event `repave cancel` appends: the process driving the
/// run stops at its next safe point.
pub const CANCEL_REQUESTED: &str = "cancel requested";

impl Store {
    /// Whether a cancel was requested for `run` after event `after` (the
    /// event that marked the current driver's start: a resumed run is not
    /// stopped again by an old request).
    pub fn cancel_requested(&self, run: &RunId, after: i64) -> Result<bool, StoreError> {
        self.conn()
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM events WHERE run_id = ?1 AND id > ?2 AND message = ?3)",
                params![run.0, after, CANCEL_REQUESTED],
                |r| r.get(0),
            )
            .map_err(|source| StoreError::ReadEvents {
                run: run.clone(),
                source,
            })
    }

    /// Append an event; returns its id (ids grow with every append, across
    /// runs). The level must be "info", "warn" or "error" and the run must
    /// exist.
    pub fn append_event(&self, ev: &NewEvent) -> Result<i64, StoreError> {
        self.conn()
            .query_row(
                "INSERT INTO events (run_id, at, level, step, message, data) VALUES (?1, ?2, ?3, ?4, ?5, ?6) RETURNING id",
                params![ev.run.0, ev.at.0, ev.level, ev.step, ev.message, ev.data.to_string()],
                |r| r.get(0),
            )
            .map_err(|source| StoreError::AppendEvent { run: ev.run.clone(), source })
    }

    /// Up to `limit` events of `run` with id greater than `after` (0 for the
    /// first page), oldest first. Pass the last id seen to follow a run.
    pub fn events(&self, run: &RunId, after: i64, limit: u32) -> Result<Vec<EventRecord>, StoreError> {
        let conn = self.conn();
        let query = || -> rusqlite::Result<Vec<EventRecord>> {
            let mut stmt = conn.prepare_cached(
                "SELECT id, run_id, at, level, step, message, data FROM events
                 WHERE run_id = ?1 AND id > ?2 ORDER BY id LIMIT ?3",
            )?;
            let rows = stmt.query_map(params![run.0, after, limit], event_from_row)?;
            rows.collect()
        };
        query().map_err(|source| StoreError::ReadEvents {
            run: run.clone(),
            source,
        })
    }
}
