//! The step sequence of each kind of run, top-down: a full run (bake,
//! publish, roll, verify, retain), a bake alone, a roll of the published
//! image, a rollback to the previous one. Each step is journaled through
//! [`Ctx::step`]; what a step does lives in its own module.

use crate::bake::{self, BuilderOutput, ImageOutput, PatchOutput, ResolveOutput, ScanOutput};
use crate::context::Ctx;
use crate::error::EngineError;
use crate::publish::{self, PublishOutput};
use crate::roll::roll_and_verify;
use crate::summary::RunSummary;
use crate::{command, retain};
use repave_core::ImageId;
use repave_store::StoreError;

/// resolve → bake → test → (publish → roll → verify → retain).
pub(crate) async fn full_run(
    ctx: &Ctx<'_>,
    summary: &mut RunSummary,
    publish: bool,
    roll_it: bool,
) -> Result<(), EngineError> {
    let resolved: ResolveOutput = ctx
        .step("resolve", serde_json::json!({}), || bake::resolve(ctx))
        .await?;
    summary.source_image = Some(resolved.source_image.clone());
    let baked = bake_image(ctx, &resolved, summary).await;
    let image = match baked {
        Ok(Some(image)) => image,
        // Nothing selected to install: an unchanged image is never
        // published as patched.
        Ok(None) => {
            summary.nothing_to_install = true;
            return Ok(());
        }
        Err(e) => {
            // Nothing was published: clean up, and say whether what was made
            // is bad or merely unpublished.
            bake::cleanup(ctx, &e).await;
            return Err(e);
        }
    };
    summary.new_image = Some(image.clone());
    if !publish {
        return Ok(());
    }
    let published: PublishOutput = ctx
        .step(
            "publish",
            serde_json::json!({ "image": image, "previous": resolved }),
            || publish::publish(ctx, &image, &resolved),
        )
        .await?;
    if !roll_it {
        return Ok(());
    }
    let policy = ctx.policy();
    let rolled = roll_and_verify(ctx, "roll", &image, &published.launch_spec, &policy, None).await;
    match rolled {
        Ok(report) => summary.roll = Some(report),
        Err(e) if !e.blames_image() => {
            summary.roll = ctx.last_roll.lock().expect("last roll").take();
            return Err(pause_unless_image(e));
        }
        Err(e) => {
            summary.roll = ctx.last_roll.lock().expect("last roll").take();
            if !ctx.pipeline.rollout.auto_rollback {
                return Err(e);
            }
            let reason = e.to_string();
            summary.error = Some(reason.clone());
            let report = publish::rollback(ctx, &published, &image, &reason).await?;
            summary.rollback_roll = Some(report);
            summary.rolled_back = true;
            return Ok(());
        }
    }
    let deleted: Vec<ImageId> = ctx
        .step(
            "retain",
            serde_json::json!({ "keep": ctx.pipeline.retention.keep }),
            || retain::retain(ctx, &published),
        )
        .await?;
    summary.retained_deleted = deleted;
    Ok(())
}

