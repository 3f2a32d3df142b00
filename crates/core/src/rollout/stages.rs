//! Stages of a roll: the canary, each checkpoint, then the rest. A stage
//! caps how many replacements may have started; when they are all done the
//! roll pauses for the stage's pause before the next stage opens.

use super::RollPolicy;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// One stage: replacements allowed in total by its end, and the pause after.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stage {
    pub cap: u32,
    pub pause: Duration,
    /// "canary", "checkpoint 50%" — for messages.
    pub label: String,
}

/// Stages for `total` instances to replace. Caps strictly increase; the last
/// stage's cap is `total` with no pause. A checkpoint that would not add a
/// replacement (small fleets) is dropped.
pub fn stage_caps(total: u32, policy: &RollPolicy) -> Vec<Stage> {
    let mut out: Vec<Stage> = Vec::new();
    let mut push = |cap: u32, pause: Duration, label: String| {
        let last = out.last().map_or(0, |s| s.cap);
        if cap > last && cap < total {
            out.push(Stage { cap, pause, label });
        }
    };
    if policy.canary > 0 {
        push(policy.canary, policy.bake_time, "canary".into());
    }
    for &pct in &policy.checkpoints {
        push(
            (total * pct).div_ceil(100),
            policy.checkpoint_pause,
            format!("checkpoint {pct}%"),
        );
    }
    out.push(Stage {
        cap: total,
        pause: Duration::ZERO,
        label: "rest".into(),
    });
    out
}
