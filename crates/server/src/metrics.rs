//! `/metrics` in the Prometheus text format. Counters live here; fleet
//! gauges are read from the providers when scraped.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

#[derive(Default)]
pub(crate) struct Metrics {
    /// (pipeline, result) → runs.
    runs: Mutex<BTreeMap<(String, String), u64>>,
    /// step → (seconds summed, count).
    steps: Mutex<BTreeMap<String, (f64, u64)>>,
    /// (method, route, status) → calls.
    api: Mutex<BTreeMap<(String, String, u16), u64>>,
    /// result → webhook deliveries.
    webhooks: Mutex<BTreeMap<String, u64>>,
}

/// One instance count of a group, for the fleet gauges.
pub(crate) struct FleetGauge {
    pub group: String,
    pub image: String,
    pub image_age_seconds: f64,
    pub instances: u32,
    pub in_service: u32,
}

impl Metrics {
    pub fn run_finished(&self, pipeline: &str, result: &str) {
        *self
            .runs
            .lock()
            .expect("metrics")
            .entry((pipeline.into(), result.into()))
            .or_default() += 1;
    }
    pub fn step_finished(&self, step: &str, elapsed: Duration) {
        let mut steps = self.steps.lock().expect("metrics");
        let e = steps.entry(step.into()).or_default();
        e.0 += elapsed.as_secs_f64();
        e.1 += 1;
    }
    pub fn api_call(&self, method: &str, route: &str, status: u16) {
        *self
            .api
            .lock()
            .expect("metrics")
            .entry((method.into(), route.into(), status))
            .or_default() += 1;
    }
    pub fn webhook(&self, result: &str) {
        *self.webhooks.lock().expect("metrics").entry(result.into()).or_default() += 1;
    }

    /// `calls`: each pipeline's provider API calls by operation.
    pub fn render(
        &self,
        fleet: &[FleetGauge],
        calls: &[(String, BTreeMap<String, u64>)],
        throttled: &[(String, BTreeMap<String, u64>)],
    ) -> String {
        let mut out = String::new();
        let w = &mut out;
        header(
            w,
            "repave_runs_total",
            "counter",
            "Runs finished by this server, by result.",
        );
        for ((p, r), n) in self.runs.lock().expect("metrics").iter() {
            let _ = writeln!(
                w,
                "repave_runs_total{{pipeline=\"{}\",result=\"{}\"}} {n}",
                esc(p),
                esc(r)
            );
        }
        header(
            w,
            "repave_step_duration_seconds",
            "summary",
            "Step durations of runs driven by this server.",
        );
        for (s, (sum, count)) in self.steps.lock().expect("metrics").iter() {
            let _ = writeln!(w, "repave_step_duration_seconds_sum{{step=\"{}\"}} {sum}", esc(s));
            let _ = writeln!(w, "repave_step_duration_seconds_count{{step=\"{}\"}} {count}", esc(s));
        }
        header(
            w,
            "repave_api_requests_total",
            "counter",
            "HTTP API calls by method, route and status.",
        );
        for ((m, r, s), n) in self.api.lock().expect("metrics").iter() {
            let _ = writeln!(
                w,
                "repave_api_requests_total{{method=\"{m}\",route=\"{}\",status=\"{s}\"}} {n}",
                esc(r)
            );
        }
        header(
            w,
            "repave_webhook_deliveries_total",
            "counter",
            "Webhook delivery attempts by result.",
        );
        for (r, n) in self.webhooks.lock().expect("metrics").iter() {
            let _ = writeln!(w, "repave_webhook_deliveries_total{{result=\"{r}\"}} {n}");
        }
        header(
            w,
            "repave_provider_api_calls_total",
            "counter",
            "Cloud API calls by pipeline and operation (where the provider counts them).",
        );
        for (p, ops) in calls {
            for (op, n) in ops {
                let _ = writeln!(
                    w,
                    "repave_provider_api_calls_total{{pipeline=\"{}\",operation=\"{}\"}} {n}",
                    esc(p),
                    esc(op)
                );
            }
        }
        header(
            w,
            "repave_provider_throttled_calls_total",
            "counter",
            "Cloud API calls answered with throttling, by pipeline and operation.",
        );
        for (p, ops) in throttled {
            for (op, n) in ops {
                let _ = writeln!(
                    w,
                    "repave_provider_throttled_calls_total{{pipeline=\"{}\",operation=\"{}\"}} {n}",
                    esc(p),
                    esc(op)
                );
            }
        }
        header(w, "repave_instances", "gauge", "Instances of a group by image.");
        for g in fleet {
            let _ = writeln!(
                w,
                "repave_instances{{group=\"{}\",image=\"{}\"}} {}",
                esc(&g.group),
                esc(&g.image),
                g.instances
            );
        }
        header(
            w,
            "repave_image_age_seconds",
            "gauge",
            "Age of each image a group's instances run.",
        );
        for g in fleet {
            let _ = writeln!(
                w,
                "repave_image_age_seconds{{group=\"{}\",image=\"{}\"}} {}",
                esc(&g.group),
                esc(&g.image),
                g.image_age_seconds
            );
        }
        header(
            w,
            "repave_in_service_instances",
            "gauge",
            "Healthy in-service instances of a group.",
        );
        let mut by_group: BTreeMap<&str, u32> = BTreeMap::new();
        for g in fleet {
            *by_group.entry(&g.group).or_default() += g.in_service;
        }
        for (g, n) in by_group {
            let _ = writeln!(w, "repave_in_service_instances{{group=\"{}\"}} {n}", esc(g));
        }
        out
    }
}

fn header(w: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(w, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Label values: backslash, quote and newline escaped.
fn esc(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}
