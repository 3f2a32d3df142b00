//! A fleet process never outlives its state, SIGTERM / SIGINT stop it as
//! `local down` does, a tethered fleet ends with its owner, and processes
//! whose state is gone are stopped by whichever fleet process finds them.

mod common;

use common::*;
use repave_core::provider::{InstanceSpec, Instances, LaunchRequest};
use repave_local::mark::Marked;
use repave_local::process::pid_alive;
use repave_local::{ImageSource, LocalClient};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// How long a fleet process may take to notice its state is gone and stop
/// everything (it checks every 500 ms; orphans get 3 s after SIGTERM).
const GONE_BOUND: Duration = Duration::from_secs(10);

/// A fleet process spawned directly, its output in a file outside the state
/// dir (which these tests delete), so what it says about why it ended stays.
struct Daemon {
    child: Child,
    log: PathBuf,
    client: LocalClient,
}

async fn spawn_daemon(state: &Path, log_dir: &Path) -> Daemon {
    let log = log_dir.join(format!("daemon-{}.log", std::process::id()));
    let out = std::fs::File::create(&log).unwrap();
    let child = Command::new(EXE)
        .args(["local", "daemon", "--state-dir"])
        .arg(state)
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap();
    let client = wait_for("fleet process answering", Duration::from_secs(15), || async {
        LocalClient::connect(state).await.ok()
    })
    .await;
    Daemon { child, log, client }
}

/// The fleet's instance processes (what carries its mark), `n` of them.
async fn instance_processes(state: &Path, n: usize) -> Vec<Marked> {
    wait_for("instance processes", Duration::from_secs(15), || async {
        let found: Vec<Marked> = repave_local::mark::of_state(state)
            .into_iter()
            .filter(|m| m.instance.is_some())
            .collect();
        (found.len() == n).then_some(found)
    })
    .await
}

fn wait_exit(child: &mut Child, bound: Duration) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + bound;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "fleet process still running after {bound:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

async fn wait_all_dead(what: &str, pids: &[i32], bound: Duration) {
    wait_for(what, bound, || async {
        pids.iter().all(|p| !pid_alive(*p)).then_some(())
    })
    .await;
}

