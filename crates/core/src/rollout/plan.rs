//! [`plan`]: one tick of the roll, as a pure function.

use super::stages::stage_caps;
use super::{Action, Blame, Member, Observation, Outcome, Plan, RollPolicy, RollProgress, RollStatus};
use crate::config::HeldInstances;
use crate::ids::{InstanceId, Timestamp};
use crate::provider::{Lifecycle, TargetState};
use std::collections::BTreeSet;

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
    HeldInstances::holding(
        m.lifecycle == Lifecycle::Standby,
        m.protected,
        policy.standby,
        policy.protected,
    )
}

/// Drain over: the balancer says so, or the deregistration delay bound
/// passed (a stuck drain must not stall the roll forever).
fn drained(m: &Member, policy: &RollPolicy, now: Timestamp) -> bool {
    match m.target {
        None | Some((TargetState::Unused, _)) => true,
        Some((TargetState::Draining, since)) => now.since(since) >= policy.drain_timeout,
        _ => false,
    }
}

/// Ids for a message; long lists are cut (a 1,000-instance abort reason
/// must stay readable).
fn ids(v: &[InstanceId]) -> String {
    const SHOWN: usize = 10;
    let mut s = v
        .iter()
        .take(SHOWN)
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    if v.len() > SHOWN {
        s.push_str(&format!(" and {} more", v.len() - SHOWN));
    }
    s
}

fn abort(actions: Vec<Action>, p: RollProgress, status: RollStatus, reason: String, blame: Blame) -> Plan {
    Plan {
        actions,
        progress: p,
        status,
        outcome: Outcome::Abort { reason, blame },
    }
}

/// Decide the next actions. Pure: same inputs, same plan.
///
/// One tick, in its phases: follow the autoscaler, keep the books
/// (drains finished, hooks abandoned, new instances failed), classify the
/// members, the abort checks, the stages, then the actions — terminate
/// what is drained, raise desired for surge, drain within the floor — and
/// the outcome.
pub fn plan(obs: &Observation, policy: &RollPolicy, progress: &RollProgress, now: Timestamp) -> Plan {
    let mut p = progress.clone();
    follow_the_autoscaler(&mut p, obs);
    let n = p.base_desired;
    let (floor, max_total) = super::capacity_bounds_within(n, obs.max, policy);
    let live: Vec<&Member> = obs.members.iter().filter(|m| m.live()).collect();
    keep_the_books(&mut p, &live, policy, now);
    let c = classify(&p, &live, policy, now);
    let mut status = RollStatus {
        base_desired: n,
        floor,
        max_total,
        live: live.len() as u32,
        new: c.new,
        held: c.held.clone(),
        old: c.old.len() as u32,
        draining: live.iter().filter(|m| draining(&p, &m.id)).count() as u32,
        failed_new: p.failed_new.len() as u32,
        abandoned_new: p.abandoned_new.len() as u32,
        in_service: c.in_service,
        ..Default::default()
    };

    // Stages: how many replacements may have started by now.
    let total = p.replaced + c.old.len() as u32;
    let stages = stage_caps(total, policy);
    if let Some((reason, blame)) = abort_reason(&p, &c, obs, policy, n, total, &stages) {
        return abort(vec![], p, status, reason, blame);
    }
    let in_flight = status.draining > 0
        || live.len() < obs.desired as usize
        || live.iter().any(|m| is_new(&p, m) && !in_service(m, &p, policy, now));
    let gate = advance_stages(&mut p, &stages, total, in_flight, policy, now);
    status.stage = p.stage;
    status.stage_cap = gate.cap;
    status.waiting = match gate.cutoff {
        Some(c) => Some(format!(
            "window cutoff at {} ms passed: no new replacement starts",
            c.millis()
        )),
        None => gate.pausing.clone(),
    };
    let aim = Aim {
        n,
        surge: max_total - n,
        cap: gate.cap,
        // Starting a replacement means launching a surge instance or
        // draining an old one beyond what pairs with instances already
        // launched.
        can_start: gate.cutoff.is_none() && gate.pausing.is_none(),
    };

    let mut acts = Acts {
        actions: Vec::new(),
        desired: obs.desired,
    };
    let (old_remaining, replaced_now) = terminate_drained(&p, &c.old, &live, policy, now, &aim, &mut acts);
    // Raise desired for surge. Lowering it is done by draining and
    // terminating chosen instances (below) so the group never picks a
    // serving new instance while an old one remains.
    let want = aim.at(old_remaining, replaced_now);
    if want > acts.desired {
        acts.desired = want;
        acts.actions.push(Action::SetDesired { desired: want });
    }
    let room = Room {
        floor,
        want,
        old_remaining,
        replaced_now,
        draining_before: status.draining,
    };
    drain(&mut p, &c, &live, policy, now, &aim, &room, &mut acts);
    // What desired will be once these actions are done; a different value
    // next tick is somebody else's change.
    p.last_set_desired = Some(acts.desired);
    let Acts { actions, desired } = acts;

    let only_held_left = !c.blocked_on.is_empty() && old_remaining as usize == c.blocked_on.len();
    if let Some(reason) = held_too_long(&mut p, &c.blocked_on, only_held_left && actions.is_empty(), policy, now) {
        return abort(actions, p, status, reason, Blame::Orchestration);
    }
    let settled = actions.is_empty() && !in_flight && desired == n && live.len() as u32 == n;
    let end = Ending {
        settled,
        old_remaining,
        only_held_left,
        cutoff: gate.cutoff,
        blocked_on: &c.blocked_on,
    };
    let outcome = outcome(&p, &live, policy, now, &end);
    Plan {
        actions,
        progress: p,
        status,
        outcome,
    }
}

