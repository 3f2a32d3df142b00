//! The `native` roll strategy: EC2 Auto Scaling Instance Refresh, started
//! with the pipeline's rollout policy mapped onto its preferences and
//! watched until it ends. Not part of the provider traits (no other
//! provider has it): the engine reaches it through [`AwsProvider`] itself.
//!
//! Mapping: min / max healthy percent → MinHealthyPercentage /
//! MaxHealthyPercentage (AWS allows 0–100 / 100–200, at most 100 apart:
//! values are clamped), warmup → InstanceWarmup (only when set), checkpoints +
//! checkpoint pause → CheckpointPercentages / CheckpointDelay (100 appended:
//! AWS wants the last checkpoint at 100), skip_matching → SkipMatching,
//! auto_rollback → AutoRollback (where AWS allows it), held instances skip → Ignore, wait / fail →
//! Wait (a `fail` policy must refuse before starting, as `repave plan` does).

use crate::error::{map_sdk, not_found};
use crate::groups::{spec_kind, template_spec, SpecKind};
use crate::AwsProvider;
use aws_sdk_autoscaling::types::{
    DesiredConfiguration, InstanceRefreshStatus, LaunchTemplate as AsgLaunchTemplate, MixedInstancesPolicy,
    RefreshPreferences, ScaleInProtectedInstances, StandbyInstances,
};
use repave_core::config::{HeldInstances, Rollout};
use repave_core::provider::{Groups, LaunchSpecRef, Result};

/// Where an Instance Refresh is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefreshState {
    Pending,
    InProgress,
    /// Paused at a checkpoint or baking: still running.
    Baking,
    Successful,
    Failed,
    Cancelling,
    Cancelled,
    RollbackInProgress,
    RollbackSuccessful,
    RollbackFailed,
}

impl RefreshState {
    /// Nothing more will happen on its own.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            RefreshState::Successful
                | RefreshState::Failed
                | RefreshState::Cancelled
                | RefreshState::RollbackSuccessful
                | RefreshState::RollbackFailed
        )
    }
}

/// One look at a refresh, for the run record.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RefreshStatus {
    pub id: String,
    pub state: RefreshState,
    pub percentage_complete: u32,
    pub instances_to_update: u32,
    pub reason: Option<String>,
}

fn held(h: HeldInstances) -> (StandbyInstances, ScaleInProtectedInstances) {
    match h {
        HeldInstances::Skip => (StandbyInstances::Ignore, ScaleInProtectedInstances::Ignore),
        HeldInstances::Wait | HeldInstances::Fail => (StandbyInstances::Wait, ScaleInProtectedInstances::Wait),
        // Validation keeps "replace" off standby.
        HeldInstances::Replace => (StandbyInstances::Ignore, ScaleInProtectedInstances::Refresh),
    }
}

/// The pipeline's rollout policy as Instance Refresh preferences.
/// `auto_rollback` is the policy's wish where AWS allows it (a numbered
/// desired configuration on a group that names numbered versions);
/// InstanceWarmup is sent only when the config sets `warmup` (otherwise AWS
/// uses the group's DefaultInstanceWarmup, as it should).
pub fn refresh_preferences(r: &Rollout, auto_rollback: bool) -> RefreshPreferences {
    let min = r.min_healthy_percent.min(100) as i32;
    let max = (r.max_healthy_percent.clamp(100, 200) as i32).min(min + 100);
    let mut checkpoints: Vec<i32> = r.checkpoints.iter().map(|c| (*c).clamp(1, 100) as i32).collect();
    checkpoints.sort_unstable();
    checkpoints.dedup();
    if !checkpoints.is_empty() && checkpoints.last() != Some(&100) {
        checkpoints.push(100);
    }
    let (standby, _) = held(r.standby);
    let (_, protected) = held(r.protected);
    RefreshPreferences::builder()
        .min_healthy_percentage(min)
        .max_healthy_percentage(max)
        .set_instance_warmup(r.warmup.map(|w| w.get().as_secs().min(i32::MAX as u64) as i32))
        .set_checkpoint_percentages(Some(checkpoints.clone()).filter(|c| !c.is_empty()))
        .set_checkpoint_delay(
            (!checkpoints.is_empty()).then(|| r.checkpoint_pause.get().as_secs().min(i32::MAX as u64) as i32),
        )
        .skip_matching(r.skip_matching)
        .auto_rollback(r.auto_rollback && auto_rollback)
        .standby_instances(standby)
        .scale_in_protected_instances(protected)
        .build()
}

fn state(s: Option<&InstanceRefreshStatus>) -> RefreshState {
    match s {
        Some(InstanceRefreshStatus::Pending) | None => RefreshState::Pending,
        Some(InstanceRefreshStatus::InProgress) => RefreshState::InProgress,
        Some(InstanceRefreshStatus::Baking) => RefreshState::Baking,
        Some(InstanceRefreshStatus::Successful) => RefreshState::Successful,
        Some(InstanceRefreshStatus::Cancelling) => RefreshState::Cancelling,
        Some(InstanceRefreshStatus::Cancelled) => RefreshState::Cancelled,
        Some(InstanceRefreshStatus::RollbackInProgress) => RefreshState::RollbackInProgress,
        Some(InstanceRefreshStatus::RollbackSuccessful) => RefreshState::RollbackSuccessful,
        Some(InstanceRefreshStatus::RollbackFailed) => RefreshState::RollbackFailed,
        Some(_) => RefreshState::Failed,
    }
}

