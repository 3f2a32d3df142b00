//! The `repave.toml` struct tree. One serde tree, unknown fields rejected,
//! validated once at start-up (see [`load`]).

mod load;
mod locate;
mod patch_check;
mod starter;
#[cfg(test)]
mod tests;
mod validate;

pub use load::{parse, parse_all, parse_bytes, parse_bytes_with, ConfigError, ExtraCheck, MAX_CONFIG_BYTES};
pub use patch_check::{builder_os, PatchProblem};
pub use starter::starter_config;
pub use validate::is_valid_name;

use crate::duration::HumanDuration;
use crate::patch::PatchSelection;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// State directory (SQLite store, local images, logs). `--state-dir`
    /// overrides it; default `.repave` next to the config file.
    #[serde(default)]
    pub state_dir: Option<PathBuf>,
    #[serde(default)]
    pub providers: Providers,
    #[serde(default)]
    pub pipelines: BTreeMap<String, Pipeline>,
    /// `repave serve`: listen address, API token, webhooks.
    #[serde(default)]
    pub server: ServerConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Providers {
    pub local: Option<LocalProvider>,
    pub aws: Option<AwsProvider>,
}

/// The local provider: a fleet of processes on this machine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct LocalProvider {
    /// Update feed (JSON array of updates). Default: the demo feed shipped
    /// in the binary.
    #[serde(default)]
    pub feed: Option<PathBuf>,
    /// Groups `repave local up` creates if they don't exist yet.
    #[serde(default)]
    pub groups: BTreeMap<String, LocalGroup>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalGroup {
    pub min: u32,
    pub max: u32,
    pub desired: u32,
    /// Load balancer port on 127.0.0.1.
    pub port: u16,
    /// Instance process, argument list with `{port}`, `{root}`, `{repave}`.
    #[serde(default = "default_command")]
    pub command: Vec<String>,
    /// Image the group starts on: `builtin:demo` or a directory to import.
    #[serde(default = "default_image")]
    pub image: String,
    #[serde(default)]
    pub health_check: HealthCheck,
    /// How long a draining target may keep in-flight requests.
    #[serde(default = "default_deregistration_delay")]
    pub deregistration_delay: HumanDuration,
    /// Target-tracking scaling on requests per instance (none: desired
    /// changes only when told).
    #[serde(default)]
    pub scaling: Option<Scaling>,
}

/// Target tracking, as an AWS target-tracking policy on
/// `ALBRequestCountPerTarget`: desired capacity follows the balancer's
/// request rate divided by the target, within min and max. Scale-out is
/// immediate; scale-in goes one instance at a time, each after the rate has
/// stayed low for `scale_in_cooldown`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scaling {
    /// Requests per second each in-service instance should carry.
    pub target_requests_per_instance: u32,
    #[serde(default = "default_scale_in_cooldown")]
    pub scale_in_cooldown: HumanDuration,
}

fn default_scale_in_cooldown() -> HumanDuration {
    HumanDuration::from_secs(60)
}

pub fn default_command() -> Vec<String> {
    ["{repave}", "demo-app", "--port", "{port}", "--root", "{root}"]
        .map(String::from)
        .to_vec()
}
fn default_image() -> String {
    "builtin:demo".into()
}
fn default_deregistration_delay() -> HumanDuration {
    HumanDuration::from_secs(10)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    #[serde(default = "default_health_path")]
    pub path: String,
    #[serde(default = "default_health_interval")]
    pub interval: HumanDuration,
    #[serde(default = "default_health_timeout")]
    pub timeout: HumanDuration,
    #[serde(default = "default_threshold")]
    pub healthy_threshold: u32,
    #[serde(default = "default_threshold")]
    pub unhealthy_threshold: u32,
    /// Time after launch during which a failing instance is not replaced.
    #[serde(default = "default_grace")]
    pub grace: HumanDuration,
}

