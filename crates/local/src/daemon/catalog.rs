//! Images, parameters and launch specs: the daemon's synchronous operations
//! on the state (called with the state lock held). Groups are in `groups.rs`.

use super::{Cloud, Shared};
use crate::error::LocalError;
use crate::protocol::ImageSource;
use crate::state::ImageRecord;
use repave_core::provider::{
    CreateImageRequest, Image, ImageState, InstanceSpec, InstanceState, LaunchSpec, LaunchSpecRef, Parameter, Tags,
};
use repave_core::ImageId;
use std::collections::BTreeSet;

fn has_tags(have: &Tags, want: &Tags) -> bool {
    want.iter().all(|(k, v)| have.get(k) == Some(v))
}

fn add_image(cloud: &mut Cloud, manifest: crate::images::Manifest, name: &str, tags: Tags) -> ImageId {
    let id = ImageId::new(crate::util::new_id("img"));
    let image = Image {
        id: id.clone(),
        name: name.into(),
        state: ImageState::Available,
        created_at: crate::util::now(),
        tags,
        // Stamped with the feed's OS family when described.
        platform: None,
    };
    cloud.state.images.insert(id.clone(), ImageRecord { image, manifest });
    id
}

/// Import an image from the built-in demo or a directory.
pub(crate) fn import_image(
    shared: &Shared,
    cloud: &mut Cloud,
    source: &ImageSource,
    name: &str,
    tags: Tags,
) -> Result<ImageId, LocalError> {
    let manifest = match source {
        ImageSource::BuiltinDemo => shared.blobs.import_files(&crate::builtin::demo_files()),
        ImageSource::Directory(dir) => shared.blobs.snapshot(dir),
    }
    .map_err(|e| LocalError::io(format!("importing image {name}"), e))?;
    let id = add_image(cloud, manifest, name, tags);
    shared.save(cloud)?;
    Ok(id)
}

/// Snapshot a stopped instance's root; the same token returns the same image.
pub(crate) fn create_image(shared: &Shared, cloud: &mut Cloud, req: CreateImageRequest) -> Result<ImageId, LocalError> {
    if !req.token.is_empty() {
        if let Some(id) = cloud.state.image_tokens.get(&req.token) {
            return Ok(id.clone());
        }
    }
    let rec = cloud
        .state
        .instances
        .get(&req.instance)
        .ok_or_else(|| LocalError::not_found(format!("instance {}", req.instance)))?;
    if rec.instance.state != InstanceState::Stopped {
        return Err(LocalError::invalid(format!(
            "instance {} is {:?}; images are made from stopped instances",
            req.instance, rec.instance.state
        )));
    }
    let manifest = shared
        .blobs
        .snapshot(&shared.paths.root(&req.instance))
        .map_err(|e| LocalError::io(format!("snapshotting {}", req.instance), e))?;
    let id = add_image(cloud, manifest, &req.name, req.tags);
    if !req.token.is_empty() {
        cloud.state.image_tokens.insert(req.token, id.clone());
    }
    shared.save(cloud)?;
    Ok(id)
}

/// Remove the image and every blob nothing else references.
pub(crate) fn deregister_image(shared: &Shared, cloud: &mut Cloud, id: &ImageId) -> Result<(), LocalError> {
    if cloud.state.images.remove(id).is_none() {
        return Err(LocalError::not_found(format!("image {id}")));
    }
    shared.save(cloud)?;
    let referenced: BTreeSet<String> = cloud
        .state
        .images
        .values()
        .flat_map(|r| r.manifest.values().map(|f| f.hash.clone()))
        .collect();
    shared
        .blobs
        .gc(&referenced)
        .map_err(|e| LocalError::io("collecting unreferenced blobs", e))?;
    Ok(())
}

pub(crate) fn describe_image(cloud: &Cloud, id: &ImageId) -> Result<Image, LocalError> {
    cloud
        .state
        .images
        .get(id)
        .map(|r| r.image.clone())
        .ok_or_else(|| LocalError::not_found(format!("image {id}")))
}

pub(crate) fn list_images(cloud: &Cloud, tags: &Tags) -> Vec<Image> {
    cloud
        .state
        .images
        .values()
        .filter(|r| has_tags(&r.image.tags, tags))
        .map(|r| r.image.clone())
        .collect()
}

