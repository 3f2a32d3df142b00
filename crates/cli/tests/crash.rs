//! Crash safety on the local provider: the orchestrator killed with SIGKILL
//! mid-roll, the fleet still serving, `status` naming the interrupted run,
//! `resume` finishing it with nothing leaked.

use crate::common;

use common::{fleet_lock, http_load, Fleet, Repave};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[test]
fn kill_9_mid_roll_then_resume() {
    let _l = fleet_lock();
    let fleet = Fleet::new(4, 4, 8, "[pipelines.web.rollout]\nwarmup = \"3s\"\n");
    fleet.up();
    let (c, port) = (fleet.config.clone(), fleet.port);
    let stop = Arc::new(AtomicBool::new(false));
    let load = http_load(format!("127.0.0.1:{port}"), stop.clone(), 1_000_000);

    let mut child = fleet.spawn(&["run"]);
    // Kill it once the roll has started draining old instances.
    let deadline = Instant::now() + Duration::from_secs(60);
    let run_id = loop {
        assert!(Instant::now() < deadline, "roll never started");
        let hist = Repave::new().args(["--config", c.as_str(), "--json", "history"]).run();
        if let Some(id) = hist.json().get(0).and_then(|r| r["id"].as_str()).map(str::to_string) {
            let logs = Repave::new()
                .args(["--config", c.as_str(), "--json", "logs", id.as_str()])
                .run()
                .json();
            let drained = logs["events"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["message"].as_str().unwrap_or("").starts_with("drain "));
            if drained {
                break id;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    // The fleet keeps serving without its orchestrator; status names the
    // interrupted run and what resume will do.
    std::thread::sleep(Duration::from_millis(500));
    let st = Repave::new()
        .args(["--config", c.as_str(), "--json", "status"])
        .run()
        .expect_code(0)
        .json();
    let interrupted = &st[0]["interrupted"];
    assert_eq!(interrupted[0]["run"], run_id.as_str(), "{st:#}");
    assert!(
        interrupted[0]["resume"].as_str().unwrap().contains("roll"),
        "{interrupted}"
    );

    let v = Repave::new()
        .args(["--config", c.as_str(), "--json", "resume", run_id.as_str()])
        .run()
        .expect_code(0)
        .json();
    assert_eq!(v["state"], "succeeded");
    stop.store(true, Ordering::Relaxed);
    let (ok, failed, errors) = load.join().unwrap();
    assert!(ok > 100, "load ran: {ok}");
    assert_eq!(failed, 0, "failed requests across kill and resume: {errors:?}");

    // Every instance on the new image; one image created, not two.
    let new_image = v["summary"]["new_image"].as_str().unwrap();
    let st = Repave::new()
        .args(["--config", c.as_str(), "--json", "status"])
        .run()
        .expect_code(0)
        .json();
    let instances = st[0]["instances"].as_array().unwrap();
    assert_eq!(instances.len(), 4);
    assert!(instances.iter().all(|i| i["image"] == new_image), "{instances:?}");
    let logs = Repave::new()
        .args(["--config", c.as_str(), "--json", "logs", run_id.as_str()])
        .run()
        .json();
    let creates = logs["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["name"] == "create_image")
        .count();
    assert_eq!(creates, 1);
    // No root left behind but the four members'.
    let roots = std::fs::read_dir(fleet.state_dir().join("local/instances"))
        .unwrap()
        .count();
    assert_eq!(roots, 4, "instance roots left behind");
}

/// `repave cancel` from another process: a bake stops at its next safe
/// point, cleans up and ends `cancelled` (exit 5); nothing is published.
#[test]
fn cancel_from_another_process_stops_a_bake_cleanly() {
    let _l = fleet_lock();
    let fleet = Fleet::new(2, 2, 4, "[pipelines.web.patch]\nmax_reboots = 3\n");
    fleet.up();
    let before = fleet.status();
    let store = repave_store::Store::open(&fleet.state_dir().join("repave.db")).unwrap();
    let mut child = std::process::Command::new(common::exe())
        .args(["--config", fleet.config.as_str(), "run"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let run = loop {
        assert!(Instant::now() < deadline, "the bake never reached its builder");
        let runs = store
            .list_runs(&repave_store::RunFilter {
                limit: Some(1),
                ..Default::default()
            })
            .unwrap();
        if let Some(r) = runs.first() {
            if store.step(&r.id, "wait_ready").unwrap().is_some() {
                break r.id.clone();
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let v = fleet.repave(["--json", "cancel", run.as_str()]).expect_code(0).json();
    assert_eq!(v["cancel_requested"], true);
    assert_eq!(v["driven"], true);
    let code = child.wait().unwrap().code();
    assert_eq!(code, Some(5), "a cancelled run exits 5");
    let record = store.get_run(&run).unwrap().unwrap();
    assert_eq!(record.state.as_str(), "cancelled", "{:?}", record.error);
    let after = fleet.status();
    assert_eq!(before["parameter"], after["parameter"], "nothing published");
    let roots = std::fs::read_dir(fleet.state_dir().join("local/instances"))
        .unwrap()
        .count();
    assert_eq!(roots, 2, "the builder was cleaned up");
    // A second cancel of an ended run is refused.
    fleet.repave(["cancel", run.as_str()]).expect_code(2);
}
