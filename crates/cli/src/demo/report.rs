//! The demo's HTML report: in-service capacity and request outcomes over
//! time, as inline SVG (no scripts, no network).

use super::load::LoadReport;
use repave_engine::{RollReport, RunOutcome};
use std::fmt::Write as _;

const W: f64 = 900.0;
const H: f64 = 220.0;
const PAD: f64 = 40.0;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

struct Axis {
    t_max: f64,
    y_max: f64,
}

impl Axis {
    fn x(&self, t: f64) -> f64 {
        PAD + (t / self.t_max.max(0.001)) * (W - 2.0 * PAD)
    }
    fn y(&self, v: f64) -> f64 {
        H - PAD + -(v / self.y_max.max(1.0)) * (H - 2.0 * PAD)
    }
    fn frame(&self, out: &mut String, y_label: &str) {
        let _ = write!(
            out,
            r##"<line x1="{PAD}" y1="{b}" x2="{r}" y2="{b}" stroke="#888"/><line x1="{PAD}" y1="{PAD}" x2="{PAD}" y2="{b}" stroke="#888"/>"##,
            b = H - PAD,
            r = W - PAD
        );
        for i in 0..=5 {
            let t = self.t_max * i as f64 / 5.0;
            let _ = write!(
                out,
                r##"<text x="{:.1}" y="{:.1}" font-size="11" text-anchor="middle">{t:.0}s</text>"##,
                self.x(t),
                H - PAD + 16.0
            );
        }
        for i in 0..=4 {
            let v = self.y_max * i as f64 / 4.0;
            let _ = write!(
                out,
                r##"<text x="{:.1}" y="{:.1}" font-size="11" text-anchor="end">{v:.0}</text>"##,
                PAD - 4.0,
                self.y(v) + 4.0
            );
        }
        let _ = write!(
            out,
            r##"<text x="{PAD}" y="{:.1}" font-size="12">{}</text>"##,
            PAD - 10.0,
            esc(y_label)
        );
    }
}

