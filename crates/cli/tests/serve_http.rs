//! `repave serve` as an HTTP server under hostile clients, and its API's
//! contract: the real binary on 127.0.0.1 with real sockets. Slow and idle
//! clients lose their connection at the header timeout; SIGTERM with such
//! clients connected still stops the run at a safe point and exits in its
//! grace; every API error has the one documented JSON shape; unknown images
//! are 404; the API cancels a run another process drives; and runs the
//! server drives poll as the pipeline says. Every client here is bounded in
//! count and time and stops by itself.

use crate::common;

use common::serve::{
    get, http, post, raw, serve_command, start_run, wait_roll_under_way, wait_state, write_config, Answer, Serve, TOKEN,
};
use common::{exe, fleet_lock, free_port, wait_for, wait_status, Fleet, FleetGuard};
use serde_json::Value;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How a test client behaves once connected.
#[derive(Clone, Copy)]
enum Client {
    /// Sends a request's headers a byte every 250 ms, never finishing them.
    Slow,
    /// Sends one request, reads the answer, then keeps the connection open.
    IdleKeepAlive,
    /// Connects and never sends a byte.
    Silent,
}

/// Start `client` against `addr`; it reports on `connected` once it is
/// connected (and, when idle, answered), and ends when the server closes
/// the connection — returning how long after that report — or after
/// `limit`, returning `None`.
fn client(addr: &str, kind: Client, limit: Duration, connected: mpsc::Sender<()>) -> JoinHandle<Option<Duration>> {
    let addr = addr.to_string();
    std::thread::spawn(move || {
        let mut s = TcpStream::connect(&addr).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(250))).unwrap();
        if let Client::IdleKeepAlive = kind {
            write!(s, "GET /api/pipelines HTTP/1.1\r\nHost: test\r\n\r\n").unwrap();
            let mut seen = Vec::new();
            let mut buf = [0u8; 4096];
            // The answer (small, one read or a few) must come back whole.
            let deadline = Instant::now() + Duration::from_secs(10);
            while !String::from_utf8_lossy(&seen).contains("\"name\"") {
                assert!(Instant::now() < deadline, "no answer on the keep-alive connection");
                match s.read(&mut buf) {
                    Ok(0) => panic!("closed before answering"),
                    Ok(n) => seen.extend_from_slice(&buf[..n]),
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                    Err(e) => panic!("{e}"),
                }
            }
        }
        if let Client::Slow = kind {
            write!(s, "GET /api/pipelines HTTP/1.1\r\nHost: test\r\nX-Slow: ").unwrap();
        }
        let _ = connected.send(());
        let since = Instant::now();
        let mut buf = [0u8; 1024];
        while since.elapsed() < limit {
            if let Client::Slow = kind {
                if s.write_all(b"a").is_err() {
                    return Some(since.elapsed());
                }
            }
            match s.read(&mut buf) {
                Ok(0) => return Some(since.elapsed()),
                // An error answer (408) before the close.
                Ok(_) => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => return Some(since.elapsed()),
            }
        }
        None
    })
}

/// 8 slow clients, 2 idle keep-alive ones and a silent one, all connected
/// (and the idle ones answered) when this returns.
fn hostile_clients(addr: &str, limit: Duration) -> Vec<(&'static str, JoinHandle<Option<Duration>>)> {
    let (tx, rx) = mpsc::channel();
    let mut all = Vec::new();
    for _ in 0..8 {
        all.push(("slow", client(addr, Client::Slow, limit, tx.clone())));
    }
    for _ in 0..2 {
        all.push((
            "idle keep-alive",
            client(addr, Client::IdleKeepAlive, limit, tx.clone()),
        ));
    }
    all.push(("silent", client(addr, Client::Silent, limit, tx.clone())));
    for _ in 0..all.len() {
        rx.recv_timeout(Duration::from_secs(20))
            .expect("every client connected");
    }
    all
}

