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
use crate::AwsProvider;
use async_trait::async_trait;
use aws_sdk_autoscaling::types::{AutoScalingGroup, LaunchTemplateSpecification, LifecycleState};
use repave_core::provider::{Group, GroupMember, Groups, LaunchSpec, LaunchSpecRef, Lifecycle, Result};
use repave_core::{ImageId, InstanceId, ProviderError, Timestamp};
use std::collections::HashMap;

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
    } else if s.starts_with("Pending") || s.starts_with("Warmed") {
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
        self.target_groups
            .lock()
            .expect("target group lock")
            .insert(name.to_string(), g.target_group_arns().to_vec());
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
        let members = g
            .instances()
            .iter()
            .map(|i| {
                let id = i.instance_id().unwrap_or_default().to_string();
                let (image, launched_at) = ec2
                    .get(&InstanceId::new(&id))
                    .cloned()
                    .unwrap_or_else(|| (ImageId::new(i.image_id().unwrap_or_default()), Timestamp(0)));
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
                GroupMember {
                    id: InstanceId::new(id),
                    image,
                    lifecycle: lifecycle(i.lifecycle_state()),
                    healthy: i.health_status().is_some_and(|h| h.eq_ignore_ascii_case("healthy")),
                    protected: i.protected_from_scale_in().unwrap_or(false),
                    launched_at,
                    launch_spec: spec,
                }
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
        })
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

    /// UpdateAutoScalingGroup to the numbered template version, or to the
    /// launch configuration.
    async fn set_group_launch_spec(&self, group: &str, spec: &LaunchSpecRef) -> Result<()> {
        let call = self.asg.update_auto_scaling_group().auto_scaling_group_name(group);
        let call = match spec_kind(spec) {
            SpecKind::Template { id_or_name, version } => {
                let t = LaunchTemplateSpecification::builder().version(version.to_string());
                let t = if id_or_name.starts_with("lt-") {
                    t.launch_template_id(id_or_name)
                } else {
                    t.launch_template_name(id_or_name)
                };
                call.launch_template(t.build())
            }
            SpecKind::Configuration { name } => call.launch_configuration_name(name),
        };
        call.send().await.map_err(|e| map_sdk("UpdateAutoScalingGroup", e))?;
        Ok(())
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
}
