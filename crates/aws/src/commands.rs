//! Commands through SSM Run Command: one SendCommand per instance (by
//! InstanceIds), then GetCommandInvocation for that instance only, never
//! ListCommandInvocations (moto lacks it, and it pages through everything).
//!
//! A [`CommandId`] is `"{ssm command id}/{instance id}/{kind}"`, so a result
//! can be read (and its output interpreted) by a process that did not send
//! the command.

use crate::error::{malformed, map_sdk};
use crate::patching::{self, CommandKind, DocParams, InstancePatch, Platform, PATCH_DOCUMENT};
use crate::AwsProvider;
use async_trait::async_trait;
use aws_sdk_ssm::types::{CommandInvocationStatus, PatchOrchestratorFilter};
use repave_core::provider::{
    CommandDocument, CommandRequest, CommandResult, CommandStatus, Commands, InstallReport, Result,
};
use repave_core::{CommandId, InstanceId, ProviderError};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::time::Instant;

/// How often SendCommand is retried while the instance is not yet
/// registered with SSM (`InvalidInstanceId` right after boot).
const REGISTRATION_POLL: Duration = Duration::from_secs(5);

fn encode(command: &str, instance: &InstanceId, kind: CommandKind) -> CommandId {
    CommandId::new(format!("{command}/{instance}/{}", kind.as_str()))
}

fn decode(id: &CommandId) -> Result<(String, InstanceId, CommandKind)> {
    let mut it = id.as_str().splitn(3, '/');
    let (Some(c), Some(i), Some(k)) = (it.next(), it.next(), it.next()) else {
        return Err(ProviderError::not_found(
            "GetCommandInvocation",
            format!("InvalidCommandId: {id} is not a repave AWS command id"),
        ));
    };
    let kind = CommandKind::parse(k).ok_or_else(|| {
        ProviderError::not_found(
            "GetCommandInvocation",
            format!("InvalidCommandId: unknown kind in {id}"),
        )
    })?;
    Ok((c.to_string(), InstanceId::new(i), kind))
}

/// The script sent to AWS-RunShellScript / AWS-RunPowerShellScript: values
/// are exported in a preamble, quoted, never spliced into the script.
pub(crate) fn shell_commands(platform: Platform, script: &str, env: &BTreeMap<String, String>) -> Result<Vec<String>> {
    let mut lines = Vec::with_capacity(env.len() + 1);
    for (k, v) in env {
        if !patching::valid_env_name(k) {
            return Err(ProviderError::permanent(
                "SendCommand",
                format!("InvalidParameters: environment variable name {k:?}"),
            ));
        }
        lines.push(match platform {
            Platform::Linux => format!("export {k}={}", patching::sh_quote(v)),
            Platform::Windows => format!("$env:{k} = {}", patching::ps_quote(v)),
        });
    }
    // The engine's readiness probe is the POSIX `true`, which PowerShell
    // does not know.
    if platform == Platform::Windows && script.trim() == "true" {
        lines.push("exit 0".to_string());
    } else {
        lines.push(script.to_string());
    }
    Ok(lines)
}

fn status(s: Option<&CommandInvocationStatus>) -> CommandStatus {
    match s {
        Some(CommandInvocationStatus::Success) => CommandStatus::Success,
        Some(CommandInvocationStatus::Failed) => CommandStatus::Failed,
        Some(CommandInvocationStatus::TimedOut) => CommandStatus::TimedOut,
        Some(CommandInvocationStatus::Cancelled) => CommandStatus::Cancelled,
        Some(CommandInvocationStatus::InProgress) | Some(CommandInvocationStatus::Cancelling) => {
            CommandStatus::InProgress
        }
        _ => CommandStatus::Pending,
    }
}

impl AwsProvider {
    /// Windows or Linux, from DescribeInstances (cached per instance).
    pub(crate) async fn platform(&self, id: &InstanceId) -> Result<Platform> {
        if let Some(p) = self.platforms.lock().expect("platform lock").get(id) {
            return Ok(*p);
        }
        let i = self.describe_visible(id).await?;
        let windows = i.platform().is_some_and(|p| p.as_str().eq_ignore_ascii_case("windows"))
            || i.platform_details()
                .is_some_and(|d| d.to_ascii_lowercase().contains("windows"));
        let p = if windows { Platform::Windows } else { Platform::Linux };
        self.platforms.lock().expect("platform lock").insert(id.clone(), p);
        Ok(p)
    }