impl Default for HealthCheck {
    fn default() -> Self {
        Self {
            path: default_health_path(),
            interval: default_health_interval(),
            timeout: default_health_timeout(),
            healthy_threshold: default_threshold(),
            unhealthy_threshold: default_threshold(),
            grace: default_grace(),
        }
    }
}
fn default_health_path() -> String {
    "/health".into()
}
fn default_health_interval() -> HumanDuration {
    HumanDuration::from_millis(200)
}
fn default_health_timeout() -> HumanDuration {
    HumanDuration::from_secs(2)
}
fn default_threshold() -> u32 {
    2
}
fn default_grace() -> HumanDuration {
    HumanDuration::from_secs(30)
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsProvider {
    pub region: Option<String>,
    pub profile: Option<String>,
    /// e.g. a moto server; `AWS_ENDPOINT_URL` works too.
    pub endpoint_url: Option<String>,
    /// How often a roll observes the group (each observation costs API
    /// calls: DescribeAutoScalingGroups + DescribeTargetHealth).
    #[serde(default = "default_aws_poll")]
    pub poll_interval: HumanDuration,
    /// The endpoint is an emulator (moto, LocalStack) whose SSM commands run
    /// nothing and print nothing: an empty patch output then means "nothing
    /// to install". Never set against real AWS.
    #[serde(default)]
    pub emulator: bool,
    /// repave's share, in percent, of each AWS request bucket of an account
    /// and region (see [`crate::budget::ApiBucket::documented_limit`]): one
    /// budget shared by every pipeline in that account and region, so many
    /// rolls at once are paced instead of throttled. 0 turns it off.
    #[serde(default = "default_budget_percent")]
    pub request_budget_percent: u32,
}

fn default_budget_percent() -> u32 {
    crate::budget::DEFAULT_BUDGET_PERCENT
}

impl Default for AwsProvider {
    fn default() -> Self {
        Self {
            region: None,
            profile: None,
            endpoint_url: None,
            poll_interval: default_aws_poll(),
            emulator: false,
            request_budget_percent: default_budget_percent(),
        }
    }
}

fn default_aws_poll() -> HumanDuration {
    HumanDuration::from_secs(10)
}

/// Which cloud a pipeline's group lives in (`pipelines.X.provider`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    /// The local fleet (`[providers.local]`): real processes on this machine.
    Local,
    /// AWS (`[providers.aws]`): EC2 Auto Scaling, SSM, ELB.
    Aws,
    /// The simulator's own pipelines (`repave simulate`, benchmarks, the
    /// scheduler's scenario tests); a config file cannot name it.
    Sim,
}

impl ProviderKind {
    /// The config's word for it ("local", "aws"), as the run record keeps it.
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Local => "local",
            ProviderKind::Aws => "aws",
            ProviderKind::Sim => "sim",
        }
    }
}

impl std::fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pipeline {
    /// `local` or `aws`.
    pub provider: ProviderKind,
    /// The scaling group to keep patched.
    pub group: String,
    /// The golden parameter (SSM parameter such as `latestAmi`).
    pub parameter: String,
    #[serde(default)]
    pub builder: Builder,
    #[serde(default)]
    pub patch: Patch,
    /// Commands run on the builder after patching; any failure aborts.
    #[serde(default)]
    pub validate: Vec<String>,
    #[serde(default)]
    pub test: ImageTest,
    #[serde(default)]
    pub rollout: Rollout,
    #[serde(default)]
    pub retention: Retention,
    /// How long image creation may take before the run fails.
    #[serde(default = "default_image_timeout")]
    pub image_timeout: HumanDuration,
    #[serde(default)]
    pub simulate: SimConfig,
    /// Maintenance window for `repave serve`'s scheduler.
    #[serde(default)]
    pub window: Option<Window>,
    /// `[pipelines.X.aws]`: the account and region this pipeline's group
    /// lives in, when not the ones `[providers.aws]` and the credential
    /// chain point at.
    #[serde(default)]
    pub aws: Option<PipelineAws>,
}

/// `[pipelines.X.aws]`: a pipeline in another region and/or account. With
/// `role_arn`, repave assumes the role through STS, the standard credential
/// chain being the source, and renews the session before it expires.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct PipelineAws {
    /// The group's region (wins over `--region` and `[providers.aws] region`).
    #[serde(default)]
    pub region: Option<String>,
    /// The IAM role to assume: `arn:aws:iam::123456789012:role/repave`.
    #[serde(default)]
    pub role_arn: Option<String>,
    /// The external id the role's trust policy requires (`sts:ExternalId`).
    #[serde(default)]
    pub external_id: Option<String>,
    /// The role session name CloudTrail shows (default `repave`).
    #[serde(default)]
    pub session_name: Option<String>,
    /// How long each STS session lasts (AWS: 15m to the role's maximum, at
    /// most 12h); it is renewed before it ends.
    #[serde(default)]
    pub session_duration: Option<HumanDuration>,
}

