//! Steady HTTP load at the balancer: concurrent keep-alive clients, every
//! outcome counted per time bucket. Bounded in time and count; only ever
//! aimed at 127.0.0.1.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Width of one bucket of the outcome timeline.
pub const BUCKET_MS: u64 = 250;
/// Hard bounds so a runaway demo stops by itself.
const MAX_DURATION: Duration = Duration::from_secs(20 * 60);
const MAX_REQUESTS_PER_CLIENT: u64 = 2_000_000;
/// Pause between one client's requests: steady load that leaves CPU for the
/// fleet on a small machine.
const PACE: Duration = Duration::from_millis(5);

#[derive(Debug, Default, Clone, Serialize)]
pub struct Bucket {
    pub ok: u64,
    pub failed: u64,
}

#[derive(Default)]
struct Shared {
    total: AtomicU64,
    failed: AtomicU64,
    buckets: Mutex<Vec<Bucket>>,
    errors: Mutex<Vec<String>>,
    images: Mutex<BTreeMap<String, u64>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    pub total: u64,
    pub failed: u64,
    pub seconds: f64,
    pub per_second: f64,
    pub clients: u32,
    /// First few failures, verbatim.
    pub errors: Vec<String>,
    /// Responses by the image the answering instance reported.
    pub by_image: BTreeMap<String, u64>,
    pub bucket_ms: u64,
    pub buckets: Vec<Bucket>,
}

pub struct Load {
    stop: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    shared: Arc<Shared>,
    started: Instant,
    clients: u32,
}

impl Load {
    /// `paced`: leave a few ms between one client's requests (steady load
    /// that leaves CPU to the fleet); unpaced measures throughput.
    pub fn start(addr: &str, clients: u32, paced: bool) -> Load {
        assert!(addr.starts_with("127.0.0.1:"), "load only targets loopback, got {addr}");
        let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build_http();
        let shared = Arc::new(Shared::default());
        let stop = CancellationToken::new();
        let started = Instant::now();
        let uri: hyper::Uri = format!("http://{addr}/").parse().expect("uri");
        let tasks = (0..clients)
            .map(|_| {
                let (client, shared, stop, uri) = (client.clone(), shared.clone(), stop.clone(), uri.clone());
                tokio::spawn(async move {
                    for _ in 0..MAX_REQUESTS_PER_CLIENT {
                        if stop.is_cancelled() || started.elapsed() > MAX_DURATION {
                            break;
                        }
                        let outcome = one(&client, &uri).await;
                        record(&shared, started, outcome);
                        if paced {
                            tokio::select! {
                                _ = stop.cancelled() => break,
                                _ = tokio::time::sleep(PACE) => {}
                            }
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            tasks,
            shared,
            started,
            clients,
        }
    }

    /// Stop sending, wait for in-flight requests, report.
    pub async fn finish(self) -> LoadReport {
        self.stop.cancel();
        for t in self.tasks {
            if let Err(e) = t.await {
                tracing::error!(error = %e, "load client task failed");
            }
        }
        let seconds = self.started.elapsed().as_secs_f64();
        let total = self.shared.total.load(Ordering::Relaxed);
        LoadReport {
            total,
            failed: self.shared.failed.load(Ordering::Relaxed),
            seconds,
            per_second: total as f64 / seconds.max(0.001),
            clients: self.clients,
            errors: self.shared.errors.lock().expect("errors").clone(),
            by_image: self.shared.images.lock().expect("images").clone(),
            bucket_ms: BUCKET_MS,
            buckets: self.shared.buckets.lock().expect("buckets").clone(),
        }
    }
}

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>>;

/// One request: Ok(image the instance reported) or Err(why it failed).
async fn one(client: &HttpClient, uri: &hyper::Uri) -> Result<String, String> {
    let resp = tokio::time::timeout(Duration::from_secs(30), client.get(uri.clone()))
        .await
        .map_err(|_| "timed out after 30s".to_string())?
        .map_err(|e| format!("request failed: {e}"))?;
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("body failed: {e}"))?
        .to_bytes();
    if !status.is_success() {
        return Err(format!(
            "HTTP {status}: {}",
            String::from_utf8_lossy(&body[..body.len().min(200)])
        ));
    }
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    Ok(v.get("image").and_then(|i| i.as_str()).unwrap_or("?").to_string())
}

fn record(shared: &Shared, started: Instant, outcome: Result<String, String>) {
    shared.total.fetch_add(1, Ordering::Relaxed);
    let idx = (started.elapsed().as_millis() as u64 / BUCKET_MS) as usize;
    let mut buckets = shared.buckets.lock().expect("buckets");
    if buckets.len() <= idx {
        buckets.resize(idx + 1, Bucket::default());
    }
    match outcome {
        Ok(image) => {
            buckets[idx].ok += 1;
            *shared.images.lock().expect("images").entry(image).or_default() += 1;
        }
        Err(e) => {
            buckets[idx].failed += 1;
            shared.failed.fetch_add(1, Ordering::Relaxed);
            let mut errors = shared.errors.lock().expect("errors");
            if errors.len() < 20 {
                errors.push(e);
            }
        }
    }
}
