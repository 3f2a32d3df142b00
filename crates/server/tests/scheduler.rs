//! The window scheduler on the sim provider with a paused clock: virtual
//! days in well under a second of real time.

use repave_core::config::{Config, Pipeline, Window};
use repave_core::duration::HumanDuration;
use repave_core::ids::{ImageId, Timestamp};
use repave_engine::EngineOptions;
use repave_server::{Server, ServerOptions};
use repave_sim::{pipeline, Faults, Latencies, SimClock, SimProvider};
use repave_store::{RunFilter, RunState, Store};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// 2026-01-05T01:00:00Z, a Monday, an hour before the first window.
const EPOCH: i64 = 1_767_574_800_000;
const HOUR: Duration = Duration::from_secs(3600);

struct World {
    provider: Arc<SimProvider>,
    store: Arc<Store>,
    base: ImageId,
    shutdown: CancellationToken,
    served: tokio::task::JoinHandle<()>,
    clock: Arc<SimClock>,
    pipeline: Pipeline,
}

fn policy(window: Window) -> Pipeline {
    let mut p = pipeline("web", "latestAmi");
    p.builder.platform = repave_core::patch::PlatformChoice::Family(repave_core::patch::OsFamily::Windows);
    p.rollout.min_healthy_percent = 90;
    p.rollout.max_healthy_percent = 110;
    p.rollout.warmup = Some(HumanDuration::from_secs(60));
    p.rollout.health_grace = Some(HumanDuration::from_secs(1800));
    p.rollout.timeout = HumanDuration::from_secs(86_400);
    p.test.timeout = HumanDuration::from_secs(1800);
    p.window = Some(window);
    p
}

fn window(max_failures: u32) -> Window {
    Window {
        cron: "0 2 * * *".into(),
        timezone: "UTC".into(),
        duration: HumanDuration::from_secs(3 * 3600),
        cutoff: Some(HumanDuration::from_secs(3600)),
        only_if: None,
        max_consecutive_failures: max_failures,
    }
}

async fn world(size: u32, faults: Faults, p: Pipeline) -> World {
    let clock = Arc::new(SimClock::new(Timestamp(EPOCH)));
    let provider = Arc::new(SimProvider::new(clock.clone(), Latencies::default(), faults, 7));
    let base = provider.add_image("golden");
    provider.add_group("web", "latestAmi", &base, size);
    let store = Arc::new(Store::open_in_memory().unwrap());
    let (shutdown, served) = serve(&store, &provider, &clock, &p).await;
    World {
        provider,
        store,
        base,
        shutdown,
        served,
        clock,
        pipeline: p,
    }
}

/// A server over this store, provider and clock, serving until cancelled.
async fn serve(
    store: &Arc<Store>,
    provider: &Arc<SimProvider>,
    clock: &Arc<SimClock>,
    p: &Pipeline,
) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let mut config = Config::default();
    config.pipelines.insert("web".into(), p.clone());
    let mut providers: BTreeMap<String, Arc<dyn repave_core::provider::Provider>> = BTreeMap::new();
    providers.insert("web".into(), provider.clone());
    let server = Server::new(ServerOptions {
        config,
        token: None,
        store: store.clone(),
        providers,
        clock: clock.clone(),
        engine: BTreeMap::from([(
            "web".to_string(),
            EngineOptions {
                tick: Duration::from_secs(5),
                poll: Duration::from_secs(5),
                roll_cutoff: None,
                lease_ttl: Duration::from_secs(30 * 86_400),
            },
        )]),
        scheduler_tick: Duration::from_secs(60),
        shutdown_grace: Duration::from_secs(600),
        header_read_timeout: Duration::from_secs(10),
    })
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    let served = tokio::spawn(async move { server.serve(listener, stop).await.unwrap() });
    (shutdown, served)
}

/// Stop the server and start a new one on the same store.
async fn restart(w: &mut World) {
    w.shutdown.cancel();
    (&mut w.served).await.unwrap();
    let (shutdown, served) = serve(&w.store, &w.provider, &w.clock, &w.pipeline).await;
    w.shutdown = shutdown;
    w.served = served;
}

fn runs(w: &World) -> Vec<repave_store::RunRecord> {
    w.store.list_runs(&RunFilter::default()).unwrap()
}

fn on_base(w: &World) -> u32 {
    w.provider.images_in_group("web").get(&w.base).copied().unwrap_or(0)
}

fn at(days: i64, hours: i64) -> Timestamp {
    Timestamp(EPOCH + days * 86_400_000 + hours * 3_600_000)
}

