//! Whole runs in virtual time: the real engine, an in-memory store and the
//! sim provider on a paused tokio clock.

use crate::clock::SimClock;
use crate::latency::{Faults, Latencies};
use crate::lockstep::lockstep_roll_seconds;
use crate::provider::SimProvider;
use repave_core::config::Pipeline;
use repave_core::duration::HumanDuration;
use repave_core::ids::Timestamp;
use repave_engine::{Engine, EngineOptions, NullObserver, RunOutcome};
use repave_store::{RunKind, Store};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// 2026-01-05 02:00 UTC: a Monday night maintenance window.
const EPOCH_MS: i64 = 1_767_578_400_000;

/// What to simulate besides the pipeline.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// Instances in total (split evenly across `groups`).
    pub fleet: u32,
    /// Groups rolled at once, each its own pipeline run (1: the pipeline's).
    pub groups: u32,
    pub seed: u64,
    pub latencies: Latencies,
    pub faults: Faults,
    /// The maintenance window the bake and roll must fit in.
    pub window: Duration,
    /// The engine's observe/plan/act period (virtual).
    pub tick: Duration,
    /// Every group's calls wait for one shared request budget of the
    /// account: this percent of each AWS bucket (None: no budget).
    pub budget_percent: Option<u32>,
}

impl SimOptions {
    /// One group, no faults, a 4 h window, a 5 s engine tick.
    pub fn new(fleet: u32, seed: u64, latencies: Latencies) -> Self {
        Self {
            fleet,
            groups: 1,
            seed,
            latencies,
            faults: Faults::default(),
            window: Duration::from_secs(4 * 3600),
            tick: Duration::from_secs(5),
            budget_percent: None,
        }
    }
}

/// The predicted timeline of one run.
#[derive(Debug, Clone, Serialize, Default)]
pub struct SimReport {
    /// Final run state ("succeeded", "rolled_back", "failed", "paused").
    pub state: String,
    pub error: Option<String>,
    pub instances: u32,
    pub groups: u32,
    pub seed: u64,
    /// resolve → image tested, in seconds.
    pub bake_seconds: f64,
    pub roll_seconds: f64,
    pub run_seconds: f64,
    pub lower_bound_seconds: f64,
    /// lower_bound_seconds / roll_seconds.
    pub efficiency: f64,
    /// Lowest healthy in-service count seen during the roll (summed over
    /// groups) and the floor the policy promises.
    pub min_in_service: u32,
    pub floor: u32,
    pub max_live: u32,
    pub max_total: u32,
    pub concurrency: u32,
    pub replaced: u32,
    pub window_seconds: f64,
    /// bake + roll ≤ window.
    pub fits_window: bool,
    /// The roll exceeds `rollout.timeout` (the real run would fail there).
    pub exceeds_roll_timeout: bool,
    /// Timeouts in the pipeline shorter than the simulated latencies need
    /// (the likely cause when the predicted run fails).
    pub warnings: Vec<String>,
    pub lockstep_roll_seconds: f64,
    /// 1 − roll / lock-step.
    pub faster_than_lockstep: f64,
    pub api_calls: u64,
    pub api_calls_by_op: BTreeMap<String, u64>,
    /// API calls per second of the account (all groups share it), peak and
    /// mean, per AWS bucket.
    pub api_rates: crate::rate::ApiRates,
    /// Every call: (virtual seconds, AWS bucket).
    #[serde(skip)]
    pub call_log: Vec<(f64, repave_core::budget::ApiBucket)>,
    /// Steps of the (first) run with their virtual durations.
    pub steps: Vec<StepSeconds>,
    #[serde(skip)]
    pub outcomes: Vec<RunOutcome>,
}

/// One step of the run and how long it took (virtual seconds).
#[derive(Debug, Clone, Serialize, Default)]
pub struct StepSeconds {
    pub name: String,
    pub state: String,
    pub seconds: f64,
}

/// A minimal pipeline (for benches and tests): group and parameter named,
/// everything else at its defaults.
pub fn pipeline(group: &str, parameter: &str) -> Pipeline {
    serde_json::from_value(serde_json::json!({ "provider": "sim", "group": group, "parameter": parameter }))
        .expect("minimal pipeline deserializes")
}

