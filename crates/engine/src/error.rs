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
    #[error("group {group} is being changed by run {holder}{} (lease until {})", driver.as_ref().map(|d| format!(", driven by {d}")).unwrap_or_default(), repave_core::ids::format_timestamp(*expires_at))]
    Leased {
        group: String,
        holder: String,
        expires_at: i64,
        /// The process driving it, where known.
        driver: Option<repave_store::Driver>,
    },
    /// The group has a run that has not ended (paused, or interrupted with
    /// no process driving it): a new one would take its surge for the
    /// fleet's size and act on a half-rolled group.
    #[error("group {group} has an unfinished run {run} ({state}): `repave resume {run}` finishes it{}", if *state == "paused" { format!(", `repave cancel {run}` ends it") } else { ", or `repave gc` ends it if it stopped before publish".to_string() })]
    Unfinished { group: String, run: String, state: String },
    #[error("run {0} not found")]
    UnknownRun(String),
    #[error("run {run} is {state}; nothing to resume")]
    NotResumable { run: String, state: String },
    #[error("config: {0}")]
    Config(String),
}

impl EngineError {
    /// Whether the image is at fault: its patch, validation or test failed,
    /// or its instances did not become healthy. Only these mark an image
    /// bad and roll a fleet back; everything else (a lost provider or fleet
    /// process, a limit, a timeout, cancel, a lost lease, a full disk) leaves
    /// the image alone and pauses or fails the run with the reason.
    pub fn blames_image(&self) -> bool {
        matches!(
            self,
            EngineError::Patch(_)
                | EngineError::Validate(_)
                | EngineError::TestImage { .. }
                | EngineError::RollAborted(_)
                | EngineError::Verify(_)
        )
    }

    pub fn provider(step: &str, source: ProviderError) -> Self {
        EngineError::Provider {
            step: step.to_string(),
            source,
        }
    }
}
