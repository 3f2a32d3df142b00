//! `repave schedule show|enable|disable`: the maintenance-window schedules
//! `repave serve` follows. The state is in the store, so a running server
//! sees a change at its next window without a restart.

use crate::cli::{Cli, ScheduleCommand};
use crate::exit::{self, Exit};
use anyhow::anyhow;
use repave_core::ids::{Clock, SystemClock};
use repave_store::{ScheduleRecord, Store};

pub fn run(cli: &Cli, command: &ScheduleCommand) -> Result<i32, Exit> {
    let loaded = crate::context::load(cli)?;
    // A pipeline without a window has no schedule to show or change.
    let windowed = |name: &str| -> Result<(), Exit> {
        let (_, p) = loaded.pipeline(Some(name))?;
        match p.window {
            Some(_) => Ok(()),
            None => Err(Exit::bad_input(anyhow!(
                "pipeline {name} has no window, so no schedule (add `window = {{ cron = ... }}` to it)"
            ))),
        }
    };
    match command {
        ScheduleCommand::Show { pipeline } => {
            if let Some(p) = pipeline {
                windowed(p)?;
            }
            let store = loaded.store()?;
            let names: Vec<&String> = loaded
                .config
                .pipelines
                .iter()
                .filter(|(n, p)| p.window.is_some() && pipeline.as_ref().is_none_or(|only| only == *n))
                .map(|(n, _)| n)
                .collect();
            let mut rows = Vec::new();
            for name in names {
                rows.push(current(&store, name)?);
            }
            if cli.json {
                crate::output::json(&serde_json::json!(rows));
            } else if rows.is_empty() {
                println!("no pipeline has a window");
            } else {
                for r in &rows {
                    let state = if r.enabled {
                        "enabled".to_string()
                    } else {
                        format!(
                            "DISABLED: {}",
                            r.disabled_reason.as_deref().unwrap_or("no reason given")
                        )
                    };
                    println!(
                        "{:<20} {state} (failed runs in a row: {})",
                        r.pipeline, r.consecutive_failures
                    );
                }
            }
            Ok(exit::OK)
        }
        ScheduleCommand::Enable { pipeline } => {
            windowed(pipeline)?;
            let store = loaded.store()?;
            let rec = ScheduleRecord {
                pipeline: pipeline.clone(),
                enabled: true,
                consecutive_failures: 0,
                disabled_reason: None,
                updated_at: SystemClock.now(),
            };
            store.put_schedule(&rec).map_err(Exit::failed)?;
            report(cli, &rec, "enabled: its next window starts a run");
            Ok(exit::OK)
        }
        ScheduleCommand::Disable { pipeline, reason } => {
            windowed(pipeline)?;
            let store = loaded.store()?;
            let mut rec = current(&store, pipeline)?;
            rec.enabled = false;
            rec.disabled_reason = Some(
                reason
                    .clone()
                    .filter(|r| !r.trim().is_empty())
                    .unwrap_or_else(|| "disabled with `repave schedule disable`".into()),
            );
            rec.updated_at = SystemClock.now();
            store.put_schedule(&rec).map_err(Exit::failed)?;
            report(
                cli,
                &rec,
                "disabled: its windows start nothing until `repave schedule enable`",
            );
            Ok(exit::OK)
        }
    }
}

/// The stored state, or the state of a schedule never written: enabled.
fn current(store: &Store, pipeline: &str) -> Result<ScheduleRecord, Exit> {
    Ok(store
        .schedule(pipeline)
        .map_err(Exit::failed)?
        .unwrap_or_else(|| ScheduleRecord {
            pipeline: pipeline.to_string(),
            enabled: true,
            consecutive_failures: 0,
            disabled_reason: None,
            updated_at: repave_core::Timestamp(0),
        }))
}

fn report(cli: &Cli, rec: &ScheduleRecord, text: &str) {
    if cli.json {
        crate::output::json(&serde_json::json!(rec));
    } else {
        println!("schedule of pipeline {} {text}", rec.pipeline);
    }
}
