//! `repave cancel RUN`: ask the process driving a run to stop at its next
//! safe point. Before publish the run cleans up (builder and test instance
//! terminated, its image left unpublished — not bad) and ends `cancelled`;
//! during its roll no new replacement starts, the ones in flight finish and
//! it ends `paused` (`repave resume` continues it). A paused run nobody
//! drives is ended at once; an interrupted one applies the cancel when
//! resumed.

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
    let driven = crate::commands::status::driver_alive(&store, &record);
    // A paused run nobody drives stopped at a safe point (capacity at its
    // base, nothing in flight): ending it is safe, and frees its group.
    let ended = !driven && record.state == repave_store::RunState::Paused;
    if ended {
        store
            .set_run_state(
                &id,
                repave_store::RunState::Cancelled,
                Some("cancelled while paused (`repave cancel`)"),
                now,
            )
            .map_err(Exit::failed)?;
        if let Some(lease) = store
            .current_lease(&record.lease_key())
            .map_err(Exit::failed)?
            .filter(|l| l.holder == id.as_str())
        {
            store.release_lease(&lease).map_err(Exit::failed)?;
        }
    }
    let next = if ended {
        "it was paused and nobody drove it: it is cancelled now, and its group is free"
    } else if driven {
        "the process driving it stops at its next safe point"
    } else {
        "no process is driving it now; `repave resume` applies the cancel (the run stops at its next safe point), `repave gc` ends it if it stopped before publish"
    };
    if cli.json {
        crate::output::json(
            &serde_json::json!({ "run": id, "cancel_requested": true, "driven": driven, "ended": ended }),
        );
    } else {
        println!("cancel requested for {run}: {next}");
    }
    Ok(exit::OK)
}
