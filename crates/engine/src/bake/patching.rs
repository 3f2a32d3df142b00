//! The patch steps: scan (freeze the list the selection resolves to on the
//! builder's OS), install exactly that list, reboot when the install says
//! so and re-scan until nothing selected is pending (bounded by
//! `max_reboots`), and the decision when the list is empty.
//!
//! Every patch command is checkpointed on its step before it is waited
//! for, keyed by what it is (`scan`, `install-1`, `rescan-2`, ...): a
//! resumed step polls the command it already sent instead of sending it
//! again.

use crate::bake::{PatchOutput, ResolveOutput, ScanOutput};
use crate::call::retry;
use crate::command::{command_error, run_command_as, wait_ready};
use crate::context::Ctx;
use crate::error::EngineError;
use repave_core::patch::{PatchSelection, Update};
use repave_core::provider::{CommandDocument, CommandResult, CommandStatus, InstallReport};
use repave_core::InstanceId;
use std::collections::BTreeMap;
use tokio::time::Instant;

/// The selection in the builder's OS vocabulary (the family `resolve`
/// detected and checked).
fn selection(ctx: &Ctx<'_>) -> Result<PatchSelection, EngineError> {
    let os = ctx.output::<ResolveOutput>("resolve")?.and_then(|r| r.os);
    Ok(match os {
        Some(os) => ctx.pipeline.patch.selection_for(os),
        None => ctx.pipeline.patch.selection(),
    })
}

/// Commands this step already sent, by key (its checkpoint).
fn sent(ctx: &Ctx<'_>, step: &str) -> Result<BTreeMap<String, String>, EngineError> {
    Ok(ctx
        .engine
        .store
        .step(ctx.run_id(), step)?
        .and_then(|s| s.checkpoint)
        .and_then(|c| serde_json::from_value(c).ok())
        .unwrap_or_default())
}

/// Send (or, resumed, find) the patch command `key` of `step` and wait for
/// it; a command still running at `timeout` is cancelled.
async fn patch_command(
    ctx: &Ctx<'_>,
    step: &str,
    key: &str,
    id: &InstanceId,
    document: CommandDocument,
    timeout: std::time::Duration,
) -> Result<CommandResult, EngineError> {
    let mut commands = sent(ctx, step)?;
    let previous = commands.get(key).map(|c| repave_core::CommandId::new(c.clone()));
    let token = format!("{}-{step}-{key}", ctx.run_id());
    run_command_as(ctx, step, id, document, timeout, token, previous, |cmd| {
        commands.insert(key.to_string(), cmd.to_string());
        let json = serde_json::to_value(&commands).expect("command ids serialize");
        ctx.engine.store.checkpoint_step(ctx.run_id(), step, &json)?;
        Ok(())
    })
    .await
}

/// Freeze the list of updates to install.
pub async fn scan(ctx: &Ctx<'_>, id: &InstanceId) -> Result<ScanOutput, EngineError> {
    let out = scan_updates(ctx, "scan", "scan", id).await?;
    let ids: Vec<&str> = out.updates.iter().map(|u| u.id.as_str()).collect();
    ctx.log(
        "scan",
        format!("{} update(s) selected: {}", ids.len(), ids.join(", ")),
        serde_json::Value::Null,
    );
    Ok(out)
}

async fn scan_updates(ctx: &Ctx<'_>, step: &str, key: &str, id: &InstanceId) -> Result<ScanOutput, EngineError> {
    let selection = selection(ctx)?;
    let timeout = ctx.pipeline.patch.timeout.get();
    let r = patch_command(ctx, step, key, id, CommandDocument::ScanUpdates { selection }, timeout).await?;
    if r.status != CommandStatus::Success {
        return Err(command_error("scan for updates", &r));
    }
    let updates: Vec<Update> = serde_json::from_str(r.stdout.trim())
        .map_err(|e| EngineError::Patch(format!("scan output is not a JSON list of updates: {e}")))?;
    Ok(ScanOutput { updates })
}

/// The selection resolved to nothing and the config does not ask to
/// publish anyway: say so, release what patching needed and throw the
/// builder away. The run ends without an image.
pub async fn nothing_to_install(ctx: &Ctx<'_>, id: &InstanceId) -> Result<(), EngineError> {
    ctx.log(
        "scan",
        "the selection resolves to nothing on this image: no image is made and nothing is published (patch.when_empty = \"publish\" bakes one anyway)",
        serde_json::json!({ "builder": id }),
    );
    finish(ctx, "terminate_builder", id).await;
    crate::bake::terminate(ctx, id, "terminate_builder").await
}

