//! Engine scenarios on the sim provider with a paused clock: the real
//! executor and planner, virtual hours in milliseconds.

use repave_core::config::{HeldInstances, Pipeline};
use repave_core::duration::HumanDuration;
use repave_core::ids::{Clock, ImageId, Timestamp};
use repave_core::provider::Groups;
use repave_engine::{Engine, EngineEvent, EngineOptions, Observer, RunOutcome};
use repave_sim::{pipeline, Faults, Latencies, SimClock, SimProvider};
use repave_store::{RunKind, Store};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const GROUP: &str = "web";

/// Records every roll tick with its virtual time.
struct Ticks {
    clock: Arc<SimClock>,
    seen: Mutex<Vec<(Timestamp, repave_core::rollout::RollStatus)>>,
}

impl Observer for Ticks {
    fn on_event(&self, e: &EngineEvent) {
        if let EngineEvent::RollTick { status, .. } = e {
            self.seen.lock().unwrap().push((self.clock.now(), status.clone()));
        }
    }
}

struct Sim {
    provider: Arc<SimProvider>,
    engine: Arc<Engine>,
    ticks: Arc<Ticks>,
    base: ImageId,
}

fn sim(size: u32, faults: Faults) -> Sim {
    let clock = Arc::new(SimClock::new(Timestamp(1_767_578_400_000)));
    let provider = Arc::new(SimProvider::new(clock.clone(), Latencies::default(), faults, 11));
    let base = provider.add_image("golden");
    provider.add_group(GROUP, "latestAmi", &base, size);
    let ticks = Arc::new(Ticks {
        clock: clock.clone(),
        seen: Mutex::new(vec![]),
    });
    let store = Arc::new(Store::open_in_memory().unwrap());
    let opts = EngineOptions {
        tick: Duration::from_secs(5),
        poll: Duration::from_secs(5),
        roll_cutoff: None,
        lease_ttl: Duration::from_secs(30 * 86_400),
    };
    let engine = Arc::new(Engine::new(
        provider.clone(),
        store,
        clock,
        ticks.clone(),
        CancellationToken::new(),
        opts,
    ));
    Sim {
        provider,
        engine,
        ticks,
        base,
    }
}

fn policy() -> Pipeline {
    let mut p = pipeline(GROUP, "latestAmi");
    p.builder.platform = repave_core::patch::PlatformChoice::Family(repave_core::patch::OsFamily::Windows);
    p.rollout.min_healthy_percent = 100;
    p.rollout.max_healthy_percent = 150;
    p.rollout.warmup = Some(HumanDuration::from_secs(60));
    p.rollout.health_grace = Some(HumanDuration::from_secs(1800));
    p.rollout.timeout = HumanDuration::from_secs(86_400);
    p.test.timeout = HumanDuration::from_secs(1800);
    p
}

async fn run(s: &Sim, p: &Pipeline) -> RunOutcome {
    s.engine.start("web", p, RunKind::Run).await.expect("run starts")
}

fn on_base(s: &Sim) -> u32 {
    s.provider.images_in_group(GROUP).get(&s.base).copied().unwrap_or(0)
}

fn live(s: &Sim) -> u32 {
    s.provider.images_in_group(GROUP).values().sum()
}

#[tokio::test(start_paused = true)]
async fn plain_roll_succeeds_and_keeps_the_floor() {
    let s = sim(12, Faults::default());
    let out = run(&s, &policy()).await;
    assert_eq!(out.state, "succeeded", "{:?}", out.summary.error);
    let roll = out.summary.roll.expect("roll report");
    assert!(
        roll.min_in_service >= roll.floor,
        "{} < {}",
        roll.min_in_service,
        roll.floor
    );
    assert!(roll.max_live <= roll.max_total);
    assert_eq!(on_base(&s), 0);
    assert_eq!(live(&s), 12);
}

#[tokio::test(start_paused = true)]
async fn canary_failure_rolls_back_after_the_canary_only() {
    let s = sim(
        10,
        Faults {
            bad_image: true,
            ..Faults::default()
        },
    );
    let mut p = policy();
    p.rollout.canary = 1;
    p.rollout.max_unhealthy_new = 5;
    let out = run(&s, &p).await;
    assert_eq!(out.state, "rolled_back", "{:?}", out.summary.error);
    let err = out.summary.error.clone().unwrap_or_default();
    assert!(err.contains("canary failed"), "{err}");
    // Exactly one instance was ever launched on the bad image.
    let launched = s.provider.launched_in_group(GROUP);
    let bad: u32 = launched.iter().filter(|(img, _)| **img != s.base).map(|(_, n)| n).sum();
    assert_eq!(bad, 1, "{launched:?}");
    assert_eq!(on_base(&s), 10, "fleet back on the old image");
}

