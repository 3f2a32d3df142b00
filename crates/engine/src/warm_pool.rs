//! The group's warm pool around a roll (AWS Auto Scaling warm pools).
//!
//! A warm pool holds instances launched ahead of need from the launch spec
//! of their time; when the group scales out it draws them in first, with
//! the image they were launched with. A roll surges (raises desired
//! capacity), so without care every surge would pull an old-image instance
//! out of the pool instead of launching a new one, and the pool would go on
//! handing out the old image after the roll.
//!
//! AWS: "existing instances are not affected" by a new launch template; "to
//! force replacement warm pool instances ... you can terminate existing
//! instances in the warm pool. Amazon EC2 Auto Scaling immediately starts
//! launching new instances to replace" them; "an instance refresh first
//! replaces InService instances. Then it replaces instances in the warm
//! pool" (https://docs.aws.amazon.com/autoscaling/ec2/userguide/ec2-auto-scaling-warm-pools.html,
//! "Update the instances in a warm pool").
//!
//! So before repave's own roll (the group already names the new launch
//! spec), the pool's instances on another image are terminated: the pool
//! refills from the new spec, and what a surge draws from it is on the new
//! image. Journaled as the step `{prefix}warm_pool` (intent: the instances
//! to terminate), idempotent: a resumed run terminates what is left. With
//! `strategy = "native"` Instance Refresh replaces the pool itself.
//! `verify` checks the pool holds nothing on another image either way.

use crate::call::retry;
use crate::context::Ctx;
use crate::error::EngineError;
use repave_core::provider::WarmInstance;
use repave_core::{ImageId, InstanceId};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// What the step did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WarmPoolOutput {
    /// "i-1 on ami-0": the pool instances terminated for being on another
    /// image.
    pub replaced: Vec<String>,
}

/// How long the pool may take to show the terminated instances leaving.
const SETTLE: Duration = Duration::from_secs(300);

fn step_name(roll_step: &str) -> String {
    crate::journal::beside(roll_step, "warm_pool")
}

/// Pool instances that could still serve on an image other than `target`.
pub(crate) fn off_target<'a>(pool: &'a [WarmInstance], target: &'a ImageId) -> impl Iterator<Item = &'a WarmInstance> {
    pool.iter().filter(move |w| &w.image != target && !w.leaving())
}

/// Before the roll: terminate the pool's instances on another image than
/// `target` (journaled), and wait until none of them can be drawn in.
/// Returns what was replaced (empty: no pool, or nothing to do).
pub(crate) async fn refresh(ctx: &Ctx<'_>, roll_step: &str, target: &ImageId) -> Result<Vec<String>, EngineError> {
    let step = step_name(roll_step);
    let p = ctx.provider();
    let group = ctx.pipeline.group.clone();
    // `ctx.step` would skip a done step too, but its intent needs the pool
    // read first: a resumed run does not read it again for nothing.
    if let Some(done) = ctx.engine.store.step(ctx.run_id(), &step)? {
        if done.state == repave_store::StepState::Done {
            if let Some(out) = done
                .output
                .and_then(|o| serde_json::from_value::<WarmPoolOutput>(o).ok())
            {
                return Ok(out.replaced);
            }
        }
    }
    let pool = retry(&step, || p.warm_pool(&group)).await?;
    let old: Vec<WarmInstance> = off_target(&pool, target).cloned().collect();
    if old.is_empty() {
        return Ok(vec![]);
    }
    let ids: Vec<&InstanceId> = old.iter().map(|w| &w.id).collect();
    let intent = serde_json::json!({ "group": group, "target": target, "terminate": ids });
    let out: WarmPoolOutput = ctx
        .step(&step, intent, || async {
            let replaced: Vec<String> = old.iter().map(WarmInstance::label).collect();
            ctx.log(
                &step,
                format!(
                    "warm pool: terminating {} instance(s) on an old image so the pool refills from the new launch spec: {}",
                    old.len(),
                    replaced.join(", ")
                ),
                serde_json::json!({ "warm_pool": replaced }),
            );
            for w in &old {
                match retry(&step, || p.terminate_group_instance(&group, &w.id, false)).await {
                    Err(EngineError::Provider { source, .. }) if source.is_not_found() => {}
                    r => r?,
                }
            }
            crate::wait::wait_for(ctx, &step, "old instances out of the warm pool", SETTLE, || async {
                let pool = p.warm_pool(&group).await.map_err(|e| EngineError::provider(&step, e))?;
                let settled = off_target(&pool, target).all(|w| !ids.contains(&&w.id));
                Ok(settled.then_some(()))
            })
            .await?;
            Ok(WarmPoolOutput { replaced })
        })
        .await?;
    Ok(out.replaced)
}
