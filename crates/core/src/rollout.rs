//! The rollout planner: a pure function from what was observed to what to do
//! next. The engine's loop observes the group and its load balancer, calls
//! [`plan`], carries out the actions, persists the returned progress and
//! repeats. Time is passed in; nothing here sleeps, reads a clock or does IO.
//!
//! Invariants (DESIGN.md), for `N` the group's base desired capacity:
//! - healthy in-service instances ≥ `floor = ceil(N × min_healthy_percent / 100)`
//! - all instances ≤ `ceil(N × max_healthy_percent / 100)` (at least N + 1
//!   when max > 100): the surge room
//! - an instance is drained before it is terminated
//! - a new instance is in service only once healthy at the balancer and past
//!   its warmup
//!
//! Replacement is continuous: whenever room opens the next replacement
//! starts, so `k = surge + (N − floor)` replacements run at once.

use crate::config::{HeldInstances, Rollout};
use crate::ids::{ImageId, InstanceId, Timestamp};
use crate::provider::{Lifecycle, TargetState};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::time::Duration;

/// The policy knobs the planner enforces.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RollPolicy {
    pub min_healthy_percent: u32,
    pub max_healthy_percent: u32,
    pub warmup: Duration,
    pub health_grace: Duration,
    pub max_unhealthy_new: u32,
    pub skip_matching: bool,
    pub protected: HeldInstances,
    pub standby: HeldInstances,
}

impl From<&Rollout> for RollPolicy {
    fn from(r: &Rollout) -> Self {
        Self {
            min_healthy_percent: r.min_healthy_percent,
            max_healthy_percent: r.max_healthy_percent,
            warmup: r.warmup.get(),
            health_grace: r.health_grace.get(),
            max_unhealthy_new: r.max_unhealthy_new,
            skip_matching: r.skip_matching,
            protected: r.protected,
            standby: r.standby,
        }
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

/// Replacements the policy allows at once (at least 1).
pub fn concurrency(n: u32, policy: &RollPolicy) -> u32 {
    let (floor, max_total) = capacity_bounds(n, policy);
    ((max_total - n) + n.saturating_sub(floor)).max(1)
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
}

impl Member {
    fn live(&self) -> bool {
        !matches!(self.lifecycle, Lifecycle::Terminating | Lifecycle::Terminated)
    }
    fn target_state(&self) -> TargetState {
        self.target.map(|t| t.0).unwrap_or(TargetState::Unused)
    }
}

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
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    SetDesired { desired: u32 },
    /// Deregister from the balancer: no new requests, in-flight ones finish.
    Drain { instance: InstanceId },
    /// Terminate a drained instance; `decrement` lowers desired capacity.
    Terminate { instance: InstanceId, decrement: bool },
}

/// Where the roll stands after this tick.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// Keep going: observe again.
    Progressing,
    /// Nothing left to replace and every instance is healthy on the target.
    Complete,
    /// Too many new instances failed: stop and roll back.
    Abort { reason: String },
    /// Blocked on held instances (`wait`): the engine's deadline decides.
    Blocked { reason: String },
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
    pub held: Vec<InstanceId>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub actions: Vec<Action>,
    pub progress: RollProgress,
    pub status: RollStatus,
    pub outcome: Outcome,
}

fn in_service(m: &Member, p: &RollProgress, policy: &RollPolicy, now: Timestamp) -> bool {
    match m.target {
        Some((TargetState::Healthy, since)) => {
            // Instances launched during the roll must also be past warmup.
            m.launched_at < p.started_at || now.since(since) >= policy.warmup
        }
        _ => false,
    }
}

fn held(m: &Member, policy: &RollPolicy) -> Option<HeldInstances> {
    if m.lifecycle == Lifecycle::Standby {
        Some(policy.standby)
    } else if m.protected {
        Some(policy.protected)
    } else {
        None
    }
}

