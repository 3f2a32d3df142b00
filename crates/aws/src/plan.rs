//! Read-only preflight for `repave plan`: what a run would use and replace,
//! and the problems found before anything is created. Nothing here changes
//! the account; the builder launch is checked with EC2 `DryRun`
//! (`DryRunOperation` = it would have succeeded).

use crate::error::map_sdk;
use crate::groups::LAUNCH_CONFIGURATION_PREFIX;
use crate::AwsProvider;
use aws_sdk_ec2::types::{IamInstanceProfileSpecification, InstanceType};
use repave_core::config::Pipeline;
use repave_core::provider::{Groups, ImageState, Images, Lifecycle, Parameters};
use repave_core::{ImageId, InstanceId};
use serde::{Deserialize, Serialize};

/// What a run of the pipeline would do, and what stands in its way.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Preflight {
    /// The golden parameter's image (the builder's source).
    pub source_image: Option<ImageId>,
    /// The group's launch spec as it names itself (`$Latest` unresolved).
    pub launch_spec: Option<String>,
    /// Members a roll onto a new image would replace.
    pub would_replace: Vec<InstanceId>,
    /// Protected or standby members (the policy decides skip / wait / fail).
    pub held: Vec<InstanceId>,
    /// Everything that would make the run fail or misbehave, in words.
    pub problems: Vec<String>,
    /// The roll's readiness timing in effect and where each value came from.
    #[serde(default)]
    pub health: Vec<String>,
    /// Worth knowing, not in the way.
    #[serde(default)]
    pub notes: Vec<String>,
    /// The builder's settings and where each came from (config or group).
    #[serde(default)]
    pub builder: Vec<String>,
    /// The group's warm pool instances, "i-1 on ami-0 (Warmed:Stopped)":
    /// the roll replaces them too (see `notes`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warm_pool: Vec<String>,
}

impl AwsProvider {
    /// Check everything a run of `pipeline` touches, read-only.
    pub async fn preflight(&self, name: &str, pipeline: &Pipeline) -> repave_core::provider::Result<Preflight> {
        let mut out = Preflight::default();
        match self.get_parameter(&pipeline.parameter).await {
            Ok(p) => out.source_image = Some(ImageId::new(p.value.trim())),
            Err(e) if e.is_not_found() => out
                .problems
                .push(format!("golden parameter {} does not exist", pipeline.parameter)),
            Err(e) => return Err(e),
        }
        if let Some(img) = out.source_image.clone() {
            match self.describe_image(&img).await {
                Ok(i) if i.state == ImageState::Available => {}
                Ok(i) => out
                    .problems
                    .push(format!("source image {img} is {:?}, not available", i.state)),
                Err(e) if e.is_not_found() => out.problems.push(format!("source image {img} does not exist")),
                Err(e) => return Err(e),
            }
        }
        match self.describe_asg(&pipeline.group).await {
            Ok(g) => {
                let template = g.launch_template().or_else(|| {
                    g.mixed_instances_policy()
                        .and_then(|m| m.launch_template())
                        .and_then(|l| l.launch_template_specification())
                });
                if let Some(t) = template {
                    let v = t.version().unwrap_or("$Default");
                    out.launch_spec = Some(format!(
                        "{}:{v}",
                        t.launch_template_id().or(t.launch_template_name()).unwrap_or_default()
                    ));
                    if let Some(m) = g.mixed_instances_policy() {
                        let own: Vec<String> = m
                            .launch_template()
                            .map(|l| l.overrides())
                            .unwrap_or_default()
                            .iter()
                            .filter_map(|o| o.launch_template_specification())
                            .filter_map(|s| s.launch_template_id().or(s.launch_template_name()))
                            .map(str::to_string)
                            .collect();
                        out.notes.push(format!(
                            "mixed instances policy: publish changes its launch template version only; the instances distribution and overrides stay{}",
                            if own.is_empty() {
                                String::new()
                            } else {
                                format!(
                                    "; overrides with their own template ({}) follow only when they launch the same image",
                                    own.join(", ")
                                )
                            }
                        ));
                    }
                    if v.starts_with('$') {
                        out.notes.push(format!(
                            "the group names launch template version {v}: publish keeps it that way{}",
                            if pipeline.rollout.strategy == repave_core::config::Strategy::Native {
                                "; Instance Refresh cannot roll back automatically from it"
                            } else {
                                ""
                            }
                        ));
                    }
                } else if let Some(lc) = g.launch_configuration_name() {
                    out.launch_spec = Some(format!("{LAUNCH_CONFIGURATION_PREFIX}{lc}"));
                    out.notes.push(format!(
                        "group {} uses launch configuration {lc}: publish copies it; accounts created since 2023-10-01 cannot create launch configurations (move the group to a launch template)",
                        pipeline.group
                    ));
                } else {
                    out.problems.push(format!(
                        "group {} has no launch template or configuration",
                        pipeline.group
                    ));
                }
                let suspended: Vec<String> = g
                    .suspended_processes()
                    .iter()
                    .filter_map(|p| p.process_name())
                    .map(str::to_string)
                    .collect();
                let native = pipeline.rollout.strategy == repave_core::config::Strategy::Native;
                if let Some(reason) = repave_core::processes::refusal(&pipeline.group, &suspended, native) {
                    out.problems.push(reason);
                }
                let to_suspend: Vec<&str> = repave_core::processes::DURING_ROLL
                    .iter()
                    .copied()
                    .filter(|p| !suspended.iter().any(|s| s == p))
                    .collect();
                if !to_suspend.is_empty() {
                    out.notes.push(format!(
                        "the roll suspends {} and resumes exactly those afterwards{}",
                        to_suspend.join(", "),
                        if suspended.is_empty() {
                            String::new()
                        } else {
                            format!(" (already suspended, left as they are: {})", suspended.join(", "))
                        }
                    ));
                }
                let timing = self.read_health_timing(&pipeline.group).await?;
                let health = repave_core::rollout::HealthSettings::new(&pipeline.rollout, &timing);
                let desired = g.desired_capacity().unwrap_or(0).max(0) as u32;
                let max = g.max_size().unwrap_or(0).max(0) as u32;
                let policy = repave_core::rollout::RollPolicy::new(&pipeline.rollout, &health);
                if pipeline.rollout.strategy != repave_core::config::Strategy::Native {
                    if let Some(reason) = repave_core::rollout::no_room(desired, max, &policy) {
                        out.problems.push(format!("group {}: {reason}", pipeline.group));
                    }
                }
                out.health = health.sources;
            }
            Err(e) if e.is_not_found() => out.problems.push(format!("group {} does not exist", pipeline.group)),
            Err(e) => return Err(e),
        }
        let mut builder = None;
        if out.launch_spec.is_some() {
            let g = self.describe_group(&pipeline.group).await?;
            builder = self.builder_of(name, pipeline, &g, &mut out).await?;
            for m in &g.members {
                // A new image differs from every member's, so every member
                // that is not held would be replaced.
                let r = &pipeline.rollout;
                let standby = m.lifecycle == Lifecycle::Standby;
                if repave_core::config::HeldInstances::holding(standby, m.protected, r.standby, r.protected).is_some() {
                    out.held.push(m.id.clone());
                } else if !matches!(m.lifecycle, Lifecycle::Terminating | Lifecycle::Terminated) {
                    out.would_replace.push(m.id.clone());
                }
            }
            let pool: Vec<_> = self
                .warm_pool(&pipeline.group)
                .await?
                .into_iter()
                .filter(|w| !w.leaving())
                .collect();
            if !pool.is_empty() {
                out.warm_pool = pool.iter().map(|w| w.label()).collect();
                out.notes.push(if pipeline.rollout.strategy == repave_core::config::Strategy::Native {
                    format!(
                        "warm pool of {} instance(s): Instance Refresh replaces them after the group's members",
                        pool.len()
                    )
                } else {
                    format!(
                        "warm pool of {} instance(s): those on the old image are terminated before the roll, so the pool refills from the new launch spec and every surge draws new-image instances from it",
                        pool.len()
                    )
                });
            }
            if !out.held.is_empty() {
                let ids: Vec<String> = out.held.iter().map(|i| i.to_string()).collect();
                out.problems.push(format!(
                    "protected or standby instances: {} (policy: protected {:?}, standby {:?})",
                    ids.join(", "),
                    pipeline.rollout.protected,
                    pipeline.rollout.standby
                ));
            }
        }
        if let (Some(img), Some(spec)) = (out.source_image.clone(), builder) {
            if let Some(p) = self.dry_run_builder(&spec, &img).await? {
                out.problems.push(p);
            }
        }
        // What the run checks at its start: the caller holds the policy.
        let perms = self.check_permissions_of(name, pipeline).await;
        match perms.unchecked {
            Some(why) => out.notes.push(format!("permissions not checked: {why}")),
            None => out
                .problems
                .extend(perms.missing.iter().map(|m| format!("missing permission: {m}"))),
        }
        Ok(out)
    }

