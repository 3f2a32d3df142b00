//! Publish and roll back: the launch spec, the group and the golden
//! parameter move together, and back together.

use crate::bake::{mark_bad, ResolveOutput};
use crate::call::retry;
use crate::context::Ctx;
use crate::error::EngineError;
use crate::roll::roll_and_verify;
use crate::summary::RollReport;
use repave_core::provider::{tag, ImageState, LaunchSpecRef};
use repave_core::ImageId;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PublishOutput {
    pub image: ImageId,
    pub launch_spec: LaunchSpecRef,
    pub previous_launch_spec: LaunchSpecRef,
    pub previous_image: ImageId,
    pub parameter_version: u64,
    pub previous_parameter_version: u64,
}

/// Label put on the parameter version a publish replaced.
pub const PREVIOUS_LABEL: &str = "repave-previous";

/// New launch spec version with the new image, group pointed at it, golden
/// parameter updated (description kept), previous version labeled.
/// Idempotent: a resumed publish finds the spec and parameter already moved.
pub async fn publish(ctx: &Ctx<'_>, image: &ImageId, resolved: &ResolveOutput) -> Result<PublishOutput, EngineError> {
    let launch_spec = publish_launch_spec(ctx, image).await?;
    let p = ctx.provider();
    let name = &ctx.pipeline.parameter;
    let current = retry("publish", || p.get_parameter(name)).await?;
    let version = if current.value == image.as_str() {
        current.version
    } else {
        retry("publish", || p.put_parameter(name, image.as_str(), None)).await?
    };
    let label = vec![PREVIOUS_LABEL.to_string()];
    retry("publish", || {
        p.label_parameter_version(name, resolved.parameter_version, &label)
    })
    .await?;
    ctx.log(
        "publish",
        format!(
            "{name} = {image} (version {version}); launch spec {} v{}",
            launch_spec.name, launch_spec.version
        ),
        serde_json::Value::Null,
    );
    Ok(PublishOutput {
        image: image.clone(),
        launch_spec,
        previous_launch_spec: resolved.launch_spec.clone(),
        previous_image: resolved.source_image.clone(),
        parameter_version: version,
        previous_parameter_version: resolved.parameter_version,
    })
}

/// The launch spec version the roll goes onto. With repave's own roll the
/// group is pointed at it now; with `strategy = "native"` the cloud's roll
/// moves the group itself when it succeeds (AWS: Instance Refresh with a
/// desired configuration), so its rollback has somewhere to go.
pub async fn publish_launch_spec(ctx: &Ctx<'_>, image: &ImageId) -> Result<LaunchSpecRef, EngineError> {
    let (spec, current) = launch_spec_for(ctx, image).await?;
    if ctx.pipeline.rollout.strategy != repave_core::config::Strategy::Native && !current {
        let p = ctx.provider();
        retry("publish", || p.set_group_launch_spec(&ctx.pipeline.group, &spec)).await?;
    }
    Ok(spec)
}

/// A launch spec version that launches `image`: the group's current one
/// when it already does (`true`), otherwise a new version of it with only
/// the image changed.
async fn launch_spec_for(ctx: &Ctx<'_>, image: &ImageId) -> Result<(LaunchSpecRef, bool), EngineError> {
    let p = ctx.provider();
    let group = &ctx.pipeline.group;
    let g = retry("publish", || p.describe_group(group)).await?;
    let spec = retry("publish", || p.describe_launch_spec(&g.launch_spec)).await?;
    if &spec.image == image {
        return Ok((g.launch_spec, true));
    }
    let new = retry("publish", || p.create_launch_spec_version(&g.launch_spec, image)).await?;
    Ok((new, false))
}

/// The image the golden parameter held before its current value — never
/// one marked bad (rolling back onto a bad image publishes it again).
pub async fn previous_image(ctx: &Ctx<'_>) -> Result<ImageId, EngineError> {
    let p = ctx.provider();
    let name = &ctx.pipeline.parameter;
    let history = retry("resolve_previous", || p.parameter_history(name)).await?;
    let current = history
        .last()
        .ok_or_else(|| EngineError::Preflight(format!("parameter {name} has no history")))?;
    let labeled = history
        .iter()
        .rev()
        .filter(|v| v.labels.iter().any(|l| l == PREVIOUS_LABEL) && v.value != current.value);
    let others = history.iter().rev().filter(|v| v.value != current.value);
    let mut skipped = Vec::new();
    for v in labeled.chain(others) {
        let image = ImageId::new(v.value.trim());
        match retry("resolve_previous", || p.describe_image(&image)).await {
            Ok(i) if i.tags.get(tag::STATUS).map(String::as_str) == Some(tag::STATUS_BAD) => {
                skipped.push(format!("{image} (marked bad)"))
            }
            Ok(i) if i.state != ImageState::Available => skipped.push(format!("{image} ({:?})", i.state)),
            Ok(_) => return Ok(image),
            Err(EngineError::Provider { source, .. }) if source.is_not_found() => {
                skipped.push(format!("{image} (deregistered)"))
            }
            Err(e) => return Err(e),
        }
    }
    Err(EngineError::Preflight(format!(
        "parameter {name} has no earlier good image to roll back to{}",
        if skipped.is_empty() {
            String::new()
        } else {
            format!(" (skipped: {})", skipped.join(", "))
        }
    )))
}

pub async fn restore_parameter(ctx: &Ctx<'_>, image: &ImageId) -> Result<u64, EngineError> {
    let p = ctx.provider();
    let name = &ctx.pipeline.parameter;
    let current = retry("restore_parameter", || p.get_parameter(name)).await?;
    if current.value == image.as_str() {
        return Ok(current.version);
    }
    retry("restore_parameter", || p.put_parameter(name, image.as_str(), None)).await
}

/// A failure after publish: parameter and launch spec back to the previous
/// version, the new image marked bad, instances already replaced rolled back.
pub async fn rollback(
    ctx: &Ctx<'_>,
    published: &PublishOutput,
    bad: &ImageId,
    reason: &str,
) -> Result<RollReport, EngineError> {
    ctx.step(
        "rollback_publish",
        serde_json::json!({ "to": published.previous_image, "reason": reason }),
        || async {
            let p = ctx.provider();
            let group = &ctx.pipeline.group;
            retry("rollback", || {
                p.set_group_launch_spec(group, &published.previous_launch_spec)
            })
            .await?;
            restore_parameter(ctx, &published.previous_image).await?;
            mark_bad(ctx, bad, reason).await;
            Ok(())
        },
    )
    .await?;
    let policy = ctx.policy().for_rollback();
    // The aborted roll left the group surged: roll back to its base size.
    let base = crate::roll::RollIntent::journaled(ctx, "roll")?.map(|i| i.base_desired);
    roll_and_verify(
        ctx,
        "rollback_roll",
        &published.previous_image,
        &published.previous_launch_spec,
        &policy,
        base,
    )
    .await
}
