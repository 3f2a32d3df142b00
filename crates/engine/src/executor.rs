//! The run executor: the step sequence, journaling, leases, failure paths.

use crate::bake::{self, BuilderOutput, ImageOutput, PatchOutput, ResolveOutput, ScanOutput};
use crate::error::EngineError;
use crate::events::{EngineEvent, Observer};
use crate::publish::{self, PublishOutput};
use crate::summary::{RollReport, RunOutcome, RunSummary, StepTiming};
use crate::{retain, roll};
use repave_core::config::Pipeline;
use repave_core::ids::Clock;
use repave_core::provider::Provider;
use repave_core::rollout::{HealthSettings, RollPolicy};
use repave_core::{ImageId, RunId, Timestamp};
use repave_store::{Lease, NewEvent, NewRun, RunKind, RunRecord, RunState, StepState, Store, StoreError};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Observe/plan/act period of the roll loop.
    pub tick: Duration,
    /// Poll period while waiting on the provider.
    pub poll: Duration,
    pub lease_ttl: Duration,
    /// The maintenance window's cutoff: after it no new replacement starts,
    /// and once nothing is in flight the run ends `paused` (resumable).
    pub roll_cutoff: Option<Timestamp>,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            tick: Duration::from_millis(100),
            poll: Duration::from_millis(200),
            lease_ttl: Duration::from_secs(30),
            roll_cutoff: None,
        }
    }
}

/// Runs pipelines against one provider, journaling into one store.
pub struct Engine {
    pub(crate) provider: Arc<dyn Provider>,
    pub(crate) store: Arc<Store>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) observer: Arc<dyn Observer>,
    pub(crate) cancel: CancellationToken,
    pub(crate) opts: EngineOptions,
}

/// One run in progress.
pub(crate) struct Ctx<'a> {
    pub engine: &'a Engine,
    pub run: RunRecord,
    pub pipeline: Pipeline,
    lease: Mutex<Lease>,
    /// The last roll's report, also when it failed (its samples show what
    /// the fleet went through before the abort).
    pub last_roll: Mutex<Option<RollReport>>,
    /// Id of the event that marked this driver's start: cancel requests
    /// after it (from `repave cancel`, another process) stop this run.
    driver_event: std::sync::atomic::AtomicI64,
    /// The roll's readiness timing (config, or the group's own), read once
    /// when the driver starts.
    health: Mutex<HealthSettings>,
    /// The group's own readiness settings (lifecycle hooks included), as
    /// read when the driver started.
    timing: Mutex<repave_core::provider::HealthTiming>,
    /// The journaled step running now, and the commands it sent so far in
    /// this attempt (their tokens).
    commands: Mutex<(String, u32)>,
}

