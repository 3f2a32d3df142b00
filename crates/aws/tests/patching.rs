//! OS patching as SSM really does it (issue 11), on the AWS-behaviour
//! harness's Patch Manager model: the patches each image's instances have
//! (per OS, with classification, severity, release date), AWS-RunPatchBaseline
//! Scan / Install against the instance's patch group baseline, output cut at
//! 24,000 characters, DescribeInstancePatches / DescribeInstancePatchStates,
//! InstalledPendingReboot until a reboot, CancelCommand.

mod common;

use common::{default_pipeline, engine_on, events, harness_patches, Moto, SpecKind};
use repave_core::patch::{OsFamily, PatchSelection};
use repave_core::provider::{
    tag, CommandDocument, CommandRequest, CommandStatus, Commands, InstallReport, Instances, LaunchRequest, Parameters,
    Tags,
};
use repave_store::{RunKind, Store};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

/// A one-instance fleet (Windows when `windows`) whose golden image has the
/// patches `spec` describes, and the provider under test.
async fn fleet_with_patches(
    windows: bool,
    spec: serde_json::Value,
) -> (Moto, common::Fleet, Arc<repave_aws::AwsProvider>) {
    let moto = Moto::new().await;
    let fleet = moto.fleet_on(SpecKind::Template, 1, windows).await;
    harness_patches(&moto.account, &fleet.golden, spec).await;
    let provider = Arc::new(moto.provider());
    (moto, fleet, provider)
}

/// One run of `pipeline` with its own store.
async fn run(
    provider: &Arc<repave_aws::AwsProvider>,
    pipeline: &repave_core::config::Pipeline,
    kind: RunKind,
) -> (repave_engine::RunOutcome, Arc<Store>) {
    let store = Arc::new(Store::open_in_memory().expect("store"));
    let out = engine_on(provider.clone(), store.clone())
        .start("web", pipeline, kind)
        .await
        .expect("run");
    (out, store)
}

async fn image_of(moto: &Moto, id: &str) -> aws_sdk_ec2::types::Image {
    moto.ec2
        .describe_images()
        .image_ids(id)
        .send()
        .await
        .expect("image")
        .images()[0]
        .clone()
}

/// Patch baselines repave left in the account.
async fn baselines(moto: &Moto) -> Vec<String> {
    moto.ssm
        .describe_patch_baselines()
        .filters(
            aws_sdk_ssm::types::PatchOrchestratorFilter::builder()
                .key("NAME_PREFIX")
                .values("repave-")
                .build(),
        )
        .send()
        .await
        .expect("describe baselines")
        .baseline_identities()
        .iter()
        .filter_map(|b| b.baseline_name().map(str::to_string))
        .collect()
}

/// Patch commands sent to an instance: (operation, command id).
async fn patch_commands(moto: &Moto, instance: &str) -> Vec<(String, String)> {
    let out = moto
        .ssm
        .list_commands()
        .instance_id(instance)
        .send()
        .await
        .expect("list commands");
    out.commands()
        .iter()
        .filter(|c| c.document_name() == Some("AWS-RunPatchBaseline"))
        .map(|c| {
            let op = c
                .parameters()
                .and_then(|p| p.get("Operation"))
                .and_then(|v| v.first())
                .cloned()
                .unwrap_or_default();
            (op, c.command_id().unwrap_or_default().to_string())
        })
        .collect()
}

fn patch(id: &str, class: &str, severity: &str, age_days: u32) -> serde_json::Value {
    json!({ "id": id, "title": format!("{id} update"), "classification": class, "severity": severity, "age_days": age_days })
}

async fn builder_of(provider: &repave_aws::AwsProvider, run: &repave_core::RunId) -> String {
    let mut tags = Tags::new();
    tags.insert(tag::RUN.into(), run.to_string());
    tags.insert(tag::ROLE.into(), tag::ROLE_BUILDER.into());
    let list = provider.list_instances(&tags).await.expect("list builders");
    assert_eq!(list.len(), 1, "one builder: {list:?}");
    list[0].id.to_string()
}

