//! Images, parameters, launch specs and groups: the daemon's synchronous
//! operations on the state (called with the state lock held).

use super::{Cloud, Shared};
use crate::balancer::Balancer;
use crate::error::LocalError;
use crate::protocol::{GroupSetup, GroupSetupResult, ImageSource};
use crate::state::{GroupRecord, ImageRecord};
use repave_core::provider::{
    CreateImageRequest, Group, GroupMember, Image, ImageState, InstanceSpec, InstanceState, LaunchSpec, LaunchSpecRef,
    Lifecycle, Parameter, Tags, TargetHealth, TargetState,
};
use repave_core::{ImageId, InstanceId};
use std::collections::BTreeSet;

fn has_tags(have: &Tags, want: &Tags) -> bool {
    want.iter().all(|(k, v)| have.get(k) == Some(v))
}

fn add_image(cloud: &mut Cloud, manifest: crate::images::Manifest, name: &str, tags: Tags) -> ImageId {
    let id = ImageId::new(crate::util::new_id("img"));
    let image = Image { id: id.clone(), name: name.into(), state: ImageState::Available, created_at: crate::util::now(), tags };
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
    let referenced: BTreeSet<String> =
        cloud.state.images.values().flat_map(|r| r.manifest.values().map(|f| f.hash.clone())).collect();
    shared.blobs.gc(&referenced).map_err(|e| LocalError::io("collecting unreferenced blobs", e))?;
    Ok(())
}

pub(crate) fn describe_image(cloud: &Cloud, id: &ImageId) -> Result<Image, LocalError> {
    cloud.state.images.get(id).map(|r| r.image.clone()).ok_or_else(|| LocalError::not_found(format!("image {id}")))
}

pub(crate) fn list_images(cloud: &Cloud, tags: &Tags) -> Vec<Image> {
    cloud.state.images.values().filter(|r| has_tags(&r.image.tags, tags)).map(|r| r.image.clone()).collect()
}

pub(crate) fn tag_image(shared: &Shared, cloud: &mut Cloud, id: &ImageId, tags: &Tags) -> Result<(), LocalError> {
    let rec = cloud.state.images.get_mut(id).ok_or_else(|| LocalError::not_found(format!("image {id}")))?;
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
    let (version, old_description) =
        history.last().map(|p| (p.version + 1, p.description.clone())).unwrap_or((1, None));
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
    cloud.state.parameters.get(name).cloned().ok_or_else(|| LocalError::not_found(format!("parameter {name}")))
}

/// Labels move (as in SSM): a label names one version of a parameter.
pub(crate) fn label_parameter(
    shared: &Shared,
    cloud: &mut Cloud,
    name: &str,
    version: u64,
    labels: &[String],
) -> Result<(), LocalError> {
    let history =
        cloud.state.parameters.get_mut(name).ok_or_else(|| LocalError::not_found(format!("parameter {name}")))?;
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

fn add_launch_spec(cloud: &mut Cloud, name: &str, image: ImageId, spec: InstanceSpec) -> LaunchSpecRef {
    let versions = cloud.state.launch_specs.entry(name.to_string()).or_default();
    let version = versions.last().map(|s| s.version + 1).unwrap_or(1);
    versions.push(LaunchSpec { name: name.into(), version, image, spec, created_at: crate::util::now() });
    LaunchSpecRef { name: name.into(), version }
}

pub(crate) fn describe_launch_spec(cloud: &Cloud, r: &LaunchSpecRef) -> Result<LaunchSpec, LocalError> {
    cloud.state.launch_spec(r).cloned().ok_or_else(|| LocalError::not_found(format!("launch spec {}:{}", r.name, r.version)))
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

fn group_mut<'a>(cloud: &'a mut Cloud, name: &str) -> Result<&'a mut GroupRecord, LocalError> {
    cloud.state.groups.get_mut(name).ok_or_else(|| LocalError::not_found(format!("group {name}")))
}

pub(crate) fn describe_group(cloud: &Cloud, name: &str) -> Result<Group, LocalError> {
    let g = cloud.state.groups.get(name).ok_or_else(|| LocalError::not_found(format!("group {name}")))?;
    let members = g
        .members
        .iter()
        .filter_map(|m| {
            let rec = cloud.state.instances.get(&m.id)?;
            let lifecycle = if m.terminating || rec.instance.state.is_gone() {
                Lifecycle::Terminating
            } else if rec.instance.state == InstanceState::Pending {
                Lifecycle::Pending
            } else {
                Lifecycle::InService
            };
            Some(GroupMember {
                id: m.id.clone(),
                image: rec.instance.image.clone(),
                lifecycle,
                healthy: super::instances::alive(cloud, &m.id),
                protected: m.protected,
                launched_at: rec.instance.launched_at,
                launch_spec: Some(m.launch_spec.clone()),
            })
        })
        .collect();
    Ok(Group {
        name: g.name.clone(),
        min: g.min,
        max: g.max,
        desired: g.desired,
        launch_spec: g.launch_spec.clone(),
        members,
        balancer: Some(format!("127.0.0.1:{}", g.port)),
    })
}

pub(crate) fn set_group_launch_spec(
    shared: &Shared,
    cloud: &mut Cloud,
    group: &str,
    spec: &LaunchSpecRef,
) -> Result<(), LocalError> {
    describe_launch_spec(cloud, spec)?;
    group_mut(cloud, group)?.launch_spec = spec.clone();
    shared.save(cloud)
}

