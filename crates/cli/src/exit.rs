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

impl From<anyhow::Error> for Exit {
    fn from(error: anyhow::Error) -> Self {
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