/// Amazon Linux, `Security` + `Critical`/`Important`, 7 days: the scan
/// freezes exactly the approved missing patches (not the Bugfix, not the
/// Medium, not the one released yesterday, not the one installed before),
/// the install installs exactly those, the kernel's pending reboot is one
/// reboot, the re-scan finds nothing, the manifest lists this bake's
/// patches only, and the run's baseline is gone afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_linux_selection_installs_exactly_the_scanned_list_and_reboots_once() {
    let (moto, fleet, provider) = fleet_with_patches(
        false,
        json!({
        "os": "AMAZON_LINUX_2023",
        "patches": [
            json!({ "id": "kernel.x86_64", "classification": "Security", "severity": "Critical", "age_days": 20, "reboot": true }),
            patch("openssl-libs.x86_64", "Security", "Important", 12),
            patch("vim-minimal.x86_64", "Bugfix", "Low", 30),
            patch("glibc.x86_64", "Security", "Medium", 30),
            patch("curl.x86_64", "Security", "Critical", 1),
            patch("bash.x86_64", "Security", "Critical", 90),
        ],
        "installed": ["bash.x86_64"],
    }),
    )
    .await;
    let pipeline = default_pipeline(
        &fleet,
        "amazon-linux",
        "[pipelines.web.patch]\nclassifications = [\"Security\"]\nseverities = [\"Critical\", \"Important\"]\nmin_age_days = 7\n",
    );
    let (out, store) = run(&provider, &pipeline, RunKind::Bake).await;
    assert_eq!(out.state, "succeeded", "{:?}", out.summary.error);
    let mut installed: Vec<&str> = out.summary.installed_updates.iter().map(|u| u.id.as_str()).collect();
    installed.sort();
    assert_eq!(
        installed,
        vec!["kernel.x86_64", "openssl-libs.x86_64"],
        "the manifest is this bake's"
    );
    let patch_step = store.step(&out.run, "patch").expect("step").expect("patch step");
    assert_eq!(
        patch_step.output.expect("output")["reboots"],
        1,
        "one reboot for the kernel"
    );
    let builder = builder_of(&provider, &out.run).await;
    let ops: Vec<String> = patch_commands(&moto, &builder)
        .await
        .into_iter()
        .map(|(op, _)| op)
        .collect();
    assert_eq!(ops.iter().filter(|o| *o == "Install").count(), 1, "{ops:?}");
    assert_eq!(
        ops.iter().filter(|o| *o == "Scan").count(),
        2,
        "scan, then re-scan: {ops:?}"
    );
    // What is on the builder now: the frozen list and what it had before;
    // the Bugfix, the Medium and the too-new patch were never installed.
    let states = moto
        .ssm
        .describe_instance_patches()
        .instance_id(&builder)
        .send()
        .await
        .expect("instance patches");
    let state_of = |id: &str| {
        states
            .patches()
            .iter()
            .find(|p| p.kb_id() == id)
            .map(|p| p.state().as_str().to_string())
    };
    assert_eq!(state_of("kernel.x86_64").as_deref(), Some("Installed"), "rebooted");
    assert_eq!(state_of("openssl-libs.x86_64").as_deref(), Some("Installed"));
    for never in ["vim-minimal.x86_64", "glibc.x86_64", "curl.x86_64"] {
        assert!(
            !matches!(state_of(never).as_deref(), Some(s) if s.starts_with("Installed")),
            "{never} was installed"
        );
    }
    let ev = events(&store, &out);
    assert!(ev.iter().any(|m| m.contains("2 update(s) selected")), "{ev:?}");
    assert!(ev.iter().any(|m| m.contains("rebooted (reboot 1")), "{ev:?}");
    assert!(baselines(&moto).await.is_empty(), "the run's baseline is removed");
    let image = out.summary.new_image.expect("an image");
    let tags = image_of(&moto, image.as_str())
        .await
        .tags()
        .iter()
        .find(|t| t.key() == Some(tag::MANIFEST))
        .and_then(|t| t.value())
        .unwrap_or_default()
        .to_string();
    assert!(!tags.contains("bash"), "manifest {tags}");
}