/// How the state goes away under a running fleet.
#[derive(Debug, Clone, Copy)]
enum Loss {
    /// `rm -rf` of the state dir.
    Deleted,
    /// The state dir moved away and an empty one put in its place.
    Replaced,
    /// Only the lock file replaced (the state dir is another one now).
    LockReplaced,
    /// Only the socket deleted: the state is intact, but nobody can reach
    /// the fleet any more.
    SocketDeleted,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_whose_state_goes_stops_itself_and_its_instances() {
    let logs = tempfile::tempdir().unwrap();
    for loss in [Loss::Deleted, Loss::Replaced, Loss::LockReplaced, Loss::SocketDeleted] {
        let base = tempfile::tempdir().unwrap();
        let state = base.path().join("state");
        let _guard = FleetGuard(&state);
        let mut daemon = spawn_daemon(&state, logs.path()).await;
        daemon.client.ensure_group(group("web", 2)).await.unwrap();
        let addr = daemon.client.balancer_address("web").await.unwrap();
        wait_healthy(&daemon.client, "web", 2).await;
        let pids: Vec<i32> = instance_processes(&state, 2).await.iter().map(|m| m.pid).collect();

        let moved = base.path().join("moved");
        match loss {
            Loss::Deleted => {
                // The fleet may write while we delete: go on until it is gone.
                wait_for("state dir deleted", Duration::from_secs(5), || async {
                    let _ = std::fs::remove_dir_all(&state);
                    (!state.exists()).then_some(())
                })
                .await;
            }
            Loss::Replaced => {
                std::fs::rename(&state, &moved).unwrap();
                std::fs::create_dir(&state).unwrap();
            }
            Loss::LockReplaced => {
                let lock = state.join("local/daemon.lock");
                std::fs::rename(&lock, state.join("local/old.lock")).unwrap();
                std::fs::write(&lock, "").unwrap();
            }
            Loss::SocketDeleted => std::fs::remove_file(state.join("local/daemon.sock")).unwrap(),
        }
        let status = wait_exit(&mut daemon.child, GONE_BOUND);
        wait_all_dead(&format!("instances stopped ({loss:?})"), &pids, GONE_BOUND).await;
        assert!(
            std::net::TcpStream::connect(&addr).is_err(),
            "{loss:?}: the balancer still accepts on {addr}"
        );
        assert!(
            !status.success(),
            "{loss:?}: a lost state is not a clean exit: {status}"
        );
        let log = std::fs::read_to_string(&daemon.log).unwrap();
        let why = match loss {
            Loss::Deleted | Loss::Replaced => "the local fleet's state is gone (daemon.lock is gone)",
            Loss::LockReplaced => "the local fleet's state is gone (daemon.lock was replaced)",
            Loss::SocketDeleted => "the local fleet's socket is gone (daemon.sock is gone)",
        };
        let said = log.replace(&format!("{}/local/", state.display()), "");
        assert!(said.contains(why), "{loss:?}: the log says why ({why}):\n{log}");
        // What is there now may be another fleet's: nothing was written to it.
        match loss {
            Loss::Deleted => assert!(!state.exists(), "the deleted state dir was recreated"),
            Loss::Replaced => {
                let written: Vec<_> = walk(&state);
                assert!(written.is_empty(), "wrote into the new dir: {written:?}");
                let roots = std::fs::read_dir(moved.join("local/instances")).unwrap().count();
                assert_eq!(roots, 2, "the moved-away state was left as it was");
            }
            Loss::LockReplaced => {
                assert!(
                    state.join("local/daemon.sock").exists(),
                    "removed the socket it no longer owns"
                );
            }
            // Its own state: stopped as `local down` stops it, and saved.
            Loss::SocketDeleted => assert_stopped_and_saved(&state),
        }
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        out.push(e.path());
        if e.path().is_dir() {
            out.extend(walk(&e.path()));
        }
    }
    out
}

/// What `local down` leaves: every instance terminated, its root removed,
/// the groups without members, the socket removed.
fn assert_stopped_and_saved(state_dir: &Path) {
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state_dir.join("local/state.json")).unwrap()).unwrap();
    let instances = state["instances"].as_object().unwrap();
    assert!(!instances.is_empty());
    for (id, rec) in instances {
        assert_eq!(rec["instance"]["state"], "terminated", "{id}");
        let root = state_dir.join("local/instances").join(id).join("root");
        assert!(!root.exists(), "root of {id} removed");
    }
    for (name, g) in state["groups"].as_object().unwrap() {
        assert_eq!(g["members"], serde_json::json!([]), "group {name}");
    }
    assert!(!state_dir.join("local/daemon.sock").exists(), "socket removed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_and_sigint_stop_the_fleet_like_local_down() {
    for signal in [libc::SIGTERM, libc::SIGINT] {
        let fx = Fixture::start().await;
        fx.client.ensure_group(group("web", 2)).await.unwrap();
        let members = wait_healthy(&fx.client, "web", 2).await;
        let pids: Vec<i32> = members.iter().map(|m| fx.pid(m)).collect();
        let daemon = fx.client.daemon_pid().await.unwrap() as i32;
        unsafe { libc::kill(daemon, signal) };
        wait_all_dead("fleet process exited", &[daemon], Duration::from_secs(20)).await;
        for pid in &pids {
            assert!(
                !pid_alive(*pid),
                "signal {signal}: instance process {pid} outlived its fleet"
            );
        }
        assert!(
            repave_local::mark::of_state(fx.state_dir()).is_empty(),
            "signal {signal}: processes of the fleet left"
        );
        assert_stopped_and_saved(fx.state_dir());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tethered_fleet_stops_when_its_owner_goes() {
    let fx = Fixture::start().await;
    fx.client.ensure_group(group("web", 1)).await.unwrap();
    let members = wait_healthy(&fx.client, "web", 1).await;
    let pid = fx.pid(&members[0]);
    let daemon = fx.client.daemon_pid().await.unwrap() as i32;
    let tether = fx.client.tether().await.unwrap();
    // Held: the fleet keeps serving.
    tokio::time::sleep(Duration::from_millis(300)).await;
    fx.client.daemon_pid().await.unwrap();
    drop(tether);
    wait_all_dead("tethered fleet stopped", &[daemon, pid], Duration::from_secs(20)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_of_a_killed_fleet_are_stopped_once_its_state_is_gone() {
    let base = tempfile::tempdir().unwrap();
    let state = base.path().join("state");
    let _guard = FleetGuard(&state);
    let client = LocalClient::ensure_running(&state, Path::new(EXE), None).await.unwrap();
    client.ensure_group(group("web", 2)).await.unwrap();
    wait_healthy(&client, "web", 2).await;
    let pids: Vec<i32> = instance_processes(&state, 2).await.iter().map(|m| m.pid).collect();
    let daemon = client.daemon_pid().await.unwrap() as i32;
    unsafe { libc::kill(daemon, libc::SIGKILL) };
    wait_all_dead("killed fleet process", &[daemon], Duration::from_secs(5)).await;
    assert!(pids.iter().all(|p| pid_alive(*p)), "SIGKILL leaves instances to adopt");
    std::fs::remove_dir_all(&state).unwrap();

    // Any other fleet process that starts finds them and stops them.
    let other = Fixture::start().await;
    wait_all_dead("orphaned instances stopped", &pids, GONE_BOUND).await;
    other.client.daemon_pid().await.expect("the other fleet runs on");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorded_pid_now_running_something_else_is_neither_adopted_nor_killed() {
    let fx = Fixture::start().await;
    let image = fx
        .client
        .import_image(ImageSource::BuiltinDemo, "base", Default::default())
        .await
        .unwrap();
    let req = LaunchRequest {
        image,
        spec: InstanceSpec {
            command: vec!["sleep".into(), "600".into()],
            ..Default::default()
        },
        tags: Default::default(),
        token: String::new(),
    };
    let id = fx.client.launch(req).await.unwrap().id;
    let daemon = fx.client.daemon_pid().await.unwrap() as i32;
    unsafe { libc::kill(daemon, libc::SIGKILL) };
    wait_all_dead("killed fleet process", &[daemon], Duration::from_secs(5)).await;
    let pid = fx.pid(&id);
    unsafe { libc::kill(-pid, libc::SIGKILL) };
    wait_all_dead("instance killed", &[pid], Duration::from_secs(5)).await;

    // Another process (its own group leader) now has the recorded pid.
    let mut stranger = Command::new("sleep").arg("600").process_group(0).spawn().unwrap();
    let path = fx.state_dir().join("local/state.json");
    let mut state: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    state["instances"][id.as_str()]["pid"] = serde_json::json!(stranger.id());
    std::fs::write(&path, serde_json::to_vec(&state).unwrap()).unwrap();

    let client = LocalClient::ensure_running(fx.state_dir(), Path::new(EXE), None)
        .await
        .unwrap();
    let leaks = client.leak_report().await.unwrap();
    assert!(!leaks.live_processes.contains(&id), "adopted a stranger: {leaks:?}");
    client.shutdown().await.unwrap();
    assert!(
        pid_alive(stranger.id() as i32),
        "shutdown killed a process that is not ours"
    );
    stranger.kill().unwrap();
    stranger.wait().unwrap();
}

/// A fleet process killed in the middle of a launch — the root materialized
/// and the process started, the state not yet written — leaves a root and a
/// process no record names. The next fleet process removes both: the launch
/// was never answered, so whoever asked retries it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_launch_cut_short_by_kill_9_leaves_no_root_and_no_process() {
    let fx = Fixture::start().await;
    fx.client.ensure_group(group("web", 1)).await.unwrap();
    let members = wait_healthy(&fx.client, "web", 1).await;
    let mark: Vec<(String, String)> = {
        let environ = std::fs::read(format!("/proc/{}/environ", fx.pid(&members[0]))).unwrap();
        environ
            .split(|b| *b == 0)
            .filter_map(|v| std::str::from_utf8(v).ok()?.split_once('='))
            .filter(|(k, _)| k.starts_with("REPAVE_FLEET_"))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    assert_eq!(mark.len(), 2, "the fleet mark: {mark:?}");
    let daemon = fx.client.daemon_pid().await.unwrap() as i32;
    unsafe { libc::kill(daemon, libc::SIGKILL) };
    wait_all_dead("killed fleet process", &[daemon], Duration::from_secs(5)).await;

    // What the launch had done when the fleet process died.
    let ghost = "i-0123456789abcdef0";
    let root = fx.state_dir().join("local/instances").join(ghost);
    std::fs::create_dir_all(root.join("opt/app")).unwrap();
    std::fs::write(root.join("opt/app/version"), "1").unwrap();
    let mut process = Command::new("sleep")
        .arg("600")
        .envs(mark.iter().cloned())
        .env("REPAVE_INSTANCE_ID", ghost)
        .process_group(0)
        .spawn()
        .unwrap();

    let client = LocalClient::ensure_running(fx.state_dir(), Path::new(EXE), None)
        .await
        .unwrap();
    let pid = process.id() as i32;
    wait_for("the unrecorded process stopped", GONE_BOUND, || async {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map_or(true, |s| s.contains(") Z "))
            .then_some(())
    })
    .await;
    process.wait().unwrap();
    assert!(!root.exists(), "the unrecorded root is still there");
    assert_eq!(
        wait_healthy(&client, "web", 1).await,
        members,
        "the recorded member is kept"
    );
    let leaks = client.leak_report().await.unwrap();
    assert!(!leaks.live_processes.iter().any(|i| i.as_str() == ghost), "{leaks:?}");
}

/// A fleet process killed between recording a group's new instance and
/// counting it as a member (two state writes before launches did both in
/// one) left a running instance that names the group but that the group
/// does not count: replaced, and never terminated. The next fleet process
/// terminates such an instance, and the group keeps its size with members
/// it counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_instance_the_group_does_not_count_is_terminated_after_a_restart() {
    let fx = Fixture::start().await;
    fx.client.ensure_group(group("web", 1)).await.unwrap();
    let members = wait_healthy(&fx.client, "web", 1).await;
    let orphan = members[0].clone();
    let pid = fx.pid(&orphan);
    let daemon = fx.client.daemon_pid().await.unwrap() as i32;
    unsafe { libc::kill(daemon, libc::SIGKILL) };
    wait_all_dead("killed fleet process", &[daemon], Duration::from_secs(5)).await;

    let path = fx.state_dir().join("local/state.json");
    let mut state: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(state["instances"][orphan.as_str()]["group"], "web");
    state["groups"]["web"]["members"] = serde_json::json!([]);
    std::fs::write(&path, serde_json::to_vec(&state).unwrap()).unwrap();

    let client = LocalClient::ensure_running(fx.state_dir(), Path::new(EXE), None)
        .await
        .unwrap();
    wait_all_dead("the uncounted instance's process", &[pid], GONE_BOUND).await;
    let root = fx.state_dir().join("local/instances").join(orphan.as_str());
    assert!(!root.exists(), "the uncounted instance's root is still there");
    let now = wait_healthy(&client, "web", 1).await;
    assert!(!now.contains(&orphan), "{now:?}");
    let leaks = client.leak_report().await.unwrap();
    assert!(!leaks.live_processes.contains(&orphan), "{leaks:?}");
}
