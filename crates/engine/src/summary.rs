//! What a finished run reports (CLI `--json`, the demo, the dashboard).

use repave_core::patch::Update;
use repave_core::{ImageId, RunId};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
pub struct RollSample {
    /// Milliseconds since the roll started.
    pub t_ms: i64,
    pub in_service: u32,
    pub old: u32,
    pub new: u32,
    pub draining: u32,
    pub live: u32,
    pub floor: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
pub struct RollReport {
    pub target_image: Option<ImageId>,
    /// When the roll started (ms since the epoch); samples are relative to it.
    pub started_at_ms: i64,
    pub seconds: f64,
    /// `ceil(N / k) × (t_launch + t_ready + warmup) + t_drain`, from the
    /// latencies measured in this roll.
    pub lower_bound_seconds: f64,
    pub efficiency: f64,
    pub min_in_service: u32,
    pub floor: u32,
    pub max_total: u32,
    pub max_live: u32,
    pub base_desired: u32,
    pub concurrency: u32,
    pub replaced: u32,
    pub launch_ready_ms_median: i64,
    pub warmup_ms: i64,
    pub drain_ms_median: i64,
    pub samples: Vec<RollSample>,
    /// Protected or standby members the policy left on their old image,
    /// "i-1 on ami-0 (protected)"; empty when the whole fleet is on the
    /// new one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub left_on_old_image: Vec<String>,
    /// Warm pool instances on the old image terminated before the roll so
    /// the pool refills from the new launch spec, "i-1 on ami-0
    /// (Warmed:Stopped)"; empty without a warm pool (and under `strategy =
    /// "native"`, where Instance Refresh replaces the pool).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warm_pool_replaced: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
pub struct StepTiming {
    pub name: String,
    pub state: String,
    pub seconds: f64,
    pub attempts: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
pub struct RunSummary {
    pub source_image: Option<ImageId>,
    pub new_image: Option<ImageId>,
    pub installed_updates: Vec<Update>,
    pub roll: Option<RollReport>,
    pub rollback_roll: Option<RollReport>,
    pub rolled_back: bool,
    pub error: Option<String>,
    pub retained_deleted: Vec<ImageId>,
    /// The selection resolved to nothing: no image was made and nothing
    /// published (`patch.when_empty = "stop"`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub nothing_to_install: bool,
    /// Cloud API calls this run made, by operation (providers that count).
    pub api_calls: std::collections::BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RunOutcome {
    pub run: RunId,
    pub pipeline: String,
    pub state: String,
    pub summary: RunSummary,
    pub steps: Vec<StepTiming>,
}
