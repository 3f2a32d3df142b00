//! `repave status`: the fleet as it is now, the golden parameter, the runs.

use crate::cli::Cli;
use crate::exit::{self, Exit};
use crate::output::{outln, time, Out};
use repave_core::provider::TargetState;
use repave_store::{RunFilter, RunState, StepState};
use serde_json::json;

pub async fn run(cli: &Cli, only: Option<&str>) -> Result<i32, Exit> {
    let loaded = crate::context::load(cli)?;
    let store = loaded.store()?;
    let names: Vec<String> = match only {
        Some(n) => vec![loaded.pipeline(Some(n))?.0],
        None => loaded.config.pipelines.keys().cloned().collect(),
    };
    let mut out = Vec::new();
    for name in names {
        let (_, pipeline) = loaded.pipeline(Some(&name))?;
        let provider = loaded.provider(&pipeline).await?;
        let group = provider.describe_group(&pipeline.group).await.map_err(Exit::failed)?;
        let health = provider.target_health(&pipeline.group).await.map_err(Exit::failed)?;
        let history = provider
            .parameter_history(&pipeline.parameter)
            .await
            .map_err(Exit::failed)?;
        let current = history.last().map(|p| p.value.clone()).unwrap_or_default();
        let ids: Vec<_> = group.members.iter().map(|m| m.id.clone()).collect();
        let described = provider.describe_instances(&ids).await.map_err(Exit::failed)?;
        let instances: Vec<_> = group
            .members
            .iter()
            .map(|m| {
                let t = health.iter().find(|t| t.instance == m.id);
                json!({
                    "id": m.id, "image": m.image, "lifecycle": m.lifecycle,
                    "health": t.map(|t| t.state).unwrap_or(TargetState::Unused),
                    "in_flight": t.and_then(|t| t.in_flight),
                    "protected": m.protected, "launched_at": m.launched_at,
                    "on_golden": m.image.as_str() == current,
                    "address": described.iter().find(|i| i.id == m.id).and_then(|i| i.address.clone()),
                })
            })
            .collect();
        let runs = store
            .list_runs(&RunFilter {
                pipeline: Some(name.clone()),
                limit: Some(5),
                ..Default::default()
            })
            .map_err(Exit::failed)?;
        // A run still "running" without a live lease was interrupted: say
        // what resume will do.
        let now = repave_core::ids::Clock::now(&repave_core::ids::SystemClock);
        let lease = store
            .current_lease(&repave_store::lease_key(&pipeline.group, provider.place().as_deref()))
            .map_err(Exit::failed)?;
        let mut interrupted = Vec::new();
        for r in runs
            .iter()
            .filter(|r| matches!(r.state, RunState::Running | RunState::Paused))
        {
            let leased = lease
                .as_ref()
                .is_some_and(|l| l.holder == r.id.as_str() && l.expires_at > now);
            if leased && r.state == RunState::Running && driver_alive(&store, r) {
                continue;
            }
            let steps = store.steps(&r.id).map_err(Exit::failed)?;
            interrupted.push(json!({
                "run": r.id, "state": r.state.as_str(),
                "resume": format!("`repave resume {}` {}", r.id, resumes_where(&steps)),
            }));
        }
        out.push(json!({
            "pipeline": name,
            "group": { "name": group.name, "min": group.min, "max": group.max, "desired": group.desired,
                        "launch_spec": group.launch_spec, "balancer": group.balancer },
            "instances": instances,
            "parameter": { "name": pipeline.parameter, "versions": history },
            "recent_runs": runs,
            "interrupted": interrupted,
        }));
    }
    let mut stdout = Out::new();
    if cli.json {
        stdout.json(&out)?;
        return Ok(exit::OK);
    }
    for p in &out {
        let g = &p["group"];
        outln!(
            stdout,
            "pipeline {}  group {} (desired {}, min {}, max {})  launch spec {} v{}  balancer {}",
            p["pipeline"].as_str().unwrap_or(""),
            g["name"].as_str().unwrap_or(""),
            g["desired"],
            g["min"],
            g["max"],
            g["launch_spec"]["name"].as_str().unwrap_or(""),
            g["launch_spec"]["version"],
            g["balancer"].as_str().unwrap_or("-")
        )?;
        for i in p["instances"].as_array().into_iter().flatten() {
            outln!(
                stdout,
                "  {}  {}{}  {:<11} {}",
                i["id"].as_str().unwrap_or(""),
                i["image"].as_str().unwrap_or(""),
                if i["on_golden"].as_bool() == Some(true) {
                    " (golden)"
                } else {
                    "         "
                },
                i["lifecycle"].as_str().unwrap_or(""),
                i["health"].as_str().unwrap_or("")
            )?;
        }
        outln!(stdout, "  parameter {}:", p["parameter"]["name"].as_str().unwrap_or(""))?;
        for v in p["parameter"]["versions"].as_array().into_iter().flatten() {
            let labels: Vec<&str> = v["labels"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|l| l.as_str())
                .collect();
            outln!(
                stdout,
                "    v{:<3} {}  {}  {}",
                v["version"],
                v["value"].as_str().unwrap_or(""),
                time(v["modified_at"].as_i64().unwrap_or(0)),
                labels.join(",")
            )?;
        }
        if let Some(r) = p["recent_runs"].as_array().and_then(|r| r.first()) {
            outln!(
                stdout,
                "  last run {}: {}",
                r["id"].as_str().unwrap_or(""),
                r["state"].as_str().unwrap_or("")
            )?;
        }
        for i in p["interrupted"].as_array().into_iter().flatten() {
            outln!(
                stdout,
                "  interrupted run {} ({}): {}",
                i["run"].as_str().unwrap_or(""),
                i["state"].as_str().unwrap_or(""),
                i["resume"].as_str().unwrap_or("")
            )?;
        }
    }
    Ok(exit::OK)
}

/// Where `resume` picks a run up: its first step not done (nor skipped),
/// else after its last step (the journal has no step names ahead of it).
fn resumes_where(steps: &[repave_store::StepRecord]) -> String {
    let finished = |s: &&repave_store::StepRecord| s.state == StepState::Done;
    match (steps.iter().find(|s| !finished(s)), steps.last()) {
        (Some(next), _) => format!("continues at step {}", next.name),
        (None, Some(last)) => format!("continues after step {}", last.name),
        (None, None) => "starts it from its first step".to_string(),
    }
}

/// Whether the process that last drove the run is still alive (the engine
/// records its pid in the run's events).
pub(crate) fn driver_alive(store: &repave_store::Store, run: &repave_store::RunRecord) -> bool {
    let now = repave_core::ids::Clock::now(&repave_core::ids::SystemClock);
    // A store that cannot be read: assume someone drives it (say less, do
    // nothing rash).
    store
        .run_driver(&run.lease_key(), run.id.as_str(), now)
        .map_or(true, |d| d.is_some())
}
