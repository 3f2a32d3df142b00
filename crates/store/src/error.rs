//! The store's one error enum: variants are named after the action that
//! failed and carry what it was acting on.

use repave_core::{RunId, Timestamp};
use std::path::PathBuf;

type Sql = rusqlite::Error;

/// A store operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("create state directory {path}")]
    CreateDir { path: PathBuf, source: std::io::Error },
    #[error("open database {path}")]
    OpenDatabase { path: PathBuf, source: Sql },
    #[error("migrate database to schema version {version}")]
    Migrate { version: u32, source: Sql },
    #[error("database schema version {found} is newer than this repave supports ({supported}); upgrade repave")]
    SchemaTooNew { found: u32, supported: u32 },
    #[error("create run for pipeline {pipeline}")]
    CreateRun { pipeline: String, source: Sql },
    #[error("read run {id}")]
    GetRun { id: RunId, source: Sql },
    #[error("list runs")]
    ListRuns { source: Sql },
    #[error("set state of run {id}")]
    SetRunState { id: RunId, source: Sql },
    #[error("set summary of run {id}")]
    SetRunSummary { id: RunId, source: Sql },
    #[error("run {id} not found")]
    RunNotFound { id: RunId },
    #[error("begin step {step} of run {run}")]
    BeginStep { run: RunId, step: String, source: Sql },
    #[error("record end of step {step} of run {run}")]
    EndStep { run: RunId, step: String, source: Sql },
    #[error("step {step} of run {run} not found")]
    StepNotFound { run: RunId, step: String },
    #[error("read steps of run {run}")]
    ReadSteps { run: RunId, source: Sql },
    #[error("append event to run {run}")]
    AppendEvent { run: RunId, source: Sql },
    #[error("read events of run {run}")]
    ReadEvents { run: RunId, source: Sql },
    #[error("acquire lease on group {group}")]
    AcquireLease { group: String, source: Sql },
    #[error("group {group} is leased by {holder} until {}", expires_at.0)]
    LeaseHeld {
        group: String,
        holder: String,
        expires_at: Timestamp,
        /// The process holding it, where recorded.
        driver: Option<crate::Driver>,
    },
    #[error("renew lease on group {group}")]
    RenewLease { group: String, source: Sql },
    #[error("release lease on group {group}")]
    ReleaseLease { group: String, source: Sql },
    #[error("read lease on group {group}")]
    ReadLease { group: String, source: Sql },
    #[error("read schedule of pipeline {pipeline}")]
    ReadSchedule { pipeline: String, source: Sql },
    #[error("write schedule of pipeline {pipeline}")]
    WriteSchedule { pipeline: String, source: Sql },
    #[error("queue webhook notice")]
    QueueNotice { source: Sql },
    #[error("read webhook outbox")]
    ReadOutbox { source: Sql },
    #[error("record delivery of webhook notice {id}")]
    RecordNotice { id: i64, source: Sql },
    #[error("lease on group {group} (token {token}, holder {holder}) is no longer held: expired or taken over")]
    LeaseLost { group: String, holder: String, token: i64 },
}

impl StoreError {
    /// Another process held the database longer than the busy timeout;
    /// trying again later may succeed.
    pub fn is_retryable(&self) -> bool {
        use rusqlite::ErrorCode::{DatabaseBusy, DatabaseLocked};
        let source = std::error::Error::source(self).and_then(|s| s.downcast_ref::<Sql>());
        matches!(source, Some(Sql::SqliteFailure(e, _)) if matches!(e.code, DatabaseBusy | DatabaseLocked))
    }
}
