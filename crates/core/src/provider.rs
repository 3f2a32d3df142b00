//! Provider traits: the narrow, domain-level operations the engine needs from
//! a cloud. Implemented by `repave-local` (processes on this machine), the sim
//! provider (virtual time) and `repave-aws`.
//!
//! Every method is idempotent where the cloud allows it; creations carry a
//! client token and tags (`repave:run`, `repave:role`) so a resumed run can
//! find what it already made instead of making it twice.

use crate::error::ProviderError;
use crate::ids::{CommandId, ImageId, InstanceId, Timestamp};
use crate::patch::{PatchSelection, Update};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

pub type Tags = BTreeMap<String, String>;
pub type Result<T> = std::result::Result<T, ProviderError>;

/// Tag keys repave puts on everything it creates.
pub mod tag {
    pub const RUN: &str = "repave:run";
    pub const ROLE: &str = "repave:role";
    pub const STEP: &str = "repave:step";
    pub const PIPELINE: &str = "repave:pipeline";
    pub const PARENT: &str = "repave:parent";
    pub const MANIFEST: &str = "repave:manifest";
    pub const STATUS: &str = "repave:status";
    /// On a test instance: the group whose launch spec it was launched from
    /// (where its health check answers).
    pub const GROUP: &str = "repave:group";
    /// Roles: what an instance or image is for.
    pub const ROLE_BUILDER: &str = "builder";
    pub const ROLE_TEST: &str = "test";
    pub const ROLE_IMAGE: &str = "image";
    /// Value of `repave:status` on an image that failed test or roll.
    pub const STATUS_BAD: &str = "bad";
    /// Value of `repave:status` on an image its run never published
    /// (cancelled, or stopped by something that was not the image's fault):
    /// not bad, but nothing uses it, so retention and `gc` remove it.
    pub const STATUS_UNPUBLISHED: &str = "unpublished";
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImageState {
    Pending,
    Available,
    Failed,
    Deregistered,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Image {
    pub id: ImageId,
    pub name: String,
    pub state: ImageState,
    pub created_at: Timestamp,
    pub tags: Tags,
    /// What the cloud says the image's OS is (AWS: `PlatformDetails`, such
    /// as "Linux/UNIX" or "Windows"; local: the update feed's OS family);
    /// with `name` it tells the OS family ([`crate::patch::OsFamily::detect`]).
    #[serde(default)]
    pub platform: Option<String>,
}

/// Create an image from a (stopped) instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateImageRequest {
    pub instance: InstanceId,
    pub name: String,
    pub tags: Tags,
    /// Client token: the same token returns the same image.
    pub token: String,
}

#[async_trait]
pub trait Images: Send + Sync {
    async fn describe_image(&self, id: &ImageId) -> Result<Image>;
    async fn create_image(&self, req: CreateImageRequest) -> Result<ImageId>;
    /// Deregister the image and delete its snapshots.
    async fn deregister_image(&self, id: &ImageId) -> Result<()>;
    /// Images carrying every tag in `tags` (an empty map lists all).
    async fn list_images(&self, tags: &Tags) -> Result<Vec<Image>>;
    async fn tag_image(&self, id: &ImageId, tags: &Tags) -> Result<()>;
    /// Images the cloud's own configuration still points at beyond any one
    /// group: every launch spec version (AWS: launch template version and
    /// launch configuration in the account and region) and every live
    /// instance. Retention and `gc` never delete these. Fails when it
    /// cannot read them all: deleting on a partial picture is how an image
    /// still in use goes.
    async fn referenced_images(&self) -> Result<std::collections::BTreeSet<ImageId>>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InstanceState {
    Pending,
    Running,
    Stopping,
    Stopped,
    ShuttingDown,
    Terminated,
}

impl InstanceState {
    pub fn is_gone(self) -> bool {
        matches!(self, InstanceState::ShuttingDown | InstanceState::Terminated)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    pub id: InstanceId,
    pub image: ImageId,
    pub state: InstanceState,
    pub launched_at: Timestamp,
    pub tags: Tags,
    /// Where the instance answers (local: `127.0.0.1:PORT`; AWS: private IP).
    pub address: Option<String>,
}

/// What to launch. Fields a provider does not use are ignored by it (the
/// local provider has no subnets; AWS has no `command`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct InstanceSpec {
    pub instance_type: Option<String>,
    pub subnet: Option<String>,
    pub security_groups: Vec<String>,
    pub instance_profile: Option<String>,
    /// Local provider: the process to run, with `{port}`, `{root}` and
    /// `{repave}` placeholders. Empty: no process (an idle builder).
    pub command: Vec<String>,
    /// Launch from this launch spec version, with the request's image in
    /// place of its own (AWS: RunInstances with `LaunchTemplate` and an
    /// `ImageId` override), so the instance boots as the group's would:
    /// same user data, profile, security groups, tags.
    #[serde(default)]
    pub launch_template: Option<LaunchSpecRef>,
    /// User data (base64) where the spec carries it outside a launch
    /// template (AWS launch configurations).
    #[serde(default)]
    pub user_data: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaunchRequest {
    pub image: ImageId,
    pub spec: InstanceSpec,
    pub tags: Tags,
    /// Client token; providers that can't honour it are protected by the
    /// engine looking up tags first.
    pub token: String,
}

/// Result of a health probe of one instance outside any load balancer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthProbe {
    pub healthy: bool,
    pub detail: String,
}

#[async_trait]
pub trait Instances: Send + Sync {
    async fn launch(&self, req: LaunchRequest) -> Result<Instance>;
    /// Instances by id; unknown ids are omitted (not an error).
    async fn describe_instances(&self, ids: &[InstanceId]) -> Result<Vec<Instance>>;
    /// Instances carrying every tag in `tags`, terminated ones included.
    async fn list_instances(&self, tags: &Tags) -> Result<Vec<Instance>>;
    async fn stop_instance(&self, id: &InstanceId) -> Result<()>;
    async fn reboot_instance(&self, id: &InstanceId) -> Result<()>;
    async fn terminate_instance(&self, id: &InstanceId) -> Result<()>;
    /// Probe the instance the way a load balancer would (local: HTTP GET of
    /// the health path; AWS: instance status checks).
    async fn probe_health(&self, id: &InstanceId, path: &str) -> Result<HealthProbe>;
}

/// What a command does on the instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum CommandDocument {
    /// A shell script (`sh -c` locally, AWS-RunShellScript on AWS). Values go
    /// in `env`, never spliced into the script.
    Shell {
        script: String,
        env: BTreeMap<String, String>,
    },
    /// List the updates applicable to the instance (AWS: Windows Update scan
    /// / RunPatchBaseline Scan). Output: JSON array of [`Update`].
    ScanUpdates { selection: PatchSelection },
    /// Install exactly these update ids (frozen at bake start). Output: JSON
    /// [`InstallReport`].
    InstallUpdates {
        selection: PatchSelection,
        ids: Vec<String>,
        allow_reboot: bool,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandRequest {
    pub instance: InstanceId,
    pub document: CommandDocument,
    pub timeout: Duration,
    pub token: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandStatus {
    Pending,
    InProgress,
    Success,
    Failed,
    TimedOut,
    Cancelled,
}

impl CommandStatus {
    pub fn is_terminal(self) -> bool {
        !matches!(self, CommandStatus::Pending | CommandStatus::InProgress)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandResult {
    pub id: CommandId,
    pub status: CommandStatus,
    pub exit_code: Option<i32>,
    /// Captured output, bounded by the provider (tail kept, marked truncated).
    pub stdout: String,
    pub stderr: String,
}

/// What `InstallUpdates` reports: only what this install did, read from
/// the provider's structured results (never from truncated text).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct InstallReport {
    pub installed: Vec<Update>,
    pub failed: Vec<String>,
    /// A reboot is needed before the installed updates take effect (or
    /// before the rest can install).
    pub reboot_required: bool,
    /// The install already rebooted the instance itself (local with
    /// `allow_reboot`); otherwise the engine reboots it.
    #[serde(default)]
    pub rebooted: bool,
}

#[async_trait]
pub trait Commands: Send + Sync {
    async fn send_command(&self, req: CommandRequest) -> Result<CommandId>;
    async fn command_result(&self, id: &CommandId) -> Result<CommandResult>;
    /// Stop a command that is still running (AWS: CancelCommand). Finished
    /// or unknown commands are not an error. Providers whose commands end
    /// by the timeout they were sent with need not do more.
    async fn cancel_command(&self, _id: &CommandId) -> Result<()> {
        Ok(())
    }
    /// Remove what patching this instance needed besides the instance
    /// itself (AWS: the pipeline's patch baseline and its patch group).
    /// Idempotent; `gc` sweeps what a killed run left.
    async fn finish_patching(&self, _instance: &InstanceId) -> Result<()> {
        Ok(())
    }
    /// The command that prepares this builder for imaging, if its OS needs
    /// one (AWS Windows: EC2Launch v2 sysprep, so new instances run their
    /// first-boot tasks).
    async fn imaging_preparation(&self, _instance: &InstanceId) -> Result<Option<CommandDocument>> {
        Ok(None)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Parameter {
    pub name: String,
    pub value: String,
    pub version: u64,
    pub description: Option<String>,
    pub labels: Vec<String>,
    pub modified_at: Timestamp,
}

#[async_trait]
pub trait Parameters: Send + Sync {
    async fn get_parameter(&self, name: &str) -> Result<Parameter>;
    /// Overwrite (or create) the parameter; `description: None` keeps the
    /// current description. Returns the new version.
    async fn put_parameter(&self, name: &str, value: &str, description: Option<&str>) -> Result<u64>;
    /// Every version, oldest first.
    async fn parameter_history(&self, name: &str) -> Result<Vec<Parameter>>;
    async fn label_parameter_version(&self, name: &str, version: u64, labels: &[String]) -> Result<()>;
}

/// A numbered version of a launch spec (launch template version, or a launch
/// configuration name on AWS).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LaunchSpecRef {
    pub name: String,
    pub version: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaunchSpec {
    pub name: String,
    pub version: u64,
    pub image: ImageId,
    pub spec: InstanceSpec,
    pub created_at: Timestamp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Lifecycle {
    Pending,
    InService,
    Standby,
    Terminating,
    Terminated,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupMember {
    pub id: InstanceId,
    pub image: ImageId,
    pub lifecycle: Lifecycle,
    /// The group's own view (process alive / EC2 status); the load balancer's
    /// view is in [`TargetHealth`].
    pub healthy: bool,
    pub protected: bool,
    pub launched_at: Timestamp,
    pub launch_spec: Option<LaunchSpecRef>,
    /// Held by a lifecycle hook (AWS: Pending:Wait / Terminating:Wait)
    /// until its handler completes the action or the heartbeat runs out.
    #[serde(default)]
    pub hook_wait: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    pub name: String,
    pub min: u32,
    pub max: u32,
    pub desired: u32,
    pub launch_spec: LaunchSpecRef,
    /// Members whose facts the provider can read. A member the cloud does
    /// not show yet (eventual consistency right after launch) is left out
    /// until it does, so nothing ever drains or terminates an instance whose
    /// image is unknown.
    pub members: Vec<GroupMember>,
    /// Where the group's load balancer listens (local: `127.0.0.1:PORT`).
    pub balancer: Option<String>,
    /// Where the group launches (AWS: the subnets of VPCZoneIdentifier).
    #[serde(default)]
    pub subnets: Vec<String>,
    /// What the group's configuration says about readiness, where the
    /// provider reads it with the group for free (local, sim); others
    /// answer [`Groups::health_timing`] with calls of their own.
    #[serde(default)]
    pub health: HealthTiming,
    /// The group's scaling processes that are suspended (AWS:
    /// SuspendedProcesses, such as "Launch" or "AZRebalance"); empty where
    /// a provider has no such thing.
    #[serde(default)]
    pub suspended: Vec<String>,
}

/// How long a new instance of a group takes to be ready, in the group's own
/// terms. The engine turns it into the roll's `health_grace` and `warmup`
/// when the config does not set them ([`crate::rollout::HealthSettings`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct HealthTiming {
    /// Time the group gives a new instance before its health checks count
    /// (AWS: HealthCheckGracePeriod; local: `health_check.grace`).
    #[serde(default)]
    pub grace_period: Option<Duration>,
    /// The group's health check type (AWS: "ELB" or "EC2").
    #[serde(default)]
    pub health_check_type: Option<String>,
    /// The balancer health checks a new instance must pass.
    #[serde(default)]
    pub checks: Vec<BalancerCheck>,
    /// Launch lifecycle hooks: a new instance may wait up to each heartbeat.
    #[serde(default)]
    pub launch_hooks: Vec<LaunchHook>,
    /// Termination lifecycle hooks: a terminated instance may wait up to
    /// each heartbeat (AWS: Terminating:Wait) before it is gone.
    #[serde(default)]
    pub termination_hooks: Vec<LaunchHook>,
    /// The group's default instance warmup (AWS: DefaultInstanceWarmup).
    #[serde(default)]
    pub default_warmup: Option<Duration>,
}

/// One balancer's health check (AWS: a target group's).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BalancerCheck {
    pub name: String,
    pub interval: Duration,
    pub healthy_threshold: u32,
    /// How long a deregistered target drains.
    #[serde(default)]
    pub deregistration_delay: Option<Duration>,
    /// The port the check (and the application) answers on.
    #[serde(default)]
    pub port: Option<u16>,
}

impl BalancerCheck {
    /// Time from registration to healthy: threshold consecutive checks.
    pub fn time_to_healthy(&self) -> Duration {
        self.interval * self.healthy_threshold.max(1)
    }
}

/// An instance in a group's warm pool (AWS: DescribeWarmPool): launched
/// ahead of need from the group's launch spec of the time, kept stopped or
/// running, and drawn into the group when it scales out — with the image it
/// was launched with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WarmInstance {
    pub id: InstanceId,
    pub image: ImageId,
    /// The cloud's own word ("Warmed:Stopped", "Warmed:Pending", ...).
    pub state: String,
}

impl WarmInstance {
    /// On its way out of the pool (terminating): it will never serve.
    pub fn leaving(&self) -> bool {
        self.state.contains("Terminat")
    }
    /// "i-1 on ami-0 (Warmed:Stopped)", for messages.
    pub fn label(&self) -> String {
        format!("{} on {} ({})", self.id, self.image, self.state)
    }
}

/// A lifecycle hook that holds new instances (AWS: Pending:Wait) or
/// terminated ones (Terminating:Wait): its name and heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaunchHook {
    pub name: String,
    pub heartbeat: Duration,
}

impl LaunchHook {
    /// "bootstrap (heartbeat 5s)", for messages.
    pub fn label(&self) -> String {
        format!(
            "{} (heartbeat {})",
            self.name,
            crate::duration::format_duration(self.heartbeat)
        )
    }
}

#[async_trait]
pub trait Groups: Send + Sync {
    async fn describe_group(&self, name: &str) -> Result<Group>;
    /// What the group's configuration says about readiness (grace period,
    /// balancer health checks, launch hooks, warmup).
    async fn health_timing(&self, name: &str) -> Result<HealthTiming> {
        Ok(self.describe_group(name).await?.health)
    }
    async fn describe_launch_spec(&self, spec: &LaunchSpecRef) -> Result<LaunchSpec>;
    /// New version of `base.name` carrying all of `base`'s data with `image`.
    async fn create_launch_spec_version(&self, base: &LaunchSpecRef, image: &ImageId) -> Result<LaunchSpecRef>;
    async fn set_group_launch_spec(&self, group: &str, spec: &LaunchSpecRef) -> Result<()>;
    async fn set_desired_capacity(&self, group: &str, desired: u32) -> Result<()>;
    /// Terminate a member; with `decrement` the desired capacity drops by one,
    /// without it the group launches a replacement.
    async fn terminate_group_instance(&self, group: &str, instance: &InstanceId, decrement: bool) -> Result<()>;
    async fn set_instance_protection(&self, group: &str, instance: &InstanceId, protected: bool) -> Result<()>;
    /// Suspend these scaling processes of the group (AWS:
    /// SuspendProcesses). Idempotent. Providers without scaling processes
    /// have nothing to suspend.
    async fn suspend_processes(&self, _group: &str, _processes: &[String]) -> Result<()> {
        Ok(())
    }
    /// Resume exactly these scaling processes (AWS: ResumeProcesses).
    /// Idempotent.
    async fn resume_processes(&self, _group: &str, _processes: &[String]) -> Result<()> {
        Ok(())
    }
    /// The instances of the group's warm pool (empty: no pool, or a
    /// provider without warm pools). A pool instance is terminated with
    /// [`Groups::terminate_group_instance`] (without `decrement`: the pool
    /// is not part of desired capacity); the pool refills from the group's
    /// launch spec.
    async fn warm_pool(&self, _group: &str) -> Result<Vec<WarmInstance>> {
        Ok(vec![])
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetState {
    /// Registered, health checks not yet passed.
    Initial,
    Healthy,
    Unhealthy,
    /// Deregistered: no new requests, in-flight ones finishing.
    Draining,
    /// Not registered (drain finished, or never registered).
    Unused,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetHealth {
    pub instance: InstanceId,
    pub state: TargetState,
    /// When `state` was entered.
    pub since: Timestamp,
    /// Requests in flight, where the balancer can tell.
    pub in_flight: Option<u32>,
}

#[async_trait]
pub trait Traffic: Send + Sync {
    /// Health of every target of the group's load balancer(s). An instance
    /// in several target groups reports its worst state.
    async fn target_health(&self, group: &str) -> Result<Vec<TargetHealth>>;
    /// Stop sending new requests to the instance and let in-flight ones
    /// finish (bounded by the deregistration delay).
    async fn deregister_target(&self, group: &str, instance: &InstanceId) -> Result<()>;
    async fn register_target(&self, group: &str, instance: &InstanceId) -> Result<()>;
}

/// Where a cloud's own rolling replacement stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NativeRollStatus {
    pub id: String,
    /// The cloud's own word for the state ("InProgress", "Successful", ...).
    pub state: String,
    /// Nothing more will happen on its own.
    pub finished: bool,
    pub succeeded: bool,
    pub percent_complete: u32,
    pub instances_to_update: u32,
    pub reason: Option<String>,
}

/// What a permission check found ([`Permissions::check_permissions`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PermissionReport {
    /// Permissions the run needs that the caller lacks, each "ACTION on
    /// RESOURCE (statement SID)"; empty when it holds them all.
    pub missing: Vec<String>,
    /// Why the check could not be made (the run goes on; a missing
    /// permission then stops it at the call that needs it).
    pub unchecked: Option<String>,
}

/// A cloud that can tell, before a run changes anything, whether the
/// caller holds every permission the run needs.
#[async_trait]
pub trait Permissions: Send + Sync {
    /// Check the permissions a run of pipeline `name` needs. Never an
    /// error for the check's own failure: that is `unchecked`.
    async fn check_permissions(&self, name: &str, pipeline: &crate::config::Pipeline) -> PermissionReport;
}

/// A cloud's own rolling replacement (AWS Instance Refresh), used by
/// `strategy = "native"`: started, watched and reported in the same run
/// record as repave's own engine.
#[async_trait]
pub trait NativeRoll: Send + Sync {
    /// Replace the group's instances that differ from its launch spec. A
    /// replacement already running for the group is returned (a resumed run
    /// re-attaches instead of failing).
    /// `target` is the launch spec version to roll onto; the group itself
    /// may still name the previous one (the cloud moves it on success, and
    /// has somewhere to roll back to).
    async fn start_native_roll(
        &self,
        group: &str,
        target: &LaunchSpecRef,
        rollout: &crate::config::Rollout,
    ) -> Result<String>;
    async fn native_roll_status(&self, group: &str, id: &str) -> Result<NativeRollStatus>;
    async fn cancel_native_roll(&self, group: &str) -> Result<()>;
}

/// Everything the engine needs from a cloud.
pub trait Provider: Images + Instances + Commands + Parameters + Groups + Traffic {
    /// Short name for logs and the run record ("local", "aws", "sim").
    fn name(&self) -> &str;
    /// Where this provider's groups live when one process drives several
    /// places whose group names may repeat (AWS: `account/region`); `None`
    /// where there is one place (local, sim). Leases and the
    /// unfinished-run check are per group *in its place*.
    fn place(&self) -> Option<String> {
        None
    }
    /// Cloud API calls made so far, by operation (empty where a provider
    /// does not count them). The run summary reports the difference.
    fn api_calls(&self) -> BTreeMap<String, u64> {
        BTreeMap::new()
    }
    /// API calls the cloud answered with throttling, by operation (SDK
    /// retries included).
    fn throttled_calls(&self) -> BTreeMap<String, u64> {
        BTreeMap::new()
    }
    /// The cloud's own rolling replacement, where it has one.
    fn native_roll(&self) -> Option<&dyn NativeRoll> {
        None
    }
    /// Whether the caller may do everything a run of a pipeline does,
    /// where the cloud can say before anything changes (AWS IAM).
    fn permissions(&self) -> Option<&dyn Permissions> {
        None
    }
    /// Groups have scaling processes a roll suspends
    /// ([`Groups::suspend_processes`]; AWS Auto Scaling).
    fn has_scaling_processes(&self) -> bool {
        false
    }
    /// What a builder of this cloud cannot go without
    /// ([`crate::builder::builder_spec`] refuses a run that lacks it).
    fn builder_needs(&self) -> crate::builder::BuilderNeeds {
        crate::builder::BuilderNeeds::default()
    }
}