    async fn instance_patches(&self, id: &InstanceId, states: &[&str]) -> Result<Vec<InstancePatch>> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        let filter = PatchOrchestratorFilter::builder()
            .key("State")
            .set_values(Some(states.iter().map(|s| s.to_string()).collect()))
            .build();
        loop {
            let page = self
                .ssm
                .describe_instance_patches()
                .instance_id(id.as_str())
                .filters(filter.clone())
                .set_next_token(token.take())
                .send()
                .await
                .map_err(|e| map_sdk("DescribeInstancePatches", e))?;
            out.extend(page.patches().iter().map(|p| InstancePatch {
                id: if p.kb_id().is_empty() {
                    p.title().to_string()
                } else {
                    p.kb_id().to_string()
                },
                title: p.title().to_string(),
                classification: p.classification().to_string(),
                severity: p.severity().to_string(),
                state: p.state().as_str().to_string(),
            }));
            match page.next_token() {
                Some(t) if !t.is_empty() => token = Some(t.to_string()),
                _ => break,
            }
        }
        Ok(out)
    }

    /// The id of a command sent to `instance` with `comment` (a repave
    /// token), if there is one. An instance SSM does not know yet has none.
    async fn sent_before(&self, instance: &InstanceId, comment: &str) -> Result<Option<String>> {
        let mut token: Option<String> = None;
        loop {
            let page = match self
                .ssm
                .list_commands()
                .instance_id(instance.as_str())
                .set_next_token(token.take())
                .send()
                .await
            {
                Ok(p) => p,
                Err(e) => {
                    let e = map_sdk("ListCommands", e);
                    if e.message.starts_with("InvalidInstanceId") {
                        return Ok(None);
                    }
                    return Err(e);
                }
            };
            if let Some(c) = page.commands().iter().find(|c| c.comment() == Some(comment)) {
                return Ok(c.command_id().map(str::to_string));
            }
            match page.next_token() {
                Some(t) if !t.is_empty() => token = Some(t.to_string()),
                _ => return Ok(None),
            }
        }
    }

    /// Patches Patch Manager counts as installed but waiting for a reboot.
    async fn pending_reboots(&self, id: &InstanceId) -> Result<i32> {
        let out = self
            .ssm
            .describe_instance_patch_states()
            .instance_ids(id.as_str())
            .send()
            .await
            .map_err(|e| map_sdk("DescribeInstancePatchStates", e))?;
        Ok(out
            .instance_patch_states()
            .iter()
            .map(|s| s.installed_pending_reboot_count().unwrap_or(0))
            .sum())
    }

    /// A finished patch command's result as repave's JSON, from Patch
    /// Manager's structured answers (the text is only a log).
    async fn interpret(&self, kind: CommandKind, instance: &InstanceId, raw: &str, exit_code: i32) -> Result<String> {
        let json = |v: serde_json::Result<String>| v.map_err(|e| malformed("GetCommandInvocation", e));
        // An emulator without Patch Manager ran nothing.
        if self.options.empty_patch_output_is_clean && raw.trim().is_empty() {
            return match kind {
                CommandKind::Install => json(serde_json::to_string(&InstallReport::default())),
                _ => Ok("[]".into()),
            };
        }
        match kind {
            CommandKind::Shell => Ok(raw.to_string()),
            CommandKind::Scan => {
                let patches = self.instance_patches(instance, &["Missing", "Failed"]).await?;
                json(serde_json::to_string(&patching::scan_result(&patches)))
            }
            CommandKind::Install => {
                let c = self.patch_context(instance, None).await?;
                let approved = self.approved_patches(&c).await?;
                let patches = self
                    .instance_patches(instance, &["Installed", "InstalledPendingReboot", "Failed"])
                    .await?;
                let pending = self.pending_reboots(instance).await?;
                json(serde_json::to_string(&patching::install_result(
                    &patches, &approved, pending, exit_code,
                )))
            }
        }
    }

    /// Parameters for a patch command, after making the run's baseline say
    /// what this command must install.
    async fn patch_command(&self, req: &CommandRequest) -> Result<(CommandKind, DocParams)> {
        let (selection, install) = match &req.document {
            CommandDocument::ScanUpdates { selection } => (selection, None),
            CommandDocument::InstallUpdates { selection, ids, .. } => (selection, Some(ids)),
            CommandDocument::Shell { .. } => unreachable!("shell commands are not patch commands"),
        };
        let kind = if install.is_some() {
            CommandKind::Install
        } else {
            CommandKind::Scan
        };
        if !self.options.empty_patch_output_is_clean {
            let c = self.patch_context(&req.instance, selection.os).await?;
            let scan = AwsProvider::scan_baseline_for(&c, selection);
            let baseline = match install {
                Some(ids) => patching::install_baseline(&scan, ids),
                None => scan,
            };
            self.apply_baseline(&req.instance, &c, &baseline).await?;
        }
        Ok((kind, patching::run_patch_baseline_params(kind == CommandKind::Install)))
    }
}