impl AwsProvider {
    /// StartInstanceRefresh on `group` with `target` as its desired
    /// configuration; the group is not moved first, so AWS has the previous
    /// configuration to roll back to, and moves the group itself on
    /// success. (A launch configuration cannot be a desired configuration:
    /// such a group is pointed at the new one first, and has no automatic
    /// rollback.) A refresh already running for the group (a resumed run)
    /// is returned instead of failing with InstanceRefreshInProgress.
    pub async fn start_instance_refresh(
        &self,
        group: &str,
        target: &LaunchSpecRef,
        rollout: &Rollout,
    ) -> Result<String> {
        let g = self.describe_asg(group).await?;
        let mut call = self.asg.start_instance_refresh().auto_scaling_group_name(group);
        let rollback_allowed = match spec_kind(target) {
            SpecKind::Configuration { .. } => {
                self.set_group_launch_spec(group, target).await?;
                false
            }
            SpecKind::Template { id_or_name, version } => {
                let spec = template_spec(id_or_name, version.to_string());
                let desired = match g.mixed_instances_policy() {
                    Some(m) => {
                        let lt = m
                            .launch_template()
                            .cloned()
                            .unwrap_or_else(|| AsgLaunchTemplate::builder().build());
                        let policy = MixedInstancesPolicy::builder()
                            .launch_template(
                                AsgLaunchTemplate::builder()
                                    .launch_template_specification(spec)
                                    .set_overrides(Some(lt.overrides().to_vec()).filter(|o| !o.is_empty()))
                                    .build(),
                            )
                            .set_instances_distribution(m.instances_distribution().cloned())
                            .build();
                        DesiredConfiguration::builder().mixed_instances_policy(policy).build()
                    }
                    None => DesiredConfiguration::builder().launch_template(spec).build(),
                };
                call = call.desired_configuration(desired);
                // AWS: no rollback when the group uses $Latest or $Default.
                let own = g.launch_template().or_else(|| {
                    g.mixed_instances_policy()
                        .and_then(|m| m.launch_template())
                        .and_then(|l| l.launch_template_specification())
                });
                own.and_then(|t| t.version()).is_some_and(|v| v.parse::<u64>().is_ok())
            }
        };
        if rollout.auto_rollback && !rollback_allowed {
            tracing::info!(
                group,
                "Instance Refresh without AutoRollback: AWS allows it only for numbered launch template versions"
            );
        }
        let started = call
            .preferences(refresh_preferences(rollout, rollback_allowed))
            .send()
            .await;
        match started {
            Ok(out) => Ok(out.instance_refresh_id().unwrap_or_default().to_string()),
            Err(e) => {
                let e = map_sdk("StartInstanceRefresh", e);
                if !e.message.starts_with("InstanceRefreshInProgress") {
                    return Err(e);
                }
                let current = self.latest_instance_refresh(group).await?;
                Ok(current.id)
            }
        }
    }

    async fn refreshes(&self, group: &str, id: Option<&str>) -> Result<RefreshStatus> {
        let mut call = self
            .asg
            .describe_instance_refreshes()
            .auto_scaling_group_name(group)
            .max_records(1);
        if let Some(id) = id {
            call = call.instance_refresh_ids(id);
        }
        let out = call.send().await.map_err(|e| map_sdk("DescribeInstanceRefreshes", e))?;
        let r = out.instance_refreshes().first().ok_or_else(|| {
            not_found(
                "DescribeInstanceRefreshes",
                format!("instance refresh {} of {group}", id.unwrap_or("(latest)")),
            )
        })?;
        Ok(RefreshStatus {
            id: r.instance_refresh_id().unwrap_or_default().to_string(),
            state: state(r.status()),
            percentage_complete: r.percentage_complete().unwrap_or(0).max(0) as u32,
            instances_to_update: r.instances_to_update().unwrap_or(0).max(0) as u32,
            reason: r.status_reason().map(str::to_string),
        })
    }

    /// The refresh `id` of `group`.
    pub async fn instance_refresh(&self, group: &str, id: &str) -> Result<RefreshStatus> {
        self.refreshes(group, Some(id)).await
    }

    /// The group's most recent refresh.
    pub async fn latest_instance_refresh(&self, group: &str) -> Result<RefreshStatus> {
        self.refreshes(group, None).await
    }

    /// CancelInstanceRefresh (instances already replaced stay replaced).
    pub async fn cancel_instance_refresh(&self, group: &str) -> Result<()> {
        self.asg
            .cancel_instance_refresh()
            .auto_scaling_group_name(group)
            .send()
            .await
            .map_err(|e| map_sdk("CancelInstanceRefresh", e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rollout_maps_onto_refresh_preferences() {
        let r = Rollout {
            min_healthy_percent: 90,
            max_healthy_percent: 250,
            checkpoints: vec![50, 20],
            skip_matching: true,
            protected: HeldInstances::Wait,
            ..Default::default()
        };
        let p = refresh_preferences(&r, true);
        assert_eq!(p.min_healthy_percentage(), Some(90));
        assert_eq!(p.max_healthy_percentage(), Some(190), "clamped to 200 and to min + 100");
        assert_eq!(p.checkpoint_percentages(), [20, 50, 100]);
        assert!(p.checkpoint_delay().is_some());
        assert_eq!(p.skip_matching(), Some(true));
        assert_eq!(p.scale_in_protected_instances(), Some(&ScaleInProtectedInstances::Wait));
        assert_eq!(p.standby_instances(), Some(&StandbyInstances::Ignore));
        assert_eq!(p.instance_warmup(), None, "the group's DefaultInstanceWarmup applies");
        assert_eq!(p.auto_rollback(), Some(true));
        assert_eq!(
            refresh_preferences(&r, false).auto_rollback(),
            Some(false),
            "only where AWS allows it"
        );
        let warm = Rollout {
            warmup: Some(repave_core::duration::HumanDuration::from_secs(90)),
            ..r.clone()
        };
        assert_eq!(refresh_preferences(&warm, true).instance_warmup(), Some(90));
    }
}
