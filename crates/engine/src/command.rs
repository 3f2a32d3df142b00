//! Commands on an instance (the cloud's command channel: SSM Run Command,
//! the local fleet's exec): sent once per token, waited for within a
//! bound, cancelled when the run gives up on them, and their failures
//! told with the output's tail.

use crate::call::retry;
use crate::context::Ctx;
use crate::error::EngineError;
use crate::wait::{wait_for, wait_state};
use repave_core::provider::{CommandDocument, CommandRequest, CommandResult, CommandStatus, InstanceState};
use repave_core::{CommandId, InstanceId};
use std::collections::BTreeMap;
use std::time::Duration;

/// Running, and answering the command channel.
pub async fn wait_ready(ctx: &Ctx<'_>, id: &InstanceId, step: &str) -> Result<(), EngineError> {
    let timeout = ctx.pipeline.builder.ready_timeout.get();
    wait_state(ctx, step, id, InstanceState::Running, timeout).await?;
    let res = run_command(
        ctx,
        step,
        id,
        CommandDocument::Shell {
            script: "true".into(),
            env: BTreeMap::new(),
        },
        timeout,
    )
    .await?;
    if res.status != CommandStatus::Success {
        return Err(EngineError::Timeout {
            step: step.into(),
            seconds: timeout.as_secs(),
            what: format!("command channel of {id}: {:?}", res.status),
        });
    }
    Ok(())
}

/// Send a command and wait for its result (bounded by `timeout` plus a
/// margin for the provider to report it).
pub(crate) async fn run_command(
    ctx: &Ctx<'_>,
    step: &str,
    instance: &InstanceId,
    document: CommandDocument,
    timeout: Duration,
) -> Result<CommandResult, EngineError> {
    // The n-th command of this step: the same token when the step runs
    // again after a restart, so a provider that keeps tokens hands back the
    // command already sent (and its result) instead of running it twice.
    let token = ctx.command_token();
    run_command_as(ctx, step, instance, document, timeout, token, None, |_| Ok(())).await
}

/// [`run_command`] with a given token, resuming `previous` (a command this
/// step sent before) unless it ended without success, and telling
/// `on_sent` a new command's id before waiting for it. A command still
/// running when the wait ends (timeout, cancel) is cancelled.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn run_command_as(
    ctx: &Ctx<'_>,
    step: &str,
    instance: &InstanceId,
    document: CommandDocument,
    timeout: Duration,
    token: String,
    previous: Option<CommandId>,
    mut on_sent: impl FnMut(&CommandId) -> Result<(), EngineError>,
) -> Result<CommandResult, EngineError> {
    let p = ctx.provider();
    // Shell documents carry their own execution timeout, which the
    // provider reports; patch documents have none, so their bound is ours.
    let margin = match document {
        CommandDocument::Shell { .. } => Duration::from_secs(30),
        _ => Duration::ZERO,
    };
    let resumable = match &previous {
        Some(id) => {
            let r = retry(step, || p.command_result(id)).await?;
            !r.status.is_terminal() || r.status == CommandStatus::Success
        }
        None => false,
    };
    let id = match previous.clone().filter(|_| resumable) {
        Some(id) => {
            ctx.log(
                step,
                format!("waiting for command {id}, sent before"),
                serde_json::Value::Null,
            );
            id
        }
        None => {
            // Same token, same command: one sent again after a previous
            // one that ended without success needs a token of its own
            // (derived from that one, so a crash while sending it still
            // finds it).
            let token = match &previous {
                Some(before) => format!(
                    "{token}-after-{}",
                    before.as_str().split_once('/').map_or(before.as_str(), |(id, _)| id)
                ),
                None => token,
            };
            let req = CommandRequest {
                instance: instance.clone(),
                document,
                timeout,
                token,
            };
            let id = retry(step, || p.send_command(req.clone())).await?;
            on_sent(&id)?;
            id
        }
    };
    let waited = wait_for(
        ctx,
        step,
        &format!("command {id} on {instance}"),
        timeout + margin,
        || async {
            let r = retry(step, || p.command_result(&id)).await?;
            Ok(r.status.is_terminal().then_some(r))
        },
    )
    .await;
    if waited.is_err() {
        // Nothing may keep patching an instance the run has given up on.
        match p.cancel_command(&id).await {
            Ok(()) => ctx.log(step, format!("command {id} cancelled"), serde_json::Value::Null),
            Err(e) => ctx.log(
                step,
                format!("could not cancel command {id}: {e}"),
                serde_json::Value::Null,
            ),
        }
    }
    waited
}

pub(crate) fn tail(s: &str, n: usize) -> &str {
    let start = s.len().saturating_sub(n);
    let mut i = start;
    while !s.is_char_boundary(i) {
        i += 1;
    }
    s[i..].trim()
}

pub(crate) fn command_error(what: &str, r: &CommandResult) -> EngineError {
    EngineError::Patch(format!(
        "{what}: {:?} (exit code {}): {}",
        r.status,
        r.exit_code.map(|c| c.to_string()).unwrap_or_else(|| "none".into()),
        tail(
            if r.stderr.trim().is_empty() {
                &r.stdout
            } else {
                &r.stderr
            },
            400
        )
    ))
}
