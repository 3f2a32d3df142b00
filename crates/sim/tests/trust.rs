//! Trust paths on the sim provider with a paused clock (issue 10): blame
//! falls on the image only for what the image did, a lost cloud pauses
//! rather than fails, a cancel stops a roll gracefully, a resumed roll goes
//! on where it stood, one driver per run, and cleanup fails closed.

use repave_core::config::Pipeline;
use repave_core::duration::HumanDuration;
use repave_core::ids::{Clock, ImageId, Timestamp};
use repave_core::provider::{tag, Images, Parameters};
use repave_engine::{Engine, EngineError, EngineEvent, EngineOptions, Observer, RunOutcome};
use repave_sim::{pipeline, Faults, Latencies, SimClock, SimProvider};
use repave_store::{RunKind, Store};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const GROUP: &str = "web";

type Hook = Box<dyn Fn(&EngineEvent) + Send + Sync>;

/// Runs `hook` on every engine event and keeps the roll ticks.
struct Watch {
    clock: Arc<SimClock>,
    hook: Mutex<Option<Hook>>,
    ticks: Mutex<Vec<(Timestamp, repave_core::rollout::RollStatus)>>,
}

impl Observer for Watch {
    fn on_event(&self, e: &EngineEvent) {
        if let EngineEvent::RollTick { status, .. } = e {
            self.ticks.lock().unwrap().push((self.clock.now(), status.clone()));
        }
        if let Some(h) = self.hook.lock().unwrap().as_ref() {
            h(e);
        }
    }
}

struct Sim {
    provider: Arc<SimProvider>,
    store: Arc<Store>,
    clock: Arc<SimClock>,
    watch: Arc<Watch>,
    base: ImageId,
}

impl Sim {
    fn new(size: u32, faults: Faults) -> Sim {
        let clock = Arc::new(SimClock::new(Timestamp(1_767_578_400_000)));
        let provider = Arc::new(SimProvider::new(clock.clone(), Latencies::default(), faults, 17));
        let base = provider.add_image("golden");
        provider.add_group(GROUP, "latestAmi", &base, size);
        let watch = Arc::new(Watch {
            clock: clock.clone(),
            hook: Mutex::new(None),
            ticks: Mutex::new(vec![]),
        });
        Sim {
            provider,
            store: Arc::new(Store::open_in_memory().unwrap()),
            clock,
            watch,
            base,
        }
    }

    /// An engine on the shared store, with its own cancel token.
    fn engine(&self, cancel: CancellationToken) -> Engine {
        let opts = EngineOptions {
            tick: Duration::from_secs(5),
            poll: Duration::from_secs(5),
            roll_cutoff: None,
            lease_ttl: Duration::from_secs(30 * 86_400),
        };
        Engine::new(
            self.provider.clone(),
            self.store.clone(),
            self.clock.clone(),
            self.watch.clone(),
            cancel,
            opts,
        )
    }

    fn on(&self, hook: impl Fn(&EngineEvent) + Send + Sync + 'static) {
        *self.watch.hook.lock().unwrap() = Some(Box::new(hook));
    }

    async fn status_of(&self, image: &ImageId) -> Option<String> {
        self.provider
            .describe_image(image)
            .await
            .unwrap()
            .tags
            .get(tag::STATUS)
            .cloned()
    }

