//! The context of one run in progress: what every step reads (the run, its
//! pipeline, the provider, the readiness settings in effect) and the
//! journal's one entry point, [`Ctx::step`]: intent → side effect → output,
//! with the lease kept and cancel honoured between steps.

use crate::error::EngineError;
use crate::events::EngineEvent;
use crate::executor::Engine;
use crate::summary::RollReport;
use repave_core::config::Pipeline;
use repave_core::provider::Provider;
use repave_core::rollout::{HealthSettings, RollPolicy};
use repave_core::{RunId, Timestamp};
use repave_store::{Lease, NewEvent, RunRecord, StepState};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;
use tracing::Instrument;

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

impl<'a> Ctx<'a> {
    /// The context of a run `engine` drives now, holding `lease`.
    pub(crate) fn new(engine: &'a Engine, run: RunRecord, pipeline: Pipeline, lease: Lease) -> Ctx<'a> {
        Ctx {
            engine,
            health: Mutex::new(HealthSettings::new(&pipeline.rollout, &Default::default())),
            timing: Mutex::new(Default::default()),
            run,
            pipeline,
            lease: Mutex::new(lease),
            last_roll: Mutex::new(None),
            driver_event: std::sync::atomic::AtomicI64::new(0),
            commands: Mutex::new((String::new(), 0)),
        }
    }

    /// Cancel requests after event `id` stop this driver.
    pub(crate) fn set_driver_event(&self, id: i64) {
        self.driver_event.store(id, std::sync::atomic::Ordering::Relaxed);
    }

    /// The group lease as last renewed.
    pub(crate) fn lease(&self) -> Lease {
        self.lease.lock().expect("lease lock").clone()
    }

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
    pub(crate) async fn load_health(&self) -> Result<(), EngineError> {
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
        let span = tracing::info_span!(
            "step",
            run = %self.run.id,
            pipeline = %self.run.pipeline,
            group = %self.run.group,
            step = name
        );
        match f().instrument(span).await {
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
