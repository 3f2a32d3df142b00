//! The local cloud daemon: the single owner of the local state. It serves
//! the newline-delimited JSON protocol on `<state_dir>/local/daemon.sock`,
//! runs the group reconciler and one balancer per group, and keeps running
//! when the engine that started it goes away — but never longer than its
//! state (see `lifetime`).

mod autoscale;
mod catalog;
mod commands;
mod groups;
mod handler;
mod instances;
mod lifetime;
mod reconciler;

use crate::balancer::Balancer;
use crate::error::LocalError;
use crate::images::BlobStore;
use crate::mark::{FleetId, Mark};
use crate::process::ProcHandle;
use crate::protocol::{Request, Response};
use crate::state::State;
use repave_core::provider::{CommandResult, InstanceState};
use repave_core::{CommandId, InstanceId};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;
use tokio_util::sync::CancellationToken;

/// How the daemon is started (`repave local daemon`).
#[derive(Debug, Clone)]
pub struct DaemonOptions {
    /// The state directory (`.repave/` by default).
    pub state_dir: PathBuf,
    /// The `repave` executable, substituted for `{repave}` and used for `pkg`.
    pub exe: PathBuf,
    /// Update feed file to serve instead of the built-in demo feed.
    pub feed: Option<PathBuf>,
}

/// Where everything lives under the state directory.
#[derive(Debug, Clone)]
pub struct Paths {
    pub local: PathBuf,
    pub state: PathBuf,
    pub blobs: PathBuf,
    pub instances: PathBuf,
    pub instance_logs: PathBuf,
    /// One JSON file per command: its token, instance and result.
    pub commands: PathBuf,
    pub socket: PathBuf,
    pub feed: PathBuf,
    pub lock: PathBuf,
}

impl Paths {
    /// Layout under `state_dir`.
    pub fn new(state_dir: &Path) -> Paths {
        let local = state_dir.join("local");
        Paths {
            state: local.join("state.json"),
            blobs: local.join("blobs"),
            instances: local.join("instances"),
            instance_logs: state_dir.join("logs").join("instances"),
            commands: local.join("commands"),
            socket: local.join("daemon.sock"),
            feed: local.join("feed.json"),
            lock: local.join("daemon.lock"),
            local,
        }
    }

    /// Root directory of an instance.
    pub fn root(&self, id: &InstanceId) -> PathBuf {
        self.instances.join(id.as_str()).join("root")
    }
}

/// Persisted state plus what only exists while the daemon runs.
pub(crate) struct Cloud {
    pub state: State,
    pub procs: HashMap<InstanceId, ProcHandle>,
    pub balancers: HashMap<String, Balancer>,
    pub commands: HashMap<CommandId, CommandResult>,
    pub command_tokens: HashMap<String, CommandId>,
    /// Instances with a stop/start/terminate in progress: the reconciler
    /// leaves them alone.
    pub busy: HashSet<InstanceId>,
    /// Group members with a removal job running.
    pub reaping: HashSet<InstanceId>,
    /// Request-rate samples of groups with target-tracking scaling.
    pub scalers: HashMap<String, autoscale::Scaler>,
}

/// Shared by the socket handlers, the reconciler and background jobs.
pub(crate) struct Shared {
    pub paths: Paths,
    pub exe: PathBuf,
    pub blobs: BlobStore,
    cloud: Mutex<Cloud>,
    /// Wakes the reconciler right after a group mutation.
    pub kick: tokio::sync::Notify,
    /// Stops the reconciler (shutdown in progress).
    pub shutdown: CancellationToken,
    /// Makes the daemon exit (after the shutdown answer was sent).
    pub exit: CancellationToken,
    /// Set once the fleet has been stopped (`lifetime::stop`).
    stopped: tokio::sync::OnceCell<()>,
    /// What every process this fleet starts carries in its environment.
    pub mark: Mark,
    /// Why the state is gone, once it is: from then on nothing is written.
    lost: OnceLock<String>,
    /// The update feed's OS family: what every local image reports as its
    /// platform, so the engine checks the selection against it.
    pub os: repave_core::patch::OsFamily,
}

