//! `repave history` and `repave logs`.

use crate::cli::Cli;
use crate::exit::{self, Exit};
use crate::output::{outln, time, Out};
use repave_store::RunFilter;

pub fn run(cli: &Cli, pipeline: Option<&str>, limit: u32) -> Result<i32, Exit> {
    let loaded = crate::context::load(cli)?;
    let store = loaded.store()?;
    let filter = RunFilter {
        pipeline: pipeline.map(str::to_string),
        limit: Some(limit),
        ..Default::default()
    };
    let runs = store.list_runs(&filter).map_err(Exit::failed)?;
    let mut out = Out::new();
    if cli.json {
        out.json(&runs)?;
        return Ok(exit::OK);
    }
    if runs.is_empty() {
        outln!(out, "no runs yet")?;
    }
    for r in runs {
        let took = r
            .ended_at
            .map(|e| format!("{:.1}s", e.since(r.started_at).as_secs_f64()))
            .unwrap_or_else(|| "-".into());
        outln!(
            out,
            "{}  {:<8} {:<12} {:<11} {}  {:>8}  {}",
            r.id,
            r.kind.as_str(),
            r.pipeline,
            r.state.as_str(),
            time(r.started_at.millis()),
            took,
            r.error.unwrap_or_default()
        )?;
    }
    Ok(exit::OK)
}

pub fn logs(cli: &Cli, run: &str) -> Result<i32, Exit> {
    let loaded = crate::context::load(cli)?;
    let store = loaded.store()?;
    let record = crate::context::run_record(&store, run)?;
    let id = record.id.clone();
    let steps = store.steps(&id).map_err(Exit::failed)?;
    let events = store.events(&id, 0, 100_000).map_err(Exit::failed)?;
    let mut out = Out::new();
    if cli.json {
        out.json(&serde_json::json!({ "run": record, "steps": steps, "events": events }))?;
        return Ok(exit::OK);
    }
    outln!(
        out,
        "run {} ({} {}): {}",
        record.id,
        record.kind.as_str(),
        record.pipeline,
        record.state.as_str()
    )?;
    for s in &steps {
        let took = s
            .ended_at
            .map(|e| format!("{:.1}s", e.since(s.started_at).as_secs_f64()))
            .unwrap_or_else(|| "-".into());
        outln!(
            out,
            "  {:<18} {:<8} {:>8}  attempts {}  {}",
            s.name,
            format!("{:?}", s.state).to_lowercase(),
            took,
            s.attempts,
            s.error.clone().unwrap_or_default()
        )?;
    }
    outln!(out)?;
    for e in &events {
        outln!(
            out,
            "{}  {:<5} {:<16} {}",
            time(e.at.millis()),
            e.level,
            e.step.clone().unwrap_or_default(),
            e.message
        )?;
    }
    Ok(exit::OK)
}