impl PipelineAws {
    /// The account id in `role_arn` (the account the pipeline's calls go
    /// to), when the ARN is well formed.
    pub fn role_account(&self) -> Option<&str> {
        self.role_arn
            .as_deref()
            .and_then(|a| RoleArn::parse(a).ok())
            .map(|r| r.account)
    }
}

/// The AWS partition a region belongs to (`aws`, `aws-cn`, `aws-us-gov`,
/// ...): ARNs and service principals are spelled with it.
pub fn partition_of(region: &str) -> &'static str {
    if region.starts_with("cn-") {
        "aws-cn"
    } else if region.starts_with("us-gov-") {
        "aws-us-gov"
    } else if region.starts_with("us-isob-") {
        "aws-iso-b"
    } else if region.starts_with("us-iso-") {
        "aws-iso"
    } else if region.starts_with("eu-isoe-") {
        "aws-iso-e"
    } else if region.starts_with("us-isof-") {
        "aws-iso-f"
    } else {
        "aws"
    }
}

/// `us-east-1`, `cn-north-1`, `us-gov-west-1`: lowercase words and a number.
pub fn is_valid_region(region: &str) -> bool {
    let parts: Vec<&str> = region.split('-').collect();
    parts.len() >= 3
        && parts[..parts.len() - 1]
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase()))
        && parts[parts.len() - 1].bytes().all(|b| b.is_ascii_digit())
        && !parts[parts.len() - 1].is_empty()
}

/// A parsed IAM role ARN: `arn:PARTITION:iam::ACCOUNT:role/PATH/NAME`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoleArn<'a> {
    pub partition: &'a str,
    pub account: &'a str,
    /// Path and name: `repave` or `ops/repave`.
    pub resource: &'a str,
}

impl<'a> RoleArn<'a> {
    /// Parse a role ARN; the error says what is wrong with it.
    pub fn parse(arn: &'a str) -> Result<RoleArn<'a>, String> {
        let parts: Vec<&str> = arn.splitn(6, ':').collect();
        let example = "write arn:aws:iam::123456789012:role/NAME";
        if parts.len() != 6 || parts[0] != "arn" {
            return Err(format!("{arn:?} is not an ARN; {example}"));
        }
        let (partition, service, region, account, resource) = (parts[1], parts[2], parts[3], parts[4], parts[5]);
        if !matches!(
            partition,
            "aws" | "aws-cn" | "aws-us-gov" | "aws-iso" | "aws-iso-b" | "aws-iso-e" | "aws-iso-f" | "aws-eusc"
        ) {
            return Err(format!("{arn:?}: unknown partition {partition:?}; {example}"));
        }
        if service != "iam" || !region.is_empty() {
            return Err(format!(
                "{arn:?} is not an IAM role ARN (service must be `iam`, region empty); {example}"
            ));
        }
        if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("{arn:?}: account {account:?} must be 12 digits; {example}"));
        }
        let Some(name_path) = resource.strip_prefix("role/") else {
            return Err(format!(
                "{arn:?} names a {:?}, not a role; {example}",
                resource.split('/').next().unwrap_or("")
            ));
        };
        let name = name_path.rsplit('/').next().unwrap_or("");
        let allowed = |c: char| c.is_ascii_alphanumeric() || "+=,.@_-".contains(c);
        if name.is_empty() || name.len() > 64 || !name.chars().all(allowed) {
            return Err(format!(
                "{arn:?}: role name {name:?} must be 1-64 letters, digits or +=,.@_-; {example}"
            ));
        }
        Ok(RoleArn {
            partition,
            account,
            resource: name_path,
        })
    }
}

