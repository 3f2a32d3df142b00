//! The window scheduler: starts a pipeline's run when its window opens
//! (or resumes the run a previous window's cutoff paused), stops new
//! replacements at the cutoff, and disables a schedule after too many
//! failures in a row.

use crate::runs::{launch, Launch, RunTask};
use crate::schedule::Opening;
use crate::state::Shared;
use repave_core::{RunId, Timestamp};
use repave_engine::EngineError;
use repave_store::{NewEvent, RunFilter, RunKind, RunState};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Marker the scheduler writes into a run it pauses at a cutoff.
pub(crate) const CUTOFF_MARK: &str = "window cutoff";

/// Loop until `shutdown`: look at every window, act on those that opened,
/// sleep until the next opening (or one tick).
pub(crate) async fn run(shared: Arc<Shared>, shutdown: CancellationToken) {
    loop {
        let now = shared.clock.now();
        let mut wake = now.plus(shared.scheduler_tick);
        for (name, ws) in &shared.windows {
            if let Some(open) = ws.open_at(now) {
                let acted = shared.schedule(name).and_then(|s| s.last_window_start);
                if acted != Some(open.start.millis()) {
                    shared.update_schedule(name, |s| s.last_window_start = Some(open.start.millis()));
                    fire(&shared, name, open).await;
                }
            }
            if let Some(next) = ws.next_opening(now) {
                wake = wake.min(next.start);
            }
        }
        let nap = wake.since(shared.clock.now()).max(Duration::from_millis(10));
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(nap) => {}
        }
    }
}

fn skip(shared: &Shared, pipeline: &str, reason: String) {
    tracing::warn!(pipeline, "window skipped: {reason}");
    shared.update_schedule(pipeline, |s| s.last_skip = Some(reason));
}

async fn fire(shared: &Arc<Shared>, pipeline: &str, open: Opening) {
    let state = shared.schedule(pipeline).unwrap_or_default();
    if !state.enabled {
        let why = state.disabled_reason.unwrap_or_else(|| "disabled".into());
        return skip(shared, pipeline, format!("schedule disabled: {why}"));
    }
    let filter = RunFilter {
        pipeline: Some(pipeline.into()),
        limit: Some(20),
        ..Default::default()
    };
    let recent = match shared.store.list_runs(&filter) {
        Ok(r) => r,
        Err(e) => return skip(shared, pipeline, format!("store: {e}")),
    };
    // A restart inside a window must not start the window's run twice.
    if recent
        .iter()
        .any(|r| r.started_at >= open.start && r.state != RunState::Paused)
    {
        return;
    }
    if shared.clock.now() >= open.cutoff {
        return skip(
            shared,
            pipeline,
            "the window was seen only after its cutoff; waiting for the next one".into(),
        );
    }
    let what = match recent.iter().find(|r| r.state == RunState::Paused) {
        Some(paused) => Launch::Resume {
            run: paused.id.clone(),
            pipeline: pipeline.into(),
        },
        None => Launch::Start {
            pipeline: pipeline.into(),
            kind: RunKind::Run,
        },
    };
    match launch(shared, what, Some(open.cutoff)).await {
        Ok((id, task)) => {
            shared.update_schedule(pipeline, |s| s.last_skip = None);
            let shared = shared.clone();
            let pipeline = pipeline.to_string();
            tokio::spawn(async move { supervise(&shared, &pipeline, id, task, open.cutoff).await });
        }
        Err(EngineError::Leased { holder, .. }) => {
            skip(shared, pipeline, format!("group is being changed by run {holder}"));
        }
        Err(e) => {
            skip(shared, pipeline, format!("could not start: {e}"));
            count_result(shared, pipeline, None, "failed", Some(e.to_string()));
        }
    }
}