#[test]
fn slow_and_idle_clients_lose_their_connection_at_the_header_timeout() {
    let _l = fleet_lock();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), free_port(), 1, "1s", "");
    let _guard = FleetGuard(dir.path().join(".repave"));
    // The default header timeout: 10 s.
    let serve = Serve::start(&config, "serve.log");
    let clients = hostile_clients(&serve.addr, Duration::from_secs(40));
    // Others are served meanwhile.
    assert_eq!(get(&serve.addr, "/api/pipelines")[0]["name"], "web");
    for (kind, c) in clients {
        let closed = c.join().unwrap();
        let closed = closed.unwrap_or_else(|| panic!("a {kind} client kept its connection for 40s"));
        // Closed by the timeout, not refused at once.
        assert!(
            closed > Duration::from_secs(5) && closed < Duration::from_secs(16),
            "a {kind} client kept its connection for {closed:?} (header timeout 10s)"
        );
    }
    assert_eq!(get(&serve.addr, "/api/pipelines")[0]["name"], "web");
}

#[test]
fn sigterm_with_slow_and_idle_clients_stops_the_run_and_exits_within_the_grace() {
    let _l = fleet_lock();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), free_port(), 3, "1s", "");
    let _guard = FleetGuard(dir.path().join(".repave"));
    // A header timeout longer than the test: only shutdown closes them.
    let grace = Duration::from_secs(20);
    let mut serve = Serve::start_with(
        &config,
        "serve.log",
        &["--header-read-timeout", "120s", "--shutdown-grace", "20s"],
    );
    let a = serve.addr.clone();
    let run = start_run(&a);
    wait_roll_under_way(&a, &run);
    let clients = hostile_clients(&a, Duration::from_secs(60));
    let sent = Instant::now();
    serve.signal_term();
    let status = wait_status(&mut serve.child, Duration::from_secs(60));
    let took = sent.elapsed();
    assert_eq!(status.code(), Some(0), "serve exits cleanly on SIGTERM");
    assert!(
        took < grace,
        "SIGTERM to exit took {took:?}, more than the {grace:?} grace"
    );
    for (kind, c) in clients {
        let closed = c.join().unwrap();
        assert!(
            closed.is_some(),
            "a {kind} client was still connected after the server exited"
        );
    }
    let store = repave_store::Store::open(&dir.path().join(".repave/repave.db")).unwrap();
    let record = store.get_run(&repave_core::RunId::new(run.clone())).unwrap().unwrap();
    assert_eq!(
        record.state.as_str(),
        "paused",
        "stopped at a safe point: {:?}",
        record.error
    );
}

/// The answer is JSON in the `Error` schema of `/openapi.json`: `error`
/// with `code` (one of the documented ones) and `message`, and no field
/// the schema does not list.
fn assert_error(spec: &Value, what: &str, answer: Answer, status: u16, code: &str) {
    let (got, head, body) = answer;
    assert_eq!(got, status, "{what}: {head}\n{body}");
    assert!(head.contains("content-type: application/json"), "{what}: {head}");
    let v: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {body:?}"));
    let schema = &spec["components"]["schemas"]["Error"]["properties"]["error"];
    let error = v["error"]
        .as_object()
        .unwrap_or_else(|| panic!("{what}: no error object: {v}"));
    for field in schema["required"].as_array().unwrap() {
        let field = field.as_str().unwrap();
        assert!(error[field].is_string(), "{what}: error.{field} missing: {v}");
    }
    for field in error.keys() {
        assert!(
            schema["properties"].get(field).is_some(),
            "{what}: error.{field} not in /openapi.json"
        );
    }
    let codes = schema["properties"]["code"]["enum"].as_array().unwrap();
    assert!(
        codes.contains(&error["code"]),
        "{what}: code {} not documented",
        error["code"]
    );
    assert_eq!(error["code"], code, "{what}: {v}");
}

