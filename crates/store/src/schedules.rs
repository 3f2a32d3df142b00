//! The scheduler's durable state per pipeline: whether its schedule is
//! enabled, failures in a row, and why it disabled itself. Kept here so a
//! schedule that turned itself off after repeated failures stays off across
//! restarts until an operator enables it again.

use crate::{Store, StoreError};
use repave_core::Timestamp;
use rusqlite::{params, OptionalExtension};

/// One pipeline's schedule state.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ScheduleRecord {
    pub pipeline: String,
    pub enabled: bool,
    pub consecutive_failures: u32,
    /// Why the schedule disabled itself (or who disabled it).
    pub disabled_reason: Option<String>,
    pub updated_at: Timestamp,
}

impl Store {
    /// The stored state of `pipeline`'s schedule; `None` if never written.
    pub fn schedule(&self, pipeline: &str) -> Result<Option<ScheduleRecord>, StoreError> {
        self.conn()
            .query_row(
                "SELECT pipeline, enabled, consecutive_failures, disabled_reason, updated_at
                 FROM schedules WHERE pipeline = ?1",
                [pipeline],
                |r| {
                    Ok(ScheduleRecord {
                        pipeline: r.get(0)?,
                        enabled: r.get(1)?,
                        consecutive_failures: r.get(2)?,
                        disabled_reason: r.get(3)?,
                        updated_at: Timestamp(r.get(4)?),
                    })
                },
            )
            .optional()
            .map_err(|source| StoreError::ReadSchedule {
                pipeline: pipeline.into(),
                source,
            })
    }

    /// Write `pipeline`'s schedule state (insert or replace).
    pub fn put_schedule(&self, rec: &ScheduleRecord) -> Result<(), StoreError> {
        self.conn()
            .execute(
                "INSERT INTO schedules (pipeline, enabled, consecutive_failures, disabled_reason, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (pipeline) DO UPDATE SET enabled = excluded.enabled,
                    consecutive_failures = excluded.consecutive_failures,
                    disabled_reason = excluded.disabled_reason, updated_at = excluded.updated_at",
                params![
                    rec.pipeline,
                    rec.enabled,
                    rec.consecutive_failures,
                    rec.disabled_reason,
                    rec.updated_at.0
                ],
            )
            .map(|_| ())
            .map_err(|source| StoreError::WriteSchedule {
                pipeline: rec.pipeline.clone(),
                source,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_state_round_trips_and_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let store = Store::open(&path).unwrap();
        assert_eq!(store.schedule("web").unwrap(), None);
        let mut rec = ScheduleRecord {
            pipeline: "web".into(),
            enabled: false,
            consecutive_failures: 3,
            disabled_reason: Some("disabled after 3 consecutive failed runs".into()),
            updated_at: Timestamp(42),
        };
        store.put_schedule(&rec).unwrap();
        drop(store);
        let store = Store::open(&path).unwrap();
        assert_eq!(store.schedule("web").unwrap().as_ref(), Some(&rec));
        rec.enabled = true;
        rec.consecutive_failures = 0;
        rec.disabled_reason = None;
        store.put_schedule(&rec).unwrap();
        assert_eq!(store.schedule("web").unwrap(), Some(rec));
        assert_eq!(store.schedule("api").unwrap(), None);
    }
}
