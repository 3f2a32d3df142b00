//! The store against real database files in temporary directories.

use repave_core::{RunId, Timestamp};
use repave_store::*;
use serde_json::json;
use std::time::Duration;

const T0: Timestamp = Timestamp(1_772_323_199_000); // 2026-02-28T23:59:59Z

fn temp_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("state/repave.db")).unwrap();
    (dir, store)
}

fn new_run(pipeline: &str, now: Timestamp) -> NewRun {
    NewRun {
        pipeline: pipeline.into(),
        group: "web".into(),
        kind: RunKind::Run,
        provider: "local".into(),
        config: json!({ "parameter": "latestAmi" }),
        now,
        place: None,
    }
}

fn at(secs: i64) -> Timestamp {
    Timestamp(T0.0 + secs * 1000)
}

#[test]
fn run_lifecycle() {
    let (_dir, store) = temp_store();
    let run = store.create_run(&new_run("web", T0)).unwrap();
    assert!(run.id.0.starts_with("run-20260228-235959-"), "{}", run.id);
    assert_eq!(run.id.0.len(), "run-20260228-235959-".len() + 6);
    assert_eq!(run.state, RunState::Pending);
    assert_eq!(store.get_run(&run.id).unwrap().unwrap(), run);

    store.set_run_state(&run.id, RunState::Running, None, at(1)).unwrap();
    assert_eq!(store.get_run(&run.id).unwrap().unwrap().ended_at, None);
    store.set_run_summary(&run.id, &json!({ "replaced": 4 })).unwrap();
    store
        .set_run_state(&run.id, RunState::RolledBack, Some("health check failed"), at(60))
        .unwrap();
    let got = store.get_run(&run.id).unwrap().unwrap();
    assert_eq!(got.state, RunState::RolledBack);
    assert_eq!(got.error.as_deref(), Some("health check failed"));
    assert_eq!(got.ended_at, Some(at(60)));
    assert_eq!(got.summary, Some(json!({ "replaced": 4 })));
    assert_eq!(got.config, json!({ "parameter": "latestAmi" }));

    let missing = RunId::new("run-nope");
    assert!(store.get_run(&missing).unwrap().is_none());
    assert!(matches!(
        store.set_run_state(&missing, RunState::Failed, None, at(1)),
        Err(StoreError::RunNotFound { .. })
    ));
}

#[test]
fn list_runs_newest_first_with_filters() {
    let (_dir, store) = temp_store();
    let a = store.create_run(&new_run("web", at(0))).unwrap();
    let b = store.create_run(&new_run("api", at(10))).unwrap();
    let c = store.create_run(&new_run("web", at(20))).unwrap();
    store.set_run_state(&c.id, RunState::Succeeded, None, at(30)).unwrap();
    let ids = |f: RunFilter| {
        store
            .list_runs(&f)
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(RunFilter::default()), [c.id.clone(), b.id.clone(), a.id.clone()]);
    assert_eq!(
        ids(RunFilter {
            pipeline: Some("web".into()),
            ..Default::default()
        }),
        [c.id.clone(), a.id.clone()]
    );
    assert_eq!(
        ids(RunFilter {
            state: Some(RunState::Pending),
            ..Default::default()
        }),
        [b.id.clone(), a.id.clone()]
    );
    assert_eq!(
        ids(RunFilter {
            limit: Some(1),
            ..Default::default()
        }),
        vec![c.id.clone()]
    );
    assert_eq!(
        ids(RunFilter {
            group: Some("db".into()),
            ..Default::default()
        }),
        Vec::<RunId>::new()
    );
}

#[test]
fn run_ids_are_unique_within_a_second() {
    let store = Store::open_in_memory().unwrap();
    let mut ids: Vec<_> = (0..200)
        .map(|_| store.create_run(&new_run("web", T0)).unwrap().id)
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 200);
}

