//! The roll loop: observe the group and its balancer, ask the pure planner
//! what to do, do it, repeat. Level-triggered: a restarted process rebuilds
//! its place from what it observes plus the journaled capacity checkpoint.

use crate::call::retry;
use crate::context::Ctx;
use crate::error::EngineError;
use crate::events::EngineEvent;
use crate::summary::RollReport;
pub use crate::summary::RollSample;
use repave_core::provider::{Lifecycle, Provider, TargetState};
use repave_core::rollout::{self, Action, Blame, Member, Observation, Outcome, RollPolicy, RollProgress};
use repave_core::{ImageId, InstanceId, Timestamp};
use std::collections::BTreeMap;
use std::time::Duration;

/// One observation of a group: members joined with their balancer state.
pub async fn observe(p: &dyn Provider, group: &str) -> Result<Observation, EngineError> {
    let g = retry("observe", || p.describe_group(group)).await?;
    let health = retry("observe", || p.target_health(group)).await?;
    let by_id: BTreeMap<&InstanceId, _> = health.iter().map(|t| (&t.instance, t)).collect();
    let members = g
        .members
        .iter()
        .map(|m| Member {
            id: m.id.clone(),
            image: m.image.clone(),
            lifecycle: m.lifecycle,
            protected: m.protected,
            launched_at: m.launched_at,
            target: by_id.get(&m.id).map(|t| (t.state, t.since)),
            hook_wait: m.hook_wait,
        })
        .collect();
    Ok(Observation {
        desired: g.desired,
        min: g.min,
        max: g.max,
        members,
    })
}

/// The roll's capacity bookkeeping, checkpointed on the roll step before the
/// actions that change desired capacity (and again once they are done): the
/// fleet's size without surge, and desired capacity before and after this
/// tick's actions.
///
/// It also carries the planner's progress (stage, canaries done, failed new
/// instances, replaced count, the roll's start), so a resumed roll goes on
/// where it stood: no repeated canary stage, no fresh failure budget.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct Checkpoint {
    base_desired: u32,
    desired_before: u32,
    desired_after: u32,
    #[serde(default)]
    progress: Option<RollProgress>,
}

/// What a roll step is journaled to do before it starts: the image it rolls
/// to, the policy, and the capacity it aims at without its own surge.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct RollIntent {
    pub target: ImageId,
    pub policy: RollPolicy,
    pub base_desired: u32,
}

impl RollIntent {
    /// The intent journaled for `step` of this run, if it started.
    pub(crate) fn journaled(ctx: &Ctx<'_>, step: &str) -> Result<Option<RollIntent>, EngineError> {
        Ok(ctx
            .engine
            .store
            .step(ctx.run_id(), step)?
            .and_then(|s| serde_json::from_value(s.intent).ok()))
    }

    pub(crate) fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("a roll intent serializes")
    }
}

/// The planner's progress a previous attempt of this roll step left.
fn checkpointed_progress(ctx: &Ctx<'_>, step: &str) -> Result<Option<RollProgress>, EngineError> {
    Ok(ctx
        .engine
        .store
        .step(ctx.run_id(), step)?
        .and_then(|s| s.checkpoint)
        .and_then(|c| serde_json::from_value::<Checkpoint>(c).ok())
        .and_then(|c| c.progress))
}