#[async_trait]
impl Commands for AwsProvider {
    /// SendCommand to one instance. Shell → AWS-RunShellScript (Linux) or
    /// AWS-RunPowerShellScript (Windows); ScanUpdates / InstallUpdates → see
    /// [`crate::patching`]. While the instance is not yet registered with SSM
    /// (`InvalidInstanceId`), SendCommand is retried every 5 s within
    /// `req.timeout`: that is the wait for the command channel.
    async fn send_command(&self, req: CommandRequest) -> Result<CommandId> {
        let platform = self.platform(&req.instance).await?;
        let timeout = req.timeout.as_secs().clamp(30, 172_800);
        let (document, kind, mut params): (&str, CommandKind, DocParams) = match &req.document {
            CommandDocument::Shell { script, env } => {
                let mut params = DocParams::new();
                params.insert("commands".into(), shell_commands(platform, script, env)?);
                // The document's own execution timeout.
                params.insert("executionTimeout".into(), vec![timeout.to_string()]);
                let doc = if platform == Platform::Windows {
                    "AWS-RunPowerShellScript"
                } else {
                    "AWS-RunShellScript"
                };
                (doc, CommandKind::Shell, params)
            }
            _ => {
                let (kind, params) = self.patch_command(&req).await?;
                (PATCH_DOCUMENT, kind, params)
            }
        };
        params.retain(|_, v| !v.is_empty());
        // SendCommand has no client token: the token rides in the comment,
        // and a command this instance already got with it (sent before a
        // crash, or by a request whose answer was lost) is handed back
        // instead of running twice.
        let comment = truncate(&format!("repave {}", req.token), 100);
        if let Some(id) = self.sent_before(&req.instance, &comment).await? {
            return Ok(encode(&id, &req.instance, kind));
        }
        let deadline = Instant::now() + req.timeout;
        loop {
            // TimeoutSeconds bounds delivery; AWS-RunPatchBaseline has no
            // execution-timeout parameter (its step allows 2 h), so the
            // engine cancels a patch command still running at its timeout.
            let mut call = self
                .ssm
                .send_command()
                .instance_ids(req.instance.as_str())
                .document_name(document)
                .timeout_seconds(timeout as i32)
                .comment(&comment);
            for (k, v) in &params {
                call = call.parameters(k, v.clone());
            }
            match call.send().await {
                Ok(out) => {
                    let id = out
                        .command()
                        .and_then(|c| c.command_id())
                        .ok_or_else(|| malformed("SendCommand", "no command id"))?;
                    return Ok(encode(id, &req.instance, kind));
                }
                Err(e) => {
                    let e = map_sdk("SendCommand", e);
                    let unregistered = e.message.starts_with("InvalidInstanceId");
                    if unregistered && Instant::now() + REGISTRATION_POLL < deadline {
                        tokio::time::sleep(REGISTRATION_POLL).await;
                        continue;
                    }
                    return Err(e);
                }
            }
        }
    }

