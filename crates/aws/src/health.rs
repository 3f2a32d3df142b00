//! The group's readiness settings, read from AWS: HealthCheckGracePeriod,
//! health check type and DefaultInstanceWarmup (DescribeAutoScalingGroups),
//! each target group's healthy threshold × interval and port
//! (DescribeTargetGroups) and deregistration delay
//! (DescribeTargetGroupAttributes), each Classic Load Balancer's health
//! check (DescribeLoadBalancers) and connection-draining timeout
//! (DescribeLoadBalancerAttributes; 0 when draining is off), and the launch
//! and termination lifecycle hooks' heartbeats (DescribeLifecycleHooks).
//! Read once per run, not per tick.

use crate::error::map_sdk;
use crate::groups::secs;
use crate::AwsProvider;
use repave_core::provider::{BalancerCheck, HealthTiming, LaunchHook, Result};
use std::time::Duration;

const LAUNCHING: &str = "autoscaling:EC2_INSTANCE_LAUNCHING";
const TERMINATING: &str = "autoscaling:EC2_INSTANCE_TERMINATING";

impl AwsProvider {
    pub(crate) async fn read_health_timing(&self, group: &str) -> Result<HealthTiming> {
        let g = self.describe_asg(group).await?;
        let mut checks = Vec::new();
        let arns = g.target_group_arns().to_vec();
        if !arns.is_empty() {
            let out = self
                .elb
                .describe_target_groups()
                .set_target_group_arns(Some(arns))
                .send()
                .await
                .map_err(|e| map_sdk("DescribeTargetGroups", e))?;
            for tg in out.target_groups() {
                let arn = tg.target_group_arn().unwrap_or_default();
                let attrs = self
                    .elb
                    .describe_target_group_attributes()
                    .target_group_arn(arn)
                    .send()
                    .await
                    .map_err(|e| map_sdk("DescribeTargetGroupAttributes", e))?;
                let delay = attrs
                    .attributes()
                    .iter()
                    .find(|a| a.key() == Some("deregistration_delay.timeout_seconds"))
                    .and_then(|a| a.value())
                    .and_then(|v| v.parse::<u64>().ok())
                    .map(Duration::from_secs);
                // "traffic-port" (the default) is the target group's port.
                let port = tg
                    .health_check_port()
                    .and_then(|p| p.parse::<u16>().ok())
                    .or_else(|| tg.port().and_then(|p| u16::try_from(p).ok()));
                checks.push(BalancerCheck {
                    name: tg.target_group_name().unwrap_or(arn).to_string(),
                    // AWS's defaults when a field is absent: 30 s, 5 checks.
                    interval: secs(tg.health_check_interval_seconds()).unwrap_or(Duration::from_secs(30)),
                    healthy_threshold: tg.healthy_threshold_count().unwrap_or(5).max(1) as u32,
                    deregistration_delay: delay,
                    port,
                });
            }
        }
        let classic = g.load_balancer_names().to_vec();
        if !classic.is_empty() {
            let out = self
                .clb
                .describe_load_balancers()
                .set_load_balancer_names(Some(classic))
                .send()
                .await
                .map_err(|e| map_sdk("DescribeLoadBalancers", e))?;
            for lb in out.load_balancer_descriptions() {
                let name = lb.load_balancer_name().unwrap_or_default();
                let attrs = self
                    .clb
                    .describe_load_balancer_attributes()
                    .load_balancer_name(name)
                    .send()
                    .await
                    .map_err(|e| map_sdk("DescribeLoadBalancerAttributes", e))?;
                let draining = attrs
                    .load_balancer_attributes()
                    .and_then(|a| a.connection_draining())
                    .map(|d| {
                        if d.enabled() {
                            d.timeout().unwrap_or(300).max(0) as u64
                        } else {
                            0
                        }
                    })
                    .unwrap_or(0);
                let hc = lb.health_check();
                // "HTTP:80/health", "TCP:8080": the port follows the protocol.
                let port = hc
                    .map(|h| h.target())
                    .and_then(|t| t.split_once(':'))
                    .and_then(|(_, rest)| rest.split('/').next())
                    .and_then(|p| p.parse::<u16>().ok());
                checks.push(BalancerCheck {
                    name: format!("classic:{name}"),
                    // A Classic Load Balancer's defaults: 30 s, 10 checks.
                    interval: hc
                        .and_then(|h| secs(Some(h.interval())))
                        .unwrap_or(Duration::from_secs(30)),
                    healthy_threshold: hc.map(|h| h.healthy_threshold()).unwrap_or(10).max(1) as u32,
                    deregistration_delay: Some(Duration::from_secs(draining)),
                    port,
                });
            }
        }
        let hooks = self
            .asg
            .describe_lifecycle_hooks()
            .auto_scaling_group_name(group)
            .send()
            .await
            .map_err(|e| map_sdk("DescribeLifecycleHooks", e))?;
        let of = |transition: &str| -> Vec<LaunchHook> {
            hooks
                .lifecycle_hooks()
                .iter()
                .filter(|h| h.lifecycle_transition() == Some(transition))
                .map(|h| LaunchHook {
                    name: h.lifecycle_hook_name().unwrap_or_default().to_string(),
                    // AWS's default heartbeat is one hour.
                    heartbeat: secs(h.heartbeat_timeout()).unwrap_or(Duration::from_secs(3600)),
                })
                .collect()
        };
        let launch_hooks = of(LAUNCHING);
        let termination_hooks = of(TERMINATING);
        Ok(HealthTiming {
            grace_period: secs(g.health_check_grace_period()),
            health_check_type: g.health_check_type().map(str::to_string),
            checks,
            launch_hooks,
            termination_hooks,
            default_warmup: secs(g.default_instance_warmup()),
        })
    }
}
