//! Shared fixture for the end-to-end tests: a daemon in a temp state dir,
//! started through the test binary exactly as the CLI starts it.

#![allow(dead_code)]

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use repave_core::config::HealthCheck;
use repave_core::duration::HumanDuration;
use repave_core::provider::{Groups, Lifecycle, TargetState, Traffic};
use repave_core::InstanceId;
use repave_local::{GroupSetup, ImageSource, LocalClient};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub const EXE: &str = env!("CARGO_BIN_EXE_repave-local-test");

/// A running daemon and its state dir; shut down on drop.
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub client: LocalClient,
}

impl Fixture {
    pub async fn start() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let client = LocalClient::ensure_running(dir.path(), Path::new(EXE), None)
            .await
            .unwrap();
        Fixture { dir, client }
    }

    pub fn state_dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn root(&self, id: &repave_core::InstanceId) -> PathBuf {
        self.dir.path().join("local/instances").join(id.as_str()).join("root")
    }

    /// The pid the daemon recorded for an instance.
    pub fn pid(&self, id: &repave_core::InstanceId) -> i32 {
        let state: serde_json::Value =
            serde_json::from_slice(&std::fs::read(self.dir.path().join("local/state.json")).unwrap()).unwrap();
        state["instances"][id.as_str()]["pid"].as_i64().expect("pid recorded") as i32
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        stop_fleet(self.dir.path());
    }
}

/// Stops the fleet of a state dir when dropped, whatever the test did to it.
pub struct FleetGuard<'a>(pub &'a Path);

impl Drop for FleetGuard<'_> {
    fn drop(&mut self) {
        stop_fleet(self.0);
    }
}

/// `repave local down` for the fleet of `state` (also when the test killed
/// its fleet process), then fail the test, unless it is failing already,
/// if anything of that fleet still runs (killed, so nothing outlives it).
/// Synchronous, for `Drop`: on its own thread and runtime.
pub fn stop_fleet(state: &Path) {
    let dir = state.to_path_buf();
    let down = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        rt.block_on(repave_local::down::down(&dir, Path::new(EXE), None))
            .map_err(|e| e.to_string())
    })
    .join()
    .unwrap_or_else(|_| Err("the stopping thread panicked".into()));
    let left = repave_local::mark::kill_leftovers(state);
    if std::thread::panicking() {
        return;
    }
    if let Err(e) = down {
        panic!("stopping the fleet in {}: {e}", state.display());
    }
    assert!(
        left.is_empty(),
        "the fleet in {} left processes: {left:#?}",
        state.display()
    );
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A group of demo apps with fast health checks.
pub fn group(name: &str, desired: u32) -> GroupSetup {
    GroupSetup {
        name: name.into(),
        min: 1,
        max: 4,
        desired,
        port: free_port(),
        command: repave_core::config::default_command(),
        image: ImageSource::BuiltinDemo,
        health_check: HealthCheck {
            path: "/health".into(),
            interval: HumanDuration::from_millis(100),
            timeout: HumanDuration::from_secs(1),
            healthy_threshold: 2,
            unhealthy_threshold: 2,
            grace: HumanDuration::from_secs(3),
        },
        deregistration_delay: Duration::from_secs(5),
        parameter: Some(format!("/{name}/golden")),
        scaling: None,
    }
}

/// Poll `f` until it yields `Some`, or panic after `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Wait until the group has `n` in-service members, all healthy at the balancer.
pub async fn wait_healthy(client: &LocalClient, group: &str, n: usize) -> Vec<InstanceId> {
    wait_for("healthy group", Duration::from_secs(15), || async {
        let g = client.describe_group(group).await.unwrap();
        let live: Vec<InstanceId> = g
            .members
            .iter()
            .filter(|m| m.lifecycle == Lifecycle::InService)
            .map(|m| m.id.clone())
            .collect();
        let health = client.target_health(group).await.unwrap();
        let healthy = live
            .iter()
            .filter(|id| {
                health
                    .iter()
                    .any(|t| &t.instance == *id && t.state == TargetState::Healthy)
            })
            .count();
        (live.len() == n && healthy == n && g.members.len() == n).then_some(live)
    })
    .await
}

/// A keep-alive HTTP client, like a browser or a load generator.
pub fn http_client() -> Client<HttpConnector, Empty<Bytes>> {
    Client::builder(hyper_util::rt::TokioExecutor::new()).build(HttpConnector::new())
}

/// An answer: status, body, and which target served it.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: String,
    pub target: Option<String>,
}

pub async fn get(client: &Client<HttpConnector, Empty<Bytes>>, addr: &str, path: &str) -> Result<Answer, String> {
    let uri: hyper::Uri = format!("http://{addr}{path}").parse().unwrap();
    let resp = client.get(uri).await.map_err(|e| format!("{e:?}"))?;
    let status = resp.status().as_u16();
    let target = resp
        .headers()
        .get("x-repave-target")
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    let body = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok(Answer {
        status,
        body: String::from_utf8_lossy(&body).into(),
        target,
    })
}
