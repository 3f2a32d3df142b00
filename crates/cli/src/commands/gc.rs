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
    }
    if cli.json {
        crate::output::json(&json!({ "dry_run": dry_run, "actions": actions }));
    } else {
        if actions.is_empty() {
            println!("nothing to clean up");
        }
        for a in &actions {
            let what = a.instance.as_deref().or(a.image.as_deref()).unwrap_or("");
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
