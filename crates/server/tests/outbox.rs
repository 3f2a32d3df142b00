//! Webhook notices go through the store's outbox: one queued by a server
//! that stopped before delivering it goes out after the next start, retried
//! past a failing receiver, and a notice for a hook no longer configured is
//! given up with a reason. Real HTTP to a receiver on 127.0.0.1.

use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use repave_core::config::{Config, Webhook};
use repave_core::ids::{Clock, SystemClock};
use repave_server::webhooks::hook_key;
use repave_server::{Server, ServerOptions};
use repave_store::{NoticeState, Store};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// A receiver that answers 500 to its first request, 200 after, and keeps
/// every body it was sent.
async fn receiver() -> (String, Arc<Mutex<Vec<String>>>, Arc<AtomicU32>) {
    let bodies: Arc<Mutex<Vec<String>>> = Arc::default();
    let hits = Arc::new(AtomicU32::new(0));
    let (b, h) = (bodies.clone(), hits.clone());
    let app = Router::new().route(
        "/hook",
        post(move |body: String| {
            let (b, h) = (b.clone(), h.clone());
            async move {
                if h.fetch_add(1, Ordering::SeqCst) == 0 {
                    return StatusCode::INTERNAL_SERVER_ERROR;
                }
                b.lock().unwrap().push(body);
                StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, bodies, hits)
}

#[tokio::test]
async fn a_notice_queued_before_a_restart_is_delivered_after_it() {
    let (url, bodies, hits) = receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(&dir.path().join("repave.db")).unwrap());
    // What a server that stopped right after a run failed left behind: two
    // notices, one for a hook that has since been removed from the config.
    let now = SystemClock.now();
    let body = r#"{"event":"failed","run":"r-1","pipeline":"web","error":"boom","text":"..."}"#;
    let kept = store
        .queue_notice(&hook_key(&url), "failed", Some("r-1"), body, now)
        .unwrap();
    let removed_url = "http://127.0.0.1:9/gone";
    let orphan = store
        .queue_notice(&hook_key(removed_url), "failed", Some("r-1"), body, now)
        .unwrap();
    // The outbox never holds a hook's URL.
    assert!(store.notices(10).unwrap().iter().all(|n| !n.hook.contains("127.0.0.1")));

    let mut config = Config::default();
    config.server.webhooks = vec![Webhook {
        url: url.clone(),
        format: repave_core::config::WebhookFormat::Json,
        events: vec![],
    }];
    let server = Server::new(ServerOptions {
        config,
        token: None,
        store: store.clone(),
        providers: BTreeMap::new(),
        clock: Arc::new(SystemClock),
        engine: BTreeMap::new(),
        scheduler_tick: Duration::from_secs(60),
        shutdown_grace: Duration::from_secs(5),
        header_read_timeout: Duration::from_secs(10),
    })
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    let served = tokio::spawn(async move { server.serve(listener, stop).await.unwrap() });

    let started = Instant::now();
    let state = |id: i64| {
        store
            .notices(10)
            .unwrap()
            .into_iter()
            .find(|n| n.id == id)
            .expect("notice")
    };
    while state(kept).state == NoticeState::Pending && started.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let kept = state(kept);
    assert_eq!(kept.state, NoticeState::Delivered, "{kept:?}");
    assert_eq!(kept.attempts, 2, "one 500, then delivered: {kept:?}");
    assert_eq!(hits.load(Ordering::SeqCst), 2);
    assert_eq!(bodies.lock().unwrap().as_slice(), [body.to_string()]);
    let orphan = state(orphan);
    assert_eq!(orphan.state, NoticeState::Failed);
    assert_eq!(orphan.last_error.as_deref(), Some("the hook is no longer configured"));

    shutdown.cancel();
    served.await.unwrap();
}