#[test]
fn steps_record_intent_then_output_and_resume() {
    let (_dir, store) = temp_store();
    let run = store.create_run(&new_run("web", T0)).unwrap().id;
    let first = store
        .begin_step(&run, "resolve", &json!({ "parameter": "latestAmi" }), at(1))
        .unwrap();
    assert_eq!(
        (first.state, first.attempts, first.output.clone()),
        (StepState::Running, 1, None)
    );
    store
        .finish_step(&run, "resolve", &json!({ "image": "img-1" }), at(2))
        .unwrap();

    store
        .begin_step(&run, "launch_builder", &json!({ "token": "run-x/launch" }), at(3))
        .unwrap();
    // The process dies here; a resumed run begins the step again.
    let resumed = store
        .begin_step(&run, "launch_builder", &json!({ "token": "run-x/launch" }), at(100))
        .unwrap();
    assert_eq!(
        (resumed.state, resumed.attempts, resumed.started_at),
        (StepState::Running, 2, at(3))
    );
    // A checkpoint is kept when the step is begun again.
    store
        .checkpoint_step(&run, "launch_builder", &json!({ "reached": 3 }))
        .unwrap();
    let again = store
        .begin_step(&run, "launch_builder", &json!({ "token": "run-x/launch" }), at(100))
        .unwrap();
    assert_eq!((again.attempts, again.checkpoint), (3, Some(json!({ "reached": 3 }))));
    assert!(matches!(
        store.checkpoint_step(&run, "publish", &json!({})),
        Err(StoreError::StepNotFound { .. })
    ));
    store
        .fail_step(&run, "launch_builder", "quota exceeded", at(101))
        .unwrap();

    let steps = store.steps(&run).unwrap();
    let summary: Vec<_> = steps.iter().map(|s| (s.name.as_str(), s.state, s.attempts)).collect();
    assert_eq!(
        summary,
        [
            ("resolve", StepState::Done, 1),
            ("launch_builder", StepState::Failed, 3),
        ]
    );
    assert_eq!(steps[0].output, Some(json!({ "image": "img-1" })));
    assert_eq!((steps[0].started_at, steps[0].ended_at), (at(1), Some(at(2))));
    assert_eq!(steps[1].error.as_deref(), Some("quota exceeded"));
    assert_eq!(store.step(&run, "launch_builder").unwrap().unwrap(), steps[1]);
    assert!(store.step(&run, "publish").unwrap().is_none());
    assert!(matches!(
        store.finish_step(&run, "publish", &json!({}), at(1)),
        Err(StoreError::StepNotFound { .. })
    ));
    // A step of a run that doesn't exist violates the foreign key.
    assert!(matches!(
        store.begin_step(&RunId::new("run-nope"), "resolve", &json!(null), at(1)),
        Err(StoreError::BeginStep { .. })
    ));
}

#[test]
fn events_are_ordered_and_append_only() {
    let (dir, store) = temp_store();
    let run = store.create_run(&new_run("web", T0)).unwrap().id;
    let other = store.create_run(&new_run("api", T0)).unwrap().id;
    let event = |run: &RunId, i: i64| NewEvent {
        run: run.clone(),
        at: at(i),
        level: "info".into(),
        step: Some("roll".into()),
        message: format!("event {i}"),
        data: json!({ "i": i }),
    };
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(store.append_event(&event(&run, i)).unwrap());
        store.append_event(&event(&other, i)).unwrap();
    }
    assert!(ids.windows(2).all(|w| w[0] < w[1]));
    let all = store.events(&run, 0, 100).unwrap();
    assert_eq!(
        all.iter().map(|e| e.message.as_str()).collect::<Vec<_>>(),
        ["event 0", "event 1", "event 2", "event 3", "event 4"]
    );
    assert_eq!(all[2].data, json!({ "i": 2 }));
    let page = store.events(&run, ids[1], 2).unwrap();
    assert_eq!(page.iter().map(|e| e.id).collect::<Vec<_>>(), [ids[2], ids[3]]);

    let bad_level = NewEvent {
        level: "debug".into(),
        ..event(&run, 9)
    };
    assert!(matches!(
        store.append_event(&bad_level),
        Err(StoreError::AppendEvent { .. })
    ));

    // Even a raw connection to the file can't rewrite history.
    let raw = rusqlite::Connection::open(dir.path().join("state/repave.db")).unwrap();
    for sql in ["UPDATE events SET message = 'rewritten'", "DELETE FROM events"] {
        let err = raw.execute(sql, []).unwrap_err();
        assert!(err.to_string().contains("events are append-only"), "{sql}: {err}");
    }
    assert_eq!(store.events(&run, 0, 100).unwrap(), all);
}