pub(crate) fn set_desired(shared: &Shared, cloud: &mut Cloud, group: &str, desired: u32) -> Result<(), LocalError> {
    let g = group_mut(cloud, group)?;
    if desired < g.min || desired > g.max {
        return Err(LocalError::invalid(format!(
            "desired capacity {desired} is outside [{}, {}] of group {group}",
            g.min, g.max
        )));
    }
    g.desired = desired;
    shared.save(cloud)
}

/// Mark a member for draining and termination; the reconciler does the rest
/// (and launches a replacement unless `decrement`).
pub(crate) fn terminate_group_instance(
    shared: &Shared,
    cloud: &mut Cloud,
    group: &str,
    instance: &InstanceId,
    decrement: bool,
) -> Result<(), LocalError> {
    let g = group_mut(cloud, group)?;
    if decrement && g.desired <= g.min {
        return Err(LocalError::invalid(format!(
            "group {group}: desired {} cannot drop below min {}",
            g.desired, g.min
        )));
    }
    let m = g
        .members
        .iter_mut()
        .find(|m| &m.id == instance)
        .ok_or_else(|| LocalError::not_found(format!("instance {instance} is not a member of group {group}")))?;
    if m.terminating {
        return Ok(());
    }
    m.terminating = true;
    if decrement {
        g.desired -= 1;
    }
    shared.save(cloud)
}

pub(crate) fn set_protection(
    shared: &Shared,
    cloud: &mut Cloud,
    group: &str,
    instance: &InstanceId,
    protected: bool,
) -> Result<(), LocalError> {
    let g = group_mut(cloud, group)?;
    let m = g
        .members
        .iter_mut()
        .find(|m| &m.id == instance)
        .ok_or_else(|| LocalError::not_found(format!("instance {instance} is not a member of group {group}")))?;
    m.protected = protected;
    shared.save(cloud)
}

/// Every member's state at the group's balancer.
pub(crate) fn target_health(cloud: &Cloud, group: &str) -> Result<Vec<TargetHealth>, LocalError> {
    let g = cloud.state.groups.get(group).ok_or_else(|| LocalError::not_found(format!("group {group}")))?;
    let b = cloud.balancers.get(group);
    Ok(g.members
        .iter()
        .map(|m| {
            b.and_then(|b| b.target(&m.id)).unwrap_or_else(|| TargetHealth {
                instance: m.id.clone(),
                state: TargetState::Unused,
                since: cloud.state.instances.get(&m.id).map(|r| r.instance.launched_at).unwrap_or_default(),
                in_flight: Some(0),
            })
        })
        .collect())
}

/// Set whether a member should receive traffic; deregistering drains at once.
pub(crate) fn set_registered(
    shared: &Shared,
    cloud: &mut Cloud,
    group: &str,
    instance: &InstanceId,
    registered: bool,
) -> Result<(), LocalError> {
    let g = group_mut(cloud, group)?;
    let m = g
        .members
        .iter_mut()
        .find(|m| &m.id == instance)
        .ok_or_else(|| LocalError::not_found(format!("instance {instance} is not a member of group {group}")))?;
    m.registered = registered;
    if !registered {
        if let Some(b) = cloud.balancers.get(group) {
            b.drain(instance);
        }
    }
    shared.save(cloud)
}

/// Create the group (image, launch spec, parameter, balancer) unless it exists.
pub(crate) fn ensure_group(shared: &Shared, cloud: &mut Cloud, setup: GroupSetup) -> Result<GroupSetupResult, LocalError> {
    if let Some(g) = cloud.state.groups.get(&setup.name) {
        let spec = describe_launch_spec(cloud, &g.launch_spec)?;
        return Ok(GroupSetupResult { image: spec.image, launch_spec: g.launch_spec.clone(), created: false });
    }
    if setup.min > setup.desired || setup.desired > setup.max {
        return Err(LocalError::invalid(format!(
            "group {}: need min <= desired <= max, got {} / {} / {}",
            setup.name, setup.min, setup.desired, setup.max
        )));
    }
    // Bind first: a busy port must not leave a half-made group behind.
    let balancer = Balancer::start(&setup.name, setup.port, setup.health_check.clone(), setup.deregistration_delay)
        .map_err(|e| LocalError::io(format!("starting balancer of {} on port {}", setup.name, setup.port), e))?;
    let mut tags = Tags::new();
    tags.insert(repave_core::provider::tag::ROLE.into(), repave_core::provider::tag::ROLE_IMAGE.into());
    let image = match import_image(shared, cloud, &setup.image, &format!("{}-base", setup.name), tags) {
        Ok(i) => i,
        Err(e) => {
            balancer.stop();
            return Err(e);
        }
    };
    let spec = InstanceSpec { command: setup.command.clone(), ..Default::default() };
    let launch_spec = add_launch_spec(cloud, &setup.name, image.clone(), spec);
    if let Some(p) = &setup.parameter {
        if !cloud.state.parameters.contains_key(p) {
            put_parameter(shared, cloud, p, image.as_str(), Some(format!("golden image of group {}", setup.name)))?;
        }
    }
    cloud.state.groups.insert(
        setup.name.clone(),
        GroupRecord {
            name: setup.name.clone(),
            min: setup.min,
            max: setup.max,
            desired: setup.desired,
            launch_spec: launch_spec.clone(),
            port: setup.port,
            health_check: setup.health_check,
            deregistration_delay: setup.deregistration_delay,
            members: Vec::new(),
        },
    );
    cloud.balancers.insert(setup.name, balancer);
    shared.save(cloud)?;
    Ok(GroupSetupResult { image, launch_spec, created: true })
}