/// On the target image and launched during this roll.
fn is_new(p: &RollProgress, m: &Member) -> bool {
    m.image == p.target_image && m.launched_at >= p.started_at
}

fn draining(p: &RollProgress, id: &InstanceId) -> bool {
    p.draining.contains(id) || p.draining_new.contains(id)
}

/// Desired capacity is read every tick: a change we did not make is the
/// autoscaler's, and moves the base capacity by the same amount.
fn follow_the_autoscaler(p: &mut RollProgress, obs: &Observation) {
    if let Some(last) = p.last_set_desired {
        if obs.desired != last {
            let delta = obs.desired as i64 - last as i64;
            p.base_desired = (p.base_desired as i64 + delta).clamp(obs.min as i64, obs.max as i64) as u32;
            p.last_set_desired = Some(obs.desired);
        }
    }
}

/// Drains that finished (their instance is gone), new instances a launch
/// hook abandoned, new instances that never turned healthy in time.
fn keep_the_books(p: &mut RollProgress, live: &[&Member], policy: &RollPolicy, now: Timestamp) {
    let live_ids: BTreeSet<&InstanceId> = live.iter().map(|m| &m.id).collect();
    let gone: Vec<InstanceId> = p.draining.iter().filter(|id| !live_ids.contains(id)).cloned().collect();
    for id in gone {
        p.draining.remove(&id);
        p.replaced += 1;
    }
    // New instances that were held by a launch hook and are gone (or on
    // their way out) without this roll draining them: abandoned by the
    // hook. Not the image's doing as far as anyone can tell — the hook's
    // handler decides — so they count against their own budget.
    let abandoned: Vec<InstanceId> = p
        .hook_waiting
        .iter()
        .filter(|id| !live_ids.contains(id) && !p.draining_new.contains(*id))
        .cloned()
        .collect();
    p.abandoned_new.extend(abandoned);
    p.hook_waiting = live
        .iter()
        .filter(|m| m.hook_wait && m.lifecycle == Lifecycle::Pending && is_new(p, m))
        .map(|m| m.id.clone())
        .collect();
    p.draining_new.retain(|id| live_ids.contains(id));
    // New instances that never turned healthy within the grace time.
    // (Surplus instances this roll drained before they turned healthy are
    // not failures.)
    let failed: Vec<InstanceId> = live
        .iter()
        .filter(|m| is_new(p, m) && !p.draining_new.contains(&m.id))
        .filter(|m| !matches!(m.target_state(), TargetState::Healthy) && now.since(m.launched_at) > policy.health_grace)
        .map(|m| m.id.clone())
        .collect();
    p.failed_new.extend(failed);
}

