//! What the CLI prints reads well and survives its reader: a closed pipe
//! (`repave logs RUN | head`) ends a command quietly, `status` says where
//! an interrupted run resumes, and a leased group's lease ends at a date,
//! not at a count of milliseconds. The real binary on a real local fleet,
//! with runs written into its store.

use crate::common;

use common::{exe, fleet_lock, Fleet};
use repave_core::ids::{Clock as _, SystemClock};
use repave_store::{NewEvent, NewRun, RunKind, RunState, Store};
use std::process::{Command, Stdio};
use std::time::Duration;

/// A run of pipeline `web` that stopped after its `resolve` step, with no
/// driver and no lease, and `events` events.
fn interrupted_run(store: &Store, events: usize) -> String {
    let now = SystemClock.now();
    let run = store
        .create_run(&NewRun {
            pipeline: "web".into(),
            group: "web".into(),
            kind: RunKind::Run,
            provider: "local".into(),
            config: serde_json::json!({}),
            now,
            place: None,
        })
        .unwrap();
    store.set_run_state(&run.id, RunState::Running, None, now).unwrap();
    store
        .begin_step(&run.id, "resolve", &serde_json::json!({}), now)
        .unwrap();
    store
        .finish_step(&run.id, "resolve", &serde_json::json!({ "source_image": "img-1" }), now)
        .unwrap();
    for i in 0..events {
        store
            .append_event(&NewEvent {
                run: run.id.clone(),
                at: now,
                level: "info".into(),
                step: Some("resolve".into()),
                message: format!("event {i}"),
                data: serde_json::Value::Null,
            })
            .unwrap();
    }
    run.id.to_string()
}

/// A running fleet of one and its store.
fn fleet() -> (Fleet, Store) {
    let fleet = Fleet::new(1, 1, 2, "");
    fleet.up();
    let store = Store::open(&fleet.state_dir().join("repave.db")).unwrap();
    (fleet, store)
}

#[test]
fn logs_status_and_history_stop_quietly_when_the_reader_closes_the_pipe() {
    let _l = fleet_lock();
    let (fleet, store) = fleet();
    let run = interrupted_run(&store, 3000);
    for args in [
        vec!["logs", run.as_str()],
        vec!["--json", "logs", run.as_str()],
        vec!["status"],
        vec!["--json", "status"],
        vec!["history"],
        vec!["--json", "history"],
    ] {
        let mut child = Command::new(exe())
            .args(["--config", fleet.config.as_str()])
            .args(&args)
            .env_remove("REPAVE_CONFIG")
            .env_remove("REPAVE_STATE_DIR")
            .env("REPAVE_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // The reader is gone before the first line: every write fails.
        drop(child.stdout.take());
        let status = common::wait_status(&mut child, Duration::from_secs(60));
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
        assert_eq!(status.code(), Some(0), "repave {args:?}: {stderr}");
        assert!(stderr.is_empty(), "repave {args:?} said something: {stderr}");
    }
}

#[test]
fn status_says_where_an_interrupted_run_resumes() {
    let _l = fleet_lock();
    let (fleet, store) = fleet();
    let run = interrupted_run(&store, 0);
    let out = fleet.repave(["status"]).expect_code(0).stdout;
    assert!(
        out.contains(&format!("`repave resume {run}` continues after step resolve")),
        "{out}"
    );
    assert!(!out.contains("the next step"), "{out}");
}

#[test]
fn a_leased_group_says_until_when_its_lease_runs_in_words() {
    let _l = fleet_lock();
    let (fleet, store) = fleet();
    store
        .acquire_lease("web", "run-holder", Duration::from_secs(600), SystemClock.now())
        .unwrap();
    let refused = fleet.repave(["roll"]).expect_code(4);
    let err = refused.stderr;
    assert!(err.contains("is being changed by run run-holder"), "{err}");
    // `… until 2026-11-26T05:50:20Z, in 9m 59s)`: a date and a distance.
    let until = err
        .split("until ")
        .nth(1)
        .unwrap_or_else(|| panic!("no lease end in {err}"));
    let (date, rest) = until.split_once(", ").unwrap_or_else(|| panic!("{err}"));
    assert!(
        date.len() == 20 && date.as_bytes()[10] == b'T' && date.ends_with('Z'),
        "not RFC 3339: {date:?} in {err}"
    );
    assert!(rest.starts_with("in 9m") || rest.starts_with("in 10m"), "{err}");
    let digits = err
        .split(|c: char| !c.is_ascii_digit())
        .map(str::len)
        .max()
        .unwrap_or(0);
    assert!(digits < 10, "a raw timestamp in {err}");
}