impl Shared {
    /// Lock the cloud; never held across an await.
    pub fn cloud(&self) -> MutexGuard<'_, Cloud> {
        self.cloud.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Persist after a mutation.
    pub fn save(&self, cloud: &Cloud) -> Result<(), LocalError> {
        self.writable()?;
        cloud
            .state
            .save(&self.paths.state)
            .map_err(|e| LocalError::io("saving local state", e))
    }

    /// Refuse once the state is gone: its path may be another fleet's now.
    /// Checked before every write, not only by the watcher in `lifetime`,
    /// so nothing lands in a replacement in the moment before it notices.
    pub fn writable(&self) -> Result<(), LocalError> {
        if self.lost.get().is_none() {
            if let Some(why) = self.mark.gone() {
                self.lose_state(&why);
            }
        }
        match self.lost.get() {
            Some(why) => Err(LocalError::StateGone(why.clone())),
            None => Ok(()),
        }
    }

    fn lose_state(&self, why: &str) {
        let _first = self.lost.set(why.to_string());
    }
}

/// The daemon's lock, held for its whole life; its identity names the state.
fn lock_exclusive(path: &Path) -> Result<std::fs::File, LocalError> {
    use std::os::fd::AsRawFd;
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| LocalError::io("opening daemon lock", e))?;
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(LocalError::StartDaemon(format!(
            "another daemon holds {}",
            path.display()
        )));
    }
    Ok(f)
}

/// Run the daemon until a `shutdown` request, SIGTERM or SIGINT, or the
/// close of a tethering connection (`Ok`), or until its state is gone
/// (`Err(StateGone)`, after stopping everything it started).
pub async fn run(opts: DaemonOptions) -> Result<(), LocalError> {
    let mut signals = lifetime::Signals::listen()?;
    // Absolute paths: instance commands run with the root as their cwd.
    std::fs::create_dir_all(&opts.state_dir)
        .map_err(|e| LocalError::io(format!("creating {}", opts.state_dir.display()), e))?;
    let state_dir = std::fs::canonicalize(&opts.state_dir)
        .map_err(|e| LocalError::io(format!("resolving {}", opts.state_dir.display()), e))?;
    let paths = Paths::new(&state_dir);
    for dir in [
        &paths.local,
        &paths.blobs,
        &paths.instances,
        &paths.instance_logs,
        &paths.commands,
    ] {
        std::fs::create_dir_all(dir).map_err(|e| LocalError::io(format!("creating {}", dir.display()), e))?;
    }
    let lock = lock_exclusive(&paths.lock)?;
    let mark = Mark {
        state_dir: state_dir.clone(),
        id: FleetId::of_file(&lock).map_err(|e| LocalError::io("reading the daemon lock", e))?,
    };
    let feed = match &opts.feed {
        Some(f) => crate::feed::load(f).map_err(LocalError::StartDaemon)?,
        None => crate::feed::demo_feed_for(repave_core::patch::OsFamily::Windows),
    };
    let os = feed.os;
    let feed_json = serde_json::to_vec_pretty(&feed).map_err(|e| LocalError::Protocol(e.to_string()))?;
    crate::util::write_atomic(&paths.feed, &feed_json).map_err(|e| LocalError::io("writing feed", e))?;
    let state = State::load(&paths.state).map_err(|e| LocalError::io("loading local state", e))?;
    let exe = std::fs::canonicalize(&opts.exe).unwrap_or(opts.exe.clone());
    let (commands, command_tokens) = commands::load(&paths.commands);
    let shared = Arc::new(Shared {
        blobs: BlobStore::new(paths.blobs.clone()),
        paths: paths.clone(),
        exe,
        cloud: Mutex::new(Cloud {
            state,
            procs: HashMap::new(),
            balancers: HashMap::new(),
            commands,
            command_tokens,
            busy: HashSet::new(),
            reaping: HashSet::new(),
            scalers: HashMap::new(),
        }),
        kick: tokio::sync::Notify::new(),
        shutdown: CancellationToken::new(),
        exit: CancellationToken::new(),
        stopped: tokio::sync::OnceCell::new(),
        mark,
        lost: OnceLock::new(),
        os,
    });
    adopt(&shared)?;
    let _ = std::fs::remove_file(&paths.socket);
    let listener = UnixListener::bind(&paths.socket)
        .map_err(|e| LocalError::io(format!("binding {}", paths.socket.display()), e))?;
    let socket = FleetId::of_path(&paths.socket).map_err(|e| LocalError::io("reading the daemon socket", e))?;
    tokio::spawn(reconciler::run(shared.clone()));
    tokio::spawn(lifetime::sweep(shared.clone()));
    let lost = lifetime::lost(&shared, socket);
    tokio::pin!(lost);
    tracing::info!(socket = %paths.socket.display(), "local daemon ready");
    loop {
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => { tracing::warn!("daemon accept: {e}"); continue; }
            },
            _ = shared.exit.cancelled() => break,
            signal = signals.recv() => {
                stop_then_exit(shared.clone(), format!("{signal} received"));
                continue;
            }
            lost = &mut lost => {
                // Either way the socket path is not ours any more: left alone.
                return Err(match lost {
                    lifetime::Lost::State(why) => {
                        lifetime::abandon(&shared, &why).await;
                        LocalError::StateGone(why)
                    }
                    lifetime::Lost::Socket(why) => {
                        lifetime::stop(&shared, &why).await;
                        LocalError::Unreachable(why)
                    }
                });
            }
        };
        tokio::spawn(serve_connection(shared.clone(), stream));
    }
    let _ = std::fs::remove_file(&paths.socket);
    drop(lock);
    tracing::info!("local daemon stopped");
    Ok(())
}

