//! One driver per run, and nothing wedged, through the real binary on the
//! local provider (issue 10): `resume` racing a live `repave run` (mid-bake
//! and mid-roll) is refused naming the driver; of two resumes after a kill
//! one proceeds; the fleet process killed mid-roll pauses the run (the image
//! stays good), a new run is refused naming it, and resume finishes it; a
//! surge the group's max cannot hold is held within it.

use crate::common;

use common::{fleet_lock, wait_for, wait_status, Fleet};
use std::time::Duration;

/// The newest run's id, once there is one.
fn latest_run(fleet: &Fleet) -> Option<String> {
    let hist = fleet.repave(["--json", "history"]);
    hist.json().get(0).and_then(|r| r["id"].as_str()).map(str::to_string)
}

/// Whether the run's log has an event whose message starts with `prefix`.
fn logged(fleet: &Fleet, run: &str, prefix: &str) -> bool {
    let logs = fleet.repave(["--json", "logs", run]).json();
    logs["events"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|e| e["message"].as_str().unwrap_or("").starts_with(prefix))
}

fn wait_logged(fleet: &Fleet, prefix: &str) -> String {
    wait_for(&format!("an event {prefix:?}"), Duration::from_secs(90), || {
        latest_run(fleet).filter(|r| logged(fleet, r, prefix))
    })
}

fn image_status(fleet: &Fleet, image: &str) -> Option<String> {
    let images = fleet.repave(["--json", "images"]).expect_code(0).json();
    images
        .as_array()
        .into_iter()
        .flatten()
        .find(|i| i["id"] == image)
        .and_then(|i| i["tags"]["repave:status"].as_str().map(str::to_string))
}

#[test]
fn resume_while_the_run_is_driven_is_refused_naming_its_driver() {
    let _l = fleet_lock();
    let fleet = Fleet::new(4, 4, 8, "[pipelines.web.rollout]\nwarmup = \"3s\"\n");
    fleet.up();
    let mut child = fleet.spawn(&["run"]);
    let pid = child.id();
    for (when, prefix) in [("mid-bake", "scan started"), ("mid-roll", "drain ")] {
        let run = wait_logged(&fleet, prefix);
        let refused = fleet.repave(["resume", run.as_str()]);
        assert_eq!(refused.code, 4, "{when}: {}\n{}", refused.stdout, refused.stderr);
        assert!(
            refused.stderr.contains(&format!("driven by pid {pid}")),
            "{when}: names the driver: {}",
            refused.stderr
        );
    }
    let status = wait_status(&mut child, Duration::from_secs(180));
    assert!(status.success(), "the original run finished: {status:?}");
    let st = fleet.status();
    let run = latest_run(&fleet).expect("run");
    let v = fleet.repave(["--json", "logs", run.as_str()]).json();
    assert_eq!(v["run"]["state"], "succeeded", "{v:#}");
    assert_eq!(st["instances"].as_array().unwrap().len(), 4);
}