fn default_image_timeout() -> HumanDuration {
    HumanDuration::from_secs(3600)
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Builder {
    pub instance_type: Option<String>,
    pub subnet: Option<String>,
    #[serde(default)]
    pub security_groups: Vec<String>,
    pub instance_profile: Option<String>,
    /// The builder's OS family, whose patch vocabulary the selection uses:
    /// "windows", "amazon-linux", "rhel", "suse", "ubuntu", "debian";
    /// "linux" (any Linux, detected from the image) or "auto" (detected from
    /// the image: AWS platform details and name, the local feed's OS). The
    /// detected family is checked against this and the selection before
    /// anything is launched.
    #[serde(default)]
    pub platform: crate::patch::PlatformChoice,
    /// Prepare a Windows builder for imaging before its image is taken
    /// (EC2Launch v2 `sysprep`: generalized, so the new instances run their
    /// first-boot tasks). Ignored on Linux.
    #[serde(default = "yes")]
    pub generalize: bool,
    /// How long the builder may take to answer the command channel.
    #[serde(default = "default_ready_timeout")]
    pub ready_timeout: HumanDuration,
}

impl Default for Builder {
    fn default() -> Self {
        Self {
            instance_type: None,
            subnet: None,
            security_groups: vec![],
            instance_profile: None,
            platform: Default::default(),
            generalize: true,
            ready_timeout: default_ready_timeout(),
        }
    }
}
fn default_ready_timeout() -> HumanDuration {
    HumanDuration::from_secs(900)
}

/// `[pipelines.X.patch]`: the selection, in the builder's OS vocabulary
/// (see [`crate::patch::os`]), and how the patch step behaves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Patch {
    /// Windows: MSRC severities; Amazon Linux / RHEL / SUSE: advisory
    /// severities. Empty: any.
    #[serde(default)]
    pub severities: Vec<String>,
    /// Windows: update classifications; Amazon Linux / RHEL: advisory types
    /// (Security, Bugfix, ...); SUSE: patch categories. Empty: any.
    #[serde(default)]
    pub classifications: Vec<String>,
    /// Ubuntu / Debian: package priorities. Empty: any.
    #[serde(default)]
    pub priorities: Vec<String>,
    /// Ubuntu / Debian: archive sections. Empty: any.
    #[serde(default)]
    pub sections: Vec<String>,
    /// Only updates released at least this many days before the bake (AWS:
    /// the pipeline's patch baseline's ApproveAfterDays; not available on
    /// Ubuntu / Debian, where Patch Manager has no release dates).
    #[serde(default)]
    pub min_age_days: u32,
    #[serde(default)]
    pub include: Vec<String>,
    #[serde(default)]
    pub exclude: Vec<String>,
    #[serde(default = "yes")]
    pub allow_reboot: bool,
    /// Reboot-and-rescan rounds before the bake gives up.
    #[serde(default = "default_max_reboots")]
    pub max_reboots: u32,
    /// Bound on the whole patch step; a patch command still running then is
    /// cancelled and the run fails.
    #[serde(default = "default_patch_timeout")]
    pub timeout: HumanDuration,
    /// When the selection resolves to nothing: `"stop"` ends the run
    /// without an image (nothing published: the golden image already has
    /// everything selected), `"publish"` bakes and publishes anyway (to pick
    /// up a new base image).
    #[serde(default)]
    pub when_empty: WhenEmpty,
}

/// What a bake whose selection resolves to nothing does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum WhenEmpty {
    #[default]
    Stop,
    Publish,
}

impl Default for Patch {
    fn default() -> Self {
        Self {
            severities: vec![],
            classifications: vec![],
            priorities: vec![],
            sections: vec![],
            min_age_days: 0,
            include: vec![],
            exclude: vec![],
            allow_reboot: true,
            max_reboots: default_max_reboots(),
            timeout: default_patch_timeout(),
            when_empty: WhenEmpty::Stop,
        }
    }
}

impl Patch {
    /// The selection, OS not yet known: `priorities` / `sections` are the
    /// severity / classification axes of Ubuntu and Debian.
    pub fn selection(&self) -> PatchSelection {
        let join = |a: &[String], b: &[String]| a.iter().chain(b).cloned().collect();
        PatchSelection {
            os: None,
            severities: join(&self.severities, &self.priorities),
            classifications: join(&self.classifications, &self.sections),
            min_age_days: self.min_age_days,
            include: self.include.clone(),
            exclude: self.exclude.clone(),
        }
    }

    /// The selection for a builder of family `os`, names spelled as the
    /// family spells them.
    pub fn selection_for(&self, os: crate::patch::OsFamily) -> PatchSelection {
        use crate::patch::Axis;
        let mut s = self.selection();
        s.os = Some(os);
        let spell = |axis: Axis, v: &mut Vec<String>| {
            for x in v.iter_mut() {
                if let Some(c) = os.canonical(axis, x) {
                    *x = c.to_string();
                }
            }
        };
        spell(Axis::Severity, &mut s.severities);
        spell(Axis::Classification, &mut s.classifications);
        s
    }
}

