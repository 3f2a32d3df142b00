//! The crate's one error enum, and its mapping to the core's classified
//! [`ProviderError`].

use repave_core::{ErrorKind, ProviderError};

/// What went wrong in the local provider; variants name the action that failed.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    /// No daemon answers on the socket (not started, or it died).
    #[error("no local daemon at {socket}: {source}")]
    Connect { socket: String, source: std::io::Error },
    /// Spawning the daemon failed or it did not answer in time.
    #[error("starting the local daemon: {0}")]
    StartDaemon(String),
    /// The connection broke mid-request or the answer was malformed.
    #[error("talking to the local daemon: {0}")]
    Protocol(String),
    /// The daemon refused or failed the request.
    #[error("{message}")]
    Request { kind: ErrorKind, message: String },
    /// The fleet's state dir (or its lock file or socket) was deleted or
    /// replaced: the fleet process stops what it started and exits.
    #[error("the local fleet's state is gone ({0}); its fleet process stopped its instances and exited")]
    StateGone(String),
    /// The fleet's socket was deleted or replaced: nobody can reach it, so
    /// the fleet process stops the fleet (state saved) and exits.
    #[error("the local fleet's socket is gone ({0}); its fleet process stopped the fleet and exited")]
    Unreachable(String),
    /// Local IO (state, blobs, roots, sockets).
    #[error("{action}: {source}")]
    Io { action: String, source: std::io::Error },
}

impl LocalError {
    /// A request error of the given kind.
    pub fn request(kind: ErrorKind, message: impl Into<String>) -> Self {
        LocalError::Request {
            kind,
            message: message.into(),
        }
    }
    /// The resource does not exist.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::request(ErrorKind::NotFound, message)
    }
    /// Bad request or invalid state: retrying will not help.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::request(ErrorKind::Permanent, message)
    }
    /// Wrap an IO error with what was being done.
    pub fn io(action: impl Into<String>, source: std::io::Error) -> Self {
        LocalError::Io {
            action: action.into(),
            source,
        }
    }
    /// How the engine should treat it.
    pub fn kind(&self) -> ErrorKind {
        match self {
            LocalError::Connect { .. } | LocalError::Protocol(_) | LocalError::StartDaemon(_) => ErrorKind::Transient,
            LocalError::Request { kind, .. } => *kind,
            LocalError::Io { .. } | LocalError::StateGone(_) | LocalError::Unreachable(_) => ErrorKind::Transient,
        }
    }
    /// Whether retrying may help.
    pub fn is_retryable(&self) -> bool {
        matches!(self.kind(), ErrorKind::Transient | ErrorKind::Throttled)
    }
}

impl From<LocalError> for ProviderError {
    fn from(e: LocalError) -> Self {
        ProviderError::new(e.kind(), "local", e.to_string())
    }
}
