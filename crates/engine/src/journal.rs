//! What a run's journal says, read back typed, for those who watch a run
//! from outside its engine (the scheduler of `repave serve`): whether its
//! scan found nothing to do (`window.only_if`), and whether it is rolling.
//! The step names and output shapes stay the engine's own.

use crate::bake::{ImageOutput, ResolveOutput, ScanOutput};
use repave_core::RunId;
use repave_store::{RunFilter, RunKind, RunState, StepState, Store};
use serde::de::DeserializeOwned;

/// The name of a step that belongs to roll step `roll_step` ("roll",
/// "rollback_roll"): "suspend_processes", "rollback_suspend_processes".
pub(crate) fn beside(roll_step: &str, name: &str) -> String {
    format!("{}{name}", roll_step.strip_suffix("roll").unwrap_or(roll_step))
}

/// The output of `step` of `run`, once the step is done.
fn done<T: DeserializeOwned>(store: &Store, run: &RunId, step: &str) -> Option<T> {
    store
        .step(run, step)
        .ok()
        .flatten()
        .filter(|s| s.state == StepState::Done)
        .and_then(|s| s.output)
        .and_then(|o| serde_json::from_value(o).ok())
}

/// `None` until the run's scan is done; then `Some(Some(why))` when the
/// source image is the last good bake's image and no update applies
/// (`only_if = "updates_available"` skips such a window), `Some(None)`
/// otherwise.
pub fn nothing_to_do(store: &Store, pipeline: &str, run: &RunId) -> Option<Option<String>> {
    let scan: ScanOutput = done(store, run, "scan")?;
    let source = done::<ResolveOutput>(store, run, "resolve").map(|r| r.source_image);
    let filter = RunFilter {
        pipeline: Some(pipeline.into()),
        state: Some(RunState::Succeeded),
        limit: Some(20),
        ..Default::default()
    };
    // Without the history nothing shows the window may be skipped: it runs.
    let runs = match store.list_runs(&filter) {
        Ok(runs) => runs,
        Err(e) => {
            tracing::warn!(error = %e, pipeline, "only_if: could not read the last good run; the window runs");
            return Some(None);
        }
    };
    let Some(last_good) = runs.into_iter().find(|r| r.kind == RunKind::Run && r.id != *run) else {
        return Some(None);
    };
    let baked = done::<ImageOutput>(store, &last_good.id, "create_image").map(|o| o.image);
    match source {
        Some(image) if scan.updates.is_empty() && baked.as_ref() == Some(&image) => Some(Some(format!(
            "source image {image} unchanged since run {} and no update applies",
            last_good.id
        ))),
        _ => Some(None),
    }
}

/// The run has published (or only rolls): cancelling it now pauses it.
pub fn is_rolling(store: &Store, run: &RunId) -> bool {
    let Ok(Some(record)) = store.get_run(run) else {
        return false;
    };
    match record.kind {
        RunKind::Roll => true,
        RunKind::Run => matches!(store.step(run, "publish"), Ok(Some(s)) if s.state == StepState::Done),
        RunKind::Bake | RunKind::Rollback => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use repave_core::patch::Update;
    use repave_core::provider::LaunchSpecRef;
    use repave_core::{ImageId, Timestamp};
    use repave_store::NewRun;
    use serde::Serialize;

    fn run(store: &Store, at: i64, steps: &[(&str, serde_json::Value)], state: RunState) -> RunId {
        let r = store
            .create_run(&NewRun {
                pipeline: "web".into(),
                group: "web".into(),
                kind: RunKind::Run,
                provider: "sim".into(),
                config: serde_json::json!({}),
                now: Timestamp(at),
                place: None,
            })
            .unwrap();
        for (name, out) in steps {
            store
                .begin_step(&r.id, name, &serde_json::json!({}), Timestamp(at))
                .unwrap();
            store.finish_step(&r.id, name, out, Timestamp(at + 1)).unwrap();
        }
        store.set_run_state(&r.id, state, None, Timestamp(at + 2)).unwrap();
        r.id
    }

    fn json(v: impl Serialize) -> serde_json::Value {
        serde_json::to_value(v).unwrap()
    }

    fn resolved(image: &str) -> serde_json::Value {
        json(ResolveOutput {
            source_image: ImageId::new(image.to_string()),
            parameter_version: 1,
            launch_spec: LaunchSpecRef {
                name: "web".into(),
                version: 1,
            },
            desired: 2,
            os: None,
            builder: None,
        })
    }

    fn update(id: &str) -> Update {
        Update {
            id: id.into(),
            package: "pkg".into(),
            version: "1".into(),
            severity: "Critical".into(),
            classification: "SecurityUpdates".into(),
            released: "2026-01-01".into(),
            reboot: false,
            files: Default::default(),
        }
    }

    #[test]
    fn nothing_to_do_when_the_source_is_the_last_good_image_and_no_update_applies() {
        let store = Store::open_in_memory().unwrap();
        let good = run(
            &store,
            1,
            &[
                ("resolve", resolved("img-1")),
                (
                    "create_image",
                    json(ImageOutput {
                        image: ImageId::new("img-2".to_string()),
                    }),
                ),
            ],
            RunState::Succeeded,
        );
        let scanned = |updates: Vec<Update>, source: &str| {
            let id = run(
                &store,
                10,
                &[("resolve", resolved(source)), ("scan", json(ScanOutput { updates }))],
                RunState::Running,
            );
            nothing_to_do(&store, "web", &id)
        };
        let why = scanned(vec![], "img-2").expect("scan done").expect("skipped");
        assert!(why.contains("img-2") && why.contains(good.as_str()), "{why}");
        assert_eq!(scanned(vec![update("KB1")], "img-2"), Some(None), "an update applies");
        assert_eq!(scanned(vec![], "img-9"), Some(None), "the golden image changed");
        let unscanned = run(&store, 20, &[("resolve", resolved("img-2"))], RunState::Running);
        assert_eq!(nothing_to_do(&store, "web", &unscanned), None, "scan not done yet");
    }

    #[test]
    fn a_run_is_rolling_once_it_published_a_roll_always_a_bake_never() {
        let store = Store::open_in_memory().unwrap();
        let baking = run(&store, 1, &[("resolve", resolved("img-1"))], RunState::Running);
        assert!(!is_rolling(&store, &baking));
        store
            .begin_step(&baking, "publish", &serde_json::json!({}), Timestamp(5))
            .unwrap();
        assert!(!is_rolling(&store, &baking), "publishing, not published");
        store
            .finish_step(&baking, "publish", &serde_json::json!({}), Timestamp(6))
            .unwrap();
        assert!(is_rolling(&store, &baking));
        assert!(!is_rolling(&store, &RunId::new("run-missing".to_string())));
    }
}
