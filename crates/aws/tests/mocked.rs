//! What moto can't produce — pending images, in-progress commands,
//! throttling, draining targets, Patch Manager results, Windows Update
//! output — through canned HTTP responses: the real SDK clients with their
//! real (de)serializers, retry and error handling, and a replaying HTTP
//! client instead of the network.

use aws_config::{BehaviorVersion, Region};
use aws_sdk_ec2::config::Credentials;
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_runtime_api::http::StatusCode;
use aws_smithy_types::body::SdkBody;
use repave_aws::{AwsOptions, AwsProvider};
use repave_core::provider::{
    CommandDocument, CommandRequest, CommandStatus, Commands, ImageState, Images, InstallReport, TargetState, Traffic,
};
use repave_core::{CommandId, ErrorKind, ImageId, InstanceId};
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Replays (status, body) pairs in order and records request bodies.
#[derive(Debug, Clone, Default)]
struct Replay {
    responses: Arc<Mutex<VecDeque<(u16, String)>>>,
    requests: Arc<Mutex<Vec<String>>>,
}

impl Replay {
    fn new(responses: &[(u16, &str)]) -> Replay {
        let r = Replay::default();
        r.responses
            .lock()
            .unwrap()
            .extend(responses.iter().map(|(s, b)| (*s, b.to_string())));
        r
    }
    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

impl HttpConnector for Replay {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let body = request
            .body()
            .bytes()
            .map(|b| String::from_utf8_lossy(b).to_string())
            .unwrap_or_default();
        self.requests.lock().unwrap().push(body);
        let (status, body) = self
            .responses
            .lock()
            .unwrap()
            .pop_front()
            .expect("a canned response for every request");
        let resp = HttpResponse::new(StatusCode::try_from(status).expect("status"), SdkBody::from(body));
        HttpConnectorFuture::ready(Ok(resp))
    }
}

impl HttpClient for Replay {
    fn http_connector(&self, _: &HttpConnectorSettings, _: &RuntimeComponents) -> SharedHttpConnector {
        SharedHttpConnector::new(self.clone())
    }
}

async fn provider(replay: &Replay, retries: bool, options: AwsOptions) -> AwsProvider {
    let retry = if retries {
        // Standard mode here: adaptive mode's client-side rate limiter,
        // fed two throttles and no measured send rate, holds the next
        // attempt back for ~25 s (as it would on AWS), which says nothing
        // about classification and counting.
        repave_aws::retry_config()
            .with_retry_mode(aws_config::retry::RetryMode::Standard)
            .with_initial_backoff(Duration::from_millis(1))
    } else {
        aws_config::retry::RetryConfig::disabled()
    };
    let sdk = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("a", "b", None, None, "test"))
        .http_client(replay.clone())
        .retry_config(retry)
        .load()
        .await;
    AwsProvider::from_sdk_config(&sdk, options)
}

const PENDING_IMAGE: &str = r#"<DescribeImagesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">
<requestId>r1</requestId><imagesSet><item><imageId>ami-0pending</imageId><imageState>pending</imageState>
<name>repave-web-r1</name><creationDate>2026-01-02T03:04:05.000Z</creationDate>
<tagSet><item><key>repave:run</key><value>r1</value></item></tagSet></item></imagesSet></DescribeImagesResponse>"#;

const THROTTLED_EC2: &str = r#"<Response><Errors><Error><Code>RequestLimitExceeded</Code><Message>Request limit exceeded.</Message></Error></Errors><RequestID>r2</RequestID></Response>"#;

#[tokio::test]
async fn pending_image_is_pending() {
    let replay = Replay::new(&[(200, PENDING_IMAGE)]);
    let p = provider(&replay, false, AwsOptions::default()).await;
    let img = p.describe_image(&ImageId::new("ami-0pending")).await.expect("image");
    assert_eq!(img.state, ImageState::Pending);
    assert_eq!(img.tags.get("repave:run").map(String::as_str), Some("r1"));
    assert_eq!(img.created_at.millis(), 1_767_323_045_000);
    assert_eq!(p.api_calls().get("DescribeImages"), Some(&1));
}

#[tokio::test]
async fn throttling_is_classified_with_its_code() {
    let replay = Replay::new(&[(503, THROTTLED_EC2)]);
    let p = provider(&replay, false, AwsOptions::default()).await;
    let err = p.describe_image(&ImageId::new("ami-1")).await.expect_err("throttled");
    assert_eq!(err.kind, ErrorKind::Throttled);
    assert!(err.message.starts_with("RequestLimitExceeded"), "{err}");
    assert_eq!(err.operation, "DescribeImages");
}

