//! One HTTP reverse proxy per group on 127.0.0.1:<group port>: active health
//! checks, round-robin over healthy targets, draining, and retry of requests
//! whose upstream connection failed before any response.

use crate::protocol::BalancerStats;
use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full, Limited};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use repave_core::config::HealthCheck;
use repave_core::provider::{TargetHealth, TargetState};
use repave_core::{InstanceId, Timestamp};
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Request bodies up to this size are buffered so the request can be retried.
pub const MAX_BUFFERED_BODY: usize = 1024 * 1024;
/// Retries on another target after a failed upstream connection.
const MAX_RETRIES: usize = 2;
/// How often draining targets are checked for completion.
const DRAIN_TICK: Duration = Duration::from_millis(50);

type ProxyBody = UnsyncBoxBody<Bytes, hyper::Error>;

#[derive(Debug)]
struct Target {
    addr: String,
    state: TargetState,
    since: Timestamp,
    in_flight: Arc<AtomicU32>,
    successes: u32,
    failures: u32,
    drain_deadline: Option<Instant>,
}

impl Target {
    fn enter(&mut self, state: TargetState) {
        if self.state != state {
            self.state = state;
            self.since = crate::util::now();
        }
    }
}

struct Inner {
    group: String,
    targets: Mutex<BTreeMap<InstanceId, Target>>,
    next: AtomicUsize,
    stats: Mutex<BalancerStats>,
    health: HealthCheck,
    deregistration_delay: Duration,
    client: Client<HttpConnector, ProxyBody>,
    stop: CancellationToken,
}

/// A running balancer; dropping the handle does not stop it, [`Balancer::stop`] does.
#[derive(Clone)]
pub struct Balancer {
    inner: Arc<Inner>,
    addr: SocketAddr,
}

/// Decrements a target's in-flight count when the response body is done.
struct InFlight(Arc<AtomicU32>);

impl InFlight {
    fn new(c: Arc<AtomicU32>) -> Self {
        c.fetch_add(1, Ordering::SeqCst);
        Self(c)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The upstream response body, holding the in-flight guard until streamed.
struct GuardedBody {
    inner: Incoming,
    _guard: InFlight,
}

impl Body for GuardedBody {
    type Data = Bytes;
    type Error = hyper::Error;
    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

fn full(b: impl Into<Bytes>) -> ProxyBody {
    Full::new(b.into())
        .map_err(|never: Infallible| match never {})
        .boxed_unsync()
}

fn status(code: StatusCode, msg: &str) -> Response<ProxyBody> {
    let mut r = Response::new(full(msg.to_string()));
    *r.status_mut() = code;
    r
}

const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

fn strip_hop_by_hop(h: &mut hyper::HeaderMap) {
    for name in HOP_BY_HOP {
        h.remove(*name);
    }
}

impl Balancer {
    /// Bind 127.0.0.1:`port` and start serving and health checking.
    pub fn start(
        group: &str,
        port: u16,
        health: HealthCheck,
        deregistration_delay: Duration,
    ) -> std::io::Result<Balancer> {
        let socket = tokio::net::TcpSocket::new_v4()?;
        // A restarted daemon must get its port back despite TIME_WAIT.
        socket.set_reuseaddr(true)?;
        socket.bind(SocketAddr::from(([127, 0, 0, 1], port)))?;
        let listener = socket.listen(1024)?;
        let addr = listener.local_addr()?;
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(2)));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        let inner = Arc::new(Inner {
            group: group.to_string(),
            targets: Mutex::new(BTreeMap::new()),
            next: AtomicUsize::new(0),
            stats: Mutex::new(BalancerStats::default()),
            health,
            deregistration_delay,
            client,
            stop: CancellationToken::new(),
        });
        tokio::spawn(accept_loop(inner.clone(), listener));
        tokio::spawn(health_loop(inner.clone()));
        tokio::spawn(drain_loop(inner.clone()));
        Ok(Balancer { inner, addr })
    }

    /// `127.0.0.1:PORT`.
    pub fn address(&self) -> String {
        self.addr.to_string()
    }

    /// Stop listening and checking.
    pub fn stop(&self) {
        self.inner.stop.cancel();
    }

    /// Register a target (state Initial) unless it is already registered.
    pub fn register(&self, id: &InstanceId, addr: &str) {
        let mut t = self.inner.targets.lock().expect("balancer lock");
        t.entry(id.clone()).or_insert_with(|| Target {
            addr: addr.to_string(),
            state: TargetState::Initial,
            since: crate::util::now(),
            in_flight: Arc::new(AtomicU32::new(0)),
            successes: 0,
            failures: 0,
            drain_deadline: None,
        });
    }

    /// Stop sending new requests; the target leaves once idle or after the
    /// deregistration delay.
    pub fn drain(&self, id: &InstanceId) {
        let mut t = self.inner.targets.lock().expect("balancer lock");
        if let Some(target) = t.get_mut(id) {
            if target.state != TargetState::Draining {
                target.enter(TargetState::Draining);
                target.drain_deadline = Some(Instant::now() + self.inner.deregistration_delay);
            }
        }
    }

    /// Forget a target at once (its process is gone).
    pub fn remove(&self, id: &InstanceId) {
        self.inner.targets.lock().expect("balancer lock").remove(id);
    }

    /// The target's state and when it was entered; `None` when not registered.
    pub fn target(&self, id: &InstanceId) -> Option<TargetHealth> {
        let t = self.inner.targets.lock().expect("balancer lock");
        t.get(id).map(|x| TargetHealth {
            instance: id.clone(),
            state: x.state,
            since: x.since,
            in_flight: Some(x.in_flight.load(Ordering::SeqCst)),
        })
    }

    /// Counters since start.
    pub fn stats(&self) -> BalancerStats {
        *self.inner.stats.lock().expect("stats lock")
    }
}

impl Inner {
    fn pick(&self, exclude: &[InstanceId]) -> Option<(InstanceId, String, Arc<AtomicU32>)> {
        let t = self.targets.lock().expect("balancer lock");
        let healthy: Vec<(&InstanceId, &Target)> = t
            .iter()
            .filter(|(id, x)| x.state == TargetState::Healthy && !exclude.contains(id))
            .collect();
        if healthy.is_empty() {
            return None;
        }
        let (id, x) = healthy[self.next.fetch_add(1, Ordering::Relaxed) % healthy.len()];
        Some((id.clone(), x.addr.clone(), x.in_flight.clone()))
    }