fn polyline(out: &mut String, pts: &[(f64, f64)], color: &str, dash: bool) {
    if pts.is_empty() {
        return;
    }
    let d: Vec<String> = pts.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
    let dash = if dash { r#" stroke-dasharray="6 4""# } else { "" };
    let _ = write!(
        out,
        r#"<polyline fill="none" stroke="{color}" stroke-width="2"{dash} points="{}"/>"#,
        d.join(" ")
    );
}

/// `load_start_ms`: wall-clock start of the load, the chart's zero.
pub fn render(outcome: &RunOutcome, load: &LoadReport, load_start_ms: i64, json_summary: &serde_json::Value) -> String {
    let t_max = load.seconds.max(1.0);
    let rolls: Vec<(&str, &RollReport)> = [
        ("roll", outcome.summary.roll.as_ref()),
        ("rollback", outcome.summary.rollback_roll.as_ref()),
    ]
    .into_iter()
    .filter_map(|(n, r)| r.map(|r| (n, r)))
    .collect();

    // Capacity chart.
    // Round up to a multiple of 4 so the four gridlines land on integers.
    let live_max = rolls
        .iter()
        .flat_map(|(_, r)| r.samples.iter().map(|s| s.live))
        .max()
        .unwrap_or(1)
        + 1;
    let y_max = live_max.div_ceil(4) as f64 * 4.0;
    let ax = Axis { t_max, y_max };
    let mut cap = String::new();
    ax.frame(
        &mut cap,
        "instances (in service = green, floor = red dashed, all = grey, on new image = blue)",
    );
    for (_, r) in &rolls {
        let at = |t_ms: i64| (r.started_at_ms + t_ms - load_start_ms) as f64 / 1000.0;
        let series = |f: &dyn Fn(&repave_engine::RollSample) -> u32| -> Vec<(f64, f64)> {
            r.samples
                .iter()
                .map(|s| (ax.x(at(s.t_ms)), ax.y(f(s) as f64)))
                .collect()
        };
        polyline(&mut cap, &series(&|s| s.floor), "#c53030", true);
        polyline(&mut cap, &series(&|s| s.live), "#999", false);
        polyline(&mut cap, &series(&|s| s.new), "#2b6cb0", false);
        polyline(&mut cap, &series(&|s| s.in_service), "#2f855a", false);
    }

    // Requests chart: per-second rates from the buckets.
    let per_sec = 1000.0 / load.bucket_ms as f64;
    let r_max = load
        .buckets
        .iter()
        .map(|b| (b.ok + b.failed) as f64 * per_sec)
        .fold(1.0, f64::max);
    let ax2 = Axis {
        t_max,
        y_max: r_max * 1.1,
    };
    let mut req = String::new();
    ax2.frame(&mut req, "requests/s (ok = green, failed = red)");
    let bw = (ax2.x(load.bucket_ms as f64 / 1000.0) - ax2.x(0.0)).max(1.0);
    for (i, b) in load.buckets.iter().enumerate() {
        let t = i as f64 * load.bucket_ms as f64 / 1000.0;
        let x = ax2.x(t);
        let ok = b.ok as f64 * per_sec;
        let bad = b.failed as f64 * per_sec;
        let _ = write!(
            req,
            r##"<rect x="{x:.1}" y="{:.1}" width="{bw:.1}" height="{:.1}" fill="#68d391"/>"##,
            ax2.y(ok),
            ax2.y(0.0) - ax2.y(ok)
        );
        if b.failed > 0 {
            let _ = write!(
                req,
                r##"<rect x="{x:.1}" y="{:.1}" width="{bw:.1}" height="{:.1}" fill="#e53e3e"/>"##,
                ax2.y(ok + bad),
                ax2.y(ok) - ax2.y(ok + bad)
            );
        }
    }

    let s = &outcome.summary;
    let steps: String = outcome
        .steps
        .iter()
        .map(|st| {
            format!(
                "<tr><td>{}</td><td>{}</td><td>{:.1}s</td><td>{}</td></tr>",
                esc(&st.name),
                esc(&st.state),
                st.seconds,
                st.attempts
            )
        })
        .collect();
    let updates: String = s
        .installed_updates
        .iter()
        .map(|u| {
            format!(
                "<tr><td>{}</td><td>{} {}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&u.id),
                esc(&u.package),
                esc(&u.version),
                esc(&u.severity),
                esc(&u.classification),
                esc(&u.released)
            )
        })
        .collect();
    format!(
        r#"<!doctype html><html><head><meta charset="utf-8"><title>repave demo — {run}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;color:#1a202c}} table{{border-collapse:collapse}} td,th{{padding:2px 10px;border-bottom:1px solid #e2e8f0;text-align:left}} .big{{font-size:1.3em}} pre{{background:#f7fafc;padding:1em;overflow:auto}}</style></head>
<body><h1>repave demo</h1>
<p class="big">run <b>{run}</b>: <b>{state}</b> · {before} → {after} · {total} requests, <b>{failed} failed</b></p>
<h2>In-service capacity</h2><svg id="capacity" width="{W}" height="{H}" viewBox="0 0 {W} {H}">{cap}</svg>
<h2>Request outcomes at the load balancer</h2><svg id="requests" width="{W}" height="{H}" viewBox="0 0 {W} {H}">{req}</svg>
<h2>Steps</h2><table><tr><th>step</th><th>state</th><th>took</th><th>attempts</th></tr>{steps}</table>
<h2>Installed updates (the new image's patch manifest)</h2><table><tr><th>id</th><th>package</th><th>severity</th><th>classification</th><th>released</th></tr>{updates}</table>
<h2>Summary</h2><pre>{json}</pre></body></html>"#,
        run = esc(outcome.run.as_str()),
        state = esc(&outcome.state),
        before = esc(&s.source_image.as_ref().map(|i| i.to_string()).unwrap_or_default()),
        after = esc(&s.new_image.as_ref().map(|i| i.to_string()).unwrap_or_default()),
        total = load.total,
        failed = load.failed,
        json = esc(&serde_json::to_string_pretty(json_summary).unwrap_or_default()),
    )
}