/// Wait for a scheduled run; at the cutoff, mark it once it is rolling (the
/// engine's planner stops new replacements there and pauses the roll once
/// nothing is in flight; a bake is never cut in half: the roll then starts
/// paused and goes on in the next window). With `only_if =
/// "updates_available"`, stop it after its scan when nothing changed.
async fn supervise(shared: &Arc<Shared>, pipeline: &str, run: RunId, mut task: RunTask, cutoff: Timestamp) {
    let only_if = shared
        .config
        .pipelines
        .get(pipeline)
        .and_then(|p| p.window.as_ref())
        .and_then(|w| w.only_if);
    // How often the run's own engine looks at its provider.
    let poll = shared.engine.get(pipeline).map(|o| o.poll).unwrap_or_default();
    let watch = async {
        let mut scan_checked = only_if.is_none();
        loop {
            if !shared.runs.is_live(run.as_str()) {
                return;
            }
            if !scan_checked {
                if let Some(reason) = repave_engine::journal::nothing_to_do(&shared.store, pipeline, &run) {
                    scan_checked = true;
                    if let Some(reason) = reason {
                        append(
                            shared,
                            &run,
                            format!("only_if updates_available: {reason}; the window is skipped"),
                        );
                        skip(shared, pipeline, reason);
                        shared.runs.cancel(run.as_str());
                        return;
                    }
                }
            }
            let now = shared.clock.now();
            if now >= cutoff && is_rolling(shared, &run) {
                // The engine's planner holds the cutoff (the run was started
                // with it): no new replacement starts, the ones in flight
                // finish, capacity returns to base, then the run pauses.
                // Cancelling here would cut that short.
                let message = format!("{CUTOFF_MARK}: no new replacement starts; the roll resumes in the next window");
                append(shared, &run, message);
                return;
            }
            let until_cutoff = if now < cutoff { cutoff.since(now) } else { poll };
            tokio::time::sleep(if scan_checked {
                until_cutoff
            } else {
                until_cutoff.min(poll)
            })
            .await;
        }
    };
    let result = tokio::select! {
        r = &mut task => r,
        _ = watch => (&mut task).await,
    };
    match result {
        Ok(Ok(outcome)) => count_result(
            shared,
            pipeline,
            Some(&run),
            &outcome.state,
            outcome.summary.error.clone(),
        ),
        Ok(Err(e)) => count_result(shared, pipeline, Some(&run), "failed", Some(e.to_string())),
        // Aborted at shutdown: the next start resumes it.
        Err(_) => {}
    }
}

/// The run has published (or only rolls): cancelling it now pauses it.
pub(crate) fn is_rolling(shared: &Shared, run: &RunId) -> bool {
    repave_engine::journal::is_rolling(&shared.store, run)
}

pub(crate) fn append(shared: &Shared, run: &RunId, message: String) {
    let ev = NewEvent {
        run: run.clone(),
        at: shared.clock.now(),
        level: "info".into(),
        step: None,
        message,
        data: serde_json::Value::Null,
    };
    if let Err(e) = shared.store.append_event(&ev) {
        tracing::error!(error = %e, "could not append event");
    }
}

/// Failures in a row disable the schedule; a success resets the count.
fn count_result(shared: &Shared, pipeline: &str, run: Option<&RunId>, state: &str, error: Option<String>) {
    let max = shared
        .config
        .pipelines
        .get(pipeline)
        .and_then(|p| p.window.as_ref())
        .map_or(u32::MAX, |w| w.max_consecutive_failures);
    let mut disabled = None;
    shared.update_schedule(pipeline, |s| match state {
        "succeeded" => s.consecutive_failures = 0,
        "failed" | "rolled_back" => {
            s.consecutive_failures += 1;
            if s.consecutive_failures >= max && s.enabled {
                let reason = format!(
                    "disabled after {} consecutive failed runs (last: {}{}); `repave schedule enable {pipeline}` enables it again",
                    s.consecutive_failures,
                    run.map(|r| r.to_string()).unwrap_or_else(|| "no run".into()),
                    error.as_deref().map(|e| format!(": {e}")).unwrap_or_default()
                );
                s.enabled = false;
                s.disabled_reason = Some(reason.clone());
                disabled = Some(reason);
            }
        }
        _ => {}
    });
    if let Some(reason) = disabled {
        tracing::error!(pipeline, "schedule {reason}");
        if let Some(run) = run {
            append(shared, run, format!("schedule of pipeline {pipeline} {reason}"));
        }
    }
}
