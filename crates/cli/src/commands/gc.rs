//! `repave gc`: sweep what runs left behind (the rules are in
//! `repave_engine::gc`), for every provider the config uses.

use crate::cli::Cli;
use crate::exit::{self, Exit};
use repave_core::config::Pipeline;
use serde_json::json;
use std::collections::BTreeMap;

pub async fn run(cli: &Cli, dry_run: bool) -> Result<i32, Exit> {
    let loaded = crate::context::load(cli)?;
    let store = loaded.store()?;
    let now = repave_core::ids::Clock::now(&repave_core::ids::SystemClock);
    let mut by_provider: BTreeMap<String, Vec<(String, Pipeline)>> = BTreeMap::new();
    for (name, p) in &loaded.config.pipelines {
        by_provider
            .entry(p.provider.clone())
            .or_default()
            .push((name.clone(), p.clone()));
    }
    let mut actions = Vec::new();
    for pipelines in by_provider.values() {
        let provider = loaded.provider(&pipelines[0].1).await?;
        actions.extend(repave_engine::gc(provider.as_ref(), &store, pipelines, now, dry_run).await?);
        if pipelines[0].1.provider == "aws" {
            actions.extend(patch_baselines(&loaded, &store, dry_run).await?);
        }
    }
    if cli.json {
        crate::output::json(&json!({ "dry_run": dry_run, "actions": actions }));
    } else {
        if actions.is_empty() {
            println!("nothing to clean up");
        }
        for a in &actions {
            let what = a
                .instance
                .as_deref()
                .or(a.image.as_deref())
                .or(a.baseline.as_deref())
                .unwrap_or("");
            let verb = if dry_run && a.action != "keep" {
                format!("would {}", a.action)
            } else {
                a.action.clone()
            };
            println!("{verb:<16} {what}  {}", a.why);
        }
    }
    Ok(exit::OK)
}

/// The patch baselines (and patch groups) of AWS runs that are finished or
/// unknown: a run killed while patching leaves its baseline behind.
async fn patch_baselines(
    loaded: &crate::context::Loaded,
    store: &repave_store::Store,
    dry_run: bool,
) -> Result<Vec<repave_engine::GcAction>, Exit> {
    let aws = loaded.aws().await?;
    let mut actions = Vec::new();
    for b in aws.patch_baselines().await.map_err(Exit::failed)? {
        let run = b.run.clone().unwrap_or_default();
        let live = !run.is_empty()
            && store
                .get_run(&repave_core::RunId::new(run.clone()))
                .map_err(Exit::failed)?
                .is_some_and(|r| !r.state.is_terminal());
        let mut act = repave_engine::GcAction {
            action: "delete".into(),
            instance: None,
            image: None,
            baseline: Some(b.name.clone()),
            pipeline: b.pipeline.clone(),
            why: format!("patch baseline of run {run}, which is finished or unknown"),
        };
        if live {
            act.action = "keep".into();
            act.why = format!("patch baseline of run {run}, not finished (resume or cancel it)");
        } else if !dry_run {
            aws.delete_patch_baseline(&b.id, &b.name).await.map_err(Exit::failed)?;
        }
        actions.push(act);
    }
    Ok(actions)
}