/// `None`: the selection resolved to nothing and `patch.when_empty` says
/// stop (the builder is gone, no image was made).
async fn bake_image(
    ctx: &Ctx<'_>,
    resolved: &ResolveOutput,
    summary: &mut RunSummary,
) -> Result<Option<ImageId>, EngineError> {
    let src = resolved.source_image.clone();
    let builder: BuilderOutput = ctx
        .step("launch_builder", serde_json::json!({ "image": src }), || {
            bake::launch_builder(ctx, resolved)
        })
        .await?;
    let id = builder.builder.clone();
    ctx.step("wait_ready", serde_json::json!({ "builder": id }), || {
        command::wait_ready(ctx, &id, "wait_ready")
    })
    .await?;
    let selection = ctx.pipeline.patch.selection();
    let scan: ScanOutput = ctx
        .step("scan", serde_json::json!({ "selection": selection }), || {
            bake::scan(ctx, &id)
        })
        .await?;
    if scan.updates.is_empty() && ctx.pipeline.patch.when_empty == repave_core::config::WhenEmpty::Stop {
        ctx.step(
            "terminate_builder",
            serde_json::json!({ "builder": id, "why": "nothing to install" }),
            || bake::nothing_to_install(ctx, &id),
        )
        .await?;
        return Ok(None);
    }
    let ids: Vec<&str> = scan.updates.iter().map(|u| u.id.as_str()).collect();
    let patched: PatchOutput = ctx
        .step("patch", serde_json::json!({ "frozen": ids }), || {
            bake::patch(ctx, &id, &scan)
        })
        .await?;
    summary.installed_updates = patched.installed.clone();
    if !ctx.pipeline.validate.is_empty() {
        ctx.step(
            "validate",
            serde_json::json!({ "commands": ctx.pipeline.validate }),
            || bake::validate(ctx, &id),
        )
        .await?;
    }
    ctx.step("stop_builder", serde_json::json!({ "builder": id }), || {
        bake::stop_builder(ctx, &id)
    })
    .await?;
    let image: ImageOutput = ctx
        .step("create_image", serde_json::json!({ "builder": id }), || {
            bake::create_image(ctx, &id, resolved, &patched)
        })
        .await?;
    ctx.step("terminate_builder", serde_json::json!({ "builder": id }), || {
        bake::terminate(ctx, &id, "terminate_builder")
    })
    .await?;
    if ctx.pipeline.test.enabled {
        ctx.step("test_image", serde_json::json!({ "image": image.image }), || {
            bake::test_image(ctx, &image.image)
        })
        .await?;
    }
    Ok(Some(image.image))
}

/// A roll that stopped for a reason that is not the image's (a lost
/// provider or fleet process, a timeout, a limit) pauses: the image stays
/// good, the fleet stays as it is, `resume` continues once the cause is
/// fixed. Cancel, pause and a lost lease pass through as they are.
pub(crate) fn pause_unless_image(e: EngineError) -> EngineError {
    match e {
        e if e.blames_image() => e,
        e @ (EngineError::Cancelled | EngineError::Paused(_)) => e,
        e @ EngineError::Store(StoreError::LeaseLost { .. }) => e,
        e => EngineError::Paused(format!("the roll stopped, not because of the image: {e}")),
    }
}

/// `repave roll`: put the group on the golden parameter's image.
pub(crate) async fn roll_only(ctx: &Ctx<'_>, summary: &mut RunSummary) -> Result<(), EngineError> {
    let resolved: ResolveOutput = ctx
        .step("resolve", serde_json::json!({}), || bake::resolve(ctx))
        .await?;
    roll_onto(ctx, summary, resolved.source_image).await
}

/// `repave rollback`: golden parameter and launch spec back to the previous
/// image, and the fleet with them.
pub(crate) async fn rollback_only(ctx: &Ctx<'_>, summary: &mut RunSummary) -> Result<(), EngineError> {
    let target: ImageId = ctx
        .step("resolve_previous", serde_json::json!({}), || {
            publish::previous_image(ctx)
        })
        .await?;
    summary.new_image = Some(target.clone());
    ctx.step("restore_parameter", serde_json::json!({ "image": target }), || {
        publish::restore_parameter(ctx, &target)
    })
    .await?;
    roll_onto(ctx, summary, target).await
}

/// The group's launch spec onto `image`, then the fleet with it.
async fn roll_onto(ctx: &Ctx<'_>, summary: &mut RunSummary, image: ImageId) -> Result<(), EngineError> {
    summary.new_image = Some(image.clone());
    let spec: repave_core::provider::LaunchSpecRef = ctx
        .step("set_launch_spec", serde_json::json!({ "image": image }), || {
            publish::publish_launch_spec(ctx, &image)
        })
        .await?;
    let policy = ctx.policy();
    let rolled = roll_and_verify(ctx, "roll", &image, &spec, &policy, None).await;
    summary.roll = Some(rolled.map_err(pause_unless_image)?);
    Ok(())
}