#[test]
fn leases_fence_out_stale_holders() {
    let (_dir, store) = temp_store();
    let ttl = Duration::from_secs(30);
    let a = store.acquire_lease("web", "cli-1", ttl, at(0)).unwrap();
    assert_eq!((a.token, a.expires_at), (1, at(30)));
    assert_eq!(store.current_lease("web").unwrap(), Some(a.clone()));
    assert_eq!(store.current_lease("api").unwrap(), None);

    // Held by someone else until it expires.
    match store.acquire_lease("web", "serve", ttl, at(10)) {
        Err(StoreError::LeaseHeld { holder, expires_at, .. }) => {
            assert_eq!((holder.as_str(), expires_at), ("cli-1", at(30)))
        }
        other => panic!("expected LeaseHeld, got {other:?}"),
    }
    // The same holder re-acquires and keeps its token; renewing extends it.
    assert_eq!(store.acquire_lease("web", "cli-1", ttl, at(10)).unwrap().token, 1);
    let a = store.renew_lease(&a, ttl, at(20)).unwrap();
    assert_eq!(a.expires_at, at(50));
    store.check_lease(&a, at(49)).unwrap();

    // Expired: fencing refuses the old holder, another takes over with token + 1.
    assert!(matches!(
        store.check_lease(&a, at(50)),
        Err(StoreError::LeaseLost { .. })
    ));
    let b = store.acquire_lease("web", "serve", ttl, at(51)).unwrap();
    assert_eq!(b.token, 2);
    assert!(matches!(
        store.check_lease(&a, at(52)),
        Err(StoreError::LeaseLost { token: 1, .. })
    ));
    assert!(matches!(
        store.renew_lease(&a, ttl, at(52)),
        Err(StoreError::LeaseLost { .. })
    ));
    store.release_lease(&a).unwrap(); // a lost lease: no effect
    store.check_lease(&b, at(52)).unwrap();

    // Released: free at once, and the token still grows.
    store.release_lease(&b).unwrap();
    assert_eq!(store.current_lease("web").unwrap(), None);
    assert!(matches!(
        store.check_lease(&b, at(53)),
        Err(StoreError::LeaseLost { .. })
    ));
    let c = store.acquire_lease("web", "cli-2", ttl, at(53)).unwrap();
    assert_eq!(c.token, 3);
    // Leases are per group.
    assert_eq!(store.acquire_lease("api", "cli-1", ttl, at(53)).unwrap().token, 1);
}

/// One driver per run: the same holder (a run id) from another process is
/// refused while that process lives, and takes over at once when it is
/// gone; the old process is then fenced out.
/// One group name in two places is two groups: each run's lease is
/// held under its place, and the place is read back with the run.
#[test]
fn groups_of_one_name_in_two_places_are_leased_apart() {
    let (_d, store) = temp_store();
    let mut runs = Vec::new();
    for place in ["111111111111/us-east-2", "222222222222/us-west-2"] {
        let run = store
            .create_run(&NewRun {
                place: Some(place.into()),
                ..new_run("web", at(0))
            })
            .unwrap();
        assert_eq!(store.get_run(&run.id).unwrap().unwrap().place.as_deref(), Some(place));
        assert_eq!(run.lease_key(), format!("web@{place}"));
        store
            .acquire_lease(&run.lease_key(), run.id.as_str(), Duration::from_secs(60), at(0))
            .expect("the other place's lease does not hold this group");
        runs.push(run);
    }
    assert!(
        store
            .acquire_lease(&runs[0].lease_key(), "run-other", Duration::from_secs(60), at(1))
            .is_err(),
        "the same group in the same place stays leased"
    );
    let old = store.create_run(&new_run("web", at(2))).unwrap();
    assert_eq!(old.lease_key(), "web", "no place: the group's name, as before schema 5");
}

#[test]
fn a_second_driver_of_one_run_is_refused_while_the_first_lives() {
    let (_dir, store) = temp_store();
    let ttl = Duration::from_secs(30);
    let me = repave_store::Driver::current();
    let a = store.acquire_lease_by("web", "run-1", &me, ttl, at(0)).unwrap();
    assert_eq!(a.driver.as_ref(), Some(&me));

    // Another process on this host asks for the same run: refused while
    // this one lives, and told who holds it.
    let mut sibling = std::process::Command::new("sleep").arg("30").spawn().unwrap();
    let other = repave_store::Driver {
        pid: sibling.id(),
        started: 0,
        ..me.clone()
    };
    match store.acquire_lease_by("web", "run-1", &other, ttl, at(1)) {
        Err(StoreError::LeaseHeld { holder, driver, .. }) => {
            assert_eq!(holder, "run-1");
            assert_eq!(driver.as_ref(), Some(&me));
        }
        other => panic!("expected LeaseHeld, got {other:?}"),
    }

    // A run held by a process that has died: taken over at once with the
    // next token, and the dead holder's lease is fenced out.
    let dead = store.acquire_lease_by("db", "run-2", &other, ttl, at(2)).unwrap();
    sibling.kill().unwrap();
    sibling.wait().unwrap();
    let taken = store.acquire_lease_by("db", "run-2", &me, ttl, at(3)).unwrap();
    assert_eq!((dead.token, taken.token), (1, 2));
    assert!(matches!(
        store.check_lease(&dead, at(4)),
        Err(StoreError::LeaseLost { .. })
    ));
    store.check_lease(&taken, at(4)).unwrap();

    // Held from another host: its liveness cannot be seen from here, so
    // only the lease's expiry frees it.
    let elsewhere = repave_store::Driver {
        host: format!("{}-elsewhere", me.host),
        ..me.clone()
    };
    store.acquire_lease_by("api", "run-3", &elsewhere, ttl, at(5)).unwrap();
    assert!(matches!(
        store.acquire_lease_by("api", "run-3", &me, ttl, at(6)),
        Err(StoreError::LeaseHeld { .. })
    ));
    assert_eq!(
        store.acquire_lease_by("api", "run-3", &me, ttl, at(36)).unwrap().token,
        2
    );
}

