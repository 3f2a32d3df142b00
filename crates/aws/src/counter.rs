//! Counts AWS API calls by operation: an SDK interceptor shared by the four
//! clients, so the run summary can say what a roll cost.

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextRef;
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
}

impl CallCounter {
    pub(crate) fn snapshot(&self) -> BTreeMap<String, u64> {
        self.calls.lock().expect("counter lock").clone()
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
        let op = cfg
            .load::<Metadata>()
            .map(|m| m.name().to_string())
            .unwrap_or_else(|| "unknown".into());
        *self.calls.lock().expect("counter lock").entry(op).or_insert(0) += 1;
        Ok(())
    }
}
