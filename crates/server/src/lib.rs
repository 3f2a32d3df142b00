//! repave-server: `repave serve` — the maintenance-window scheduler, the
//! HTTP JSON API, the dashboard, `/metrics` and webhooks, in one process.
//!
//! The server is handed its listener and its shutdown signal (after
//! mini-redis): [`Server::serve`] runs until the token is cancelled, then
//! stops accepting, stops every run at a safe point and returns.

mod api;
mod dashboard;
mod errors;
pub mod fleet;
mod http;
mod lifecycle;
mod metrics;
mod openapi;
mod runs;
pub mod schedule;
mod scheduler;
mod state;
pub mod webhooks;

pub use runs::ProgressSample;
pub use state::{ScheduleState, ServerOptions};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use state::Shared;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Why the server could not start or serve.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("pipelines.{pipeline}.window: {message}")]
    Window { pipeline: String, message: String },
    #[error("no provider for pipeline {0}")]
    MissingProvider(String),
    #[error("no engine options for pipeline {0}")]
    MissingEngineOptions(String),
    #[error("serving HTTP: {0}")]
    Serve(#[source] std::io::Error),
}

/// Check every pipeline's window (cron expression, time zone, that it
/// fires at all) without building anything; `Server::new` checks again.
pub fn check_windows(config: &repave_core::config::Config, now: repave_core::Timestamp) -> Result<(), ServerError> {
    for (name, p) in &config.pipelines {
        let Some(w) = &p.window else { continue };
        let error = |message| ServerError::Window {
            pipeline: name.clone(),
            message,
        };
        let ws = schedule::WindowSchedule::parse(w).map_err(error)?;
        if ws.next_fire(now).is_none() {
            return Err(error(format!("{:?} never fires", w.cron)));
        }
    }
    Ok(())
}

/// How long shutdown waits for due webhook notices to go out.
const NOTICE_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// The scheduler, API and dashboard over one store.
pub struct Server {
    shared: Arc<Shared>,
}

impl Server {
    /// Check every window parses (cron and time zone) and build the state.
    pub fn new(opts: ServerOptions) -> Result<Server, ServerError> {
        Ok(Server {
            shared: Shared::new(opts)?,
        })
    }

    /// The HTTP routes (API, dashboard, metrics), for serving or testing.
    pub fn router(&self) -> Router {
        router(self.shared.clone())
    }

    /// Serve on `listener` until `shutdown` is cancelled: resume runs a
    /// previous server stopped, run the scheduler and the webhook sender;
    /// on shutdown stop accepting and stop every run at a safe point.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: CancellationToken,
    ) -> Result<(), ServerError> {
        let shared = self.shared;
        let background = CancellationToken::new();
        let notifier_shared = shared.clone();
        let on_result: Arc<dyn Fn(&str) + Send + Sync> = {
            let s = Arc::downgrade(&shared);
            Arc::new(move |r: &str| {
                if let Some(s) = s.upgrade() {
                    s.metrics.webhook(r)
                }
            })
        };
        let notifier_stop = CancellationToken::new();
        let stop_notifier = notifier_stop.clone();
        let notifier = tokio::spawn(async move { notifier_shared.notifier.run(on_result, stop_notifier).await });
        lifecycle::recover(&shared).await;
        let scheduler = tokio::spawn(scheduler::run(shared.clone(), background.clone()));
        // The HTTP side drains on its own, bounded, while the runs stop: a
        // client holding a connection open never delays that.
        let http = tokio::spawn(http::serve(
            listener,
            router(shared.clone()),
            shared.header_read_timeout,
            shutdown.clone(),
        ));
        shutdown.cancelled().await;
        // Stop the scheduler first so it starts nothing new, then bring the
        // runs to a safe point.
        background.cancel();
        let _ = scheduler.await;
        lifecycle::stop_runs(&shared).await;
        // Give notices the stopped runs queued (a run's "paused" is not one,
        // "failed" may be) a moment; what is still pending then stays in the
        // store's outbox and goes out after the next start.
        let grace = tokio::time::Instant::now() + NOTICE_GRACE;
        while tokio::time::Instant::now() < grace
            && shared
                .store
                .due_notices(shared.clock.now(), 1)
                .is_ok_and(|due| !due.is_empty())
        {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        notifier_stop.cancel();
        let _ = notifier.await;
        http.await
            .map_err(|e| ServerError::Serve(std::io::Error::other(format!("the HTTP task ended abnormally: {e}"))))
    }
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/api/pipelines", get(api::pipelines))
        .route("/api/pipelines/{name}/schedule", post(api::set_schedule))
        .route("/api/runs", get(api::list_runs).post(api::start_run))
        .route("/api/runs/{id}", get(api::run_detail))
        .route("/api/runs/{id}/progress", get(api::progress))
        .route("/api/runs/{id}/cancel", post(api::cancel))
        .route("/api/runs/{id}/resume", post(api::resume))
        .route("/api/runs/{id}/rollback", post(api::rollback))
        .route("/api/fleet", get(api::fleet_view))
        .route("/api/webhooks", get(api::webhook_notices))
        .route("/api/images/diff", get(api::image_diff))
        .route("/api/images/{id}/manifest", get(api::image_manifest))
        .route("/openapi.json", get(openapi::document))
        .route("/metrics", get(api::metrics))
        .merge(dashboard::routes())
        .layer(middleware::from_fn_with_state(shared.clone(), guard))
        .layer(middleware::from_fn(errors::json_errors))
        .with_state(shared)
}

/// Mutating calls need the bearer token (checked before any handler runs,
/// so a refused call changes nothing); every call is counted.
async fn guard(State(s): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "other".into());
    let mutating = !matches!(method, Method::GET | Method::HEAD | Method::OPTIONS);
    let resp = if mutating && !authorized(s.token.as_deref(), &req) {
        let message = if s.token.is_none() {
            "mutating calls are disabled: no API token configured (set REPAVE_TOKEN or [server] token_env)"
        } else {
            "missing or wrong bearer token (Authorization: Bearer <token>)"
        };
        let mut r =
            errors::ApiError::new(StatusCode::UNAUTHORIZED, errors::Code::Unauthorized, message).into_response();
        r.headers_mut()
            .insert("www-authenticate", "Bearer".parse().expect("header value"));
        r
    } else {
        next.run(req).await
    };
    s.metrics.api_call(method.as_str(), &route, resp.status().as_u16());
    resp
}

fn authorized(token: Option<&str>, req: &Request) -> bool {
    let Some(token) = token else { return false };
    let given = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    // Compare in time independent of where the first difference is.
    given.len() == token.len() && given.bytes().zip(token.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}
