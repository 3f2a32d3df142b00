//! The daemon protocol: one JSON [`Request`] per line, one JSON [`Response`]
//! line back, over `<state_dir>/local/daemon.sock`. The socket layer only
//! parses; the daemon's state owner executes the typed request.

use repave_core::config::{HealthCheck, Scaling};
use repave_core::provider::{
    CommandRequest, CommandResult, CreateImageRequest, Group, HealthProbe, Image, Instance, LaunchRequest, LaunchSpec,
    LaunchSpecRef, Parameter, Tags, TargetHealth,
};
use repave_core::{CommandId, ErrorKind, ImageId, InstanceId};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

/// Where an imported image's files come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImageSource {
    /// The demo base image shipped in the binary.
    BuiltinDemo,
    /// A directory tree on this machine.
    Directory(PathBuf),
}

/// Everything needed to create a group (and its image, launch spec and
/// golden parameter) if it does not exist yet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupSetup {
    pub name: String,
    pub min: u32,
    pub max: u32,
    pub desired: u32,
    /// Port of the group's load balancer on 127.0.0.1.
    pub port: u16,
    /// Instance command with `{port}`, `{root}`, `{repave}` placeholders.
    pub command: Vec<String>,
    pub image: ImageSource,
    pub health_check: HealthCheck,
    pub deregistration_delay: Duration,
    /// Golden parameter to create, pointing at the image, if it does not exist.
    pub parameter: Option<String>,
    /// Target-tracking scaling on requests per instance.
    #[serde(default)]
    pub scaling: Option<Scaling>,
}

/// What `ensure_group` found or made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupSetupResult {
    pub image: ImageId,
    pub launch_spec: LaunchSpecRef,
    /// False when the group already existed (nothing changed).
    pub created: bool,
}

/// What is left on this machine: used by tests and `gc` to prove nothing leaked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct LeakReport {
    /// Instances whose process is alive.
    pub live_processes: Vec<InstanceId>,
    /// Instances whose root directory is on disk.
    pub roots: Vec<InstanceId>,
    /// Every instance the daemon knows, terminated ones included.
    pub instances: Vec<Instance>,
}

/// Request counters of one group's balancer since the daemon started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct BalancerStats {
    pub proxied: u64,
    /// Answered 503 (no healthy target) or failed upstream.
    pub failed: u64,
    /// Requests retried on another target after a connection failure.
    pub retried: u64,
}

/// One request to the daemon.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    Ping,
    Shutdown,
    /// Stop the fleet, as `shutdown` does, when this connection closes: for
    /// a fleet that must not outlive the process that asked (`repave demo`
    /// without `--keep`), however that process ends.
    Tether,
    EnsureGroup {
        setup: GroupSetup,
    },
    ImportImage {
        source: ImageSource,
        name: String,
        tags: Tags,
    },
    LeakReport,
    BalancerAddress {
        group: String,
    },
    BalancerStats {
        group: String,
    },
    DescribeImage {
        id: ImageId,
    },
    CreateImage {
        req: CreateImageRequest,
    },
    DeregisterImage {
        id: ImageId,
    },
    ListImages {
        tags: Tags,
    },
    /// Every image a launch spec version or a live instance points at.
    ReferencedImages,
    TagImage {
        id: ImageId,
        tags: Tags,
    },
    Launch {
        req: LaunchRequest,
    },
    DescribeInstances {
        ids: Vec<InstanceId>,
    },
    ListInstances {
        tags: Tags,
    },
    StopInstance {
        id: InstanceId,
    },
    StartInstance {
        id: InstanceId,
    },
    RebootInstance {
        id: InstanceId,
    },
    TerminateInstance {
        id: InstanceId,
    },
    ProbeHealth {
        id: InstanceId,
        path: String,
    },
    SendCommand {
        req: CommandRequest,
    },
    CommandResult {
        id: CommandId,
    },
    GetParameter {
        name: String,
    },
    PutParameter {
        name: String,
        value: String,
        description: Option<String>,
    },
    ParameterHistory {
        name: String,
    },
    LabelParameterVersion {
        name: String,
        version: u64,
        labels: Vec<String>,
    },
    DescribeGroup {
        name: String,
    },
    DescribeLaunchSpec {
        spec: LaunchSpecRef,
    },
    CreateLaunchSpecVersion {
        base: LaunchSpecRef,
        image: ImageId,
    },
    SetGroupLaunchSpec {
        group: String,
        spec: LaunchSpecRef,
    },
    SetDesiredCapacity {
        group: String,
        desired: u32,
    },
    TerminateGroupInstance {
        group: String,
        instance: InstanceId,
        decrement: bool,
    },
    SetInstanceProtection {
        group: String,
        instance: InstanceId,
        protected: bool,
    },
    TargetHealth {
        group: String,
    },
    DeregisterTarget {
        group: String,
        instance: InstanceId,
    },
    RegisterTarget {
        group: String,
        instance: InstanceId,
    },
}

/// The daemon's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "value", rename_all = "snake_case")]
pub enum Response {
    Unit,
    Pong { pid: u32 },
    GroupSetup(GroupSetupResult),
    ImageId(ImageId),
    ImageIds(Vec<ImageId>),
    Image(Image),
    Images(Vec<Image>),
    Instance(Instance),
    Instances(Vec<Instance>),
    Health(HealthProbe),
    CommandId(CommandId),
    CommandResult(CommandResult),
    Parameter(Parameter),
    Parameters(Vec<Parameter>),
    Version(u64),
    Group(Group),
    LaunchSpec(LaunchSpec),
    LaunchSpecRef(LaunchSpecRef),
    Targets(Vec<TargetHealth>),
    Leaks(LeakReport),
    Address(String),
    Stats(BalancerStats),
    Error { kind: ErrorKind, message: String },
}