impl Ctx<'_> {
    pub fn now(&self) -> Timestamp {
        self.engine.clock.now()
    }
    pub fn provider(&self) -> &dyn Provider {
        self.engine.provider.as_ref()
    }
    pub fn run_id(&self) -> &RunId {
        &self.run.id
    }
    pub fn poll(&self) -> Duration {
        self.engine.opts.poll
    }
    /// A token for the next command the running step sends:
    /// `{run}-{step}-{n}`, n = 1, 2, ... in the order the step sends them,
    /// so a step that runs again after a restart repeats its tokens and a
    /// provider that keeps them hands back what was already sent.
    pub fn command_token(&self) -> String {
        let mut c = self.commands.lock().expect("commands lock");
        c.1 += 1;
        format!("{}-{}-{}", self.run.id, c.0, c.1)
    }

    pub fn health(&self) -> HealthSettings {
        self.health.lock().expect("health lock").clone()
    }
    pub fn timing(&self) -> repave_core::provider::HealthTiming {
        self.timing.lock().expect("timing lock").clone()
    }
    /// The rollout policy with the readiness timing in effect.
    pub fn policy(&self) -> RollPolicy {
        RollPolicy::new(&self.pipeline.rollout, &self.health())
    }

    /// Read the group's readiness settings and say which values the roll
    /// uses and where they came from (the run's first event after the
    /// driver's). A group that does not exist is left to `resolve` to
    /// report; any other failure fails the run.
    async fn load_health(&self) -> Result<(), EngineError> {
        let group = &self.pipeline.group;
        let timing = match crate::call::retry("run", || self.provider().health_timing(group)).await {
            Ok(t) => t,
            Err(EngineError::Provider { source, .. }) if source.is_not_found() => Default::default(),
            Err(e) => return Err(e),
        };
        let health = HealthSettings::new(&self.pipeline.rollout, &timing);
        self.log(
            "run",
            format!("readiness: {}", health.describe()),
            serde_json::json!({ "health": health, "timing": timing }),
        );
        *self.health.lock().expect("health lock") = health;
        *self.timing.lock().expect("timing lock") = timing;
        Ok(())
    }

    /// Append an audit event and tell the observer.
    pub fn log(&self, step: &str, message: impl Into<String>, data: serde_json::Value) {
        let message = message.into();
        tracing::info!(run = %self.run.id, step, "{message}");
        let ev = NewEvent {
            run: self.run.id.clone(),
            at: self.now(),
            level: "info".into(),
            step: Some(step.to_string()),
            message: message.clone(),
            data,
        };
        if let Err(e) = self.engine.store.append_event(&ev) {
            tracing::error!(error = %e, "could not append event");
        }
        self.engine.observer.on_event(&EngineEvent::Log {
            run: self.run.id.clone(),
            step: step.into(),
            message,
        });
    }

    /// Renew the group lease if it is past half its life; a lost lease (a
    /// newer holder took over) stops this run from writing anything more.
    pub fn keep_lease(&self) -> Result<(), EngineError> {
        let mut lease = self.lease.lock().expect("lease lock");
        let now = self.now();
        let ttl = self.engine.opts.lease_ttl;
        if lease.expires_at.millis() - now.millis() < (ttl.as_millis() / 2) as i64 {
            *lease = self.engine.store.renew_lease(&lease, ttl, now)?;
        } else {
            self.engine.store.check_lease(&lease, now)?;
        }
        Ok(())
    }

    /// Cancelled by this process (Ctrl-C, server shutdown) or by a cancel
    /// request in the store (`repave cancel RUN` from anywhere).
    pub fn check_cancel(&self) -> Result<(), EngineError> {
        let after = self.driver_event.load(std::sync::atomic::Ordering::Relaxed);
        if self.engine.cancel.is_cancelled() || self.engine.store.cancel_requested(&self.run.id, after)? {
            Err(EngineError::Cancelled)
        } else {
            Ok(())
        }
    }

    /// Run one journaled step: skipped with its stored output when already
    /// done, otherwise intent → side effect → output.
    pub async fn step<T, F, Fut>(&self, name: &str, intent: serde_json::Value, f: F) -> Result<T, EngineError>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, EngineError>>,
    {
        let store = &self.engine.store;
        if let Some(rec) = store.step(&self.run.id, name)? {
            if rec.state == StepState::Done {
                if let Some(out) = rec.output {
                    match serde_json::from_value(out) {
                        Ok(v) => return Ok(v),
                        // Journaled by another version of repave: the step
                        // is idempotent, so it runs again — said, not hidden.
                        Err(e) => self.log(
                            name,
                            format!("{name}: journaled output unreadable ({e}); running the step again"),
                            serde_json::Value::Null,
                        ),
                    }
                }
            }
        }
        self.check_cancel()?;
        self.keep_lease()?;
        *self.commands.lock().expect("commands lock") = (name.to_string(), 0);
        let rec = store.begin_step(&self.run.id, name, &intent, self.now())?;
        let resumed = rec.attempts > 1;
        self.engine.observer.on_event(&EngineEvent::StepStarted {
            run: self.run.id.clone(),
            step: name.into(),
        });
        self.log(
            name,
            if resumed {
                format!("{name} resumed")
            } else {
                format!("{name} started")
            },
            intent,
        );
        let started = Instant::now();
        match f().await {
            Ok(out) => {
                let json = serde_json::to_value(&out).expect("step output serializes");
                store.finish_step(&self.run.id, name, &json, self.now())?;
                self.log(name, format!("{name} done"), json);
                self.engine.observer.on_event(&EngineEvent::StepFinished {
                    run: self.run.id.clone(),
                    step: name.into(),
                    elapsed: started.elapsed(),
                    resumed,
                });
                Ok(out)
            }
            Err(e) => {
                let msg = e.to_string();
                store.fail_step(&self.run.id, name, &msg, self.now())?;
                let ev = NewEvent {
                    run: self.run.id.clone(),
                    at: self.now(),
                    level: "error".into(),
                    step: Some(name.into()),
                    message: msg.clone(),
                    data: serde_json::Value::Null,
                };
                store.append_event(&ev)?;
                self.engine.observer.on_event(&EngineEvent::StepFailed {
                    run: self.run.id.clone(),
                    step: name.into(),
                    error: msg,
                });
                Err(e)
            }
        }
    }

    /// Output of a step that already finished in this run.
    pub fn output<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>, EngineError> {
        Ok(self
            .engine
            .store
            .step(&self.run.id, name)?
            .filter(|s| s.state == StepState::Done)
            .and_then(|s| s.output)
            .and_then(|o| serde_json::from_value(o).ok()))
    }
}

