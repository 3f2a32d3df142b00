//! repave-aws: the AWS provider. EC2 (images, instances, launch templates),
//! Auto Scaling (groups, launch configurations), SSM (Run Command, golden
//! parameter), ELBv2 (target health, draining) and Classic Load Balancers
//! (instance health, connection draining) through `aws-sdk-rust`.
//!
//! Construction follows the standard AWS chain: credentials, region and
//! profile from the environment and `~/.aws`, overridden by the pipeline's
//! `[provider.aws]` table; `AWS_ENDPOINT_URL` (moto, LocalStack) is honoured.
//!
//! Every SDK error becomes a [`repave_core::ProviderError`] classified as
//! transient / throttled / not found / permanent, its message carrying the
//! AWS error code (see [`error`]). Every API call is counted by operation
//! ([`AwsProvider::api_calls`]).

mod baseline;
pub mod budget;
mod commands;
pub mod connect;
mod convert;
mod counter;
pub mod error;
mod gc;
mod groups;
mod health;
pub mod iam;
mod iam_scope;
mod images;
mod instances;
mod launch_config;
mod launch_template;
mod parameters;
pub mod patching;
mod permissions;
pub mod plan;
mod probe;
pub mod refresh;
mod traffic;
pub mod trust;

pub use baseline::PatchBaselineRecord;
pub use budget::RequestBudget;
pub use connect::{AssumeRole, AwsTarget, ProviderPool};
pub use error::AwsError;
pub use groups::LAUNCH_CONFIGURATION_PREFIX;
pub use iam::{iam_policy, partition, widened, PolicyScope};
pub use iam_scope::POLICY_READS_APP;
pub use plan::Preflight;
pub use refresh::{refresh_preferences, RefreshState, RefreshStatus};

use aws_config::retry::RetryConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use counter::CallCounter;
use repave_core::provider::{Provider, TargetState};
use repave_core::{InstanceId, Timestamp};
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

/// Behaviour switches that are not part of the pipeline config.
#[derive(Debug, Clone, Default)]
pub struct AwsOptions {
    /// The endpoint has no Patch Manager (plain moto, LocalStack): patch
    /// commands are sent without a patch baseline, and a successful one
    /// with empty output means "nothing to install" / "nothing installed"
    /// (so a bake there stops without publishing). Never set against real
    /// AWS or the AWS-behaviour harness.
    pub empty_patch_output_is_clean: bool,
}

/// The AWS provider: one set of SDK clients sharing one configuration and
/// one API call counter.
pub struct AwsProvider {
    pub(crate) ec2: aws_sdk_ec2::Client,
    pub(crate) asg: aws_sdk_autoscaling::Client,
    pub(crate) ssm: aws_sdk_ssm::Client,
    pub(crate) elb: aws_sdk_elasticloadbalancingv2::Client,
    pub(crate) clb: aws_sdk_elasticloadbalancing::Client,
    pub(crate) options: AwsOptions,
    /// The configuration the clients were built from (`policy_scope`
    /// builds its own clients from it).
    pub(crate) sdk: SdkConfig,
    pub(crate) counter: CallCounter,
    /// The balancers attached to each Auto Scaling group (target group
    /// ARNs, Classic Load Balancer names), refreshed by every
    /// `describe_group` so a roll tick costs no extra describe.
    pub(crate) balancers: Mutex<HashMap<String, traffic::Balancers>>,
    /// First time this process saw each instance in its current balancer
    /// state (ELB reports no transition times).
    pub(crate) target_since: Mutex<HashMap<InstanceId, (TargetState, Timestamp)>>,
    /// Image id and launch time of every group member seen (immutable per
    /// instance), so roll ticks describe only new members.
    pub(crate) member_cache: Mutex<HashMap<InstanceId, (repave_core::ImageId, Timestamp)>>,
    /// Members "drained" from groups without target groups: there is no
    /// balancer to drain from, so they read as unused at once.
    pub(crate) drained: Mutex<std::collections::HashSet<(String, InstanceId)>>,
    /// Platform of instances commands were sent to ("windows" / "linux").
    pub(crate) platforms: Mutex<HashMap<InstanceId, patching::Platform>>,
    /// Run, pipeline and OS family of each builder patched (its tags and
    /// image do not change).
    pub(crate) patch_contexts: Mutex<HashMap<InstanceId, baseline::PatchContext>>,
    /// The application port of each group, for the image test's probe.
    pub(crate) probe_ports: Mutex<HashMap<String, u16>>,
    budget: Option<std::sync::Arc<RequestBudget>>,
    /// Where its groups live (`Provider::place`), set by the pool.
    place: Option<String>,
}

