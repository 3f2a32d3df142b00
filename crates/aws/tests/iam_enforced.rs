//! Whole pipelines as an IAM user holding the printed policy (issue 12),
//! on an AWS-behaviour harness with moto's IAM enforcement on
//! (`/moto-api/reset-auth`, what `INITIAL_NO_AUTH_ACTION_COUNT` sets):
//! every request signed with the user's key, every action evaluated
//! against the user's policy. moto evaluates EC2, Auto Scaling, SSM and
//! ELB actions against `Resource: "*"` only, and denies conditions whose
//! keys the request does not carry, so the user holds the printed policy
//! widened (`repave_aws::widened`): the proof of the actions; the resource
//! types and condition keys are proven against AWS's reference in
//! `tests/iam_coverage.rs`.
//!
//! Enforcement is global to a moto server, so this test starts a harness of
//! its own on a free port (and stops it), and points the fixtures at it:
//! the rest of the suite, on the shared server, is unaffected.

mod common;

use aws_sdk_ec2::config::{Credentials, SharedCredentialsProvider};
use common::{assert_succeeded, default_pipeline, FleetSpec, Moto, SpecKind};
use repave_aws::{iam_policy, widened, AwsOptions, AwsProvider};
use repave_store::RunKind;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

/// A harness process of this test's own, stopped on drop.
struct OwnHarness {
    child: Child,
    endpoint: String,
}

