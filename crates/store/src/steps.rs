//! Steps: the intent of each step is committed before its side effect, the
//! output after, so a resumed run knows what may already have happened.

use crate::{json_at, opt_json_at, StepRecord, StepState, Store, StoreError};
use repave_core::{RunId, Timestamp};
use rusqlite::{params, Connection, OptionalExtension, Row, TransactionBehavior};

const COLUMNS: &str = "run_id, name, state, intent, output, error, attempts, started_at, ended_at, checkpoint";

fn step_from_row(row: &Row<'_>) -> rusqlite::Result<StepRecord> {
    Ok(StepRecord {
        run: RunId(row.get(0)?),
        name: row.get(1)?,
        state: row.get(2)?,
        intent: json_at(row, 3)?,
        output: opt_json_at(row, 4)?,
        error: row.get(5)?,
        attempts: row.get(6)?,
        started_at: Timestamp(row.get(7)?),
        ended_at: row.get::<_, Option<i64>>(8)?.map(Timestamp),
        checkpoint: opt_json_at(row, 9)?,
    })
}

fn read_step(conn: &Connection, run: &RunId, step: &str) -> rusqlite::Result<Option<StepRecord>> {
    let sql = format!("SELECT {COLUMNS} FROM steps WHERE run_id = ?1 AND name = ?2");
    conn.query_row(&sql, params![run.0, step], step_from_row).optional()
}

/// Next position in the run's step order.
const NEXT_SEQ: &str = "(SELECT COALESCE(MAX(seq), 0) + 1 FROM steps WHERE run_id = ?1)";

impl Store {
    /// Record the intent of `step` before acting. A step begun again (a
    /// resumed run) keeps its first `started_at`, counts one more attempt,
    /// replaces the intent and clears the previous output and error. The
    /// caller decides whether a `done` step needs running again.
    pub fn begin_step(
        &self,
        run: &RunId,
        step: &str,
        intent: &serde_json::Value,
        now: Timestamp,
    ) -> Result<StepRecord, StoreError> {
        let mut conn = self.conn();
        let err = |source| StoreError::BeginStep {
            run: run.clone(),
            step: step.to_string(),
            source,
        };
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err)?;
        let sql = format!(
            "INSERT INTO steps (run_id, name, seq, state, intent, attempts, started_at)
             VALUES (?1, ?2, {NEXT_SEQ}, ?3, ?4, 1, ?5)
             ON CONFLICT (run_id, name) DO UPDATE SET
                 state = excluded.state, intent = excluded.intent, attempts = attempts + 1,
                 output = NULL, error = NULL, ended_at = NULL"
        );
        tx.execute(
            &sql,
            params![run.0, step, StepState::Running, intent.to_string(), now.0],
        )
        .map_err(err)?;
        let record = read_step(&tx, run, step)
            .map_err(err)?
            .ok_or(rusqlite::Error::QueryReturnedNoRows)
            .map_err(err)?;
        tx.commit().map_err(err)?;
        Ok(record)
    }

    /// Record a running step's progress checkpoint (replacing the last one).
    /// It survives the step being begun again, so a resumed step can pick
    /// up what the interrupted attempt had reached.
    pub fn checkpoint_step(&self, run: &RunId, step: &str, checkpoint: &serde_json::Value) -> Result<(), StoreError> {
        self.update_step(
            run,
            step,
            "UPDATE steps SET checkpoint = ?3 WHERE run_id = ?1 AND name = ?2",
            params![run.0, step, checkpoint.to_string()],
        )
    }

    /// The step's side effect happened; record its output.
    pub fn finish_step(
        &self,
        run: &RunId,
        step: &str,
        output: &serde_json::Value,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        self.end_step(run, step, StepState::Done, Some(output.to_string()), None, now)
    }

    /// The step failed with `error`.
    pub fn fail_step(&self, run: &RunId, step: &str, error: &str, now: Timestamp) -> Result<(), StoreError> {
        self.end_step(run, step, StepState::Failed, None, Some(error), now)
    }

    fn end_step(
        &self,
        run: &RunId,
        step: &str,
        state: StepState,
        output: Option<String>,
        error: Option<&str>,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        self.update_step(
            run,
            step,
            "UPDATE steps SET state = ?3, output = ?4, error = ?5, ended_at = ?6 WHERE run_id = ?1 AND name = ?2",
            params![run.0, step, state, output, error, now.0],
        )
    }

    /// One UPDATE of an existing step's row.
    fn update_step(&self, run: &RunId, step: &str, sql: &str, args: impl rusqlite::Params) -> Result<(), StoreError> {
        let changed = self.conn().execute(sql, args).map_err(|source| StoreError::EndStep {
            run: run.clone(),
            step: step.to_string(),
            source,
        })?;
        if changed == 0 {
            return Err(StoreError::StepNotFound {
                run: run.clone(),
                step: step.to_string(),
            });
        }
        Ok(())
    }

    /// The run's steps in the order they were first begun.
    pub fn steps(&self, run: &RunId) -> Result<Vec<StepRecord>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM steps WHERE run_id = ?1 ORDER BY seq");
        let conn = self.conn();
        let query = || -> rusqlite::Result<Vec<StepRecord>> {
            let mut stmt = conn.prepare_cached(&sql)?;
            let rows = stmt.query_map([&run.0], step_from_row)?;
            rows.collect()
        };
        query().map_err(|source| StoreError::ReadSteps {
            run: run.clone(),
            source,
        })
    }

    /// One step of the run, if it was ever begun or skipped.
    pub fn step(&self, run: &RunId, step: &str) -> Result<Option<StepRecord>, StoreError> {
        read_step(&self.conn(), run, step).map_err(|source| StoreError::ReadSteps {
            run: run.clone(),
            source,
        })
    }
}
