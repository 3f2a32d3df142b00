//! `repave gc`: sweep what runs left behind. Builders and test instances
//! tagged by repave whose run is finished, unknown or abandoned (stuck
//! `running` before publish with no process driving it: a cleanup that
//! failed on a full disk) are terminated — also when stuck shutting down —
//! and abandoned runs are ended `failed`; scaling processes a run suspended
//! for its roll and never resumed are resumed once no process drives it; images marked bad or unpublished,
//! or beyond `keep`, are deregistered with their snapshots — never one still
//! referenced (see [`crate::references`]; a source that cannot be read stops
//! gc before it deletes anything).

use crate::call::retry;
use crate::error::EngineError;
use crate::references::{disposable, image_references};
use repave_core::config::Pipeline;
use repave_core::provider::{tag, InstanceState, Provider, Tags};
use repave_core::{RunId, Timestamp};
use repave_store::{RunFilter, RunKind, RunRecord, RunState, Store};
use serde::Serialize;

/// One thing `gc` did, would do (dry run), or deliberately left alone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GcAction {
    /// "terminate", "deregister", "delete", "end" (an abandoned run),
    /// "resume" (scaling processes a run suspended) or "keep".
    pub action: String,
    pub instance: Option<String>,
    pub image: Option<String>,
    /// A cloud patch baseline (AWS) a run made for its builder.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline: Option<String>,
    pub pipeline: Option<String>,
    pub why: String,
}

/// Sweep one provider for the pipelines that use it.
pub async fn gc(
    p: &dyn Provider,
    store: &Store,
    pipelines: &[(String, Pipeline)],
    now: Timestamp,
    dry_run: bool,
) -> Result<Vec<GcAction>, EngineError> {
    let mut actions = Vec::new();
    for role in [tag::ROLE_BUILDER, tag::ROLE_TEST] {
        let mut tags = Tags::new();
        tags.insert(tag::ROLE.into(), role.into());
        for i in retry("gc", || p.list_instances(&tags)).await? {
            // Shutting down is not gone: a cleanup that failed half-way
            // (a full disk) leaves instances there; terminating is idempotent.
            if i.state == InstanceState::Terminated {
                continue;
            }
            let run = i.tags.get(tag::RUN).cloned().unwrap_or_default();
            let record = store.get_run(&RunId::new(run.clone()))?;
            let mut act = GcAction {
                action: "terminate".into(),
                instance: Some(i.id.to_string()),
                image: None,
                baseline: None,
                pipeline: i.tags.get(tag::PIPELINE).cloned(),
                why: format!("{role} of run {run}, which is finished or unknown"),
            };
            if let Some(r) = record.as_ref().filter(|r| !r.state.is_terminal()) {
                match abandoned(store, r, now)? {
                    None => {
                        act.action = "keep".into();
                        act.why = format!("{role} of run {run}, not finished (resume or cancel it)");
                    }
                    Some(why) => act.why = format!("{role} of run {run}, which {why}"),
                }
            }
            if act.action == "terminate" && !dry_run {
                retry("gc", || p.terminate_instance(&i.id)).await?;
            }
            actions.push(act);
        }
    }
    actions.extend(end_abandoned_runs(store, pipelines, now, dry_run)?);
    actions.extend(restore_processes(p, store, pipelines, now, dry_run).await?);
    for (name, pipeline) in pipelines {
        // Fails closed: a reference that cannot be read stops gc before it
        // deletes anything of this pipeline.
        let refs = image_references(p, pipeline, &[], now).await?;
        let mut tags = Tags::new();
        tags.insert(tag::PIPELINE.into(), name.clone());
        tags.insert(tag::ROLE.into(), tag::ROLE_IMAGE.into());
        let images = retry("gc", || p.list_images(&tags)).await?;
        for v in disposable(&images, pipeline.retention.keep as usize, &refs) {
            let mut act = GcAction {
                action: "deregister".into(),
                instance: None,
                image: Some(v.image.to_string()),
                baseline: None,
                pipeline: Some(name.clone()),
                why: v.why.clone(),
            };
            if v.referenced {
                act.action = "keep".into();
                act.why = format!("{}, but still referenced", v.why);
            } else if !dry_run {
                retry("gc", || p.deregister_image(&v.image)).await?;
            }
            actions.push(act);
        }
    }
    Ok(actions)
}

