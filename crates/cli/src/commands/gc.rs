//! `repave gc`: sweep what runs left behind (the rules are in
//! `repave_engine::gc`), for every provider the config uses — for AWS, in
//! every account and region a pipeline names (`[pipelines.X.aws]` region,
//! role), each swept with its own pipelines and credentials.

use crate::cli::Cli;
use crate::exit::{self, Exit};
use repave_core::config::Pipeline;
use serde_json::json;
use std::collections::BTreeMap;

pub async fn run(cli: &Cli, dry_run: bool) -> Result<i32, Exit> {
    let loaded = crate::context::load(cli)?;
    let store = loaded.store()?;
    let now = repave_core::ids::Clock::now(&repave_core::ids::SystemClock);
    // One sweep per place: the provider, and for AWS the account and
    // region the pipeline's own settings name (one default place for the
    // pipelines that name none).
    let mut by_target: BTreeMap<String, Vec<(String, Pipeline)>> = BTreeMap::new();
    for (name, p) in &loaded.config.pipelines {
        let place = if p.provider == repave_core::config::ProviderKind::Aws {
            // The account (a role's, else the credentials') and the region
            // resolved as the run resolves them: pipelines that share a
            // place share a sweep, so images one of them uses are never
            // taken for unreferenced by a sweep that left it out.
            let t = loaded.aws_place(p);
            let account = t
                .role
                .as_ref()
                .and_then(|r| r.role_arn.split(':').nth(4).map(str::to_string));
            format!("aws region={:?} account={account:?}", t.region)
        } else {
            p.provider.to_string()
        };
        by_target.entry(place).or_default().push((name.clone(), p.clone()));
    }
    let mut actions = Vec::new();
    for pipelines in by_target.values() {
        let first = &pipelines[0].1;
        if first.provider == repave_core::config::ProviderKind::Aws {
            let aws = loaded.aws_for(first).await?;
            actions.extend(repave_engine::gc(aws.as_ref(), &store, pipelines, now, dry_run).await?);
            actions.extend(patch_baselines(&aws, &store, dry_run).await?);
        } else {
            let provider = loaded.provider(first).await?;
            actions.extend(repave_engine::gc(provider.as_ref(), &store, pipelines, now, dry_run).await?);
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
    aws: &repave_aws::AwsProvider,
    store: &repave_store::Store,
    dry_run: bool,
) -> Result<Vec<repave_engine::GcAction>, Exit> {
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
