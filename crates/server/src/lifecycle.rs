//! Start-up recovery and graceful shutdown.
//!
//! Shutdown stops every run at a safe point: a rolling run is cancelled
//! (the engine pauses it between replacements, journaled and resumable); a
//! baking run is let finish its current step and then dropped, as if the
//! process had stopped there — its journal says which steps are done, and
//! the next start resumes it. Either way the run is marked so the next
//! start knows to pick it up.

use crate::runs::{launch, Launch};
use crate::scheduler::{append, is_rolling, CUTOFF_MARK};
use crate::state::Shared;
use repave_core::RunId;
use repave_store::{RunFilter, RunRecord, RunState, StepState};
use std::sync::Arc;
use std::time::Duration;

/// Marker written into every run a shutdown stops.
pub(crate) const SHUTDOWN_MARK: &str = "server shutdown";

/// Resume runs a previous server stopped, and runs whose driving process
/// is gone. Runs another live process drives are left alone.
pub(crate) async fn recover(shared: &Arc<Shared>) {
    let mut candidates: Vec<RunRecord> = Vec::new();
    for state in [RunState::Running, RunState::Paused] {
        let filter = RunFilter {
            state: Some(state),
            ..Default::default()
        };
        match shared.store.list_runs(&filter) {
            Ok(r) => candidates.extend(r),
            Err(e) => tracing::error!(error = %e, "listing runs to resume"),
        }
    }
    for run in candidates {
        if !shared.providers.contains_key(&run.pipeline) {
            continue;
        }
        let marks = marks(shared, &run.id);
        let resume = match run.state {
            // Paused by our shutdown: go on. Paused at a cutoff: the
            // scheduler resumes it when the next window opens.
            RunState::Paused => marks.last_mark.as_deref() == Some(SHUTDOWN_MARK),
            _ => marks
                .driver
                .is_none_or(|pid| pid == std::process::id() || !process_alive(pid)),
        };
        if !resume {
            continue;
        }
        tracing::info!(run = %run.id, "resuming after restart");
        match launch(
            shared,
            Launch::Resume {
                run: run.id.clone(),
                pipeline: run.pipeline.clone(),
            },
            None,
        )
        .await
        {
            Ok(_) => {}
            Err(e) => tracing::warn!(run = %run.id, error = %e, "could not resume"),
        }
    }
}

struct Marks {
    driver: Option<u32>,
    last_mark: Option<String>,
}

fn marks(shared: &Shared, run: &RunId) -> Marks {
    let mut m = Marks {
        driver: None,
        last_mark: None,
    };
    let mut after = 0;
    // Events are read in pages; runs rarely have more than a few thousand.
    while let Ok(page) = shared.store.events(run, after, 1000) {
        let Some(last) = page.last() else { break };
        after = last.id;
        for e in &page {
            if let Some(pid) = e.data.get("pid").and_then(|p| p.as_u64()) {
                if e.message.starts_with("driven by process") {
                    m.driver = Some(pid as u32);
                }
            }
            for mark in [SHUTDOWN_MARK, CUTOFF_MARK] {
                if e.message.starts_with(mark) {
                    m.last_mark = Some(mark.to_string());
                }
            }
        }
    }
    m
}

fn process_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Stop every run this process drives at a safe point; bounded by the
/// shutdown grace.
pub(crate) async fn stop_runs(shared: &Arc<Shared>) {
    shared.runs.stopping.store(true, std::sync::atomic::Ordering::SeqCst);
    let live = shared.runs.live_runs();
    for (run, _) in &live {
        let id = RunId::new(run.clone());
        append(
            shared,
            &id,
            format!("{SHUTDOWN_MARK}: stopping at the next safe point; the next start resumes"),
        );
        if is_rolling(shared, &id) {
            shared.runs.cancel(run);
        }
    }
    shared.runs.tracker.close();
    let deadline = tokio::time::Instant::now() + shared.shutdown_grace;
    loop {
        for (run, _) in shared.runs.live_runs() {
            let id = RunId::new(run.clone());
            if is_rolling(shared, &id) {
                shared.runs.cancel(&run);
            } else if !step_in_progress(shared, &id) {
                shared.runs.abort(&run);
            }
        }
        if shared.runs.tracker.is_empty() || tokio::time::Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if !shared.runs.tracker.is_empty() {
        tracing::warn!(
            "runs still busy after the shutdown grace; stopping them where they are (the journal resumes them)"
        );
        for (run, _) in shared.runs.live_runs() {
            shared.runs.abort(&run);
        }
        shared.runs.tracker.wait().await;
    }
}

fn step_in_progress(shared: &Shared, run: &RunId) -> bool {
    shared
        .store
        .steps(run)
        .map(|s| s.iter().any(|s| s.state == StepState::Running))
        .unwrap_or(false)
}
