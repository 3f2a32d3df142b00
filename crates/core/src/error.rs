//! Provider errors, classified so the engine knows what to retry.

use serde::{Deserialize, Serialize};

/// How the engine should treat a failed provider call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// Network blip, 5xx: retry with backoff.
    Transient,
    /// Rate limited: retry with a longer backoff.
    Throttled,
    /// The resource does not exist (or no longer does).
    NotFound,
    /// Retrying will not help: bad request, permission, invalid state.
    Permanent,
}

/// A provider call that failed: which operation, how, and the provider's own
/// message (an AWS error code is part of `message`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{operation}: {message} ({kind:?})")]
pub struct ProviderError {
    pub kind: ErrorKind,
    pub operation: String,
    pub message: String,
}

impl ProviderError {
    pub fn new(kind: ErrorKind, operation: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            kind,
            operation: operation.into(),
            message: message.into(),
        }
    }
    pub fn not_found(operation: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, operation, message)
    }
    pub fn permanent(operation: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Permanent, operation, message)
    }
    pub fn transient(operation: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Transient, operation, message)
    }
    pub fn is_retryable(&self) -> bool {
        matches!(self.kind, ErrorKind::Transient | ErrorKind::Throttled)
    }
    pub fn is_not_found(&self) -> bool {
        self.kind == ErrorKind::NotFound
    }
}