impl std::fmt::Debug for AwsProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsProvider")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// The user agent app name of the provider's calls.
pub const PROVIDER_APP: &str = "repave";

/// SDK retry policy: adaptive mode (standard's exponential backoff with
/// jitter, plus a client-side rate limiter that slows down after throttling
/// errors), five attempts. The engine retries on top of this for errors
/// that outlast it; the request budget keeps throttling rare to begin with.
pub fn retry_config() -> RetryConfig {
    RetryConfig::adaptive()
        .with_max_attempts(5)
        .with_initial_backoff(Duration::from_millis(200))
}

impl AwsProvider {
    /// Build from the pipeline's `[provider.aws]` table with the standard
    /// credential chain. `profile`, `region` and `endpoint_url` override the
    /// environment; `AWS_ENDPOINT_URL` is read by aws-config itself.
    pub async fn from_config(
        cfg: &repave_core::config::AwsProvider,
        options: AwsOptions,
    ) -> Result<AwsProvider, AwsError> {
        let mut loader = aws_config::defaults(BehaviorVersion::latest()).retry_config(retry_config());
        if let Some(p) = &cfg.profile {
            loader = loader.profile_name(p);
        }
        if let Some(r) = &cfg.region {
            loader = loader.region(Region::new(r.clone()));
        }
        if let Some(u) = &cfg.endpoint_url {
            loader = loader.endpoint_url(u);
        }
        let sdk = loader.load().await;
        if sdk.region().is_none() {
            return Err(AwsError::NoRegion);
        }
        Ok(Self::from_sdk_config(&sdk, options))
    }

    /// Build from an already loaded SDK configuration (tests, embedding).
    pub fn from_sdk_config(sdk: &SdkConfig, options: AwsOptions) -> AwsProvider {
        Self::from_sdk_config_with(sdk, options, None)
    }

    /// [`Self::from_sdk_config`] whose requests wait for `budget` (shared
    /// with every other provider of the same account and region).
    pub fn from_sdk_config_with(
        sdk: &SdkConfig,
        options: AwsOptions,
        budget: Option<std::sync::Arc<RequestBudget>>,
    ) -> AwsProvider {
        use repave_core::budget::Service;
        let counter = CallCounter::default();
        // `app/repave` in the user agent: AWS's logs (and the harness's
        // operation record, issue 12) tell the provider's calls apart.
        let sdk = &sdk
            .to_builder()
            .app_name(aws_config::AppName::new(PROVIDER_APP).expect("valid app name"))
            .build();
        let http = |service: Service| {
            budget.as_ref().map(|b| {
                let inner = sdk.http_client().unwrap_or_else(budget::default_http_client);
                budget::BudgetedClient::new(inner, b.clone(), service)
            })
        };
        let mut ec2 = aws_sdk_ec2::config::Builder::from(sdk).interceptor(counter.clone());
        if let Some(c) = http(Service::Ec2) {
            ec2 = ec2.http_client(c);
        }
        let mut asg = aws_sdk_autoscaling::config::Builder::from(sdk).interceptor(counter.clone());
        if let Some(c) = http(Service::AutoScaling) {
            asg = asg.http_client(c);
        }
        let mut ssm = aws_sdk_ssm::config::Builder::from(sdk).interceptor(counter.clone());
        if let Some(c) = http(Service::SystemsManager) {
            ssm = ssm.http_client(c);
        }
        let mut elb = aws_sdk_elasticloadbalancingv2::config::Builder::from(sdk).interceptor(counter.clone());
        if let Some(c) = http(Service::LoadBalancing) {
            elb = elb.http_client(c);
        }
        let mut clb = aws_sdk_elasticloadbalancing::config::Builder::from(sdk).interceptor(counter.clone());
        if let Some(c) = http(Service::LoadBalancing) {
            clb = clb.http_client(c);
        }
        let (ec2, asg, ssm, elb, clb) = (ec2.build(), asg.build(), ssm.build(), elb.build(), clb.build());
        AwsProvider {
            ec2: aws_sdk_ec2::Client::from_conf(ec2),
            asg: aws_sdk_autoscaling::Client::from_conf(asg),
            ssm: aws_sdk_ssm::Client::from_conf(ssm),
            elb: aws_sdk_elasticloadbalancingv2::Client::from_conf(elb),
            clb: aws_sdk_elasticloadbalancing::Client::from_conf(clb),
            options,
            sdk: sdk.clone(),
            counter,
            balancers: Mutex::new(HashMap::new()),
            target_since: Mutex::new(HashMap::new()),
            platforms: Mutex::new(HashMap::new()),
            drained: Mutex::new(std::collections::HashSet::new()),
            member_cache: Mutex::new(HashMap::new()),
            patch_contexts: Mutex::new(HashMap::new()),
            probe_ports: Mutex::new(HashMap::new()),
            budget,
            place: None,
        }
    }