/// The live members sorted by what the roll does with them.
struct Classified<'a> {
    /// On the target image (counted as new).
    new: u32,
    /// New ones that failed: drained and replaced.
    failed: Vec<&'a Member>,
    /// To be replaced.
    old: Vec<&'a Member>,
    /// Held (protected or standby) under "skip" or "wait".
    held: Vec<InstanceId>,
    /// Held under "wait": the roll is blocked on them at its end.
    blocked_on: Vec<InstanceId>,
    /// Held under "fail": the roll refuses to go on.
    refused: Vec<InstanceId>,
    /// Serving and not draining.
    in_service: u32,
}

fn classify<'a>(p: &RollProgress, live: &[&'a Member], policy: &RollPolicy, now: Timestamp) -> Classified<'a> {
    let mut c = Classified {
        new: 0,
        failed: Vec::new(),
        old: Vec::new(),
        held: Vec::new(),
        blocked_on: Vec::new(),
        refused: Vec::new(),
        in_service: live
            .iter()
            .filter(|m| !draining(p, &m.id) && in_service(m, p, policy, now))
            .count() as u32,
    };
    for m in live {
        // With skip_matching off, instances already on the target image
        // from before the roll are replaced too.
        if m.image == p.target_image && (policy.skip_matching || m.launched_at >= p.started_at) {
            c.new += 1;
            if p.failed_new.contains(&m.id) {
                c.failed.push(m);
            }
            continue;
        }
        match held(m, policy) {
            Some(HeldInstances::Skip) => {
                c.held.push(m.id.clone());
                continue;
            }
            Some(HeldInstances::Wait) => {
                c.held.push(m.id.clone());
                c.blocked_on.push(m.id.clone());
            }
            Some(HeldInstances::Fail) => c.refused.push(m.id.clone()),
            // `held` says None for protected members under "replace".
            Some(HeldInstances::Replace) | None => {}
        }
        c.old.push(m);
    }
    c
}

/// Why the roll must stop now, and whose doing that is.
fn abort_reason(
    p: &RollProgress,
    c: &Classified<'_>,
    obs: &Observation,
    policy: &RollPolicy,
    n: u32,
    total: u32,
    stages: &[super::stages::Stage],
) -> Option<(String, Blame)> {
    if !c.refused.is_empty() {
        let reason = format!(
            "protected or standby instance(s) {} cannot be replaced and the policy says \"fail\"; unprotect them or set protected/standby = \"skip\"",
            ids(&c.refused)
        );
        return Some((reason, Blame::Orchestration));
    }
    // Rounding (1 instance at 90/100) or the group's MaxSize can close the
    // room: stop at once rather than wait for room that never opens.
    if !c.old.is_empty() {
        if let Some(reason) = super::no_room(n, obs.max, policy) {
            return Some((reason, Blame::Orchestration));
        }
    }
    let in_canary = policy.canary > 0 && p.stage == 0 && stages.len() > 1;
    let threshold = if in_canary {
        1
    } else {
        match policy.max_unhealthy_new_percent {
            Some(pct) => (total * pct).div_ceil(100).max(1),
            None => policy.max_unhealthy_new.max(1),
        }
    };
    if p.failed_new.len() as u32 >= threshold {
        let what = if in_canary { "canary failed: " } else { "" };
        let failed_ids: Vec<InstanceId> = p.failed_new.iter().cloned().collect();
        let reason = format!(
            "{what}{} new instance(s) not healthy within {}s of launch: {}",
            failed_ids.len(),
            policy.health_grace.as_secs(),
            ids(&failed_ids)
        );
        return Some((reason, Blame::Image));
    }
    if p.abandoned_new.len() as u32 >= threshold {
        let abandoned: Vec<InstanceId> = p.abandoned_new.iter().cloned().collect();
        let reason = format!(
            "a launch lifecycle hook abandoned {} new instance(s): {} left the group from Pending:Wait without entering service (the hook's handler answered ABANDON, or did not complete the lifecycle action within the heartbeat); the image is not blamed: check the hook's handler, then resume",
            abandoned.len(),
            ids(&abandoned)
        );
        return Some((reason, Blame::Orchestration));
    }
    None
}

/// How far the stages let the roll go this tick.
struct Gate {
    /// Replacements that may have started by the end of the current stage.
    cap: u32,
    /// The window cutoff, once passed.
    cutoff: Option<Timestamp>,
    /// Why the roll pauses between stages.
    pausing: Option<String>,
}

