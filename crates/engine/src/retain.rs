//! Retention: deregister this pipeline's images beyond `keep`, never one
//! still referenced by the group's launch spec, a live instance, or the
//! golden parameter's history.

use crate::call::retry;
use crate::error::EngineError;
use crate::executor::Ctx;
use crate::publish::PublishOutput;
use repave_core::provider::{tag, ImageState, Tags};
use repave_core::ImageId;
use std::collections::BTreeSet;

pub async fn retain(ctx: &Ctx<'_>, published: &PublishOutput) -> Result<Vec<ImageId>, EngineError> {
    let p = ctx.provider();
    let keep = ctx.pipeline.retention.keep as usize;
    let mut tags = Tags::new();
    tags.insert(tag::PIPELINE.into(), ctx.run.pipeline.clone());
    tags.insert(tag::ROLE.into(), tag::ROLE_IMAGE.into());
    let mut images: Vec<_> = retry("retain", || p.list_images(&tags))
        .await?
        .into_iter()
        .filter(|i| i.state == ImageState::Available || i.state == ImageState::Failed)
        .collect();
    images.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id)));

    // Everything that still points at an image.
    let mut referenced: BTreeSet<ImageId> = BTreeSet::new();
    referenced.insert(published.image.clone());
    referenced.insert(published.previous_image.clone());
    let group = retry("retain", || p.describe_group(&ctx.pipeline.group)).await?;
    for m in &group.members {
        referenced.insert(m.image.clone());
    }
    for spec in [&group.launch_spec, &published.previous_launch_spec] {
        if let Ok(s) = p.describe_launch_spec(spec).await {
            referenced.insert(s.image);
        }
    }
    // Parameter versions inside the rollback window can be restored, so
    // their images stay.
    let window = ctx.pipeline.retention.rollback_window.get();
    let now = ctx.now();
    for v in retry("retain", || p.parameter_history(&ctx.pipeline.parameter)).await? {
        if now.since(v.modified_at) <= window {
            referenced.insert(ImageId::new(v.value));
        }
    }
    let no_filter = Tags::new();
    let all_instances = retry("retain", || p.list_instances(&no_filter)).await?;
    for i in all_instances.iter().filter(|i| !i.state.is_gone()) {
        referenced.insert(i.image.clone());
    }

    let mut deleted = Vec::new();
    for img in images.iter().skip(keep) {
        if referenced.contains(&img.id) {
            ctx.log(
                "retain",
                format!("keeping {} beyond keep={keep}: still referenced", img.id),
                serde_json::Value::Null,
            );
            continue;
        }
        retry("retain", || p.deregister_image(&img.id)).await?;
        ctx.log(
            "retain",
            format!("deregistered {} and its snapshots", img.id),
            serde_json::Value::Null,
        );
        deleted.push(img.id.clone());
    }
    Ok(deleted)
}
