//! The HTTP JSON API under `/api/`. Handlers turn requests into store
//! reads or into [`crate::runs::launch`] / cancel calls; the run registry
//! owns the running engines.

use crate::errors::{ApiError, Code};
use crate::fleet;
use crate::runs::{launch, Launch};
use crate::state::Shared;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use repave_core::{ImageId, RunId, Timestamp};
use repave_store::{NewEvent, RunFilter, RunKind, RunRecord, RunState, CANCEL_REQUESTED};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::sync::Arc;

pub(crate) type AppState = State<Arc<Shared>>;

type ApiResult<T> = Result<T, ApiError>;

/// A run without its frozen config (the list stays small).
#[derive(Serialize)]
pub(crate) struct RunView {
    pub id: RunId,
    pub pipeline: String,
    pub group: String,
    pub kind: RunKind,
    pub state: RunState,
    pub error: Option<String>,
    pub started_at: Timestamp,
    pub ended_at: Option<Timestamp>,
    /// Driven by this server right now.
    pub live: bool,
}

impl RunView {
    pub fn new(r: &RunRecord, shared: &Shared) -> Self {
        RunView {
            id: r.id.clone(),
            pipeline: r.pipeline.clone(),
            group: r.group.clone(),
            kind: r.kind,
            state: r.state,
            error: r.error.clone(),
            started_at: r.started_at,
            ended_at: r.ended_at,
            live: shared.runs.is_live(r.id.as_str()),
        }
    }
}

pub(crate) fn pipelines_json(shared: &Shared) -> serde_json::Value {
    let now = shared.clock.now();
    let list: Vec<_> = shared
        .config
        .pipelines
        .iter()
        .map(|(name, p)| {
            let ws = shared.windows.get(name);
            let filter = RunFilter {
                pipeline: Some(name.clone()),
                limit: Some(1),
                ..Default::default()
            };
            let last = shared.store.list_runs(&filter).ok().and_then(|r| r.into_iter().next());
            json!({
                "name": name,
                "provider": p.provider,
                "group": p.group,
                "parameter": p.parameter,
                "window": p.window,
                "open_window": ws.and_then(|w| w.open_at(now)),
                "next_window": ws.and_then(|w| w.next_opening(now)),
                "schedule": shared.schedule(name),
                "last_run": last.as_ref().map(|r| RunView::new(r, shared)),
            })
        })
        .collect();
    json!(list)
}

pub(crate) async fn pipelines(State(s): AppState) -> Json<serde_json::Value> {
    Json(pipelines_json(&s))
}

#[derive(Deserialize)]
pub(crate) struct RunsQuery {
    pipeline: Option<String>,
    state: Option<String>,
    limit: Option<u32>,
}

pub(crate) async fn list_runs(State(s): AppState, Query(q): Query<RunsQuery>) -> ApiResult<Json<Vec<RunView>>> {
    let state = match q.state.as_deref().filter(|v| !v.is_empty()) {
        Some(v) => Some(
            v.parse::<RunState>()
                .map_err(|e| ApiError::bad_request(e.to_string()))?,
        ),
        None => None,
    };
    let filter = RunFilter {
        pipeline: q.pipeline.filter(|p| !p.is_empty()),
        state,
        limit: Some(q.limit.unwrap_or(100).min(1000)),
        ..Default::default()
    };
    let runs = s.store.list_runs(&filter)?;
    Ok(Json(runs.iter().map(|r| RunView::new(r, &s)).collect()))
}

fn get_run(s: &Shared, id: &str) -> ApiResult<RunRecord> {
    s.store
        .get_run(&RunId::new(id))?
        .ok_or_else(|| ApiError::not_found(format!("run {id} not found")))
}

pub(crate) fn run_json(s: &Shared, id: &str) -> ApiResult<serde_json::Value> {
    let run = get_run(s, id)?;
    let steps = s.store.steps(&run.id)?;
    let events = s.store.events(&run.id, 0, 5000)?;
    let view = RunView::new(&run, s);
    Ok(json!({ "run": view, "summary": run.summary, "steps": steps, "events": events }))
}

pub(crate) async fn run_detail(State(s): AppState, Path(id): Path<String>) -> ApiResult<Json<serde_json::Value>> {
    run_json(&s, &id).map(Json)
}