#[tokio::test]
async fn sdk_retries_throttling_and_counts_every_attempt() {
    let replay = Replay::new(&[(503, THROTTLED_EC2), (503, THROTTLED_EC2), (200, PENDING_IMAGE)]);
    let p = provider(&replay, true, AwsOptions::default()).await;
    let img = p
        .describe_image(&ImageId::new("ami-0pending"))
        .await
        .expect("retried to success");
    assert_eq!(img.state, ImageState::Pending);
    assert_eq!(p.api_calls().get("DescribeImages"), Some(&3));
    use repave_core::provider::Provider;
    assert_eq!(
        p.throttled_calls().get("DescribeImages"),
        Some(&2),
        "both throttled attempts counted"
    );
}

#[tokio::test]
async fn not_found_and_server_errors_are_classified() {
    let not_found = r#"<Response><Errors><Error><Code>InvalidAMIID.NotFound</Code><Message>The image id '[ami-1]' does not exist</Message></Error></Errors><RequestID>r</RequestID></Response>"#;
    let internal = r#"<Response><Errors><Error><Code>InternalError</Code><Message>oops</Message></Error></Errors><RequestID>r</RequestID></Response>"#;
    let replay = Replay::new(&[(400, not_found), (500, internal)]);
    let p = provider(&replay, false, AwsOptions::default()).await;
    let e = p.describe_image(&ImageId::new("ami-1")).await.expect_err("not found");
    assert_eq!(e.kind, ErrorKind::NotFound);
    assert!(e.message.contains("InvalidAMIID.NotFound"));
    let e = p.describe_image(&ImageId::new("ami-1")).await.expect_err("internal");
    assert_eq!(e.kind, ErrorKind::Transient);
}

#[tokio::test]
async fn in_progress_and_unrecorded_commands_are_not_done() {
    let in_progress = r#"{"CommandId":"c1","InstanceId":"i-1","Status":"InProgress","ResponseCode":-1,"StandardOutputContent":"","StandardErrorContent":""}"#;
    let missing = r#"{"__type":"InvocationDoesNotExist","message":"no invocation"}"#;
    let replay = Replay::new(&[(400, missing), (200, in_progress)]);
    let p = provider(&replay, false, AwsOptions::default()).await;
    let id = CommandId::new("c1/i-1/shell");
    let r = p.command_result(&id).await.expect("pending");
    assert_eq!(r.status, CommandStatus::Pending);
    let r = p.command_result(&id).await.expect("in progress");
    assert_eq!(r.status, CommandStatus::InProgress);
    assert!(!r.status.is_terminal());
    assert_eq!(r.exit_code, None);
}

#[tokio::test]
async fn ssm_throttling_is_throttled() {
    let throttled = r#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#;
    let replay = Replay::new(&[(400, throttled)]);
    let p = provider(&replay, false, AwsOptions::default()).await;
    let e = p
        .command_result(&CommandId::new("c1/i-1/shell"))
        .await
        .expect_err("throttled");
    assert_eq!(e.kind, ErrorKind::Throttled);
    assert!(e.message.starts_with("ThrottlingException"), "{e}");
}

const TWO_TARGET_GROUPS: &str = r#"<DescribeAutoScalingGroupsResponse xmlns="http://autoscaling.amazonaws.com/doc/2011-01-01/">
<DescribeAutoScalingGroupsResult><AutoScalingGroups><member><AutoScalingGroupName>web</AutoScalingGroupName>
<MinSize>1</MinSize><MaxSize>4</MaxSize><DesiredCapacity>2</DesiredCapacity><DefaultCooldown>300</DefaultCooldown>
<AvailabilityZones><member>us-east-1a</member></AvailabilityZones><HealthCheckType>ELB</HealthCheckType>
<CreatedTime>2026-01-01T00:00:00Z</CreatedTime>
<TargetGroupARNs><member>arn:aws:elasticloadbalancing:us-east-1:1:targetgroup/a/1</member><member>arn:aws:elasticloadbalancing:us-east-1:1:targetgroup/b/2</member></TargetGroupARNs>
<Instances/></member></AutoScalingGroups></DescribeAutoScalingGroupsResult>
<ResponseMetadata><RequestId>r</RequestId></ResponseMetadata></DescribeAutoScalingGroupsResponse>"#;

