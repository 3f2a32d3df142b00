//! The run executor: starting and resuming runs (one driver per run, the
//! group lease), driving one through its sequence ([`crate::sequence`]),
//! and recording how it ended.

use crate::context::Ctx;
use crate::error::EngineError;
use crate::events::{EngineEvent, Observer};
use crate::publish::PublishOutput;
use crate::sequence;
use crate::summary::{RunOutcome, RunSummary, StepTiming};
use repave_core::config::Pipeline;
use repave_core::ids::Clock;
use repave_core::provider::Provider;
use repave_core::{RunId, Timestamp};
use repave_store::{Lease, NewEvent, NewRun, RunKind, RunRecord, RunState, Store, StoreError};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

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
        // Every event the run logs, in any of its steps, carries these.
        let span = tracing::info_span!("run", run = %run.id, pipeline = %run.pipeline, group = %run.group);
        self.drive_in(Ctx::new(self, run, pipeline, lease))
            .instrument(span)
            .await
    }

    async fn drive_in(&self, ctx: Ctx<'_>) -> Result<RunOutcome, EngineError> {
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
        ctx.set_driver_event(unseen_cancel.unwrap_or(driver_event));
        let mut summary = RunSummary::default();
        let calls_before = self.provider.api_calls();
        let result = match ctx.load_health().await {
            Err(e) => Err(e),
            Ok(()) => match ctx.run.kind {
                RunKind::Run => sequence::full_run(&ctx, &mut summary, true, true).await,
                RunKind::Bake => sequence::full_run(&ctx, &mut summary, false, false).await,
                RunKind::Roll => sequence::roll_only(&ctx, &mut summary).await,
                RunKind::Rollback => sequence::rollback_only(&ctx, &mut summary).await,
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
        if let Err(e) = self.store.release_lease(&ctx.lease()) {
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
