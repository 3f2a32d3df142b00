//! Auto Scaling groups: DescribeAutoScalingGroups joined with one batched
//! DescribeInstances (image ids and launch times come from EC2: moto's
//! per-instance launch template version is wrong, and image ids are what the
//! roll compares anyway).
//!
//! [`LaunchSpecRef`] on AWS:
//! - launch template: `name` = template id (`lt-...`, or the template name
//!   when the group names it by name), `version` = the version number
//!   (`$Latest` / `$Default` are resolved to their number);
//! - launch configuration: `name` = `"lc:<configuration name>"`,
//!   `version` = 0 (configurations are immutable; a "new version" is a new
//!   configuration, see [`crate::launch_config`]).

use crate::convert::ts;
use crate::error::{map_sdk, not_found};
use crate::launch_template::{made_from, VersionRef};
use crate::AwsProvider;
use async_trait::async_trait;
use aws_sdk_autoscaling::types::{
    AutoScalingGroup, LaunchTemplate as AsgLaunchTemplate, LaunchTemplateOverrides, LaunchTemplateSpecification,
    LifecycleState, MixedInstancesPolicy,
};
use repave_core::provider::{Group, GroupMember, Groups, LaunchSpec, LaunchSpecRef, Lifecycle, Result, WarmInstance};
use repave_core::{ImageId, InstanceId, ProviderError, Timestamp};
use std::collections::HashMap;
use std::time::Duration;

/// Prefix of [`LaunchSpecRef::name`] for launch configurations.
pub const LAUNCH_CONFIGURATION_PREFIX: &str = "lc:";

/// Which kind of launch spec a [`LaunchSpecRef`] names.
pub(crate) enum SpecKind<'a> {
    Template { id_or_name: &'a str, version: u64 },
    Configuration { name: &'a str },
}

pub(crate) fn spec_kind(r: &LaunchSpecRef) -> SpecKind<'_> {
    match r.name.strip_prefix(LAUNCH_CONFIGURATION_PREFIX) {
        Some(name) => SpecKind::Configuration { name },
        None => SpecKind::Template {
            id_or_name: &r.name,
            version: r.version,
        },
    }
}

fn lifecycle(s: Option<&LifecycleState>) -> Lifecycle {
    let s = s.map(|s| s.as_str()).unwrap_or("Pending");
    if s == "InService" {
        Lifecycle::InService
    } else if s.starts_with("Pending") {
        Lifecycle::Pending
    } else if s == "Standby" || s == "EnteringStandby" {
        Lifecycle::Standby
    } else if s == "Terminated" {
        Lifecycle::Terminated
    } else {
        // Terminating*, Detaching, Detached, Quarantined: on the way out.
        Lifecycle::Terminating
    }
}

fn template_ref(t: &LaunchTemplateSpecification) -> Option<(String, Option<u64>, String)> {
    let key = t.launch_template_id().or(t.launch_template_name())?.to_string();
    let raw = t.version().unwrap_or("$Default").to_string();
    Some((key, raw.parse().ok(), raw))
}

