//! The rollout planner: a pure function from what was observed to what to do
//! next. The engine's loop observes the group and its load balancer, calls
//! [`plan`], carries out the actions, persists the returned progress and
//! repeats. Time is passed in; nothing here sleeps, reads a clock or does IO.
//!
//! Invariants (DESIGN.md), for `N` the group's base desired capacity:
//! - healthy in-service instances ≥ `floor = ceil(N × min_healthy_percent / 100)`
//! - all instances ≤ `ceil(N × max_healthy_percent / 100)` (at least N + 1
//!   when max > 100): the surge room
//! - an instance is drained before it is terminated (its drain finished, or
//!   `drain_timeout` — the deregistration delay bound — passed)
//! - a new instance is in service only once healthy at the balancer and past
//!   its warmup
//!
//! Replacement is continuous: whenever room opens the next replacement
//! starts, so `k = surge + (N − floor)` replacements run at once. Stages
//! (canary, checkpoints) cap how many replacements may have started; between
//! stages the roll waits with nothing in flight. Every waiting state has a
//! deadline: pauses end, unhealthy new instances fail after `health_grace`,
//! drains end after `drain_timeout`, held instances fail the roll after
//! `hold_timeout`, and a window cutoff turns into [`Outcome::Paused`].

mod health;
mod plan;
mod stages;

pub use health::{HealthSettings, DEFAULT_WARMUP, FALLBACK_HEALTH_GRACE, MIN_MARGIN};
pub use plan::plan;
pub use stages::{stage_caps, Stage};

use crate::config::{HeldInstances, Rollout};
use crate::ids::{ImageId, InstanceId, Timestamp};
use crate::provider::{Lifecycle, TargetState};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::time::Duration;

/// The policy knobs the planner enforces (`[pipelines.X.rollout]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RollPolicy {
    pub min_healthy_percent: u32,
    pub max_healthy_percent: u32,
    pub warmup: Duration,
    pub health_grace: Duration,
    /// Failed new instances that abort the roll.
    pub max_unhealthy_new: u32,
    /// When set, the abort threshold is this share of the instances to
    /// replace (rounded up, at least 1) instead of `max_unhealthy_new`.
    #[serde(default)]
    pub max_unhealthy_new_percent: Option<u32>,
    /// Replacements in the canary stage (0: none); any failure in it aborts.
    #[serde(default)]
    pub canary: u32,
    /// How long the canaries stay in service before the roll goes on.
    #[serde(default)]
    pub bake_time: Duration,
    /// Percentages of the fleet after which the roll pauses, ascending.
    #[serde(default)]
    pub checkpoints: Vec<u32>,
    #[serde(default)]
    pub checkpoint_pause: Duration,
    pub skip_matching: bool,
    pub protected: HeldInstances,
    pub standby: HeldInstances,
    /// Deadline of the `Blocked` state (held instances with `wait`).
    #[serde(default = "default_hold_timeout")]
    pub hold_timeout: Duration,
    /// A drain that has not finished after this is treated as finished.
    #[serde(default = "default_drain_timeout")]
    pub drain_timeout: Duration,
    /// No new replacement starts this long after the roll started.
    #[serde(default)]
    pub window_cutoff: Option<Duration>,
}

// A journal written before these fields existed reads `[rollout]`'s own
// defaults: they are declared there once.
fn default_hold_timeout() -> Duration {
    Rollout::default().hold_timeout.get()
}
fn default_drain_timeout() -> Duration {
    Rollout::default().drain_timeout.get()
}

impl RollPolicy {
    /// The policy of `[rollout]` with the readiness timing in effect (the
    /// config's, or the group's: [`HealthSettings::new`]).
    pub fn new(r: &Rollout, health: &HealthSettings) -> Self {
        Self {
            min_healthy_percent: r.min_healthy_percent,
            max_healthy_percent: r.max_healthy_percent,
            warmup: health.warmup,
            health_grace: health.health_grace,
            max_unhealthy_new: r.max_unhealthy_new,
            max_unhealthy_new_percent: r.max_unhealthy_new_percent,
            canary: r.canary,
            bake_time: r.bake_time.get(),
            checkpoints: r.checkpoints.clone(),
            checkpoint_pause: r.checkpoint_pause.get(),
            skip_matching: r.skip_matching,
            protected: r.protected,
            standby: r.standby,
            hold_timeout: r.hold_timeout.get(),
            drain_timeout: r.drain_timeout.get(),
            window_cutoff: r.window_cutoff.map(|d| d.get()),
        }
    }

    /// The policy of a roll back to a known-good image: no canary, no
    /// checkpoints, no cutoff — the fleet leaves the bad image as fast as
    /// the floor allows.
    pub fn for_rollback(self) -> Self {
        Self {
            canary: 0,
            bake_time: Duration::ZERO,
            checkpoints: vec![],
            window_cutoff: None,
            ..self
        }
    }
}

