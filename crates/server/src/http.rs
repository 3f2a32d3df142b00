//! Serving HTTP/1.1 on the listener, with every connection bounded: a
//! client gets `header_read_timeout` to send a request's headers, counted
//! from when it connects or got its last response, so neither a slow
//! client nor an idle keep-alive one holds a connection longer. On
//! shutdown (after mini-redis) the accept loop stops and the listener is
//! closed, every connection finishes the request in flight and closes, and
//! whatever is still open after [`DRAIN`] is dropped — however many
//! clients are connected, shutdown takes at most that long.

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long connections get at shutdown to finish the request in flight.
pub(crate) const DRAIN: Duration = Duration::from_secs(5);

/// How long the accept loop waits after an error that is not one
/// connection's (e.g. out of file descriptors) before accepting again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(500);

/// Serve `app` on `listener` until `shutdown` is cancelled; returns once
/// every connection is closed (at most [`DRAIN`] after shutdown).
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    header_read_timeout: Duration,
    shutdown: CancellationToken,
) {
    let connections = TaskTracker::new();
    // Cancelled when the drain is over: closes what is still open.
    let close_now = CancellationToken::new();
    loop {
        let stream = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                // The client gave up between connect and accept.
                Err(e) if is_connection_error(&e) => continue,
                Err(e) => {
                    tracing::error!(error = %e, "accepting a connection; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(ACCEPT_BACKOFF) => continue,
                    }
                }
            },
        };
        connections.spawn(connection(
            stream,
            app.clone(),
            header_read_timeout,
            shutdown.clone(),
            close_now.clone(),
        ));
    }
    // New clients are refused from here on, not left in the backlog.
    drop(listener);
    connections.close();
    if tokio::time::timeout(DRAIN, connections.wait()).await.is_err() {
        tracing::warn!(
            open = connections.len(),
            "closing HTTP connections still open {}s after shutdown",
            DRAIN.as_secs()
        );
        close_now.cancel();
        connections.wait().await;
    }
}

/// One connection: served until the client closes it, its header read
/// times out, or shutdown; then the request in flight is finished (an idle
/// connection closes at once) unless the drain ends first.
async fn connection(
    stream: TcpStream,
    app: Router,
    header_read_timeout: Duration,
    shutdown: CancellationToken,
    close_now: CancellationToken,
) {
    // Small JSON answers: don't hold them back waiting for more to send.
    let _ = stream.set_nodelay(true);
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    let conn = builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app));
    tokio::pin!(conn);
    tokio::select! {
        done = conn.as_mut() => return log_end(done),
        _ = shutdown.cancelled() => {}
        _ = close_now.cancelled() => return,
    }
    conn.as_mut().graceful_shutdown();
    tokio::select! {
        done = conn.as_mut() => log_end(done),
        _ = close_now.cancelled() => {}
    }
}

/// A connection's end is the client's business (it left, it was too slow):
/// worth a debug line, never an error of the server's.
fn log_end(done: Result<(), hyper::Error>) {
    if let Err(e) = done {
        tracing::debug!(error = %e, "HTTP connection ended");
    }
}

fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(e.kind(), ConnectionRefused | ConnectionAborted | ConnectionReset)
}
