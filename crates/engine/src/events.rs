//! What the engine tells whoever watches a run (progress bars, the server).

use repave_core::rollout::RollStatus;
use repave_core::RunId;
use std::time::Duration;

#[derive(Debug, Clone)]
pub enum EngineEvent {
    RunStarted {
        run: RunId,
        pipeline: String,
    },
    StepStarted {
        run: RunId,
        step: String,
    },
    StepFinished {
        run: RunId,
        step: String,
        elapsed: Duration,
        resumed: bool,
    },
    StepFailed {
        run: RunId,
        step: String,
        error: String,
    },
    Log {
        run: RunId,
        step: String,
        message: String,
    },
    RollTick {
        run: RunId,
        status: RollStatus,
        replaced: u32,
        total: u32,
    },
    RunFinished {
        run: RunId,
        state: repave_store::RunState,
    },
}

pub trait Observer: Send + Sync {
    fn on_event(&self, event: &EngineEvent);
}

pub struct NullObserver;

impl Observer for NullObserver {
    fn on_event(&self, _: &EngineEvent) {}
}