#[test]
fn of_two_resumes_after_a_kill_exactly_one_proceeds() {
    let _l = fleet_lock();
    let fleet = Fleet::new(4, 4, 8, "[pipelines.web.rollout]\nwarmup = \"3s\"\n");
    fleet.up();
    let mut child = fleet.spawn(&["run"]);
    let run = wait_logged(&fleet, "drain ");
    child.kill().unwrap();
    child.wait().unwrap();
    let resume = |fleet: &Fleet| {
        std::process::Command::new(common::exe())
            .args(["--config", fleet.config.as_str(), "resume", run.as_str()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (mut a, mut b) = (resume(&fleet), resume(&fleet));
    let mut codes = vec![
        wait_status(&mut a, Duration::from_secs(180)).code(),
        wait_status(&mut b, Duration::from_secs(180)).code(),
    ];
    codes.sort();
    assert_eq!(codes, vec![Some(0), Some(4)], "one resumes, the other is refused");
    let v = fleet.repave(["--json", "logs", run.as_str()]).json();
    assert_eq!(v["run"]["state"], "succeeded", "{v:#}");
}

#[test]
fn a_fleet_process_killed_mid_roll_pauses_the_run_and_resume_finishes() {
    let _l = fleet_lock();
    let fleet = Fleet::new(2, 4, 8, "[pipelines.web.rollout]\nwarmup = \"3s\"\n");
    fleet.up();
    let mut child = std::process::Command::new(common::exe())
        .args(["--config", fleet.config.as_str(), "--json", "run"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let run = wait_logged(&fleet, "drain ");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let daemon = rt.block_on(async {
        let c = repave_local::LocalClient::connect(&fleet.state_dir()).await.unwrap();
        c.daemon_pid().await.unwrap()
    });
    // SAFETY: signalling a process this test's fleet started.
    unsafe { libc::kill(daemon as libc::pid_t, libc::SIGKILL) };
    let status = wait_status(&mut child, Duration::from_secs(120));
    let mut out = String::new();
    std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut out).unwrap();
    assert_eq!(status.code(), Some(5), "paused, resumable: {out}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json outcome");
    assert_eq!(v["state"], "paused", "{v:#}");
    let err = v["summary"]["error"].as_str().unwrap_or("");
    assert!(err.contains("not because of the image"), "{err}");
    let image = v["summary"]["new_image"].as_str().expect("published").to_string();

    // The fleet comes back (it adopts its instances); the image is good; a
    // new run is refused naming the paused one; resume finishes it.
    fleet.up();
    assert_eq!(
        image_status(&fleet, &image),
        None,
        "a lost fleet process is not the image's fault"
    );
    let refused = fleet.repave(["run"]);
    assert_eq!(refused.code, 4, "{}", refused.stderr);
    assert!(
        refused.stderr.contains(&run),
        "names the unfinished run: {}",
        refused.stderr
    );
    let done = fleet.repave(["--json", "resume", run.as_str()]).expect_code(0).json();
    assert_eq!(done["state"], "succeeded", "{done:#}");
    let st = fleet.status();
    assert_eq!(st["group"]["desired"], 4, "back at base capacity: {st:#}");
    let instances = st["instances"].as_array().unwrap();
    assert_eq!(instances.len(), 4);
    assert!(instances.iter().all(|i| i["image"] == image.as_str()), "{instances:?}");
}

#[test]
fn a_surge_above_the_groups_max_is_held_within_it() {
    let _l = fleet_lock();
    // 150 % of 6 is 9; the group holds 8.
    let fleet = Fleet::new(2, 6, 8, "[pipelines.web.rollout]\nwarmup = \"1s\"\n");
    fleet.up();
    let v = fleet.repave(["--json", "run"]).expect_code(0).json();
    assert_eq!(v["state"], "succeeded", "{v:#}");
    assert_eq!(v["summary"]["roll"]["max_total"], 8, "{:#}", v["summary"]["roll"]);
    let image = v["summary"]["new_image"].as_str().unwrap();
    assert_eq!(image_status(&fleet, image), None);
}

#[test]
fn a_paused_run_blocks_new_runs_until_cancelled() {
    let _l = fleet_lock();
    // The roll may start nothing after its first second: it pauses.
    let fleet = Fleet::new(
        2,
        3,
        6,
        "[pipelines.web.rollout]\nwarmup = \"1s\"\nwindow_cutoff = \"1ms\"\n",
    );
    fleet.up();
    let paused = fleet.repave(["--json", "run"]);
    assert_eq!(paused.code, 5, "{}\n{}", paused.stdout, paused.stderr);
    let run = paused.json()["run"].as_str().unwrap().to_string();
    let refused = fleet.repave(["run"]);
    assert_eq!(refused.code, 4, "{}", refused.stderr);
    assert!(
        refused.stderr.contains(&run) && refused.stderr.contains("paused"),
        "{}",
        refused.stderr
    );
    let cancelled = fleet.repave(["--json", "cancel", run.as_str()]).expect_code(0).json();
    assert_eq!(cancelled["ended"], true, "{cancelled}");
    let logs = fleet.repave(["--json", "logs", run.as_str()]).json();
    assert_eq!(logs["run"]["state"], "cancelled");
    // The group is free again.
    let next = fleet.repave(["--json", "roll"]);
    assert_eq!(
        next.code, 5,
        "a new run starts (and pauses at its own cutoff): {}",
        next.stderr
    );
}
