//! The command channel: commands run asynchronously in the daemon, in the
//! instance root. Each command is also a file under `local/commands/`
//! (written when it is accepted and when it ends), so a restarted fleet
//! process still answers `command_result` and still recognises a retried
//! token — like SSM, whose commands outlive the agent.

use super::instances::{self, StopMode};
use super::Shared;
use crate::error::LocalError;
use repave_core::provider::{
    CommandDocument, CommandRequest, CommandResult, CommandStatus, InstallReport, InstanceState,
};
use repave_core::{CommandId, InstanceId};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

/// Command files kept; the oldest beyond this are removed at start.
const KEEP: usize = 1000;

/// What a command file holds.
#[derive(serde::Serialize, serde::Deserialize)]
struct Stored {
    token: String,
    instance: InstanceId,
    result: CommandResult,
}

fn persist(dir: &Path, stored: &Stored) {
    let path = dir.join(format!("{}.json", stored.result.id));
    let json = serde_json::to_vec(stored).expect("command serializes");
    if let Err(e) = crate::util::write_atomic(&path, &json) {
        tracing::error!(command = %stored.result.id, "could not record the command: {e}");
    }
}

/// The commands a previous fleet process recorded. One it was still
/// running cannot report any more: it is failed, saying why.
pub(crate) fn load(dir: &Path) -> (HashMap<CommandId, CommandResult>, HashMap<String, CommandId>) {
    let mut files: Vec<(std::time::SystemTime, std::path::PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .map(|e| {
            let modified = e.metadata().and_then(|m| m.modified()).unwrap_or(std::time::UNIX_EPOCH);
            (modified, e.path())
        })
        .collect();
    files.sort();
    let excess = files.len().saturating_sub(KEEP);
    for (_, path) in files.drain(..excess) {
        if let Err(e) = std::fs::remove_file(&path) {
            tracing::warn!(file = %path.display(), "could not remove an old command record: {e}");
        }
    }
    let (mut results, mut tokens) = (HashMap::new(), HashMap::new());
    for (_, path) in files {
        let Some(mut stored) = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<Stored>(&b).ok())
        else {
            tracing::warn!(file = %path.display(), "unreadable command record skipped");
            continue;
        };
        if stored.result.status == CommandStatus::InProgress {
            stored.result.status = CommandStatus::Failed;
            stored
                .result
                .stderr
                .push_str("the fleet process stopped while this command ran; its outcome is unknown (send it again)");
            persist(dir, &stored);
        }
        if !stored.token.is_empty() {
            tokens.insert(stored.token.clone(), stored.result.id.clone());
        }
        results.insert(stored.result.id.clone(), stored.result);
    }
    (results, tokens)
}

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
    let accepted = CommandResult {
        id: id.clone(),
        status: CommandStatus::InProgress,
        exit_code: None,
        stdout: String::new(),
        stderr: String::new(),
    };
    persist(
        &shared.paths.commands,
        &Stored {
            token: req.token.clone(),
            instance: req.instance.clone(),
            result: accepted.clone(),
        },
    );
    cloud.commands.insert(id.clone(), accepted);
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
    let mut env = instances::instance_env(&shared, &req.instance, &image);
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
        let report = serde_json::from_str::<InstallReport>(result.stdout.trim()).ok();
        if let Some(mut report) = report.filter(|r| r.reboot_required) {
            match instances::stop(&shared, &req.instance, StopMode::Reboot).await {
                Ok(()) => {
                    // Said in the report, so the engine does not reboot again.
                    report.rebooted = true;
                    if let Ok(json) = serde_json::to_string(&report) {
                        result.stdout = json;
                    }
                }
                Err(e) => {
                    result.status = CommandStatus::Failed;
                    result.stderr.push_str(&format!("\nreboot failed: {e}"));
                }
            }
        }
    }
    tracing::info!(command = %id, instance = %req.instance, status = ?result.status, "command finished");
    if let Err(e) = shared.writable() {
        tracing::warn!(command = %id, "not recorded: {e}");
        return;
    }
    persist(
        &shared.paths.commands,
        &Stored {
            token: req.token.clone(),
            instance: req.instance.clone(),
            result: result.clone(),
        },
    );
    shared.cloud().commands.insert(id, result);
}