/// Roll progress for the chart: live samples while this server drives the
/// roll (or drove it lately), else the samples the run's summary kept; with
/// the roll's `replaced` / `total` as of the last sample either way (`null`
/// before a roll), so a page shows the same thing after a restart.
pub(crate) async fn progress(State(s): AppState, Path(id): Path<String>) -> ApiResult<Json<serde_json::Value>> {
    let run = get_run(&s, &id)?;
    let (samples, replaced, total) = match s.runs.progress(&id) {
        Some(samples) => {
            let last = samples.last();
            let counts = (last.map(|l| l.replaced), last.map(|l| l.total));
            (json!(samples), counts.0, counts.1)
        }
        None => summary_progress(&run),
    };
    Ok(Json(json!({
        "run": id, "state": run.state, "live": s.runs.is_live(&id),
        "samples": samples, "replaced": replaced, "total": total,
    })))
}

/// A finished (or stopped) roll's samples from the run summary, placed in
/// wall time; its total is what it replaced plus the old instances left.
fn summary_progress(run: &RunRecord) -> (serde_json::Value, Option<u32>, Option<u32>) {
    let Some(roll) = run
        .summary
        .as_ref()
        .and_then(|sum| sum.get("roll"))
        .filter(|r| !r.is_null())
    else {
        return (json!([]), None, None);
    };
    let start = roll["started_at_ms"].as_i64().unwrap_or(0);
    let samples: Vec<_> = roll["samples"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|x| {
            let mut x = x.clone();
            x["at"] = json!(start + x["t_ms"].as_i64().unwrap_or(0));
            x
        })
        .collect();
    let count = |v: &serde_json::Value| v.as_u64().and_then(|n| u32::try_from(n).ok());
    let replaced = count(&roll["replaced"]);
    let left = samples.last().and_then(|l| count(&l["old"])).unwrap_or(0);
    (json!(samples), replaced, replaced.map(|r| r + left))
}

#[derive(Deserialize)]
pub(crate) struct StartBody {
    pipeline: String,
    #[serde(default = "default_kind")]
    kind: String,
}
fn default_kind() -> String {
    "run".into()
}

pub(crate) async fn start_run(State(s): AppState, Json(body): Json<StartBody>) -> ApiResult<Response> {
    let kind: RunKind = body
        .kind
        .parse()
        .map_err(|e: repave_store::UnknownName| ApiError::bad_request(e.to_string()))?;
    if !s.config.pipelines.contains_key(&body.pipeline) {
        return Err(ApiError::not_found(format!("unknown pipeline {:?}", body.pipeline)));
    }
    started(
        &s,
        Launch::Start {
            pipeline: body.pipeline,
            kind,
        },
    )
    .await
}

async fn started(s: &Arc<Shared>, what: Launch) -> ApiResult<Response> {
    let (id, _task) = launch(s, what, None).await?;
    let run = get_run(s, id.as_str())?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "run": RunView::new(&run, s) }))).into_response())
}

/// Ask the run's driver to stop at its next safe point. The request goes
/// into the store, as `repave cancel` puts it, so it reaches the run
/// whichever process drives it; a run driven here is also told at once.
pub(crate) async fn cancel(State(s): AppState, Path(id): Path<String>) -> ApiResult<Response> {
    let run = get_run(&s, &id)?;
    if run.state.is_terminal() {
        return Err(ApiError::conflict(format!(
            "run {id} is {}; nothing to cancel",
            run.state
        )));
    }
    s.store.append_event(&NewEvent {
        run: run.id.clone(),
        at: s.clock.now(),
        level: "warn".into(),
        step: None,
        message: CANCEL_REQUESTED.into(),
        data: json!({ "by": "api" }),
    })?;
    let driven_here = s.runs.cancel(&id);
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "run": id, "cancelling": true, "driven_here": driven_here })),
    )
        .into_response())
}

pub(crate) async fn resume(State(s): AppState, Path(id): Path<String>) -> ApiResult<Response> {
    let run = get_run(&s, &id)?;
    if s.runs.is_live(&id) {
        return Err(ApiError::conflict(format!("run {id} is already running here")));
    }
    if run.state.is_terminal() {
        return Err(ApiError::conflict(format!(
            "run {id} is {}; nothing to resume",
            run.state
        )));
    }
    started(
        &s,
        Launch::Resume {
            run: run.id,
            pipeline: run.pipeline,
        },
    )
    .await
}

/// Put the run's pipeline back on the previous image (a new rollback run).
pub(crate) async fn rollback(State(s): AppState, Path(id): Path<String>) -> ApiResult<Response> {
    let run = get_run(&s, &id)?;
    if !s.config.pipelines.contains_key(&run.pipeline) {
        return Err(ApiError::not_found(format!(
            "pipeline {:?} is not in the config",
            run.pipeline
        )));
    }
    started(
        &s,
        Launch::Start {
            pipeline: run.pipeline,
            kind: RunKind::Rollback,
        },
    )
    .await
}

