//! API request rates in virtual time: which AWS bucket each simulated call
//! draws from, the shared request budget (the same token bucket the AWS
//! provider keeps, on the paused clock), and calls per second, peak and
//! mean.

use repave_core::budget::{ApiBucket, Limit, Service, TokenBucket};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

/// The AWS call the AWS provider makes for each provider operation (its
/// main one: `describe_group` also describes members it has not seen yet).
pub(crate) fn bucket_of(op: &str) -> ApiBucket {
    let (service, action) = match op {
        "describe_image" | "list_images" => (Service::Ec2, "DescribeImages"),
        "referenced_images" | "describe_launch_spec" => (Service::Ec2, "DescribeLaunchTemplateVersions"),
        "describe_instances" | "list_instances" => (Service::Ec2, "DescribeInstances"),
        "create_image" => (Service::Ec2, "CreateImage"),
        "deregister_image" => (Service::Ec2, "DeregisterImage"),
        "tag_image" => (Service::Ec2, "CreateTags"),
        "launch" => (Service::Ec2, "RunInstances"),
        "stop_instance" => (Service::Ec2, "StopInstances"),
        "reboot_instance" => (Service::Ec2, "RebootInstances"),
        "terminate_instance" => (Service::Ec2, "TerminateInstances"),
        "create_launch_spec_version" => (Service::Ec2, "CreateLaunchTemplateVersion"),
        "describe_group" => (Service::AutoScaling, "DescribeAutoScalingGroups"),
        "set_group_launch_spec" | "set_desired_capacity" => (Service::AutoScaling, "UpdateAutoScalingGroup"),
        "terminate_group_instance" => (Service::AutoScaling, "TerminateInstanceInAutoScalingGroup"),
        "set_instance_protection" => (Service::AutoScaling, "SetInstanceProtection"),
        "target_health" => (Service::LoadBalancing, "DescribeTargetHealth"),
        "deregister_target" => (Service::LoadBalancing, "DeregisterTargets"),
        "register_target" => (Service::LoadBalancing, "RegisterTargets"),
        _ => (Service::SystemsManager, "SendCommand"),
    };
    ApiBucket::for_action(service, action)
}

/// One account's request budget in virtual time.
#[derive(Debug)]
pub(crate) struct SimBudget {
    percent: u32,
    buckets: Mutex<HashMap<ApiBucket, TokenBucket>>,
}

impl SimBudget {
    pub(crate) fn new(percent: u32) -> Self {
        Self {
            percent,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn limit(&self, bucket: ApiBucket) -> Limit {
        bucket.documented_limit().share(self.percent)
    }

    pub(crate) async fn acquire(&self, bucket: ApiBucket, start: tokio::time::Instant) {
        loop {
            let now = start.elapsed().as_secs_f64();
            let taken = {
                let mut b = self.buckets.lock().expect("budget lock");
                b.entry(bucket)
                    .or_insert_with(|| TokenBucket::new(self.limit(bucket), now))
                    .take(now)
            };
            match taken {
                Ok(()) => return,
                Err(wait) => tokio::time::sleep(Duration::from_secs_f64(wait.max(0.001))).await,
            }
        }
    }
}

/// Calls per second of one bucket (or all of them).
#[derive(Debug, Clone, Serialize, Default, PartialEq)]
pub struct Rate {
    pub calls: u64,
    /// Most calls in any one second.
    pub peak_per_second: u64,
    /// Calls over the seconds from the first call to the last.
    pub mean_per_second: f64,
    /// The sustained rate the budget keeps to (refill per second) and its
    /// burst, when calls waited for a budget.
    pub budget_per_second: Option<f64>,
    pub budget_burst: Option<f64>,
    /// AWS's documented (or assumed) bucket for comparison.
    pub aws_per_second: Option<f64>,
    pub aws_burst: Option<f64>,
}

/// API calls per second of the account: every bucket and all together.
#[derive(Debug, Clone, Serialize, Default, PartialEq)]
pub struct ApiRates {
    pub all: Rate,
    pub buckets: BTreeMap<String, Rate>,
}

fn rate(times: &[f64]) -> Rate {
    if times.is_empty() {
        return Rate::default();
    }
    let mut per_second: HashMap<u64, u64> = HashMap::new();
    for t in times {
        *per_second.entry(t.floor() as u64).or_default() += 1;
    }
    let first = times.iter().copied().fold(f64::INFINITY, f64::min);
    let last = times.iter().copied().fold(0.0, f64::max);
    Rate {
        calls: times.len() as u64,
        peak_per_second: per_second.values().copied().max().unwrap_or(0),
        mean_per_second: times.len() as f64 / (last - first).max(1.0),
        ..Default::default()
    }
}

/// Rates from a provider's call log.
pub(crate) fn api_rates(log: &[(f64, ApiBucket)], budget: impl Fn(ApiBucket) -> Option<Limit>) -> ApiRates {
    let all: Vec<f64> = log.iter().map(|(t, _)| *t).collect();
    let mut buckets = BTreeMap::new();
    for b in ApiBucket::ALL {
        let times: Vec<f64> = log.iter().filter(|(_, x)| *x == b).map(|(t, _)| *t).collect();
        if times.is_empty() {
            continue;
        }
        let mut r = rate(&times);
        let aws = b.documented_limit();
        r.aws_per_second = Some(aws.refill_per_second);
        r.aws_burst = Some(aws.capacity);
        if let Some(l) = budget(b) {
            r.budget_per_second = Some(l.refill_per_second);
            r.budget_burst = Some(l.capacity);
        }
        buckets.insert(b.name().to_string(), r);
    }
    ApiRates {
        all: rate(&all),
        buckets,
    }
}
