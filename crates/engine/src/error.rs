use repave_core::ProviderError;
use repave_store::StoreError;

/// Why a run (or one of its steps) failed. Variants are named after the
/// action that failed.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("{step}: {source}")]
    Provider { step: String, source: ProviderError },
    #[error("preflight: {0}")]
    Preflight(String),
    #[error("patch: {0}")]
    Patch(String),
    #[error("validate: {0}")]
    Validate(String),
    #[error("test image {image}: {reason}")]
    TestImage { image: String, reason: String },
    #[error("{step}: timed out after {seconds}s: {what}")]
    Timeout { step: String, seconds: u64, what: String },
    #[error("{step}: instance {instance} is {state}")]
    InstanceGone {
        step: String,
        instance: String,
        state: String,
    },
    #[error("roll aborted: {0}")]
    RollAborted(String),
    #[error("verify: {0}")]
    Verify(String),
    #[error("cancelled")]
    Cancelled,
    /// The roll stopped at a safe point (window cutoff); resumable.
    #[error("paused: {0}")]
    Paused(String),
    #[error("group {group} is being changed by run {holder} (lease until {expires_at})")]
    Leased {
        group: String,
        holder: String,
        expires_at: i64,
    },
    #[error("run {0} not found")]
    UnknownRun(String),
    #[error("run {run} is {state}; nothing to resume")]
    NotResumable { run: String, state: String },
    #[error("config: {0}")]
    Config(String),
}

impl EngineError {
    pub fn provider(step: &str, source: ProviderError) -> Self {
        EngineError::Provider {
            step: step.to_string(),
            source,
        }
    }
}
