//! The command channel: commands run asynchronously in the daemon, in the
//! instance root, and their results wait in memory for `command_result`.

use super::instances::{self, StopMode};
use super::Shared;
use crate::error::LocalError;
use repave_core::provider::{
    CommandDocument, CommandRequest, CommandResult, CommandStatus, InstallReport, InstanceState,
};
use repave_core::CommandId;
use std::sync::Arc;

/// Accept a command (a token already used returns the same command id).
pub(crate) fn send(shared: &Arc<Shared>, req: CommandRequest) -> Result<CommandId, LocalError> {
    let mut cloud = shared.cloud();
    if !req.token.is_empty() {
        if let Some(id) = cloud.command_tokens.get(&req.token) {
            return Ok(id.clone());
        }
    }
    let rec = cloud
        .state
        .instances
        .get(&req.instance)
        .ok_or_else(|| LocalError::not_found(format!("instance {}", req.instance)))?;
    if rec.instance.state != InstanceState::Running {
        return Err(LocalError::invalid(format!(
            "instance {} is {:?}; commands need a running instance",
            req.instance, rec.instance.state
        )));
    }
    let image = rec.instance.image.to_string();
    let id = CommandId::new(crate::util::new_id("cmd"));
    cloud.commands.insert(
        id.clone(),
        CommandResult {
            id: id.clone(),
            status: CommandStatus::InProgress,
            exit_code: None,
            stdout: String::new(),
            stderr: String::new(),
        },
    );
    if !req.token.is_empty() {
        cloud.command_tokens.insert(req.token.clone(), id.clone());
    }
    drop(cloud);
    tokio::spawn(execute(shared.clone(), id.clone(), req, image));
    Ok(id)
}

/// The result so far.
pub(crate) fn result(shared: &Shared, id: &CommandId) -> Result<CommandResult, LocalError> {
    shared
        .cloud()
        .commands
        .get(id)
        .cloned()
        .ok_or_else(|| LocalError::not_found(format!("command {id}")))
}

async fn execute(shared: Arc<Shared>, id: CommandId, req: CommandRequest, image: String) {
    let root = shared.paths.root(&req.instance);
    let exe = shared.exe.to_string_lossy().to_string();
    let mut env = vec![
        ("REPAVE_INSTANCE_ID".to_string(), req.instance.to_string()),
        ("REPAVE_IMAGE_ID".to_string(), image),
        (
            "REPAVE_FEED".to_string(),
            shared.paths.feed.to_string_lossy().to_string(),
        ),
    ];
    let selection_json = |s| serde_json::to_string(s).unwrap_or_default();
    // Values travel in the environment; nothing is spliced into a script.
    let (program, args, reboot_allowed) = match &req.document {
        CommandDocument::Shell { script, env: vars } => {
            env.extend(vars.iter().map(|(k, v)| (k.clone(), v.clone())));
            ("sh".to_string(), vec!["-c".to_string(), script.clone()], false)
        }
        CommandDocument::ScanUpdates { selection } => {
            env.push(("REPAVE_SELECTION".into(), selection_json(selection)));
            (exe, vec!["pkg".into(), "scan".into()], false)
        }
        CommandDocument::InstallUpdates {
            selection,
            ids,
            allow_reboot,
        } => {
            env.push(("REPAVE_SELECTION".into(), selection_json(selection)));
            env.push(("REPAVE_UPDATE_IDS".into(), ids.join(",")));
            (exe, vec!["pkg".into(), "install".into()], *allow_reboot)
        }
    };
    let mut result = match crate::exec::run(&program, &args, &root, &env, req.timeout).await {
        Ok(out) => CommandResult {
            id: id.clone(),
            status: if out.timed_out {
                CommandStatus::TimedOut
            } else if out.exit_code == Some(0) {
                CommandStatus::Success
            } else {
                CommandStatus::Failed
            },
            exit_code: out.exit_code,
            stdout: out.stdout,
            stderr: out.stderr,
        },
        Err(e) => CommandResult {
            id: id.clone(),
            status: CommandStatus::Failed,
            exit_code: None,
            stdout: String::new(),
            stderr: format!("starting {program}: {e}"),
        },
    };
    // Like SSM with AllowReboot: the instance reboots once the install says so.
    if reboot_allowed && result.status == CommandStatus::Success {
        let wants = serde_json::from_str::<InstallReport>(result.stdout.trim()).is_ok_and(|r| r.reboot_required);
        if wants {
            if let Err(e) = instances::stop(&shared, &req.instance, StopMode::Reboot).await {
                result.status = CommandStatus::Failed;
                result.stderr.push_str(&format!("\nreboot failed: {e}"));
            }
        }
    }
    tracing::info!(command = %id, instance = %req.instance, status = ?result.status, "command finished");
    shared.cloud().commands.insert(id, result);
}
