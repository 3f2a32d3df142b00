//! Retrying provider calls: transient and throttled errors back off and try
//! again; anything else is returned at once.

use crate::error::EngineError;
use repave_core::{ErrorKind, ProviderError};
use std::future::Future;
use std::time::Duration;

const ATTEMPTS: u32 = 6;

pub async fn retry<T, F, Fut>(step: &str, mut f: F) -> Result<T, EngineError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ProviderError>>,
{
    let mut delay = Duration::from_millis(100);
    for attempt in 1..=ATTEMPTS {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) if e.is_retryable() && attempt < ATTEMPTS => {
                tracing::warn!(step, attempt, error = %e, "retrying");
                let d = if e.kind == ErrorKind::Throttled {
                    delay * 4
                } else {
                    delay
                };
                tokio::time::sleep(d).await;
                delay = (delay * 2).min(Duration::from_secs(10));
            }
            Err(e) => return Err(EngineError::provider(step, e)),
        }
    }
    unreachable!("the last attempt returns")
}