/// Run `pipeline` on a simulated fleet in its own paused-clock runtime.
/// Blocking: call it from a plain thread (or `spawn_blocking`).
pub fn simulate(pipeline: &Pipeline, opts: &SimOptions) -> SimReport {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("tokio runtime");
    rt.block_on(simulate_paused(pipeline, opts))
}

/// [`simulate`] inside a runtime whose clock is already paused.
pub async fn simulate_paused(pipeline: &Pipeline, opts: &SimOptions) -> SimReport {
    let clock = Arc::new(SimClock::new(Timestamp(EPOCH_MS)));
    let mut provider = SimProvider::new(clock.clone(), opts.latencies.clone(), opts.faults.clone(), opts.seed);
    if let Some(percent) = opts.budget_percent {
        provider = provider.with_budget(percent);
    }
    let provider = Arc::new(provider);
    let image = provider.add_image("golden");
    let groups = opts.groups.max(1);
    let per_group = opts.fleet.div_ceil(groups);
    let mut runs = Vec::new();
    for i in 0..groups {
        let mut p = pipeline.clone();
        if groups > 1 {
            p.group = format!("{}-{i:03}", pipeline.group);
            p.parameter = format!("{}-{i:03}", pipeline.parameter);
        }
        let size = per_group.min(opts.fleet - (per_group * i).min(opts.fleet));
        provider.add_group(&p.group, &p.parameter, &image, size);
        // Measure the roll however long it takes; the report says whether
        // the configured timeout would have cut it.
        p.rollout.timeout = HumanDuration::from_secs(30 * 86_400);
        runs.push((format!("sim-{i:03}"), p, size));
    }
    let store = match Store::open_in_memory() {
        Ok(s) => Arc::new(s),
        Err(e) => {
            return SimReport {
                state: "failed".into(),
                error: Some(e.to_string()),
                ..Default::default()
            }
        }
    };
    // Nobody competes for the lease here; the engine renews it only between
    // steps, and a simulated patch step outlasts any short TTL.
    let options = EngineOptions {
        tick: opts.tick,
        poll: opts.tick,
        roll_cutoff: None,
        lease_ttl: Duration::from_secs(30 * 86_400),
    };
    let engine = Arc::new(Engine::new(
        provider.clone(),
        store,
        clock.clone(),
        Arc::new(NullObserver),
        CancellationToken::new(),
        options,
    ));
    let mut set = tokio::task::JoinSet::new();
    for (name, p, _) in runs.clone() {
        let engine = engine.clone();
        set.spawn(async move { engine.start(&name, &p, RunKind::Run).await });
    }
    let mut outcomes = Vec::new();
    let mut errors = Vec::new();
    while let Some(r) = set.join_next().await {
        match r {
            Ok(Ok(o)) => outcomes.push(o),
            Ok(Err(e)) => errors.push(e.to_string()),
            Err(e) => errors.push(format!("run task failed: {e}")),
        }
    }
    outcomes.sort_by(|a, b| a.pipeline.cmp(&b.pipeline));
    report(pipeline, opts, &runs, outcomes, errors, &provider)
}

