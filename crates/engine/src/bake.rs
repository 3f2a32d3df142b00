//! The bake steps: resolve the golden image, launch a builder, patch it,
//! snapshot it, throw it away, test the result. Every creation first looks
//! for what this run already made (by tags), so a resumed step never makes a
//! second builder or a second image.

use crate::call::retry;
use crate::command::{command_error, run_command, tail};
use crate::context::Ctx;
use crate::error::EngineError;
use crate::wait::{wait_for, wait_state};
pub(crate) mod patching;
pub use patching::{nothing_to_install, patch, scan};
use repave_core::patch::{OsFamily, Update};
use repave_core::provider::{
    tag, CommandDocument, CommandStatus, CreateImageRequest, ImageState, InstanceSpec, InstanceState, LaunchRequest,
    Tags,
};
use repave_core::{ImageId, InstanceId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::time::Instant;

/// How long something this run just created may stay invisible to the
/// cloud's describe calls before its absence counts as real. AWS documents
/// eventual consistency without a bound; a minute is well past what is seen.
pub(crate) const VISIBILITY: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResolveOutput {
    pub source_image: ImageId,
    pub parameter_version: u64,
    pub launch_spec: repave_core::provider::LaunchSpecRef,
    pub desired: u32,
    /// The builder's OS family: detected from the source image, checked
    /// against `builder.platform` and the patch selection.
    #[serde(default)]
    pub os: Option<OsFamily>,
    /// The builder's settings: the config's, the rest from the group
    /// ([`repave_core::builder::builder_spec`]). `None` in a journal
    /// written before they were resolved: the config's alone.
    #[serde(default)]
    pub builder: Option<InstanceSpec>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BuilderOutput {
    pub builder: InstanceId,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScanOutput {
    pub updates: Vec<Update>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PatchOutput {
    pub installed: Vec<Update>,
    pub reboots: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageOutput {
    pub image: ImageId,
}

pub(crate) fn run_tags(ctx: &Ctx<'_>, role: &str) -> Tags {
    let mut t = Tags::new();
    t.insert(tag::RUN.into(), ctx.run_id().to_string());
    t.insert(tag::ROLE.into(), role.into());
    t.insert(tag::PIPELINE.into(), ctx.run.pipeline.clone());
    t
}

/// Read the golden parameter and check everything the run will touch exists
/// before anything is created.
pub async fn resolve(ctx: &Ctx<'_>) -> Result<ResolveOutput, EngineError> {
    let p = ctx.provider();
    check_permissions(ctx).await?;
    let name = &ctx.pipeline.parameter;
    let param = retry("resolve", || p.get_parameter(name)).await.map_err(|e| match e {
        EngineError::Provider { source, .. } if source.is_not_found() => {
            EngineError::Preflight(format!("golden parameter {name:?} does not exist"))
        }
        e => e,
    })?;
    let source = ImageId::new(param.value.trim());
    let image = retry("resolve", || p.describe_image(&source))
        .await
        .map_err(|e| match e {
            EngineError::Provider { source: s, .. } if s.is_not_found() => EngineError::Preflight(format!(
                "golden parameter {name:?} points at {source}, which does not exist"
            )),
            e => e,
        })?;
    if image.state != ImageState::Available {
        return Err(EngineError::Preflight(format!(
            "source image {source} is {:?}, not available",
            image.state
        )));
    }
    if image.tags.get(tag::STATUS).map(String::as_str) == Some(tag::STATUS_BAD) {
        return Err(EngineError::Preflight(format!(
            "golden parameter {name:?} points at {source}, which is marked bad; point it at a good image (`repave rollback` does)"
        )));
    }
    let os = builder_os(ctx, &image)?;
    let group = &ctx.pipeline.group;
    let g = retry("resolve", || p.describe_group(group))
        .await
        .map_err(|e| match e {
            EngineError::Provider { source, .. } if source.is_not_found() => {
                EngineError::Preflight(format!("group {group:?} does not exist"))
            }
            e => e,
        })?;
    let launch = retry("resolve", || p.describe_launch_spec(&g.launch_spec)).await?;
    let builder = repave_core::builder::builder_spec(
        &ctx.run.pipeline,
        &ctx.pipeline.builder,
        &g,
        &launch.spec,
        p.builder_needs(),
    )
    .map_err(EngineError::Preflight)?;
    if !builder.origins.is_empty() {
        ctx.log(
            "resolve",
            format!("builder: {}", builder.origins.join("; ")),
            serde_json::Value::Null,
        );
    }
    // A roll the group cannot hold, or held instances the policy refuses,
    // are refused before anything is created.
    let rolls = !matches!(ctx.run.kind, repave_store::RunKind::Bake);
    if rolls && ctx.pipeline.rollout.strategy != repave_core::config::Strategy::Native {
        if let Some(reason) = repave_core::rollout::no_room(g.desired, g.max, &ctx.policy()) {
            return Err(EngineError::Preflight(format!("group {group}: {reason}")));
        }
    }
    if rolls {
        let native = ctx.pipeline.rollout.strategy == repave_core::config::Strategy::Native;
        if let Some(reason) = repave_core::processes::refusal(group, &g.suspended, native) {
            return Err(EngineError::Preflight(reason));
        }
        if let Some(reason) = refused_held(ctx, &g) {
            return Err(EngineError::Preflight(format!("group {group}: {reason}")));
        }
    }
    Ok(ResolveOutput {
        source_image: source,
        parameter_version: param.version,
        launch_spec: g.launch_spec,
        desired: g.desired,
        os: Some(os),
        builder: Some(builder.spec),
    })
}

/// Where the cloud can tell (AWS IAM's policy simulator), refuse a run
/// whose caller lacks a permission it needs — any step's, publish and roll
/// included — before it changes anything, naming each one. A check that
/// cannot be made is logged and the run goes on.
async fn check_permissions(ctx: &Ctx<'_>) -> Result<(), EngineError> {
    let Some(check) = ctx.provider().permissions() else {
        return Ok(());
    };
    let report = check.check_permissions(&ctx.run.pipeline, &ctx.pipeline).await;
    if let Some(why) = &report.unchecked {
        ctx.log(
            "resolve",
            format!("permissions not checked before the run: {why}"),
            serde_json::json!({ "unchecked": why }),
        );
        return Ok(());
    }
    if report.missing.is_empty() {
        ctx.log(
            "resolve",
            "permissions: the caller holds every statement of `repave iam-policy`",
            serde_json::Value::Null,
        );
        return Ok(());
    }
    // Every one goes into the event; the error names the first few (a
    // role with no policy at all lacks dozens).
    const NAMED: usize = 8;
    ctx.log(
        "resolve",
        format!("permissions: the caller lacks {} permission(s)", report.missing.len()),
        serde_json::json!({ "missing": report.missing }),
    );
    let mut named = report
        .missing
        .iter()
        .take(NAMED)
        .cloned()
        .collect::<Vec<_>>()
        .join("; ");
    if report.missing.len() > NAMED {
        named.push_str(&format!(
            "; and {} more (the run's events list them all)",
            report.missing.len() - NAMED
        ));
    }
    Err(EngineError::Preflight(format!(
        "the caller lacks {} permission(s) this run needs (`repave iam-policy {}` prints them all): {named}",
        report.missing.len(),
        ctx.run.pipeline,
    )))
}

/// The OS family a builder from `image` has, checked against
/// `builder.platform` and the selection before anything is launched.
pub(crate) fn builder_os(ctx: &Ctx<'_>, image: &repave_core::provider::Image) -> Result<OsFamily, EngineError> {
    repave_core::config::builder_os(&ctx.pipeline, image).map_err(EngineError::Preflight)
}

/// Protected or standby members under a `fail` policy (for either
/// strategy: Instance Refresh has no "fail", so it must be refused here).
fn refused_held(ctx: &Ctx<'_>, g: &repave_core::provider::Group) -> Option<String> {
    use repave_core::config::HeldInstances;
    use repave_core::provider::Lifecycle;
    let r = &ctx.pipeline.rollout;
    let held: Vec<String> = g
        .members
        .iter()
        .filter(|m| {
            HeldInstances::holding(m.lifecycle == Lifecycle::Standby, m.protected, r.standby, r.protected)
                == Some(HeldInstances::Fail)
        })
        .map(|m| m.id.to_string())
        .collect();
    (!held.is_empty()).then(|| {
        format!(
            "protected or standby instance(s) {} cannot be replaced and the policy says \"fail\"; unprotect them or set protected/standby = \"skip\" or \"wait\"",
            held.join(", ")
        )
    })
}

pub async fn launch_builder(ctx: &Ctx<'_>, resolved: &ResolveOutput) -> Result<BuilderOutput, EngineError> {
    let source = &resolved.source_image;
    let p = ctx.provider();
    let tags = run_tags(ctx, tag::ROLE_BUILDER);
    let existing = retry("launch_builder", || p.list_instances(&tags)).await?;
    // A fresh token per attempt: the same token would hand back a builder
    // that is already gone.
    let attempt = existing.len();
    if let Some(i) = existing.into_iter().find(|i| !i.state.is_gone()) {
        ctx.log(
            "launch_builder",
            format!("reusing builder {} of this run", i.id),
            serde_json::Value::Null,
        );
        return Ok(BuilderOutput { builder: i.id });
    }
    let b = &ctx.pipeline.builder;
    let spec = resolved.builder.clone().unwrap_or_else(|| InstanceSpec {
        instance_type: b.instance_type.clone(),
        subnet: b.subnet.clone(),
        security_groups: b.security_groups.clone(),
        instance_profile: b.instance_profile.clone(),
        ..Default::default()
    });
    let req = LaunchRequest {
        image: source.clone(),
        spec,
        tags,
        token: format!("{}-builder-{attempt}", ctx.run_id()),
    };
    let inst = retry("launch_builder", || p.launch(req.clone())).await?;
    Ok(BuilderOutput { builder: inst.id })
}

pub async fn validate(ctx: &Ctx<'_>, id: &InstanceId) -> Result<(), EngineError> {
    for (i, script) in ctx.pipeline.validate.iter().enumerate() {
        let doc = CommandDocument::Shell {
            script: script.clone(),
            env: BTreeMap::new(),
        };
        let r = run_command(ctx, "validate", id, doc, Duration::from_secs(600)).await?;
        if r.status != CommandStatus::Success {
            return Err(EngineError::Validate(format!(
                "command {} ({script:?}) failed: {:?} exit {:?}: {}",
                i + 1,
                r.status,
                r.exit_code,
                tail(&r.stderr, 400)
            )));
        }
    }
    Ok(())
}

pub async fn stop_builder(ctx: &Ctx<'_>, id: &InstanceId) -> Result<(), EngineError> {
    if ctx.pipeline.builder.generalize {
        prepare_for_imaging(ctx, id).await?;
    }
    retry("stop_builder", || ctx.provider().stop_instance(id)).await?;
    wait_state(
        ctx,
        "stop_builder",
        id,
        InstanceState::Stopped,
        Duration::from_secs(900),
    )
    .await
}

/// Generalize the builder where its OS needs it (Windows: EC2Launch v2
/// sysprep), so instances from the image run their first-boot tasks.
async fn prepare_for_imaging(ctx: &Ctx<'_>, id: &InstanceId) -> Result<(), EngineError> {
    let Some(doc) = retry("stop_builder", || ctx.provider().imaging_preparation(id)).await? else {
        return Ok(());
    };
    let timeout = ctx.pipeline.builder.ready_timeout.get();
    let r = run_command(ctx, "stop_builder", id, doc, timeout).await?;
    if r.status != CommandStatus::Success {
        return Err(command_error("preparing the builder for imaging (sysprep)", &r));
    }
    ctx.log(
        "stop_builder",
        format!("{id} generalized for imaging"),
        serde_json::Value::Null,
    );
    Ok(())
}

pub async fn create_image(
    ctx: &Ctx<'_>,
    builder: &InstanceId,
    resolved: &ResolveOutput,
    patched: &PatchOutput,
) -> Result<ImageOutput, EngineError> {
    let p = ctx.provider();
    let mut tags = run_tags(ctx, tag::ROLE_IMAGE);
    let existing = retry("create_image", || p.list_images(&tags)).await?;
    let id = match existing
        .into_iter()
        .find(|i| i.state != repave_core::provider::ImageState::Deregistered)
    {
        Some(i) => {
            ctx.log(
                "create_image",
                format!("reusing image {} of this run", i.id),
                serde_json::Value::Null,
            );
            i.id
        }
        None => {
            tags.insert(tag::PARENT.into(), resolved.source_image.to_string());
            let manifest: Vec<&str> = patched.installed.iter().map(|u| u.id.as_str()).collect();
            let mut m = manifest.join(",");
            if m.len() > 250 {
                m.truncate(240);
                m.push_str(",...");
            }
            tags.insert(tag::MANIFEST.into(), m);
            let req = CreateImageRequest {
                instance: builder.clone(),
                name: format!("repave-{}-{}", ctx.run.pipeline, ctx.run_id()),
                tags,
                token: format!("{}-image", ctx.run_id()),
            };
            retry("create_image", || p.create_image(req.clone())).await?
        }
    };
    // Bounded only by the step timeout; a resumed run waits on the same image.
    // Right after CreateImage the image may not be visible yet (AWS's
    // eventual consistency: InvalidAMIID.NotFound): that is "pending" for
    // a bounded while, not a failure.
    let timeout = ctx.pipeline.image_timeout.get();
    let visible_by = Instant::now() + VISIBILITY;
    wait_for(
        ctx,
        "create_image",
        &format!("image {id} to be available"),
        timeout,
        || async {
            let img = match retry("create_image", || p.describe_image(&id)).await {
                Err(EngineError::Provider { source, .. }) if source.is_not_found() && Instant::now() < visible_by => {
                    return Ok(None);
                }
                r => r?,
            };
            match img.state {
                ImageState::Available => Ok(Some(())),
                ImageState::Failed | ImageState::Deregistered => Err(EngineError::Patch(format!(
                    "image {id} creation failed ({:?})",
                    img.state
                ))),
                ImageState::Pending => Ok(None),
            }
        },
    )
    .await?;
    Ok(ImageOutput { image: id })
}

pub async fn terminate(ctx: &Ctx<'_>, id: &InstanceId, step: &str) -> Result<(), EngineError> {
    let p = ctx.provider();
    match retry(step, || p.terminate_instance(id)).await {
        Ok(()) => {}
        Err(EngineError::Provider { source, .. }) if source.is_not_found() => return Ok(()),
        Err(e) => return Err(e),
    }
    wait_state(ctx, step, id, InstanceState::Terminated, Duration::from_secs(900)).await
}

/// Boot one instance from the new image with the group's launch spec, check
/// its health and run the test commands; always terminate it.
pub async fn test_image(ctx: &Ctx<'_>, image: &ImageId) -> Result<(), EngineError> {
    let result = test_image_inner(ctx, image).await;
    let tags = run_tags(ctx, tag::ROLE_TEST);
    let p = ctx.provider();
    for i in retry("test_image", || p.list_instances(&tags)).await? {
        if !i.state.is_gone() {
            terminate(ctx, &i.id, "test_image").await?;
        }
    }
    // Only a failed test is the image's fault (a cancel or a lost provider
    // is not): the executor's cleanup labels the image otherwise.
    if let Err(e @ EngineError::TestImage { .. }) = &result {
        mark_bad(ctx, image, &e.to_string()).await;
    }
    result
}

async fn test_image_inner(ctx: &Ctx<'_>, image: &ImageId) -> Result<(), EngineError> {
    let p = ctx.provider();
    let cfg = &ctx.pipeline.test;
    let tags = run_tags(ctx, tag::ROLE_TEST);
    let existing = retry("test_image", || p.list_instances(&tags)).await?;
    let attempt = existing.len();
    let reusable = existing
        .iter()
        .find(|i| matches!(i.state, InstanceState::Pending | InstanceState::Running));
    // A test instance a killed run was stopping is not reused.
    for i in existing
        .iter()
        .filter(|i| matches!(i.state, InstanceState::Stopping | InstanceState::Stopped))
    {
        terminate(ctx, &i.id, "test_image").await?;
    }
    let id = match reusable {
        Some(i) => i.id.clone(),
        None => {
            // Boot it as the group boots its instances: from the group's
            // launch spec version (user data, profile, security groups),
            // with the new image, in one of the group's subnets.
            let g = retry("test_image", || p.describe_group(&ctx.pipeline.group)).await?;
            let spec = retry("test_image", || p.describe_launch_spec(&g.launch_spec)).await?;
            let mut instance = spec.spec;
            instance.launch_template = Some(g.launch_spec.clone());
            if instance.subnet.is_none() {
                instance.subnet = g.subnets.first().cloned();
            }
            let mut tags = tags;
            tags.insert(tag::GROUP.into(), ctx.pipeline.group.clone());
            let req = LaunchRequest {
                image: image.clone(),
                spec: instance,
                tags,
                token: format!("{}-test-{attempt}", ctx.run_id()),
            };
            retry("test_image", || p.launch(req.clone())).await?.id
        }
    };
    let timeout = cfg.timeout.get();
    wait_state(ctx, "test_image", &id, InstanceState::Running, timeout).await?;
    let path = cfg.health_path.clone();
    let last = std::sync::Mutex::new(String::new());
    let healthy = wait_for(ctx, "test_image", "test instance health", timeout, || async {
        match p.probe_health(&id, &path).await {
            Ok(h) if h.healthy => Ok(Some(true)),
            Ok(h) => {
                *last.lock().expect("lock") = h.detail;
                Ok(None)
            }
            Err(e) => {
                *last.lock().expect("lock") = e.to_string();
                Ok(None)
            }
        }
    })
    .await;
    if let Err(e) = healthy {
        return Err(EngineError::TestImage {
            image: image.to_string(),
            reason: format!("{e}; last probe: {}", last.lock().expect("lock")),
        });
    }
    for script in &cfg.commands {
        let doc = CommandDocument::Shell {
            script: script.clone(),
            env: BTreeMap::new(),
        };
        let r = run_command(ctx, "test_image", &id, doc, timeout).await?;
        if r.status != CommandStatus::Success {
            return Err(EngineError::TestImage {
                image: image.to_string(),
                reason: format!(
                    "test command {script:?} failed: {:?} exit {:?}: {}",
                    r.status,
                    r.exit_code,
                    tail(&r.stderr, 400)
                ),
            });
        }
    }
    Ok(())
}

/// Tag an image as bad so nothing picks it up again.
pub(crate) async fn mark_bad(ctx: &Ctx<'_>, image: &ImageId, reason: &str) {
    mark(ctx, image, tag::STATUS_BAD, &format!("marked bad: {reason}")).await
}

async fn mark(ctx: &Ctx<'_>, image: &ImageId, status: &str, what: &str) {
    let mut tags = Tags::new();
    tags.insert(tag::STATUS.into(), status.into());
    if let Err(e) = retry("cleanup", || ctx.provider().tag_image(image, &tags)).await {
        ctx.log(
            "cleanup",
            format!("could not tag image {image} {status}: {e}"),
            serde_json::Value::Null,
        );
    }
    ctx.log("cleanup", format!("image {image} {what}"), serde_json::Value::Null);
}

/// On any failure before publish: terminate every builder and test instance
/// of this run, and label what it made: bad when `failure` is the image's
/// fault, unpublished otherwise (retention and `gc` remove both; only a bad
/// one says the image is wrong). Never fails the caller: what it could not
/// do is logged, and `gc` sweeps by tag.
pub async fn cleanup(ctx: &Ctx<'_>, failure: &EngineError) {
    let p = ctx.provider();
    for role in [tag::ROLE_BUILDER, tag::ROLE_TEST] {
        let tags = run_tags(ctx, role);
        match retry("cleanup", || p.list_instances(&tags)).await {
            Ok(list) => {
                for i in list.into_iter().filter(|i| !i.state.is_gone()) {
                    if role == tag::ROLE_BUILDER {
                        patching::finish(ctx, "cleanup", &i.id).await;
                    }
                    ctx.log(
                        "cleanup",
                        format!("terminating {role} {}", i.id),
                        serde_json::Value::Null,
                    );
                    if let Err(e) = retry("cleanup", || p.terminate_instance(&i.id)).await {
                        ctx.log(
                            "cleanup",
                            format!("could not terminate {}: {e}", i.id),
                            serde_json::Value::Null,
                        );
                        continue;
                    }
                    // Not cut short by cancellation: cleanup is what makes a
                    // cancel safe.
                    let deadline = Instant::now() + Duration::from_secs(120);
                    while Instant::now() < deadline {
                        match p.describe_instances(std::slice::from_ref(&i.id)).await {
                            Ok(v) if v.first().is_none_or(|x| x.state == InstanceState::Terminated) => break,
                            _ => tokio::time::sleep(ctx.poll()).await,
                        }
                    }
                }
            }
            Err(e) => ctx.log(
                "cleanup",
                format!("could not list {role} instances: {e}"),
                serde_json::Value::Null,
            ),
        }
    }
    let tags = run_tags(ctx, tag::ROLE_IMAGE);
    match retry("cleanup", || p.list_images(&tags)).await {
        Ok(images) => {
            for img in images.into_iter().filter(|i| !i.tags.contains_key(tag::STATUS)) {
                if failure.blames_image() {
                    mark_bad(ctx, &img.id, &failure.to_string()).await;
                } else {
                    let why = format!("left unpublished: the run stopped before publish ({failure})");
                    mark(ctx, &img.id, tag::STATUS_UNPUBLISHED, &why).await;
                }
            }
        }
        Err(e) => ctx.log(
            "cleanup",
            format!("could not list this run's images: {e}"),
            serde_json::Value::Null,
        ),
    }
}