/// Decide the next actions. Pure: same inputs, same plan.
pub fn plan(obs: &Observation, policy: &RollPolicy, progress: &RollProgress, now: Timestamp) -> Plan {
    let mut p = progress.clone();

    // Desired capacity is read every tick: a change we did not make is the
    // autoscaler's, and moves the base capacity by the same amount.
    if let Some(last) = p.last_set_desired {
        if obs.desired != last {
            let delta = obs.desired as i64 - last as i64;
            p.base_desired = (p.base_desired as i64 + delta).clamp(obs.min as i64, obs.max as i64) as u32;
            p.last_set_desired = Some(obs.desired);
        }
    }
    let n = p.base_desired;
    let (floor, max_total) = capacity_bounds(n, policy);
    let surge = max_total - n;

    let live: Vec<&Member> = obs.members.iter().filter(|m| m.live()).collect();
    let is_target = |m: &Member| m.image == p.target_image;

    // Drain bookkeeping: forget instances that are gone.
    let live_ids: BTreeSet<&InstanceId> = live.iter().map(|m| &m.id).collect();
    let gone: Vec<InstanceId> = p.draining.iter().filter(|id| !live_ids.contains(id)).cloned().collect();
    for id in gone {
        p.draining.remove(&id);
        p.replaced += 1;
    }

    // New instances that never turned healthy within the grace time.
    for m in live.iter().filter(|m| is_target(m) && m.launched_at >= p.started_at) {
        let ok = matches!(m.target_state(), TargetState::Healthy);
        if !ok && now.since(m.launched_at) > policy.health_grace {
            p.failed_new.insert(m.id.clone());
        }
    }

    let mut status = RollStatus { base_desired: n, floor, max_total, live: live.len() as u32, ..Default::default() };
    let mut blocked_on = Vec::new();
    let mut old: Vec<&Member> = Vec::new();
    for m in &live {
        // With skip_matching off, instances already on the target image
        // from before the roll are replaced too.
        if is_target(m) && (policy.skip_matching || m.launched_at >= p.started_at) {
            status.new += 1;
            continue;
        }
        match held(m, policy) {
            Some(HeldInstances::Skip) => {
                status.held.push(m.id.clone());
                continue;
            }
            Some(HeldInstances::Wait) | Some(HeldInstances::Fail) => {
                status.held.push(m.id.clone());
                blocked_on.push(m.id.clone());
            }
            None => {}
        }
        old.push(m);
    }
    status.old = old.len() as u32;
    status.draining = live.iter().filter(|m| p.draining.contains(&m.id)).count() as u32;
    status.failed_new = p.failed_new.len() as u32;
    let mut healthy = live
        .iter()
        .filter(|m| !p.draining.contains(&m.id) && in_service(m, &p, policy, now))
        .count() as u32;
    status.in_service = healthy;

    if p.failed_new.len() as u32 >= policy.max_unhealthy_new {
        let ids: Vec<String> = p.failed_new.iter().map(|i| i.to_string()).collect();
        let reason = format!(
            "{} new instance(s) not healthy within {}s of launch: {}",
            ids.len(),
            policy.health_grace.as_secs(),
            ids.join(", ")
        );
        return Plan { actions: vec![], progress: p, status, outcome: Outcome::Abort { reason } };
    }

    let mut actions = Vec::new();
    let mut desired = obs.desired;
    let mut old_remaining = old.len() as u32;

    // 1. Terminate old instances whose drain finished.
    for m in &old {
        if p.draining.contains(&m.id) && matches!(m.target_state(), TargetState::Unused) {
            old_remaining -= 1;
            let want = n + surge.min(old_remaining);
            let decrement = want < desired;
            if decrement {
                desired -= 1;
            }
            actions.push(Action::Terminate { instance: m.id.clone(), decrement });
        }
    }

    // 2. Desired capacity: base plus the surge still useful.
    let want = n + surge.min(old_remaining);
    if want != desired {
        desired = want;
        actions.push(Action::SetDesired { desired });
    }
    // What desired will be once these actions are done; a different value
    // next tick is somebody else's change.
    p.last_set_desired = Some(desired);

    // 3. Drain old instances while the floor allows. Unhealthy ones first:
    //    draining them costs no capacity.
    let mut candidates: Vec<&&Member> = old
        .iter()
        .filter(|m| !p.draining.contains(&m.id) && held(m, policy).is_none())
        .collect();
    candidates.sort_by_key(|m| (in_service(m, &p, policy, now), m.launched_at, m.id.clone()));
    for m in candidates {
        let serving = in_service(m, &p, policy, now);
        if serving {
            if healthy <= floor {
                break;
            }
            healthy -= 1;
        }
        p.draining.insert(m.id.clone());
        actions.push(Action::Drain { instance: m.id.clone() });
    }

    let all_new_serving = live
        .iter()
        .filter(|m| is_target(m))
        .all(|m| in_service(m, &p, policy, now));
    let outcome = if actions.is_empty() && old_remaining == 0 && all_new_serving && desired == n && live.len() as u32 == n {
        Outcome::Complete
    } else if !blocked_on.is_empty() && old_remaining as usize == blocked_on.len() {
        let ids: Vec<String> = blocked_on.iter().map(|i| i.to_string()).collect();
        Outcome::Blocked { reason: format!("waiting for protected or standby instance(s): {}", ids.join(", ")) }
    } else {
        Outcome::Progressing
    };
    Plan { actions, progress: p, status, outcome }
}

#[cfg(test)]
mod tests;