/// The group's subnets (VPCZoneIdentifier is a comma-separated list).
pub(crate) fn subnets(g: &AutoScalingGroup) -> Vec<String> {
    g.vpc_zone_identifier()
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

pub(crate) fn secs(v: Option<i32>) -> Option<Duration> {
    v.filter(|v| *v >= 0).map(|v| Duration::from_secs(v as u64))
}

/// Validation errors that mean "no such instance in this group".
fn member_not_found(op: &str, e: ProviderError) -> ProviderError {
    let m = e.message.to_ascii_lowercase();
    if m.starts_with("validationerror")
        && (m.contains("not found") || m.contains("not part of") || m.contains("no instance"))
    {
        ProviderError::not_found(op, e.message)
    } else {
        e
    }
}

impl AwsProvider {
    /// Image id and launch time of each member: DescribeInstances only for
    /// members not seen before (an instance's image never changes), so a
    /// roll tick with no new member costs no DescribeInstances at all.
    async fn member_facts(&self, ids: &[InstanceId]) -> Result<HashMap<InstanceId, (ImageId, Timestamp)>> {
        let missing: Vec<InstanceId> = {
            let known = self.member_cache.lock().expect("member cache lock");
            ids.iter().filter(|i| !known.contains_key(*i)).cloned().collect()
        };
        if !missing.is_empty() {
            let found = self.describe_by_ids(&missing).await?;
            let mut known = self.member_cache.lock().expect("member cache lock");
            for i in found {
                let id = InstanceId::new(i.instance_id().unwrap_or_default());
                known.insert(
                    id,
                    (ImageId::new(i.image_id().unwrap_or_default()), ts(i.launch_time())),
                );
            }
        }
        let known = self.member_cache.lock().expect("member cache lock");
        Ok(ids
            .iter()
            .filter_map(|i| known.get(i).map(|f| (i.clone(), f.clone())))
            .collect())
    }

    pub(crate) async fn describe_asg(&self, name: &str) -> Result<AutoScalingGroup> {
        let out = self
            .asg
            .describe_auto_scaling_groups()
            .auto_scaling_group_names(name)
            .send()
            .await
            .map_err(|e| map_sdk("DescribeAutoScalingGroups", e))?;
        let g = out
            .auto_scaling_groups()
            .first()
            .cloned()
            .ok_or_else(|| not_found("DescribeAutoScalingGroups", format!("group {name}")))?;
        self.balancers
            .lock()
            .expect("balancer lock")
            .insert(name.to_string(), crate::traffic::Balancers::of(&g));
        Ok(g)
    }

    /// The group's launch spec, `$Latest` / `$Default` resolved to a number.
    async fn group_spec(&self, g: &AutoScalingGroup) -> Result<LaunchSpecRef> {
        if let Some(lc) = g.launch_configuration_name() {
            return Ok(LaunchSpecRef {
                name: format!("{LAUNCH_CONFIGURATION_PREFIX}{lc}"),
                version: 0,
            });
        }
        let t = g.launch_template().or_else(|| {
            g.mixed_instances_policy()
                .and_then(|m| m.launch_template())
                .and_then(|l| l.launch_template_specification())
        });
        let Some((key, version, raw)) = t.and_then(template_ref) else {
            return Err(ProviderError::permanent(
                "DescribeAutoScalingGroups",
                format!(
                    "UnsupportedLaunchSpec: group {} has neither a launch template nor a launch configuration",
                    g.auto_scaling_group_name().unwrap_or_default()
                ),
            ));
        };
        let version = match version {
            Some(v) => v,
            None => self.resolve_template_version(&key, &raw).await?,
        };
        Ok(LaunchSpecRef { name: key, version })
    }
}

/// A template reference with only its id (or only its name: AWS refuses both).
pub(crate) fn template_spec(id_or_name: &str, version: String) -> LaunchTemplateSpecification {
    let t = LaunchTemplateSpecification::builder().version(version);
    if id_or_name.starts_with("lt-") {
        t.launch_template_id(id_or_name).build()
    } else {
        t.launch_template_name(id_or_name).build()
    }
}

fn names(t: &LaunchTemplateSpecification, id_or_name: &str) -> bool {
    t.launch_template_id() == Some(id_or_name) || t.launch_template_name() == Some(id_or_name)
}

impl AwsProvider {
    async fn point_at_template(&self, group: &str, id_or_name: &str, version: u64) -> Result<()> {
        let g = self.describe_asg(group).await?;
        let mixed = g.mixed_instances_policy().cloned();
        let current = g
            .launch_template()
            .or_else(|| {
                mixed
                    .as_ref()
                    .and_then(|m| m.launch_template())
                    .and_then(|l| l.launch_template_specification())
            })
            .cloned();
        let same_template = current.as_ref().is_some_and(|t| names(t, id_or_name));
        let by = if same_template {
            VersionRef::parse(current.as_ref().and_then(|t| t.version()))
        } else {
            VersionRef::Number(version)
        };
        // From which image to which: override templates on the same image
        // follow the main one. On `$Latest` the new version is already the
        // latest, so the group launched the one before it.
        let to_image = self.template_image(id_or_name, version).await?;
        let from_image = if same_template {
            let now = self.current_number(id_or_name, by).await?;
            let was = if by == VersionRef::Latest && now == version {
                now.saturating_sub(1)
            } else {
                now
            };
            match was {
                0 => None,
                n => Some(self.template_image(id_or_name, n).await?),
            }
        } else {
            None
        };
        self.make_current(id_or_name, by, version).await?;
        let reference = match by {
            VersionRef::Latest => "$Latest".to_string(),
            VersionRef::Default => "$Default".to_string(),
            VersionRef::Number(_) => version.to_string(),
        };
        let call = self.asg.update_auto_scaling_group().auto_scaling_group_name(group);
        let call = match mixed {
            Some(m) => {
                let lt = m
                    .launch_template()
                    .cloned()
                    .unwrap_or_else(|| AsgLaunchTemplate::builder().build());
                let mut overrides = Vec::new();
                for o in lt.overrides() {
                    overrides.push(self.follow_override(o, from_image.as_ref(), &to_image).await?);
                }
                let policy = MixedInstancesPolicy::builder()
                    .launch_template(
                        AsgLaunchTemplate::builder()
                            .launch_template_specification(template_spec(id_or_name, reference))
                            .set_overrides(Some(overrides).filter(|o| !o.is_empty()))
                            .build(),
                    )
                    .set_instances_distribution(m.instances_distribution().cloned())
                    .build();
                call.mixed_instances_policy(policy)
            }
            None if same_template && !matches!(by, VersionRef::Number(_)) => {
                // $Latest / $Default now stand for `version`: the group's
                // own reference is already right.
                return Ok(());
            }
            None => call.launch_template(template_spec(id_or_name, reference)),
        };
        call.send().await.map_err(|e| map_sdk("UpdateAutoScalingGroup", e))?;
        Ok(())
    }

    /// An override that names its own template follows the main template
    /// when it launched the same image: onto a new version with `to` (or,
    /// rolling back, onto the version repave made it from). Overrides on
    /// another image (another architecture) are left as they are.
    async fn follow_override(
        &self,
        o: &LaunchTemplateOverrides,
        from: Option<&ImageId>,
        to: &ImageId,
    ) -> Result<LaunchTemplateOverrides> {
        let copy = |spec: Option<LaunchTemplateSpecification>, image: Option<String>| {
            LaunchTemplateOverrides::builder()
                .set_instance_type(o.instance_type().map(str::to_string))
                .set_weighted_capacity(o.weighted_capacity().map(str::to_string))
                .set_instance_requirements(o.instance_requirements().cloned())
                .set_launch_template_specification(spec)
                .set_image_id(image)
                .build()
        };
        // An override with its own image id on the old image follows too.
        let image_id = o.image_id().map(|i| {
            if Some(i) == from.map(|f| f.as_str()) {
                to.to_string()
            } else {
                i.to_string()
            }
        });
        let Some(t) = o.launch_template_specification() else {
            return Ok(copy(None, image_id));
        };
        let Some(key) = t.launch_template_id().or(t.launch_template_name()) else {
            return Ok(copy(Some(t.clone()), image_id));
        };
        let by = VersionRef::parse(t.version());
        let now = self.current_number(key, by).await?;
        let image = self.template_image(key, now).await?;
        if Some(&image) != from || &image == to {
            return Ok(copy(
                Some(template_spec(key, t.version().unwrap_or("$Default").to_string())),
                image_id,
            ));
        }
        let base = match made_from(self.template_description(key, now).await?.as_deref()) {
            Some(base) if &self.template_image(key, base).await? == to => base,
            _ => self.create_template_version(key, now, to).await?.version,
        };
        self.make_current(key, by, base).await?;
        let reference = match by {
            VersionRef::Number(_) => base.to_string(),
            VersionRef::Latest => "$Latest".into(),
            VersionRef::Default => "$Default".into(),
        };
        Ok(copy(Some(template_spec(key, reference)), image_id))
    }
}

#[async_trait]
impl Groups for AwsProvider {
    /// One DescribeAutoScalingGroups, plus one batched DescribeInstances
    /// for members this process has not seen yet (plus one
    /// DescribeLaunchTemplateVersions while the group is on `$Latest` /
    /// `$Default`). A member's launch time is the one first seen (a stopped
    /// and restarted member keeps it).
    async fn describe_group(&self, name: &str) -> Result<Group> {
        let g = self.describe_asg(name).await?;
        let launch_spec = self.group_spec(&g).await?;
        let ids: Vec<InstanceId> = g
            .instances()
            .iter()
            .filter_map(|i| i.instance_id())
            .map(InstanceId::new)
            .collect();
        let ec2 = self.member_facts(&ids).await?;
        // A member EC2 does not show yet (eventual consistency right after
        // launch) is left out: with its image unknown it must never be
        // chosen to drain or terminate. It appears on a later tick.
        let members = g
            .instances()
            .iter()
            .filter_map(|i| {
                let id = i.instance_id().unwrap_or_default().to_string();
                if i.lifecycle_state().is_some_and(|s| s.as_str().starts_with("Warmed")) {
                    // A warm pool instance is not a member (DescribeWarmPool
                    // lists those): it serves nothing and counts toward
                    // nothing until the group draws it in.
                    return None;
                }
                let Some((image, launched_at)) = ec2.get(&InstanceId::new(&id)).cloned() else {
                    tracing::debug!(instance = %id, "group member not visible in EC2 yet");
                    return None;
                };
                let spec = if let Some(lc) = i.launch_configuration_name() {
                    Some(LaunchSpecRef {
                        name: format!("{LAUNCH_CONFIGURATION_PREFIX}{lc}"),
                        version: 0,
                    })
                } else {
                    i.launch_template()
                        .and_then(template_ref)
                        .and_then(|(k, v, _)| v.map(|v| LaunchSpecRef { name: k, version: v }))
                };
                Some(GroupMember {
                    id: InstanceId::new(id),
                    image,
                    lifecycle: lifecycle(i.lifecycle_state()),
                    healthy: i.health_status().is_some_and(|h| h.eq_ignore_ascii_case("healthy")),
                    protected: i.protected_from_scale_in().unwrap_or(false),
                    launched_at,
                    launch_spec: spec,
                    hook_wait: i.lifecycle_state().is_some_and(|s| s.as_str().ends_with(":Wait")),
                })
            })
            .collect();
        Ok(Group {
            name: name.to_string(),
            min: g.min_size().unwrap_or(0).max(0) as u32,
            max: g.max_size().unwrap_or(0).max(0) as u32,
            desired: g.desired_capacity().unwrap_or(0).max(0) as u32,
            launch_spec,
            members,
            balancer: None,
            subnets: subnets(&g),
            health: Default::default(),
            suspended: g
                .suspended_processes()
                .iter()
                .filter_map(|p| p.process_name())
                .map(str::to_string)
                .collect(),
        })
    }

    async fn health_timing(&self, name: &str) -> Result<repave_core::provider::HealthTiming> {
        self.read_health_timing(name).await
    }

    /// DescribeWarmPool (every page), each instance's image from EC2 (as
    /// for members: one batched DescribeInstances for instances not seen
    /// yet). An instance EC2 does not show yet is left out until it does.
    async fn warm_pool(&self, group: &str) -> Result<Vec<WarmInstance>> {
        let mut listed = Vec::new();
        let mut token = None;
        loop {
            let out = self
                .asg
                .describe_warm_pool()
                .auto_scaling_group_name(group)
                .set_next_token(token)
                .send()
                .await
                .map_err(|e| map_sdk("DescribeWarmPool", e))?;
            if out.warm_pool_configuration().is_none() && out.instances().is_empty() {
                return Ok(vec![]);
            }
            for i in out.instances() {
                let (Some(id), Some(state)) = (i.instance_id(), i.lifecycle_state()) else {
                    continue;
                };
                listed.push((InstanceId::new(id), state.as_str().to_string()));
            }
            token = out.next_token().map(str::to_string);
            if token.is_none() {
                break;
            }
        }
        let ids: Vec<InstanceId> = listed.iter().map(|(i, _)| i.clone()).collect();
        let ec2 = self.member_facts(&ids).await?;
        Ok(listed
            .into_iter()
            .filter_map(|(id, state)| {
                let (image, _) = ec2.get(&id).cloned()?;
                Some(WarmInstance { id, image, state })
            })
            .collect())
    }

    async fn describe_launch_spec(&self, spec: &LaunchSpecRef) -> Result<LaunchSpec> {
        match spec_kind(spec) {
            SpecKind::Template { id_or_name, version } => self.describe_template_spec(id_or_name, version).await,
            SpecKind::Configuration { name } => self.describe_configuration_spec(name).await,
        }
    }

    async fn create_launch_spec_version(&self, base: &LaunchSpecRef, image: &ImageId) -> Result<LaunchSpecRef> {
        match spec_kind(base) {
            SpecKind::Template { id_or_name, version } => {
                self.create_template_version(id_or_name, version, image).await
            }
            SpecKind::Configuration { name } => self.copy_configuration(name, image).await,
        }
    }

    /// Point the group at `spec` the way it names its launch spec: a launch
    /// configuration by name; a template version by number, or through
    /// `$Latest` / `$Default` kept as they are (see [`crate::launch_template`]);
    /// inside a MixedInstancesPolicy only the template specifications
    /// change, never the instances distribution or the overrides' types.
    async fn set_group_launch_spec(&self, group: &str, spec: &LaunchSpecRef) -> Result<()> {
        match spec_kind(spec) {
            SpecKind::Configuration { name } => {
                self.asg
                    .update_auto_scaling_group()
                    .auto_scaling_group_name(group)
                    .launch_configuration_name(name)
                    .send()
                    .await
                    .map_err(|e| map_sdk("UpdateAutoScalingGroup", e))?;
                Ok(())
            }
            SpecKind::Template { id_or_name, version } => self.point_at_template(group, id_or_name, version).await,
        }
    }

    async fn set_desired_capacity(&self, group: &str, desired: u32) -> Result<()> {
        self.asg
            .set_desired_capacity()
            .auto_scaling_group_name(group)
            .desired_capacity(desired as i32)
            .honor_cooldown(false)
            .send()
            .await
            .map_err(|e| map_sdk("SetDesiredCapacity", e))?;
        Ok(())
    }

    async fn terminate_group_instance(&self, _group: &str, instance: &InstanceId, decrement: bool) -> Result<()> {
        self.asg
            .terminate_instance_in_auto_scaling_group()
            .instance_id(instance.as_str())
            .should_decrement_desired_capacity(decrement)
            .send()
            .await
            .map_err(|e| {
                member_not_found(
                    "TerminateInstanceInAutoScalingGroup",
                    map_sdk("TerminateInstanceInAutoScalingGroup", e),
                )
            })?;
        Ok(())
    }

    async fn set_instance_protection(&self, group: &str, instance: &InstanceId, protected: bool) -> Result<()> {
        self.asg
            .set_instance_protection()
            .auto_scaling_group_name(group)
            .instance_ids(instance.as_str())
            .protected_from_scale_in(protected)
            .send()
            .await
            .map_err(|e| member_not_found("SetInstanceProtection", map_sdk("SetInstanceProtection", e)))?;
        Ok(())
    }

    async fn suspend_processes(&self, group: &str, processes: &[String]) -> Result<()> {
        if processes.is_empty() {
            return Ok(());
        }
        self.asg
            .suspend_processes()
            .auto_scaling_group_name(group)
            .set_scaling_processes(Some(processes.to_vec()))
            .send()
            .await
            .map_err(|e| map_sdk("SuspendProcesses", e))?;
        Ok(())
    }

    async fn resume_processes(&self, group: &str, processes: &[String]) -> Result<()> {
        if processes.is_empty() {
            return Ok(());
        }
        self.asg
            .resume_processes()
            .auto_scaling_group_name(group)
            .set_scaling_processes(Some(processes.to_vec()))
            .send()
            .await
            .map_err(|e| map_sdk("ResumeProcesses", e))?;
        Ok(())
    }
}