fn report(
    pipeline: &Pipeline,
    opts: &SimOptions,
    runs: &[(String, Pipeline, u32)],
    outcomes: Vec<RunOutcome>,
    mut errors: Vec<String>,
    provider: &SimProvider,
) -> SimReport {
    let mut r = SimReport {
        instances: opts.fleet,
        groups: opts.groups.max(1),
        seed: opts.seed,
        window_seconds: opts.window.as_secs_f64(),
        ..Default::default()
    };
    let mut states: Vec<&str> = outcomes.iter().map(|o| o.state.as_str()).collect();
    states.sort_unstable();
    states.dedup();
    r.state = match (states.as_slice(), errors.is_empty()) {
        ([one], true) => one.to_string(),
        ([], _) => "failed".into(),
        _ => "mixed".into(),
    };
    for o in &outcomes {
        let bake: f64 = o
            .steps
            .iter()
            .take_while(|s| s.name != "publish")
            .map(|s| s.seconds)
            .sum();
        let run: f64 = o.steps.iter().map(|s| s.seconds).sum();
        r.bake_seconds = r.bake_seconds.max(bake);
        r.run_seconds = r.run_seconds.max(run);
        if let Some(e) = &o.summary.error {
            errors.push(format!("{}: {e}", o.pipeline));
        }
        if let Some(roll) = &o.summary.roll {
            r.roll_seconds = r.roll_seconds.max(roll.seconds);
            r.lower_bound_seconds = r.lower_bound_seconds.max(roll.lower_bound_seconds);
            r.min_in_service += roll.min_in_service;
            r.floor += roll.floor;
            r.max_live += roll.max_live;
            r.max_total += roll.max_total;
            r.concurrency += roll.concurrency;
            r.replaced += roll.replaced;
        }
    }
    errors.dedup();
    r.error = (!errors.is_empty()).then(|| errors.join("; "));
    r.efficiency = if r.roll_seconds > 0.0 {
        r.lower_bound_seconds / r.roll_seconds
    } else {
        0.0
    };
    r.fits_window = r.state == "succeeded" && r.bake_seconds + r.roll_seconds <= r.window_seconds;
    r.exceeds_roll_timeout = r.roll_seconds > pipeline.rollout.timeout.get().as_secs_f64();
    let warmup = health(pipeline, &opts.latencies).warmup;
    r.lockstep_roll_seconds = runs
        .iter()
        .map(|(_, _, size)| {
            lockstep_roll_seconds(
                *size,
                pipeline.rollout.min_healthy_percent,
                warmup,
                &opts.latencies,
                &opts.faults,
                opts.seed,
            )
        })
        .fold(0.0, f64::max);
    // Comparisons only mean something for a roll that completed.
    let rolled = r.state == "succeeded" && r.roll_seconds > 0.0;
    if !rolled {
        r.efficiency = 0.0;
    }
    r.faster_than_lockstep = if rolled && r.lockstep_roll_seconds > 0.0 {
        1.0 - r.roll_seconds / r.lockstep_roll_seconds
    } else {
        0.0
    };
    r.warnings = warnings(pipeline, &opts.latencies);
    r.api_calls_by_op = provider.api_calls();
    r.api_calls = r.api_calls_by_op.values().sum();
    r.call_log = provider.call_log();
    r.api_rates = crate::rate::api_rates(&r.call_log, |b| provider.budget_limit(b));
    r.steps = outcomes
        .iter()
        .take(1)
        .flat_map(|o| {
            o.steps.iter().map(|s| StepSeconds {
                name: s.name.clone(),
                state: s.state.clone(),
                seconds: s.seconds,
            })
        })
        .collect();
    r.outcomes = outcomes;
    r
}

fn secs(d: Duration) -> u64 {
    d.as_secs()
}

/// The readiness timing a run on these latencies uses: the config's, or
/// the simulated group's (by the same rules as a real group).
fn health(p: &Pipeline, lat: &Latencies) -> repave_core::rollout::HealthSettings {
    repave_core::rollout::HealthSettings::new(&p.rollout, &crate::provider::sim_health_timing(lat))
}

/// Configured bounds the median latencies already break or nearly break
/// (within 25 %: a slow draw will).
fn warnings(p: &Pipeline, lat: &Latencies) -> Vec<String> {
    let to_healthy = lat.launch + lat.boot + lat.health;
    let mut out = Vec::new();
    let mut check = |what: &str, bound: Duration, need: Duration, fix: &str| {
        if bound < need.mul_f64(1.25) {
            out.push(format!(
                "{what} is {}s but the simulated latencies need about {}s; {fix}",
                secs(bound),
                secs(need)
            ));
        }
    };
    check(
        "rollout.health_grace",
        health(p, lat).health_grace,
        to_healthy,
        "new instances will count as failed",
    );
    check(
        "test.timeout",
        p.test.timeout.get(),
        lat.boot + lat.health,
        "the image test will time out",
    );
    check(
        "builder.ready_timeout",
        p.builder.ready_timeout.get(),
        lat.launch + lat.boot,
        "the builder may not come up in time",
    );
    check(
        "patch.timeout",
        p.patch.timeout.get(),
        lat.updates + lat.scan * 2,
        "patching will time out",
    );
    check(
        "image_timeout",
        p.image_timeout.get(),
        lat.create_image,
        "image creation will time out",
    );
    out
}
