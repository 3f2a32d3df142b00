//! `kill -9` at seeded instants spread over every step of a run, each
//! followed by `repave resume`; load runs at the balancer throughout.
//! After each cycle: the run succeeded, one image per run, the golden
//! parameter only ever named images that exist, no builder or test
//! instance left, every instance on the run's image; and across all of it
//! not one failed request.

use crate::common;

use common::{fleet_lock, http_load, Fleet, Repave};
use repave_store::{RunFilter, StepState, Store};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const KILLS: u64 = 30;
const STEPS: &[&str] = &[
    "resolve",
    "launch_builder",
    "wait_ready",
    "scan",
    "patch",
    "stop_builder",
    "create_image",
    "terminate_builder",
    "test_image",
    "publish",
    "roll",
    "verify",
    "retain",
];

/// xorshift64*: a seeded, dependency-free generator.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

fn newest_run(store: &Store) -> Option<repave_store::RunRecord> {
    store
        .list_runs(&RunFilter {
            limit: Some(1),
            ..Default::default()
        })
        .unwrap()
        .into_iter()
        .next()
}

fn images(c: &str) -> Vec<serde_json::Value> {
    Repave::new()
        .args(["--config", c, "--json", "images"])
        .run()
        .expect_code(0)
        .json()
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn kill_9_anywhere_then_resume() {
    let _l = fleet_lock();
    let seed: u64 = std::env::var("REPAVE_KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_2026);
    let mut rng = Rng(seed);
    // Every cycle bakes from the previous cycle's image, which has every
    // update already: `when_empty = "publish"` bakes one anyway, so each
    // cycle goes through every step.
    let fleet = Fleet::new(
        3,
        3,
        6,
        "[pipelines.web.patch]\nwhen_empty = \"publish\"\n[pipelines.web.rollout]\nwarmup = \"300ms\"\n[pipelines.web.retention]\nkeep = 2\nrollback_window = \"1ms\"\n",
    );
    fleet.up();
    let (c, port) = (fleet.config.clone(), fleet.port);
    let store = Store::open(&fleet.state_dir().join("repave.db")).unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let load = http_load(format!("127.0.0.1:{port}"), stop.clone(), 5_000_000);
    let mut interrupted_in: BTreeMap<String, u32> = BTreeMap::new();

    for i in 0..KILLS {
        let target = STEPS[(i as usize) % STEPS.len()];
        let delay = Duration::from_millis(rng.next() % 250);
        let before = newest_run(&store).map(|r| r.id);
        let mut child = fleet.spawn(&["run"]);
        // Wait for the target step to start (or the run to end), then a
        // seeded delay, then SIGKILL.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            assert!(Instant::now() < deadline, "kill {i}: step {target} never started");
            if child.try_wait().unwrap().is_some() {
                break;
            }
            if let Some(r) = newest_run(&store).filter(|r| Some(&r.id) != before.as_ref()) {
                if store.step(&r.id, target).unwrap().is_some() {
                    break;
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(delay);
        let _already_exited = child.kill();
        child.wait().unwrap();

        let Some(run) = newest_run(&store).filter(|r| Some(&r.id) != before.as_ref()) else {
            // Killed before the run was even recorded: nothing to resume.
            *interrupted_in.entry("before the run existed".into()).or_default() += 1;
            continue;
        };
        let running = store
            .steps(&run.id)
            .unwrap()
            .into_iter()
            .find(|s| s.state == StepState::Running)
            .map(|s| s.name);
        *interrupted_in
            .entry(running.clone().unwrap_or_else(|| "between steps".into()))
            .or_default() += 1;

        let state = store.get_run(&run.id).unwrap().unwrap().state;
        if !state.is_terminal() {
            let v = Repave::new()
                .args(["--config", c.as_str(), "--json", "resume", run.id.as_str()])
                .run();
            assert_eq!(
                v.code, 0,
                "kill {i} in {running:?}: resume failed\n{}\n{}",
                v.stdout, v.stderr
            );
        }
        let record = store.get_run(&run.id).unwrap().unwrap();
        assert_eq!(
            record.state.as_str(),
            "succeeded",
            "kill {i} in {running:?}: {:?}",
            record.error
        );
        check_invariants(&c, &fleet.state_dir(), &run.id.to_string(), i);
    }
    stop.store(true, Ordering::Relaxed);
    let (ok, failed, errors) = load.join().unwrap();
    eprintln!("kills by step: {interrupted_in:?}; requests ok {ok}, failed {failed}");
    assert_eq!(failed, 0, "failed requests across kills and resumes: {errors:?}");
    // The kills really were spread over the run.
    let mid_step = interrupted_in.keys().filter(|k| STEPS.contains(&k.as_str())).count();
    assert!(mid_step >= 6, "kills landed in too few steps: {interrupted_in:?}");
}

/// The fleet process as a second victim: at seeded instants over the run,
/// the orchestrator and the fleet process are both SIGKILLed; the fleet is
/// brought back (`repave local up` adopts its instances) and `resume`
/// finishes the run with the same invariants. (No load here: with the fleet
/// process dead its balancer is down, as an ALB would be.)
#[test]
fn kill_9_of_the_fleet_process_too() {
    let _l = fleet_lock();
    let mut rng = Rng(0x000f_1ee7);
    let fleet = Fleet::new(
        3,
        3,
        6,
        // As above: every cycle bakes an image although the first installs everything.
        "[pipelines.web.patch]\nwhen_empty = \"publish\"\n[pipelines.web.rollout]\nwarmup = \"300ms\"\n[pipelines.web.retention]\nkeep = 2\nrollback_window = \"1ms\"\n",
    );
    fleet.up();
    let c = fleet.config.clone();
    let store = Store::open(&fleet.state_dir().join("repave.db")).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let daemon_pid = || {
        rt.block_on(async {
            let client = repave_local::LocalClient::connect(&fleet.state_dir()).await.ok()?;
            client.daemon_pid().await.ok()
        })
    };
    let targets = [
        "wait_ready",
        "patch",
        "create_image",
        "test_image",
        "publish",
        "roll",
        "roll",
        "verify",
    ];
    for (i, target) in targets.iter().enumerate() {
        let before = newest_run(&store).map(|r| r.id);
        let mut child = fleet.spawn(&["run"]);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            assert!(Instant::now() < deadline, "kill {i}: step {target} never started");
            if child.try_wait().unwrap().is_some() {
                break;
            }
            if let Some(r) = newest_run(&store).filter(|r| Some(&r.id) != before.as_ref()) {
                if store.step(&r.id, target).unwrap().is_some() {
                    break;
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(rng.next() % 200));
        let daemon = daemon_pid().expect("the fleet process answers");
        // Both victims, in a seeded order.
        if rng.next().is_multiple_of(2) {
            let _ = child.kill();
            // SAFETY: signalling the fleet process this test started.
            unsafe { libc::kill(daemon as libc::pid_t, libc::SIGKILL) };
        } else {
            // SAFETY: as above.
            unsafe { libc::kill(daemon as libc::pid_t, libc::SIGKILL) };
            std::thread::sleep(Duration::from_millis(rng.next() % 300));
            let _ = child.kill();
        }
        child.wait().unwrap();
        fleet.up();
        let run = newest_run(&store)
            .filter(|r| Some(&r.id) != before.as_ref())
            .expect("the run was recorded");
        let state = store.get_run(&run.id).unwrap().unwrap().state;
        if !state.is_terminal() {
            let v = Repave::new()
                .args(["--config", c.as_str(), "--json", "resume", run.id.as_str()])
                .run();
            assert_eq!(
                v.code, 0,
                "kill {i} at {target}: resume failed\n{}\n{}",
                v.stdout, v.stderr
            );
        }
        let record = store.get_run(&run.id).unwrap().unwrap();
        assert_eq!(
            record.state.as_str(),
            "succeeded",
            "kill {i} at {target}: {:?}",
            record.error
        );
        check_invariants(&c, &fleet.state_dir(), &run.id.to_string(), i as u64);
        // The image was never blamed for the lost fleet process.
        let of_run: Vec<_> = images(&c)
            .into_iter()
            .filter(|img| img["tags"]["repave:run"] == run.id.as_str())
            .collect();
        assert_eq!(of_run[0]["tags"]["repave:status"], serde_json::Value::Null, "kill {i}");
    }
}

fn check_invariants(c: &str, state: &Path, run: &str, i: u64) {
    let all = images(c);
    let of_run: Vec<_> = all.iter().filter(|img| img["tags"]["repave:run"] == run).collect();
    assert_eq!(of_run.len(), 1, "kill {i}: run {run} created {} images", of_run.len());
    let image = of_run[0]["id"].as_str().unwrap();
    let st = Repave::new()
        .args(["--config", c, "--json", "status"])
        .run()
        .expect_code(0)
        .json();
    let existing: Vec<&str> = all
        .iter()
        .filter(|i| i["state"] == "available")
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    // The current golden image exists; older values may have been retired by
    // retention only once outside the rollback window.
    let versions = st[0]["parameter"]["versions"].as_array().unwrap();
    let current = versions.last().unwrap()["value"].as_str().unwrap();
    assert_eq!(current, image, "kill {i}: parameter not on the run's image");
    assert!(
        existing.contains(&current),
        "kill {i}: golden parameter names a missing image {current}"
    );
    let instances = st[0]["instances"].as_array().unwrap();
    assert_eq!(instances.len(), 3, "kill {i}: {instances:?}");
    assert!(instances.iter().all(|m| m["image"] == image), "kill {i}: {instances:?}");
    // Only the members have roots; no builder or test instance is alive.
    let roots: Vec<String> = std::fs::read_dir(state.join("local/instances"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let members: Vec<&str> = instances.iter().map(|m| m["id"].as_str().unwrap()).collect();
    for r in &roots {
        assert!(
            members.contains(&r.as_str()),
            "kill {i}: instance root {r} left behind (members {members:?})"
        );
    }
}
