//! repave-engine: executes runs. Each step's intent is journaled in the
//! store before its side effect and its output after, so a run killed at any
//! instant resumes (done steps are skipped, the interrupted one re-runs and
//! finds what it already created by its tags).

mod bake;
mod call;
mod command;
mod context;
mod error;
mod events;
mod executor;
mod gc;
pub mod journal;
mod native;
mod options;
mod processes;
mod publish;
mod references;
mod retain;
mod roll;
mod sequence;
mod summary;
mod wait;
mod warm_pool;

pub use error::EngineError;
pub use events::{EngineEvent, NullObserver, Observer};
pub use executor::{Engine, EngineOptions};
pub use gc::{gc, GcAction};
pub use references::{disposable, image_references, Verdict};
pub use roll::{observe, RollSample};
pub use summary::{RollReport, RunOutcome, RunSummary};
