//! Webhooks on run start / success / failure / rollback: a JSON POST (or a
//! Slack-compatible `{"text": ...}`), retried with exponential backoff.
//! Notices go through the store's outbox (they outlive a restart); delivery
//! runs on its own task so a slow receiver never holds up a run.

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use repave_core::config::{RunEvent, Webhook, WebhookFormat};
use repave_core::ids::Clock;
use repave_core::RunId;
use repave_store::Store;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Attempts per delivery; the waits between them double from `FIRST_BACKOFF`.
pub const ATTEMPTS: u32 = 5;
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// Bound on one attempt.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// What a webhook is told.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RunNotice {
    pub event: RunEvent,
    pub run: String,
    pub pipeline: String,
    pub error: Option<String>,
}

impl RunNotice {
    pub fn new(run: &RunId, pipeline: &str, event: RunEvent, error: Option<String>) -> Self {
        Self {
            event,
            run: run.to_string(),
            pipeline: pipeline.into(),
            error,
        }
    }

    fn text(&self) -> String {
        let what = match self.event {
            RunEvent::Started => "started",
            RunEvent::Succeeded => "succeeded :white_check_mark:",
            RunEvent::Failed => "FAILED :x:",
            RunEvent::RolledBack => "failed and was rolled back :rewind:",
        };
        let mut t = format!("repave: run {} of pipeline {} {what}", self.run, self.pipeline);
        if let Some(e) = &self.error {
            t.push_str(&format!(": {e}"));
        }
        t
    }

    /// The request body for a hook's format.
    pub fn body(&self, format: WebhookFormat) -> serde_json::Value {
        match format {
            WebhookFormat::Slack => serde_json::json!({ "text": self.text() }),
            WebhookFormat::Json => {
                let mut v = serde_json::to_value(self).expect("notice serializes");
                v["text"] = self.text().into();
                v
            }
        }
    }
}

/// Writes notices to the store's outbox; [`Notifier::run`] delivers them.
/// A notice queued before a shutdown or a crash is delivered after the next
/// start (at least once: one whose POST was in flight may be sent twice).
pub(crate) struct Notifier {
    hooks: Arc<Vec<Webhook>>,
    store: Arc<Store>,
    clock: Arc<dyn Clock>,
    wake: Notify,
}

/// What the outbox records instead of a hook's URL (chat webhook URLs are
/// secrets): the first 16 hex digits of its SHA-256.
pub fn hook_key(url: &str) -> String {
    let digest = Sha256::digest(url.as_bytes());
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// The wait before attempt `attempt + 1` after `attempt` failed ones.
fn backoff(attempts: u32) -> Duration {
    FIRST_BACKOFF * 2u32.saturating_pow(attempts.saturating_sub(1))
}

impl Notifier {
    pub fn new(hooks: Vec<Webhook>, store: Arc<Store>, clock: Arc<dyn Clock>) -> Self {
        Self {
            hooks: Arc::new(hooks),
            store,
            clock,
            wake: Notify::new(),
        }
    }

    /// Queue `notice` for every hook that wants its event.
    pub fn notify(&self, notice: RunNotice) {
        let now = self.clock.now();
        for hook in self
            .hooks
            .iter()
            .filter(|h| h.events.is_empty() || h.events.contains(&notice.event))
        {
            let body = notice.body(hook.format).to_string();
            if let Err(e) = self.store.queue_notice(
                &hook_key(&hook.url),
                notice.event.as_str(),
                Some(&notice.run),
                &body,
                now,
            ) {
                tracing::error!(error = %e, run = notice.run, event = notice.event.as_str(), "could not queue a webhook notice");
            }
        }
        self.wake.notify_one();
    }

    /// Deliver due notices until `shutdown`; each attempt is its own task
    /// so one slow receiver does not delay the others.
    pub async fn run(&self, on_result: Arc<dyn Fn(&str) + Send + Sync>, shutdown: CancellationToken) {
        let client = clients();
        let in_flight: Arc<Mutex<HashSet<i64>>> = Arc::default();
        let done = Arc::new(Notify::new());
        loop {
            let now = self.clock.now();
            let due = self.store.due_notices(now, 256).unwrap_or_else(|e| {
                tracing::error!(error = %e, "could not read the webhook outbox");
                Vec::new()
            });
            for notice in due {
                if !in_flight.lock().expect("in flight").insert(notice.id) {
                    continue;
                }
                let Some(hook) = self.hooks.iter().find(|h| hook_key(&h.url) == notice.hook).cloned() else {
                    let why = "the hook is no longer configured";
                    if let Err(e) = self.store.record_attempt(notice.id, Some(why), None, now) {
                        tracing::error!(error = %e, "could not record a webhook notice given up");
                    }
                    in_flight.lock().expect("in flight").remove(&notice.id);
                    on_result("failed");
                    continue;
                };
                let (client, store, clock) = (client.clone(), self.store.clone(), self.clock.clone());
                let (in_flight, done, on_result) = (in_flight.clone(), done.clone(), on_result.clone());
                tokio::spawn(async move {
                    let result = post(&client, &hook.url, notice.body.clone()).await;
                    let attempts = notice.attempts + 1;
                    let now = clock.now();
                    let recorded = match &result {
                        Ok(()) => {
                            on_result("delivered");
                            store.record_attempt(notice.id, None, None, now)
                        }
                        Err(e) => {
                            tracing::warn!(hook = notice.hook, attempt = attempts, error = %e, "webhook delivery failed");
                            let retry_at = (attempts < ATTEMPTS).then(|| now.plus(backoff(attempts)));
                            on_result(if retry_at.is_some() { "retried" } else { "failed" });
                            store.record_attempt(notice.id, Some(e), retry_at, now)
                        }
                    };
                    if let Err(e) = recorded {
                        tracing::error!(error = %e, "could not record a webhook attempt");
                    }
                    in_flight.lock().expect("in flight").remove(&notice.id);
                    done.notify_one();
                });
            }
            // Sleep until the next notice not already in flight is due, a
            // new one is queued, an attempt ends, or shutdown.
            let now = self.clock.now();
            let soon = self.store.due_notices(now.plus(IDLE_CHECK), 256).unwrap_or_default();
            let next = {
                let in_flight = in_flight.lock().expect("in flight");
                soon.iter()
                    .filter(|n| !in_flight.contains(&n.id))
                    .map(|n| n.next_at)
                    .min()
            };
            let nap = next.map_or(IDLE_CHECK, |at| at.since(now).clamp(MIN_NAP, IDLE_CHECK));
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.wake.notified() => {}
                _ = done.notified() => {}
                _ = tokio::time::sleep(nap) => {}
            }
        }
    }
}

