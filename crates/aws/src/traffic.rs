//! Traffic: the balancers attached to the Auto Scaling group — ELBv2
//! target groups (`TargetGroupARNs`) and Classic Load Balancers
//! (`LoadBalancerNames`).
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
//! - Classic Load Balancers: DescribeInstanceHealth per balancer.
//!   `InService` is healthy unless its description says "Instance
//!   deregistration currently in progress" (connection draining: draining);
//!   `OutOfService` "Instance registration is still in progress" is initial,
//!   "not currently registered" unused, anything else unhealthy. A
//!   deregistered instance drains for the balancer's connection-draining
//!   timeout, exactly as a target does for its deregistration delay.

use crate::convert::now;
use crate::error::map_sdk;
use crate::AwsProvider;
use async_trait::async_trait;
use aws_sdk_autoscaling::types::AutoScalingGroup;
use aws_sdk_elasticloadbalancing::types::Instance as ClbInstance;
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

/// The balancers an Auto Scaling group is attached to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Balancers {
    pub target_groups: Vec<String>,
    pub classic: Vec<String>,
}

impl Balancers {
    pub fn of(g: &AutoScalingGroup) -> Balancers {
        Balancers {
            target_groups: g.target_group_arns().to_vec(),
            classic: g.load_balancer_names().to_vec(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.target_groups.is_empty() && self.classic.is_empty()
    }
}

/// A Classic Load Balancer's word for an instance (DescribeInstanceHealth
/// `State` and `Description`).
/// https://docs.aws.amazon.com/elasticloadbalancing/latest/classic/config-conn-drain.html
pub(crate) fn classic_state(state: &str, description: &str) -> TargetState {
    let d = description.to_ascii_lowercase();
    match state {
        "InService" if d.contains("deregistration currently in progress") => TargetState::Draining,
        "InService" => TargetState::Healthy,
        "OutOfService" if d.contains("not currently registered") => TargetState::Unused,
        "OutOfService" if d.contains("registration is still in progress") => TargetState::Initial,
        "Unknown" => TargetState::Initial,
        _ => TargetState::Unhealthy,
    }
}

fn worse(worst: &mut BTreeMap<String, TargetState>, id: &str, s: TargetState) {
    worst
        .entry(id.to_string())
        .and_modify(|w| {
            if severity(s) > severity(*w) {
                *w = s
            }
        })
        .or_insert(s);
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
    pub(crate) async fn group_balancers(&self, group: &str) -> Result<Balancers> {
        if let Some(b) = self.balancers.lock().expect("balancer lock").get(group) {
            return Ok(b.clone());
        }
        Ok(Balancers::of(&self.describe_asg(group).await?))
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
        let balancers = self.group_balancers(group).await?;
        let mut worst: BTreeMap<String, TargetState> = BTreeMap::new();
        if balancers.is_empty() {
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
        for name in &balancers.classic {
            let out = self
                .clb
                .describe_instance_health()
                .load_balancer_name(name)
                .send()
                .await
                .map_err(|e| map_sdk("DescribeInstanceHealth", e))?;
            for i in out.instance_states() {
                let Some(id) = i.instance_id() else { continue };
                let s = classic_state(i.state().unwrap_or_default(), i.description().unwrap_or_default());
                worse(&mut worst, id, s);
            }
        }
        for arn in &balancers.target_groups {
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
                worse(&mut worst, id, s);
            }
        }
        Ok(self.stamp(worst))
    }

    async fn deregister_target(&self, group: &str, instance: &InstanceId) -> Result<()> {
        let balancers = self.group_balancers(group).await?;
        if balancers.is_empty() {
            self.drained
                .lock()
                .expect("drained lock")
                .insert((group.to_string(), instance.clone()));
        }
        for name in &balancers.classic {
            let call = self
                .clb
                .deregister_instances_from_load_balancer()
                .load_balancer_name(name)
                .instances(ClbInstance::builder().instance_id(instance.as_str()).build());
            if let Err(e) = call.send().await {
                let e = map_sdk("DeregisterInstancesFromLoadBalancer", e);
                // Not registered (any more): nothing to drain.
                if !e.message.starts_with("InvalidInstance") && !e.message.starts_with("InvalidEndPoint") {
                    return Err(e);
                }
            }
        }
        for arn in balancers.target_groups {
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
        let balancers = self.group_balancers(group).await?;
        for name in &balancers.classic {
            self.clb
                .register_instances_with_load_balancer()
                .load_balancer_name(name)
                .instances(ClbInstance::builder().instance_id(instance.as_str()).build())
                .send()
                .await
                .map_err(|e| map_sdk("RegisterInstancesWithLoadBalancer", e))?;
        }
        for arn in balancers.target_groups {
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
    fn classic_states_read_as_target_states() {
        // The words AWS documents for connection draining and registration.
        let cases = [
            ("InService", "N/A", TargetState::Healthy),
            (
                "InService",
                "Instance deregistration currently in progress.",
                TargetState::Draining,
            ),
            (
                "OutOfService",
                "Instance is not currently registered with the LoadBalancer.",
                TargetState::Unused,
            ),
            (
                "OutOfService",
                "Instance registration is still in progress.",
                TargetState::Initial,
            ),
            (
                "OutOfService",
                "Instance has failed at least the UnhealthyThreshold number of health checks consecutively.",
                TargetState::Unhealthy,
            ),
            (
                "Unknown",
                "A transient error occurred. Please try again later.",
                TargetState::Initial,
            ),
        ];
        for (state, description, want) in cases {
            assert_eq!(classic_state(state, description), want, "{state}: {description}");
        }
    }

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
