//! Groups and their balancer targets: the daemon's synchronous operations
//! (called with the state lock held); the reconciler acts on what they set.

use super::catalog::{add_launch_spec, describe_launch_spec, import_image, put_parameter};
use super::{Cloud, Shared};
use crate::balancer::Balancer;
use crate::error::LocalError;
use crate::protocol::{GroupSetup, GroupSetupResult};
use crate::state::GroupRecord;
use repave_core::provider::{
    BalancerCheck, Group, GroupMember, HealthTiming, InstanceSpec, InstanceState, LaunchSpecRef, Lifecycle, Tags,
    TargetHealth, TargetState,
};
use repave_core::InstanceId;

fn group_mut<'a>(cloud: &'a mut Cloud, name: &str) -> Result<&'a mut GroupRecord, LocalError> {
    cloud
        .state
        .groups
        .get_mut(name)
        .ok_or_else(|| LocalError::not_found(format!("group {name}")))
}

pub(crate) fn describe_group(cloud: &Cloud, name: &str) -> Result<Group, LocalError> {
    let g = cloud
        .state
        .groups
        .get(name)
        .ok_or_else(|| LocalError::not_found(format!("group {name}")))?;
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
                hook_wait: false,
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
        subnets: vec![],
        health: HealthTiming {
            grace_period: Some(g.health_check.grace.get()),
            health_check_type: Some("balancer".into()),
            checks: vec![BalancerCheck {
                name: format!("{} balancer", g.name),
                interval: g.health_check.interval.get(),
                healthy_threshold: g.health_check.healthy_threshold,
                deregistration_delay: Some(g.deregistration_delay),
                port: Some(g.port),
            }],
            launch_hooks: vec![],
            termination_hooks: vec![],
            default_warmup: None,
        },
        suspended: vec![],
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
    let m = member_mut(cloud, group, instance)?;
    m.protected = protected;
    shared.save(cloud)
}

fn member_mut<'a>(
    cloud: &'a mut Cloud,
    group: &str,
    instance: &InstanceId,
) -> Result<&'a mut crate::state::MemberRecord, LocalError> {
    group_mut(cloud, group)?
        .members
        .iter_mut()
        .find(|m| &m.id == instance)
        .ok_or_else(|| LocalError::not_found(format!("instance {instance} is not a member of group {group}")))
}

/// Every member's state at the group's balancer.
pub(crate) fn target_health(cloud: &Cloud, group: &str) -> Result<Vec<TargetHealth>, LocalError> {
    let g = cloud
        .state
        .groups
        .get(group)
        .ok_or_else(|| LocalError::not_found(format!("group {group}")))?;
    let b = cloud.balancers.get(group);
    Ok(g.members
        .iter()
        .map(|m| {
            b.and_then(|b| b.target(&m.id)).unwrap_or_else(|| TargetHealth {
                instance: m.id.clone(),
                state: TargetState::Unused,
                since: cloud
                    .state
                    .instances
                    .get(&m.id)
                    .map(|r| r.instance.launched_at)
                    .unwrap_or_default(),
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
    let m = member_mut(cloud, group, instance)?;
    m.registered = registered;
    if !registered {
        if let Some(b) = cloud.balancers.get(group) {
            b.drain(instance);
        }
    }
    shared.save(cloud)
}

/// Create the group (image, launch spec, parameter, balancer) unless it exists.
pub(crate) fn ensure_group(
    shared: &Shared,
    cloud: &mut Cloud,
    setup: GroupSetup,
) -> Result<GroupSetupResult, LocalError> {
    if let Some(g) = cloud.state.groups.get(&setup.name) {
        let spec = describe_launch_spec(cloud, &g.launch_spec)?;
        return Ok(GroupSetupResult {
            image: spec.image,
            launch_spec: g.launch_spec.clone(),
            created: false,
        });
    }
    if setup.min > setup.desired || setup.desired > setup.max {
        return Err(LocalError::invalid(format!(
            "group {}: need min <= desired <= max, got {} / {} / {}",
            setup.name, setup.min, setup.desired, setup.max
        )));
    }
    // Bind first: a busy port must not leave a half-made group behind.
    let balancer = Balancer::start(
        &setup.name,
        setup.port,
        setup.health_check.clone(),
        setup.deregistration_delay,
    )
    .map_err(|e| LocalError::io(format!("starting balancer of {} on port {}", setup.name, setup.port), e))?;
    // Port 0 asks the OS for one; record the one we got.
    let port = balancer
        .address()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or(setup.port);
    let mut tags = Tags::new();
    tags.insert(
        repave_core::provider::tag::ROLE.into(),
        repave_core::provider::tag::ROLE_IMAGE.into(),
    );
    let image = match import_image(shared, cloud, &setup.image, &format!("{}-base", setup.name), tags) {
        Ok(i) => i,
        Err(e) => {
            balancer.stop();
            return Err(e);
        }
    };
    let spec = InstanceSpec {
        command: setup.command.clone(),
        ..Default::default()
    };
    let launch_spec = add_launch_spec(cloud, &setup.name, image.clone(), spec);
    if let Some(p) = &setup.parameter {
        if !cloud.state.parameters.contains_key(p) {
            put_parameter(
                shared,
                cloud,
                p,
                image.as_str(),
                Some(format!("golden image of group {}", setup.name)),
            )?;
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
            port,
            health_check: setup.health_check,
            deregistration_delay: setup.deregistration_delay,
            members: Vec::new(),
            scaling: setup.scaling,
        },
    );
    cloud.balancers.insert(setup.name, balancer);
    shared.save(cloud)?;
    Ok(GroupSetupResult {
        image,
        launch_spec,
        created: true,
    })
}
