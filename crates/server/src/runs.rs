//! The runs this process drives: one engine per run (each with its own
//! cancellation token, a child of the server's root token), the live roll
//! progress fed by the engine's `RollTick` events, and the hooks that turn
//! engine events into metrics and webhooks.

use crate::state::Shared;
use crate::webhooks::RunNotice;
use repave_core::config::RunEvent;
use repave_core::RunId;
use repave_engine::{Engine, EngineError, EngineEvent, Observer, RunOutcome};
use repave_store::{RunKind, RunState};
use serde::Serialize;
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, Weak};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Samples kept per run for the progress chart; older ones are thinned out.
const MAX_SAMPLES: usize = 2000;
/// Finished runs whose progress stays in memory.
const KEEP_FINISHED: usize = 32;

/// One roll tick, as the progress chart draws it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ProgressSample {
    /// Wall time (ms since the epoch).
    pub at: i64,
    pub in_service: u32,
    pub floor: u32,
    pub old: u32,
    pub new: u32,
    pub draining: u32,
    pub live: u32,
    pub replaced: u32,
    pub total: u32,
}

#[derive(Default)]
pub(crate) struct RunRegistry {
    live: Mutex<BTreeMap<String, LiveRun>>,
    progress: Mutex<BTreeMap<String, VecDeque<ProgressSample>>>,
    finished: Mutex<VecDeque<String>>,
    pub root: CancellationToken,
    pub tracker: TaskTracker,
    /// Set at shutdown: a baking run is dropped as soon as its current
    /// step is done.
    pub stopping: std::sync::atomic::AtomicBool,
}

struct LiveRun {
    cancel: CancellationToken,
    pipeline: String,
    abort: Option<tokio::task::AbortHandle>,
}

/// What to do: start a new run or continue one from its journal.
#[derive(Debug, Clone)]
pub(crate) enum Launch {
    Start { pipeline: String, kind: RunKind },
    Resume { run: RunId, pipeline: String },
}

impl RunRegistry {
    /// Cancel a run driven here; false when this process is not driving it.
    pub fn cancel(&self, run: &str) -> bool {
        match self.live.lock().expect("live").get(run) {
            Some(l) => {
                l.cancel.cancel();
                true
            }
            None => false,
        }
    }

    /// Drop a run's task where it stands (shutdown, between steps): the
    /// run stays `running` in the journal and resumes on the next start.
    pub fn abort(&self, run: &str) {
        if let Some(l) = self.live.lock().expect("live").remove(run) {
            if let Some(a) = l.abort {
                a.abort();
            }
        }
    }

    fn set_abort(&self, run: &str, handle: tokio::task::AbortHandle) {
        if let Some(l) = self.live.lock().expect("live").get_mut(run) {
            l.abort = Some(handle);
        }
    }

    pub fn is_live(&self, run: &str) -> bool {
        self.live.lock().expect("live").contains_key(run)
    }

    /// Runs driven here, with their pipeline.
    pub fn live_runs(&self) -> Vec<(String, String)> {
        self.live
            .lock()
            .expect("live")
            .iter()
            .map(|(r, l)| (r.clone(), l.pipeline.clone()))
            .collect()
    }

    pub fn progress(&self, run: &str) -> Option<Vec<ProgressSample>> {
        self.progress
            .lock()
            .expect("progress")
            .get(run)
            .map(|s| s.iter().cloned().collect())
    }

    fn push_sample(&self, run: &str, sample: ProgressSample) {
        let mut all = self.progress.lock().expect("progress");
        let samples = all.entry(run.to_string()).or_default();
        if samples.len() >= MAX_SAMPLES {
            // Keep the shape of a long roll: drop every other old sample.
            let kept: VecDeque<_> = samples.iter().step_by(2).cloned().collect();
            *samples = kept;
        }
        samples.push_back(sample);
    }

    fn finish(&self, run: &str) {
        self.live.lock().expect("live").remove(run);
        let mut finished = self.finished.lock().expect("finished");
        finished.push_back(run.to_string());
        while finished.len() > KEEP_FINISHED {
            if let Some(old) = finished.pop_front() {
                self.progress.lock().expect("progress").remove(&old);
            }
        }
    }
}

/// Feeds one run's engine events to the registry, metrics and webhooks.
struct RunObserver {
    shared: Weak<Shared>,
    cancel: CancellationToken,
    pipeline: String,
    started: Mutex<Option<oneshot::Sender<RunId>>>,
}

