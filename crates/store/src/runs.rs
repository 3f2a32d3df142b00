//! Runs: one row per execution of a pipeline.

use crate::{json_at, opt_json_at, NewRun, RunFilter, RunRecord, RunState, Store, StoreError};
use repave_core::{RunId, Timestamp};
use rusqlite::{params, OptionalExtension, Row};

const COLUMNS: &str =
    "id, pipeline, group_name, kind, provider, state, error, started_at, ended_at, config, summary, place";

fn run_from_row(row: &Row<'_>) -> rusqlite::Result<RunRecord> {
    Ok(RunRecord {
        id: RunId(row.get(0)?),
        pipeline: row.get(1)?,
        group: row.get(2)?,
        kind: row.get(3)?,
        provider: row.get(4)?,
        state: row.get(5)?,
        error: row.get(6)?,
        started_at: Timestamp(row.get(7)?),
        ended_at: row.get::<_, Option<i64>>(8)?.map(Timestamp),
        config: json_at(row, 9)?,
        summary: opt_json_at(row, 10)?,
        place: row.get(11)?,
    })
}

/// `run-YYYYMMDD-HHMMSS-<suffix>` for `now` in UTC.
pub(crate) fn run_id(now: Timestamp, suffix: &str) -> RunId {
    let secs = now.0.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    let (hh, mm, ss) = (rem / 3600, rem % 3600 / 60, rem % 60);
    RunId(format!("run-{y:04}{m:02}{d:02}-{hh:02}{mm:02}{ss:02}-{suffix}"))
}

/// Howard Hinnant's civil_from_days: days since 1970-01-01 → (y, m, d).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

impl Store {
    /// Create a run in state `pending`, with a fresh id from `run.now` and
    /// 24 random bits.
    pub fn create_run(&self, run: &NewRun) -> Result<RunRecord, StoreError> {
        let conn = self.conn();
        let err = |source| StoreError::CreateRun {
            pipeline: run.pipeline.clone(),
            source,
        };
        let mut attempt = 0;
        loop {
            let suffix: String = conn
                .query_row("SELECT lower(hex(randomblob(3)))", [], |r| r.get(0))
                .map_err(err)?;
            let id = run_id(run.now, &suffix);
            let inserted = conn.execute(
                "INSERT INTO runs (id, pipeline, group_name, kind, provider, state, started_at, config, place)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    id.0,
                    run.pipeline,
                    run.group,
                    run.kind,
                    run.provider,
                    RunState::Pending,
                    run.now.0,
                    run.config.to_string(),
                    run.place
                ],
            );
            match inserted {
                Ok(_) => {
                    return Ok(RunRecord {
                        id,
                        pipeline: run.pipeline.clone(),
                        group: run.group.clone(),
                        kind: run.kind,
                        provider: run.provider.clone(),
                        state: RunState::Pending,
                        error: None,
                        started_at: run.now,
                        ended_at: None,
                        config: run.config.clone(),
                        summary: None,
                        place: run.place.clone(),
                    })
                }
                // Same second and same random suffix: draw again.
                Err(e) if e.sqlite_error_code() == Some(rusqlite::ErrorCode::ConstraintViolation) && attempt < 5 => {
                    attempt += 1
                }
                Err(e) => return Err(err(e)),
            }
        }
    }

    /// The run `id`, if it exists.
    pub fn get_run(&self, id: &RunId) -> Result<Option<RunRecord>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM runs WHERE id = ?1");
        self.conn()
            .query_row(&sql, [&id.0], run_from_row)
            .optional()
            .map_err(|source| StoreError::GetRun { id: id.clone(), source })
    }

    /// Runs matching `filter`, newest first.
    pub fn list_runs(&self, filter: &RunFilter) -> Result<Vec<RunRecord>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM runs
             WHERE (?1 IS NULL OR pipeline = ?1) AND (?2 IS NULL OR group_name = ?2) AND (?3 IS NULL OR state = ?3)
             ORDER BY started_at DESC, id DESC LIMIT ?4"
        );
        let limit = filter.limit.map_or(-1, i64::from);
        let conn = self.conn();
        let query = || -> rusqlite::Result<Vec<RunRecord>> {
            let mut stmt = conn.prepare_cached(&sql)?;
            let rows = stmt.query_map(
                params![filter.pipeline, filter.group, filter.state, limit],
                run_from_row,
            )?;
            rows.collect()
        };
        query().map_err(|source| StoreError::ListRuns { source })
    }

    /// Move run `id` to `state`, recording `error` (cleared when `None`).
    /// Terminal states set `ended_at = now`; others clear it (a resumed run
    /// is running again).
    pub fn set_run_state(
        &self,
        id: &RunId,
        state: RunState,
        error: Option<&str>,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let ended_at = state.is_terminal().then_some(now.0);
        let changed = self
            .conn()
            .execute(
                "UPDATE runs SET state = ?2, error = ?3, ended_at = ?4 WHERE id = ?1",
                params![id.0, state, error, ended_at],
            )
            .map_err(|source| StoreError::SetRunState { id: id.clone(), source })?;
        if changed == 0 {
            return Err(StoreError::RunNotFound { id: id.clone() });
        }
        Ok(())
    }

    /// Replace the run's summary (counts, images, timings; shown by
    /// `repave status`).
    pub fn set_run_summary(&self, id: &RunId, summary: &serde_json::Value) -> Result<(), StoreError> {
        let changed = self
            .conn()
            .execute(
                "UPDATE runs SET summary = ?2 WHERE id = ?1",
                params![id.0, summary.to_string()],
            )
            .map_err(|source| StoreError::SetRunSummary { id: id.clone(), source })?;
        if changed == 0 {
            return Err(StoreError::RunNotFound { id: id.clone() });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_are_utc_calendar_times() {
        // 2026-02-28T23:59:59.999Z, then the leap day of 2024 and the epoch.
        assert_eq!(
            run_id(Timestamp(1_772_323_199_999), "abc123").0,
            "run-20260228-235959-abc123"
        );
        assert_eq!(
            run_id(Timestamp(1_709_208_000_000), "000000").0,
            "run-20240229-120000-000000"
        );
        assert_eq!(run_id(Timestamp(0), "ffffff").0, "run-19700101-000000-ffffff");
    }
}
