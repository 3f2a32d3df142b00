//! The sim's model of a cloud's own rolling replacement (Instance Refresh):
//! lock-step batches of `desired × (100 − min_healthy_percent) %` (at least
//! one), the next batch only once every instance is healthy again. Driven
//! lazily by status polls, like the rest of the sim.

use crate::provider::SimProvider;
use async_trait::async_trait;
use repave_core::config::Rollout;
use repave_core::provider::{
    Groups, LaunchSpecRef, Lifecycle, NativeRoll, NativeRollStatus, Result, TargetState, Traffic,
};
use repave_core::ProviderError;

#[async_trait]
impl NativeRoll for SimProvider {
    /// The refresh launches from `target` (AWS: its desired configuration),
    /// so the group is pointed at it when the refresh starts.
    async fn start_native_roll(&self, group: &str, target: &LaunchSpecRef, rollout: &Rollout) -> Result<String> {
        self.describe_group(group).await?;
        self.set_group_launch_spec(group, target).await?;
        let id = format!("sim-refresh-{group}");
        self.native_rolls()
            .insert(group.to_string(), (id.clone(), rollout.min_healthy_percent));
        Ok(id)
    }

    async fn native_roll_status(&self, group: &str, id: &str) -> Result<NativeRollStatus> {
        let (rid, min_healthy) = self
            .native_rolls()
            .get(group)
            .cloned()
            .filter(|(rid, _)| rid == id)
            .ok_or_else(|| ProviderError::not_found("native_roll_status", format!("refresh {id} of {group}")))?;
        let g = self.describe_group(group).await?;
        let spec = self.describe_launch_spec(&g.launch_spec).await?;
        let health = self.target_health(group).await?;
        let healthy = |id: &repave_core::InstanceId| {
            health
                .iter()
                .any(|t| &t.instance == id && t.state == TargetState::Healthy)
        };
        let live: Vec<_> = g
            .members
            .iter()
            .filter(|m| m.lifecycle == Lifecycle::InService)
            .collect();
        let old: Vec<_> = live.iter().filter(|m| m.image != spec.image).collect();
        let settled = live.len() as u32 == g.desired && live.iter().all(|m| healthy(&m.id));
        let desired = g.desired.max(1);
        let percent = 100 * (desired.saturating_sub(old.len() as u32)) / desired;
        let status = |state: &str, finished: bool| NativeRollStatus {
            id: rid.clone(),
            state: state.into(),
            finished,
            succeeded: finished,
            percent_complete: percent,
            instances_to_update: old.len() as u32,
            reason: None,
        };
        if old.is_empty() && settled {
            self.native_rolls().remove(group);
            return Ok(status("Successful", true));
        }
        if settled {
            let batch = ((desired * (100 - min_healthy.min(100))) / 100).max(1) as usize;
            for m in old.iter().take(batch) {
                self.terminate_group_instance(group, &m.id, false).await?;
            }
        }
        Ok(status("InProgress", false))
    }

    async fn cancel_native_roll(&self, group: &str) -> Result<()> {
        self.native_rolls().remove(group);
        Ok(())
    }
}