/// The capacity a (re)started roll aims at, without its own surge. A roll
/// that ran before left a checkpoint: its base stands unless desired
/// capacity was changed outside the roll since (an autoscaler acting while
/// the roll was paused or its process dead), which moves the base by as
/// much. Otherwise the base journaled in the step's intent, the caller's
/// hint, or the group's desired capacity now.
pub(crate) async fn base_capacity(ctx: &Ctx<'_>, step: &str, hint: Option<u32>) -> Result<u32, EngineError> {
    let rec = ctx.engine.store.step(ctx.run_id(), step)?;
    let journaled = rec
        .as_ref()
        .and_then(|s| serde_json::from_value::<RollIntent>(s.intent.clone()).ok())
        .map(|i| i.base_desired);
    let checkpoint = rec
        .and_then(|s| s.checkpoint)
        .and_then(|c| serde_json::from_value::<Checkpoint>(c).ok());
    let known = journaled.or(hint);
    if checkpoint.is_none() {
        if let Some(b) = known {
            return Ok(b);
        }
    }
    let g = retry(step, || ctx.provider().describe_group(&ctx.pipeline.group)).await?;
    let Some(cp) = checkpoint else {
        return Ok(g.desired);
    };
    let (lo, hi) = (
        cp.desired_before.min(cp.desired_after),
        cp.desired_before.max(cp.desired_after),
    );
    // Within the range the last tick's actions spanned: only the roll's own
    // changes (some of them may not have happened before the stop).
    if (lo..=hi).contains(&g.desired) {
        return Ok(cp.base_desired);
    }
    let moved = g.desired as i64 - cp.desired_after as i64;
    let base = (cp.base_desired as i64 + moved).clamp(g.min as i64, g.max as i64) as u32;
    ctx.log(
        step,
        format!(
            "desired capacity changed from {} to {} while the roll was stopped: it now aims at {base} instance(s)",
            cp.desired_after, g.desired
        ),
        serde_json::json!({ "checkpoint": cp, "desired": g.desired, "base_desired": base }),
    );
    Ok(base)
}

#[derive(Default)]
struct Measurements {
    /// launch → healthy at the balancer, per new instance.
    launch_ready: BTreeMap<InstanceId, i64>,
    drain_started: BTreeMap<InstanceId, i64>,
    drain_ms: Vec<i64>,
    samples: Vec<RollSample>,
    /// The group's MaxSize as first observed (bounds the surge).
    group_max: u32,
    min_in_service: Option<u32>,
    max_live: u32,
    total_old: u32,
    replaced: u32,
    /// Replaced by this attempt (a resumed roll did only part of it).
    replaced_here: u32,
}

fn median(v: &[i64]) -> i64 {
    if v.is_empty() {
        return 0;
    }
    let mut v = v.to_vec();
    v.sort_unstable();
    v[v.len() / 2]
}

/// Roll the group onto `target`.
/// `base`: the fleet's capacity without surge, journaled in the step's
/// intent when the roll first started, so a resumed roll does not mistake
/// its own surge for the fleet's size.
pub async fn roll(
    ctx: &Ctx<'_>,
    step: &str,
    target: &ImageId,
    policy: &RollPolicy,
    base: u32,
) -> Result<RollReport, EngineError> {
    let mut meas = Measurements::default();
    let started = ctx.now();
    let result = roll_loop(ctx, step, target, policy, base, started, &mut meas).await;
    let report = report(ctx, target, policy, base, started, meas);
    *ctx.last_roll.lock().expect("last roll") = Some(report.clone());
    result.map(|replaced| {
        let report = RollReport { replaced, ..report };
        ctx.log(
            step,
            format!(
                "rolled {} instance(s) in {:.1}s (lower bound {:.1}s, min in service {} / floor {})",
                report.replaced, report.seconds, report.lower_bound_seconds, report.min_in_service, report.floor
            ),
            serde_json::Value::Null,
        );
        report
    })
}