/// Advance through stages whose replacements are all done and whose pause
/// is over; stop at one still pausing.
fn advance_stages(
    p: &mut RollProgress,
    stages: &[super::stages::Stage],
    total: u32,
    in_flight: bool,
    policy: &RollPolicy,
    now: Timestamp,
) -> Gate {
    let mut pausing = None;
    while let Some(s) = stages.get(p.stage as usize) {
        if p.replaced < s.cap || in_flight || s.cap >= total {
            break;
        }
        let done = *p.stage_done_at.get_or_insert(now);
        let until = done.plus(s.pause);
        if now >= until {
            p.stage += 1;
            p.stage_done_at = None;
        } else {
            pausing = Some(format!("{} done; paused until {} ms", s.label, until.millis()));
            break;
        }
    }
    Gate {
        cap: stages.get(p.stage as usize).map_or(total, |s| s.cap),
        cutoff: p.effective_cutoff(policy).filter(|c| now >= *c),
        pausing,
    }
}

/// The desired capacity the roll aims at.
struct Aim {
    n: u32,
    surge: u32,
    cap: u32,
    can_start: bool,
}

impl Aim {
    /// Given the old instances left and the replacements already counted
    /// against the stage cap.
    fn at(&self, old_left: u32, replaced: u32) -> u32 {
        if self.can_start {
            self.n + self.surge.min(old_left).min(self.cap.saturating_sub(replaced))
        } else {
            self.n
        }
    }
}

/// The actions decided so far and what desired capacity is after them.
struct Acts {
    actions: Vec<Action>,
    desired: u32,
}

/// Terminate drained instances: old ones and surplus new ones (lowering
/// desired when the surge is no longer needed), failed new ones (the group
/// replaces them). Returns the old instances left and the replacements
/// done, these terminations counted.
fn terminate_drained(
    p: &RollProgress,
    old: &[&Member],
    live: &[&Member],
    policy: &RollPolicy,
    now: Timestamp,
    aim: &Aim,
    acts: &mut Acts,
) -> (u32, u32) {
    let mut old_remaining = old.len() as u32;
    let mut replaced_now = p.replaced;
    for m in old {
        if p.draining.contains(&m.id) && drained(m, policy, now) {
            old_remaining -= 1;
            replaced_now += 1;
            let decrement = aim.at(old_remaining, replaced_now) < acts.desired;
            if decrement {
                acts.desired -= 1;
            }
            acts.actions.push(Action::Terminate {
                instance: m.id.clone(),
                decrement,
            });
        }
    }
    for m in live {
        if p.draining_new.contains(&m.id) && drained(m, policy, now) {
            let decrement = !p.failed_new.contains(&m.id) && aim.at(old_remaining, replaced_now) < acts.desired;
            if decrement {
                acts.desired -= 1;
            }
            acts.actions.push(Action::Terminate {
                instance: m.id.clone(),
                decrement,
            });
        }
    }
    (old_remaining, replaced_now)
}

/// What the drain phase may use.
struct Room {
    floor: u32,
    want: u32,
    old_remaining: u32,
    replaced_now: u32,
    /// Instances draining when the tick began.
    draining_before: u32,
}

