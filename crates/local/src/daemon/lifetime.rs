//! How a fleet process ends, and that it never outlives its state.
//!
//! - `shutdown` request, SIGTERM, SIGINT, or the close of a tethering
//!   connection: [`stop`] — what `repave local down` does (balancers stop,
//!   instances are terminated, the state is saved), once, however many of
//!   these arrive.
//! - Its state gone (state dir or lock file deleted or replaced):
//!   [`abandon`] — everything it started is stopped, nothing on disk is
//!   touched any more (the path may belong to another fleet now). Its
//!   socket gone: [`stop`], since nobody could reach it any more.
//! - SIGKILL: the instances keep serving for the next fleet process of this
//!   state to adopt; when the state goes too, [`sweep`] in any other fleet
//!   process stops them.

use super::instances::{self, StopMode};
use super::Shared;
use crate::error::LocalError;
use crate::mark::{self, FleetId};
use repave_core::provider::InstanceState;
use repave_core::InstanceId;
use std::sync::Arc;
use std::time::Duration;
use tokio::signal::unix::{signal, Signal, SignalKind};

/// How often the fleet process checks that its state is still there.
const WATCH: Duration = Duration::from_millis(500);
/// How often it looks for processes of other fleets whose state is gone.
const SWEEP: Duration = Duration::from_secs(10);
/// SIGTERM to SIGKILL for processes whose state is gone: nothing will ever
/// read what they write, so they get less time than a regular stop.
const ORPHAN_GRACE: Duration = Duration::from_secs(3);

/// SIGTERM and SIGINT, listened to from the start so neither kills the
/// process before it has stopped its instances.
pub(crate) struct Signals {
    term: Signal,
    int: Signal,
}

impl Signals {
    pub fn listen() -> Result<Signals, LocalError> {
        let listen = |kind| signal(kind).map_err(|e| LocalError::io("listening for SIGTERM and SIGINT", e));
        Ok(Signals {
            term: listen(SignalKind::terminate())?,
            int: listen(SignalKind::interrupt())?,
        })
    }

    /// The next SIGTERM or SIGINT, by name.
    pub async fn recv(&mut self) -> &'static str {
        tokio::select! {
            Some(()) = self.term.recv() => "SIGTERM",
            Some(()) = self.int.recv() => "SIGINT",
            else => std::future::pending().await,
        }
    }
}

/// Stop the fleet as `repave local down` does; concurrent and later calls
/// wait for the one stop in progress instead of starting another.
pub(crate) async fn stop(shared: &Arc<Shared>, why: &str) {
    shared
        .stopped
        .get_or_init(|| async {
            tracing::info!("stopping the fleet: {why}");
            shutdown(shared).await;
        })
        .await;
}

/// Stop the reconciler and balancers, terminate every instance (roots
/// removed), and whatever else still carries this fleet's mark (something
/// a command started in the background, an instance a killed predecessor
/// left and nobody adopted).
async fn shutdown(shared: &Arc<Shared>) {
    shared.shutdown.cancel();
    let ids: Vec<InstanceId> = {
        let cloud = shared.cloud();
        for b in cloud.balancers.values() {
            b.stop();
        }
        cloud
            .state
            .instances
            .iter()
            .filter(|(_, r)| r.instance.state != InstanceState::Terminated)
            .map(|(id, _)| id.clone())
            .collect()
    };
    let mut set = tokio::task::JoinSet::new();
    for id in ids {
        let shared = shared.clone();
        set.spawn(async move {
            if let Err(e) = instances::stop(&shared, &id, StopMode::Terminate).await {
                tracing::warn!(instance = %id, "terminating at shutdown: {e}");
            }
        });
    }
    set.join_all().await;
    stop_marked(shared, instances::STOP_GRACE).await;
    let mut cloud = shared.cloud();
    // Groups keep their settings but not their (now terminated) members, so
    // the next `local up` starts them afresh.
    for g in cloud.state.groups.values_mut() {
        g.members.clear();
    }
    cloud.balancers.clear();
    if let Err(e) = shared.save(&cloud) {
        tracing::error!("{e}");
    }
}