fn yes() -> bool {
    true
}
fn default_max_reboots() -> u32 {
    3
}
fn default_patch_timeout() -> HumanDuration {
    HumanDuration::from_secs(7200)
}

/// Boot one instance from the new image before publishing it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageTest {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Commands run on the test instance; any failure fails the image.
    #[serde(default)]
    pub commands: Vec<String>,
    #[serde(default = "default_test_health_path")]
    pub health_path: String,
    #[serde(default = "default_test_timeout")]
    pub timeout: HumanDuration,
}

impl Default for ImageTest {
    fn default() -> Self {
        Self {
            enabled: true,
            commands: vec![],
            health_path: default_test_health_path(),
            timeout: default_test_timeout(),
        }
    }
}
fn default_test_health_path() -> String {
    "/health".into()
}
fn default_test_timeout() -> HumanDuration {
    HumanDuration::from_secs(600)
}

/// What to do with protected or standby instances during a roll.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum HeldInstances {
    /// Leave them on the old image; the roll completes without them.
    #[default]
    Skip,
    /// Wait (bounded by the roll timeout) for them to become replaceable.
    Wait,
    /// Refuse to start the roll.
    Fail,
    /// Replace them like any other instance (Instance Refresh's
    /// `ScaleInProtectedInstances=Refresh`). `protected` only: a standby
    /// instance is out of service on purpose.
    Replace,
}

impl HeldInstances {
    /// The policy that holds a member back from a roll (`on_standby` for a
    /// standby one, `on_protected` for a protected one), `None` when the
    /// roll replaces it like any other — unprotected, or protected under
    /// "replace". The one place the planner, `plan` and the preflight ask.
    pub fn holding(
        standby: bool,
        protected: bool,
        on_standby: HeldInstances,
        on_protected: HeldInstances,
    ) -> Option<HeldInstances> {
        if standby {
            Some(on_standby)
        } else if protected && on_protected != HeldInstances::Replace {
            Some(on_protected)
        } else {
            None
        }
    }
}

/// Who replaces the group's instances (`rollout.strategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// repave's own engine: continuous surge replacement behind the
    /// balancer.
    #[default]
    Rolling,
    /// The cloud's own rolling replacement (AWS Instance Refresh).
    Native,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rollout {
    /// `rolling` (repave's engine) or `native` (AWS Instance Refresh).
    #[serde(default)]
    pub strategy: Strategy,
    #[serde(default = "default_min_healthy")]
    pub min_healthy_percent: u32,
    #[serde(default = "default_max_healthy")]
    pub max_healthy_percent: u32,
    /// After turning healthy, a new instance counts as in service only once
    /// this has passed. Default: the group's own warmup (AWS:
    /// DefaultInstanceWarmup), else 2s.
    #[serde(default)]
    pub warmup: Option<HumanDuration>,
    /// A new instance not healthy this long after launch counts as failed.
    /// Default: what the group needs (its grace period + the slowest
    /// balancer health check + launch hook heartbeats, plus a margin; see
    /// [`crate::rollout::HealthSettings`]).
    #[serde(default)]
    pub health_grace: Option<HumanDuration>,
    /// Failed new instances that abort the roll.
    #[serde(default = "default_max_unhealthy_new")]
    pub max_unhealthy_new: u32,
    /// The abort threshold as a percentage of the instances to replace
    /// (rounded up, at least 1); when set it is used instead of
    /// `max_unhealthy_new`.
    #[serde(default)]
    pub max_unhealthy_new_percent: Option<u32>,
    /// Replace this many instances first, then wait `bake_time` with them in
    /// service before going on; any canary that fails aborts the roll.
    #[serde(default)]
    pub canary: u32,
    #[serde(default = "default_bake_time")]
    pub bake_time: HumanDuration,
    /// Percentages of the fleet after which the roll pauses for
    /// `checkpoint_pause` (e.g. `[25, 50]`), ascending.
    #[serde(default)]
    pub checkpoints: Vec<u32>,
    #[serde(default = "default_checkpoint_pause")]
    pub checkpoint_pause: HumanDuration,
    /// How long a roll may stay blocked on held (`wait`) instances before it
    /// fails with their ids.
    #[serde(default = "default_hold_timeout")]
    pub hold_timeout: HumanDuration,
    /// A draining instance is terminated once this has passed even if the
    /// balancer still reports it draining (the deregistration delay is over).
    #[serde(default = "default_drain_timeout")]
    pub drain_timeout: HumanDuration,
    /// No new replacement starts this long after the roll (or its resume)
    /// began; in-flight ones finish and the roll pauses. Until windows exist
    /// (issue 5) this is the roll's share of the maintenance window.
    #[serde(default)]
    pub window_cutoff: Option<HumanDuration>,
    #[serde(default = "yes")]
    pub auto_rollback: bool,
    /// Skip instances already on the target image.
    #[serde(default = "yes")]
    pub skip_matching: bool,
    #[serde(default)]
    pub protected: HeldInstances,
    #[serde(default)]
    pub standby: HeldInstances,
    /// Bound on the whole roll.
    #[serde(default = "default_roll_timeout")]
    pub timeout: HumanDuration,
}

