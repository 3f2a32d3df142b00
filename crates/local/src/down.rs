//! `repave local down` as a library call: after it, nothing of the fleet
//! of a state dir runs, whether its fleet process is alive, was killed
//! with SIGKILL (its instances still serving), or its state is gone.

use crate::client::LocalClient;
use crate::error::LocalError;
use std::path::Path;
use std::time::Duration;

/// SIGTERM to SIGKILL for processes whose state is gone.
const ORPHAN_GRACE: Duration = Duration::from_secs(3);

/// What [`down`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Down {
    /// A fleet process answered and stopped the fleet.
    Stopped,
    /// No fleet process answered, but processes it had started were still
    /// running: a new one adopted and stopped them.
    Adopted { processes: usize },
    /// The state is gone, some of its processes were not: stopped directly.
    Orphans { processes: usize },
    /// Nothing was running.
    NotRunning,
}

/// Stop everything the fleet of `state_dir` runs. A fleet process is only
/// started (`exe local daemon`, as [`LocalClient::ensure_running`] does)
/// when one of the fleet's processes outlived the last one.
pub async fn down(state_dir: &Path, exe: &Path, feed: Option<&Path>) -> Result<Down, LocalError> {
    if let Ok(client) = LocalClient::connect(state_dir).await {
        client.shutdown().await?;
        return Ok(Down::Stopped);
    }
    let left = crate::mark::of_state(state_dir);
    if left.is_empty() {
        return Ok(Down::NotRunning);
    }
    let (gone, adoptable): (Vec<_>, Vec<_>) = left.into_iter().partition(|m| m.mark.gone().is_some());
    if !adoptable.is_empty() {
        // Through a fleet process, so the state records the stop like any other.
        LocalClient::ensure_running(state_dir, exe, feed)
            .await?
            .shutdown()
            .await?;
    }
    let pids: Vec<i32> = gone.iter().map(|m| m.pid).collect();
    crate::process::stop_all(&pids, ORPHAN_GRACE).await;
    Ok(if adoptable.is_empty() {
        Down::Orphans { processes: gone.len() }
    } else {
        Down::Adopted {
            processes: adoptable.len() + gone.len(),
        }
    })
}