/// Failed new instances are drained (they serve nothing) so they can be
/// terminated and replaced. Then drain while the floor allows, for two
/// reasons: pairing with a surplus (more live than aimed at: surge
/// launched before a pause or cutoff, or the autoscaler scaled in) — old
/// instances first, then new ones not yet serving — and starting a
/// replacement within the stage cap. Unhealthy ones first: draining them
/// costs no capacity. Desired is lowered directly when the excess was
/// never launched, or when only held instances could absorb it.
#[allow(clippy::too_many_arguments)]
fn drain(
    p: &mut RollProgress,
    c: &Classified<'_>,
    live: &[&Member],
    policy: &RollPolicy,
    now: Timestamp,
    aim: &Aim,
    room: &Room,
    acts: &mut Acts,
) {
    let old_draining = c.old.iter().filter(|m| p.draining.contains(&m.id)).count() as u32;
    for m in &c.failed {
        if !p.draining_new.contains(&m.id) {
            p.draining_new.insert(m.id.clone());
            acts.actions.push(Action::Drain { instance: m.id.clone() });
        }
    }
    let mut healthy = c.in_service;
    let old_draining_left = old_draining - (c.old.len() as u32 - room.old_remaining);
    let live_not_draining = live.iter().filter(|m| !draining(p, &m.id)).count() as u32;
    let mut surplus = live_not_draining.saturating_sub(room.want);
    let mut started = room.replaced_now + old_draining_left;
    let mut candidates: Vec<&&Member> = c
        .old
        .iter()
        .filter(|m| !p.draining.contains(&m.id) && held(m, policy).is_none())
        .collect();
    candidates.sort_by_key(|m| (in_service(m, p, policy, now), m.launched_at, m.id.clone()));
    for m in candidates {
        let pairing = surplus > 0;
        let may_start = aim.can_start && started < aim.cap;
        if !(pairing || may_start) {
            break;
        }
        if in_service(m, p, policy, now) {
            if healthy <= room.floor {
                break;
            }
            healthy -= 1;
        }
        if pairing {
            surplus -= 1;
        } else {
            started += 1;
        }
        p.draining.insert(m.id.clone());
        acts.actions.push(Action::Drain { instance: m.id.clone() });
    }
    if surplus > 0 {
        let mut spare: Vec<&&Member> = live
            .iter()
            .filter(|m| {
                m.image == p.target_image
                    && !draining(p, &m.id)
                    && held(m, policy).is_none()
                    && !p.failed_new.contains(&m.id)
            })
            .collect();
        spare.sort_by_key(|m| {
            (
                in_service(m, p, policy, now),
                std::cmp::Reverse(m.launched_at),
                m.id.clone(),
            )
        });
        for m in spare.into_iter().take(surplus as usize) {
            if in_service(m, p, policy, now) {
                if healthy <= room.floor {
                    break;
                }
                healthy -= 1;
            }
            p.draining_new.insert(m.id.clone());
            acts.actions.push(Action::Drain { instance: m.id.clone() });
        }
    }
    let nothing_to_pair = !live
        .iter()
        .any(|m| !draining(p, &m.id) && held(m, policy).is_none() && !p.failed_new.contains(&m.id));
    if room.want < acts.desired && ((nothing_to_pair && room.draining_before == 0) || live.len() as u32 <= room.want) {
        acts.desired = room.want;
        acts.actions.push(Action::SetDesired { desired: room.want });
    }
}

/// Held instances: `Blocked` has a deadline. Why the roll gives up on
/// them, once `waiting` (only held instances left, nothing else to do) has
/// lasted `hold_timeout`.
fn held_too_long(
    p: &mut RollProgress,
    blocked_on: &[InstanceId],
    waiting: bool,
    policy: &RollPolicy,
    now: Timestamp,
) -> Option<String> {
    if !waiting {
        p.blocked_since = None;
        return None;
    }
    let since = *p.blocked_since.get_or_insert(now);
    let waited = now.since(since);
    (waited >= policy.hold_timeout).then(|| {
        format!(
            "timed out after {}s waiting for protected or standby instance(s) {} (policy \"wait\", hold_timeout {}s); unprotect them or set protected/standby = \"skip\"",
            waited.as_secs(),
            ids(blocked_on),
            policy.hold_timeout.as_secs()
        )
    })
}

/// Where the tick left the roll.
struct Ending<'a> {
    /// Nothing to do, nothing in flight, the group at its base size.
    settled: bool,
    old_remaining: u32,
    only_held_left: bool,
    cutoff: Option<Timestamp>,
    blocked_on: &'a [InstanceId],
}

fn outcome(p: &RollProgress, live: &[&Member], policy: &RollPolicy, now: Timestamp, e: &Ending<'_>) -> Outcome {
    let all_new_serving = live
        .iter()
        .filter(|m| m.image == p.target_image)
        .all(|m| in_service(m, p, policy, now));
    if e.settled && e.old_remaining == 0 && all_new_serving {
        Outcome::Complete
    } else if e.only_held_left {
        Outcome::Blocked {
            reason: format!(
                "waiting for protected or standby instance(s): {} (gives up after {}s)",
                ids(e.blocked_on),
                policy.hold_timeout.as_secs()
            ),
        }
    } else if let (Some(c), true) = (e.cutoff, e.settled) {
        Outcome::Paused {
            reason: format!(
                "window cutoff ({} ms) reached with {} instance(s) still to replace; `repave resume` or the next window continues",
                c.millis(),
                e.old_remaining
            ),
        }
    } else {
        Outcome::Progressing
    }
}