/// Everything the selection approves is installed already: the run says
/// so and ends without an image; the golden parameter is untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_selection_that_matches_nothing_publishes_nothing() {
    let (moto, fleet, provider) = fleet_with_patches(
        false,
        json!({
        "os": "AMAZON_LINUX_2023",
        "patches": [patch("openssl-libs.x86_64", "Security", "Critical", 30), patch("vim-minimal.x86_64", "Bugfix", "Low", 30)],
        "installed": ["openssl-libs.x86_64"],
    }),
    )
    .await;
    let before = provider.get_parameter(&fleet.parameter).await.expect("parameter");
    let pipeline = default_pipeline(
        &fleet,
        "linux",
        "[pipelines.web.patch]\nclassifications = [\"Security\"]\nseverities = [\"Critical\"]\n",
    );
    let (out, store) = run(&provider, &pipeline, RunKind::Run).await;
    assert_eq!(out.state, "succeeded", "{:?}", out.summary.error);
    assert!(out.summary.nothing_to_install);
    assert_eq!(out.summary.new_image, None);
    let after = provider.get_parameter(&fleet.parameter).await.expect("parameter");
    assert_eq!(
        (after.value, after.version),
        (before.value, before.version),
        "nothing published"
    );
    let mut tags = Tags::new();
    tags.insert(tag::RUN.into(), out.run.to_string());
    tags.insert(tag::ROLE.into(), tag::ROLE_IMAGE.into());
    assert!(repave_core::provider::Images::list_images(provider.as_ref(), &tags)
        .await
        .expect("images")
        .is_empty());
    let builder = builder_of(&provider, &out.run).await;
    let gone = provider
        .describe_instances(&[repave_core::InstanceId::new(builder)])
        .await
        .expect("builder");
    assert!(gone.iter().all(|i| i.state.is_gone()), "{gone:?}");
    assert!(events(&store, &out).iter().any(|m| m.contains("resolves to nothing")));
    assert!(baselines(&moto).await.is_empty());
    let steps: Vec<&str> = out.steps.iter().map(|s| s.name.as_str()).collect();
    assert!(
        !steps.contains(&"create_image") && !steps.contains(&"publish"),
        "{steps:?}"
    );
}

/// A selection in Windows words on an Amazon Linux image cannot match
/// anything: refused before a builder is launched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_selection_in_another_os_vocabulary_is_refused_before_launch() {
    let moto = Moto::new().await;
    let fleet = moto.fleet(SpecKind::Template, 1).await;
    let provider = Arc::new(moto.provider());
    let pipeline = default_pipeline(
        &fleet,
        "auto",
        "[pipelines.web.patch]\nclassifications = [\"SecurityUpdates\"]\n",
    );
    let (out, _store) = run(&provider, &pipeline, RunKind::Run).await;
    assert_eq!(out.state, "failed");
    let error = out.summary.error.unwrap_or_default();
    assert!(
        error.contains("cannot match anything on amazon-linux") && error.contains("SecurityUpdates"),
        "{error}"
    );
    let mut tags = Tags::new();
    tags.insert(tag::RUN.into(), out.run.to_string());
    assert!(
        provider.list_instances(&tags).await.expect("list").is_empty(),
        "nothing launched"
    );
}

async fn windows_builder(
    moto: &Moto,
    provider: &repave_aws::AwsProvider,
    image: &str,
    subnet: &str,
) -> repave_core::InstanceId {
    let mut tags = Tags::new();
    tags.insert(tag::RUN.into(), "r-windows-direct".into());
    tags.insert(tag::PIPELINE.into(), "web".into());
    tags.insert(tag::ROLE.into(), tag::ROLE_BUILDER.into());
    let req = LaunchRequest {
        image: repave_core::ImageId::new(image),
        spec: repave_core::provider::InstanceSpec {
            instance_type: Some("t3.micro".into()),
            subnet: Some(subnet.into()),
            ..Default::default()
        },
        tags,
        token: format!("{}-windows", moto.account),
    };
    provider.launch(req).await.expect("launch").id
}

