//! Nothing outlives what it belongs to: `repave demo` leaves no process
//! behind however it ends (Ctrl-C mid-roll, SIGKILL), `repave local down`
//! also stops what a killed fleet process left, and `repave serve` says that
//! the fleet it started keeps running.

use crate::common;

use common::{exe, fleet_lock, wait_for, wait_status, Fleet, FleetGuard};
use repave_core::provider::{Groups, Parameters};
use repave_local::LocalClient;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::MutexGuard;
use std::time::Duration;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// `repave demo --json --instances 2` in a fresh state dir, output to files
/// next to it, once its fleet process answers.
struct Demo {
    child: Child,
    state: PathBuf,
    /// Pid of the demo's fleet process.
    fleet: i32,
    // Dropped in this order: the fleet stopped, then its dir deleted.
    _guard: FleetGuard,
    _dir: tempfile::TempDir,
    _lock: MutexGuard<'static, ()>,
}

impl Demo {
    fn start() -> Demo {
        let lock = fleet_lock();
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let guard = FleetGuard(state.clone());
        let out = std::fs::File::create(state.with_extension("stdout")).unwrap();
        let err = std::fs::File::create(state.with_extension("stderr")).unwrap();
        let child = Command::new(exe())
            .args(["demo", "--json", "--instances", "2", "--state-dir"])
            .arg(&state)
            .env("REPAVE_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap();
        let fleet = fleet_pid(&state);
        Demo {
            child,
            state,
            fleet,
            _guard: guard,
            _dir: dir,
            _lock: lock,
        }
    }

    fn output(&self, stream: &str) -> String {
        std::fs::read_to_string(self.state.with_extension(stream)).unwrap()
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        // A test that failed before the demo ended: it exits, already or now.
        let _exited_or_killed = self.child.kill();
        let _reaped = self.child.wait();
    }
}

/// Pid of the fleet process serving `state`, once it answers.
fn fleet_pid(state: &Path) -> i32 {
    let rt = runtime();
    wait_for("the fleet answering", Duration::from_secs(60), || {
        rt.block_on(async { LocalClient::connect(state).await.ok()?.daemon_pid().await.ok() })
    }) as i32
}

/// The golden parameter has moved (published) while a member is still on
/// the old image: the roll is under way.
fn mid_roll(state: &Path) -> bool {
    runtime().block_on(async {
        let Ok(client) = LocalClient::connect(state).await else {
            return false;
        };
        let (Ok(golden), Ok(group)) = (
            client.get_parameter("latestAmi").await,
            client.describe_group("demo").await,
        ) else {
            return false;
        };
        golden.version >= 2 && group.members.iter().any(|m| m.image.as_str() != golden.value)
    })
}

/// Nothing of the fleet of `state` runs: not its fleet process, not one
/// process carrying its mark; its socket answers nobody.
fn assert_nothing_left(state: &Path, fleet: i32, bound: Duration) {
    wait_for("the demo fleet gone", bound, || {
        (!repave_local::process::pid_alive(fleet) && repave_local::mark::of_state(state).is_empty()).then_some(())
    });
    let answers = runtime().block_on(LocalClient::connect(state)).is_ok();
    assert!(!answers, "a fleet process still answers in {}", state.display());
}

#[test]
fn ctrl_c_during_the_roll_of_repave_demo_leaves_nothing_running() {
    let mut demo = Demo::start();
    wait_for("the roll under way", Duration::from_secs(120), || {
        mid_roll(&demo.state).then_some(())
    });
    unsafe { libc::kill(demo.child.id() as i32, libc::SIGINT) };
    let status = wait_status(&mut demo.child, Duration::from_secs(90));
    let (stdout, stderr) = (demo.output("stdout"), demo.output("stderr"));
    assert_eq!(
        status.code(),
        Some(5),
        "a paused run\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let summary: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(summary["state"], "paused", "{summary:#}");
    assert_nothing_left(&demo.state, demo.fleet, Duration::from_secs(5));
}

#[test]
fn repave_demo_killed_with_sigkill_leaves_nothing_running() {
    let mut demo = Demo::start();
    // Its instances up: there is something to leave behind.
    wait_for("demo instances running", Duration::from_secs(60), || {
        (repave_local::mark::of_state(&demo.state).len() >= 2).then_some(())
    });
    demo.child.kill().unwrap();
    demo.child.wait().unwrap();
    // The tether: the fleet process stops the fleet once the demo is gone.
    assert_nothing_left(&demo.state, demo.fleet, Duration::from_secs(30));
}

#[test]
fn local_down_stops_what_a_killed_fleet_process_left() {
    let _l = fleet_lock();
    let fleet = Fleet::new(2, 2, 4, "");
    fleet.up();
    let state = fleet.state_dir();
    let pid = fleet_pid(&state);
    let instances: Vec<i32> = repave_local::mark::of_state(&state).iter().map(|m| m.pid).collect();
    assert_eq!(instances.len(), 2, "two instance processes");
    unsafe { libc::kill(pid, libc::SIGKILL) };
    wait_for("fleet process killed", Duration::from_secs(5), || {
        (!repave_local::process::pid_alive(pid)).then_some(())
    });
    let down = fleet.repave(["local", "down"]).expect_code(0);
    assert!(
        down.stdout.contains("2 processes it left were adopted and stopped"),
        "{}",
        down.stdout
    );
    for p in instances {
        assert!(
            !repave_local::process::pid_alive(p),
            "instance process {p} survived local down"
        );
    }
    assert!(repave_local::mark::of_state(&state).is_empty());
}

#[test]
fn serve_says_the_local_fleet_outlives_it() {
    let help = common::Repave::new().args(["serve", "--help"]).run().expect_code(0);
    assert!(
        help.stdout.contains("keeps running") && help.stdout.contains("repave local down"),
        "{}",
        help.stdout
    );
}