    /// The builder's settings as the run resolves them (the config's, the
    /// rest from group `g`): `None`, with the problem said, when its launch
    /// spec cannot be read or a setting the builder needs is nowhere.
    async fn builder_of(
        &self,
        name: &str,
        pipeline: &Pipeline,
        g: &repave_core::provider::Group,
        out: &mut Preflight,
    ) -> repave_core::provider::Result<Option<repave_core::provider::InstanceSpec>> {
        use repave_core::provider::Provider;
        let launch = match self.describe_launch_spec(&g.launch_spec).await {
            Ok(l) => l,
            Err(e) if e.is_not_found() => {
                out.problems.push(format!(
                    "group {}: launch spec {:?} does not exist",
                    g.name, g.launch_spec
                ));
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        match repave_core::builder::builder_spec(name, &pipeline.builder, g, &launch.spec, self.builder_needs()) {
            Ok(b) => {
                out.builder = b.origins;
                Ok(Some(b.spec))
            }
            Err(m) => {
                out.problems.push(m);
                Ok(None)
            }
        }
    }

    /// RunInstances with DryRun for the builder: `None` when it would work.
    async fn dry_run_builder(
        &self,
        b: &repave_core::provider::InstanceSpec,
        image: &ImageId,
    ) -> repave_core::provider::Result<Option<String>> {
        let mut call = self
            .ec2
            .run_instances()
            .dry_run(true)
            .image_id(image.as_str())
            .min_count(1)
            .max_count(1)
            .set_subnet_id(b.subnet.clone())
            .set_security_group_ids(Some(b.security_groups.clone()).filter(|v| !v.is_empty()));
        if let Some(t) = &b.instance_type {
            call = call.instance_type(InstanceType::from(t.as_str()));
        }
        if let Some(p) = &b.instance_profile {
            let spec = if p.starts_with("arn:") {
                IamInstanceProfileSpecification::builder().arn(p).build()
            } else {
                IamInstanceProfileSpecification::builder().name(p).build()
            };
            call = call.iam_instance_profile(spec);
        }
        match call.send().await {
            Ok(_) => Ok(None),
            Err(e) => {
                let e = map_sdk("RunInstances", e);
                if e.message.starts_with("DryRunOperation") {
                    Ok(None)
                } else if e.is_retryable() {
                    Err(e)
                } else {
                    Ok(Some(format!("the builder could not be launched: {}", e.message)))
                }
            }
        }
    }
}