impl Default for Rollout {
    fn default() -> Self {
        Self {
            strategy: Strategy::default(),
            min_healthy_percent: default_min_healthy(),
            max_healthy_percent: default_max_healthy(),
            warmup: None,
            health_grace: None,
            max_unhealthy_new: default_max_unhealthy_new(),
            max_unhealthy_new_percent: None,
            canary: 0,
            bake_time: default_bake_time(),
            checkpoints: vec![],
            checkpoint_pause: default_checkpoint_pause(),
            hold_timeout: default_hold_timeout(),
            drain_timeout: default_drain_timeout(),
            window_cutoff: None,
            auto_rollback: true,
            skip_matching: true,
            protected: HeldInstances::Skip,
            standby: HeldInstances::Skip,
            timeout: default_roll_timeout(),
        }
    }
}
fn default_min_healthy() -> u32 {
    100
}
fn default_max_healthy() -> u32 {
    150
}
fn default_max_unhealthy_new() -> u32 {
    1
}
fn default_roll_timeout() -> HumanDuration {
    HumanDuration::from_secs(3600)
}
fn default_bake_time() -> HumanDuration {
    HumanDuration::from_secs(300)
}
fn default_checkpoint_pause() -> HumanDuration {
    HumanDuration::from_secs(300)
}
fn default_hold_timeout() -> HumanDuration {
    HumanDuration::from_secs(1800)
}
fn default_drain_timeout() -> HumanDuration {
    HumanDuration::from_secs(3600)
}

/// `[pipelines.X.simulate]`: the latencies `repave simulate` assumes, as
/// medians; each draw varies log-normally by `variance_percent`. Defaults
/// are public AWS figures for a Windows fleet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimConfig {
    /// RunInstances → running.
    #[serde(default = "sim_launch")]
    pub launch: HumanDuration,
    /// Running → reachable through the command channel (Windows to SSM).
    #[serde(default = "sim_boot")]
    pub boot: HumanDuration,
    /// Booted → healthy at the balancer (app start + healthy threshold).
    #[serde(default = "sim_health")]
    pub health: HumanDuration,
    /// Installing the selected updates on the builder.
    #[serde(default = "sim_updates")]
    pub updates: HumanDuration,
    /// CreateImage → available.
    #[serde(default = "sim_create_image")]
    pub create_image: HumanDuration,
    /// Upper bound of a drain; it ends early once in-flight requests finish.
    #[serde(default = "sim_deregistration_delay")]
    pub deregistration_delay: HumanDuration,
    /// Spread of each draw around its median (log-normal sigma, percent).
    #[serde(default = "sim_variance")]
    pub variance_percent: u32,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            launch: sim_launch(),
            boot: sim_boot(),
            health: sim_health(),
            updates: sim_updates(),
            create_image: sim_create_image(),
            deregistration_delay: sim_deregistration_delay(),
            variance_percent: sim_variance(),
        }
    }
}
fn sim_launch() -> HumanDuration {
    HumanDuration::from_secs(60)
}
fn sim_boot() -> HumanDuration {
    HumanDuration::from_secs(600)
}
fn sim_health() -> HumanDuration {
    HumanDuration::from_secs(30)
}
fn sim_updates() -> HumanDuration {
    HumanDuration::from_secs(2400)
}
fn sim_create_image() -> HumanDuration {
    HumanDuration::from_secs(900)
}
fn sim_deregistration_delay() -> HumanDuration {
    HumanDuration::from_secs(300)
}
fn sim_variance() -> u32 {
    20
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    /// Images of this pipeline to keep (the current one included).
    #[serde(default = "default_keep")]
    pub keep: u32,
    /// Images the golden parameter held within this window are never
    /// deleted: a rollback may need them.
    #[serde(default = "default_rollback_window")]
    pub rollback_window: HumanDuration,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            keep: default_keep(),
            rollback_window: default_rollback_window(),
        }
    }
}
fn default_rollback_window() -> HumanDuration {
    HumanDuration::from_secs(7 * 86_400)
}
fn default_keep() -> u32 {
    3
}