fn target_health(entries: &[(&str, &str)]) -> String {
    let members: String = entries
        .iter()
        .map(|(id, state)| format!("<member><Target><Id>{id}</Id><Port>80</Port></Target><TargetHealth><State>{state}</State></TargetHealth></member>"))
        .collect();
    format!(
        r#"<DescribeTargetHealthResponse xmlns="http://elasticloadbalancing.amazonaws.com/doc/2015-12-01/"><DescribeTargetHealthResult><TargetHealthDescriptions>{members}</TargetHealthDescriptions></DescribeTargetHealthResult><ResponseMetadata><RequestId>r</RequestId></ResponseMetadata></DescribeTargetHealthResponse>"#
    )
}

#[tokio::test]
async fn draining_targets_report_the_worst_state_across_target_groups() {
    let a = target_health(&[("i-1", "healthy"), ("i-2", "draining"), ("i-3", "healthy")]);
    let b = target_health(&[("i-1", "initial"), ("i-2", "healthy"), ("i-3", "healthy")]);
    let replay = Replay::new(&[(200, TWO_TARGET_GROUPS), (200, &a), (200, &b)]);
    let p = provider(&replay, false, AwsOptions::default()).await;
    let health = p.target_health("web").await.expect("health");
    let by_id: BTreeMap<String, TargetState> = health.iter().map(|t| (t.instance.to_string(), t.state)).collect();
    assert_eq!(by_id["i-1"], TargetState::Initial);
    assert_eq!(by_id["i-2"], TargetState::Draining);
    assert_eq!(by_id["i-3"], TargetState::Healthy);
    let calls = p.api_calls();
    assert_eq!(calls.get("DescribeTargetHealth"), Some(&2));
    assert_eq!(calls.get("DescribeAutoScalingGroups"), Some(&1));
}

fn describe_instance(platform: Option<&str>) -> String {
    let platform = platform
        .map(|p| format!("<platform>{p}</platform>"))
        .unwrap_or_default();
    format!(
        r#"<DescribeInstancesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"><requestId>r</requestId><reservationSet><item><reservationId>r-1</reservationId><instancesSet><item><instanceId>i-1</instanceId><imageId>ami-1</imageId><instanceState><code>16</code><name>running</name></instanceState>{platform}</item></instancesSet></item></reservationSet></DescribeInstancesResponse>"#
    )
}

const SENT: &str = r#"{"Command":{"CommandId":"c9","Status":"Pending"}}"#;

