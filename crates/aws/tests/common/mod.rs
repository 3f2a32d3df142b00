//! Fixtures for the moto tests: a provider bound to a fresh moto account
//! (the `x-moto-account-id` header isolates every test), and a fleet (VPC,
//! subnets, golden image, parameter, launch template or configuration, ALB
//! target group, Auto Scaling group) built with the SDK directly.

#![allow(dead_code)]

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_ec2::config::Credentials;
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::HttpRequest;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use repave_aws::{AwsOptions, AwsProvider};
use std::sync::atomic::{AtomicU64, Ordering};

/// The moto endpoint; tests fail (never skip) without it.
pub fn endpoint() -> String {
    std::env::var("REPAVE_MOTO_ENDPOINT").unwrap_or_else(|_| {
        panic!(
            "REPAVE_MOTO_ENDPOINT is not set: start moto with `export REPAVE_MOTO_ENDPOINT=$(scripts/moto.sh start)`"
        )
    })
}

/// A fresh 12-digit account id per call.
pub fn new_account() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos() as u64;
    let n = N.fetch_add(1, Ordering::SeqCst);
    format!(
        "{:012}",
        (t / 1000 % 1_000_000_000) * 1000 + n % 1000 + std::process::id() as u64 % 7
    )
}

#[derive(Debug, Clone)]
struct AccountClient {
    inner: SharedHttpClient,
    account: String,
}

#[derive(Debug)]
struct AccountConnector {
    inner: SharedHttpConnector,
    account: String,
}

impl HttpConnector for AccountConnector {
    fn call(&self, mut request: HttpRequest) -> HttpConnectorFuture {
        request.headers_mut().insert("x-moto-account-id", self.account.clone());
        self.inner.call(request)
    }
}

impl HttpClient for AccountClient {
    fn http_connector(&self, settings: &HttpConnectorSettings, components: &RuntimeComponents) -> SharedHttpConnector {
        SharedHttpConnector::new(AccountConnector {
            inner: self.inner.http_connector(settings, components),
            account: self.account.clone(),
        })
    }
}

/// SDK config for moto in `account`.
pub async fn sdk_config(account: &str) -> SdkConfig {
    sdk_config_in(account, "us-east-1").await
}

/// SDK config for moto in `account` and `region`.
pub async fn sdk_config_in(account: &str, region: &str) -> SdkConfig {
    let base = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(region.to_string()))
        .endpoint_url(endpoint())
        .credentials_provider(Credentials::new("testing", "testing", None, None, "moto"))
        .retry_config(repave_aws::retry_config())
        .load()
        .await;
    use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};
    let inner = aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::AwsLc))
        .build_https();
    base.to_builder()
        .http_client(AccountClient {
            inner,
            account: account.to_string(),
        })
        .build()
}

pub struct Moto {
    pub account: String,
    pub sdk: SdkConfig,
    pub ec2: aws_sdk_ec2::Client,
    pub asg: aws_sdk_autoscaling::Client,
    pub ssm: aws_sdk_ssm::Client,
    pub elb: aws_sdk_elasticloadbalancingv2::Client,
    pub clb: aws_sdk_elasticloadbalancing::Client,
    pub iam: aws_sdk_iam::Client,
}

impl Moto {
    pub async fn new() -> Moto {
        Self::in_region("us-east-1").await
    }

    /// A fresh account, its clients in `region`.
    pub async fn in_region(region: &str) -> Moto {
        Self::of_account(&new_account(), region).await
    }

    /// Clients of an existing account (a child process of a test).
    pub async fn of_account(account: &str, region: &str) -> Moto {
        let account = account.to_string();
        let sdk = sdk_config_in(&account, region).await;
        Moto {
            ec2: aws_sdk_ec2::Client::new(&sdk),
            asg: aws_sdk_autoscaling::Client::new(&sdk),
            ssm: aws_sdk_ssm::Client::new(&sdk),
            elb: aws_sdk_elasticloadbalancingv2::Client::new(&sdk),
            clb: aws_sdk_elasticloadbalancing::Client::new(&sdk),
            iam: aws_sdk_iam::Client::new(&sdk),
            account,
            sdk,
        }
    }