/// Stop the fleet in the background, then make the daemon exit. Not asked
/// for through the socket, so the log says why at the default level.
fn stop_then_exit(shared: Arc<Shared>, why: String) {
    tracing::warn!("{why}: stopping the fleet as `repave local down` does, then exiting");
    tokio::spawn(async move {
        lifetime::stop(&shared, &why).await;
        shared.exit.cancel();
    });
}

/// Re-attach to what a previous daemon left: live processes are adopted,
/// dead ones are noted so the reconciler replaces group members.
fn adopt(shared: &Shared) -> Result<(), LocalError> {
    let mut cloud = shared.cloud();
    let ids: Vec<InstanceId> = cloud.state.instances.keys().cloned().collect();
    for id in ids {
        let rec = cloud.state.instances.get(&id).cloned().expect("listed");
        // A recorded pid may belong to another process by now (a reboot, pid
        // reuse): only one started for this instance is adopted or signalled.
        let ours =
            |pid: i32| crate::process::pid_alive(pid) && crate::mark::runs_instance(pid, id.as_str()) != Some(false);
        let alive = rec.pid.is_some_and(ours);
        match rec.instance.state {
            InstanceState::Terminated => {}
            // A stop or a terminate the previous fleet process did not finish.
            InstanceState::ShuttingDown => finish_stop(shared, &mut cloud, &id, rec.pid.filter(|_| alive), true),
            InstanceState::Stopping | InstanceState::Stopped => {
                finish_stop(shared, &mut cloud, &id, rec.pid.filter(|_| alive), false)
            }
            InstanceState::Pending | InstanceState::Running
                if rec.group.as_ref().is_some_and(|g| {
                    cloud
                        .state
                        .groups
                        .get(g)
                        .is_none_or(|g| !g.members.iter().any(|m| m.id == id))
                }) =>
            {
                // Launched for a group that never counted it (a state file
                // written before launches recorded membership in the same
                // write): nothing will ever terminate it but this.
                tracing::warn!(instance = %id, group = ?rec.group, "terminating a group instance that is not a member");
                finish_stop(shared, &mut cloud, &id, rec.pid.filter(|_| alive), true);
            }
            InstanceState::Pending | InstanceState::Running => {
                if alive {
                    let pid = rec.pid.expect("alive implies pid");
                    cloud.procs.insert(id.clone(), ProcHandle::adopted(pid));
                    tracing::info!(instance = %id, pid, "adopted instance process");
                } else if !rec.spec.command.is_empty() && rec.group.is_none() {
                    // A lone instance whose process died while we were away.
                    let r = cloud.state.instances.get_mut(&id).expect("listed");
                    r.instance.state = InstanceState::Stopped;
                    r.instance.address = None;
                    r.pid = None;
                }
                // A dead group member stays Running without a process: the
                // reconciler sees it dead and replaces it.
            }
        }
    }
    remove_unrecorded(shared, &cloud);
    shared.save(&cloud)
}

