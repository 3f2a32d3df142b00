//! The dashboard: server-rendered pages, no front-end build. A small
//! inline script on the run page polls the JSON API to redraw the roll
//! progress chart and the step list while the run goes on.

use crate::api::{self, AppState};
use crate::fleet;
use crate::state::Shared;
use axum::extract::{Path, Query, State};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use repave_core::ImageId;
use serde::Deserialize;
use std::fmt::Write as _;
use std::sync::Arc;

const STYLE: &str = include_str!("style.css");
const RUN_SCRIPT: &str = include_str!("run.js");

pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/", get(index))
        .route("/runs/{id}", get(run_page))
        .route("/fleet", get(fleet_page))
}

/// HTML-escape text.
pub(crate) fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn time(ms: Option<i64>) -> String {
    ms.and_then(|m| jiff::Timestamp::from_millisecond(m).ok())
        .map(|t| t.strftime("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| "-".into())
}

fn page(title: &str, body: &str) -> Html<String> {
    Html(format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{} · repave</title>\
         <meta name=\"viewport\" content=\"width=device-width\"><style>{STYLE}</style></head><body>\
         <header><a href=\"/\"><b>repave</b></a> <a href=\"/\">pipelines</a> <a href=\"/fleet\">fleet</a> \
         <a href=\"/openapi.json\">api</a> <a href=\"/metrics\">metrics</a></header><main>{body}</main></body></html>",
        esc(title)
    ))
}

fn state_badge(state: &str) -> String {
    format!("<span class=\"state {0}\">{0}</span>", esc(state))
}

async fn index(State(s): AppState) -> Html<String> {
    let mut b = String::from("<h1>Pipelines</h1><table><tr><th>pipeline</th><th>group</th><th>window</th><th>next window</th><th>schedule</th><th>last run</th></tr>");
    let pipelines = api::pipelines_json(&s);
    for p in pipelines.as_array().into_iter().flatten() {
        let str_of = |v: &serde_json::Value| v.as_str().unwrap_or("").to_string();
        let window = match &p["window"] {
            w if w.is_object() => format!(
                "<code>{}</code> {} for {}",
                esc(&str_of(&w["cron"])),
                esc(&str_of(&w["timezone"])),
                esc(&str_of(&w["duration"]))
            ),
            _ => "none (manual runs only)".into(),
        };
        let next = match &p["next_window"] {
            n if n.is_object() => format!("{} (cutoff {})", time(n["start"].as_i64()), time(n["cutoff"].as_i64())),
            _ => "-".into(),
        };
        let sched = match &p["schedule"] {
            s if s.is_object() => {
                let mut t = if s["enabled"].as_bool() == Some(true) {
                    "enabled".to_string()
                } else {
                    format!("<b class=\"bad\">{}</b>", esc(&str_of(&s["disabled_reason"])))
                };
                if let Some(skip) = s["last_skip"].as_str() {
                    let _ = write!(t, "<br><small>last window skipped: {}</small>", esc(skip));
                }
                t
            }
            _ => "-".into(),
        };
        let last = match &p["last_run"] {
            r if r.is_object() => {
                let id = str_of(&r["id"]);
                format!(
                    "<a href=\"/runs/{0}\">{0}</a> {1} <small>{2}</small>",
                    esc(&id),
                    state_badge(&str_of(&r["state"])),
                    time(r["started_at"].as_i64())
                )
            }
            _ => "never run".into(),
        };
        let _ = write!(
            b,
            "<tr><td><b>{}</b></td><td>{}</td><td>{window}</td><td>{next}</td><td>{sched}</td><td>{last}</td></tr>",
            esc(&str_of(&p["name"])),
            esc(&str_of(&p["group"]))
        );
    }
    b.push_str("</table><h2>Recent runs</h2><table><tr><th>run</th><th>pipeline</th><th>kind</th><th>state</th><th>started</th><th>ended</th><th>error</th></tr>");
    let filter = repave_store::RunFilter {
        limit: Some(30),
        ..Default::default()
    };
    for r in s.store.list_runs(&filter).unwrap_or_default() {
        let _ = write!(
            b,
            "<tr><td><a href=\"/runs/{0}\">{0}</a></td><td>{1}</td><td>{2}</td><td>{3}</td><td>{4}</td><td>{5}</td><td>{6}</td></tr>",
            esc(r.id.as_str()),
            esc(&r.pipeline),
            r.kind,
            state_badge(r.state.as_str()),
            time(Some(r.started_at.millis())),
            time(r.ended_at.map(|t| t.millis())),
            esc(r.error.as_deref().unwrap_or(""))
        );
    }
    b.push_str("</table>");
    page("pipelines", &b)
}

async fn run_page(State(s): AppState, Path(id): Path<String>) -> Response {
    let detail = match api::run_json(&s, &id) {
        Ok(d) => d,
        Err(e) => {
            let title = e.status.canonical_reason().unwrap_or("error").to_lowercase();
            return (e.status, page(&title, &format!("<h1>{}</h1>", esc(&e.message)))).into_response();
        }
    };
    let run = &detail["run"];
    let str_of = |v: &serde_json::Value| v.as_str().unwrap_or("").to_string();
    let mut b = format!(
        "<h1>Run {} <span id=\"run-state\">{}</span></h1><p>pipeline <b>{}</b> · group {} · {} · started {} · ended {}</p>",
        esc(&id),
        state_badge(&str_of(&run["state"])),
        esc(&str_of(&run["pipeline"])),
        esc(&str_of(&run["group"])),
        esc(&str_of(&run["kind"])),
        time(run["started_at"].as_i64()),
        time(run["ended_at"].as_i64()),
    );
    if let Some(e) = run["error"].as_str() {
        let _ = write!(b, "<p class=\"bad\">{}</p>", esc(e));
    }
    b.push_str(
        "<h2>Roll progress</h2><p id=\"roll-status\">waiting for the roll…</p>\
         <svg id=\"chart\" width=\"900\" height=\"260\" viewBox=\"0 0 900 260\" data-samples=\"0\" role=\"img\" aria-label=\"roll progress\"></svg>\
         <p class=\"legend\"><span class=\"k in\">in service</span> <span class=\"k floor\">floor</span> <span class=\"k old\">old</span> \
         <span class=\"k new\">new</span> <span class=\"k draining\">draining</span></p>\
         <h2>Steps</h2><div id=\"steps\">",
    );
    b.push_str(&steps_html(&detail["steps"]));
    b.push_str("</div><h2>Events</h2><table><thead><tr><th>time</th><th>level</th><th>step</th><th>message</th></tr></thead><tbody id=\"events\">");
    for e in detail["events"].as_array().into_iter().flatten() {
        let _ = write!(
            b,
            "<tr class=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&str_of(&e["level"])),
            time(e["at"].as_i64()),
            esc(&str_of(&e["level"])),
            esc(&str_of(&e["step"])),
            esc(&str_of(&e["message"]))
        );
    }
    b.push_str("</table>");
    let _ = write!(b, "<script>const RUN = \"{}\";\n{RUN_SCRIPT}</script>", esc(&id));
    page(&format!("run {id}"), &b).into_response()
}

/// The step timeline: one bar per step, placed and sized by its time.
fn steps_html(steps: &serde_json::Value) -> String {
    let steps: Vec<&serde_json::Value> = steps.as_array().into_iter().flatten().collect();
    let start = steps.iter().filter_map(|s| s["started_at"].as_i64()).min().unwrap_or(0);
    let end = steps
        .iter()
        .filter_map(|s| s["ended_at"].as_i64().or(s["started_at"].as_i64()))
        .max()
        .unwrap_or(start)
        .max(start + 1);
    let span = (end - start) as f64;
    let mut b = String::from("<table class=\"timeline\"><tr><th>step</th><th>state</th><th>duration</th><th>attempts</th><th class=\"bar\">timeline</th></tr>");
    for s in steps {
        let from = s["started_at"].as_i64().unwrap_or(start);
        let to = s["ended_at"].as_i64().unwrap_or(end);
        let left = (from - start) as f64 / span * 100.0;
        let width = ((to - from) as f64 / span * 100.0).max(0.5);
        let secs = (to - from) as f64 / 1000.0;
        let state = s["state"].as_str().unwrap_or("");
        let _ = write!(
            b,
            "<tr><td>{}</td><td>{}</td><td>{secs:.1}s</td><td>{}</td><td class=\"bar\"><div class=\"span {}\" style=\"margin-left:{left:.2}%;width:{width:.2}%\"></div></td></tr>",
            esc(s["name"].as_str().unwrap_or("")),
            state_badge(state),
            s["attempts"].as_u64().unwrap_or(0),
            esc(state)
        );
    }
    b.push_str("</table>");
    b
}

#[derive(Deserialize)]
struct DiffQuery {
    a: Option<String>,
    b: Option<String>,
}

async fn fleet_page(State(s): AppState, Query(q): Query<DiffQuery>) -> Html<String> {
    let groups = fleet::fleet(&s).await;
    let mut b = String::from("<h1>Fleet</h1>");
    let mut all_images = Vec::new();
    for g in &groups {
        let _ = write!(
            b,
            "<h2>{} <small>group {} · desired {} · in service {} · golden {} · drift {}</small></h2>",
            esc(&g.pipeline),
            esc(&g.group),
            g.desired,
            g.in_service,
            esc(g.golden_image.as_ref().map(|i| i.as_str()).unwrap_or("-")),
            g.drift
        );
        if let Some(e) = &g.error {
            let _ = write!(b, "<p class=\"bad\">{}</p>", esc(e));
        }
        b.push_str("<table><tr><th>image</th><th>instances</th><th>in service</th><th>age</th><th>patch level</th><th>manifest</th></tr>");
        for i in &g.images {
            all_images.push(i.image.clone());
            let updates: String = i
                .manifest
                .updates
                .iter()
                .map(|u| {
                    format!(
                        "<li><code>{}</code> {} {} ({}, {})</li>",
                        esc(&u.id),
                        esc(&u.package),
                        esc(&u.version),
                        esc(&u.severity),
                        esc(&u.released)
                    )
                })
                .collect();
            let _ = write!(
                b,
                "<tr><td><code>{}</code>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><details><summary>{} update(s)</summary><ul>{updates}</ul></details></td></tr>",
                esc(i.image.as_str()),
                if i.golden { " <span class=\"state succeeded\">golden</span>" } else { "" },
                i.instances,
                i.in_service,
                i.age_seconds.map(|a| repave_core::duration::format_duration(std::time::Duration::from_secs(a as u64))).unwrap_or_else(|| "-".into()),
                esc(i.manifest.patch_level.as_deref().unwrap_or("-")),
                i.manifest.updates.len()
            );
        }
        b.push_str("</table>");
    }
    let bakes = fleet::bakes(&s);
    all_images.extend(bakes.keys().cloned());
    all_images.sort();
    all_images.dedup();
    let options = |sel: &Option<String>| -> String {
        all_images
            .iter()
            .map(|i| {
                format!(
                    "<option{}>{}</option>",
                    if sel.as_deref() == Some(i.as_str()) {
                        " selected"
                    } else {
                        ""
                    },
                    esc(i.as_str())
                )
            })
            .collect()
    };
    let _ = write!(
        b,
        "<h2>Compare manifests</h2><form method=\"get\" action=\"/fleet\"><select name=\"a\">{}</select> → <select name=\"b\">{}</select> <button>diff</button></form>",
        options(&q.a),
        options(&q.b)
    );
    if let (Some(a), Some(bb)) = (&q.a, &q.b) {
        let d = fleet::diff(
            fleet::manifest(&bakes, &ImageId::new(a.clone())),
            fleet::manifest(&bakes, &ImageId::new(bb.clone())),
        );
        let list = |us: &[repave_core::patch::Update], sign: &str| -> String {
            us.iter()
                .map(|u| {
                    format!(
                        "<li class=\"{sign}\"><code>{}</code> {} {}</li>",
                        esc(&u.id),
                        esc(&u.package),
                        esc(&u.version)
                    )
                })
                .collect()
        };
        let _ = write!(
            b,
            "<div id=\"diff\"><p>{} → {}: {} added, {} removed, {} in both</p><ul>{}{}</ul></div>",
            esc(a),
            esc(bb),
            d.added.len(),
            d.removed.len(),
            d.common,
            list(&d.added, "added"),
            list(&d.removed, "removed")
        );
    }
    page("fleet", &b)
}