impl Default for RollPolicy {
    /// The config defaults, for a group that says nothing about readiness.
    fn default() -> Self {
        let r = Rollout::default();
        Self::new(&r, &HealthSettings::new(&r, &crate::provider::HealthTiming::default()))
    }
}

/// `floor` and `max_total` for a base capacity `n`.
pub fn capacity_bounds(n: u32, policy: &RollPolicy) -> (u32, u32) {
    let floor = (n * policy.min_healthy_percent).div_ceil(100);
    let mut max_total = (n * policy.max_healthy_percent).div_ceil(100);
    if policy.max_healthy_percent > 100 && max_total <= n {
        max_total = n + 1;
    }
    (floor, max_total.max(n))
}

/// [`capacity_bounds`] within the group's own maximum size: the surge never
/// asks for more instances than the group may hold (AWS refuses a desired
/// capacity above MaxSize with a ValidationError). repave does not raise
/// MaxSize for the roll: it is the owner's limit (cost, quotas, IP space)
/// and infrastructure as code would see it drift.
pub fn capacity_bounds_within(n: u32, group_max: u32, policy: &RollPolicy) -> (u32, u32) {
    let (floor, max_total) = capacity_bounds(n, policy);
    (floor, max_total.min(group_max.max(n)))
}

/// Replacements the policy allows at once (at least 1).
pub fn concurrency(n: u32, policy: &RollPolicy) -> u32 {
    concurrency_within(n, u32::MAX, policy)
}

/// [`concurrency`] within the group's maximum size.
pub fn concurrency_within(n: u32, group_max: u32, policy: &RollPolicy) -> u32 {
    let (floor, max_total) = capacity_bounds_within(n, group_max, policy);
    ((max_total - n) + n.saturating_sub(floor)).max(1)
}

/// Why the policy leaves no room to replace anything in a group of base
/// capacity `n` and maximum size `group_max`, in words that say what to
/// change; `None` when there is room.
pub fn no_room(n: u32, group_max: u32, policy: &RollPolicy) -> Option<String> {
    let (floor, max_total) = capacity_bounds_within(n, group_max, policy);
    if n == 0 || max_total > n || floor < n {
        return None;
    }
    let (_, wanted) = capacity_bounds(n, policy);
    Some(if wanted > max_total {
        format!(
            "the group's MaxSize {group_max} leaves no room for the surge: {n} desired, min_healthy_percent {} keeps all {floor} in service, and max_healthy_percent {} would need {wanted}; raise the group's MaxSize to at least {} or lower min_healthy_percent",
            policy.min_healthy_percent,
            policy.max_healthy_percent,
            n + 1
        )
    } else {
        format!(
            "the policy leaves no room to replace an instance: {n} desired, floor {floor} (min_healthy_percent {}), at most {max_total} (max_healthy_percent {}); raise max_healthy_percent or lower min_healthy_percent",
            policy.min_healthy_percent, policy.max_healthy_percent
        )
    })
}

/// `T_lb = ceil(N / k) × (t_launch + t_ready + warmup) + t_drain`.
pub fn lower_bound(n: u32, k: u32, launch: Duration, ready: Duration, warmup: Duration, drain: Duration) -> Duration {
    let waves = n.div_ceil(k.max(1));
    (launch + ready + warmup) * waves + drain
}

/// One group member as the engine observed it (group + balancer views).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Member {
    pub id: InstanceId,
    pub image: ImageId,
    pub lifecycle: Lifecycle,
    pub protected: bool,
    pub launched_at: Timestamp,
    /// Balancer state and when it was entered; `None`: not registered.
    pub target: Option<(TargetState, Timestamp)>,
    /// Held by a lifecycle hook (Pending:Wait, Terminating:Wait).
    #[serde(default)]
    pub hook_wait: bool,
}

impl Member {
    fn live(&self) -> bool {
        !matches!(self.lifecycle, Lifecycle::Terminating | Lifecycle::Terminated)
    }
    fn target_state(&self) -> TargetState {
        self.target.map(|t| t.0).unwrap_or(TargetState::Unused)
    }
}

/// The group as observed on one tick.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Observation {
    /// The group's desired capacity as read this tick.
    pub desired: u32,
    pub min: u32,
    pub max: u32,
    pub members: Vec<Member>,
}

