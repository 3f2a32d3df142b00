//! Records the store reads and writes. Enums are stored as the same
//! snake_case strings serde uses.

use repave_core::{RunId, Timestamp};
use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};
use serde::{Deserialize, Serialize};

/// An enum name that is not one of the known values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} {value:?}")]
pub struct UnknownName {
    pub kind: &'static str,
    pub value: String,
}

/// A fieldless enum with a fixed string per variant: `as_str`, `FromStr`,
/// `Display`, and SQL conversion through that string.
macro_rules! named_enum {
    ($(#[$doc:meta])* $name:ident : $kind:literal { $($(#[$vdoc:meta])* $variant:ident = $s:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($(#[$vdoc])* $variant),+ }

        impl $name {
            /// The stored / serialized name.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $s),+ }
            }
        }

        impl std::str::FromStr for $name {
            type Err = UnknownName;
            fn from_str(s: &str) -> Result<Self, UnknownName> {
                match s {
                    $($s => Ok($name::$variant),)+
                    _ => Err(UnknownName { kind: $kind, value: s.to_string() }),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ToSql for $name {
            fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
                Ok(ToSqlOutput::from(self.as_str()))
            }
        }

        impl FromSql for $name {
            fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
                value.as_str()?.parse().map_err(|e| FromSqlError::Other(Box::new(e)))
            }
        }
    };
}

named_enum!(
    /// What a run does.
    RunKind: "run kind" {
        /// Bake, publish and roll.
        Run = "run",
        /// Bake and publish an image only.
        Bake = "bake",
        /// Roll the group onto the published image only.
        Roll = "roll",
        /// Return to the previous image.
        Rollback = "rollback",
    }
);

named_enum!(
    /// Where a run is.
    RunState: "run state" {
        Pending = "pending",
        Running = "running",
        /// Stopped at a checkpoint or window cutoff; resumes later.
        Paused = "paused",
        Succeeded = "succeeded",
        Failed = "failed",
        /// Failed after publish and returned to the previous image.
        RolledBack = "rolled_back",
        Cancelled = "cancelled",
    }
);

impl RunState {
    /// The run is over; `ended_at` is set.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            RunState::Succeeded | RunState::Failed | RunState::RolledBack | RunState::Cancelled
        )
    }
}

named_enum!(
    /// Where a step is.
    StepState: "step state" {
        /// Intent recorded; the side effect may or may not have happened.
        Running = "running",
        Done = "done",
        Failed = "failed",
    }
);

/// A run to create.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewRun {
    pub pipeline: String,
    pub group: String,
    pub kind: RunKind,
    pub provider: String,
    /// The pipeline config the run executes (frozen at start).
    pub config: serde_json::Value,
    pub now: Timestamp,
    /// Where the group lives when one store sees groups of the same name
    /// in several places ([`lease_key`]); `None` for the one place.
    pub place: Option<String>,
}

/// The key a group's lease is held under: the group's name, qualified by
/// its place when it has one (`web-asg@123456789012/us-east-2`), so two
/// accounts' or regions' groups of one name are two groups.
pub fn lease_key(group: &str, place: Option<&str>) -> String {
    match place {
        Some(p) => format!("{group}@{p}"),
        None => group.to_string(),
    }
}

/// One execution of a pipeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub id: RunId,
    pub pipeline: String,
    pub group: String,
    pub kind: RunKind,
    pub provider: String,
    pub state: RunState,
    pub error: Option<String>,
    pub started_at: Timestamp,
    /// Set when the run reached a terminal state.
    pub ended_at: Option<Timestamp>,
    pub config: serde_json::Value,
    pub summary: Option<serde_json::Value>,
    /// Where its group lives ([`NewRun::place`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub place: Option<String>,
}

impl RunRecord {
    /// The key of the lease this run holds while driven ([`lease_key`]).
    pub fn lease_key(&self) -> String {
        lease_key(&self.group, self.place.as_deref())
    }
}

/// Which runs [`crate::Store::list_runs`] returns; `None` matches all.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunFilter {
    pub pipeline: Option<String>,
    pub group: Option<String>,
    pub state: Option<RunState>,
    /// At most this many (newest first).
    pub limit: Option<u32>,
}

/// One step of a run: its intent, recorded before the side effect, and its
/// output, recorded after.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    pub run: RunId,
    pub name: String,
    pub state: StepState,
    /// The intent of the latest attempt.
    pub intent: serde_json::Value,
    pub output: Option<serde_json::Value>,
    pub error: Option<String>,
    /// How many times the step was begun (2 after one resume).
    pub attempts: u32,
    /// When the first attempt began.
    pub started_at: Timestamp,
    pub ended_at: Option<Timestamp>,
    /// The latest progress checkpoint of a long step (kept across attempts).
    pub checkpoint: Option<serde_json::Value>,
}

/// An audit event to append.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewEvent {
    pub run: RunId,
    pub at: Timestamp,
    /// "info", "warn" or "error".
    pub level: String,
    pub step: Option<String>,
    pub message: String,
    pub data: serde_json::Value,
}

/// An audit event as stored; `id` grows with every append.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventRecord {
    pub id: i64,
    pub run: RunId,
    pub at: Timestamp,
    pub level: String,
    pub step: Option<String>,
    pub message: String,
    pub data: serde_json::Value,
}

/// The right to act on a group until `expires_at`. `token` (the fencing
/// token) grows with every change of holder; writers check it is still
/// current before acting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub group: String,
    pub holder: String,
    pub token: i64,
    pub expires_at: Timestamp,
    /// The process holding it (None on leases written before schema 4).
    pub driver: Option<crate::Driver>,
}