    /// Passive health: a refused connection takes the target out at once;
    /// active checks bring it back.
    fn connection_failed(&self, id: &InstanceId) {
        let mut t = self.targets.lock().expect("balancer lock");
        if let Some(x) = t.get_mut(id) {
            if matches!(x.state, TargetState::Healthy | TargetState::Initial) {
                x.enter(TargetState::Unhealthy);
                x.successes = 0;
            }
        }
    }

    fn count(&self, f: impl FnOnce(&mut BalancerStats)) {
        f(&mut self.stats.lock().expect("stats lock"));
    }

    async fn proxy(self: Arc<Self>, req: Request<Incoming>) -> Response<ProxyBody> {
        let resp = self.forward(req).await;
        let failed = resp.status() == StatusCode::SERVICE_UNAVAILABLE || resp.status() == StatusCode::BAD_GATEWAY;
        self.count(|s| if failed { s.failed += 1 } else { s.proxied += 1 });
        resp
    }

    async fn forward(&self, req: Request<Incoming>) -> Response<ProxyBody> {
        let (parts, body) = req.into_parts();
        let declared: Option<usize> = parts
            .headers
            .get(hyper::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        // Buffer what fits so it can be resent; stream larger bodies once.
        let mut streaming = None;
        let buffered = if declared.is_some_and(|n| n > MAX_BUFFERED_BODY) {
            streaming = Some(body.boxed_unsync());
            None
        } else {
            match Limited::new(body, MAX_BUFFERED_BODY).collect().await {
                Ok(c) => Some(c.to_bytes()),
                Err(_) => return status(StatusCode::PAYLOAD_TOO_LARGE, "request body too large or broken\n"),
            }
        };
        let idempotent = matches!(parts.method, Method::GET | Method::HEAD);
        let path = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
            .to_string();
        let mut tried = Vec::new();
        loop {
            let Some((id, addr, in_flight)) = self.pick(&tried) else {
                return status(StatusCode::SERVICE_UNAVAILABLE, "no healthy target\n");
            };
            tried.push(id.clone());
            let guard = InFlight::new(in_flight);
            let body = match (&buffered, streaming.take()) {
                (Some(b), _) => full(b.clone()),
                (None, Some(s)) => s,
                (None, None) => return status(StatusCode::BAD_GATEWAY, "upstream failed\n"),
            };
            let mut up = Request::builder()
                .method(parts.method.clone())
                .uri(format!("http://{addr}{path}"));
            if let Some(h) = up.headers_mut() {
                *h = parts.headers.clone();
                strip_hop_by_hop(h);
            }
            let up = match up.body(body) {
                Ok(r) => r,
                Err(_) => return status(StatusCode::BAD_REQUEST, "bad request\n"),
            };
            match self.client.request(up).await {
                Ok(resp) => {
                    let (mut parts, body) = resp.into_parts();
                    strip_hop_by_hop(&mut parts.headers);
                    if let Ok(v) = hyper::header::HeaderValue::from_str(id.as_str()) {
                        parts.headers.insert("x-repave-target", v);
                    }
                    return Response::from_parts(
                        parts,
                        GuardedBody {
                            inner: body,
                            _guard: guard,
                        }
                        .boxed_unsync(),
                    );
                }
                Err(e) => {
                    drop(guard);
                    tracing::debug!(group = %self.group, target = %id, "upstream error: {e:?}");
                    if e.is_connect() {
                        self.connection_failed(&id);
                    }
                    // A refused connection never reached the target; other
                    // failures before a response are safe to resend only for
                    // idempotent methods.
                    let resendable = buffered.is_some() && (e.is_connect() || idempotent);
                    if !resendable || tried.len() > MAX_RETRIES {
                        return status(StatusCode::BAD_GATEWAY, "upstream failed\n");
                    }
                    self.count(|s| s.retried += 1);
                }
            }
        }
    }

    async fn probe(&self, addr: &str) -> bool {
        let req = match Request::builder()
            .uri(format!("http://{addr}{}", self.health.path))
            .body(Empty::new().map_err(|never: Infallible| match never {}).boxed_unsync())
        {
            Ok(r) => r,
            Err(_) => return false,
        };
        match tokio::time::timeout(self.health.timeout.get(), self.client.request(req)).await {
            Ok(Ok(resp)) => {
                let ok = resp.status().is_success();
                let _ = resp.into_body().collect().await;
                ok
            }
            _ => false,
        }
    }
}

async fn accept_loop(inner: Arc<Inner>, listener: tokio::net::TcpListener) {
    loop {
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => { tracing::warn!("balancer accept: {e}"); tokio::time::sleep(Duration::from_millis(50)).await; continue; }
            },
            _ = inner.stop.cancelled() => return,
        };
        let inner = inner.clone();
        tokio::spawn(async move {
            let stop = inner.stop.clone();
            let svc = hyper::service::service_fn(move |req| {
                let inner = inner.clone();
                async move { Ok::<_, Infallible>(inner.proxy(req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), svc);
            tokio::select! {
                _ = conn => {}
                _ = stop.cancelled() => {}
            }
        });
    }
}

async fn health_loop(inner: Arc<Inner>) {
    let interval = inner.health.interval.get().max(Duration::from_millis(20));
    loop {
        let round: Vec<(InstanceId, String)> = {
            let t = inner.targets.lock().expect("balancer lock");
            t.iter()
                .filter(|(_, x)| x.state != TargetState::Draining)
                .map(|(id, x)| (id.clone(), x.addr.clone()))
                .collect()
        };
        let mut set = tokio::task::JoinSet::new();
        for (id, addr) in round {
            let inner = inner.clone();
            set.spawn(async move { (id, inner.probe(&addr).await) });
        }
        let results = tokio::select! {
            r = set.join_all() => r,
            _ = inner.stop.cancelled() => return,
        };
        {
            let mut t = inner.targets.lock().expect("balancer lock");
            for (id, ok) in results {
                let Some(x) = t.get_mut(&id) else { continue };
                if x.state == TargetState::Draining {
                    continue;
                }
                if ok {
                    x.successes += 1;
                    x.failures = 0;
                    if x.successes >= inner.health.healthy_threshold.max(1) {
                        x.enter(TargetState::Healthy);
                    }
                } else {
                    x.failures += 1;
                    x.successes = 0;
                    if x.failures >= inner.health.unhealthy_threshold.max(1) {
                        x.enter(TargetState::Unhealthy);
                    }
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = inner.stop.cancelled() => return,
        }
    }
}

async fn drain_loop(inner: Arc<Inner>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(DRAIN_TICK) => {}
            _ = inner.stop.cancelled() => return,
        }
        let now = Instant::now();
        let mut t = inner.targets.lock().expect("balancer lock");
        t.retain(|_, x| {
            x.state != TargetState::Draining
                || (x.in_flight.load(Ordering::SeqCst) > 0 && x.drain_deadline.is_some_and(|d| now < d))
        });
    }
}