/// `[pipelines.X.window]`: when the scheduler of `repave serve` runs the
/// pipeline. The window opens at each fire time of `cron`, in `timezone`,
/// and lasts `duration`; no new replacement starts in its last `cutoff`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Window {
    /// 5-field cron (`0 2 * * TUE#2+3` = Patch Tuesday + 3 days, 02:00),
    /// AWS `cron(0 1 ? * SUN *)` or `rate(7 days)`.
    pub cron: String,
    /// IANA time zone the cron fields are read in ("Asia/Taipei").
    #[serde(default = "default_timezone")]
    pub timezone: String,
    /// How long the window stays open.
    pub duration: HumanDuration,
    /// No new replacement starts after `end - cutoff`.
    #[serde(default)]
    pub cutoff: Option<HumanDuration>,
    /// `"updates_available"`: skip the window when nothing changed since the
    /// last good bake.
    #[serde(default)]
    pub only_if: Option<OnlyIf>,
    /// After this many failed scheduled runs in a row the schedule disables
    /// itself (stored; `repave schedule enable PIPELINE` turns it back on).
    #[serde(default = "default_max_consecutive_failures")]
    pub max_consecutive_failures: u32,
}

/// `window.only_if`: a condition a scheduled run must meet to go past its
/// scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnlyIf {
    /// The scan found updates to install (or the golden image changed)
    /// since the last good bake.
    UpdatesAvailable,
}

impl OnlyIf {
    /// The config's word for it.
    pub fn as_str(self) -> &'static str {
        match self {
            OnlyIf::UpdatesAvailable => "updates_available",
        }
    }
}

fn default_timezone() -> String {
    "UTC".into()
}
fn default_max_consecutive_failures() -> u32 {
    3
}

/// `[server]`: `repave serve`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to bind; `--listen` overrides it.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Bearer token for mutating API calls. Prefer `token_env`.
    #[serde(default)]
    pub token: Option<String>,
    /// Environment variable holding the token (default `REPAVE_TOKEN`).
    #[serde(default)]
    pub token_env: Option<String>,
    #[serde(default)]
    pub webhooks: Vec<Webhook>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            token: None,
            token_env: None,
            webhooks: vec![],
        }
    }
}
fn default_listen() -> String {
    "127.0.0.1:8787".into()
}

/// A URL notified (HTTP POST) on run start / success / failure / rollback.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Webhook {
    pub url: String,
    /// `"json"` (the event as JSON) or `"slack"` (`{"text": ...}`).
    #[serde(default)]
    pub format: WebhookFormat,
    /// Which of started, succeeded, failed, rolled_back; empty = all.
    #[serde(default)]
    pub events: Vec<RunEvent>,
}

/// How a webhook's request body is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookFormat {
    /// The notice as JSON, with a `text` line.
    #[default]
    Json,
    /// `{"text": ...}`, what a Slack incoming webhook takes.
    Slack,
}

/// What happened to a run, as webhooks are told (`server.webhooks.events`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunEvent {
    Started,
    Succeeded,
    Failed,
    /// Failed after publish and returned to the previous image.
    RolledBack,
}

impl RunEvent {
    /// The config's (and the notice's) word for it.
    pub fn as_str(self) -> &'static str {
        match self {
            RunEvent::Started => "started",
            RunEvent::Succeeded => "succeeded",
            RunEvent::Failed => "failed",
            RunEvent::RolledBack => "rolled_back",
        }
    }
}