    /// GetCommandInvocation for the command's one instance. An invocation
    /// SSM has not recorded yet (`InvocationDoesNotExist` just after
    /// SendCommand) is `Pending`.
    async fn command_result(&self, id: &CommandId) -> Result<CommandResult> {
        let (command, instance, kind) = decode(id)?;
        let out = match self
            .ssm
            .get_command_invocation()
            .command_id(&command)
            .instance_id(instance.as_str())
            .send()
            .await
        {
            Ok(o) => o,
            Err(e) => {
                let e = map_sdk("GetCommandInvocation", e);
                if e.message.starts_with("InvocationDoesNotExist") {
                    return Ok(CommandResult {
                        id: id.clone(),
                        status: CommandStatus::Pending,
                        exit_code: None,
                        stdout: String::new(),
                        stderr: String::new(),
                    });
                }
                return Err(e);
            }
        };
        let st = status(out.status());
        let raw = out.standard_output_content().unwrap_or_default().to_string();
        let mut stderr = out.standard_error_content().unwrap_or_default().to_string();
        let exit_code = (st.is_terminal() && out.response_code() >= 0).then_some(out.response_code());
        // A failed install still says which patches failed: Patch Manager
        // records them whatever the text shows.
        let structured = st == CommandStatus::Success || (st == CommandStatus::Failed && kind == CommandKind::Install);
        let stdout = if structured && kind != CommandKind::Shell {
            // Keep the document's own log next to the interpreted result.
            if !raw.trim().is_empty() {
                let cut = if raw.chars().count() >= patching::SSM_OUTPUT_LIMIT {
                    " (the first 24,000 characters, as SSM keeps them; the result above is Patch Manager's)"
                } else {
                    ""
                };
                stderr = format!(
                    "{stderr}\n--- {} output{cut} ---\n{raw}",
                    out.document_name().unwrap_or("document")
                );
            }
            self.interpret(kind, &instance, &raw, out.response_code()).await?
        } else {
            raw
        };
        Ok(CommandResult {
            id: id.clone(),
            status: st,
            exit_code,
            stdout,
            stderr,
        })
    }

    /// CancelCommand for the command's one instance. A command that already
    /// finished is not an error (AWS: InvalidCommandId once it is done).
    async fn cancel_command(&self, id: &CommandId) -> Result<()> {
        let (command, instance, _) = decode(id)?;
        match self
            .ssm
            .cancel_command()
            .command_id(&command)
            .instance_ids(instance.as_str())
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => {
                let e = map_sdk("CancelCommand", e);
                if e.message.starts_with("InvalidCommandId") || e.message.starts_with("DuplicateInstanceId") {
                    return Ok(());
                }
                Err(e)
            }
        }
    }

    /// Remove the run's patch baseline and patch group.
    async fn finish_patching(&self, instance: &InstanceId) -> Result<()> {
        if self.options.empty_patch_output_is_clean {
            return Ok(());
        }
        self.finish_baseline(instance).await
    }

    /// Windows builders are generalized with EC2Launch v2 before imaging.
    async fn imaging_preparation(&self, instance: &InstanceId) -> Result<Option<CommandDocument>> {
        Ok(
            (self.platform(instance).await? == Platform::Windows).then(|| CommandDocument::Shell {
                script: patching::SYSPREP_SCRIPT.to_string(),
                env: BTreeMap::new(),
            }),
        )
    }
}
fn truncate(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_ids_round_trip() {
        let id = encode("abc-123", &InstanceId::new("i-0abc"), CommandKind::Install);
        let (c, i, k) = decode(&id).expect("decodes");
        assert_eq!((c.as_str(), i.as_str(), k), ("abc-123", "i-0abc", CommandKind::Install));
        assert!(decode(&CommandId::new("nonsense")).is_err());
    }

    #[test]
    fn env_goes_in_a_quoted_preamble() {
        let mut env = BTreeMap::new();
        env.insert("GREETING".to_string(), "it's $(whoami)".to_string());
        let lines = shell_commands(Platform::Linux, "echo \"$GREETING\"", &env).expect("valid");
        assert_eq!(
            lines,
            vec![
                r"export GREETING='it'\''s $(whoami)'".to_string(),
                "echo \"$GREETING\"".to_string()
            ]
        );
        let lines = shell_commands(Platform::Windows, "Write-Output $env:GREETING", &env).expect("valid");
        assert_eq!(lines[0], "$env:GREETING = 'it''s $(whoami)'");
        let probe = shell_commands(Platform::Windows, "true", &BTreeMap::new()).expect("valid");
        assert_eq!(probe, vec!["exit 0".to_string()]);
        env.insert("BAD NAME".into(), "x".into());
        assert!(shell_commands(Platform::Linux, "true", &env).is_err());
    }
}
