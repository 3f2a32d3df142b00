//! What retention and `gc` must never delete, and what they may: one
//! answer for both.
//!
//! An image stays while anything points at it — the group's members and
//! launch spec, the previous launch spec a rollback returns to, the golden
//! parameter's current value and every value it held inside the rollback
//! window, any live instance, and whatever the cloud's own configuration
//! names (every launch spec version: AWS launch template versions and
//! launch configurations anywhere in the account). Every source must be
//! read: one that cannot be fails the whole answer, so nothing is deleted
//! on a partial picture ("fails closed").

use crate::call::retry;
use crate::error::EngineError;
use repave_core::config::Pipeline;
use repave_core::provider::{tag, Image, ImageState, LaunchSpecRef, Provider, Tags};
use repave_core::{ImageId, Timestamp};
use std::collections::BTreeSet;

/// Every image `pipeline`'s group, parameter and the cloud still point at.
/// `extra_specs`: launch spec versions the caller knows are still wanted
/// (the one a rollback would return to).
pub async fn image_references(
    p: &dyn Provider,
    pipeline: &Pipeline,
    extra_specs: &[LaunchSpecRef],
    now: Timestamp,
) -> Result<BTreeSet<ImageId>, EngineError> {
    let step = "references";
    let mut refs = retry(step, || p.referenced_images()).await?;
    match retry(step, || p.describe_group(&pipeline.group)).await {
        Ok(g) => {
            refs.extend(g.members.iter().map(|m| m.image.clone()));
            let mut specs = vec![g.launch_spec.clone()];
            specs.extend(extra_specs.iter().cloned());
            for spec in specs {
                match retry(step, || p.describe_launch_spec(&spec)).await {
                    Ok(s) => {
                        refs.insert(s.image);
                    }
                    Err(EngineError::Provider { source, .. }) if source.is_not_found() => {}
                    Err(e) => return Err(e),
                }
            }
        }
        // No group: nothing of it to keep.
        Err(EngineError::Provider { source, .. }) if source.is_not_found() => {}
        Err(e) => return Err(e),
    }
    match retry(step, || p.parameter_history(&pipeline.parameter)).await {
        Ok(history) => {
            let window = pipeline.retention.rollback_window.get();
            if let Some(last) = history.last() {
                refs.insert(ImageId::new(last.value.trim()));
            }
            for v in history.iter().filter(|v| now.since(v.modified_at) <= window) {
                refs.insert(ImageId::new(v.value.trim()));
            }
        }
        Err(EngineError::Provider { source, .. }) if source.is_not_found() => {}
        Err(e) => return Err(e),
    }
    let everything = Tags::new();
    for i in retry(step, || p.list_instances(&everything)).await? {
        if !i.state.is_gone() {
            refs.insert(i.image);
        }
    }
    Ok(refs)
}

/// Why an image of a pipeline may go, or `None` to keep it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub image: ImageId,
    /// "marked bad", "unpublished", "beyond keep".
    pub why: String,
    /// Referenced: kept whatever the reason.
    pub referenced: bool,
}

/// The pipeline's images that retention and `gc` would remove: bad and
/// unpublished ones, and good ones beyond the newest `keep`; each says
/// whether a reference keeps it after all. Pending images are never
/// candidates (their creation is still going on).
pub fn disposable(images: &[Image], keep: usize, refs: &BTreeSet<ImageId>) -> Vec<Verdict> {
    let mut live: Vec<&Image> = images
        .iter()
        .filter(|i| matches!(i.state, ImageState::Available | ImageState::Failed))
        .collect();
    live.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id)));
    let mut good = 0;
    let mut out = Vec::new();
    for img in live {
        let why = match img.tags.get(tag::STATUS).map(String::as_str) {
            Some(tag::STATUS_BAD) => "marked bad",
            Some(tag::STATUS_UNPUBLISHED) => "unpublished",
            _ => {
                good += 1;
                if good <= keep {
                    continue;
                }
                "beyond keep"
            }
        };
        out.push(Verdict {
            image: img.id.clone(),
            why: why.into(),
            referenced: refs.contains(&img.id),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(id: &str, created: i64, status: Option<&str>) -> Image {
        let mut tags = Tags::new();
        if let Some(s) = status {
            tags.insert(tag::STATUS.into(), s.into());
        }
        Image {
            id: ImageId::new(id),
            name: id.into(),
            state: ImageState::Available,
            created_at: Timestamp(created),
            platform: None,
            tags,
        }
    }

    #[test]
    fn bad_and_unpublished_images_never_count_against_keep() {
        let images = vec![
            image("newest-bad", 50, Some(tag::STATUS_BAD)),
            image("g4", 40, None),
            image("unpub", 35, Some(tag::STATUS_UNPUBLISHED)),
            image("g3", 30, None),
            image("g2", 20, None),
            image("g1", 10, None),
        ];
        let refs: BTreeSet<ImageId> = [ImageId::new("g1")].into();
        let v = disposable(&images, 2, &refs);
        let got: Vec<(&str, &str, bool)> = v
            .iter()
            .map(|v| (v.image.as_str(), v.why.as_str(), v.referenced))
            .collect();
        assert_eq!(
            got,
            vec![
                ("newest-bad", "marked bad", false),
                ("unpub", "unpublished", false),
                ("g2", "beyond keep", false),
                ("g1", "beyond keep", true),
            ]
        );
    }
}