async fn wait_result(
    provider: &repave_aws::AwsProvider,
    id: &repave_core::CommandId,
) -> repave_core::provider::CommandResult {
    for _ in 0..100 {
        let r = provider.command_result(id).await.expect("result");
        if r.status.is_terminal() {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("command {id} never finished");
}

/// A cumulative update's install prints far past SSM's 24,000 inline
/// characters; the failed KB and the pending reboot are at the end of
/// that text, and still reported (they come from Patch Manager's states).
/// Through the whole run, the failure fails it and nothing is published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_windows_install_past_24000_characters_reports_its_failed_kb_and_pending_reboot() {
    let (moto, fleet, provider) = fleet_with_patches(
        true,
        json!({
        "os": "WINDOWS",
        "output_lines": 600,
        "patches": [
            json!({ "id": "KB5034439", "classification": "SecurityUpdates", "severity": "Critical", "age_days": 20, "reboot": true }),
            json!({ "id": "KB5034441", "classification": "SecurityUpdates", "severity": "Critical", "age_days": 20, "fails": true }),
            patch("KB2267602", "DefinitionUpdates", "Unspecified", 20),
        ],
    }),
    )
    .await;
    // The provider directly: scan, then install the frozen list.
    let id = windows_builder(&moto, &provider, &fleet.golden, &fleet.subnets[0]).await;
    let selection = PatchSelection {
        os: Some(OsFamily::Windows),
        severities: vec!["Critical".into()],
        classifications: vec!["SecurityUpdates".into()],
        ..Default::default()
    };
    let send = |document: CommandDocument| CommandRequest {
        token: format!(
            "t-{}",
            if matches!(document, CommandDocument::ScanUpdates { .. }) {
                "scan"
            } else {
                "install"
            }
        ),
        instance: id.clone(),
        document,
        timeout: Duration::from_secs(120),
    };
    let scan = provider
        .send_command(send(CommandDocument::ScanUpdates {
            selection: selection.clone(),
        }))
        .await
        .expect("scan");
    let scanned = wait_result(&provider, &scan).await;
    assert_eq!(scanned.status, CommandStatus::Success, "{scanned:?}");
    let updates: Vec<repave_core::patch::Update> = serde_json::from_str(&scanned.stdout).expect("updates");
    let mut ids: Vec<String> = updates.iter().map(|u| u.id.clone()).collect();
    ids.sort();
    assert_eq!(ids, vec!["KB5034439", "KB5034441"]);
    let install = provider
        .send_command(send(CommandDocument::InstallUpdates {
            selection,
            ids: ids.clone(),
            allow_reboot: true,
        }))
        .await
        .expect("install");
    let r = wait_result(&provider, &install).await;
    assert_eq!(r.status, CommandStatus::Failed, "a failed patch fails the document");
    let inline = moto
        .ssm
        .get_command_invocation()
        .command_id(install.as_str().split('/').next().expect("command id"))
        .instance_id(id.as_str())
        .send()
        .await
        .expect("invocation");
    let text = inline.standard_output_content().unwrap_or_default();
    assert_eq!(text.chars().count(), 24_000, "SSM keeps 24,000 characters inline");
    assert!(
        !text.contains("Failed to install KB5034441"),
        "the failure is past the cut"
    );
    let report: InstallReport = serde_json::from_str(&r.stdout).expect("install report");
    assert_eq!(report.failed, vec!["KB5034441".to_string()]);
    assert_eq!(
        report.installed.iter().map(|u| u.id.as_str()).collect::<Vec<_>>(),
        vec!["KB5034439"]
    );
    assert!(report.reboot_required, "pending reboot from the patch states");
    assert!(r.stderr.contains("first 24,000 characters"), "the log says it is cut");
    provider.finish_patching(&id).await.expect("finish");
    assert!(baselines(&moto).await.is_empty());
    provider.terminate_instance(&id).await.expect("terminate");

    // The whole run: fails on the KB, publishes nothing.
    let before = provider.get_parameter(&fleet.parameter).await.expect("parameter");
    let pipeline = default_pipeline(
        &fleet,
        "windows",
        "[pipelines.web.patch]\nclassifications = [\"SecurityUpdates\"]\nseverities = [\"Critical\"]\n",
    );
    let (out, _store) = run(&provider, &pipeline, RunKind::Run).await;
    assert_eq!(out.state, "failed");
    assert!(
        out.summary.error.as_deref().unwrap_or_default().contains("KB5034441"),
        "{:?}",
        out.summary.error
    );
    let after = provider.get_parameter(&fleet.parameter).await.expect("parameter");
    assert_eq!(after.version, before.version, "nothing published");
    assert!(baselines(&moto).await.is_empty(), "cleanup removes the baseline");
}

/// A Windows bake is generalized (EC2Launch v2 sysprep) before its image is
/// taken, and its pending reboot is one reboot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_windows_builder_is_generalized_before_its_image_is_taken() {
    let (moto, fleet, provider) = fleet_with_patches(
        true,
        json!({
        "os": "WINDOWS",
        "patches": [json!({ "id": "KB5034439", "classification": "SecurityUpdates", "severity": "Critical", "age_days": 20, "reboot": true })],
    }),
    )
    .await;
    let pipeline = default_pipeline(
        &fleet,
        "windows",
        "[pipelines.web.patch]\nseverities = [\"Critical\"]\n",
    );
    let (out, store) = run(&provider, &pipeline, RunKind::Bake).await;
    assert_eq!(out.state, "succeeded", "{:?}", out.summary.error);
    let patch_step = store.step(&out.run, "patch").expect("step").expect("patch step");
    assert_eq!(patch_step.output.expect("output")["reboots"], 1);
    let builder = builder_of(&provider, &out.run).await;
    let commands = moto
        .ssm
        .list_commands()
        .instance_id(&builder)
        .send()
        .await
        .expect("commands");
    let sysprep = commands
        .commands()
        .iter()
        .find(|c| {
            c.document_name() == Some("AWS-RunPowerShellScript")
                && c.parameters()
                    .and_then(|p| p.get("commands"))
                    .is_some_and(|v| v.iter().any(|l| l.contains("EC2Launch.exe")))
        })
        .expect("an EC2Launch sysprep command");
    let image = out.summary.new_image.expect("image");
    let created = image_of(&moto, image.as_str())
        .await
        .creation_date()
        .unwrap_or_default()
        .to_string();
    let sent = sysprep.requested_date_time().expect("sent at").secs();
    let created = chrono_secs(&created);
    assert!(sent <= created, "sysprep ({sent}) before CreateImage ({created})");
}