impl Engine {
    pub fn new(
        provider: Arc<dyn Provider>,
        store: Arc<Store>,
        clock: Arc<dyn Clock>,
        observer: Arc<dyn Observer>,
        cancel: CancellationToken,
        opts: EngineOptions,
    ) -> Self {
        Self {
            provider,
            store,
            clock,
            observer,
            cancel,
            opts,
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Start a new run of `pipeline`. Refused (nothing created) when another
    /// run holds the group, or the group has a run that has not ended
    /// (paused, or interrupted with nobody driving it).
    pub async fn start(&self, name: &str, pipeline: &Pipeline, kind: RunKind) -> Result<RunOutcome, EngineError> {
        let now = self.clock.now();
        let place = self.provider.place();
        let key = repave_store::lease_key(&pipeline.group, place.as_deref());
        if let Some(l) = self.store.current_lease(&key)? {
            // A holder whose process is gone holds nothing: the run it left
            // is reported as unfinished below.
            let live = l.driver.as_ref().is_none_or(|d| d.alive() != Some(false));
            if l.expires_at > now && live {
                return Err(EngineError::Leased {
                    group: pipeline.group.clone(),
                    holder: l.holder,
                    expires_at: l.expires_at.millis(),
                    driver: l.driver,
                });
            }
        }
        if kind != RunKind::Bake {
            if let Some(r) = self.unfinished(&pipeline.group, place.as_deref())? {
                return Err(EngineError::Unfinished {
                    group: pipeline.group.clone(),
                    run: r.id.to_string(),
                    state: r.state.as_str().to_string(),
                });
            }
        }
        let config = serde_json::to_value(pipeline).expect("pipeline serializes");
        let run = self.store.create_run(&NewRun {
            pipeline: name.to_string(),
            group: pipeline.group.clone(),
            kind,
            provider: self.provider.name().to_string(),
            config,
            now,
            place,
        })?;
        let (lease, claim) = match self.lease(&run) {
            Ok(l) => l,
            Err(e @ EngineError::Leased { .. }) => {
                self.store
                    .set_run_state(&run.id, RunState::Cancelled, Some(&e.to_string()), now)?;
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        self.drive(run, pipeline.clone(), lease, claim).await
    }

    /// A run of `group` in `place` that changes it and has not ended:
    /// paused, or running with no process driving it any more. A run from
    /// before places were recorded counts wherever it was.
    fn unfinished(&self, group: &str, place: Option<&str>) -> Result<Option<RunRecord>, EngineError> {
        for state in [RunState::Running, RunState::Paused] {
            let runs = self.store.list_runs(&repave_store::RunFilter {
                group: Some(group.to_string()),
                state: Some(state),
                limit: Some(20),
                ..Default::default()
            })?;
            let here = |r: &RunRecord| r.place.is_none() || r.place.as_deref() == place;
            if let Some(r) = runs.into_iter().find(|r| r.kind != RunKind::Bake && here(r)) {
                return Ok(Some(r));
            }
        }
        Ok(None)
    }

    /// The lease on `run`'s group (in its place) for `run`, held by this
    /// process. Refused while another run holds it, or another live
    /// process — or another task of this one (a server) — drives this run.
    fn lease(&self, run: &RunRecord) -> Result<(Lease, Driving), EngineError> {
        let driver = repave_store::Driver::current();
        let (group, key) = (run.group.as_str(), run.lease_key());
        let run = &run.id;
        let Some(claim) = Driving::claim(run) else {
            let held = self.store.current_lease(&key)?;
            return Err(EngineError::Leased {
                group: group.to_string(),
                holder: run.to_string(),
                expires_at: held.map_or(0, |l| l.expires_at.millis()),
                driver: Some(driver),
            });
        };
        let lease =
            match self
                .store
                .acquire_lease_by(&key, run.as_str(), &driver, self.opts.lease_ttl, self.clock.now())
            {
                Ok(l) => l,
                Err(StoreError::LeaseHeld {
                    holder,
                    expires_at,
                    driver,
                    ..
                }) => {
                    return Err(EngineError::Leased {
                        group: group.to_string(),
                        holder,
                        expires_at: expires_at.millis(),
                        driver,
                    })
                }
                Err(e) => return Err(e.into()),
            };
        Ok((lease, claim))
    }

    /// The event a pending, never-seen cancel request follows (see
    /// [`Ctx::check_cancel`]): the last time a driver started or stopped.
    fn unseen_cancel(&self, run: &RunId) -> Result<Option<i64>, EngineError> {
        let mut last = 0;
        let mut after = 0;
        loop {
            let page = self.store.events(run, after, 1000)?;
            let Some(end) = page.last().map(|e| e.id) else { break };
            for e in &page {
                let boundary = e.step.as_deref() == Some("run")
                    && (e.message.starts_with("driven by process") || e.message.starts_with("run "));
                if boundary {
                    last = e.id;
                }
            }
            after = end;
        }
        Ok(self.store.cancel_requested(run, last)?.then_some(last))
    }

    /// Continue an interrupted or paused run from its journal. Refused
    /// (exit 4) while another live process drives it; of two racing
    /// resumes, one proceeds.
    pub async fn resume(&self, id: &RunId) -> Result<RunOutcome, EngineError> {
        let run = self
            .store
            .get_run(id)?
            .ok_or_else(|| EngineError::UnknownRun(id.to_string()))?;
        if run.state.is_terminal() {
            return Err(EngineError::NotResumable {
                run: id.to_string(),
                state: run.state.as_str().to_string(),
            });
        }
        let pipeline: Pipeline =
            serde_json::from_value(run.config.clone()).map_err(|e| EngineError::Config(e.to_string()))?;
        let (lease, claim) = self.lease(&run)?;
        // Read again under the lease: a racing driver may have ended it.
        let run = self
            .store
            .get_run(id)?
            .ok_or_else(|| EngineError::UnknownRun(id.to_string()))?;
        if run.state.is_terminal() {
            if let Err(e) = self.store.release_lease(&lease) {
                tracing::warn!(error = %e, "could not release lease");
            }
            return Err(EngineError::NotResumable {
                run: id.to_string(),
                state: run.state.as_str().to_string(),
            });
        }
        self.drive(run, pipeline, lease, claim).await
    }

    async fn drive(
        &self,
        run: RunRecord,
        pipeline: Pipeline,
        lease: Lease,
        _driving: Driving,
    ) -> Result<RunOutcome, EngineError> {
        let ctx = Ctx {
            engine: self,
            health: Mutex::new(HealthSettings::new(&pipeline.rollout, &Default::default())),
            timing: Mutex::new(Default::default()),
            run,
            pipeline,
            lease: Mutex::new(lease),
            last_roll: Mutex::new(None),
            driver_event: std::sync::atomic::AtomicI64::new(0),
            commands: Mutex::new((String::new(), 0)),
        };
        let span = tracing::info_span!("run", run = %ctx.run.id, pipeline = %ctx.run.pipeline, group = %ctx.run.group);
        let _guard = span.enter();
        self.store
            .set_run_state(&ctx.run.id, RunState::Running, None, self.clock.now())?;
        self.observer.on_event(&EngineEvent::RunStarted {
            run: ctx.run.id.clone(),
            pipeline: ctx.run.pipeline.clone(),
        });
        // Which process drives the run: `status` tells an interrupted run
        // (its process gone) from a live one before the lease expires.
        // A cancel requested while nobody drove the run (after its last
        // driver started, or after it last stopped) is this driver's to
        // honour: it was never seen.
        let unseen_cancel = self.unseen_cancel(&ctx.run.id)?;
        let me = repave_store::Driver::current();
        let driver = NewEvent {
            run: ctx.run.id.clone(),
            at: self.clock.now(),
            level: "info".into(),
            step: Some("run".into()),
            message: format!("driven by process {} on {}", me.pid, me.host),
            data: serde_json::json!({ "pid": me.pid, "driver": me }),
        };
        let driver_event = self.store.append_event(&driver)?;
        ctx.driver_event.store(
            unseen_cancel.unwrap_or(driver_event),
            std::sync::atomic::Ordering::Relaxed,
        );
        let mut summary = RunSummary::default();
        let calls_before = self.provider.api_calls();
        let result = match ctx.load_health().await {
            Err(e) => Err(e),
            Ok(()) => match ctx.run.kind {
                RunKind::Run => full_run(&ctx, &mut summary, true, true).await,
                RunKind::Bake => full_run(&ctx, &mut summary, false, false).await,
                RunKind::Roll => roll_only(&ctx, &mut summary).await,
                RunKind::Rollback => rollback_only(&ctx, &mut summary).await,
            },
        };
        // Another process took the run over (it presumed this one dead):
        // it owns the run's record now; write nothing more.
        if let Err(e @ EngineError::Store(StoreError::LeaseLost { .. })) = result {
            tracing::warn!(error = %e, "another process drives this run now; stopping without recording");
            return Err(e);
        }
        let (state, error) = match &result {
            Ok(()) if summary.rolled_back => (RunState::RolledBack, summary.error.clone()),
            Ok(()) => (RunState::Succeeded, None),
            Err(EngineError::Paused(reason)) => (
                RunState::Paused,
                Some(format!("paused: {reason}; `repave resume {}` continues", ctx.run.id)),
            ),
            Err(EngineError::Cancelled) => {
                // A roll that was interrupted keeps its place: resumable.
                let rolling = ["roll", "rollback_roll"]
                    .iter()
                    .map(|s| self.store.step(&ctx.run.id, s))
                    .collect::<Result<Vec<_>, _>>()?
                    .iter()
                    .any(Option::is_some);
                if rolling || ctx.output::<PublishOutput>("publish")?.is_some() || ctx.run.kind == RunKind::Roll {
                    (
                        RunState::Paused,
                        Some("cancelled during roll; `repave resume` continues".to_string()),
                    )
                } else {
                    (RunState::Cancelled, Some("cancelled".to_string()))
                }
            }
            Err(e) => (RunState::Failed, Some(e.to_string())),
        };
        if summary.error.is_none() {
            summary.error = error.clone();
        }
        summary.api_calls = self
            .provider
            .api_calls()
            .into_iter()
            .map(|(op, n)| (op.clone(), n - calls_before.get(&op).copied().unwrap_or(0)))
            .filter(|(_, n)| *n > 0)
            .collect();
        let summary_json = serde_json::to_value(&summary).expect("summary serializes");
        self.store.set_run_summary(&ctx.run.id, &summary_json)?;
        self.store
            .set_run_state(&ctx.run.id, state, error.as_deref(), self.clock.now())?;
        // The lease says a process is acting on the group now; a paused run
        // keeps the group from new runs by being unfinished (`start`
        // refuses, naming it), not by holding the lease of a process that
        // stopped driving it.
        let lease = ctx.lease.lock().expect("lease lock").clone();
        if let Err(e) = self.store.release_lease(&lease) {
            tracing::warn!(error = %e, "could not release lease");
        }
        self.observer.on_event(&EngineEvent::RunFinished {
            run: ctx.run.id.clone(),
            state,
        });
        ctx.log(
            "run",
            format!("run {}", state.as_str()),
            serde_json::json!({ "error": error }),
        );
        let steps = self
            .store
            .steps(&ctx.run.id)?
            .into_iter()
            .map(|s| StepTiming {
                name: s.name,
                state: format!("{:?}", s.state).to_lowercase(),
                seconds: s.ended_at.map(|e| e.since(s.started_at).as_secs_f64()).unwrap_or(0.0),
                attempts: s.attempts,
            })
            .collect();
        Ok(RunOutcome {
            run: ctx.run.id.clone(),
            pipeline: ctx.run.pipeline.clone(),
            state: state.as_str().to_string(),
            summary,
            steps,
        })
    }
}

/// Runs this process drives now: the store's lease tells processes apart,
/// this tells apart two tasks of one process (two API resumes in a server).
fn driving() -> std::sync::MutexGuard<'static, std::collections::HashSet<String>> {
    static DRIVING: std::sync::OnceLock<Mutex<std::collections::HashSet<String>>> = std::sync::OnceLock::new();
    DRIVING
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

/// Marks a run as driven by this process while it lives.
struct Driving(String);

impl Driving {
    /// `None` when a task of this process already drives `run`.
    fn claim(run: &RunId) -> Option<Driving> {
        driving().insert(run.to_string()).then(|| Driving(run.to_string()))
    }
}

impl Drop for Driving {
    fn drop(&mut self) {
        driving().remove(&self.0);
    }
}

/// resolve → bake → test → (publish → roll → verify → retain).
async fn full_run(ctx: &Ctx<'_>, summary: &mut RunSummary, publish: bool, roll_it: bool) -> Result<(), EngineError> {
    let resolved: ResolveOutput = ctx
        .step("resolve", serde_json::json!({}), || bake::resolve(ctx))
        .await?;
    summary.source_image = Some(resolved.source_image.clone());
    let baked = bake_image(ctx, &resolved, summary).await;
    let image = match baked {
        Ok(Some(image)) => image,
        // Nothing selected to install: an unchanged image is never
        // published as patched.
        Ok(None) => {
            summary.nothing_to_install = true;
            return Ok(());
        }
        Err(e) => {
            // Nothing was published: clean up, and say whether what was made
            // is bad or merely unpublished.
            bake::cleanup(ctx, &e).await;
            return Err(e);
        }
    };
    summary.new_image = Some(image.clone());
    if !publish {
        return Ok(());
    }
    let published: PublishOutput = ctx
        .step(
            "publish",
            serde_json::json!({ "image": image, "previous": resolved }),
            || publish::publish(ctx, &image, &resolved),
        )
        .await?;
    if !roll_it {
        return Ok(());
    }
    let policy = ctx.policy();
    let rolled = roll_and_verify(ctx, "roll", "verify", &image, &published.launch_spec, &policy, None).await;
    match rolled {
        Ok(report) => summary.roll = Some(report),
        Err(e) if !e.blames_image() => {
            summary.roll = ctx.last_roll.lock().expect("last roll").take();
            return Err(pause_unless_image(e));
        }
        Err(e) => {
            summary.roll = ctx.last_roll.lock().expect("last roll").take();
            if !ctx.pipeline.rollout.auto_rollback {
                return Err(e);
            }
            let reason = e.to_string();
            summary.error = Some(reason.clone());
            let report = publish::rollback(ctx, &published, &image, &reason).await?;
            summary.rollback_roll = Some(report);
            summary.rolled_back = true;
            return Ok(());
        }
    }
    let deleted: Vec<ImageId> = ctx
        .step(
            "retain",
            serde_json::json!({ "keep": ctx.pipeline.retention.keep }),
            || retain::retain(ctx, &published),
        )
        .await?;
    summary.retained_deleted = deleted;
    Ok(())
}

/// `None`: the selection resolved to nothing and `patch.when_empty` says
/// stop (the builder is gone, no image was made).
async fn bake_image(
    ctx: &Ctx<'_>,
    resolved: &ResolveOutput,
    summary: &mut RunSummary,
) -> Result<Option<ImageId>, EngineError> {
    let src = resolved.source_image.clone();
    let builder: BuilderOutput = ctx
        .step("launch_builder", serde_json::json!({ "image": src }), || {
            bake::launch_builder(ctx, resolved)
        })
        .await?;
    let id = builder.builder.clone();
    ctx.step("wait_ready", serde_json::json!({ "builder": id }), || {
        bake::wait_ready(ctx, &id, "wait_ready")
    })
    .await?;
    let selection = ctx.pipeline.patch.selection();
    let scan: ScanOutput = ctx
        .step("scan", serde_json::json!({ "selection": selection }), || {
            bake::scan(ctx, &id)
        })
        .await?;
    if scan.updates.is_empty() && ctx.pipeline.patch.when_empty == repave_core::config::WhenEmpty::Stop {
        ctx.step(
            "terminate_builder",
            serde_json::json!({ "builder": id, "why": "nothing to install" }),
            || bake::nothing_to_install(ctx, &id),
        )
        .await?;
        return Ok(None);
    }
    let ids: Vec<&str> = scan.updates.iter().map(|u| u.id.as_str()).collect();
    let patched: PatchOutput = ctx
        .step("patch", serde_json::json!({ "frozen": ids }), || {
            bake::patch(ctx, &id, &scan)
        })
        .await?;
    summary.installed_updates = patched.installed.clone();
    if !ctx.pipeline.validate.is_empty() {
        ctx.step(
            "validate",
            serde_json::json!({ "commands": ctx.pipeline.validate }),
            || bake::validate(ctx, &id),
        )
        .await?;
    }
    ctx.step("stop_builder", serde_json::json!({ "builder": id }), || {
        bake::stop_builder(ctx, &id)
    })
    .await?;
    let image: ImageOutput = ctx
        .step("create_image", serde_json::json!({ "builder": id }), || {
            bake::create_image(ctx, &id, resolved, &patched)
        })
        .await?;
    ctx.step("terminate_builder", serde_json::json!({ "builder": id }), || {
        bake::terminate(ctx, &id, "terminate_builder")
    })
    .await?;
    if ctx.pipeline.test.enabled {
        ctx.step("test_image", serde_json::json!({ "image": image.image }), || {
            bake::test_image(ctx, &image.image)
        })
        .await?;
    }
    Ok(Some(image.image))
}

pub(crate) async fn roll_and_verify(
    ctx: &Ctx<'_>,
    roll_step: &str,
    verify_step: &str,
    image: &ImageId,
    spec: &repave_core::provider::LaunchSpecRef,
    policy: &RollPolicy,
    base_hint: Option<u32>,
) -> Result<RollReport, EngineError> {
    crate::processes::suspended_during(ctx, roll_step, || {
        roll_and_verify_now(ctx, roll_step, verify_step, image, spec, policy, base_hint)
    })
    .await
}

async fn roll_and_verify_now(
    ctx: &Ctx<'_>,
    roll_step: &str,
    verify_step: &str,
    image: &ImageId,
    spec: &repave_core::provider::LaunchSpecRef,
    policy: &RollPolicy,
    base_hint: Option<u32>,
) -> Result<RollReport, EngineError> {
    if ctx.pipeline.rollout.strategy == repave_core::config::Strategy::Native {
        let intent = serde_json::json!({ "target": image, "launch_spec": spec, "strategy": "native" });
        let report: RollReport = ctx
            .step(roll_step, intent, || crate::native::roll(ctx, roll_step, image, spec))
            .await?;
        ctx.step(verify_step, serde_json::json!({ "target": image }), || {
            roll::verify(ctx, image)
        })
        .await?;
        return with_left_behind(ctx, verify_step, image, report).await;
    }
    let base = roll::base_capacity(ctx, roll_step, base_hint).await?;
    // Before any surge: what the group draws from its warm pool must be on
    // the new image.
    let warm_pool_replaced = crate::warm_pool::refresh(ctx, roll_step, image).await?;
    let intent = roll::RollIntent {
        target: image.clone(),
        policy: policy.clone(),
        base_desired: base,
    }
    .to_json();
    let mut report: RollReport = ctx
        .step(roll_step, intent, || roll::roll(ctx, roll_step, image, policy, base))
        .await?;
    report.warm_pool_replaced = warm_pool_replaced;
    ctx.step(verify_step, serde_json::json!({ "target": image }), || {
        roll::verify(ctx, image)
    })
    .await?;
    with_left_behind(ctx, verify_step, image, report).await
}

/// The verified roll's report with the members the policy left on their
/// old image, said in the run's events too.
async fn with_left_behind(
    ctx: &Ctx<'_>,
    verify_step: &str,
    image: &ImageId,
    mut report: RollReport,
) -> Result<RollReport, EngineError> {
    report.left_on_old_image = roll::left_on_old_image(ctx, image).await?;
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

/// A roll that stopped for a reason that is not the image's (a lost
/// provider or fleet process, a timeout, a limit) pauses: the image stays
/// good, the fleet stays as it is, `resume` continues once the cause is
/// fixed. Cancel, pause and a lost lease pass through as they are.
fn pause_unless_image(e: EngineError) -> EngineError {
    match e {
        e if e.blames_image() => e,
        e @ (EngineError::Cancelled | EngineError::Paused(_)) => e,
        e @ EngineError::Store(StoreError::LeaseLost { .. }) => e,
        e => EngineError::Paused(format!("the roll stopped, not because of the image: {e}")),
    }
}

/// `repave roll`: put the group on the golden parameter's image.
async fn roll_only(ctx: &Ctx<'_>, summary: &mut RunSummary) -> Result<(), EngineError> {
    let resolved: ResolveOutput = ctx
        .step("resolve", serde_json::json!({}), || bake::resolve(ctx))
        .await?;
    let image = resolved.source_image.clone();
    summary.new_image = Some(image.clone());
    let spec: repave_core::provider::LaunchSpecRef = ctx
        .step("set_launch_spec", serde_json::json!({ "image": image }), || {
            publish::publish_launch_spec(ctx, &image)
        })
        .await?;
    let policy = ctx.policy();
    let rolled = roll_and_verify(ctx, "roll", "verify", &image, &spec, &policy, None).await;
    summary.roll = Some(rolled.map_err(pause_unless_image)?);
    Ok(())
}

/// `repave rollback`: golden parameter and launch spec back to the previous
/// image, and the fleet with them.
async fn rollback_only(ctx: &Ctx<'_>, summary: &mut RunSummary) -> Result<(), EngineError> {
    let target: ImageId = ctx
        .step("resolve_previous", serde_json::json!({}), || {
            publish::previous_image(ctx)
        })
        .await?;
    summary.new_image = Some(target.clone());
    ctx.step("restore_parameter", serde_json::json!({ "image": target }), || {
        publish::restore_parameter(ctx, &target)
    })
    .await?;
    let spec: repave_core::provider::LaunchSpecRef = ctx
        .step("set_launch_spec", serde_json::json!({ "image": target }), || {
            publish::publish_launch_spec(ctx, &target)
        })
        .await?;
    let policy = ctx.policy();
    let rolled = roll_and_verify(ctx, "roll", "verify", &target, &spec, &policy, None).await;
    summary.roll = Some(rolled.map_err(pause_unless_image)?);
    Ok(())
}
