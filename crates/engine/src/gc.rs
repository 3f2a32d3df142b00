//! `repave gc`: sweep what runs left behind. Builders and test instances
//! tagged by repave whose run is finished or unknown are terminated; images
//! marked bad, or beyond `keep`, are deregistered with their snapshots —
//! never one still referenced by the group, its launch spec, a live
//! instance, the golden parameter inside the rollback window, or anything
//! the caller adds (launch template versions and launch configurations
//! anywhere in an AWS account).

use crate::error::EngineError;
use repave_core::config::Pipeline;
use repave_core::provider::{tag, ImageState, Provider, Tags};
use repave_core::{ImageId, RunId, Timestamp};
use repave_store::Store;
use serde::Serialize;
use std::collections::BTreeSet;

/// One thing `gc` did, would do (dry run), or deliberately left alone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GcAction {
    /// "terminate", "deregister", "delete" or "keep".
    pub action: String,
    pub instance: Option<String>,
    pub image: Option<String>,
    /// A cloud patch baseline (AWS) a run made for its builder.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline: Option<String>,
    pub pipeline: Option<String>,
    pub why: String,
}

fn provider_err(e: repave_core::ProviderError) -> EngineError {
    EngineError::provider("gc", e)
}

/// Sweep one provider for the pipelines that use it.
pub async fn gc(
    p: &dyn Provider,
    store: &Store,
    pipelines: &[(String, Pipeline)],
    extra_references: &BTreeSet<ImageId>,
    now: Timestamp,
    dry_run: bool,
) -> Result<Vec<GcAction>, EngineError> {
    let mut actions = Vec::new();
    for role in [tag::ROLE_BUILDER, tag::ROLE_TEST] {
        let mut tags = Tags::new();
        tags.insert(tag::ROLE.into(), role.into());
        for i in p.list_instances(&tags).await.map_err(provider_err)? {
            if i.state.is_gone() {
                continue;
            }
            let run = i.tags.get(tag::RUN).cloned().unwrap_or_default();
            let record = store.get_run(&RunId::new(run.clone()))?;
            let mut act = GcAction {
                action: "terminate".into(),
                instance: Some(i.id.to_string()),
                image: None,
                baseline: None,
                pipeline: i.tags.get(tag::PIPELINE).cloned(),
                why: format!("{role} of run {run}, which is finished or unknown"),
            };
            if record.as_ref().is_some_and(|r| !r.state.is_terminal()) {
                act.action = "keep".into();
                act.why = format!("{role} of run {run}, not finished (resume or cancel it)");
            } else if !dry_run {
                p.terminate_instance(&i.id).await.map_err(provider_err)?;
            }
            actions.push(act);
        }
    }
    for (name, pipeline) in pipelines {
        let mut referenced = references(p, pipeline, now).await?;
        referenced.extend(extra_references.iter().cloned());
        let mut tags = Tags::new();
        tags.insert(tag::PIPELINE.into(), name.clone());
        tags.insert(tag::ROLE.into(), tag::ROLE_IMAGE.into());
        let mut images: Vec<_> = p
            .list_images(&tags)
            .await
            .map_err(provider_err)?
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
            let mut act = GcAction {
                action: "deregister".into(),
                instance: None,
                image: Some(img.id.to_string()),
                baseline: None,
                pipeline: Some(name.clone()),
                why: why.into(),
            };
            if referenced.contains(&img.id) {
                act.action = "keep".into();
                act.why = format!("{why}, but still referenced");
            } else if !dry_run {
                p.deregister_image(&img.id).await.map_err(provider_err)?;
            }
            actions.push(act);
        }
    }
    Ok(actions)
}

/// Every image the pipeline's group, launch spec, live instances and golden
/// parameter (inside the rollback window) still point at.
async fn references(p: &dyn Provider, pipeline: &Pipeline, now: Timestamp) -> Result<BTreeSet<ImageId>, EngineError> {
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
    for i in p.list_instances(&Tags::new()).await.map_err(provider_err)? {
        if !i.state.is_gone() {
            refs.insert(i.image);
        }
    }
    Ok(refs)
}