/// `2026-01-02T03:04:05.000Z` → seconds since the epoch.
fn chrono_secs(s: &str) -> i64 {
    let days = repave_core::patch::parse_date_days(&s[..10]).expect("date");
    let h: i64 = s[11..13].parse().expect("hour");
    let m: i64 = s[14..16].parse().expect("minute");
    let sec: i64 = s[17..19].parse().expect("second");
    days * 86_400 + h * 3600 + m * 60 + sec
}

/// An install still running at `patch.timeout` is cancelled (CancelCommand,
/// the invocation ends Cancelled); the run fails and nothing is published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_patch_command_is_cancelled_and_nothing_is_published() {
    let (moto, fleet, provider) = fleet_with_patches(
        false,
        json!({
            "os": "AMAZON_LINUX_2023",
            "install_seconds": 600,
            "patches": [patch("openssl-libs.x86_64", "Security", "Critical", 30)],
        }),
    )
    .await;
    let before = provider.get_parameter(&fleet.parameter).await.expect("parameter");
    let pipeline = default_pipeline(&fleet, "linux", "[pipelines.web.patch]\ntimeout = \"6s\"\n");
    let (out, store) = run(&provider, &pipeline, RunKind::Run).await;
    assert_eq!(out.state, "failed");
    assert!(
        out.summary.error.as_deref().unwrap_or_default().contains("timed out"),
        "{:?}",
        out.summary.error
    );
    let builder = builder_of(&provider, &out.run).await;
    let installs: Vec<String> = patch_commands(&moto, &builder)
        .await
        .into_iter()
        .filter(|(op, _)| op == "Install")
        .map(|(_, id)| id)
        .collect();
    assert_eq!(installs.len(), 1);
    let inv = moto
        .ssm
        .get_command_invocation()
        .command_id(&installs[0])
        .instance_id(&builder)
        .send()
        .await
        .expect("invocation");
    assert_eq!(inv.status().map(|s| s.as_str()), Some("Cancelled"));
    assert!(events(&store, &out).iter().any(|m| m.contains("cancelled")));
    let after = provider.get_parameter(&fleet.parameter).await.expect("parameter");
    assert_eq!(after.version, before.version, "nothing published");
    assert_eq!(out.summary.new_image, None);
    assert!(baselines(&moto).await.is_empty());
}

/// SendCommand has no client token: a command sent again with the same
/// token (a driver killed between sending and journaling it, a lost answer)
/// is found by its comment and handed back, not run twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_sent_again_with_its_token_runs_once() {
    let (moto, fleet, provider) = fleet_with_patches(
        true,
        json!({ "os": "WINDOWS", "patches": [patch("KB5034439", "SecurityUpdates", "Critical", 20)] }),
    )
    .await;
    let id = windows_builder(&moto, &provider, &fleet.golden, &fleet.subnets[0]).await;
    let req = |token: &str| CommandRequest {
        instance: id.clone(),
        document: CommandDocument::ScanUpdates {
            selection: PatchSelection {
                os: Some(OsFamily::Windows),
                ..Default::default()
            },
        },
        timeout: Duration::from_secs(120),
        token: token.into(),
    };
    let first = provider.send_command(req("run-1-scan-0")).await.expect("send");
    let again = provider.send_command(req("run-1-scan-0")).await.expect("send again");
    assert_eq!(first, again, "the same token is the same command");
    assert_eq!(patch_commands(&moto, id.as_str()).await.len(), 1);
    let other = provider.send_command(req("run-1-scan-1")).await.expect("send other");
    assert_ne!(first, other, "another token is another command");
    assert_eq!(patch_commands(&moto, id.as_str()).await.len(), 2);
    provider.terminate_instance(&id).await.expect("terminate");
}
