//! Traffic: the target groups attached to the Auto Scaling group.
//!
//! - `target_health`: one DescribeTargetHealth per target group; an instance
//!   in several groups (or on several ports) reports its worst state
//!   (draining > unhealthy > initial > unused > healthy). ELB gives no
//!   transition times, so `since` is when this process first saw the state.
//!   A group with no target groups reports its members' Auto Scaling view
//!   (InService + Healthy → healthy), so a roll works without a balancer;
//!   "deregistering" one of its members makes it read `unused` at once
//!   (nothing to drain).
//! - `deregister_target` / `register_target`: in every target group of the
//!   group; the deregistration delay shows as `draining`, then the target
//!   disappears (reported as absent, which the engine reads as unused).

use crate::convert::now;
use crate::error::map_sdk;
use crate::AwsProvider;
use async_trait::async_trait;
use aws_sdk_elasticloadbalancingv2::types::{TargetDescription, TargetHealthStateEnum};
use repave_core::provider::{Result, TargetHealth, TargetState, Traffic};
use repave_core::InstanceId;
use std::collections::BTreeMap;

fn state(s: Option<&TargetHealthStateEnum>) -> TargetState {
    match s {
        Some(TargetHealthStateEnum::Healthy) => TargetState::Healthy,
        Some(TargetHealthStateEnum::Initial) => TargetState::Initial,
        Some(TargetHealthStateEnum::Draining) => TargetState::Draining,
        Some(TargetHealthStateEnum::Unused) => TargetState::Unused,
        // unhealthy, unavailable, unhealthy.draining
        Some(TargetHealthStateEnum::UnhealthyDraining) => TargetState::Draining,
        _ => TargetState::Unhealthy,
    }
}

/// Higher is worse.
pub(crate) fn severity(s: TargetState) -> u8 {
    match s {
        TargetState::Healthy => 0,
        TargetState::Unused => 1,
        TargetState::Initial => 2,
        TargetState::Unhealthy => 3,
        TargetState::Draining => 4,
    }
}

impl AwsProvider {
    async fn group_target_groups(&self, group: &str) -> Result<Vec<String>> {
        if let Some(arns) = self.target_groups.lock().expect("target group lock").get(group) {
            return Ok(arns.clone());
        }
        Ok(self.describe_asg(group).await?.target_group_arns().to_vec())
    }

    /// Attach a `since` to each state, remembering first sightings.
    fn stamp(&self, worst: BTreeMap<String, TargetState>) -> Vec<TargetHealth> {
        let t = now();
        let mut seen = self.target_since.lock().expect("target since lock");
        worst
            .into_iter()
            .map(|(id, s)| {
                let id = InstanceId::new(id);
                let entry = seen.entry(id.clone()).or_insert((s, t));
                if entry.0 != s {
                    *entry = (s, t);
                }
                TargetHealth {
                    instance: id,
                    state: s,
                    since: entry.1,
                    in_flight: None,
                }
            })
            .collect()
    }
}

#[async_trait]
impl Traffic for AwsProvider {
    async fn target_health(&self, group: &str) -> Result<Vec<TargetHealth>> {
        let arns = self.group_target_groups(group).await?;
        let mut worst: BTreeMap<String, TargetState> = BTreeMap::new();
        if arns.is_empty() {
            let g = self.describe_asg(group).await?;
            let drained = self.drained.lock().expect("drained lock").clone();
            for i in g.instances() {
                let Some(id) = i.instance_id() else { continue };
                if drained.contains(&(group.to_string(), InstanceId::new(id))) {
                    worst.insert(id.to_string(), TargetState::Unused);
                    continue;
                }
                let healthy = i.health_status().is_some_and(|h| h.eq_ignore_ascii_case("healthy"));
                let s = match i.lifecycle_state().map(|s| s.as_str()) {
                    Some("InService") if healthy => TargetState::Healthy,
                    Some("InService") => TargetState::Unhealthy,
                    Some(s) if s.starts_with("Pending") => TargetState::Initial,
                    _ => TargetState::Unused,
                };
                worst.insert(id.to_string(), s);
            }
            return Ok(self.stamp(worst));
        }
        for arn in &arns {
            let out = self
                .elb
                .describe_target_health()
                .target_group_arn(arn)
                .send()
                .await
                .map_err(|e| map_sdk("DescribeTargetHealth", e))?;
            for d in out.target_health_descriptions() {
                let Some(id) = d.target().and_then(|t| t.id()) else {
                    continue;
                };
                let s = state(d.target_health().and_then(|h| h.state()));
                worst
                    .entry(id.to_string())
                    .and_modify(|w| {
                        if severity(s) > severity(*w) {
                            *w = s
                        }
                    })
                    .or_insert(s);
            }
        }
        Ok(self.stamp(worst))
    }

    async fn deregister_target(&self, group: &str, instance: &InstanceId) -> Result<()> {
        let arns = self.group_target_groups(group).await?;
        if arns.is_empty() {
            self.drained
                .lock()
                .expect("drained lock")
                .insert((group.to_string(), instance.clone()));
        }
        for arn in arns {
            let target = TargetDescription::builder().id(instance.as_str()).build();
            match self
                .elb
                .deregister_targets()
                .target_group_arn(&arn)
                .targets(target)
                .send()
                .await
            {
                Ok(_) => {}
                Err(e) => {
                    let e = map_sdk("DeregisterTargets", e);
                    // Already gone from this target group: nothing to drain.
                    if !e.message.starts_with("InvalidTarget") {
                        return Err(e);
                    }
                }
            }
        }
        Ok(())
    }

    async fn register_target(&self, group: &str, instance: &InstanceId) -> Result<()> {
        self.drained
            .lock()
            .expect("drained lock")
            .remove(&(group.to_string(), instance.clone()));
        for arn in self.group_target_groups(group).await? {
            let target = TargetDescription::builder().id(instance.as_str()).build();
            self.elb
                .register_targets()
                .target_group_arn(&arn)
                .targets(target)
                .send()
                .await
                .map_err(|e| map_sdk("RegisterTargets", e))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worst_state_wins() {
        let order = [
            TargetState::Healthy,
            TargetState::Unused,
            TargetState::Initial,
            TargetState::Unhealthy,
            TargetState::Draining,
        ];
        for w in order.windows(2) {
            assert!(severity(w[0]) < severity(w[1]), "{w:?}");
        }
    }
}