pub(crate) async fn fleet_view(State(s): AppState) -> Json<serde_json::Value> {
    Json(json!(fleet::fleet(&s).await))
}

#[derive(Deserialize)]
pub(crate) struct DiffQuery {
    a: String,
    b: String,
}

pub(crate) async fn image_diff(State(s): AppState, Query(q): Query<DiffQuery>) -> ApiResult<Json<fleet::ManifestDiff>> {
    let bakes = fleet::bakes(&s);
    let a = known_manifest(&s, &bakes, q.a).await?;
    let b = known_manifest(&s, &bakes, q.b).await?;
    Ok(Json(fleet::diff(a, b)))
}

pub(crate) async fn image_manifest(State(s): AppState, Path(id): Path<String>) -> ApiResult<Json<fleet::Manifest>> {
    Ok(Json(known_manifest(&s, &fleet::bakes(&s), id).await?))
}

/// An image's manifest, if the image is known: baked by repave (in the
/// journal, even once deregistered) or held by a pipeline's provider (a
/// base image: its manifest is empty). Anything else is 404, never an
/// empty manifest that looks like an unpatched image.
async fn known_manifest(
    s: &Shared,
    bakes: &std::collections::BTreeMap<ImageId, fleet::Bake>,
    id: String,
) -> ApiResult<fleet::Manifest> {
    let image = ImageId::new(id);
    if bakes.contains_key(&image) {
        return Ok(fleet::manifest(bakes, &image));
    }
    let mut unanswered = None;
    for (pipeline, provider) in &s.providers {
        match provider.describe_image(&image).await {
            Ok(_) => return Ok(fleet::manifest(bakes, &image)),
            Err(e) if e.is_not_found() => {}
            Err(e) => unanswered = Some(format!("pipeline {pipeline}'s provider: {e}")),
        }
    }
    Err(match unanswered {
        Some(why) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            Code::Unavailable,
            format!("could not tell whether image {image} exists ({why})"),
        ),
        None => ApiError::not_found(format!(
            "image {image} is unknown: repave did not bake it and no pipeline's provider has it"
        )),
    })
}

pub(crate) async fn metrics(State(s): AppState) -> Response {
    let fleet = fleet::fleet(&s).await;
    let gauges: Vec<_> = fleet
        .iter()
        .flat_map(|g| {
            g.images.iter().map(|i| crate::metrics::FleetGauge {
                group: g.group.clone(),
                image: i.image.to_string(),
                image_age_seconds: i.age_seconds.unwrap_or(0.0),
                instances: i.instances,
                in_service: i.in_service,
            })
        })
        .collect();
    let calls: Vec<_> = s
        .providers
        .iter()
        .map(|(p, provider)| (p.clone(), provider.api_calls()))
        .collect();
    let throttled: Vec<_> = s
        .providers
        .iter()
        .map(|(p, provider)| (p.clone(), provider.throttled_calls()))
        .collect();
    let body = s.metrics.render(&gauges, &calls, &throttled);
    ([("content-type", "text/plain; version=0.0.4; charset=utf-8")], body).into_response()
}

#[derive(Deserialize)]
pub(crate) struct ScheduleChange {
    enabled: bool,
    reason: Option<String>,
}

/// Enable or disable a pipeline's schedule. Enabling clears the failure
/// count; the state is stored, so it holds across restarts.
pub(crate) async fn set_schedule(
    State(s): AppState,
    Path(name): Path<String>,
    Json(change): Json<ScheduleChange>,
) -> ApiResult<Json<serde_json::Value>> {
    if !s.config.pipelines.contains_key(&name) {
        return Err(ApiError::not_found(format!("no pipeline {name:?}")));
    }
    let reason = change
        .reason
        .filter(|r| !r.trim().is_empty())
        .unwrap_or_else(|| "disabled through the API".into());
    let updated = s
        .update_schedule(&name, |st| {
            st.enabled = change.enabled;
            if change.enabled {
                st.consecutive_failures = 0;
                st.disabled_reason = None;
            } else {
                st.disabled_reason = Some(reason);
            }
        })
        .ok_or_else(|| ApiError::not_found(format!("pipeline {name} has no window, so no schedule")))?;
    tracing::info!(
        pipeline = name,
        enabled = updated.enabled,
        "schedule changed through the API"
    );
    Ok(Json(json!({ "pipeline": name, "schedule": updated })))
}

/// The webhook outbox, newest first: what was sent, retried or given up.
pub(crate) async fn webhook_notices(State(s): AppState) -> ApiResult<Json<Vec<repave_store::Notice>>> {
    Ok(Json(s.store.notices(100)?))
}