    fn on_base(&self) -> u32 {
        self.provider
            .images_in_group(GROUP)
            .get(&self.base)
            .copied()
            .unwrap_or(0)
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

async fn start(_s: &Sim, e: &Engine, p: &Pipeline) -> RunOutcome {
    e.start("web", p, RunKind::Run).await.expect("run starts")
}

/// Cancel when `step` starts.
fn cancel_at_step(s: &Sim, step: &'static str, cancel: CancellationToken) {
    s.on(move |e| {
        if let EngineEvent::StepStarted { step: st, .. } = e {
            if st == step {
                cancel.cancel();
            }
        }
    });
}

#[tokio::test(start_paused = true)]
async fn a_cloud_lost_mid_roll_pauses_and_resume_finishes() {
    let s = Sim::new(6, Faults::default());
    let provider = s.provider.clone();
    let fired = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let f = fired.clone();
    s.on(move |e| {
        if let EngineEvent::RollTick { replaced, .. } = e {
            if *replaced >= 2 && !f.swap(true, std::sync::atomic::Ordering::SeqCst) {
                provider.set_unreachable(true);
            }
        }
    });
    let out = start(&s, &s.engine(CancellationToken::new()), &policy()).await;
    assert_eq!(out.state, "paused", "{:?}", out.summary.error);
    let err = out.summary.error.clone().unwrap_or_default();
    assert!(
        err.contains("not because of the image") && err.contains("unreachable"),
        "{err}"
    );
    let image = out.summary.new_image.clone().expect("published");
    s.provider.set_unreachable(false);
    assert_eq!(s.status_of(&image).await, None, "a lost cloud is not the image's fault");
    // No automatic rollback: the parameter still names the new image.
    assert_eq!(
        s.provider.get_parameter("latestAmi").await.unwrap().value,
        image.as_str()
    );

    s.on(|_| {});
    let resumed = s
        .engine(CancellationToken::new())
        .resume(&out.run)
        .await
        .expect("resume");
    assert_eq!(resumed.state, "succeeded", "{:?}", resumed.summary.error);
    assert_eq!(s.on_base(), 0);
    assert_eq!(s.provider.desired(GROUP), 6, "back at base capacity");
}

#[tokio::test(start_paused = true)]
async fn cancel_during_the_image_test_leaves_the_image_unpublished_not_bad() {
    let s = Sim::new(4, Faults::default());
    let cancel = CancellationToken::new();
    cancel_at_step(&s, "test_image", cancel.clone());
    let out = start(&s, &s.engine(cancel), &policy()).await;
    assert_eq!(out.state, "cancelled", "{:?}", out.summary.error);
    let mut tags = repave_core::provider::Tags::new();
    tags.insert(tag::RUN.into(), out.run.to_string());
    tags.insert(tag::ROLE.into(), tag::ROLE_IMAGE.into());
    let images = s.provider.list_images(&tags).await.unwrap();
    assert_eq!(images.len(), 1);
    assert_eq!(
        images[0].tags.get(tag::STATUS).map(String::as_str),
        Some(tag::STATUS_UNPUBLISHED),
        "cancelled: not bad, but unused"
    );
    assert_eq!(s.on_base(), 4, "nothing rolled");
}

#[tokio::test(start_paused = true)]
async fn cancel_during_verify_pauses_without_rolling_back() {
    let s = Sim::new(4, Faults::default());
    let cancel = CancellationToken::new();
    cancel_at_step(&s, "verify", cancel.clone());
    let out = start(&s, &s.engine(cancel), &policy()).await;
    assert_eq!(out.state, "paused", "{:?}", out.summary.error);
    assert!(
        !out.steps.iter().any(|st| st.name.starts_with("rollback")),
        "{:?}",
        out.steps
    );
    let image = out.summary.new_image.clone().expect("image");
    assert_eq!(s.status_of(&image).await, None);
    s.on(|_| {});
    let resumed = s
        .engine(CancellationToken::new())
        .resume(&out.run)
        .await
        .expect("resume");
    assert_eq!(resumed.state, "succeeded", "{:?}", resumed.summary.error);
}

/// A cancel mid-roll stops it gracefully: no replacement starts after the
/// cancel, the ones in flight finish, capacity returns to base, then paused.
#[tokio::test(start_paused = true)]
async fn cancel_mid_roll_finishes_what_is_in_flight_then_pauses() {
    let s = Sim::new(10, Faults::default());
    let cancel = CancellationToken::new();
    let c = cancel.clone();
    let at = Arc::new(Mutex::new(None::<Timestamp>));
    let (clock, a) = (s.clock.clone(), at.clone());
    s.on(move |e| {
        if let EngineEvent::RollTick { replaced, .. } = e {
            if *replaced >= 3 && !c.is_cancelled() {
                *a.lock().unwrap() = Some(clock.now());
                c.cancel();
            }
        }
    });
    let out = start(&s, &s.engine(cancel), &policy()).await;
    assert_eq!(out.state, "paused", "{:?}", out.summary.error);
    let cancelled_at = at.lock().unwrap().expect("cancelled mid-roll");
    let ticks = s.watch.ticks.lock().unwrap().clone();
    let at_cancel = ticks
        .iter()
        .rev()
        .find(|(t, _)| *t <= cancelled_at)
        .expect("tick")
        .1
        .clone();
    let last = ticks.last().expect("ticks").1.clone();
    // Settled: nothing draining, back at base, and no more new instances
    // than were started when the cancel came.
    assert_eq!((last.draining, last.live), (0, 10), "{last:?}");
    assert!(
        last.new <= at_cancel.new + (at_cancel.live - at_cancel.base_desired),
        "started new replacements after the cancel: {at_cancel:?} -> {last:?}"
    );
    assert_eq!(s.provider.desired(GROUP), 10);
    s.on(|_| {});
    let resumed = s
        .engine(CancellationToken::new())
        .resume(&out.run)
        .await
        .expect("resume");
    assert_eq!(resumed.state, "succeeded", "{:?}", resumed.summary.error);
    assert_eq!(s.on_base(), 0);
}

/// A roll resumed after its canary stage does not repeat it.
#[tokio::test(start_paused = true)]
async fn a_resumed_roll_keeps_its_canary_stage() {
    let s = Sim::new(8, Faults::default());
    let mut p = policy();
    p.rollout.canary = 1;
    p.rollout.bake_time = HumanDuration::from_secs(3600);
    let cancel = CancellationToken::new();
    let c = cancel.clone();
    s.on(move |e| {
        if let EngineEvent::RollTick { status, .. } = e {
            if status.stage >= 1 {
                c.cancel();
            }
        }
    });
    let out = start(&s, &s.engine(cancel), &p).await;
    assert_eq!(out.state, "paused", "{:?}", out.summary.error);
    s.on(|_| {});
    let before = s.clock.now();
    let resumed = s
        .engine(CancellationToken::new())
        .resume(&out.run)
        .await
        .expect("resume");
    assert_eq!(resumed.state, "succeeded", "{:?}", resumed.summary.error);
    let ticks = s.watch.ticks.lock().unwrap().clone();
    let after_resume: Vec<_> = ticks.iter().filter(|(t, _)| *t >= before).collect();
    assert!(
        after_resume.iter().all(|(_, st)| st.stage >= 1),
        "the canary stage came back"
    );
    assert!(
        !after_resume
            .iter()
            .any(|(_, st)| st.waiting.as_deref().is_some_and(|w| w.contains("canary"))),
        "the canary bake was waited again"
    );
    assert!(
        s.clock.now().since(before) < Duration::from_secs(3600),
        "no second hour-long bake"
    );
}

/// A group whose roll is paused takes no new run; the engine names the
/// paused run. One driver per run inside one process too.
#[tokio::test(start_paused = true)]
async fn a_paused_group_refuses_a_new_run_and_a_driven_run_a_second_driver() {
    let s = Sim::new(4, Faults::default());
    let p = policy();
    let cancel = CancellationToken::new();
    let c = cancel.clone();
    s.on(move |e| {
        if let EngineEvent::RollTick { replaced, .. } = e {
            if *replaced >= 1 {
                c.cancel();
            }
        }
    });
    let out = start(&s, &s.engine(cancel), &p).await;
    assert_eq!(out.state, "paused", "{:?}", out.summary.error);
    s.on(|_| {});
    match s
        .engine(CancellationToken::new())
        .start("web", &policy(), RunKind::Run)
        .await
    {
        Err(EngineError::Unfinished { run, state, .. }) => {
            assert_eq!((run.as_str(), state.as_str()), (out.run.as_str(), "paused"))
        }
        other => panic!("a new run on a paused group: {other:?}"),
    }

    // Two resumes at once in one process: exactly one drives.
    let (e1, e2) = (s.engine(CancellationToken::new()), s.engine(CancellationToken::new()));
    let (a, b) = tokio::join!(e1.resume(&out.run), e2.resume(&out.run));
    let refused = [&a, &b]
        .iter()
        .filter(|r| matches!(r, Err(EngineError::Leased { .. })))
        .count();
    assert_eq!(refused, 1, "{a:?} / {b:?}");
    let ran = [a, b].into_iter().find_map(|r| r.ok()).expect("one resumed");
    assert_eq!(ran.state, "succeeded", "{:?}", ran.summary.error);
}

/// `rollback` never publishes an image marked bad, and `run` refuses a
/// golden parameter that points at one.
#[tokio::test(start_paused = true)]
async fn a_bad_image_is_never_published_again() {
    let s = Sim::new(
        4,
        Faults {
            bad_image: true,
            ..Faults::default()
        },
    );
    let mut p = policy();
    p.rollout.health_grace = Some(HumanDuration::from_secs(600));
    let out = start(&s, &s.engine(CancellationToken::new()), &p).await;
    assert_eq!(out.state, "rolled_back", "{:?}", out.summary.error);
    let bad = out.summary.new_image.clone().expect("image");
    assert_eq!(s.status_of(&bad).await.as_deref(), Some(tag::STATUS_BAD));
    // The parameter went back to the golden image: its history is
    // golden, bad, golden. A rollback now has nothing good to go to.
    let e = s.engine(CancellationToken::new());
    let back = e.start("web", &p, RunKind::Rollback).await.expect("rollback runs");
    assert_eq!(back.state, "failed");
    let err = back.summary.error.unwrap_or_default();
    assert!(
        err.contains("no earlier good image") && err.contains("marked bad"),
        "{err}"
    );
    assert_eq!(
        s.provider.get_parameter("latestAmi").await.unwrap().value,
        s.base.as_str()
    );
    // Someone points the parameter at the bad image by hand.
    s.provider.put_parameter("latestAmi", bad.as_str(), None).await.unwrap();
    let refused = e.start("web", &p, RunKind::Run).await.expect("run");
    assert_eq!(refused.state, "failed");
    assert!(refused.summary.error.unwrap_or_default().contains("marked bad"));
    assert!(
        refused.steps.iter().all(|st| st.name == "resolve"),
        "{:?}",
        refused.steps
    );
}

/// A reference source that cannot be read stops gc and retention before
/// they delete anything.
#[tokio::test(start_paused = true)]
async fn cleanup_fails_closed_when_a_reference_cannot_be_read() {
    let s = Sim::new(2, Faults::default());
    let mut p = policy();
    p.retention.keep = 1;
    for _ in 0..3 {
        let out = start(&s, &s.engine(CancellationToken::new()), &p).await;
        assert_eq!(out.state, "succeeded", "{:?}", out.summary.error);
    }
    let mut tags = repave_core::provider::Tags::new();
    tags.insert(tag::ROLE.into(), tag::ROLE_IMAGE.into());
    let count = || async { s.provider.list_images(&tags).await.unwrap().len() };
    let before = count().await;
    s.provider.fail_operation("parameter_history", true);
    let pipelines = vec![("web".to_string(), p.clone())];
    let gc = repave_engine::gc(s.provider.as_ref(), &s.store, &pipelines, s.clock.now(), false).await;
    assert!(gc.is_err(), "gc went on without the parameter's history: {gc:?}");
    assert_eq!(count().await, before, "nothing deleted");
    s.provider.fail_operation("parameter_history", false);
    s.provider.fail_operation("referenced_images", true);
    let out = start(&s, &s.engine(CancellationToken::new()), &p).await;
    assert_eq!(out.state, "failed", "retention must fail closed");
    assert!(out.summary.error.unwrap_or_default().contains("referenced_images"));
    assert_eq!(count().await, before + 1, "the new image, and nothing deleted");
}