impl Drop for OwnHarness {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn venv_python() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let venv = std::env::var("MOTO_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from("target/moto-venv"));
    let venv = if venv.is_relative() { root.join(venv) } else { venv };
    let python = venv.join("bin/python");
    assert!(
        python.exists(),
        "{} is missing: `scripts/moto.sh start` installs moto into the venv",
        python.display()
    );
    python
}

async fn start_harness() -> OwnHarness {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("free port")
        .local_addr()
        .expect("addr")
        .port();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("harness/aws_harness.py");
    let log = std::env::temp_dir().join(format!("repave-iam-harness-{port}.log"));
    let mut cmd = Command::new(venv_python());
    cmd.arg(&script)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("harness log"));
    // The suite's operation record, when one is kept: these runs are the
    // provider's operations too.
    if let Ok(record) = std::env::var("REPAVE_IAM_RECORD") {
        cmd.env("HARNESS_RECORD_OPERATIONS", record);
    }
    let child = cmd.spawn().expect("harness starts");
    let endpoint = format!("http://127.0.0.1:{port}");
    let mut harness = OwnHarness { child, endpoint };
    for _ in 0..150 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return harness;
        }
        if let Some(status) = harness.child.try_wait().expect("harness status") {
            panic!(
                "harness exited ({status}): {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("harness on port {port} did not answer within 30s");
}

/// moto's switch: IAM enforced from now on (`0`), or not at all (`inf`).
async fn enforce(endpoint: &str, on: bool) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = endpoint.trim_start_matches("http://");
    let body = if on { "0" } else { "inf" };
    let req = format!(
        "POST /moto-api/reset-auth HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("harness answers");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).await.expect("read");
    assert!(
        out.starts_with("HTTP/1.1 200") || out.starts_with("HTTP/1.0 200"),
        "reset-auth: {out}"
    );
}

/// One pipeline of one kind, in an account of its own, with a builder
/// instance profile (so the policy passes a role) and an IAM user for it.
struct Case {
    name: &'static str,
    moto: Moto,
    fleet: common::Fleet,
    pipeline: repave_core::config::Pipeline,
    policy: serde_json::Value,
    role: String,
}

async fn case(name: &'static str, kind: SpecKind, extra: &str) -> Case {
    let moto = Moto::new().await;
    let fleet = moto.fleet_with(FleetSpec::new(kind, 2)).await;
    let iam = aws_sdk_iam::Client::new(&moto.sdk);
    let role = iam
        .create_role()
        .role_name("web-builder")
        .assume_role_policy_document(
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"ec2.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#,
        )
        .send()
        .await
        .expect("role")
        .role()
        .expect("role")
        .arn()
        .to_string();
    iam.create_instance_profile()
        .instance_profile_name("web-builder")
        .send()
        .await
        .expect("profile");
    iam.add_role_to_instance_profile()
        .instance_profile_name("web-builder")
        .role_name("web-builder")
        .send()
        .await
        .expect("role in profile");
    let pipeline = default_pipeline(&fleet, "linux", &format!("instance_profile = \"web-builder\"\n{extra}"));
    let scope = moto.provider().policy_scope(&pipeline).await.expect("policy scope");
    let policy = iam_policy("web", &pipeline, &scope);
    Case {
        name,
        moto,
        fleet,
        pipeline,
        policy,
        role,
    }
}

/// An IAM user holding `policy`; its credentials.
async fn user(moto: &Moto, name: &str, policy: &serde_json::Value) -> Credentials {
    let iam = aws_sdk_iam::Client::new(&moto.sdk);
    iam.create_user().user_name(name).send().await.expect("user");
    iam.put_user_policy()
        .user_name(name)
        .policy_name("repave")
        .policy_document(policy.to_string())
        .send()
        .await
        .expect("user policy");
    let key = iam.create_access_key().user_name(name).send().await.expect("key");
    let key = key.access_key().expect("key");
    Credentials::new(key.access_key_id(), key.secret_access_key(), None, None, "iam-user")
}

fn provider_as(moto: &Moto, credentials: Credentials) -> Arc<AwsProvider> {
    let sdk = moto
        .sdk
        .to_builder()
        .credentials_provider(SharedCredentialsProvider::new(credentials))
        .build();
    Arc::new(AwsProvider::from_sdk_config(
        &sdk,
        AwsOptions {
            empty_patch_output_is_clean: false,
        },
    ))
}

fn without(policy: &serde_json::Value, sid: &str) -> serde_json::Value {
    let mut p = policy.clone();
    let statements = p["Statement"].as_array_mut().expect("statements");
    let before = statements.len();
    statements.retain(|s| s["Sid"] != sid);
    assert_eq!(statements.len(), before - 1, "policy has statement {sid}");
    p
}

/// What the policy is scoped to comes from the account: a group whose
/// template names an instance profile and a KMS key for its volumes gets
/// PassRole for the profile's role and the key (by ARN); a profile that
/// does not exist is an error naming it.
async fn scope_reads_the_account(c: &Case) {
    use aws_sdk_autoscaling::types::LaunchTemplateSpecification;
    use aws_sdk_ec2::types::{
        LaunchTemplateBlockDeviceMappingRequest, LaunchTemplateEbsBlockDeviceRequest,
        LaunchTemplateIamInstanceProfileSpecificationRequest, RequestLaunchTemplateData,
    };
    const KEY: &str = "1234abcd-12ab-34cd-56ef-1234567890ab";
    let lt = c
        .moto
        .ec2
        .create_launch_template()
        .launch_template_name("encrypted")
        .launch_template_data(
            RequestLaunchTemplateData::builder()
                .image_id(&c.fleet.golden)
                .iam_instance_profile(
                    LaunchTemplateIamInstanceProfileSpecificationRequest::builder()
                        .name("web-builder")
                        .build(),
                )
                .block_device_mappings(
                    LaunchTemplateBlockDeviceMappingRequest::builder()
                        .device_name("/dev/xvda")
                        .ebs(
                            LaunchTemplateEbsBlockDeviceRequest::builder()
                                .encrypted(true)
                                .kms_key_id(KEY)
                                .volume_size(8)
                                .build(),
                        )
                        .build(),
                )
                .build(),
        )
        .send()
        .await
        .expect("template");
    let id = lt
        .launch_template()
        .and_then(|t| t.launch_template_id())
        .expect("template id")
        .to_string();
    c.moto
        .asg
        .create_auto_scaling_group()
        .auto_scaling_group_name("encrypted")
        .launch_template(
            LaunchTemplateSpecification::builder()
                .launch_template_id(&id)
                .version("1")
                .build(),
        )
        .min_size(0)
        .max_size(1)
        .desired_capacity(0)
        .vpc_zone_identifier(c.fleet.subnets.join(","))
        .send()
        .await
        .expect("group");
    let mut p = c.pipeline.clone();
    p.group = "encrypted".into();
    p.builder.instance_profile = None;
    let scope = c.moto.provider().policy_scope(&p).await.expect("scope");
    assert_eq!(scope.pass_roles, vec![c.role.clone()], "the template's role");
    assert_eq!(scope.launch_templates, vec![id]);
    assert_eq!(scope.subnets, c.fleet.subnets);
    assert_eq!(scope.account, c.moto.account);
    assert_eq!(
        scope.kms_keys,
        vec![format!("arn:aws:kms:us-east-1:{}:key/{KEY}", c.moto.account)]
    );
    p.builder.instance_profile = Some("no-such-profile".into());
    let e = c.moto.provider().policy_scope(&p).await.expect_err("missing profile");
    assert!(e.is_not_found() && e.message.contains("no-such-profile"), "{e}");
}

const DENIED: &[&str] = &["AccessDenied", "UnauthorizedOperation", "AuthFailure", "not authorized"];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn whole_pipelines_run_as_a_user_holding_the_printed_policy() {
    let harness = start_harness().await;
    // Every fixture of this binary talks to this harness only.
    std::env::set_var("REPAVE_MOTO_ENDPOINT", &harness.endpoint);

    let (template, configuration, mixed, native, missing) = tokio::join!(
        case("launch template", SpecKind::Template, ""),
        case("launch configuration", SpecKind::Configuration, ""),
        case("mixed instances", SpecKind::Mixed, ""),
        case(
            "native",
            SpecKind::Template,
            "[pipelines.web.rollout]\nstrategy = \"native\"\n"
        ),
        case("missing statement", SpecKind::Template, ""),
    );
    let cases = [template, configuration, mixed, native];
    for c in &cases {
        let passed = &c.policy["Statement"]
            .as_array()
            .expect("statements")
            .iter()
            .find(|s| s["Sid"] == "PassInstanceRoles")
            .unwrap_or_else(|| panic!("{}: no PassRole statement", c.name))["Resource"];
        // The builder's role and the one the group's launch spec passes.
        let template_role = format!(
            "{}/{}",
            c.role.rsplit_once('/').expect("role arn").0,
            common::INSTANCE_PROFILE
        );
        assert_eq!(
            passed,
            &serde_json::json!([c.role, template_role]),
            "{}: PassRole scoped to the builder's and the template's roles",
            c.name
        );
        if let Some(lt) = &c.fleet.launch_template {
            assert!(
                c.policy.to_string().contains(&format!("launch-template/{lt}")),
                "{}: {lt}",
                c.name
            );
        }
    }
    scope_reads_the_account(&missing).await;
    let mut users = vec![];
    for c in &cases {
        users.push(user(&c.moto, "repave", &widened(&c.policy)).await);
    }
    let short = user(
        &missing.moto,
        "repave",
        // A statement only publish uses: without the check at the run's
        // start, the run would bake an image before it failed.
        &widened(&without(&missing.policy, "LaunchTemplateVersions")),
    )
    .await;

    enforce(&harness.endpoint, true).await;
    let runs: Vec<_> = cases
        .iter()
        .zip(users)
        .map(|(c, creds)| {
            let provider = provider_as(&c.moto, creds);
            let pipeline = c.pipeline.clone();
            tokio::spawn(async move {
                let store = Arc::new(repave_store::Store::open_in_memory().expect("store"));
                let out = common::engine_on(provider.clone(), store.clone())
                    .start("web", &pipeline, RunKind::Run)
                    .await
                    .expect("run");
                let events = common::events(&store, &out);
                (out, provider, events)
            })
        })
        .collect();
    let refused_store = Arc::new(repave_store::Store::open_in_memory().expect("store"));
    let refused = common::engine_on(provider_as(&missing.moto, short), refused_store.clone())
        .start("web", &missing.pipeline, RunKind::Run)
        .await
        .expect("run");
    let mut outs = vec![];
    for r in runs {
        outs.push(r.await.expect("run task"));
    }
    enforce(&harness.endpoint, false).await;

    for (c, (out, provider, events)) in cases.iter().zip(&outs) {
        // The run's own check at its start was made, and passed.
        assert!(
            events
                .iter()
                .any(|e| e.contains("the caller holds every statement of `repave iam-policy`")),
            "{}: permissions checked: {events:?}",
            c.name
        );
        let store_events = format!("{:?} {:?}", out.summary.error, out.steps);
        assert!(
            !DENIED.iter().any(|d| store_events.contains(d)),
            "{}: access denied: {store_events}",
            c.name
        );
        assert_succeeded(out);
        let new_image = out.summary.new_image.clone().expect("new image");
        let members = c.moto.member_images(&c.fleet.group).await;
        assert!(
            !members.is_empty() && members.iter().all(|(_, i)| i == new_image.as_str()),
            "{}: {members:?}",
            c.name
        );
        assert!(provider.api_call_total() > 0);
    }

    // A copy missing one statement (publish's): the run's permission
    // check at its start names what is missing, before anything was
    // created.
    assert_eq!(refused.state, "failed");
    let error = refused.summary.error.clone().expect("the refused run's error");
    assert!(
        error.contains("lacks 2 permission(s)")
            && error.contains("ec2:CreateLaunchTemplateVersion on arn:aws:ec2:")
            && error.contains("ec2:ModifyLaunchTemplate on arn:aws:ec2:")
            && error.contains("(statement LaunchTemplateVersions; implicitDeny)"),
        "missing permissions named: {error}\nevents: {:?}",
        common::events(&refused_store, &refused)
    );
    assert!(
        refused.steps.iter().all(|s| s.name == "resolve"),
        "stopped in resolve: {:?}",
        refused.steps
    );
    let instances = missing
        .moto
        .ec2
        .describe_instances()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name(format!("tag:{}", repave_core::provider::tag::PIPELINE))
                .values("web")
                .build(),
        )
        .send()
        .await
        .expect("instances");
    assert!(instances.reservations().is_empty(), "nothing launched: {instances:?}");
    let images = missing
        .moto
        .ec2
        .describe_images()
        .owners("self")
        .send()
        .await
        .expect("images");
    assert_eq!(images.images().len(), 1, "only the golden image: {images:?}");
}