    /// This provider in `place` (see `Provider::place`).
    pub fn in_place(mut self, place: String) -> AwsProvider {
        self.place = Some(place);
        self
    }

    /// The request budget this provider's calls wait for, if any.
    pub fn budget(&self) -> Option<&std::sync::Arc<RequestBudget>> {
        self.budget.as_ref()
    }

    /// AWS API calls made so far (every HTTP attempt, retries included), by
    /// operation name (`DescribeInstances`, `SendCommand`, ...).
    pub fn api_calls(&self) -> BTreeMap<String, u64> {
        self.counter.snapshot()
    }

    /// Sum of [`Self::api_calls`].
    pub fn api_call_total(&self) -> u64 {
        self.counter.snapshot().values().sum()
    }
}

impl Provider for AwsProvider {
    fn place(&self) -> Option<String> {
        self.place.clone()
    }

    fn name(&self) -> &str {
        "aws"
    }
    fn api_calls(&self) -> BTreeMap<String, u64> {
        AwsProvider::api_calls(self)
    }
    fn throttled_calls(&self) -> BTreeMap<String, u64> {
        self.counter.throttled()
    }
    fn permissions(&self) -> Option<&dyn repave_core::provider::Permissions> {
        Some(self)
    }

    fn native_roll(&self) -> Option<&dyn repave_core::provider::NativeRoll> {
        Some(self)
    }
    fn has_scaling_processes(&self) -> bool {
        true
    }
    fn builder_needs(&self) -> repave_core::builder::BuilderNeeds {
        repave_core::builder::BuilderNeeds {
            instance_profile: true,
            instance_type: true,
        }
    }
}

/// `strategy = "native"`: EC2 Auto Scaling Instance Refresh.
#[async_trait::async_trait]
impl repave_core::provider::NativeRoll for AwsProvider {
    async fn start_native_roll(
        &self,
        group: &str,
        target: &repave_core::provider::LaunchSpecRef,
        rollout: &repave_core::config::Rollout,
    ) -> repave_core::provider::Result<String> {
        self.start_instance_refresh(group, target, rollout).await
    }
    async fn native_roll_status(
        &self,
        group: &str,
        id: &str,
    ) -> repave_core::provider::Result<repave_core::provider::NativeRollStatus> {
        let r = self.instance_refresh(group, id).await?;
        Ok(repave_core::provider::NativeRollStatus {
            id: r.id,
            state: format!("{:?}", r.state),
            finished: r.state.is_terminal(),
            succeeded: r.state == RefreshState::Successful,
            percent_complete: r.percentage_complete,
            instances_to_update: r.instances_to_update,
            reason: r.reason,
        })
    }
    async fn cancel_native_roll(&self, group: &str) -> repave_core::provider::Result<()> {
        self.cancel_instance_refresh(group).await
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn retries_are_adaptive() {
        let r = super::retry_config();
        assert_eq!(r.mode(), aws_config::retry::RetryMode::Adaptive);
        assert_eq!(r.max_attempts(), 5);
    }
}