/// Observe → plan → act until the roll completes; returns how many old
/// instances were replaced.
async fn roll_loop(
    ctx: &Ctx<'_>,
    step: &str,
    target: &ImageId,
    policy: &RollPolicy,
    base: u32,
    started: Timestamp,
    meas: &mut Measurements,
) -> Result<u32, EngineError> {
    let p = ctx.provider();
    let group = ctx.pipeline.group.clone();
    let first = observe(p, &group).await?;
    // EC2 reports launch times in whole seconds: an instance the roll
    // launches in its first second would otherwise read as older than the
    // roll (and never count as failed).
    let started = launch_time_granularity(started);
    let mut progress = match checkpointed_progress(ctx, step)? {
        // Resumed: the same roll, going on from where it stood, on the
        // base capacity as it stands now (see `base_capacity`).
        Some(mut p) if &p.target_image == target => {
            p.base_desired = base;
            p.last_set_desired = None;
            p.resumed_at = Some(started);
            p.blocked_since = None;
            ctx.log(
                step,
                format!(
                    "resuming the roll: {} replaced so far, stage {}, {} failed new instance(s) counted",
                    p.replaced,
                    p.stage,
                    p.failed_new.len()
                ),
                serde_json::Value::Null,
            );
            p
        }
        _ => RollProgress::new(target.clone(), base, started),
    };
    progress.cutoff = ctx.engine.opts.roll_cutoff;
    let replaced_before = progress.replaced;
    // Instances this roll deregistered before a restart are still draining.
    for m in &first.members {
        if m.image != *target
            && matches!(m.target, Some((TargetState::Draining, _)) | None)
            && m.lifecycle == Lifecycle::InService
        {
            progress.draining.insert(m.id.clone());
        }
    }
    let deadline = started.plus(ctx.pipeline.rollout.timeout.get());
    let total_old = first.members.iter().filter(|m| m.image != *target).count() as u32;
    meas.group_max = first.max;
    let tick = ctx.engine.opts.tick;
    let mut blocked_since: Option<Timestamp> = None;
    let mut checkpointed: Option<Checkpoint> = None;
    // A cancel stops the roll gracefully: no new replacement starts, the
    // ones in flight finish and capacity returns to base, then it pauses.
    let mut stopping = false;
    loop {
        if !stopping && matches!(ctx.check_cancel(), Err(EngineError::Cancelled)) {
            stopping = true;
            progress.cutoff = Some(progress.cutoff.map_or(ctx.now(), |c| c.min(ctx.now())));
            ctx.log(
                step,
                "cancel requested: no new replacement starts; finishing the ones in flight",
                serde_json::Value::Null,
            );
        }
        ctx.keep_lease()?;
        let now = ctx.now();
        let obs = observe(p, &group).await?;
        let plan = rollout::plan(&obs, policy, &progress, now);
        meas.total_old = total_old;
        record(meas, &obs, &plan.status, target, started, now, &progress);
        ctx.engine.observer.on_event(&EngineEvent::RollTick {
            run: ctx.run_id().clone(),
            status: plan.status.clone(),
            replaced: plan.progress.replaced,
            total: total_old,
        });
        let abandoned: Vec<String> = plan
            .progress
            .abandoned_new
            .difference(&progress.abandoned_new)
            .map(|i| i.to_string())
            .collect();
        if !abandoned.is_empty() {
            let hooks: Vec<String> = ctx.timing().launch_hooks.iter().map(|h| h.label()).collect();
            ctx.log(
                step,
                format!(
                    "new instance(s) {} abandoned by a launch lifecycle hook{}: they left the group from Pending:Wait without entering service",
                    abandoned.join(", "),
                    if hooks.is_empty() { String::new() } else { format!(" ({})", hooks.join(", ")) }
                ),
                serde_json::json!({ "abandoned": abandoned, "hooks": hooks }),
            );
        }
        match &plan.outcome {
            Outcome::Complete => {
                progress = plan.progress;
                break;
            }
            Outcome::Abort { reason, blame } => {
                ctx.log(
                    step,
                    format!("abort: {reason}"),
                    serde_json::to_value(&plan.status).unwrap_or_default(),
                );
                // Only what the image did fails it; anything else pauses the
                // roll for a person to fix and resume.
                return Err(match blame {
                    Blame::Image => EngineError::RollAborted(reason.clone()),
                    Blame::Orchestration => EngineError::Paused(reason.clone()),
                });
            }
            Outcome::Blocked { reason } => {
                let since = *blocked_since.get_or_insert(now);
                if now >= deadline {
                    return Err(EngineError::Timeout {
                        step: step.into(),
                        seconds: now.since(since).as_secs(),
                        what: reason.clone(),
                    });
                }
            }
            Outcome::Progressing => blocked_since = None,
            // Window cutoff (or a cancel): nothing in flight, capacity at
            // base, the rest waits; the executor records the run as paused
            // and resumable.
            Outcome::Paused { reason } => {
                checkpoint(ctx, step, &mut checkpointed, &obs, &plan.progress)?;
                if stopping {
                    ctx.log(step, "stopped at a safe point after cancel", serde_json::Value::Null);
                    return Err(EngineError::Cancelled);
                }
                ctx.log(
                    step,
                    format!("paused: {reason}"),
                    serde_json::to_value(&plan.status).unwrap_or_default(),
                );
                return Err(EngineError::Paused(reason.clone()));
            }
        }
        if now >= deadline {
            return Err(EngineError::Timeout {
                step: step.into(),
                seconds: ctx.pipeline.rollout.timeout.get().as_secs(),
                what: format!("roll not complete: {:?}", plan.status),
            });
        }
        // Journal the capacity bookkeeping and the planner's progress
        // before acting on them.
        checkpoint(ctx, step, &mut checkpointed, &obs, &plan.progress)?;
        for action in &plan.actions {
            act(ctx, step, &group, action, meas).await?;
        }
        // All done: desired is where the actions put it.
        if let Some(c) = checkpointed.as_mut().filter(|c| c.desired_before != c.desired_after) {
            c.desired_before = c.desired_after;
            let json = serde_json::to_value(&*c).expect("checkpoint serializes");
            ctx.engine.store.checkpoint_step(ctx.run_id(), step, &json)?;
        }
        progress = plan.progress;
        tokio::time::sleep(tick).await;
    }
    meas.replaced_here = progress.replaced.saturating_sub(replaced_before);
    wait_for_terminations(ctx, step, &group, policy).await?;
    Ok(progress.replaced)
}

