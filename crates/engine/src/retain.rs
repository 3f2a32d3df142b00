//! Retention: after a successful run, remove this pipeline's images that
//! nothing needs — bad and unpublished ones, and good ones beyond `keep` —
//! never one still referenced (see [`crate::references`], which `gc` uses
//! too). A reference source that cannot be read fails the step before
//! anything is deleted.

use crate::call::retry;
use crate::context::Ctx;
use crate::error::EngineError;
use crate::publish::PublishOutput;
use crate::references::{disposable, image_references};
use repave_core::provider::{tag, Tags};
use repave_core::ImageId;

pub async fn retain(ctx: &Ctx<'_>, published: &PublishOutput) -> Result<Vec<ImageId>, EngineError> {
    let p = ctx.provider();
    let mut tags = Tags::new();
    tags.insert(tag::PIPELINE.into(), ctx.run.pipeline.clone());
    tags.insert(tag::ROLE.into(), tag::ROLE_IMAGE.into());
    let images = retry("retain", || p.list_images(&tags)).await?;
    let mut refs = image_references(
        p,
        &ctx.pipeline,
        std::slice::from_ref(&published.previous_launch_spec),
        ctx.now(),
    )
    .await?;
    refs.insert(published.image.clone());
    refs.insert(published.previous_image.clone());
    let keep = ctx.pipeline.retention.keep as usize;
    let mut deleted = Vec::new();
    for v in disposable(&images, keep, &refs) {
        if v.referenced {
            ctx.log(
                "retain",
                format!("keeping {} ({}): still referenced", v.image, v.why),
                serde_json::Value::Null,
            );
            continue;
        }
        retry("retain", || p.deregister_image(&v.image)).await?;
        ctx.log(
            "retain",
            format!("deregistered {} ({}) and its snapshots", v.image, v.why),
            serde_json::Value::Null,
        );
        deleted.push(v.image);
    }
    Ok(deleted)
}
