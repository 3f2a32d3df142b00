//! repave-core: the vocabulary of repave — ids, time, config, patch selection,
//! provider traits and the pure rollout planner. Nothing here does IO or reads
//! a clock: time is always passed in.

pub mod budget;
pub mod builder;
pub mod config;
pub mod duration;
pub mod error;
pub mod ids;
pub mod patch;
pub mod processes;
pub mod provider;
pub mod rollout;

pub use error::{ErrorKind, ProviderError};
pub use ids::{CommandId, ImageId, InstanceId, RunId, Timestamp};