#[tokio::test(start_paused = true)]
async fn checkpoint_pauses_for_its_time() {
    let s = sim(10, Faults::default());
    let mut p = policy();
    p.rollout.checkpoints = vec![50];
    p.rollout.checkpoint_pause = HumanDuration::from_secs(1200);
    let out = run(&s, &p).await;
    assert_eq!(out.state, "succeeded", "{:?}", out.summary.error);
    let seen = s.ticks.seen.lock().unwrap();
    let waiting: Vec<&(Timestamp, _)> = seen
        .iter()
        .filter(|(_, st)| st.waiting.as_deref().is_some_and(|w| w.contains("checkpoint 50%")))
        .collect();
    let (first, last) = (waiting.first().expect("paused").0, waiting.last().unwrap().0);
    assert!(
        last.since(first) >= Duration::from_secs(1190),
        "paused {:?}",
        last.since(first)
    );
    // While paused, exactly half the fleet was new and nothing was in flight.
    for (_, st) in &waiting {
        assert_eq!((st.new, st.old, st.draining), (5, 5, 0), "{st:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn protected_wait_stalls_then_times_out_with_reason() {
    let s = sim(6, Faults::default());
    let first = s.provider.describe_group(GROUP).await.unwrap().members[0].id.clone();
    s.provider.set_instance_protection(GROUP, &first, true).await.unwrap();
    let mut p = policy();
    p.rollout.protected = HeldInstances::Wait;
    p.rollout.hold_timeout = HumanDuration::from_secs(900);
    p.rollout.auto_rollback = false;
    let out = run(&s, &p).await;
    // Waiting out a held instance is nothing the image did: the run pauses
    // (resumable once the instance is released) and the image stays good.
    assert_eq!(out.state, "paused");
    let err = out.summary.error.unwrap_or_default();
    assert!(
        err.contains("timed out after 900s") && err.contains(first.as_str()) && err.contains("hold_timeout"),
        "{err}"
    );
    let image = out.summary.new_image.clone().expect("published image");
    let img = repave_core::provider::Images::describe_image(s.provider.as_ref(), &image)
        .await
        .unwrap();
    assert_eq!(img.tags.get(repave_core::provider::tag::STATUS), None, "not marked bad");
    // Everything else was replaced while it waited.
    assert_eq!(on_base(&s), 1);
    let seen = s.ticks.seen.lock().unwrap();
    assert!(seen.iter().any(|(_, st)| st.held == vec![first.clone()]));
}

#[tokio::test(start_paused = true)]
async fn scale_out_mid_roll_lands_on_the_new_image() {
    let s = sim(10, Faults::default());
    let p = policy();
    let provider = s.provider.clone();
    let engine = s.engine.clone();
    let run = tokio::spawn(async move { engine.start("web", &p, RunKind::Run).await });
    // The bake takes over an hour; scale out once the roll is under way.
    let mut scaled = false;
    while !run.is_finished() {
        tokio::time::sleep(Duration::from_secs(30)).await;
        let new = provider.images_in_group(GROUP).len() > 1;
        if new && !scaled {
            provider.autoscale(GROUP, provider.desired(GROUP) + 4);
            scaled = true;
        }
    }
    let out = run.await.unwrap().unwrap();
    assert!(scaled);
    assert_eq!(out.state, "succeeded", "{:?}", out.summary.error);
    assert_eq!(on_base(&s), 0);
    assert_eq!(live(&s), 14);
    assert_eq!(s.provider.desired(GROUP), 14);
}

#[tokio::test(start_paused = true)]
async fn scale_in_mid_roll_takes_old_first() {
    let s = sim(12, Faults::default());
    let mut p = policy();
    p.rollout.min_healthy_percent = 90;
    p.rollout.max_healthy_percent = 110;
    let provider = s.provider.clone();
    let engine = s.engine.clone();
    let base = s.base.clone();
    let run = tokio::spawn(async move { engine.start("web", &p, RunKind::Run).await });
    let mut new_before = None;
    while !run.is_finished() {
        tokio::time::sleep(Duration::from_secs(30)).await;
        let by_image = provider.images_in_group(GROUP);
        let new: u32 = by_image.iter().filter(|(i, _)| **i != base).map(|(_, n)| n).sum();
        if new > 0 && new_before.is_none() {
            new_before = Some(new);
            provider.autoscale(GROUP, provider.desired(GROUP) - 4);
            let after: u32 = provider
                .images_in_group(GROUP)
                .iter()
                .filter(|(i, _)| **i != base)
                .map(|(_, n)| n)
                .sum();
            assert_eq!(after, new, "scale-in took a new instance");
        }
    }
    let out = run.await.unwrap().unwrap();
    assert!(new_before.is_some());
    assert_eq!(out.state, "succeeded", "{:?}", out.summary.error);
    assert_eq!(on_base(&s), 0);
    assert_eq!(live(&s), 8);
}

/// A 30-instance roll (90 / 110 %) cut off after 20 minutes: paused.
async fn paused_at_cutoff(s: &Sim) -> RunOutcome {
    let mut p = policy();
    p.rollout.min_healthy_percent = 90;
    p.rollout.max_healthy_percent = 110;
    p.rollout.window_cutoff = Some(HumanDuration::from_secs(1200));
    let out = run(s, &p).await;
    assert_eq!(out.state, "paused", "{:?}", out.summary.error);
    out
}

/// Resume (one window each) until the run ends; `each` sees the old
/// instances left before the window.
async fn resume_until_done(s: &Sim, out: &RunOutcome, mut each: impl FnMut(&Sim, u32)) -> String {
    let mut state = out.state.clone();
    let mut resumes = 0;
    while state == "paused" {
        resumes += 1;
        assert!(resumes < 20, "never finished");
        let before = on_base(s);
        state = s.engine.resume(&out.run).await.expect("resume").state;
        each(s, before);
    }
    state
}

#[tokio::test(start_paused = true)]
async fn cutoff_pauses_then_resume_finishes() {
    let s = sim(30, Faults::default());
    let out = paused_at_cutoff(&s).await;
    let left = on_base(&s);
    assert!(left > 0 && left < 30, "{left} still old");
    assert_eq!(live(&s), 30, "paused at base capacity");
    let state = resume_until_done(&s, &out, |s, before| {
        assert!(on_base(s) < before, "a window made no progress")
    })
    .await;
    assert_eq!(state, "succeeded");
    assert_eq!(on_base(&s), 0);
    assert_eq!(live(&s), 30);
}

#[tokio::test(start_paused = true)]
async fn scale_out_while_paused_is_kept_by_the_resumed_roll() {
    let s = sim(30, Faults::default());
    let out = paused_at_cutoff(&s).await;
    // The autoscaler adds 3 while the roll waits for its next window.
    assert_eq!(s.provider.desired(GROUP), 30);
    s.provider.autoscale(GROUP, 33);
    let state = resume_until_done(&s, &out, |s, _| {
        assert!(s.provider.desired(GROUP) >= 33, "the roll undid the scale-out")
    })
    .await;
    assert_eq!(state, "succeeded");
    assert_eq!(on_base(&s), 0);
    assert_eq!((s.provider.desired(GROUP), live(&s)), (33, 33));
}

#[tokio::test(start_paused = true)]
async fn throttling_launch_failures_and_slow_drains_are_survived() {
    let faults = Faults {
        throttle_percent: 3.0,
        launch_failure_percent: 10.0,
        slow_drain_percent: 20.0,
        ..Faults::default()
    };
    let s = sim(10, faults);
    let out = run(&s, &policy()).await;
    assert_eq!(out.state, "succeeded", "{:?}", out.summary.error);
    assert_eq!(on_base(&s), 0);
    assert_eq!(live(&s), 10);
}

#[tokio::test(start_paused = true)]
async fn patch_failure_publishes_nothing_and_leaves_no_builder() {
    let s = sim(
        4,
        Faults {
            patch_failure: true,
            ..Faults::default()
        },
    );
    let out = run(&s, &policy()).await;
    assert_eq!(out.state, "failed");
    assert!(
        out.summary
            .error
            .clone()
            .unwrap_or_default()
            .contains("updates failed to install"),
        "{:?}",
        out.summary.error
    );
    assert!(!out.steps.iter().any(|st| st.name == "publish"));
    assert_eq!(on_base(&s), 4, "fleet untouched");
    let calls = s.provider.api_calls();
    assert_eq!(
        calls.get("terminate_instance"),
        Some(&1),
        "builder terminated: {calls:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn never_healthy_new_instances_abort_and_roll_back() {
    let s = sim(
        8,
        Faults {
            never_healthy_percent: 100.0,
            ..Faults::default()
        },
    );
    let mut p = policy();
    // The test instance is one of the never-healthy ones: skip the test to
    // let the roll meet them.
    p.test.enabled = false;
    let out = run(&s, &p).await;
    assert_eq!(out.state, "rolled_back", "{:?}", out.summary.error);
    assert!(out
        .summary
        .error
        .unwrap_or_default()
        .contains("not healthy within 1800s"));
    assert_eq!(on_base(&s), 8);
}

#[tokio::test(start_paused = true)]
async fn native_strategy_replaces_the_fleet_in_lock_step_batches() {
    let s = sim(10, Faults::default());
    let mut p = policy();
    p.rollout.strategy = repave_core::config::Strategy::Native;
    p.rollout.min_healthy_percent = 80;
    let out = run(&s, &p).await;
    assert_eq!(out.state, "succeeded", "{:?}", out.summary.error);
    let roll = out.summary.roll.expect("roll report");
    assert!(roll.seconds > 0.0);
    assert_eq!(roll.replaced, 10);
    assert_eq!(on_base(&s), 0, "every instance replaced");
    assert_eq!(live(&s), 10);
    // Watched and reported in the same run record.
    let events = s.engine.store().events(&out.run, 0, 10_000).unwrap();
    let native: Vec<&str> = events
        .iter()
        .filter(|e| e.message.starts_with("native roll"))
        .map(|e| e.message.as_str())
        .collect();
    assert!(native.iter().any(|m| m.contains("started")), "{native:?}");
    assert!(native.iter().any(|m| m.contains("Successful 100%")), "{native:?}");
    // The engine's own planner did not drive it: no roll ticks.
    assert!(s.ticks.seen.lock().unwrap().is_empty());
}
