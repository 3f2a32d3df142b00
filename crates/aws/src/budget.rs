//! One request budget per account and region, shared by every provider (and
//! so every pipeline) a process drives there: an HTTP client wrapper that
//! takes a token from the action's bucket before each attempt goes out.
//!
//! At the HTTP layer, so SDK retries spend tokens as they do at AWS, and a
//! request waits for its token instead of being sent, throttled and retried.
//! The buckets follow AWS's token buckets (see
//! [`repave_core::budget::ApiBucket::documented_limit`]).

use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::HttpRequest;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use repave_core::budget::{ApiBucket, Limit, Service, TokenBucket};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The buckets of one account and region.
#[derive(Debug)]
pub struct RequestBudget {
    percent: u32,
    start: tokio::time::Instant,
    buckets: Mutex<HashMap<ApiBucket, TokenBucket>>,
    /// Requests sent and time spent waiting, per bucket.
    stats: Mutex<BTreeMap<ApiBucket, BucketStats>>,
}

/// What a bucket let through.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BucketStats {
    pub requests: u64,
    /// Requests that had to wait for a token.
    pub delayed: u64,
    pub waited: Duration,
    /// When each request was let through, seconds since the budget was made
    /// (the last 10,000).
    pub times: Vec<f64>,
}

const KEEP_TIMES: usize = 10_000;

impl RequestBudget {
    /// `percent` of each documented bucket (1..=100).
    pub fn new(percent: u32) -> Arc<RequestBudget> {
        Arc::new(RequestBudget {
            percent,
            start: tokio::time::Instant::now(),
            buckets: Mutex::new(HashMap::new()),
            stats: Mutex::new(BTreeMap::new()),
        })
    }

    /// The limit repave keeps to for `bucket`.
    pub fn limit(&self, bucket: ApiBucket) -> Limit {
        bucket.documented_limit().share(self.percent)
    }

    fn now(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    /// Wait for a token of `bucket`.
    pub async fn acquire(&self, bucket: ApiBucket) {
        let mut waited = Duration::ZERO;
        loop {
            let now = self.now();
            let result = {
                let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
                buckets
                    .entry(bucket)
                    .or_insert_with(|| TokenBucket::new(self.limit(bucket), now))
                    .take(now)
            };
            match result {
                Ok(()) => break,
                Err(wait) => {
                    let d = Duration::from_secs_f64(wait.max(0.001));
                    waited += d;
                    tokio::time::sleep(d).await;
                }
            }
        }
        let mut stats = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        let s = stats.entry(bucket).or_default();
        s.requests += 1;
        if !waited.is_zero() {
            s.delayed += 1;
            s.waited += waited;
        }
        if s.times.len() >= KEEP_TIMES {
            s.times.remove(0);
        }
        s.times.push(self.now());
    }

    /// Per-bucket statistics so far.
    pub fn stats(&self) -> BTreeMap<ApiBucket, BucketStats> {
        self.stats.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// The action of a request: `Action=` of a Query body (EC2, Auto Scaling,
/// ELB), else the `X-Amz-Target` operation (SSM's JSON protocol).
pub(crate) fn action_of(request: &HttpRequest) -> String {
    if let Some(target) = request.headers().get("x-amz-target") {
        return target.rsplit('.').next().unwrap_or(target).to_string();
    }
    let body = request.body().bytes().unwrap_or_default();
    let text = String::from_utf8_lossy(body);
    text.split('&')
        .find_map(|kv| kv.strip_prefix("Action="))
        .unwrap_or("unknown")
        .to_string()
}

/// An HTTP client whose requests wait for the budget first.
#[derive(Debug, Clone)]
pub(crate) struct BudgetedClient {
    inner: SharedHttpClient,
    budget: Arc<RequestBudget>,
    service: Service,
}

impl BudgetedClient {
    pub(crate) fn new(inner: SharedHttpClient, budget: Arc<RequestBudget>, service: Service) -> Self {
        Self { inner, budget, service }
    }
}

#[derive(Debug)]
struct BudgetedConnector {
    inner: SharedHttpConnector,
    budget: Arc<RequestBudget>,
    service: Service,
}

impl HttpConnector for BudgetedConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let bucket = ApiBucket::for_action(self.service, &action_of(&request));
        let (inner, budget) = (self.inner.clone(), self.budget.clone());
        HttpConnectorFuture::new(async move {
            budget.acquire(bucket).await;
            inner.call(request).await
        })
    }
}

impl HttpClient for BudgetedClient {
    fn http_connector(&self, settings: &HttpConnectorSettings, components: &RuntimeComponents) -> SharedHttpConnector {
        SharedHttpConnector::new(BudgetedConnector {
            inner: self.inner.http_connector(settings, components),
            budget: self.budget.clone(),
            service: self.service,
        })
    }
}

/// The HTTPS client the SDK would have used (rustls with aws-lc, proxy from
/// the environment), for wrapping when the config names none.
pub(crate) fn default_http_client() -> SharedHttpClient {
    use aws_smithy_http_client::proxy::ProxyConfig;
    use aws_smithy_http_client::{tls, Builder, ConnectorBuilder};
    Builder::new().build_with_connector_fn(move |settings, components| {
        let mut conn =
            ConnectorBuilder::default().tls_provider(tls::Provider::Rustls(tls::rustls_provider::CryptoMode::AwsLc));
        conn.set_connector_settings(settings.cloned());
        if let Some(components) = components {
            conn.set_sleep_impl(components.sleep_impl());
        }
        conn.set_proxy_config(Some(ProxyConfig::from_env()));
        conn.build()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn requests_beyond_the_bucket_wait_for_refill() {
        let budget = RequestBudget::new(50);
        // Auto Scaling: 40 tokens, 10/s; half: 20 tokens, 5/s.
        let limit = budget.limit(ApiBucket::AutoScaling);
        assert_eq!((limit.capacity, limit.refill_per_second), (20.0, 5.0));
        let start = tokio::time::Instant::now();
        for _ in 0..30 {
            budget.acquire(ApiBucket::AutoScaling).await;
        }
        // 20 at once, 10 more at 5 per second.
        let took = start.elapsed().as_secs_f64();
        assert!((took - 2.0).abs() < 0.05, "{took}");
        let stats = &budget.stats()[&ApiBucket::AutoScaling];
        assert_eq!((stats.requests, stats.delayed), (30, 10));
        assert_eq!(repave_core::budget::conforms(&stats.times, limit), Ok(()));
        // Another bucket is untouched.
        let t = tokio::time::Instant::now();
        budget.acquire(ApiBucket::Ec2NonMutating).await;
        assert_eq!(t.elapsed(), Duration::ZERO);
    }
}