/// What the planner remembers between ticks (persisted by the engine so a
/// restarted process continues the same roll).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RollProgress {
    pub target_image: ImageId,
    /// The capacity the fleet should have without the roll's surge. Follows
    /// outside changes of desired capacity (the autoscaler).
    pub base_desired: u32,
    /// The desired capacity the roll last set (to tell our changes from the
    /// autoscaler's).
    pub last_set_desired: Option<u32>,
    pub started_at: Timestamp,
    /// Instances this roll deregistered from the balancer.
    pub draining: BTreeSet<InstanceId>,
    /// New instances that failed to become healthy within the grace time.
    pub failed_new: BTreeSet<InstanceId>,
    /// Old instances replaced so far.
    pub replaced: u32,
    /// Target-image instances this roll deregistered: failed ones (to be
    /// replaced) and surplus ones (desired dropped below what is live).
    #[serde(default)]
    pub draining_new: BTreeSet<InstanceId>,
    /// Index of the current stage (see [`stage_caps`]).
    #[serde(default)]
    pub stage: u32,
    /// When the current stage's replacements were all in service: its pause
    /// runs from here.
    #[serde(default)]
    pub stage_done_at: Option<Timestamp>,
    /// Since when the roll waits only on held instances.
    #[serde(default)]
    pub blocked_since: Option<Timestamp>,
    /// End of the maintenance window's roll time (set by whoever schedules
    /// the roll): at or after it no new replacement starts.
    #[serde(default)]
    pub cutoff: Option<Timestamp>,
    /// When this roll was last resumed: `window_cutoff` counts from here
    /// (`started_at` still tells which instances the roll launched).
    #[serde(default)]
    pub resumed_at: Option<Timestamp>,
    /// New instances last seen held by a launch lifecycle hook.
    #[serde(default)]
    pub hook_waiting: BTreeSet<InstanceId>,
    /// New instances that left the group from a launch hook's wait without
    /// entering service: the hook abandoned them (its handler answered
    /// ABANDON, or did not complete within the heartbeat and the default
    /// result is ABANDON).
    #[serde(default)]
    pub abandoned_new: BTreeSet<InstanceId>,
}

impl RollProgress {
    pub fn new(target_image: ImageId, base_desired: u32, now: Timestamp) -> Self {
        Self {
            target_image,
            base_desired,
            last_set_desired: None,
            started_at: now,
            draining: BTreeSet::new(),
            failed_new: BTreeSet::new(),
            replaced: 0,
            draining_new: BTreeSet::new(),
            stage: 0,
            stage_done_at: None,
            blocked_since: None,
            cutoff: None,
            resumed_at: None,
            hook_waiting: BTreeSet::new(),
            abandoned_new: BTreeSet::new(),
        }
    }

    /// The earlier of the explicit cutoff and `window_cutoff` after the roll
    /// (or its resume) began.
    pub fn effective_cutoff(&self, policy: &RollPolicy) -> Option<Timestamp> {
        let relative = policy
            .window_cutoff
            .map(|d| self.resumed_at.unwrap_or(self.started_at).plus(d));
        match (self.cutoff, relative) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// One thing the engine should do this tick.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    SetDesired {
        desired: u32,
    },
    /// Deregister from the balancer: no new requests, in-flight ones finish.
    Drain {
        instance: InstanceId,
    },
    /// Terminate a drained instance; `decrement` lowers desired capacity.
    Terminate {
        instance: InstanceId,
        decrement: bool,
    },
}

/// Where the roll stands after this tick.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// Keep going: observe again.
    Progressing,
    /// Nothing left to replace and every instance is healthy on the target.
    Complete,
    /// Too many new instances failed, a canary failed, a `fail` instance is
    /// held, held instances outlived `hold_timeout`, or the group leaves no
    /// room: stop. `blame` says whether the image is at fault (roll back and
    /// mark it bad) or the orchestration is (pause: the image stays good).
    Abort { reason: String, blame: Blame },
    /// Only held (`wait`) instances are left; aborts after `hold_timeout`.
    Blocked { reason: String },
    /// The window cutoff passed and nothing is in flight: persist and resume
    /// in the next window.
    Paused { reason: String },
}

/// Who caused an abort: only what the image did marks it bad.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Blame {
    /// New instances on the image failed to become healthy.
    Image,
    /// Held instances, capacity limits, policy: nothing the image did.
    Orchestration,
}

/// Counts for progress displays and the invariant checks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct RollStatus {
    pub base_desired: u32,
    pub floor: u32,
    pub max_total: u32,
    pub live: u32,
    pub old: u32,
    pub new: u32,
    pub draining: u32,
    /// Healthy, registered, past warmup, not draining.
    pub in_service: u32,
    pub failed_new: u32,
    /// New instances a launch lifecycle hook abandoned so far.
    #[serde(default)]
    pub abandoned_new: u32,
    pub held: Vec<InstanceId>,
    /// Current stage and how many replacements it allows in total.
    #[serde(default)]
    pub stage: u32,
    #[serde(default)]
    pub stage_cap: u32,
    /// Why no new replacement starts right now (a pause, the cutoff).
    #[serde(default)]
    pub waiting: Option<String>,
}

/// The planner's answer for one tick.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub actions: Vec<Action>,
    pub progress: RollProgress,
    pub status: RollStatus,
    pub outcome: Outcome,
}

#[cfg(test)]
mod props;
#[cfg(test)]
mod tests;