/// Stop (or, with `terminate`, terminate: its root goes too) an instance
/// found at start, killing its process `pid` if it is still ours.
fn finish_stop(shared: &Shared, cloud: &mut Cloud, id: &InstanceId, pid: Option<i32>, terminate: bool) {
    if let Some(pid) = pid {
        crate::process::signal_group(pid, libc::SIGKILL);
    }
    if terminate {
        crate::util::remove_root(&shared.paths.instances.join(id.as_str()));
    }
    let r = cloud.state.instances.get_mut(id).expect("listed");
    r.instance.state = if terminate {
        InstanceState::Terminated
    } else {
        InstanceState::Stopped
    };
    r.instance.address = None;
    r.pid = None;
}

/// A launch materializes the root and starts the process before the state
/// names the instance: a fleet process killed in between leaves a root and
/// a process no record holds (and the launch was never answered, so it is
/// retried). Both go, as do those of instances recorded as terminated.
fn remove_unrecorded(shared: &Shared, cloud: &Cloud) {
    let gone = |id: &str| {
        cloud
            .state
            .instances
            .get(&InstanceId::new(id.to_string()))
            .is_none_or(|r| r.instance.state == InstanceState::Terminated)
    };
    for m in crate::mark::scan() {
        let Some(id) = m.instance.as_deref().filter(|_| m.mark.id == shared.mark.id) else {
            continue;
        };
        if gone(id) {
            tracing::warn!(instance = id, pid = m.pid, command = %m.command, "stopping the process of an unrecorded instance");
            // SAFETY: plain syscall on a pid just seen alive with our mark.
            unsafe { libc::kill(m.pid, libc::SIGKILL) };
        }
    }
    let Ok(entries) = std::fs::read_dir(&shared.paths.instances) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if gone(&name) {
            tracing::warn!(instance = %name, "removing the root of an unrecorded instance");
            crate::util::remove_root(&e.path());
        }
    }
}

async fn serve_connection(shared: Arc<Shared>, stream: tokio::net::UnixStream) {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    let mut tethered = false;
    while let Ok(Some(line)) = lines.next_line().await {
        let (response, exit) = match serde_json::from_str::<Request>(&line) {
            Ok(req) => {
                let exit = matches!(req, Request::Shutdown);
                tethered |= matches!(req, Request::Tether);
                (handler::handle(&shared, req).await, exit)
            }
            Err(e) => (
                Response::Error {
                    kind: repave_core::ErrorKind::Permanent,
                    message: format!("malformed request: {e}"),
                },
                false,
            ),
        };
        let mut out = serde_json::to_string(&response).unwrap_or_else(|e| {
            format!(
                "{{\"type\":\"error\",\"value\":{{\"kind\":\"permanent\",\"message\":\"encoding response: {e}\"}}}}"
            )
        });
        out.push('\n');
        if write.write_all(out.as_bytes()).await.is_err() {
            break;
        }
        let _ = write.flush().await;
        if exit {
            shared.exit.cancel();
            return;
        }
    }
    if tethered {
        stop_then_exit(shared, "the process that tethered the fleet is gone".into());
    }
}