    /// The provider under test, in this account, as against AWS: the
    /// harness models Patch Manager.
    pub fn provider(&self) -> AwsProvider {
        AwsProvider::from_sdk_config(
            &self.sdk,
            AwsOptions {
                empty_patch_output_is_clean: false,
            },
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpecKind {
    Template,
    Configuration,
    /// A launch template inside a MixedInstancesPolicy: on-demand base +
    /// spot over two instance types, the usual production shape.
    Mixed,
}

/// The fleet a test wants. Timings are the resources' own (target group
/// health checks, deregistration delay, lifecycle hooks): the harness
/// reads them, so tests give them seconds, not AWS's defaults.
#[derive(Debug, Clone)]
pub struct FleetSpec {
    pub kind: SpecKind,
    pub desired: i32,
    pub min: i32,
    pub max: i32,
    /// How the group names its template version: "1", "$Latest", "$Default".
    pub version: String,
    pub target_groups: usize,
    pub windows: bool,
    /// A launch lifecycle hook: heartbeat seconds and default result.
    pub launch_hook: Option<(i32, &'static str)>,
    pub grace_period: i32,
    pub default_warmup: Option<i32>,
    /// Behind a Classic Load Balancer (`LoadBalancerNames`, connection
    /// draining for DEREGISTRATION_DELAY) instead of target groups.
    pub classic_elb: bool,
    /// A termination lifecycle hook: heartbeat seconds and default result.
    pub termination_hook: Option<(i32, &'static str)>,
    /// New instances protected from scale in.
    pub protect_new: bool,
    /// The launch spec names an instance profile ([`INSTANCE_PROFILE`]),
    /// as a fleet reachable by SSM does.
    pub instance_profile: bool,
    /// A warm pool of this many stopped instances (MinSize, and
    /// MaxGroupPreparedCapacity = desired + this many).
    pub warm_pool: Option<i32>,
}

impl FleetSpec {
    pub fn new(kind: SpecKind, desired: i32) -> FleetSpec {
        FleetSpec {
            kind,
            desired,
            min: 1,
            max: desired * 2 + 2,
            version: "1".into(),
            target_groups: 1,
            windows: false,
            launch_hook: None,
            grace_period: 2,
            default_warmup: None,
            classic_elb: false,
            termination_hook: None,
            protect_new: false,
            instance_profile: true,
            warm_pool: None,
        }
    }
}

/// What the fixture built.
pub struct Fleet {
    pub vpc: String,
    pub subnets: Vec<String>,
    pub security_group: String,
    pub golden: String,
    pub parameter: String,
    pub group: String,
    pub target_group: String,
    pub target_groups: Vec<String>,
    /// The Classic Load Balancer's name, with `FleetSpec::classic_elb`.
    pub classic_elb: Option<String>,
    pub launch_template: Option<String>,
    pub launch_configuration: Option<String>,
}

/// The instance profile of the fixture's launch spec (and its role's name).
pub const INSTANCE_PROFILE: &str = "web-instance";

pub const USER_DATA: &str = "IyEvYmluL3NoCmVjaG8gaGVsbG8K"; // "#!/bin/sh\necho hello\n"
pub const DESCRIPTION: &str = "golden image of the web fleet";
/// Target group health checks every 2 s, healthy after 2: 4 s.
pub const HEALTH_INTERVAL: i32 = 2;
pub const HEALTH_THRESHOLD: i32 = 2;
/// Deregistration delay of the fixture's target groups.
pub const DEREGISTRATION_DELAY: i32 = 2;

/// Tell the harness something about an account (`/_harness/account`).
pub async fn harness_account(account: &str, settings: serde_json::Value) {
    let mut body = settings;
    body["account"] = serde_json::Value::String(account.to_string());
    harness_post("/_harness/account", &body).await;
}

/// The patches instances launched from `image` (or `"*"`: any image of
/// the account) have: see `crates/aws/harness/ssm_patching.py`.
pub async fn harness_patches(account: &str, image: &str, spec: serde_json::Value) {
    let mut body = spec;
    body["account"] = serde_json::Value::String(account.to_string());
    body["image"] = serde_json::Value::String(image.to_string());
    harness_post("/_harness/patches", &body).await;
}

/// POST to the harness's control API; the JSON it answers.
async fn harness_post(path: &str, body: &serde_json::Value) -> serde_json::Value {
    let url = endpoint();
    let addr = url.trim_start_matches("http://").to_string();
    let body = body.to_string();
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(&addr).await.expect("harness answers");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).await.expect("read");
    assert!(
        out.starts_with("HTTP/1.1 200") || out.starts_with("HTTP/1.0 200"),
        "harness control {path}: {out}"
    );
    let json = out.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or_default();
    serde_json::from_str(json).unwrap_or(serde_json::Value::Null)
}

impl Moto {
    /// An AMI owned by this account: launch from any public AMI moto
    /// ships, then CreateImage, then wait until it is available (the
    /// harness keeps new images pending for a few seconds, as AWS does).
    pub async fn make_image(&self, name: &str, subnet: &str) -> String {
        self.make_image_on(name, subnet, false).await
    }

    /// Like [`Moto::make_image`], from a Windows AMI when `windows`.
    pub async fn make_image_on(&self, name: &str, subnet: &str, windows: bool) -> String {
        let public = self
            .ec2
            .describe_images()
            .owners("amazon")
            .send()
            .await
            .expect("describe public images");
        let src = public
            .images()
            .iter()
            .filter(|i| i.platform().is_some_and(|p| p.as_str() == "windows") == windows)
            .find_map(|i| i.image_id())
            .expect("moto ships public images")
            .to_string();
        let run = self
            .ec2
            .run_instances()
            .image_id(&src)
            .min_count(1)
            .max_count(1)
            .subnet_id(subnet)
            .instance_type(aws_sdk_ec2::types::InstanceType::T3Micro)
            .send()
            .await
            .expect("run instance");
        let id = run.instances()[0].instance_id().expect("id").to_string();
        // The description says the OS, as Amazon's and most golden images'
        // do: PlatformDetails alone ("Linux/UNIX") does not tell Amazon
        // Linux from Ubuntu.
        let img = self
            .ec2
            .create_image()
            .instance_id(&id)
            .name(name)
            .description(if windows {
                "Windows Server 2022 golden image"
            } else {
                "Amazon Linux 2023 golden image"
            })
            .send()
            .await
            .expect("create image");
        self.ec2
            .terminate_instances()
            .instance_ids(&id)
            .send()
            .await
            .expect("terminate");
        let img = img.image_id().expect("image id").to_string();
        self.wait_image_available(&img).await;
        img
    }

    pub async fn wait_image_available(&self, id: &str) {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            if let Ok(out) = self.ec2.describe_images().image_ids(id).send().await {
                if out.images().first().and_then(|i| i.state()).map(|s| s.as_str()) == Some("available") {
                    return;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "image {id} never became available"
            );
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        }
    }

    /// Tag an image so that images baked from it break the application
    /// (the harness's application model: its instances fail health checks).
    pub async fn bakes_broken(&self, image: &str) {
        self.ec2
            .create_tags()
            .resources(image)
            .tags(
                aws_sdk_ec2::types::Tag::builder()
                    .key("harness:bakes")
                    .value("broken")
                    .build(),
            )
            .send()
            .await
            .expect("tag");
    }

    pub async fn fleet(&self, kind: SpecKind, desired: i32) -> Fleet {
        self.fleet_with(FleetSpec::new(kind, desired)).await
    }

    /// A fleet whose golden image is Windows when `windows`.
    pub async fn fleet_on(&self, kind: SpecKind, desired: i32, windows: bool) -> Fleet {
        self.fleet_with(FleetSpec {
            windows,
            ..FleetSpec::new(kind, desired)
        })
        .await
    }

    /// An instance profile holding a role EC2 may assume, as the profile
    /// of a fleet that SSM manages is; its name.
    pub async fn instance_profile(&self, name: &str) -> String {
        const TRUST: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"ec2.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#;
        self.iam
            .create_role()
            .role_name(name)
            .assume_role_policy_document(TRUST)
            .send()
            .await
            .expect("instance role");
        self.iam
            .create_instance_profile()
            .instance_profile_name(name)
            .send()
            .await
            .expect("instance profile");
        self.iam
            .add_role_to_instance_profile()
            .instance_profile_name(name)
            .role_name(name)
            .send()
            .await
            .expect("role in profile");
        name.to_string()
    }

    async fn target_group(&self, vpc: &str, name: &str) -> String {
        use aws_sdk_elasticloadbalancingv2::types::{ProtocolEnum, TargetGroupAttribute, TargetTypeEnum};
        let tg = self
            .elb
            .create_target_group()
            .name(name)
            .protocol(ProtocolEnum::Http)
            .port(80)
            .vpc_id(vpc)
            .target_type(TargetTypeEnum::Instance)
            .health_check_path("/health")
            .health_check_interval_seconds(HEALTH_INTERVAL)
            .health_check_timeout_seconds(1)
            .healthy_threshold_count(HEALTH_THRESHOLD)
            .unhealthy_threshold_count(2)
            .send()
            .await
            .expect("target group");
        let arn = tg.target_groups()[0].target_group_arn().expect("tg arn").to_string();
        self.elb
            .modify_target_group_attributes()
            .target_group_arn(&arn)
            .attributes(
                TargetGroupAttribute::builder()
                    .key("deregistration_delay.timeout_seconds")
                    .value(DEREGISTRATION_DELAY.to_string())
                    .build(),
            )
            .send()
            .await
            .expect("deregistration delay");
        arn
    }

    /// A Classic Load Balancer with 1 s health checks (threshold 2) and
    /// connection draining for DEREGISTRATION_DELAY seconds.
    async fn classic_elb(&self, subnets: &[String], security_group: &str) -> String {
        use aws_sdk_elasticloadbalancing::types::{ConnectionDraining, HealthCheck, Listener, LoadBalancerAttributes};
        let name = "web-clb".to_string();
        self.clb
            .create_load_balancer()
            .load_balancer_name(&name)
            .listeners(
                Listener::builder()
                    .protocol("HTTP")
                    .load_balancer_port(80)
                    .instance_protocol("HTTP")
                    .instance_port(80)
                    .build()
                    .expect("listener"),
            )
            .set_subnets(Some(subnets.to_vec()))
            .security_groups(security_group)
            .send()
            .await
            .expect("classic load balancer");
        self.clb
            .configure_health_check()
            .load_balancer_name(&name)
            .health_check(
                HealthCheck::builder()
                    .target("HTTP:80/health")
                    .interval(1)
                    .timeout(1)
                    .healthy_threshold(HEALTH_THRESHOLD)
                    .unhealthy_threshold(2)
                    .build()
                    .expect("health check"),
            )
            .send()
            .await
            .expect("health check");
        self.clb
            .modify_load_balancer_attributes()
            .load_balancer_name(&name)
            .load_balancer_attributes(
                LoadBalancerAttributes::builder()
                    .connection_draining(
                        ConnectionDraining::builder()
                            .enabled(true)
                            .timeout(DEREGISTRATION_DELAY)
                            .build(),
                    )
                    .build(),
            )
            .send()
            .await
            .expect("connection draining");
        name
    }

    /// What the harness recorded for this account (`/_harness/report`).
    pub async fn harness_report(&self) -> serde_json::Value {
        harness_post("/_harness/report", &serde_json::json!({ "account": self.account })).await
    }

    pub async fn fleet_with(&self, spec: FleetSpec) -> Fleet {
        let vpc = self
            .ec2
            .create_vpc()
            .cidr_block("10.20.0.0/16")
            .send()
            .await
            .expect("vpc");
        let vpc = vpc.vpc().and_then(|v| v.vpc_id()).expect("vpc id").to_string();
        let mut subnets = Vec::new();
        let region = self
            .sdk
            .region()
            .map(|r| r.to_string())
            .unwrap_or_else(|| "us-east-1".into());
        for (i, az) in [format!("{region}a"), format!("{region}b")].iter().enumerate() {
            let s = self
                .ec2
                .create_subnet()
                .vpc_id(&vpc)
                .cidr_block(format!("10.20.{i}.0/24"))
                .availability_zone(az)
                .send()
                .await
                .expect("subnet");
            subnets.push(s.subnet().and_then(|s| s.subnet_id()).expect("subnet id").to_string());
        }
        let sg = self
            .ec2
            .create_security_group()
            .group_name("web")
            .description("web")
            .vpc_id(&vpc)
            .send()
            .await
            .expect("sg");
        let security_group = sg.group_id().expect("sg id").to_string();
        let golden = self.make_image_on("golden-v1", &subnets[0], spec.windows).await;
        let parameter = "/repave/web/latestAmi".to_string();
        self.ssm
            .put_parameter()
            .name(&parameter)
            .value(&golden)
            .r#type(aws_sdk_ssm::types::ParameterType::String)
            .description(DESCRIPTION)
            .send()
            .await
            .expect("parameter");

        let mut target_groups = Vec::new();
        for i in 0..spec.target_groups.max(1) {
            target_groups.push(self.target_group(&vpc, &format!("web-tg-{i}")).await);
        }
        let lb = self
            .elb
            .create_load_balancer()
            .name("web-alb")
            .set_subnets(Some(subnets.clone()))
            .security_groups(&security_group)
            .send()
            .await
            .expect("alb");
        let lb_arn = lb.load_balancers()[0].load_balancer_arn().expect("lb arn").to_string();
        self.elb
            .create_listener()
            .load_balancer_arn(&lb_arn)
            .protocol(aws_sdk_elasticloadbalancingv2::types::ProtocolEnum::Http)
            .port(80)
            .default_actions(
                aws_sdk_elasticloadbalancingv2::types::Action::builder()
                    .r#type(aws_sdk_elasticloadbalancingv2::types::ActionTypeEnum::Forward)
                    .target_group_arn(&target_groups[0])
                    .build(),
            )
            .send()
            .await
            .expect("listener");

        let group = "web-asg".to_string();
        let mut create = self
            .asg
            .create_auto_scaling_group()
            .auto_scaling_group_name(&group)
            .min_size(spec.min)
            .max_size(spec.max)
            .desired_capacity(spec.desired)
            .health_check_type("ELB")
            .health_check_grace_period(spec.grace_period)
            .set_default_instance_warmup(spec.default_warmup)
            .vpc_zone_identifier(subnets.join(","))
            .new_instances_protected_from_scale_in(spec.protect_new);
        let classic_elb = if spec.classic_elb {
            Some(self.classic_elb(&subnets, &security_group).await)
        } else {
            None
        };
        create = match &classic_elb {
            Some(name) => create.load_balancer_names(name),
            None => create.set_target_group_arns(Some(target_groups.clone())),
        };
        let (mut launch_template, mut launch_configuration) = (None, None);
        let profile = if spec.instance_profile {
            Some(self.instance_profile(INSTANCE_PROFILE).await)
        } else {
            None
        };
        match spec.kind {
            SpecKind::Template | SpecKind::Mixed => {
                self.ec2
                    .create_key_pair()
                    .key_name("web-key")
                    .send()
                    .await
                    .expect("key pair");
                let data = aws_sdk_ec2::types::RequestLaunchTemplateData::builder()
                    .image_id(&golden)
                    .instance_type(aws_sdk_ec2::types::InstanceType::T3Micro)
                    .security_group_ids(&security_group)
                    .set_iam_instance_profile(profile.as_ref().map(|p| {
                        aws_sdk_ec2::types::LaunchTemplateIamInstanceProfileSpecificationRequest::builder()
                            .name(p)
                            .build()
                    }))
                    .key_name("web-key")
                    .user_data(USER_DATA)
                    .metadata_options(
                        aws_sdk_ec2::types::LaunchTemplateInstanceMetadataOptionsRequest::builder()
                            .http_tokens(aws_sdk_ec2::types::LaunchTemplateHttpTokensState::Required)
                            .build(),
                    )
                    .tag_specifications(
                        aws_sdk_ec2::types::LaunchTemplateTagSpecificationRequest::builder()
                            .resource_type(aws_sdk_ec2::types::ResourceType::Instance)
                            .tags(aws_sdk_ec2::types::Tag::builder().key("app").value("web").build())
                            .build(),
                    )
                    .build();
                let lt = self
                    .ec2
                    .create_launch_template()
                    .launch_template_name("web-lt")
                    .launch_template_data(data)
                    .send()
                    .await
                    .expect("lt");
                let id = lt
                    .launch_template()
                    .and_then(|t| t.launch_template_id())
                    .expect("lt id")
                    .to_string();
                let lt_spec = aws_sdk_autoscaling::types::LaunchTemplateSpecification::builder()
                    .launch_template_id(&id)
                    .version(&spec.version)
                    .build();
                create = if spec.kind == SpecKind::Mixed {
                    use aws_sdk_autoscaling::types::{
                        InstancesDistribution, LaunchTemplate, LaunchTemplateOverrides, MixedInstancesPolicy,
                    };
                    create.mixed_instances_policy(
                        MixedInstancesPolicy::builder()
                            .launch_template(
                                LaunchTemplate::builder()
                                    .launch_template_specification(lt_spec)
                                    .overrides(LaunchTemplateOverrides::builder().instance_type("t3.micro").build())
                                    .overrides(LaunchTemplateOverrides::builder().instance_type("t3a.micro").build())
                                    .build(),
                            )
                            .instances_distribution(
                                InstancesDistribution::builder()
                                    .on_demand_base_capacity(1)
                                    .on_demand_percentage_above_base_capacity(25)
                                    .spot_allocation_strategy("price-capacity-optimized")
                                    .build(),
                            )
                            .build(),
                    )
                } else {
                    create.launch_template(lt_spec)
                };
                launch_template = Some(id);
            }
            SpecKind::Configuration => {
                self.asg
                    .create_launch_configuration()
                    .launch_configuration_name("web-lc")
                    .image_id(&golden)
                    .instance_type("t3.micro")
                    .security_groups(&security_group)
                    .set_iam_instance_profile(profile.clone())
                    .user_data(USER_DATA)
                    .send()
                    .await
                    .expect("lc");
                create = create.launch_configuration_name("web-lc");
                launch_configuration = Some("web-lc".to_string());
            }
        }
        create.send().await.expect("asg");
        if let Some((heartbeat, result)) = spec.launch_hook {
            self.asg
                .put_lifecycle_hook()
                .auto_scaling_group_name(&group)
                .lifecycle_hook_name("bootstrap")
                .lifecycle_transition("autoscaling:EC2_INSTANCE_LAUNCHING")
                .heartbeat_timeout(heartbeat)
                .default_result(result)
                .send()
                .await
                .expect("hook");
        }
        if let Some((heartbeat, result)) = spec.termination_hook {
            self.asg
                .put_lifecycle_hook()
                .auto_scaling_group_name(&group)
                .lifecycle_hook_name("drain-logs")
                .lifecycle_transition("autoscaling:EC2_INSTANCE_TERMINATING")
                .heartbeat_timeout(heartbeat)
                .default_result(result)
                .send()
                .await
                .expect("hook");
        }
        if let Some(n) = spec.warm_pool {
            self.asg
                .put_warm_pool()
                .auto_scaling_group_name(&group)
                .min_size(n)
                .max_group_prepared_capacity(spec.desired + n)
                .pool_state(aws_sdk_autoscaling::types::WarmPoolState::Stopped)
                .send()
                .await
                .expect("warm pool");
        }
        let target_groups = if classic_elb.is_some() { vec![] } else { target_groups };
        let fleet = Fleet {
            vpc,
            subnets,
            security_group,
            golden,
            parameter,
            group,
            target_group: target_groups.first().cloned().unwrap_or_default(),
            target_groups,
            classic_elb,
            launch_template,
            launch_configuration,
        };
        self.wait_fleet_healthy(&fleet, spec.desired as usize).await;
        if let Some(n) = spec.warm_pool {
            let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
            while self
                .warm_pool(&fleet.group)
                .await
                .iter()
                .filter(|(_, s, _)| s == "Warmed:Stopped")
                .count()
                < n as usize
            {
                assert!(tokio::time::Instant::now() < deadline, "the warm pool never filled");
                tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            }
        }
        fleet
    }

    /// The group's warm pool: (instance, lifecycle state, image) each.
    pub async fn warm_pool(&self, group: &str) -> Vec<(String, String, String)> {
        let out = self
            .asg
            .describe_warm_pool()
            .auto_scaling_group_name(group)
            .send()
            .await
            .expect("describe warm pool");
        let mut pool = Vec::new();
        for i in out.instances() {
            let id = i.instance_id().unwrap_or_default().to_string();
            let image = self
                .ec2
                .describe_instances()
                .instance_ids(&id)
                .send()
                .await
                .expect("describe instances")
                .reservations()
                .iter()
                .flat_map(|r| r.instances())
                .find_map(|x| x.image_id().map(str::to_string))
                .unwrap_or_else(|| panic!("warm pool instance {id} not in EC2"));
            let state = i.lifecycle_state().expect("lifecycle state").as_str().to_string();
            pool.push((id, state, image));
        }
        pool
    }

    /// Until `n` members are InService and healthy in every target group.
    pub async fn wait_fleet_healthy(&self, fleet: &Fleet, n: usize) {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let g = self
                .asg
                .describe_auto_scaling_groups()
                .auto_scaling_group_names(&fleet.group)
                .send()
                .await
                .expect("asg");
            let in_service: Vec<String> = g.auto_scaling_groups()[0]
                .instances()
                .iter()
                .filter(|i| i.lifecycle_state().map(|s| s.as_str()) == Some("InService"))
                .filter_map(|i| i.instance_id().map(str::to_string))
                .collect();
            let mut healthy = in_service.len() == n;
            for tg in &fleet.target_groups {
                let h = self
                    .elb
                    .describe_target_health()
                    .target_group_arn(tg)
                    .send()
                    .await
                    .expect("health");
                let ok = h
                    .target_health_descriptions()
                    .iter()
                    .filter(|d| d.target_health().and_then(|t| t.state()).map(|s| s.as_str()) == Some("healthy"))
                    .count();
                healthy &= ok == n;
            }
            if let Some(lb) = &fleet.classic_elb {
                let h = self
                    .clb
                    .describe_instance_health()
                    .load_balancer_name(lb)
                    .send()
                    .await
                    .expect("instance health");
                let ok = h
                    .instance_states()
                    .iter()
                    .filter(|i| i.state() == Some("InService"))
                    .count();
                healthy &= ok == n;
            }
            if healthy {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "fixture group never had {n} healthy members: {in_service:?}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        }
    }

    /// Image ids of the group's in-service members, from EC2.
    pub async fn member_images(&self, group: &str) -> Vec<(String, String)> {
        let g = self
            .asg
            .describe_auto_scaling_groups()
            .auto_scaling_group_names(group)
            .send()
            .await
            .expect("asg");
        let ids: Vec<String> = g.auto_scaling_groups()[0]
            .instances()
            .iter()
            .filter_map(|i| i.instance_id().map(str::to_string))
            .collect();
        if ids.is_empty() {
            return vec![];
        }
        // A member Auto Scaling just launched may not be visible to EC2 yet
        // (eventual consistency, as the harness models): ask again, bounded.
        let mut tries = 0;
        let d = loop {
            match self
                .ec2
                .describe_instances()
                .set_instance_ids(Some(ids.clone()))
                .send()
                .await
            {
                Ok(d) => break d,
                Err(e)
                    if tries < 50
                        && e.as_service_error().and_then(|s| s.meta().code()) == Some("InvalidInstanceID.NotFound") =>
                {
                    tries += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                Err(e) => panic!("instances: {e:?}"),
            }
        };
        let mut out: Vec<(String, String)> = d
            .reservations()
            .iter()
            .flat_map(|r| r.instances())
            .map(|i| {
                (
                    i.instance_id().unwrap_or_default().to_string(),
                    i.image_id().unwrap_or_default().to_string(),
                )
            })
            .collect();
        out.sort();
        out
    }
}

/// An engine on an in-memory store, polling fast (the harness's timings
/// are seconds).
pub fn engine(provider: std::sync::Arc<AwsProvider>) -> repave_engine::Engine {
    engine_on(
        provider,
        std::sync::Arc::new(repave_store::Store::open_in_memory().expect("store")),
    )
}

pub fn engine_on(
    provider: std::sync::Arc<AwsProvider>,
    store: std::sync::Arc<repave_store::Store>,
) -> repave_engine::Engine {
    let opts = repave_engine::EngineOptions {
        tick: std::time::Duration::from_millis(250),
        poll: std::time::Duration::from_millis(200),
        roll_cutoff: None,
        lease_ttl: std::time::Duration::from_secs(60),
    };
    repave_engine::Engine::new(
        provider,
        store,
        std::sync::Arc::new(repave_core::ids::SystemClock),
        std::sync::Arc::new(repave_engine::NullObserver),
        tokio_util::sync::CancellationToken::new(),
        opts,
    )
}

pub fn assert_succeeded(out: &repave_engine::RunOutcome) {
    assert_eq!(
        out.state, "succeeded",
        "run failed: {:?}\nsteps: {:?}",
        out.summary.error, out.steps
    );
}

/// The pipeline a new user writes: group, parameter, where the builder
/// goes, and `extra` TOML under `[pipelines.web]`; every other setting at
/// its default.
pub fn default_pipeline(fleet: &Fleet, platform: &str, extra: &str) -> repave_core::config::Pipeline {
    let src = default_pipeline_src(fleet, platform, extra);
    let cfg = repave_core::config::parse(&src, "repave.toml").expect("pipeline parses");
    cfg.pipelines.get("web").expect("web pipeline").clone()
}

/// The TOML of [`default_pipeline`] (for a child process to parse).
pub fn default_pipeline_src(fleet: &Fleet, platform: &str, extra: &str) -> String {
    format!(
        r#"
[providers.aws]
region = "us-east-1"

[pipelines.web]
provider = "aws"
group = "{group}"
parameter = "{parameter}"

[pipelines.web.builder]
instance_type = "t3.micro"
subnet = "{subnet}"
security_groups = ["{sg}"]
platform = "{platform}"
{extra}
"#,
        group = fleet.group,
        parameter = fleet.parameter,
        subnet = fleet.subnets[0],
        sg = fleet.security_group,
    )
}

/// A pipeline for the fixture's fleet, parsed from TOML like a user's.
pub fn pipeline(fleet: &Fleet) -> repave_core::config::Pipeline {
    let src = format!(
        r#"
[providers.aws]
region = "us-east-1"

[pipelines.web]
provider = "aws"
group = "{group}"
parameter = "{parameter}"
image_timeout = "60s"

[pipelines.web.builder]
instance_type = "t3.micro"
subnet = "{subnet}"
security_groups = ["{sg}"]
platform = "linux"
ready_timeout = "60s"

[pipelines.web.test]
timeout = "30s"

[pipelines.web.rollout]
min_healthy_percent = 100
max_healthy_percent = 200
warmup = "0s"
timeout = "120s"
"#,
        group = fleet.group,
        parameter = fleet.parameter,
        subnet = fleet.subnets[0],
        sg = fleet.security_group,
    );
    let cfg = repave_core::config::parse(&src, "repave.toml").expect("pipeline parses");
    cfg.pipelines.get("web").expect("web pipeline").clone()
}

/// The messages of a run's audit events, oldest first.
pub fn events(store: &repave_store::Store, out: &repave_engine::RunOutcome) -> Vec<String> {
    store
        .events(&out.run, 0, 10_000)
        .expect("events")
        .into_iter()
        .map(|e| e.message)
        .collect()
}
