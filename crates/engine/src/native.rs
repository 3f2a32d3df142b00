//! `strategy = "native"`: the cloud's own rolling replacement (AWS Instance
//! Refresh) started, watched and reported in the same run record. Publish
//! made the new launch spec version without moving the group; the cloud's
//! roll is started with that version as its target (AWS: the refresh's
//! desired configuration), replaces what differs and moves the group when it
//! succeeds, so its own rollback has the previous version to return to. A
//! cancelled or killed run leaves the refresh running in the cloud; `resume`
//! re-attaches to it.

use crate::call::retry;
use crate::context::Ctx;
use crate::error::EngineError;
use crate::summary::RollReport;
use repave_core::ImageId;
use tokio::time::Instant;

pub async fn roll(
    ctx: &Ctx<'_>,
    step: &str,
    target: &ImageId,
    spec: &repave_core::provider::LaunchSpecRef,
) -> Result<RollReport, EngineError> {
    let p = ctx.provider();
    let native = p.native_roll().ok_or_else(|| {
        EngineError::Preflight(format!(
            "the {} provider has no native roll; use strategy = \"rolling\"",
            p.name()
        ))
    })?;
    let group = ctx.pipeline.group.clone();
    let started = ctx.now();
    let clock = Instant::now();
    let rollout = ctx.pipeline.rollout.clone();
    let id = retry(step, || native.start_native_roll(&group, spec, &rollout)).await?;
    ctx.log(
        step,
        format!("native roll {id} started on {group}"),
        serde_json::json!({ "id": id }),
    );
    let deadline = clock + rollout.timeout.get();
    let mut last_seen = None;
    let mut to_update = 0;
    let status = loop {
        ctx.check_cancel()?;
        ctx.keep_lease()?;
        let s = retry(step, || native.native_roll_status(&group, &id)).await?;
        to_update = to_update.max(s.instances_to_update);
        let seen = (s.state.clone(), s.percent_complete);
        if last_seen.as_ref() != Some(&seen) {
            last_seen = Some(seen);
            ctx.log(
                step,
                format!(
                    "native roll {id}: {} {}% ({} to update)",
                    s.state, s.percent_complete, s.instances_to_update
                ),
                serde_json::to_value(&s).unwrap_or_default(),
            );
        }
        if s.finished {
            break s;
        }
        if Instant::now() >= deadline {
            // Bounded like every waiting state: stop the cloud's roll too.
            if let Err(e) = native.cancel_native_roll(&group).await {
                ctx.log(
                    step,
                    format!("could not cancel native roll {id}: {e}"),
                    serde_json::Value::Null,
                );
            }
            return Err(EngineError::Timeout {
                step: step.into(),
                seconds: rollout.timeout.get().as_secs(),
                what: format!("native roll {id} at {}%", s.percent_complete),
            });
        }
        tokio::time::sleep(ctx.engine.opts.tick).await;
    };
    if !status.succeeded {
        return Err(EngineError::RollAborted(format!(
            "native roll {id} ended {}: {}",
            status.state,
            status.reason.unwrap_or_else(|| "no reason given".into())
        )));
    }
    let seconds = ctx.now().since(started).as_secs_f64();
    Ok(RollReport {
        target_image: Some(target.clone()),
        started_at_ms: started.millis(),
        seconds,
        replaced: to_update,
        ..RollReport::default()
    })
}
