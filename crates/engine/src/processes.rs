//! The group's scaling processes around a roll (AWS Auto Scaling's
//! SuspendProcesses / ResumeProcesses).
//!
//! - A roll needs `Launch`, `Terminate`, `AddToLoadBalancer` and
//!   `ReplaceUnhealthy` (and `InstanceRefresh` for `strategy = "native"`):
//!   a group with any of them suspended is refused before anything is
//!   created, naming them.
//! - During the roll repave suspends `AZRebalance`, `AlarmNotification` and
//!   `ScheduledActions`, as CloudFormation's rolling update does, so the
//!   group does not rebalance, scale on an alarm or run a scheduled action
//!   while instances are replaced; afterwards it resumes exactly the ones it
//!   suspended (never one the operator had suspended before), on every path.
//!
//! Journaled on the step `{prefix}suspend_processes`: its checkpoint names
//! the processes repave suspended and whether they were restored, written
//! before SuspendProcesses is called. A run killed with them suspended
//! restores them when it is resumed (or when `gc` finds its run no longer
//! driven); a resumed roll suspends again what it needs.

use crate::call::retry;
use crate::context::Ctx;
use crate::error::EngineError;
use repave_core::provider::Provider;
use repave_store::Store;
use serde::{Deserialize, Serialize};

use repave_core::processes::{refusal, DURING_ROLL};

/// The journal of what a roll suspended.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Suspension {
    pub group: String,
    /// Suspended by repave (the operator's own suspensions never appear).
    pub processes: Vec<String>,
    pub restored: bool,
}

fn step_name(roll_step: &str) -> String {
    crate::journal::beside(roll_step, "suspend_processes")
}

fn journaled(store: &Store, ctx: &Ctx<'_>, step: &str) -> Result<Option<Suspension>, EngineError> {
    Ok(store
        .step(ctx.run_id(), step)?
        .and_then(|s| s.checkpoint)
        .and_then(|c| serde_json::from_value::<Suspension>(c).ok()))
}

/// Run `f` (the roll and its verify) with the roll's processes suspended,
/// and restore them whatever `f` returns. A failure to restore is reported
/// after `f`'s own error, never instead of it.
pub(crate) async fn suspended_during<T, F, Fut>(ctx: &Ctx<'_>, roll_step: &str, f: F) -> Result<T, EngineError>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<T, EngineError>>,
{
    let step = step_name(roll_step);
    let store = &ctx.engine.store;
    let p = ctx.provider();
    if !p.has_scaling_processes() {
        return f().await;
    }
    let group = ctx.pipeline.group.clone();
    let g = retry(&step, || p.describe_group(&group)).await?;
    let native = ctx.pipeline.rollout.strategy == repave_core::config::Strategy::Native;
    if let Some(reason) = refusal(&group, &g.suspended, native) {
        // Not the image's doing: the run pauses until someone resumes them.
        return Err(EngineError::Paused(reason));
    }
    // A previous attempt that did not restore: what it suspended is ours
    // even though it now reads as suspended.
    let mut ours = journaled(store, ctx, &step)?
        .filter(|s| !s.restored)
        .map(|s| s.processes)
        .unwrap_or_default();
    for proc in DURING_ROLL {
        if !g.suspended.iter().any(|s| s == proc) && !ours.iter().any(|s| s == proc) {
            ours.push(proc.to_string());
        }
    }
    let mut journal = Suspension {
        group: group.clone(),
        processes: ours.clone(),
        restored: false,
    };
    let intent = serde_json::json!({ "group": group, "suspend": ours, "already_suspended": g.suspended });
    store.begin_step(ctx.run_id(), &step, &intent, ctx.now())?;
    store.checkpoint_step(ctx.run_id(), &step, &serde_json::to_value(&journal).expect("journal"))?;
    if !ours.is_empty() {
        ctx.log(
            &step,
            format!("suspending {} for the roll", ours.join(", ")),
            serde_json::to_value(&journal).unwrap_or_default(),
        );
    }
    if let Err(e) = retry(&step, || p.suspend_processes(&group, &ours)).await {
        let restored = restore(p, store, ctx.run_id(), &step, &mut journal).await;
        return Err(restored.err().unwrap_or(e));
    }
    store.finish_step(
        ctx.run_id(),
        &step,
        &serde_json::to_value(&journal).expect("journal"),
        ctx.now(),
    )?;
    let out = f().await;
    match restore(p, store, ctx.run_id(), &step, &mut journal).await {
        Ok(()) => {
            if !journal.processes.is_empty() {
                ctx.log(
                    &step,
                    format!("resumed {} after the roll", journal.processes.join(", ")),
                    serde_json::Value::Null,
                );
            }
            out
        }
        Err(e) => match out {
            Err(first) => Err(first),
            Ok(_) => Err(EngineError::Paused(format!(
                "the roll finished but the processes it suspended ({}) could not be resumed: {e}; `repave resume` or `repave gc` resumes them",
                journal.processes.join(", ")
            ))),
        },
    }
}

async fn restore(
    p: &dyn Provider,
    store: &Store,
    run: &repave_core::RunId,
    step: &str,
    journal: &mut Suspension,
) -> Result<(), EngineError> {
    if journal.restored {
        return Ok(());
    }
    retry(step, || p.resume_processes(&journal.group, &journal.processes)).await?;
    journal.restored = true;
    store.checkpoint_step(run, step, &serde_json::to_value(&*journal).expect("journal"))?;
    Ok(())
}

/// `gc`: processes a run suspended and never restored, for runs no
/// process drives any more. Returns (run, suspension) for each.
pub(crate) fn unrestored(
    store: &Store,
    run: &repave_store::RunRecord,
) -> Result<Vec<(String, Suspension)>, EngineError> {
    let mut out = Vec::new();
    for step in ["suspend_processes", "rollback_suspend_processes"] {
        if let Some(s) = store
            .step(&run.id, step)?
            .and_then(|s| s.checkpoint)
            .and_then(|c| serde_json::from_value::<Suspension>(c).ok())
            .filter(|s| !s.restored && !s.processes.is_empty())
        {
            out.push((step.to_string(), s));
        }
    }
    Ok(out)
}

/// Resume what `unrestored` found and journal it restored.
pub(crate) async fn restore_for_gc(
    p: &dyn Provider,
    store: &Store,
    run: &repave_core::RunId,
    step: &str,
    mut journal: Suspension,
) -> Result<(), EngineError> {
    restore(p, store, run, step, &mut journal).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_names_follow_the_roll_step() {
        assert_eq!(step_name("roll"), "suspend_processes");
        assert_eq!(step_name("rollback_roll"), "rollback_suspend_processes");
    }
}
