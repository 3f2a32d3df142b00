//! `repave cancel RUN`: ask the process driving a run to stop at its next
//! safe point. Before publish the run cleans up (builder and test instance
//! terminated, image marked bad) and ends `cancelled`; during its roll it
//! ends `paused` and `repave resume` continues it.

use crate::cli::Cli;
use crate::exit::{self, Exit};
use anyhow::anyhow;
use repave_store::{NewEvent, CANCEL_REQUESTED};

pub fn run(cli: &Cli, run: &str) -> Result<i32, Exit> {
    let loaded = crate::context::load(cli)?;
    let store = loaded.store()?;
    let record = crate::context::run_record(&store, run)?;
    let id = record.id.clone();
    if record.state.is_terminal() {
        return Err(Exit::bad_input(anyhow!(
            "run {run} already ended {}",
            record.state.as_str()
        )));
    }
    let now = repave_core::ids::Clock::now(&repave_core::ids::SystemClock);
    store
        .append_event(&NewEvent {
            run: id.clone(),
            at: now,
            level: "warn".into(),
            step: None,
            message: CANCEL_REQUESTED.into(),
            data: serde_json::json!({ "by": "repave cancel", "pid": std::process::id() }),
        })
        .map_err(Exit::failed)?;
    let driven = crate::commands::status::driver_alive(&store, &id);
    let next = if driven {
        "the process driving it stops at its next safe point"
    } else {
        "no process is driving it now; `repave resume` would continue it, `repave gc` sweeps what it left"
    };
    if cli.json {
        crate::output::json(&serde_json::json!({ "run": id, "cancel_requested": true, "driven": driven }));
    } else {
        println!("cancel requested for {run}: {next}");
    }
    Ok(exit::OK)
}
