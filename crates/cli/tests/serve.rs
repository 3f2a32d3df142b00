//! `repave serve` end to end: the real binary on 127.0.0.1, a local fleet
//! of real processes, real HTTP. Every API endpoint (401 and 409 too),
//! webhooks against a local receiver, the dashboard in headless Chromium
//! during a roll, and SIGTERM mid-roll with a restart that finishes it
//! under load without one failed request.

use crate::common;

use common::serve::{
    get, http, post, serve_command, start_run, wait_roll_under_way, wait_state, write_config, Serve, TOKEN,
};
use common::{fleet_lock, free_port, http_load, wait_for, wait_status, FleetGuard};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A webhook receiver on 127.0.0.1 that fails its first request (500) to
/// prove the retry, then accepts; records every body.
fn receiver() -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let seen = bodies.clone();
    std::thread::spawn(move || {
        for (i, conn) in listener.incoming().enumerate() {
            let Ok(mut conn) = conn else { continue };
            conn.set_read_timeout(Some(Duration::from_secs(5))).ok();
            let mut r = BufReader::new(conn.try_clone().unwrap());
            let mut len = 0;
            loop {
                let mut h = String::new();
                if r.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                    break;
                }
                if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; len];
            let _ = r.read_exact(&mut body);
            let status = if i == 0 { "500 Internal Server Error" } else { "200 OK" };
            if i > 0 {
                seen.lock().unwrap().push(String::from_utf8_lossy(&body).into_owned());
            }
            let _ = write!(
                conn,
                "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
        }
    });
    (addr, bodies)
}

