//! Progress bars on stderr while a run works (hidden when stderr is not a
//! terminal or with `--json`).

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use repave_engine::{EngineEvent, Observer};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

pub struct Bars {
    multi: MultiProgress,
    steps: Mutex<HashMap<String, ProgressBar>>,
    roll: Mutex<Option<ProgressBar>>,
    quiet: bool,
}

impl Bars {
    pub fn new(quiet: bool) -> Self {
        let multi = MultiProgress::new();
        if quiet {
            multi.set_draw_target(ProgressDrawTarget::hidden());
        }
        Self {
            multi,
            steps: Mutex::new(HashMap::new()),
            roll: Mutex::new(None),
            quiet,
        }
    }

    /// A line above the bars (or plain stderr without a terminal).
    pub fn println(&self, line: &str) {
        if self.quiet {
            return;
        }
        if self.multi.is_hidden() {
            eprintln!("{line}");
        } else {
            let _ignored_when_closed = self.multi.println(line);
        }
    }

    pub fn spinner(&self, msg: &str) -> ProgressBar {
        let pb = self.multi.add(ProgressBar::new_spinner());
        pb.set_style(ProgressStyle::with_template("{spinner:.cyan} {msg} {elapsed:.dim}").expect("template"));
        pb.set_message(msg.to_string());
        pb.enable_steady_tick(Duration::from_millis(120));
        pb
    }
}

impl Observer for Bars {
    fn on_event(&self, event: &EngineEvent) {
        match event {
            EngineEvent::StepStarted { step, .. } => {
                let pb = self.spinner(step);
                self.steps.lock().expect("bars").insert(step.clone(), pb);
            }
            EngineEvent::StepFinished {
                step, elapsed, resumed, ..
            } => {
                let pb = self.steps.lock().expect("bars").remove(step);
                let note = if *resumed { " (resumed)" } else { "" };
                let line = format!("✓ {step:<18} {:>6.1}s{note}", elapsed.as_secs_f64());
                match pb {
                    Some(pb) => {
                        pb.set_style(ProgressStyle::with_template("{msg}").expect("template"));
                        pb.finish_with_message(line);
                    }
                    None => self.println(&line),
                }
                if step == "roll" || step == "rollback_roll" {
                    if let Some(pb) = self.roll.lock().expect("bars").take() {
                        pb.finish_and_clear();
                    }
                }
            }
            EngineEvent::StepFailed { step, error, .. } => {
                let pb = self.steps.lock().expect("bars").remove(step);
                let line = format!("✗ {step:<18} {error}");
                match pb {
                    Some(pb) => {
                        pb.set_style(ProgressStyle::with_template("{msg}").expect("template"));
                        pb.finish_with_message(line);
                    }
                    None => self.println(&line),
                }
                if let Some(pb) = self.roll.lock().expect("bars").take() {
                    pb.abandon();
                }
            }
            EngineEvent::RollTick {
                status,
                replaced,
                total,
                ..
            } => {
                let mut roll = self.roll.lock().expect("bars");
                let pb = roll.get_or_insert_with(|| {
                    let pb = self.multi.add(ProgressBar::new(u64::from(*total)));
                    pb.set_style(
                        ProgressStyle::with_template("  replaced {pos}/{len} [{bar:30.green/dim}] {msg}")
                            .expect("template")
                            .progress_chars("=> "),
                    );
                    pb
                });
                pb.set_length(u64::from((*total).max(*replaced)));
                pb.set_position(u64::from(*replaced));
                pb.set_message(format!(
                    "in service {}/{} (floor {}) · old {} · new {} · draining {}",
                    status.in_service, status.base_desired, status.floor, status.old, status.new, status.draining
                ));
            }
            EngineEvent::Log { step, message, .. } => {
                // Step start/finish lines are the spinners' job.
                let lifecycle = [" started", " done", " resumed"]
                    .iter()
                    .any(|s| message == &format!("{step}{s}"));
                let worth_a_line =
                    matches!(step.as_str(), "patch" | "scan" | "retain" | "cleanup") || message.starts_with("abort");
                if worth_a_line && !lifecycle {
                    self.println(&format!("  {message}"));
                }
            }
            EngineEvent::RunStarted { run, pipeline } => self.println(&format!("run {run} ({pipeline})")),
            EngineEvent::RunFinished { .. } => {}
        }
    }
}
