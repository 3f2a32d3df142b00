//! The window scheduler: starts a pipeline's run when its window opens
//! (or resumes the run a previous window's cutoff paused), stops new
//! replacements at the cutoff, and disables a schedule after too many
//! failures in a row.

use crate::runs::{launch, Launch, RunTask};
use crate::schedule::Opening;
use crate::state::Shared;
use repave_core::{RunId, Timestamp};
use repave_engine::EngineError;
use repave_store::{NewEvent, RunFilter, RunKind, RunState, StepState, Store};
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
        .and_then(|w| w.only_if.clone());
    // How often the run's own engine looks at its provider.
    let poll = shared.engine.get(pipeline).map(|o| o.poll).unwrap_or_default();
    let watch = async {
        let mut scan_checked = only_if.is_none();
        loop {
            if !shared.runs.is_live(run.as_str()) {
                return;
            }
            if !scan_checked {
                if let Some(reason) = nothing_to_do(&shared.store, pipeline, &run) {
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

/// `None` until the run's scan is done; then `Some(Some(why))` when the
/// source image is the last good bake's image and no update applies.
fn nothing_to_do(store: &Store, pipeline: &str, run: &RunId) -> Option<Option<String>> {
    let output = |r: &RunId, step: &str| {
        store
            .step(r, step)
            .ok()
            .flatten()
            .filter(|s| s.state == StepState::Done)
            .and_then(|s| s.output)
    };
    let scan = output(run, "scan")?;
    let pending = scan.get("updates").and_then(|u| u.as_array()).map_or(0, |u| u.len());
    let source = output(run, "resolve").and_then(|o| o.get("source_image").cloned());
    let filter = RunFilter {
        pipeline: Some(pipeline.into()),
        state: Some(RunState::Succeeded),
        limit: Some(20),
        ..Default::default()
    };
    let runs = store.list_runs(&filter).unwrap_or_default();
    let Some(last_good) = runs.into_iter().find(|r| r.kind == RunKind::Run && r.id != *run) else {
        return Some(None);
    };
    let baked = output(&last_good.id, "create_image").and_then(|o| o.get("image").cloned());
    if pending == 0 && source.is_some() && source == baked {
        let image = source.and_then(|s| s.as_str().map(String::from)).unwrap_or_default();
        return Some(Some(format!(
            "source image {image} unchanged since run {} and no update applies",
            last_good.id
        )));
    }
    Some(None)
}

/// The run has published (or only rolls): cancelling it now pauses it.
pub(crate) fn is_rolling(shared: &Shared, run: &RunId) -> bool {
    let Ok(Some(record)) = shared.store.get_run(run) else {
        return false;
    };
    let done = |step: &str| matches!(shared.store.step(run, step), Ok(Some(s)) if s.state == StepState::Done);
    match record.kind {
        RunKind::Roll => true,
        RunKind::Run => done("publish"),
        RunKind::Bake | RunKind::Rollback => false,
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use repave_store::NewRun;
    use serde_json::json;

    fn run(store: &Store, at: i64, steps: &[(&str, serde_json::Value)], state: RunState) -> RunId {
        let r = store
            .create_run(&NewRun {
                pipeline: "web".into(),
                group: "web".into(),
                kind: RunKind::Run,
                provider: "sim".into(),
                config: json!({}),
                now: Timestamp(at),
                place: None,
            })
            .unwrap();
        for (name, out) in steps {
            store.begin_step(&r.id, name, &json!({}), Timestamp(at)).unwrap();
            store.finish_step(&r.id, name, out, Timestamp(at + 1)).unwrap();
        }
        store.set_run_state(&r.id, state, None, Timestamp(at + 2)).unwrap();
        r.id
    }

    #[test]
    fn nothing_to_do_when_the_source_is_the_last_good_image_and_no_update_applies() {
        let store = Store::open_in_memory().unwrap();
        let good = run(
            &store,
            1,
            &[
                ("resolve", json!({ "source_image": "img-1" })),
                ("create_image", json!({ "image": "img-2" })),
            ],
            RunState::Succeeded,
        );
        let scanned = |updates: serde_json::Value, source: &str| {
            let id = run(
                &store,
                10,
                &[
                    ("resolve", json!({ "source_image": source })),
                    ("scan", json!({ "updates": updates })),
                ],
                RunState::Running,
            );
            nothing_to_do(&store, "web", &id)
        };
        let why = scanned(json!([]), "img-2").expect("scan done").expect("skipped");
        assert!(why.contains("img-2") && why.contains(good.as_str()), "{why}");
        assert_eq!(
            scanned(json!([{ "id": "KB1" }]), "img-2"),
            Some(None),
            "an update applies"
        );
        assert_eq!(scanned(json!([]), "img-9"), Some(None), "the golden image changed");
        let unscanned = run(
            &store,
            20,
            &[("resolve", json!({ "source_image": "img-2" }))],
            RunState::Running,
        );
        assert_eq!(nothing_to_do(&store, "web", &unscanned), None, "scan not done yet");
    }
}