#[test]
fn api_endpoints_auth_conflicts_webhooks_and_pages() {
    let _l = fleet_lock();
    let dir = tempfile::tempdir().unwrap();
    let (hook, bodies) = receiver();
    let extra = format!("[[server.webhooks]]\nurl = \"http://{hook}/hook\"\n");
    let config = write_config(dir.path(), free_port(), 2, "1s", &extra);
    let _guard = FleetGuard(dir.path().join(".repave"));
    let serve = Serve::start(&config, "serve.log");
    let a = serve.addr.as_str();

    // Pipelines with their next window (Patch Tuesday + 3, 02:00 Taipei).
    let pipelines = get(a, "/api/pipelines");
    assert_eq!(pipelines[0]["name"], "web");
    assert!(
        pipelines[0]["next_window"]["start"].as_i64().unwrap() > 0,
        "{pipelines}"
    );
    assert_eq!(pipelines[0]["schedule"]["enabled"], true);

    // Without (or with a wrong) token: 401 and no run is created.
    for token in [None, Some("wrong-token-0123456789")] {
        let (status, body) = post(a, "/api/runs", token, r#"{"pipeline":"web"}"#);
        assert_eq!(status, 401, "{body}");
    }
    assert_eq!(
        get(a, "/api/runs").as_array().unwrap().len(),
        0,
        "a refused call changed nothing"
    );
    let (status, _) = post(a, "/api/runs", Some(TOKEN), r#"{"pipeline":"nope"}"#);
    assert_eq!(status, 404);
    let (status, _) = post(a, "/api/runs", Some(TOKEN), r#"{"pipeline":"web","kind":"sideways"}"#);
    assert_eq!(status, 400);

    // Start; a second run on the same group gets 409 naming the holder.
    let run = start_run(a);
    let (status, conflict) = post(a, "/api/runs", Some(TOKEN), r#"{"pipeline":"web","kind":"roll"}"#);
    assert_eq!(status, 409, "{conflict}");
    assert_eq!(conflict["error"]["code"], "leased", "{conflict}");
    assert_eq!(conflict["error"]["holder"], run.as_str());

    // Cancel mid-roll: the run pauses at a safe point; resume finishes it.
    wait_for("the roll step", Duration::from_secs(90), || {
        let d = get(a, &format!("/api/runs/{run}"));
        d["steps"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["name"] == "roll")
            .then_some(())
    });
    assert_eq!(post(a, &format!("/api/runs/{run}/cancel"), None, "").0, 401);
    let (status, cancelled) = post(a, &format!("/api/runs/{run}/cancel"), Some(TOKEN), "");
    assert_eq!(status, 202, "{cancelled}");
    assert_eq!(
        wait_state(a, &run, &["paused", "succeeded", "failed"], Duration::from_secs(60)),
        "paused"
    );
    let (status, resumed) = post(a, &format!("/api/runs/{run}/resume"), Some(TOKEN), "");
    assert_eq!(status, 202, "{resumed}");
    assert_eq!(
        wait_state(
            a,
            &run,
            &["succeeded", "failed", "rolled_back"],
            Duration::from_secs(120)
        ),
        "succeeded"
    );
    // A finished run can be neither cancelled nor resumed.
    assert_eq!(post(a, &format!("/api/runs/{run}/cancel"), Some(TOKEN), "").0, 409);
    assert_eq!(post(a, &format!("/api/runs/{run}/resume"), Some(TOKEN), "").0, 409);

    // Runs, filters, detail with steps and events, progress samples.
    let listed = get(a, "/api/runs?pipeline=web&state=succeeded");
    assert_eq!(listed[0]["id"], run.as_str());
    assert_eq!(get(a, "/api/runs?state=failed").as_array().unwrap().len(), 0);
    assert_eq!(http(a, "GET", "/api/runs?state=bogus", None, None).0, 400);
    assert_eq!(http(a, "GET", "/api/runs/run-nope", None, None).0, 404);
    let detail = get(a, &format!("/api/runs/{run}"));
    let steps: Vec<&str> = detail["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert!(steps.contains(&"patch") && steps.contains(&"roll"), "{steps:?}");
    assert!(detail["events"].as_array().unwrap().len() > 10);
    let progress = get(a, &format!("/api/runs/{run}/progress"));
    assert!(!progress["samples"].as_array().unwrap().is_empty(), "{progress}");

    // Fleet: every instance on the golden image, its manifest from the patch step.
    let fleet = get(a, "/api/fleet");
    let g = &fleet[0];
    assert_eq!(g["drift"], 0, "{g}");
    let golden = g["golden_image"].as_str().unwrap().to_string();
    let img = g["images"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["image"] == golden.as_str())
        .unwrap();
    let updates = img["manifest"]["updates"].as_array().unwrap().len();
    assert!(updates > 0, "{img}");
    let parent = img["manifest"]["lineage"][0].as_str().unwrap().to_string();
    let diff = get(a, &format!("/api/images/diff?a={parent}&b={golden}"));
    assert_eq!(diff["added"].as_array().unwrap().len(), updates, "{diff}");
    assert_eq!(
        get(a, &format!("/api/images/{golden}/manifest"))["updates"]
            .as_array()
            .unwrap()
            .len(),
        updates
    );

    // Rollback: a new run puts the group back on the previous image.
    let (status, rb) = post(a, &format!("/api/runs/{run}/rollback"), Some(TOKEN), "");
    assert_eq!(status, 202, "{rb}");
    let rb = rb["run"]["id"].as_str().unwrap().to_string();
    assert_eq!(
        wait_state(a, &rb, &["succeeded", "failed"], Duration::from_secs(120)),
        "succeeded"
    );
    assert_eq!(get(a, "/api/fleet")[0]["golden_image"], parent.as_str());

    // OpenAPI names every route; metrics count runs and API calls.
    let spec = get(a, "/openapi.json");
    for p in [
        "/api/pipelines",
        "/api/runs",
        "/api/runs/{id}",
        "/api/runs/{id}/cancel",
        "/api/runs/{id}/resume",
        "/api/runs/{id}/rollback",
        "/api/fleet",
        "/api/webhooks",
        "/api/pipelines/{name}/schedule",
        "/api/images/diff",
        "/metrics",
    ] {
        assert!(spec["paths"].get(p).is_some(), "{p} missing from /openapi.json");
    }
    let (status, metrics) = http(a, "GET", "/metrics", None, None);
    assert_eq!(status, 200);
    for want in [
        "repave_runs_total{pipeline=\"web\",result=\"succeeded\"} 2",
        "repave_api_requests_total{method=\"POST\",route=\"/api/runs\",status=\"401\"} 2",
        "repave_step_duration_seconds_count{step=\"patch\"} 1",
        "repave_in_service_instances{group=\"web\"} 2",
        "repave_image_age_seconds{group=\"web\"",
    ] {
        assert!(metrics.contains(want), "{want:?} not in\n{metrics}");
    }

    // Dashboard pages render.
    let (status, index) = http(a, "GET", "/", None, None);
    assert!(
        status == 200 && index.contains(&run) && index.contains("TUE#2+3"),
        "{index}"
    );
    let (status, page) = http(a, "GET", &format!("/runs/{run}"), None, None);
    assert!(status == 200 && page.contains("id=\"chart\"") && page.contains("create_image"));
    let (status, page) = http(a, "GET", &format!("/fleet?a={parent}&b={golden}"), None, None);
    assert!(status == 200 && page.contains(&format!("{updates} added")), "{page}");

    // Webhooks: started and succeeded for each run, after one retried 500.
    let want = |event: &str, run: &str| format!("\"event\":\"{event}\"") + &format!("|{run}");
    wait_for("webhooks", Duration::from_secs(20), || {
        let seen = bodies.lock().unwrap();
        let has = |w: String| {
            let (ev, r) = w.split_once('|').unwrap();
            seen.iter().any(|b| b.contains(ev) && b.contains(r))
        };
        (has(want("started", &run)) && has(want("succeeded", &run)) && has(want("succeeded", &rb))).then_some(())
    });
    // ... recorded in the outbox, which names hooks by digest, never by URL.
    wait_for("outbox", Duration::from_secs(20), || {
        let notices = get(a, "/api/webhooks");
        let list = notices.as_array().unwrap();
        assert!(!notices.to_string().contains(&hook.to_string()), "{notices}");
        let delivered = list.iter().filter(|n| n["state"] == "delivered").count();
        let retried = list.iter().any(|n| n["attempts"].as_u64() > Some(1));
        (delivered == list.len() && delivered >= 4 && retried).then_some(())
    });

    // The schedule: disabled through the API (not without the token), seen
    // by the CLI on the same store, enabled again by the CLI.
    let body = r#"{"enabled":false,"reason":"change freeze"}"#;
    assert_eq!(post(a, "/api/pipelines/web/schedule", None, body).0, 401);
    assert_eq!(get(a, "/api/pipelines")[0]["schedule"]["enabled"], true);
    assert_eq!(post(a, "/api/pipelines/nope/schedule", Some(TOKEN), body).0, 404);
    let (status, changed) = post(a, "/api/pipelines/web/schedule", Some(TOKEN), body);
    assert_eq!(status, 200, "{changed}");
    assert_eq!(changed["schedule"]["disabled_reason"], "change freeze");
    let cli = |args: &[&str]| {
        common::Repave::new()
            .args(["--config", config.to_str().unwrap()])
            .args(args.iter().copied())
            .run()
    };
    let shown = cli(&["--json", "schedule", "show"]).expect_code(0).json();
    assert_eq!(shown[0]["enabled"], false, "{shown}");
    assert_eq!(shown[0]["disabled_reason"], "change freeze");
    let (status, index) = http(a, "GET", "/", None, None);
    assert!(status == 200 && index.contains("change freeze"), "{index}");
    cli(&["schedule", "enable", "web"]).expect_code(0);
    assert_eq!(get(a, "/api/pipelines")[0]["schedule"]["enabled"], true);
    let err = cli(&["schedule", "enable", "nope"]).expect_code(2);
    assert!(err.stderr.contains("unknown pipeline \"nope\""), "{}", err.stderr);
}

fn chromium(args: &[&str]) -> String {
    let bin = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|p| Path::new(p).exists());
    let bin = bin.expect("chromium is not installed (apt-get install -y chromium): the browser test needs it");
    let profile = tempfile::tempdir().unwrap();
    let profile_arg = format!("--user-data-dir={}", profile.path().display());
    let out = Command::new(bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
        ])
        .args([
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            profile_arg.as_str(),
        ])
        .args(args)
        .stderr(Stdio::null())
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn attr(dom: &str, name: &str) -> u64 {
    let chart = &dom[dom.find("id=\"chart\"").expect("chart in the DOM")..];
    let chart = &chart[..chart.find('>').unwrap()];
    let key = format!("{name}=\"");
    let at = chart
        .find(&key)
        .unwrap_or_else(|| panic!("{name} not on the chart: {chart}"))
        + key.len();
    chart[at..].split('"').next().unwrap().parse().unwrap()
}

fn artifacts() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let dir = target.join("test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn dashboard_chart_moves_during_a_roll_in_headless_chromium() {
    let _l = fleet_lock();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), free_port(), 4, "2500ms", "");
    let _guard = FleetGuard(dir.path().join(".repave"));
    let mut serve = Serve::start(&config, "serve.log");
    let a = serve.addr.clone();
    let a = a.as_str();
    let run = start_run(a);
    wait_for("roll samples", Duration::from_secs(90), || {
        let p = get(a, &format!("/api/runs/{run}/progress"));
        (p["samples"].as_array().unwrap().len() >= 2).then_some(())
    });
    let url = format!("http://{a}/runs/{run}");
    let first = chromium(&["--virtual-time-budget=2000", "--dump-dom", url.as_str()]);
    let (samples1, new1) = (attr(&first, "data-samples"), attr(&first, "data-new"));
    // Mid-roll picture, kept as a test artifact.
    let shot = artifacts().join("dashboard-roll.png");
    let _ = std::fs::remove_file(&shot);
    let shot_arg = format!("--screenshot={}", shot.display());
    chromium(&[
        "--virtual-time-budget=2000",
        shot_arg.as_str(),
        "--window-size=1200,1300",
        url.as_str(),
    ]);
    std::thread::sleep(Duration::from_millis(1500));
    let second = chromium(&["--virtual-time-budget=2000", "--dump-dom", url.as_str()]);
    let (samples2, new2) = (attr(&second, "data-samples"), attr(&second, "data-new"));
    assert_reads_well(&first, "mid-roll");
    assert_reads_well(&second, "mid-roll");
    assert!(samples1 >= 2, "the chart drew the roll: {samples1} samples");
    assert!(
        samples2 > samples1,
        "the chart grew while the roll ran: {samples1} → {samples2}"
    );
    assert!(new2 > new1 || new2 == 4, "new instances went up: {new1} → {new2}");
    assert!(
        std::fs::metadata(&shot).map(|m| m.len() > 10_000).unwrap_or(false),
        "screenshot {} saved",
        shot.display()
    );
    assert_eq!(
        wait_state(
            a,
            &run,
            &["succeeded", "failed", "rolled_back"],
            Duration::from_secs(120)
        ),
        "succeeded"
    );
    // A server that did not drive the roll draws it from the run's summary.
    assert_eq!(serve.terminate(), 0);
    let serve = Serve::start(&config, "serve2.log");
    let url = format!("http://{}/runs/{run}", serve.addr);
    let after = chromium(&["--virtual-time-budget=2000", "--dump-dom", url.as_str()]);
    assert_reads_well(&after, "after a restart");
    assert!(attr(&after, "data-samples") >= 2, "the finished roll is drawn");
    assert!(after.contains("replaced 4/4 ·"), "{}", visible_text(&after));
}

/// The page as a reader sees it: without its scripts.
fn visible_text(dom: &str) -> String {
    let mut text = String::new();
    let mut rest = dom;
    while let Some(at) = rest.find("<script") {
        text.push_str(&rest[..at]);
        rest = rest[at..].find("</script>").map_or("", |end| &rest[at + end + 9..]);
    }
    text.push_str(rest);
    text
}

/// No "undefined" or "NaN" where a number or a word should be.
fn assert_reads_well(dom: &str, when: &str) {
    let text = visible_text(dom);
    for bad in ["undefined", "NaN"] {
        if let Some(at) = text.find(bad) {
            let before: String = text[..at]
                .chars()
                .rev()
                .take(120)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            let after: String = text[at..].chars().take(40).collect();
            panic!("{bad:?} on the run page {when}: …{before}{after}…");
        }
    }
}

#[test]
fn sigterm_mid_roll_then_restart_finishes_with_zero_failed_requests() {
    let _l = fleet_lock();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = write_config(dir.path(), port, 3, "1s", "");
    let _guard = FleetGuard(dir.path().join(".repave"));
    // `local up` returns once the group is healthy: load from the start.
    common::Repave::new()
        .args(["--config", config.to_str().unwrap(), "local", "up"])
        .run()
        .expect_code(0);
    let mut serve = Serve::start(&config, "serve1.log");
    let stop = Arc::new(AtomicBool::new(false));
    let load = http_load(format!("127.0.0.1:{port}"), stop.clone(), 5_000_000);
    let a = serve.addr.clone();
    let run = start_run(&a);
    // Mid-roll: the first new instances are up.
    wait_roll_under_way(&a, &run);
    assert_eq!(serve.terminate(), 0, "serve exits cleanly on SIGTERM");
    // Its log says the fleet outlives it, and how to stop it, at start and exit.
    let log = std::fs::read_to_string(dir.path().join("serve1.log")).unwrap();
    let says = "keeps running after serve exits: `repave --state-dir ";
    assert_eq!(log.matches(says).count(), 2, "{log}");
    assert!(log.contains("local down` stops it"), "{log}");
    let store = repave_store::Store::open(&dir.path().join(".repave/repave.db")).unwrap();
    let record = store.get_run(&repave_core::RunId::new(run.clone())).unwrap().unwrap();
    assert_eq!(
        record.state.as_str(),
        "paused",
        "stopped at a safe point: {:?}",
        record.error
    );
    // The fleet keeps serving while no server runs; the next start resumes.
    std::thread::sleep(Duration::from_millis(500));
    let serve = Serve::start(&config, "serve2.log");
    assert_eq!(
        wait_state(
            &serve.addr,
            &run,
            &["succeeded", "failed", "rolled_back"],
            Duration::from_secs(120)
        ),
        "succeeded"
    );
    let detail = get(&serve.addr, &format!("/api/runs/{run}"));
    assert!(detail["events"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["message"].as_str().unwrap().starts_with("server shutdown")));
    stop.store(true, Ordering::Relaxed);
    let (ok, failed, errors) = load.join().unwrap();
    assert!(ok > 100, "load ran: {ok} ok");
    assert_eq!(failed, 0, "failed requests: {errors:?}");
}

#[test]
fn sigterm_mid_bake_then_restart_finishes_the_run() {
    let _l = fleet_lock();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), free_port(), 2, "200ms", "");
    let _guard = FleetGuard(dir.path().join(".repave"));
    let mut serve = Serve::start(&config, "serve1.log");
    let a = serve.addr.clone();
    let run = start_run(&a);
    wait_for("the builder", Duration::from_secs(60), || {
        let d = get(&a, &format!("/api/runs/{run}"));
        d["steps"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["name"] == "launch_builder")
            .then_some(())
    });
    assert_eq!(serve.terminate(), 0);
    let store = repave_store::Store::open(&dir.path().join(".repave/repave.db")).unwrap();
    let id = repave_core::RunId::new(run.clone());
    let record = store.get_run(&id).unwrap().unwrap();
    // Dropped between two steps: still `running` in the journal (not
    // cancelled, which would throw the bake away), nothing failed.
    assert_eq!(record.state.as_str(), "running", "{:?}", record.error);
    assert!(store
        .steps(&id)
        .unwrap()
        .iter()
        .all(|s| s.state != repave_store::StepState::Failed));
    let serve = Serve::start(&config, "serve2.log");
    assert_eq!(
        wait_state(
            &serve.addr,
            &run,
            &["succeeded", "failed", "rolled_back", "cancelled"],
            Duration::from_secs(120)
        ),
        "succeeded"
    );
}

