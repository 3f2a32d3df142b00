//! The one place errors become exit codes.

use repave_engine::EngineError;

pub const OK: i32 = 0;
pub const FAILED: i32 = 1;
pub const BAD_INPUT: i32 = 2;
pub const ROLLED_BACK: i32 = 3;
pub const LEASED: i32 = 4;
pub const PAUSED: i32 = 5;

/// An error with the exit code it deserves.
#[derive(Debug)]
pub struct Exit {
    pub code: i32,
    pub error: anyhow::Error,
}

impl Exit {
    pub fn bad_input(e: impl Into<anyhow::Error>) -> Self {
        Exit {
            code: BAD_INPUT,
            error: e.into(),
        }
    }
    pub fn failed(e: impl Into<anyhow::Error>) -> Self {
        Exit {
            code: FAILED,
            error: e.into(),
        }
    }
}

/// Standard output was closed by its reader (`repave logs RUN | head`):
/// the reader has all it wanted, so the command stops, quietly and with
/// success.
#[derive(Debug)]
pub struct OutputClosed;

impl std::fmt::Display for OutputClosed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("standard output was closed")
    }
}

impl std::error::Error for OutputClosed {}

impl Exit {
    /// Writing the command's output failed.
    pub fn output(e: std::io::Error) -> Self {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            Exit {
                code: OK,
                error: OutputClosed.into(),
            }
        } else {
            Exit::failed(anyhow::Error::new(e).context("writing to standard output"))
        }
    }

    /// Nothing to say: the output's reader went away.
    pub fn is_quiet(&self) -> bool {
        self.error.is::<OutputClosed>()
    }
}

impl From<anyhow::Error> for Exit {
    fn from(error: anyhow::Error) -> Self {
        if let Some(EngineError::Leased {
            group,
            holder,
            expires_at,
            driver,
        }) = error.downcast_ref::<EngineError>()
        {
            // People get the lease's end as a date and how far away it is,
            // and which process holds it.
            let now = repave_core::ids::Clock::now(&repave_core::ids::SystemClock).millis();
            let until = crate::output::time_from_now(*expires_at, now);
            let by = driver.as_ref().map(|d| format!(", driven by {d}")).unwrap_or_default();
            return Exit {
                code: LEASED,
                error: anyhow::anyhow!(
                    "group {group} is being changed by run {holder}{by} (its lease runs until {until})"
                ),
            };
        }
        let code = match error.downcast_ref::<EngineError>() {
            Some(EngineError::Leased { .. }) | Some(EngineError::Unfinished { .. }) => LEASED,
            Some(EngineError::Config(_)) => BAD_INPUT,
            Some(EngineError::UnknownRun(_)) | Some(EngineError::NotResumable { .. }) => BAD_INPUT,
            _ => FAILED,
        };
        Exit { code, error }
    }
}

impl From<EngineError> for Exit {
    fn from(e: EngineError) -> Self {
        anyhow::Error::new(e).into()
    }
}

/// Exit code for a finished run's state.
pub fn for_run_state(state: &str) -> i32 {
    match state {
        "succeeded" => OK,
        "rolled_back" => ROLLED_BACK,
        "paused" | "cancelled" => PAUSED,
        _ => FAILED,
    }
}