/// Why an unfinished run counts as abandoned (its instances may go), or
/// `None` while it may still be driven or resumed: it is abandoned when no
/// live process drives it and it never published (there is nothing for a
/// resume to finish that a fresh run would not do better).
fn abandoned(store: &Store, run: &RunRecord, now: Timestamp) -> Result<Option<String>, EngineError> {
    if run.state != RunState::Running {
        return Ok(None);
    }
    if store.run_driver(&run.lease_key(), run.id.as_str(), now)?.is_some() {
        return Ok(None);
    }
    // A publish that began (its intent journaled) may have moved things:
    // only a resume may finish or undo it.
    let published = store.step(&run.id, "publish")?.is_some();
    if published || run.kind != RunKind::Run && run.kind != RunKind::Bake {
        return Ok(None);
    }
    Ok(Some("stopped before publish with no process driving it".into()))
}

/// Scaling processes a run suspended for its roll and never resumed (it
/// was killed, or ResumeProcesses failed), for runs no process drives:
/// resumed, exactly those. A run that is resumed later suspends again what
/// its roll needs.
async fn restore_processes(
    p: &dyn Provider,
    store: &Store,
    pipelines: &[(String, Pipeline)],
    now: Timestamp,
    dry_run: bool,
) -> Result<Vec<GcAction>, EngineError> {
    let mut out = Vec::new();
    let runs = store.list_runs(&RunFilter {
        limit: Some(200),
        ..Default::default()
    })?;
    for r in runs.iter().filter(|r| pipelines.iter().any(|(n, _)| n == &r.pipeline)) {
        if !r.state.is_terminal() && store.run_driver(&r.lease_key(), r.id.as_str(), now)?.is_some() {
            continue;
        }
        for (step, s) in crate::processes::unrestored(store, r)? {
            let why = format!(
                "scaling processes {} of group {} suspended by run {} for its roll and not resumed",
                s.processes.join(", "),
                s.group,
                r.id
            );
            if !dry_run {
                crate::processes::restore_for_gc(p, store, &r.id, &step, s).await?;
            }
            out.push(GcAction {
                action: "resume".into(),
                instance: None,
                image: None,
                baseline: None,
                pipeline: Some(r.pipeline.clone()),
                why,
            });
        }
    }
    Ok(out)
}

/// Runs stuck `running` whose driver is gone and which never published
/// (their final state could not be written: a full disk, a kill): ended
/// `failed` with the reason, so they no longer hold their group.
fn end_abandoned_runs(
    store: &Store,
    pipelines: &[(String, Pipeline)],
    now: Timestamp,
    dry_run: bool,
) -> Result<Vec<GcAction>, EngineError> {
    let mut out = Vec::new();
    let runs = store.list_runs(&RunFilter {
        state: Some(RunState::Running),
        limit: Some(200),
        ..Default::default()
    })?;
    for r in runs.iter().filter(|r| pipelines.iter().any(|(n, _)| n == &r.pipeline)) {
        let Some(why) = abandoned(store, r, now)? else { continue };
        if !dry_run {
            let reason = format!("abandoned: the run {why}; repave gc ended it and swept what it left");
            store.set_run_state(&r.id, RunState::Failed, Some(&reason), now)?;
            if let Some(lease) = store
                .current_lease(&r.lease_key())?
                .filter(|l| l.holder == r.id.as_str())
            {
                store.release_lease(&lease)?;
            }
        }
        out.push(GcAction {
            action: "end".into(),
            instance: None,
            image: None,
            baseline: None,
            pipeline: Some(r.pipeline.clone()),
            why: format!("run {}, which {why}", r.id),
        });
    }
    Ok(out)
}