#[test]
fn a_bad_window_is_refused_at_start_with_its_pipeline() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("repave.toml");
    std::fs::write(
        &config,
        "[providers.local.groups.web]\nmin = 1\nmax = 2\ndesired = 1\nport = 18999\n\n\
         [pipelines.web]\nprovider = \"local\"\ngroup = \"web\"\nparameter = \"latestAmi\"\n\
         window = { cron = \"0 2 * * *\", timezone = \"Mars/Olympus_Mons\", duration = \"4h\" }\n",
    )
    .unwrap();
    let _guard = FleetGuard(dir.path().join(".repave"));
    let ran = common::Repave::new()
        .args(["--config", config.to_str().unwrap(), "serve", "--listen", "127.0.0.1:0"])
        .run();
    assert!(
        !dir.path().join(".repave").exists(),
        "nothing started before the config was checked"
    );
    assert_eq!(ran.code, 2, "{}", ran.stderr);
    assert!(
        ran.stderr.contains("repave.toml:11:")
            && ran
                .stderr
                .contains("pipelines.web.window.timezone: unknown IANA time zone \"Mars/Olympus_Mons\""),
        "{}",
        ran.stderr
    );
}

/// One `repave serve` per state dir: a second one exits 4 naming the first
/// (and starts nothing); after the first is killed with SIGKILL, a new one
/// takes over at once instead of waiting out the lease.
#[test]
fn a_second_server_on_one_state_dir_is_refused() {
    let _l = fleet_lock();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), free_port(), 1, "1s", "");
    let _guard = FleetGuard(dir.path().join(".repave"));
    let mut first = Serve::start(&config, "serve-a.log");
    let second = serve_command(&config).stderr(Stdio::piped()).spawn().unwrap();
    let out = wait_exit(second, Duration::from_secs(30));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    let pid = first.child.id();
    assert!(
        stderr.contains(&format!(
            "another server (repave serve pid {pid}) is serving the state dir"
        )),
        "{stderr}"
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("listening"));
    // SIGKILL: no release. The next server sees the holder gone and starts.
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    let started = Instant::now();
    let third = Serve::start(&config, "serve-c.log");
    assert!(started.elapsed() < Duration::from_secs(25), "waited out the lease");
    assert_eq!(get(&third.addr, "/api/pipelines")[0]["name"], "web");
}

fn wait_exit(mut child: Child, limit: Duration) -> std::process::Output {
    wait_status(&mut child, limit);
    child.wait_with_output().unwrap()
}