/// Longest wait between looks at the outbox (another process may queue).
const IDLE_CHECK: Duration = Duration::from_secs(5);
const MIN_NAP: Duration = Duration::from_millis(10);

type HttpConnector = hyper_util::client::legacy::connect::HttpConnector;

/// A plain HTTP client and, when the system's root certificates load, an
/// HTTPS one (Slack's endpoints are HTTPS only).
#[derive(Clone)]
struct Clients {
    http: Client<HttpConnector, Full<Bytes>>,
    https: Option<Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>>,
}

fn clients() -> Clients {
    let http = Client::builder(TokioExecutor::new()).build_http();
    let https = match hyper_rustls::HttpsConnectorBuilder::new().with_native_roots() {
        Ok(b) => Some(Client::builder(TokioExecutor::new()).build(b.https_only().enable_http1().build())),
        Err(e) => {
            tracing::warn!(error = %e, "no system root certificates: https webhooks will fail");
            None
        }
    };
    Clients { http, https }
}

async fn post(client: &Clients, url: &str, body: String) -> Result<(), String> {
    let req = hyper::Request::post(url)
        .header("content-type", "application/json")
        .header("user-agent", "repave")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let request = async {
        if url.starts_with("https://") {
            match &client.https {
                Some(c) => c.request(req).await.map_err(|e| e.to_string()),
                None => Err("no system root certificates for https".to_string()),
            }
        } else {
            client.http.request(req).await.map_err(|e| e.to_string())
        }
    };
    let resp = tokio::time::timeout(ATTEMPT_TIMEOUT, request)
        .await
        .map_err(|_| "timed out".to_string())??;
    if resp.status().is_success() {
        Ok(())
    } else {
        Err(format!("status {}", resp.status()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notice(event: RunEvent) -> RunNotice {
        RunNotice::new(&RunId::new("run-1"), "web", event, Some("roll aborted".into()))
    }

    #[test]
    fn json_and_slack_bodies() {
        let json = notice(RunEvent::RolledBack).body(WebhookFormat::Json);
        assert_eq!(
            (json["event"].as_str(), json["run"].as_str(), json["pipeline"].as_str()),
            (Some("rolled_back"), Some("run-1"), Some("web"))
        );
        let slack = notice(RunEvent::Failed).body(WebhookFormat::Slack);
        assert_eq!(slack.as_object().unwrap().len(), 1, "Slack wants only text: {slack}");
        assert_eq!(
            slack["text"],
            "repave: run run-1 of pipeline web FAILED :x:: roll aborted"
        );
    }

    #[tokio::test]
    async fn https_is_attempted_over_tls() {
        // Nothing listens there: the error is the connection's, not a
        // missing TLS client.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let err = post(&clients(), &format!("https://127.0.0.1:{port}/hook"), "{}".into())
            .await
            .unwrap_err();
        assert!(!err.contains("root certificates"), "{err}");
    }
}