impl Observer for RunObserver {
    fn on_event(&self, event: &EngineEvent) {
        let Some(shared) = self.shared.upgrade() else {
            return;
        };
        let now = shared.clock.now().millis();
        match event {
            EngineEvent::RunStarted { run, pipeline } => {
                shared.runs.live.lock().expect("live").insert(
                    run.to_string(),
                    LiveRun {
                        cancel: self.cancel.clone(),
                        pipeline: pipeline.clone(),
                        abort: None,
                    },
                );
                if let Some(tx) = self.started.lock().expect("started").take() {
                    let _ = tx.send(run.clone());
                }
                shared
                    .notifier
                    .notify(RunNotice::new(run, pipeline, RunEvent::Started, None));
            }
            EngineEvent::RollTick {
                run,
                status,
                replaced,
                total,
            } => {
                let sample = ProgressSample {
                    at: now,
                    in_service: status.in_service,
                    floor: status.floor,
                    old: status.old,
                    new: status.new,
                    draining: status.draining,
                    live: status.live,
                    replaced: *replaced,
                    total: *total,
                };
                shared.runs.push_sample(run.as_str(), sample);
            }
            EngineEvent::StepFinished { run, step, elapsed, .. } => {
                shared.metrics.step_finished(step, *elapsed);
                if shared.runs.stopping.load(std::sync::atomic::Ordering::SeqCst) {
                    // Shutdown: a step just reached its safe end. A rolling
                    // run pauses through its token; a baking one is dropped
                    // here and resumed from the journal on the next start.
                    if crate::scheduler::is_rolling(&shared, run) {
                        self.cancel.cancel();
                    } else {
                        shared.runs.abort(run.as_str());
                    }
                }
            }
            EngineEvent::RunFinished { run, state } => {
                shared.runs.finish(run.as_str());
                shared.metrics.run_finished(&self.pipeline, state.as_str());
                let error = shared.store.get_run(run).ok().flatten().and_then(|r| r.error);
                let event = match state {
                    RunState::Succeeded => Some(RunEvent::Succeeded),
                    RunState::Failed => Some(RunEvent::Failed),
                    RunState::RolledBack => Some(RunEvent::RolledBack),
                    RunState::Pending | RunState::Running | RunState::Paused | RunState::Cancelled => None,
                };
                if let Some(e) = event {
                    shared.notifier.notify(RunNotice::new(run, &self.pipeline, e, error));
                }
            }
            _ => {}
        }
    }
}

pub(crate) type RunTask = JoinHandle<Result<RunOutcome, EngineError>>;

/// Start or resume a run on its own engine; returns once the run exists
/// (its id) or was refused (e.g. [`EngineError::Leased`]). The run goes on
/// in the background, tracked for shutdown.
pub(crate) async fn launch(
    shared: &Arc<Shared>,
    what: Launch,
    cutoff: Option<repave_core::Timestamp>,
) -> Result<(RunId, RunTask), EngineError> {
    let pipeline_name = match &what {
        Launch::Start { pipeline, .. } | Launch::Resume { pipeline, .. } => pipeline.clone(),
    };
    let provider = shared
        .providers
        .get(&pipeline_name)
        .cloned()
        .ok_or_else(|| EngineError::Config(format!("unknown pipeline {pipeline_name:?}")))?;
    let options = shared
        .engine
        .get(&pipeline_name)
        .cloned()
        .ok_or_else(|| EngineError::Config(format!("no engine options for pipeline {pipeline_name:?}")))?;
    let cancel = shared.runs.root.child_token();
    let (tx, rx) = oneshot::channel();
    let observer = Arc::new(RunObserver {
        shared: Arc::downgrade(shared),
        cancel: cancel.clone(),
        pipeline: pipeline_name.clone(),
        started: Mutex::new(Some(tx)),
    });
    let engine = Engine::new(
        provider,
        shared.store.clone(),
        shared.clock.clone(),
        observer,
        cancel,
        // A scheduled run's roll stops starting replacements at the
        // window's cutoff and pauses once nothing is in flight.
        repave_engine::EngineOptions {
            roll_cutoff: cutoff,
            ..options
        },
    );
    let pipeline = shared.config.pipelines.get(&pipeline_name).cloned();
    let mut task: RunTask = shared.runs.tracker.spawn(async move {
        match what {
            Launch::Start { pipeline: name, kind } => {
                let p = pipeline.ok_or_else(|| EngineError::Config(format!("unknown pipeline {name:?}")))?;
                engine.start(&name, &p, kind).await
            }
            Launch::Resume { run, .. } => engine.resume(&run).await,
        }
    });
    tokio::select! {
        biased;
        started = rx => match started {
            Ok(id) => {
                shared.runs.set_abort(id.as_str(), task.abort_handle());
                Ok((id, task))
            }
            // The observer is gone only if the run task ended without
            // starting: its result says why.
            Err(_) => Err(join(task.await)),
        },
        done = &mut task => match done {
            Ok(Ok(outcome)) => {
                let id = outcome.run.clone();
                Ok((id, tokio::spawn(async move { Ok(outcome) })))
            }
            other => Err(join(other)),
        },
    }
}

fn join(r: Result<Result<RunOutcome, EngineError>, tokio::task::JoinError>) -> EngineError {
    match r {
        Ok(Ok(o)) => EngineError::Config(format!("run {} ended before it started", o.run)),
        Ok(Err(e)) => e,
        Err(e) => EngineError::Config(format!("run task: {e}")),
    }
}