/// Release what patching the builder needed (AWS: the run's patch
/// baseline). A failure is logged, not fatal: `gc` sweeps it.
pub(crate) async fn finish(ctx: &Ctx<'_>, step: &str, id: &InstanceId) {
    if let Err(e) = retry(step, || ctx.provider().finish_patching(id)).await {
        ctx.log(
            step,
            format!("could not remove the patching resources of {id} ({e}); `repave gc` removes them"),
            serde_json::Value::Null,
        );
    }
}

fn report_of(r: &CommandResult) -> Option<InstallReport> {
    serde_json::from_str(r.stdout.trim()).ok()
}

/// Install the frozen list; reboot and continue while the install asks for
/// it (bounded by `max_reboots`); re-scan to prove nothing selected is
/// pending. The manifest is what this install reported installing.
pub async fn patch(ctx: &Ctx<'_>, id: &InstanceId, frozen: &ScanOutput) -> Result<PatchOutput, EngineError> {
    let cfg = &ctx.pipeline.patch;
    let deadline = Instant::now() + cfg.timeout.get();
    let mut remaining: Vec<String> = frozen.updates.iter().map(|u| u.id.clone()).collect();
    let mut installed: Vec<Update> = Vec::new();
    let mut reboots = 0;
    let mut round = 0;
    while !remaining.is_empty() {
        round += 1;
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(EngineError::Timeout {
                step: "patch".into(),
                seconds: cfg.timeout.get().as_secs(),
                what: "installing updates".into(),
            });
        }
        let doc = CommandDocument::InstallUpdates {
            selection: selection(ctx)?,
            ids: remaining.clone(),
            allow_reboot: cfg.allow_reboot,
        };
        let r = patch_command(ctx, "patch", &format!("install-{round}"), id, doc, left).await?;
        let report = match (r.status, report_of(&r)) {
            (CommandStatus::Success, Some(report)) => report,
            // A failed install still names what failed (structured results).
            (CommandStatus::Failed, Some(report)) if !report.failed.is_empty() => report,
            (CommandStatus::Success, None) => {
                return Err(EngineError::Patch(format!(
                    "install output is not an install report: {}",
                    r.stdout.trim()
                )))
            }
            _ => return Err(command_error("install updates", &r)),
        };
        if !report.failed.is_empty() {
            return Err(EngineError::Patch(format!(
                "updates failed to install: {}",
                report.failed.join(", ")
            )));
        }
        for u in report.installed {
            if !remaining.contains(&u.id) {
                continue;
            }
            remaining.retain(|x| x != &u.id);
            ctx.log(
                "patch",
                format!("installed {} ({} {})", u.id, u.package, u.version),
                serde_json::Value::Null,
            );
            installed.push(u);
        }
        if report.reboot_required {
            if !cfg.allow_reboot {
                return Err(EngineError::Patch(
                    "an update requires a reboot and allow_reboot = false".into(),
                ));
            }
            reboots += 1;
            if reboots > cfg.max_reboots {
                return Err(EngineError::Patch(format!(
                    "still asking for a reboot after {} reboots",
                    cfg.max_reboots
                )));
            }
            if !report.rebooted {
                retry("patch", || ctx.provider().reboot_instance(id)).await?;
            }
            ctx.log(
                "patch",
                format!(
                    "{id} rebooted (reboot {reboots} of at most {}); continuing",
                    cfg.max_reboots
                ),
                serde_json::Value::Null,
            );
            wait_ready(ctx, id, "patch").await?;
        } else if !remaining.is_empty() {
            return Err(EngineError::Patch(format!(
                "install finished but left pending: {}",
                remaining.join(", ")
            )));
        }
    }
    // Re-scan: the frozen updates must all be gone now.
    let again = scan_updates(ctx, "patch", &format!("rescan-{round}"), id).await?;
    let pending: Vec<&str> = again
        .updates
        .iter()
        .filter(|u| frozen.updates.iter().any(|f| f.id == u.id))
        .map(|u| u.id.as_str())
        .collect();
    if !pending.is_empty() {
        return Err(EngineError::Patch(format!(
            "still pending after install: {}",
            pending.join(", ")
        )));
    }
    ctx.log(
        "patch",
        format!(
            "re-scan: none of the {} selected update(s) pending",
            frozen.updates.len()
        ),
        serde_json::Value::Null,
    );
    finish(ctx, "patch", id).await;
    Ok(PatchOutput { installed, reboots })
}