#[tokio::test(start_paused = true)]
async fn a_window_starts_the_run_the_cutoff_pauses_it_and_the_next_window_resumes_it() {
    let w = world(30, Faults::default(), policy(window(3))).await;
    // Before 02:00 nothing runs.
    tokio::time::sleep(HOUR / 2).await;
    assert!(runs(&w).is_empty());
    // The window opens at 02:00 (EPOCH + 1h).
    tokio::time::sleep(HOUR).await;
    let first = runs(&w);
    assert_eq!(first.len(), 1, "one run when the window opened");
    assert!(first[0].started_at >= at(0, 1) && first[0].started_at < at(0, 1).plus(Duration::from_secs(120)));
    // Past the cutoff (04:00) and the end (05:00) of the first window: the
    // 30-instance roll did not fit, it is paused with old instances left.
    tokio::time::sleep(HOUR * 5).await;
    let run = w.store.get_run(&first[0].id).unwrap().unwrap();
    assert_eq!(run.state, RunState::Paused, "{:?}", run.error);
    let left = on_base(&w);
    assert!(left > 0 && left < 30, "{left} instances still old");
    let events = w.store.events(&run.id, 0, 10_000).unwrap();
    let mark = events
        .iter()
        .find(|e| e.message.starts_with("window cutoff"))
        .expect("cutoff recorded");
    assert!(
        mark.at >= at(0, 3) && mark.at < at(0, 3).plus(Duration::from_secs(60)),
        "cut off at 04:00"
    );
    // No replacement started after the cutoff: nothing was launched
    // between the pause and the next window.
    let launched = w.provider.launched_in_group("web");
    tokio::time::sleep(HOUR * 12).await;
    assert_eq!(
        w.provider.launched_in_group("web"),
        launched,
        "launches outside the window"
    );
    // Following windows resume the same run until it finishes.
    for _ in 0..10 {
        if w.store.get_run(&run.id).unwrap().unwrap().state == RunState::Succeeded {
            break;
        }
        tokio::time::sleep(HOUR * 24).await;
    }
    let done = w.store.get_run(&run.id).unwrap().unwrap();
    assert_eq!(done.state, RunState::Succeeded, "{:?}", done.error);
    assert_eq!(on_base(&w), 0);
    // Resumed, never restarted: still one run (later windows may start new
    // runs only after it succeeded).
    let all = runs(&w);
    assert!(
        all.iter().filter(|r| r.started_at < done.ended_at.unwrap()).count() == 1,
        "{all:?}"
    );
    w.shutdown.cancel();
    w.served.await.unwrap();
    let _ = w.clock;
}

#[tokio::test(start_paused = true)]
async fn consecutive_failures_disable_the_schedule() {
    let faults = Faults {
        patch_failure: true,
        ..Faults::default()
    };
    let mut w = world(4, faults, policy(window(2))).await;
    tokio::time::sleep(HOUR * 24 * 4).await;
    let all = runs(&w);
    // Two failed windows, then the schedule is off: the later windows start nothing.
    assert_eq!(all.len(), 2, "{all:?}");
    // It stays off across a restart of the server (the state is stored) ...
    let stored = w.store.schedule("web").unwrap().expect("schedule state stored");
    assert!(!stored.enabled && stored.consecutive_failures == 2, "{stored:?}");
    restart(&mut w).await;
    tokio::time::sleep(HOUR * 24 * 2).await;
    assert_eq!(runs(&w).len(), 2, "a restart must not enable a disabled schedule");
    // ... until an operator enables it (what `repave schedule enable` writes,
    // from another process: the running server sees it at the next window).
    w.store
        .put_schedule(&repave_store::ScheduleRecord {
            enabled: true,
            consecutive_failures: 0,
            disabled_reason: None,
            ..stored.clone()
        })
        .unwrap();
    tokio::time::sleep(HOUR * 24).await;
    let after = runs(&w);
    assert_eq!(after.len(), 3, "the enabled schedule's next window runs: {after:?}");
    assert_eq!(w.store.schedule("web").unwrap().unwrap().consecutive_failures, 1);
    assert!(all.iter().all(|r| r.state == RunState::Failed));
    let events = w.store.events(&all[0].id, 0, 10_000).unwrap();
    assert!(
        events.iter().any(|e| e
            .message
            .contains("schedule of pipeline web disabled after 2 consecutive failed runs")),
        "{:?}",
        events.iter().map(|e| &e.message).collect::<Vec<_>>()
    );
    w.shutdown.cancel();
    w.served.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn only_if_updates_available_still_runs_when_updates_apply() {
    // The sim's images never carry their updates, so every scan finds some:
    // the condition holds and both windows bake. (The skip itself is unit
    // tested in `scheduler.rs` against a journal.)
    let mut win = window(3);
    win.only_if = Some(repave_core::config::OnlyIf::UpdatesAvailable);
    win.duration = HumanDuration::from_secs(8 * 3600);
    let w = world(4, Faults::default(), policy(win)).await;
    tokio::time::sleep(HOUR * 36).await;
    let all = runs(&w);
    assert_eq!(all.len(), 2, "{all:?}");
    for r in &all {
        assert_eq!(r.state, RunState::Succeeded, "{:?}", r.error);
        let events = w.store.events(&r.id, 0, 10_000).unwrap();
        assert!(!events.iter().any(|e| e.message.starts_with("only_if")));
    }
    w.shutdown.cancel();
    w.served.await.unwrap();
}
