//! The demo HTTP service run inside instances (`repave demo-app --port P
//! --root R`): `/` describes the instance, `/health` follows
//! `etc/demo-app.conf`, `/slow?ms=N` holds a request open (drain tests). On
//! SIGTERM it stops accepting and lets in-flight requests finish.

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Serve on 127.0.0.1:`port` until SIGTERM / SIGINT, then drain and return.
pub async fn run(port: u16, root: PathBuf) -> std::io::Result<()> {
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    let shutdown = CancellationToken::new();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let stop = shutdown.clone();
    tokio::spawn(async move {
        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
        stop.cancel();
    });
    serve(listener, root, shutdown).await
}

/// Serve on an already-bound listener until `shutdown`, then finish
/// in-flight requests (graceful) and return.
pub async fn serve(listener: TcpListener, root: PathBuf, shutdown: CancellationToken) -> std::io::Result<()> {
    let root = Arc::new(root);
    let tracker = TaskTracker::new();
    loop {
        let (stream, _) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => { tracing::warn!("accept: {e}"); continue; }
            },
            _ = shutdown.cancelled() => break,
        };
        let root = root.clone();
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let root = root.clone();
                async move { Ok::<_, std::convert::Infallible>(handle(req, &root).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = shutdown.cancelled() => {
                    // Finish the request in flight (if any), then close.
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
    drop(listener);
    tracker.close();
    tracker.wait().await;
    Ok(())
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r
}

fn healthy(root: &Path) -> bool {
    let conf = std::fs::read_to_string(root.join("etc/demo-app.conf")).unwrap_or_default();
    !conf.lines().any(|l| {
        let mut parts = l.splitn(2, '=');
        let key = parts.next().unwrap_or("").trim();
        let value = parts.next().unwrap_or("").trim();
        key == "health" && value == "fail"
    })
}

fn query_ms(query: Option<&str>) -> u64 {
    query
        .unwrap_or("")
        .split('&')
        .find_map(|kv| kv.strip_prefix("ms="))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

async fn handle(req: Request<hyper::body::Incoming>, root: &Path) -> Response<Full<Bytes>> {
    match req.uri().path() {
        "/" => {
            let installed: Vec<repave_core::patch::Update> = std::fs::read_to_string(root.join(crate::pkg::INSTALLED))
                .ok()
                .and_then(|t| serde_json::from_str(&t).ok())
                .unwrap_or_default();
            let body = serde_json::json!({
                "instance": std::env::var("REPAVE_INSTANCE_ID").unwrap_or_default(),
                "image": std::env::var("REPAVE_IMAGE_ID").unwrap_or_default(),
                "packages": installed.iter().map(|u| u.id.clone()).collect::<Vec<_>>(),
            });
            let mut r = text(StatusCode::OK, body.to_string());
            r.headers_mut().insert(
                "content-type",
                hyper::header::HeaderValue::from_static("application/json"),
            );
            r
        }
        "/health" if healthy(root) => text(StatusCode::OK, "ok"),
        "/health" => text(StatusCode::SERVICE_UNAVAILABLE, "unhealthy"),
        "/slow" => {
            let ms = query_ms(req.uri().query()).min(10_000);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            text(StatusCode::OK, format!("slept {ms} ms"))
        }
        _ => text(StatusCode::NOT_FOUND, "not found"),
    }
}
