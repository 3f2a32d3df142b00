//! What every part of the server shares: config, store, providers, the
//! registry of runs this process drives, metrics and the webhook queue.

use crate::metrics::Metrics;
use crate::runs::RunRegistry;
use crate::schedule::WindowSchedule;
use crate::webhooks::Notifier;
use crate::ServerError;
use repave_core::config::Config;
use repave_core::ids::Clock;
use repave_core::provider::Provider;
use repave_engine::EngineOptions;
use repave_store::Store;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Everything [`crate::Server::new`] needs; the binary builds it from
/// `repave.toml` the same way `repave run` builds an engine.
pub struct ServerOptions {
    pub config: Config,
    /// Bearer token for mutating calls; `None` refuses every mutating call.
    pub token: Option<String>,
    pub store: Arc<Store>,
    /// The provider of each pipeline, by pipeline name.
    pub providers: BTreeMap<String, Arc<dyn Provider>>,
    pub clock: Arc<dyn Clock>,
    /// The engine timing of each pipeline, by pipeline name: what
    /// `EngineOptions::for_pipeline` gives, as for `repave run`.
    pub engine: BTreeMap<String, EngineOptions>,
    /// Longest the scheduler sleeps between looks at the clock.
    pub scheduler_tick: Duration,
    /// How long shutdown waits for runs to reach a safe point.
    pub shutdown_grace: Duration,
    /// How long an HTTP client may take to send a request's headers,
    /// counted from when it connected or got its last response (this also
    /// closes idle keep-alive connections).
    pub header_read_timeout: Duration,
}

/// The scheduler's view of one pipeline (shown by the API and dashboard).
/// `enabled`, `consecutive_failures` and `disabled_reason` live in the store
/// (a schedule that disabled itself stays disabled across restarts, and
/// `repave schedule enable` from another process takes effect at once); the
/// rest is this process's memory.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ScheduleState {
    pub enabled: bool,
    pub consecutive_failures: u32,
    /// Why the schedule disabled itself (or who disabled it).
    pub disabled_reason: Option<String>,
    /// Why the last window did not start a run.
    pub last_skip: Option<String>,
    /// Start (ms) of the last window the scheduler acted on.
    pub last_window_start: Option<i64>,
}

pub(crate) struct Shared {
    pub config: Config,
    pub token: Option<String>,
    pub store: Arc<Store>,
    pub providers: BTreeMap<String, Arc<dyn Provider>>,
    pub clock: Arc<dyn Clock>,
    pub engine: BTreeMap<String, EngineOptions>,
    pub scheduler_tick: Duration,
    pub shutdown_grace: Duration,
    pub header_read_timeout: Duration,
    pub windows: BTreeMap<String, WindowSchedule>,
    pub schedules: Mutex<BTreeMap<String, ScheduleState>>,
    pub runs: RunRegistry,
    pub metrics: Metrics,
    pub notifier: Notifier,
}

impl Shared {
    pub fn new(o: ServerOptions) -> Result<Arc<Shared>, ServerError> {
        let mut windows = BTreeMap::new();
        let mut schedules = BTreeMap::new();
        for (name, p) in &o.config.pipelines {
            if !o.providers.contains_key(name) {
                return Err(ServerError::MissingProvider(name.clone()));
            }
            if !o.engine.contains_key(name) {
                return Err(ServerError::MissingEngineOptions(name.clone()));
            }
            if let Some(w) = &p.window {
                let ws = WindowSchedule::parse(w).map_err(|e| ServerError::Window {
                    pipeline: name.clone(),
                    message: e,
                })?;
                if ws.next_fire(o.clock.now()).is_none() {
                    return Err(ServerError::Window {
                        pipeline: name.clone(),
                        message: format!("{:?} never fires", w.cron),
                    });
                }
                windows.insert(name.clone(), ws);
                schedules.insert(
                    name.clone(),
                    ScheduleState {
                        enabled: true,
                        ..Default::default()
                    },
                );
            }
        }
        let notifier = Notifier::new(o.config.server.webhooks.clone(), o.store.clone(), o.clock.clone());
        Ok(Arc::new(Shared {
            config: o.config,
            token: o.token,
            store: o.store,
            providers: o.providers,
            clock: o.clock,
            engine: o.engine,
            scheduler_tick: o.scheduler_tick,
            shutdown_grace: o.shutdown_grace,
            header_read_timeout: o.header_read_timeout,
            windows,
            schedules: Mutex::new(schedules),
            runs: RunRegistry::default(),
            metrics: Metrics::default(),
            notifier,
        }))
    }

    /// The schedule of a pipeline with a window: this process's view with
    /// the stored state laid over it.
    pub fn schedule(&self, pipeline: &str) -> Option<ScheduleState> {
        let schedules = self.schedules.lock().expect("schedules");
        let mut s = schedules.get(pipeline).cloned()?;
        self.overlay_stored(pipeline, &mut s);
        Some(s)
    }

    fn overlay_stored(&self, pipeline: &str, s: &mut ScheduleState) {
        match self.store.schedule(pipeline) {
            Ok(Some(rec)) => {
                s.enabled = rec.enabled;
                s.consecutive_failures = rec.consecutive_failures;
                s.disabled_reason = rec.disabled_reason;
            }
            Ok(None) => {}
            Err(e) => {
                tracing::error!(pipeline, error = %e, "could not read the schedule's state; using this process's")
            }
        }
    }

    /// Change a pipeline's schedule; the durable part is written to the
    /// store when it changed. Returns the new state (`None` for a pipeline
    /// without a window).
    pub fn update_schedule(&self, pipeline: &str, f: impl FnOnce(&mut ScheduleState)) -> Option<ScheduleState> {
        let mut schedules = self.schedules.lock().expect("schedules");
        let s = schedules.get_mut(pipeline)?;
        self.overlay_stored(pipeline, s);
        let before = (s.enabled, s.consecutive_failures, s.disabled_reason.clone());
        f(s);
        if before != (s.enabled, s.consecutive_failures, s.disabled_reason.clone()) {
            let rec = repave_store::ScheduleRecord {
                pipeline: pipeline.to_string(),
                enabled: s.enabled,
                consecutive_failures: s.consecutive_failures,
                disabled_reason: s.disabled_reason.clone(),
                updated_at: self.clock.now(),
            };
            if let Err(e) = self.store.put_schedule(&rec) {
                tracing::error!(pipeline, error = %e, "could not persist the schedule's state");
            }
        }
        Some(s.clone())
    }
}