#[tokio::test]
async fn shell_env_is_exported_quoted_not_spliced() {
    let linux = describe_instance(None);
    // DescribeInstances (the platform), ListCommands (nothing sent with
    // this token yet), SendCommand.
    let replay = Replay::new(&[(200, &linux), (200, r#"{"Commands":[]}"#), (200, SENT)]);
    let p = provider(&replay, false, AwsOptions::default()).await;
    let mut env = BTreeMap::new();
    env.insert("NAME".to_string(), "o'brien; rm -rf /".to_string());
    let req = CommandRequest {
        instance: InstanceId::new("i-1"),
        document: CommandDocument::Shell {
            script: "echo \"$NAME\"".into(),
            env,
        },
        timeout: Duration::from_secs(60),
        token: "t".into(),
    };
    let id = p.send_command(req).await.expect("sent");
    assert_eq!(id.as_str(), "c9/i-1/shell");
    let body: serde_json::Value = serde_json::from_str(&replay.requests()[2]).expect("json body");
    assert_eq!(body["Comment"], "repave t");
    assert_eq!(body["DocumentName"], "AWS-RunShellScript");
    assert_eq!(body["InstanceIds"], serde_json::json!(["i-1"]));
    assert_eq!(body["Parameters"]["commands"][0], r"export NAME='o'\''brien; rm -rf /'");
    assert_eq!(body["Parameters"]["commands"][1], "echo \"$NAME\"");
}

fn describe_builder() -> String {
    r#"<DescribeInstancesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"><requestId>r</requestId><reservationSet><item><reservationId>r-1</reservationId><instancesSet><item><instanceId>i-1</instanceId><imageId>ami-1</imageId><instanceState><code>16</code><name>running</name></instanceState><tagSet><item><key>repave:run</key><value>r1</value></item><item><key>repave:pipeline</key><value>web</value></item></tagSet></item></instancesSet></item></reservationSet></DescribeInstancesResponse>"#.to_string()
}

/// A patch install's result comes from Patch Manager's structured answers:
/// only the run baseline's approved patches count (curl, installed before
/// this bake, is not in the manifest), a failed one is named, and a reboot
/// is required when the command exits 3010 even though no patch says
/// InstalledPendingReboot. The text output is kept as a log only.
#[tokio::test]
async fn install_results_come_from_patch_manager_and_exit_3010() {
    let done = r#"{"CommandId":"c9","InstanceId":"i-1","Status":"Success","ResponseCode":3010,"DocumentName":"AWS-RunPatchBaseline","StandardOutputContent":"install log","StandardErrorContent":""}"#;
    let image = r#"<DescribeImagesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"><requestId>r</requestId><imagesSet><item><imageId>ami-1</imageId><name>al2023-ami-2023.5</name><platformDetails>Linux/UNIX</platformDetails><imageState>available</imageState></item></imagesSet></DescribeImagesResponse>"#;
    let baselines = r#"{"BaselineIdentities":[{"BaselineId":"pb-1","BaselineName":"repave-web-r1","OperatingSystem":"AMAZON_LINUX_2023"}]}"#;
    let baseline =
        r#"{"BaselineId":"pb-1","Name":"repave-web-r1","ApprovedPatches":["openssl.x86_64","glibc.x86_64"]}"#;
    let patches = r#"{"Patches":[
        {"Title":"openssl.x86_64:1:3.0.8-1","KBId":"openssl.x86_64","Classification":"Security","Severity":"Critical","State":"Installed","InstalledTime":0},
        {"Title":"glibc.x86_64","KBId":"glibc.x86_64","Classification":"Security","Severity":"Important","State":"Failed","InstalledTime":0},
        {"Title":"curl.x86_64","KBId":"curl.x86_64","Classification":"Security","Severity":"Important","State":"Installed","InstalledTime":0}
    ]}"#;
    let states = r#"{"InstancePatchStates":[{"InstanceId":"i-1","PatchGroup":"repave-web-r1","BaselineId":"pb-1","OperationStartTime":0,"OperationEndTime":0,"Operation":"Install","InstalledPendingRebootCount":0}]}"#;
    let builder = describe_builder();
    let replay = Replay::new(&[
        (200, done),
        (200, &builder),
        (200, image),
        (200, &builder),
        (200, baselines),
        (200, baseline),
        (200, patches),
        (200, states),
    ]);
    let p = provider(&replay, false, AwsOptions::default()).await;
    let r = p
        .command_result(&repave_core::CommandId::new("c9/i-1/install"))
        .await
        .expect("result");
    assert_eq!(r.status, CommandStatus::Success);
    let report: InstallReport = serde_json::from_str(&r.stdout).expect("install report JSON");
    assert_eq!(
        report.installed.iter().map(|u| u.id.as_str()).collect::<Vec<_>>(),
        vec!["openssl.x86_64"]
    );
    assert_eq!(report.failed, vec!["glibc.x86_64".to_string()]);
    assert!(report.reboot_required, "exit code 3010");
    assert!(r.stderr.contains("install log"), "document log kept: {}", r.stderr);
    assert_eq!(p.api_calls().get("DescribeInstancePatchStates"), Some(&1));
}

fn refreshes(status: &str, pct: u32) -> String {
    format!(
        r#"<DescribeInstanceRefreshesResponse xmlns="http://autoscaling.amazonaws.com/doc/2011-01-01/"><DescribeInstanceRefreshesResult><InstanceRefreshes><member><InstanceRefreshId>rf-1</InstanceRefreshId><AutoScalingGroupName>web</AutoScalingGroupName><Status>{status}</Status><PercentageComplete>{pct}</PercentageComplete><InstancesToUpdate>6</InstancesToUpdate><StatusReason>Waiting for instances to warm up</StatusReason></member></InstanceRefreshes></DescribeInstanceRefreshesResult><ResponseMetadata><RequestId>r</RequestId></ResponseMetadata></DescribeInstanceRefreshesResponse>"#
    )
}

fn group_on_version(version: &str) -> String {
    format!(
        r#"<DescribeAutoScalingGroupsResponse xmlns="http://autoscaling.amazonaws.com/doc/2011-01-01/"><DescribeAutoScalingGroupsResult><AutoScalingGroups><member><AutoScalingGroupName>web</AutoScalingGroupName><LaunchTemplate><LaunchTemplateId>lt-1</LaunchTemplateId><Version>{version}</Version></LaunchTemplate><MinSize>1</MinSize><MaxSize>4</MaxSize><DesiredCapacity>2</DesiredCapacity><DefaultCooldown>300</DefaultCooldown><AvailabilityZones><member>us-east-1a</member></AvailabilityZones><HealthCheckType>EC2</HealthCheckType><CreatedTime>2024-01-01T00:00:00Z</CreatedTime></member></AutoScalingGroups></DescribeAutoScalingGroupsResult><ResponseMetadata><RequestId>r</RequestId></ResponseMetadata></DescribeAutoScalingGroupsResponse>"#
    )
}

fn version_4() -> repave_core::provider::LaunchSpecRef {
    repave_core::provider::LaunchSpecRef {
        name: "lt-1".into(),
        version: 4,
    }
}

#[tokio::test]
async fn instance_refresh_is_started_with_the_policy_and_watched() {
    use repave_aws::refresh::RefreshState;
    let started = r#"<StartInstanceRefreshResponse xmlns="http://autoscaling.amazonaws.com/doc/2011-01-01/"><StartInstanceRefreshResult><InstanceRefreshId>rf-1</InstanceRefreshId></StartInstanceRefreshResult><ResponseMetadata><RequestId>r</RequestId></ResponseMetadata></StartInstanceRefreshResponse>"#;
    let running = refreshes("InProgress", 40);
    let done = refreshes("Successful", 100);
    let replay = Replay::new(&[
        (200, &group_on_version("3")),
        (200, started),
        (200, &running),
        (200, &done),
    ]);
    let p = provider(&replay, false, AwsOptions::default()).await;
    let rollout = repave_core::config::Rollout {
        min_healthy_percent: 90,
        ..Default::default()
    };
    let id = p
        .start_instance_refresh("web", &version_4(), &rollout)
        .await
        .expect("started");
    assert_eq!(id, "rf-1");
    let body = &replay.requests()[1];
    assert!(body.contains("Action=StartInstanceRefresh"), "{body}");
    assert!(body.contains("Preferences.MinHealthyPercentage=90"), "{body}");
    // The new version is the refresh's target; the group is not moved first,
    // so AWS may roll back to version 3 (a numbered version: allowed).
    assert!(body.contains("DesiredConfiguration.LaunchTemplate.Version=4"), "{body}");
    assert!(body.contains("Preferences.AutoRollback=true"), "{body}");
    assert!(!body.contains("InstanceWarmup"), "warmup only when configured: {body}");
    assert!(
        !replay
            .requests()
            .iter()
            .any(|b| b.contains("Action=UpdateAutoScalingGroup")),
        "the group is not moved before the refresh"
    );
    let s = p.instance_refresh("web", &id).await.expect("status");
    assert_eq!(
        (s.state, s.percentage_complete, s.instances_to_update),
        (RefreshState::InProgress, 40, 6)
    );
    assert!(!s.state.is_terminal());
    let s = p.instance_refresh("web", &id).await.expect("status");
    assert_eq!(s.state, RefreshState::Successful);
    assert!(s.state.is_terminal());
}

#[tokio::test]
async fn a_refresh_already_running_is_adopted() {
    let in_progress = r#"<ErrorResponse xmlns="http://autoscaling.amazonaws.com/doc/2011-01-01/"><Error><Type>Sender</Type><Code>InstanceRefreshInProgress</Code><Message>An Instance Refresh is already in progress and blocks the execution of this Instance Refresh.</Message></Error><RequestId>r</RequestId></ErrorResponse>"#;
    let running = refreshes("InProgress", 10);
    let replay = Replay::new(&[(200, &group_on_version("$Latest")), (400, in_progress), (200, &running)]);
    let p = provider(&replay, false, AwsOptions::default()).await;
    let id = p
        .start_instance_refresh("web", &version_4(), &repave_core::config::Rollout::default())
        .await
        .expect("adopted");
    assert_eq!(id, "rf-1");
    // On $Latest AWS refuses AutoRollback: it is not asked for.
    assert!(
        replay.requests()[1].contains("Preferences.AutoRollback=false"),
        "{}",
        replay.requests()[1]
    );
}

#[tokio::test]
async fn from_config_applies_region_profile_and_endpoint() {
    use repave_core::provider::Provider;
    let cfg = repave_core::config::AwsProvider {
        region: Some("eu-west-1".into()),
        profile: Some("repave-test-profile-that-does-not-exist".into()),
        endpoint_url: Some("http://127.0.0.1:9".into()),
        ..Default::default()
    };
    let p = AwsProvider::from_config(&cfg, AwsOptions::default())
        .await
        .expect("built");
    assert_eq!(p.name(), "aws");
    assert!(p.api_calls().is_empty());
}