/// After the last replacement: the instances the roll terminated are gone
/// only once their termination lifecycle hooks are done (AWS:
/// Terminating:Wait until the handler completes the action or the
/// heartbeat runs out). Waited for up to the longest heartbeat (plus the
/// drain bound and a minute), so the run does not report a finished roll
/// (and go on to retire the old image) while old instances still run their
/// hooks; one still there after that (its handler records heartbeats) is
/// reported and left to Auto Scaling — the fleet is already on the new
/// image.
async fn wait_for_terminations(ctx: &Ctx<'_>, step: &str, group: &str, policy: &RollPolicy) -> Result<(), EngineError> {
    let p = ctx.provider();
    let hooks = ctx.timing().termination_hooks;
    if hooks.is_empty() {
        // Nothing holds a terminated instance: the roll terminated only
        // drained ones, and what is left of their shutdown serves nothing.
        return Ok(());
    }
    let leaving = |o: &Observation| -> Vec<String> {
        o.members
            .iter()
            .filter(|m| m.lifecycle == Lifecycle::Terminating)
            .map(|m| m.id.to_string())
            .collect()
    };
    let first = leaving(&observe(p, group).await?);
    if first.is_empty() {
        return Ok(());
    }
    let heartbeat = hooks.iter().map(|h| h.heartbeat).max().expect("hooks is not empty");
    let bound = heartbeat + policy.drain_timeout.min(Duration::from_secs(3600)) + Duration::from_secs(60);
    let names: Vec<String> = hooks.iter().map(|h| h.label()).collect();
    ctx.log(
        step,
        format!(
            "waiting for {} terminated instance(s) to be gone{}: {}",
            first.len(),
            if names.is_empty() {
                String::new()
            } else {
                format!(", held by termination lifecycle hook(s) {}", names.join(", "))
            },
            first.join(", ")
        ),
        serde_json::json!({ "terminating": first, "hooks": names }),
    );
    let waited = crate::wait::wait_for(ctx, step, "terminated instances gone", bound, || async {
        Ok(leaving(&observe(p, group).await?).is_empty().then_some(()))
    })
    .await;
    match waited {
        Ok(()) => Ok(()),
        Err(EngineError::Timeout { .. }) => {
            let left = leaving(&observe(p, group).await?);
            ctx.log(
                step,
                format!(
                    "{} instance(s) still terminating after {}: {} (a termination hook's handler keeps them; Auto Scaling finishes them)",
                    left.len(),
                    repave_core::duration::format_duration(bound),
                    left.join(", ")
                ),
                serde_json::json!({ "terminating": left }),
            );
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Write the roll's checkpoint when it changed.
fn checkpoint(
    ctx: &Ctx<'_>,
    step: &str,
    last: &mut Option<Checkpoint>,
    obs: &Observation,
    progress: &RollProgress,
) -> Result<(), EngineError> {
    let cp = Checkpoint {
        base_desired: progress.base_desired,
        desired_before: obs.desired,
        desired_after: progress.last_set_desired.unwrap_or(obs.desired),
        progress: Some(progress.clone()),
    };
    let same = last.as_ref().is_some_and(|c| {
        (c.base_desired, c.desired_after, &c.progress) == (cp.base_desired, cp.desired_after, &cp.progress)
    });
    if !same {
        let json = serde_json::to_value(&cp).expect("checkpoint serializes");
        ctx.engine.store.checkpoint_step(ctx.run_id(), step, &json)?;
        *last = Some(cp);
    }
    Ok(())
}

/// `t` rounded down to the whole second launch times are reported in.
fn launch_time_granularity(t: Timestamp) -> Timestamp {
    Timestamp(t.millis().div_euclid(1000) * 1000)
}

fn report(
    ctx: &Ctx<'_>,
    target: &ImageId,
    policy: &RollPolicy,
    base: u32,
    started: Timestamp,
    meas: Measurements,
) -> RollReport {
    let total_old = meas.total_old;
    let ended = ctx.now();
    let group_max = if meas.group_max == 0 { u32::MAX } else { meas.group_max };
    let k = rollout::concurrency_within(base, group_max, policy);
    let launch_ready: Vec<i64> = meas.launch_ready.values().copied().collect();
    let lr = median(&launch_ready);
    let drain = median(&meas.drain_ms);
    // The bound of what this attempt did: a resumed roll replaced only
    // what was left when it resumed.
    let done = if meas.replaced_here > 0 {
        meas.replaced_here
    } else {
        total_old
    };
    let lb = rollout::lower_bound(
        done.min(base),
        k,
        Duration::from_millis(lr.max(0) as u64),
        Duration::ZERO,
        policy.warmup,
        Duration::from_millis(drain.max(0) as u64),
    );
    let seconds = ended.since(started).as_secs_f64();
    let (floor, max_total) = rollout::capacity_bounds_within(base, group_max, policy);
    RollReport {
        target_image: Some(target.clone()),
        started_at_ms: started.millis(),
        seconds,
        lower_bound_seconds: lb.as_secs_f64(),
        efficiency: if seconds > 0.0 { lb.as_secs_f64() / seconds } else { 1.0 },
        min_in_service: meas.min_in_service.unwrap_or(0),
        floor,
        max_total,
        max_live: meas.max_live,
        base_desired: base,
        concurrency: k,
        replaced: meas.replaced,
        launch_ready_ms_median: lr,
        warmup_ms: policy.warmup.as_millis() as i64,
        drain_ms_median: drain,
        samples: downsample(meas.samples, 2000),
        left_on_old_image: vec![],
        warm_pool_replaced: vec![],
    }
}

fn record(
    meas: &mut Measurements,
    obs: &Observation,
    status: &rollout::RollStatus,
    target: &ImageId,
    started: Timestamp,
    now: Timestamp,
    progress: &RollProgress,
) {
    for m in &obs.members {
        if &m.image == target && m.launched_at >= started {
            if let Some((TargetState::Healthy, since)) = m.target {
                meas.launch_ready
                    .entry(m.id.clone())
                    .or_insert(since.millis() - m.launched_at.millis());
            }
        }
        if progress.draining.contains(&m.id) {
            if let Some(t0) = meas.drain_started.get(&m.id) {
                if matches!(m.target, None | Some((TargetState::Unused, _))) {
                    meas.drain_ms.push(now.millis() - t0);
                    meas.drain_started.remove(&m.id);
                }
            }
        }
    }
    // Only count capacity once the roll has begun acting (the first
    // observation is the fleet as found).
    meas.min_in_service = Some(
        meas.min_in_service
            .map_or(status.in_service, |m| m.min(status.in_service)),
    );
    meas.max_live = meas.max_live.max(status.live);
    meas.replaced = progress.replaced;
    meas.samples.push(RollSample {
        t_ms: now.millis() - started.millis(),
        in_service: status.in_service,
        old: status.old,
        new: status.new,
        draining: status.draining,
        live: status.live,
        floor: status.floor,
    });
}

fn downsample(v: Vec<RollSample>, max: usize) -> Vec<RollSample> {
    if v.len() <= max {
        return v;
    }
    let step = v.len().div_ceil(max);
    // Keep the minimum of each bucket so dips stay visible.
    v.chunks(step)
        .map(|c| c.iter().min_by_key(|s| s.in_service).cloned().unwrap_or_default())
        .collect()
}

async fn act(
    ctx: &Ctx<'_>,
    step: &str,
    group: &str,
    action: &Action,
    meas: &mut Measurements,
) -> Result<(), EngineError> {
    let p = ctx.provider();
    ctx.log(step, describe(action), serde_json::to_value(action).unwrap_or_default());
    match action {
        Action::SetDesired { desired } => retry(step, || p.set_desired_capacity(group, *desired)).await,
        Action::Drain { instance } => {
            meas.drain_started.insert(instance.clone(), ctx.now().millis());
            retry(step, || p.deregister_target(group, instance)).await
        }
        Action::Terminate { instance, decrement } => {
            match retry(step, || p.terminate_group_instance(group, instance, *decrement)).await {
                Err(EngineError::Provider { source, .. }) if source.is_not_found() => Ok(()),
                r => r,
            }
        }
    }
}

fn describe(a: &Action) -> String {
    match a {
        Action::SetDesired { desired } => format!("set desired capacity to {desired}"),
        Action::Drain { instance } => format!("drain {instance}"),
        Action::Terminate {
            instance,
            decrement: true,
        } => format!("terminate {instance} (and lower desired)"),
        Action::Terminate {
            instance,
            decrement: false,
        } => format!("terminate {instance} (group replaces it)"),
    }
}

/// Every in-service instance on the target image and healthy at the
/// balancer, as many as desired. Waits as long as a new instance may take
/// to become healthy (`health_grace` + `warmup`, plus a minute), so an
/// autoscaler scale-out during verify is waited for, not failed.
pub async fn verify(ctx: &Ctx<'_>, target: &ImageId) -> Result<(), EngineError> {
    let p = ctx.provider();
    let group = ctx.pipeline.group.clone();
    let last = std::sync::Mutex::new(String::new());
    let health = ctx.health();
    // Protected instances the policy skips stay on the old image (reported
    // by `left_on_old_image`); under wait or replace they must be replaced.
    let skipped = ctx.pipeline.rollout.protected == repave_core::config::HeldInstances::Skip;
    // Set once the members are right and only the warm pool is not: that
    // is no verdict on the image (the pool refills on its own schedule).
    let only_pool = std::sync::atomic::AtomicBool::new(false);
    let r = crate::wait::wait_for(
        ctx,
        "verify",
        "fleet on the new image",
        health.health_grace + health.warmup + Duration::from_secs(60),
        || async {
            let obs = observe(p, &group).await?;
            let live: Vec<&Member> = obs
                .members
                .iter()
                .filter(|m| {
                    !matches!(
                        m.lifecycle,
                        Lifecycle::Terminating | Lifecycle::Terminated | Lifecycle::Standby
                    )
                })
                .collect();
            let off: Vec<String> = live
                .iter()
                .filter(|m| &m.image != target && !(m.protected && skipped))
                .map(|m| format!("{} on {}", m.id, m.image))
                .collect();
            let sick: Vec<String> = live
                .iter()
                .filter(|m| !matches!(m.target, Some((TargetState::Healthy, _))))
                .map(|m| m.id.to_string())
                .collect();
            if off.is_empty() && sick.is_empty() && live.len() as u32 == obs.desired {
                // What the group would draw in next must be on the new
                // image too.
                let pool = retry("verify", || p.warm_pool(&group)).await?;
                let stale: Vec<String> = crate::warm_pool::off_target(&pool, target)
                    .map(|w| format!("{} on {}", w.id, w.image))
                    .collect();
                if stale.is_empty() {
                    return Ok(Some(()));
                }
                only_pool.store(true, std::sync::atomic::Ordering::Relaxed);
                *last.lock().expect("lock") = format!("warm pool instances not on target: [{}]", stale.join(", "));
                return Ok(None);
            }
            only_pool.store(false, std::sync::atomic::Ordering::Relaxed);
            *last.lock().expect("lock") = format!(
                "{} live / {} desired; not on target: [{}]; not healthy: [{}]",
                live.len(),
                obs.desired,
                off.join(", "),
                sick.join(", ")
            );
            Ok(None)
        },
    )
    .await;
    // Only running out of time says the new image's fleet is not right; a
    // cancel or a lost provider is no verdict on the image.
    r.map_err(|e| match e {
        EngineError::Timeout { step, seconds, what } if only_pool.load(std::sync::atomic::Ordering::Relaxed) => {
            EngineError::Timeout {
                step,
                seconds,
                what: format!("{what}: {}", last.lock().expect("lock")),
            }
        }
        e @ EngineError::Timeout { .. } => EngineError::Verify(format!("{e}: {}", last.lock().expect("lock"))),
        e => e,
    })
}

/// Members the policy left on an image other than `target` — protected
/// ones under `protected = "skip"`, standby ones under `standby = "skip"`
/// — as "i-1 on ami-0 (protected)". A verified roll reports them rather
/// than passing over them in silence.
pub async fn left_on_old_image(ctx: &Ctx<'_>, target: &ImageId) -> Result<Vec<String>, EngineError> {
    let obs = observe(ctx.provider(), &ctx.pipeline.group).await?;
    Ok(obs
        .members
        .iter()
        .filter(|m| &m.image != target && !matches!(m.lifecycle, Lifecycle::Terminating | Lifecycle::Terminated))
        .filter_map(|m| {
            let why = if m.lifecycle == Lifecycle::Standby {
                "standby"
            } else if m.protected {
                "protected"
            } else {
                return None;
            };
            Some(format!("{} on {} ({why})", m.id, m.image))
        })
        .collect())
}

/// Roll step `roll_step` ("roll", "rollback_roll") onto `image` and verify
/// it in the step beside it ("verify", "rollback_verify"), with the
/// group's disturbing scaling processes suspended around both.
pub(crate) async fn roll_and_verify(
    ctx: &Ctx<'_>,
    roll_step: &str,
    image: &ImageId,
    spec: &repave_core::provider::LaunchSpecRef,
    policy: &RollPolicy,
    base_hint: Option<u32>,
) -> Result<RollReport, EngineError> {
    let verify_step = &crate::journal::beside(roll_step, "verify");
    crate::processes::suspended_during(ctx, roll_step, || async move {
        if ctx.pipeline.rollout.strategy == repave_core::config::Strategy::Native {
            let intent = serde_json::json!({ "target": image, "launch_spec": spec, "strategy": "native" });
            let report: RollReport = ctx
                .step(roll_step, intent, || crate::native::roll(ctx, roll_step, image, spec))
                .await?;
            ctx.step(verify_step, serde_json::json!({ "target": image }), || {
                verify(ctx, image)
            })
            .await?;
            return with_left_behind(ctx, verify_step, image, report).await;
        }
        let base = base_capacity(ctx, roll_step, base_hint).await?;
        // Before any surge: what the group draws from its warm pool must be on
        // the new image.
        let warm_pool_replaced = crate::warm_pool::refresh(ctx, roll_step, image).await?;
        let intent = RollIntent {
            target: image.clone(),
            policy: policy.clone(),
            base_desired: base,
        }
        .to_json();
        let mut report: RollReport = ctx
            .step(roll_step, intent, || roll(ctx, roll_step, image, policy, base))
            .await?;
        report.warm_pool_replaced = warm_pool_replaced;
        ctx.step(verify_step, serde_json::json!({ "target": image }), || {
            verify(ctx, image)
        })
        .await?;
        with_left_behind(ctx, verify_step, image, report).await
    })
    .await
}

/// The verified roll's report with the members the policy left on their
/// old image, said in the run's events too.
async fn with_left_behind(
    ctx: &Ctx<'_>,
    verify_step: &str,
    image: &ImageId,
    mut report: RollReport,
) -> Result<RollReport, EngineError> {
    report.left_on_old_image = left_on_old_image(ctx, image).await?;
    if !report.left_on_old_image.is_empty() {
        ctx.log(
            verify_step,
            format!(
                "{} instance(s) left on the old image by the policy: {} (protected = \"replace\" replaces protected ones too)",
                report.left_on_old_image.len(),
                report.left_on_old_image.join(", ")
            ),
            serde_json::json!({ "left_on_old_image": report.left_on_old_image }),
        );
    }
    Ok(report)
}