#[test]
fn every_api_error_has_the_one_documented_shape_and_unknown_images_are_404() {
    let _l = fleet_lock();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), free_port(), 1, "1s", "");
    let _guard = FleetGuard(dir.path().join(".repave"));
    let serve = Serve::start(&config, "serve.log");
    let a = serve.addr.as_str();
    let spec = get(a, "/openapi.json");
    // Every error answer an operation lists refers to the one schema.
    for (path, ops) in spec["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            for (status, answer) in op["responses"].as_object().unwrap() {
                if status.starts_with('4') || status.starts_with('5') {
                    assert_eq!(
                        answer["content"]["application/json"]["schema"]["$ref"], "#/components/schemas/Error",
                        "{method} {path} {status}"
                    );
                }
            }
        }
    }
    let json = "Content-Type: application/json\r\n";
    let bearer = format!("Authorization: Bearer {TOKEN}\r\n");
    let authed = format!("{json}{bearer}");
    let cases: Vec<(&str, Answer, u16, &str)> = vec![
        (
            "no token",
            raw(a, "POST", "/api/runs", json, r#"{"pipeline":"web"}"#),
            401,
            "unauthorized",
        ),
        (
            "unknown run",
            raw(a, "GET", "/api/runs/run-nope", "", ""),
            404,
            "not_found",
        ),
        (
            "unknown state",
            raw(a, "GET", "/api/runs?state=bogus", "", ""),
            400,
            "bad_request",
        ),
        (
            "unknown pipeline",
            raw(a, "POST", "/api/runs", &authed, r#"{"pipeline":"nope"}"#),
            404,
            "not_found",
        ),
        (
            "unknown kind",
            raw(a, "POST", "/api/runs", &authed, r#"{"pipeline":"web","kind":"x"}"#),
            400,
            "bad_request",
        ),
        (
            "body not JSON",
            raw(a, "POST", "/api/runs", &authed, "{pipeline"),
            400,
            "bad_request",
        ),
        (
            "body of the wrong shape",
            raw(a, "POST", "/api/runs", &authed, r#"{"kind":"run"}"#),
            422,
            "invalid_body",
        ),
        (
            "no content type",
            raw(a, "POST", "/api/runs", &bearer, r#"{"pipeline":"web"}"#),
            415,
            "unsupported_media_type",
        ),
        (
            "cancel an unknown run",
            raw(a, "POST", "/api/runs/run-nope/cancel", &authed, ""),
            404,
            "not_found",
        ),
        (
            "schedule of an unknown pipeline",
            raw(
                a,
                "POST",
                "/api/pipelines/nope/schedule",
                &authed,
                r#"{"enabled":true}"#,
            ),
            404,
            "not_found",
        ),
        (
            "unknown image's manifest",
            raw(a, "GET", "/api/images/img-nope/manifest", "", ""),
            404,
            "not_found",
        ),
        (
            "diff of unknown images",
            raw(a, "GET", "/api/images/diff?a=img-nope&b=img-nope-2", "", ""),
            404,
            "not_found",
        ),
        (
            "diff without b",
            raw(a, "GET", "/api/images/diff?a=img-nope", "", ""),
            400,
            "bad_request",
        ),
        ("unknown endpoint", raw(a, "GET", "/api/nope", "", ""), 404, "not_found"),
        (
            "wrong method",
            raw(a, "GET", "/api/runs/run-nope/cancel", "", ""),
            405,
            "method_not_allowed",
        ),
    ];
    for (what, answer, status, code) in cases {
        assert_error(&spec, what, answer, status, code);
    }
    // An image repave did not bake but the provider has (the base image):
    // its manifest is empty, not 404; a diff against it works.
    let golden = get(a, "/api/fleet")[0]["golden_image"].as_str().unwrap().to_string();
    let manifest = get(a, &format!("/api/images/{golden}/manifest"));
    assert_eq!(manifest["image"], golden.as_str());
    assert!(
        manifest["run"].is_null() && manifest["updates"].as_array().unwrap().is_empty(),
        "{manifest}"
    );
    let diff = get(a, &format!("/api/images/diff?a={golden}&b={golden}"));
    assert_eq!(diff["common"], 0, "{diff}");
    let (status, _) = http(a, "GET", &format!("/api/images/diff?a={golden}&b=img-nope"), None, None);
    assert_eq!(status, 404);
}

#[test]
fn the_api_cancels_a_run_another_process_drives() {
    let _l = fleet_lock();
    // The builder's validation takes a while: the run is still baking when
    // the cancel arrives.
    let fleet = Fleet::new(1, 1, 2, "validate = [\"sleep 5\"]\n");
    let config = Path::new(&fleet.config);
    let serve = Serve::start(config, "serve.log");
    let a = serve.addr.as_str();
    let mut cli = std::process::Command::new(exe())
        .args(["--config", fleet.config.as_str(), "run"])
        .env_remove("REPAVE_CONFIG")
        .env_remove("REPAVE_STATE_DIR")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let run = wait_for("the CLI's run", Duration::from_secs(60), || {
        let runs = get(a, "/api/runs?state=running");
        runs[0]["id"].as_str().map(str::to_string)
    });
    let listed = get(a, "/api/runs?state=running");
    assert_eq!(listed[0]["live"], false, "driven by the CLI, not the server: {listed}");
    let (status, body) = post(a, &format!("/api/runs/{run}/cancel"), Some(TOKEN), "");
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["driven_here"], false, "{body}");
    let exited = wait_status(&mut cli, Duration::from_secs(60));
    assert_eq!(exited.code(), Some(5), "the CLI's run stopped: paused or cancelled");
    let state = wait_state(a, &run, &["cancelled", "paused"], Duration::from_secs(10));
    assert_eq!(state, "cancelled", "stopped before publish");
}

/// A TCP server on 127.0.0.1 that accepts and never answers (an AWS
/// endpoint that hangs), for at most `limit`.
fn black_hole(limit: Duration) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let until = Instant::now() + limit;
        let mut held = Vec::new();
        while Instant::now() < until && held.len() < 64 {
            match listener.accept() {
                Ok((conn, _)) => held.push(conn),
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    });
    port
}

/// The server builds each run's engine as `repave run` does: an AWS
/// pipeline's `poll_interval` sets its timing, seen in the group lease the
/// run takes (it outlives six polls: 3 minutes at 30 s, not the 30 s a
/// local run's lease lasts).
#[test]
fn the_server_runs_an_aws_pipeline_with_its_poll_interval() {
    let dir = tempfile::tempdir().unwrap();
    let endpoint = black_hole(Duration::from_secs(60));
    let config = dir.path().join("repave.toml");
    std::fs::write(
        &config,
        format!(
            "[providers.aws]\nendpoint_url = \"http://127.0.0.1:{endpoint}\"\nregion = \"us-east-1\"\npoll_interval = \"30s\"\n\n\
             [pipelines.web]\nprovider = \"aws\"\ngroup = \"serve-poll-test\"\nparameter = \"/repave/serve-poll-test\"\n\
             [pipelines.web.builder]\ninstance_type = \"t3.micro\"\n"
        ),
    )
    .unwrap();
    let mut cmd = serve_command(&config);
    // The standard credential chain finds these first.
    cmd.env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_EC2_METADATA_DISABLED", "true");
    let mut serve = Serve::spawn(cmd, &dir.path().join("serve.log"));
    let run = start_run(&serve.addr);
    let store = repave_store::Store::open(&dir.path().join(".repave/repave.db")).unwrap();
    let record = store.get_run(&repave_core::RunId::new(run.clone())).unwrap().unwrap();
    assert_eq!(
        record.lease_key(),
        "serve-poll-test@us-east-1",
        "a group is leased in its place"
    );
    let lease = store
        .current_lease(&record.lease_key())
        .unwrap()
        .expect("the run holds the group lease");
    assert_eq!(lease.holder, run);
    let now = repave_core::ids::Clock::now(&repave_core::ids::SystemClock);
    let ttl = Duration::from_millis((lease.expires_at.millis() - now.millis()).max(0) as u64);
    assert!(
        ttl > Duration::from_secs(150),
        "lease for {ttl:?}: the engine did not get the pipeline's options"
    );
    assert_eq!(serve.terminate(), 0);
}