/// Every live process carrying this fleet's mark, stopped.
async fn stop_marked(shared: &Shared, grace: Duration) {
    let ours = shared.mark.clone();
    let pids: Vec<i32> = match tokio::task::spawn_blocking(mark::scan).await {
        Ok(found) => found.into_iter().filter(|m| m.mark == ours).map(|m| m.pid).collect(),
        Err(e) => {
            tracing::error!("looking for this fleet's processes: {e}");
            return;
        }
    };
    if !pids.is_empty() {
        tracing::info!(?pids, "stopping processes that still carry this fleet's mark");
        crate::process::stop_all(&pids, grace).await;
    }
}

/// What [`lost`] found.
pub(crate) enum Lost {
    /// The lock file (and so the state dir) deleted or replaced: what is at
    /// the path now is not ours. [`abandon`].
    State(String),
    /// Only the socket deleted or replaced: nobody can reach, adopt or stop
    /// this fleet any more, but the state is still ours. [`stop`].
    Socket(String),
}

/// Resolves once this process has lost its state or its socket.
pub(crate) async fn lost(shared: &Shared, socket: FleetId) -> Lost {
    let path = &shared.paths.socket;
    loop {
        if let Some(why) = shared.mark.gone() {
            return Lost::State(why);
        }
        match FleetId::of_path(path) {
            Ok(id) if id != socket => return Lost::Socket(format!("{} was replaced", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Lost::Socket(format!("{} is gone", path.display()))
            }
            _ => {}
        }
        tokio::time::sleep(WATCH).await;
    }
}

/// The state is gone: write nothing more, stop balancers and every process
/// this fleet started. The caller exits.
pub(crate) async fn abandon(shared: &Arc<Shared>, why: &str) {
    tracing::error!("the fleet's state is gone ({why}): stopping its balancers and instances and exiting");
    shared.lose_state(why);
    shared.shutdown.cancel();
    let handles: Vec<crate::process::ProcHandle> = {
        let mut cloud = shared.cloud();
        for b in cloud.balancers.values() {
            b.stop();
        }
        cloud.procs.drain().map(|(_, h)| h).collect()
    };
    let mut children = tokio::task::JoinSet::new();
    for h in handles {
        children.spawn(async move { h.stop(ORPHAN_GRACE).await });
    }
    tokio::join!(children.join_all(), stop_marked(shared, ORPHAN_GRACE));
}

/// Every [`SWEEP`], stop processes of other fleets whose state is gone
/// (their fleet process was killed with SIGKILL, then their state dir
/// deleted: nothing else ever will).
pub(crate) async fn sweep(shared: Arc<Shared>) {
    loop {
        let ours = shared.mark.clone();
        let found = tokio::task::spawn_blocking(move || {
            mark::scan()
                .into_iter()
                .filter(|m| m.mark != ours)
                .filter_map(|m| m.mark.gone().map(|why| (m, why)))
                .collect::<Vec<_>>()
        })
        .await;
        match found {
            Ok(orphans) if !orphans.is_empty() => {
                for (m, why) in &orphans {
                    tracing::warn!(
                        pid = m.pid,
                        instance = m.instance.as_deref().unwrap_or("-"),
                        state = %m.mark.state_dir.display(),
                        command = %m.command,
                        "stopping a process whose fleet state is gone ({why})"
                    );
                }
                let pids: Vec<i32> = orphans.iter().map(|(m, _)| m.pid).collect();
                crate::process::stop_all(&pids, ORPHAN_GRACE).await;
            }
            Ok(_) => {}
            Err(e) => tracing::error!("looking for orphaned fleet processes: {e}"),
        }
        tokio::select! {
            _ = tokio::time::sleep(SWEEP) => {}
            _ = shared.shutdown.cancelled() => return,
        }
    }
}
