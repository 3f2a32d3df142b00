//! Webhooks on run start / success / failure / rollback: a JSON POST (or a
//! Slack-compatible `{"text": ...}`), retried with exponential backoff.
//! Delivery runs on its own task so a slow receiver never holds up a run.

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use repave_core::config::Webhook;
use repave_core::RunId;
use serde::Serialize;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Attempts per delivery; the waits between them double from `FIRST_BACKOFF`.
pub const ATTEMPTS: u32 = 5;
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// Bound on one attempt.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// What a webhook is told.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RunNotice {
    /// started, succeeded, failed or rolled_back.
    pub event: String,
    pub run: String,
    pub pipeline: String,
    pub error: Option<String>,
}

impl RunNotice {
    pub fn new(run: &RunId, pipeline: &str, event: &str, error: Option<String>) -> Self {
        Self {
            event: event.into(),
            run: run.to_string(),
            pipeline: pipeline.into(),
            error,
        }
    }

    fn text(&self) -> String {
        let what = match self.event.as_str() {
            "started" => "started",
            "succeeded" => "succeeded :white_check_mark:",
            "failed" => "FAILED :x:",
            "rolled_back" => "failed and was rolled back :rewind:",
            other => other,
        };
        let mut t = format!("repave: run {} of pipeline {} {what}", self.run, self.pipeline);
        if let Some(e) = &self.error {
            t.push_str(&format!(": {e}"));
        }
        t
    }

    /// The request body for a hook's format.
    pub fn body(&self, format: &str) -> serde_json::Value {
        if format == "slack" {
            serde_json::json!({ "text": self.text() })
        } else {
            let mut v = serde_json::to_value(self).expect("notice serializes");
            v["text"] = self.text().into();
            v
        }
    }
}

/// Queues notices; [`Notifier::run`] delivers them.
pub(crate) struct Notifier {
    hooks: Arc<Vec<Webhook>>,
    tx: mpsc::UnboundedSender<RunNotice>,
    rx: Mutex<Option<mpsc::UnboundedReceiver<RunNotice>>>,
}

impl Notifier {
    pub fn new(hooks: Vec<Webhook>) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Self {
            hooks: Arc::new(hooks),
            tx,
            rx: Mutex::new(Some(rx)),
        }
    }

    pub fn notify(&self, notice: RunNotice) {
        if !self.hooks.is_empty() {
            // The receiver lives as long as the server; a closed queue
            // means shutdown, when nothing is delivered any more.
            let _ = self.tx.send(notice);
        }
    }

    /// Deliver queued notices until `shutdown`; each delivery is its own
    /// task so one slow receiver does not delay the others.
    pub async fn run(&self, on_result: Arc<dyn Fn(&str) + Send + Sync>, shutdown: CancellationToken) {
        let Some(mut rx) = self.rx.lock().expect("notifier").take() else {
            return;
        };
        let client = clients();
        loop {
            let notice = tokio::select! {
                _ = shutdown.cancelled() => return,
                n = rx.recv() => match n { Some(n) => n, None => return },
            };
            for hook in self
                .hooks
                .iter()
                .filter(|h| h.events.is_empty() || h.events.contains(&notice.event))
            {
                let (client, hook, on_result) = (client.clone(), hook.clone(), on_result.clone());
                let body = notice.body(&hook.format).to_string();
                tokio::spawn(async move { deliver(&client, &hook.url, body, on_result.as_ref()).await });
            }
        }
    }
}

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

async fn deliver(client: &Clients, url: &str, body: String, on_result: &(dyn Fn(&str) + Send + Sync)) {
    let mut wait = FIRST_BACKOFF;
    for attempt in 1..=ATTEMPTS {
        match post(client, url, body.clone()).await {
            Ok(()) => {
                on_result("delivered");
                return;
            }
            Err(e) => {
                tracing::warn!(url, attempt, error = %e, "webhook delivery failed");
                if attempt == ATTEMPTS {
                    on_result("failed");
                    return;
                }
                on_result("retried");
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
        }
    }
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

    fn notice(event: &str) -> RunNotice {
        RunNotice::new(&RunId::new("run-1"), "web", event, Some("roll aborted".into()))
    }

    #[test]
    fn json_and_slack_bodies() {
        let json = notice("rolled_back").body("json");
        assert_eq!(
            (json["event"].as_str(), json["run"].as_str(), json["pipeline"].as_str()),
            (Some("rolled_back"), Some("run-1"), Some("web"))
        );
        let slack = notice("failed").body("slack");
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