pub(crate) fn tag_image(shared: &Shared, cloud: &mut Cloud, id: &ImageId, tags: &Tags) -> Result<(), LocalError> {
    let rec = cloud
        .state
        .images
        .get_mut(id)
        .ok_or_else(|| LocalError::not_found(format!("image {id}")))?;
    rec.image.tags.extend(tags.iter().map(|(k, v)| (k.clone(), v.clone())));
    shared.save(cloud)
}

pub(crate) fn get_parameter(cloud: &Cloud, name: &str) -> Result<Parameter, LocalError> {
    cloud
        .state
        .parameters
        .get(name)
        .and_then(|h| h.last().cloned())
        .ok_or_else(|| LocalError::not_found(format!("parameter {name}")))
}

/// New version; `description: None` keeps the current one.
pub(crate) fn put_parameter(
    shared: &Shared,
    cloud: &mut Cloud,
    name: &str,
    value: &str,
    description: Option<String>,
) -> Result<u64, LocalError> {
    let history = cloud.state.parameters.entry(name.to_string()).or_default();
    let (version, old_description) = history
        .last()
        .map(|p| (p.version + 1, p.description.clone()))
        .unwrap_or((1, None));
    history.push(Parameter {
        name: name.into(),
        value: value.into(),
        version,
        description: description.or(old_description),
        labels: Vec::new(),
        modified_at: crate::util::now(),
    });
    shared.save(cloud)?;
    Ok(version)
}

pub(crate) fn parameter_history(cloud: &Cloud, name: &str) -> Result<Vec<Parameter>, LocalError> {
    cloud
        .state
        .parameters
        .get(name)
        .cloned()
        .ok_or_else(|| LocalError::not_found(format!("parameter {name}")))
}

/// Labels move (as in SSM): a label names one version of a parameter.
pub(crate) fn label_parameter(
    shared: &Shared,
    cloud: &mut Cloud,
    name: &str,
    version: u64,
    labels: &[String],
) -> Result<(), LocalError> {
    let history = cloud
        .state
        .parameters
        .get_mut(name)
        .ok_or_else(|| LocalError::not_found(format!("parameter {name}")))?;
    if !history.iter().any(|p| p.version == version) {
        return Err(LocalError::not_found(format!("parameter {name} version {version}")));
    }
    for p in history.iter_mut() {
        if p.version == version {
            for l in labels {
                if !p.labels.contains(l) {
                    p.labels.push(l.clone());
                }
            }
        } else {
            p.labels.retain(|l| !labels.contains(l));
        }
    }
    shared.save(cloud)
}

pub(crate) fn add_launch_spec(cloud: &mut Cloud, name: &str, image: ImageId, spec: InstanceSpec) -> LaunchSpecRef {
    let versions = cloud.state.launch_specs.entry(name.to_string()).or_default();
    let version = versions.last().map(|s| s.version + 1).unwrap_or(1);
    versions.push(LaunchSpec {
        name: name.into(),
        version,
        image,
        spec,
        created_at: crate::util::now(),
    });
    LaunchSpecRef {
        name: name.into(),
        version,
    }
}

pub(crate) fn describe_launch_spec(cloud: &Cloud, r: &LaunchSpecRef) -> Result<LaunchSpec, LocalError> {
    cloud
        .state
        .launch_spec(r)
        .cloned()
        .ok_or_else(|| LocalError::not_found(format!("launch spec {}:{}", r.name, r.version)))
}

/// A new version of `base.name` with all of `base`'s data and `image`.
pub(crate) fn create_launch_spec_version(
    shared: &Shared,
    cloud: &mut Cloud,
    base: &LaunchSpecRef,
    image: &ImageId,
) -> Result<LaunchSpecRef, LocalError> {
    let spec = describe_launch_spec(cloud, base)?;
    describe_image(cloud, image)?;
    let r = add_launch_spec(cloud, &base.name, image.clone(), spec.spec);
    shared.save(cloud)?;
    Ok(r)
}

/// Every image a launch spec version (of any group) or a live instance
/// points at: what retention and `gc` must never delete.
pub(crate) fn referenced_images(cloud: &Cloud) -> Vec<ImageId> {
    let mut out: std::collections::BTreeSet<ImageId> = cloud
        .state
        .launch_specs
        .values()
        .flatten()
        .map(|s| s.image.clone())
        .collect();
    out.extend(
        cloud
            .state
            .instances
            .values()
            .filter(|r| !r.instance.state.is_gone())
            .map(|r| r.instance.image.clone()),
    );
    out.into_iter().collect()
}