#[test]
fn two_handles_on_one_file_see_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("repave.db");
    let one = Store::open(&path).unwrap();
    let two = Store::open(&path).unwrap();
    let run = one.create_run(&new_run("web", T0)).unwrap();
    assert_eq!(two.get_run(&run.id).unwrap().unwrap(), run);
    two.begin_step(&run.id, "resolve", &json!({}), at(1)).unwrap();
    assert_eq!(one.steps(&run.id).unwrap().len(), 1);
    let lease = one.acquire_lease("web", "one", Duration::from_secs(30), at(0)).unwrap();
    assert!(matches!(
        two.acquire_lease("web", "two", Duration::from_secs(30), at(1)),
        Err(StoreError::LeaseHeld { .. })
    ));
    one.release_lease(&lease).unwrap();
    assert_eq!(
        two.acquire_lease("web", "two", Duration::from_secs(30), at(1))
            .unwrap()
            .token,
        2
    );

    // Writers on threads through both handles: busy_timeout serializes them.
    std::thread::scope(|s| {
        for store in [&one, &two] {
            let id = run.id.clone();
            s.spawn(move || {
                for i in 0..50 {
                    let ev = NewEvent {
                        run: id.clone(),
                        at: at(i),
                        level: "info".into(),
                        step: None,
                        message: "x".into(),
                        data: json!(i),
                    };
                    store.append_event(&ev).unwrap();
                }
            });
        }
    });
    assert_eq!(one.events(&run.id, 0, 1000).unwrap().len(), 100);
}

#[test]
fn reopening_keeps_data_and_migrations_are_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/dir/repave.db");
    let run = {
        let store = Store::open(&path).unwrap();
        store.create_run(&new_run("web", T0)).unwrap()
    };
    for _ in 0..2 {
        let store = Store::open(&path).unwrap();
        assert_eq!(store.get_run(&run.id).unwrap().unwrap(), run);
    }
    let raw = rusqlite::Connection::open(&path).unwrap();
    let version: u32 = raw.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
    assert_eq!(version, Store::schema_version());
    let mode: String = raw.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
    assert_eq!(mode, "wal");

    // A database from a newer repave is refused, not silently downgraded.
    raw.pragma_update(None, "user_version", Store::schema_version() + 1)
        .unwrap();
    drop(raw);
    assert!(matches!(Store::open(&path), Err(StoreError::SchemaTooNew { .. })));
}

#[test]
fn enums_use_snake_case_names() {
    assert_eq!(RunState::RolledBack.as_str(), "rolled_back");
    assert_eq!("rolled_back".parse::<RunState>().unwrap(), RunState::RolledBack);
    assert_eq!(serde_json::to_string(&RunState::RolledBack).unwrap(), "\"rolled_back\"");
    assert_eq!(serde_json::to_string(&RunKind::Rollback).unwrap(), "\"rollback\"");
    assert!("done".parse::<RunState>().is_err());
    let terminal: Vec<_> = [
        RunState::Pending,
        RunState::Running,
        RunState::Paused,
        RunState::Succeeded,
        RunState::Failed,
        RunState::RolledBack,
        RunState::Cancelled,
    ]
    .into_iter()
    .filter(|s| s.is_terminal())
    .collect();
    assert_eq!(
        terminal,
        [
            RunState::Succeeded,
            RunState::Failed,
            RunState::RolledBack,
            RunState::Cancelled
        ]
    );
    for kind in [RunKind::Run, RunKind::Bake, RunKind::Roll, RunKind::Rollback] {
        assert_eq!(kind.as_str().parse::<RunKind>().unwrap(), kind);
    }
}
