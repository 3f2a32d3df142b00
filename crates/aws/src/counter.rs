//! Counts AWS API calls by operation: an SDK interceptor shared by the four
//! clients, so the run summary can say what a roll cost.

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::{
    BeforeDeserializationInterceptorContextRef, BeforeTransmitInterceptorContextRef,
};
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// Cloned into every client; all clones share one table.
#[derive(Debug, Clone, Default)]
pub(crate) struct CallCounter {
    calls: Arc<Mutex<BTreeMap<String, u64>>>,
    /// Attempts AWS answered with a throttling error, by operation.
    throttled: Arc<Mutex<BTreeMap<String, u64>>>,
}

/// Error codes AWS uses to say "slow down" (EC2, Auto Scaling, SSM, ELB).
const THROTTLING_CODES: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestLimitExceeded",
    "RequestThrottled",
    "RequestThrottledException",
    "TooManyRequestsException",
    "SlowDown",
];

fn operation(cfg: &ConfigBag) -> String {
    cfg.load::<Metadata>()
        .map(|m| m.name().to_string())
        .unwrap_or_else(|| "unknown".into())
}

impl CallCounter {
    pub(crate) fn snapshot(&self) -> BTreeMap<String, u64> {
        self.calls.lock().expect("counter lock").clone()
    }

    pub(crate) fn throttled(&self) -> BTreeMap<String, u64> {
        self.throttled.lock().expect("counter lock").clone()
    }
}

impl Intercept for CallCounter {
    fn name(&self) -> &'static str {
        "RepaveCallCounter"
    }

    // Before transmit: once per attempt, so SDK retries count as calls (they
    // are, for quotas and throttling).
    fn read_before_transmit(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let op = operation(cfg);
        *self.calls.lock().expect("counter lock").entry(op).or_insert(0) += 1;
        Ok(())
    }

    // Before deserialization: every attempt's raw response, retries included,
    // so throttling the SDK retried away is still counted.
    fn read_before_deserialization(
        &self,
        context: &BeforeDeserializationInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let response = context.response();
        let status = response.status().as_u16();
        let throttled = status == 429
            || (matches!(status, 400 | 503)
                && response.body().bytes().is_some_and(|b| {
                    let text = String::from_utf8_lossy(b);
                    THROTTLING_CODES.iter().any(|code| {
                        text.contains(&format!("<Code>{code}</Code>")) || text.contains(&format!("\"{code}\""))
                    })
                }));
        if throttled {
            *self
                .throttled
                .lock()
                .expect("counter lock")
                .entry(operation(cfg))
                .or_insert(0) += 1;
        }
        Ok(())
    }
}
