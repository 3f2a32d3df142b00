//! `repave gc`: sweep what runs left behind. Builders and test instances
//! tagged by repave whose run is finished or unknown are terminated; images
//! marked bad, or beyond `keep`, are deregistered with their snapshots —
//! never one still referenced by the group, a launch spec, a live instance
//! or the golden parameter inside the rollback window.

use crate::cli::Cli;
use crate::exit::{self, Exit};
use repave_core::provider::{tag, ImageState, Provider, Tags};
use repave_core::{ImageId, RunId};
use serde_json::json;
use std::collections::BTreeSet;

pub async fn run(cli: &Cli, dry_run: bool) -> Result<i32, Exit> {
    let loaded = crate::context::load(cli)?;
    let store = loaded.store()?;
    let now = repave_core::ids::Clock::now(&repave_core::ids::SystemClock);
    let mut actions = Vec::new();
    let mut swept_providers = BTreeSet::new();
    for (name, pipeline) in &loaded.config.pipelines {
        let provider = loaded.provider(pipeline).await?;
        let p: &dyn Provider = provider.as_ref();
        if swept_providers.insert(pipeline.provider.clone()) {
            for role in [tag::ROLE_BUILDER, tag::ROLE_TEST] {
                let mut tags = Tags::new();
                tags.insert(tag::ROLE.into(), role.into());
                for i in p.list_instances(&tags).await.map_err(Exit::failed)? {
                    if i.state.is_gone() {
                        continue;
                    }
                    let run = i.tags.get(tag::RUN).cloned().unwrap_or_default();
                    let record = store.get_run(&RunId::new(run.clone())).map_err(Exit::failed)?;
                    let finished = record.as_ref().is_none_or(|r| r.state.is_terminal());
                    if !finished {
                        actions.push(json!({ "action": "keep", "instance": i.id, "role": role, "run": run, "why": "its run is not finished (resume or cancel it)" }));
                        continue;
                    }
                    actions.push(json!({ "action": "terminate", "instance": i.id, "role": role, "run": run }));
                    if !dry_run {
                        p.terminate_instance(&i.id).await.map_err(Exit::failed)?;
                    }
                }
            }
        }
        // Images of this pipeline.
        let referenced = references(p, pipeline, &loaded, now).await?;
        let mut tags = Tags::new();
        tags.insert(tag::PIPELINE.into(), name.clone());
        tags.insert(tag::ROLE.into(), tag::ROLE_IMAGE.into());
        let mut images: Vec<_> = p
            .list_images(&tags)
            .await
            .map_err(Exit::failed)?
            .into_iter()
            .filter(|i| i.state != ImageState::Deregistered)
            .collect();
        images.sort_by_key(|i| std::cmp::Reverse(i.created_at));
        let keep = pipeline.retention.keep as usize;
        for (n, img) in images.iter().enumerate() {
            let bad = img.tags.get(tag::STATUS).map(String::as_str) == Some(tag::STATUS_BAD);
            if !bad && n < keep {
                continue;
            }
            let why = if bad { "marked bad" } else { "beyond keep" };
            if referenced.contains(&img.id) {
                actions.push(json!({ "action": "keep", "image": img.id, "pipeline": name, "why": format!("{why}, but still referenced") }));
                continue;
            }
            actions.push(json!({ "action": "deregister", "image": img.id, "pipeline": name, "why": why }));
            if !dry_run {
                p.deregister_image(&img.id).await.map_err(Exit::failed)?;
            }
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
                .get("instance")
                .or(a.get("image"))
                .and_then(|v| v.as_str())
                .unwrap_or("");
            let verb = a["action"].as_str().unwrap_or("");
            let verb = if dry_run && verb != "keep" {
                format!("would {verb}")
            } else {
                verb.to_string()
            };
            println!(
                "{verb:<16} {what}  {}",
                a.get("why").or(a.get("role")).and_then(|v| v.as_str()).unwrap_or("")
            );
        }
    }
    Ok(exit::OK)
}

/// Every image something still points at.
async fn references(
    p: &dyn Provider,
    pipeline: &repave_core::config::Pipeline,
    loaded: &crate::context::Loaded,
    now: repave_core::Timestamp,
) -> Result<BTreeSet<ImageId>, Exit> {
    let mut refs = BTreeSet::new();
    if let Ok(g) = p.describe_group(&pipeline.group).await {
        refs.extend(g.members.iter().map(|m| m.image.clone()));
        if let Ok(spec) = p.describe_launch_spec(&g.launch_spec).await {
            refs.insert(spec.image);
        }
    }
    if let Ok(history) = p.parameter_history(&pipeline.parameter).await {
        let window = pipeline.retention.rollback_window.get();
        if let Some(last) = history.last() {
            refs.insert(ImageId::new(last.value.trim()));
        }
        for v in history.iter().filter(|v| now.since(v.modified_at) <= window) {
            refs.insert(ImageId::new(v.value.trim()));
        }
    }
    for i in p.list_instances(&Tags::new()).await.map_err(Exit::failed)? {
        if !i.state.is_gone() {
            refs.insert(i.image);
        }
    }
    if pipeline.provider == "aws" {
        // Launch template versions and launch configurations anywhere in the account.
        refs.extend(loaded.aws().await?.referenced_images().await.map_err(Exit::failed)?);
    }
    Ok(refs)
}
