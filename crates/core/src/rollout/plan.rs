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
    let (floor, max_total) = super::capacity_bounds_within(n, obs.max, policy);
    let surge = max_total - n;

    let live: Vec<&Member> = obs.members.iter().filter(|m| m.live()).collect();
    let is_target = |m: &Member| m.image == p.target_image;
    let launched_in_roll = |m: &Member| m.launched_at >= p.started_at;

    // Drain bookkeeping: forget instances that are gone.
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
        .filter(|m| m.hook_wait && m.lifecycle == Lifecycle::Pending)
        .filter(|m| is_target(m) && launched_in_roll(m))
        .map(|m| m.id.clone())
        .collect();
    p.draining_new.retain(|id| live_ids.contains(id));
    let draining = |p: &RollProgress, id: &InstanceId| p.draining.contains(id) || p.draining_new.contains(id);

    // New instances that never turned healthy within the grace time.
    // (Surplus instances this roll drained before they turned healthy are
    // not failures.)
    for m in live
        .iter()
        .filter(|m| is_target(m) && launched_in_roll(m) && !p.draining_new.contains(&m.id))
    {
        let ok = matches!(m.target_state(), TargetState::Healthy);
        if !ok && now.since(m.launched_at) > policy.health_grace {
            p.failed_new.insert(m.id.clone());
        }
    }

    let mut status = RollStatus {
        base_desired: n,
        floor,
        max_total,
        live: live.len() as u32,
        ..Default::default()
    };
    let mut blocked_on = Vec::new();
    let mut refused = Vec::new();
    let mut old: Vec<&Member> = Vec::new();
    let mut failed: Vec<&Member> = Vec::new();
    for m in &live {
        // With skip_matching off, instances already on the target image
        // from before the roll are replaced too.
        if is_target(m) && (policy.skip_matching || launched_in_roll(m)) {
            status.new += 1;
            if p.failed_new.contains(&m.id) {
                failed.push(m);
            }
            continue;
        }
        match held(m, policy) {
            Some(HeldInstances::Skip) => {
                status.held.push(m.id.clone());
                continue;
            }
            Some(HeldInstances::Wait) => {
                status.held.push(m.id.clone());
                blocked_on.push(m.id.clone());
            }
            Some(HeldInstances::Fail) => refused.push(m.id.clone()),
            // `held` says None for protected members under "replace".
            Some(HeldInstances::Replace) | None => {}
        }
        old.push(m);
    }
    status.old = old.len() as u32;
    status.draining = live.iter().filter(|m| draining(&p, &m.id)).count() as u32;
    status.failed_new = p.failed_new.len() as u32;
    status.abandoned_new = p.abandoned_new.len() as u32;
    let mut healthy = live
        .iter()
        .filter(|m| !draining(&p, &m.id) && in_service(m, &p, policy, now))
        .count() as u32;
    status.in_service = healthy;

    if !refused.is_empty() {
        let reason = format!(
            "protected or standby instance(s) {} cannot be replaced and the policy says \"fail\"; unprotect them or set protected/standby = \"skip\"",
            ids(&refused)
        );
        return abort(vec![], p, status, reason, Blame::Orchestration);
    }

    // Rounding (1 instance at 90/100) or the group's MaxSize can close the
    // room: stop at once rather than wait for room that never opens.
    if !old.is_empty() {
        if let Some(reason) = super::no_room(n, obs.max, policy) {
            return abort(vec![], p, status, reason, Blame::Orchestration);
        }
    }

    // Stages: how many replacements may have started by now.
    let total = p.replaced + old.len() as u32;
    let stages = stage_caps(total, policy);
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
        return abort(vec![], p, status, reason, Blame::Image);
    }
    if p.abandoned_new.len() as u32 >= threshold {
        let abandoned: Vec<InstanceId> = p.abandoned_new.iter().cloned().collect();
        let reason = format!(
            "a launch lifecycle hook abandoned {} new instance(s): {} left the group from Pending:Wait without entering service (the hook's handler answered ABANDON, or did not complete the lifecycle action within the heartbeat); the image is not blamed: check the hook's handler, then resume",
            abandoned.len(),
            ids(&abandoned)
        );
        return abort(vec![], p, status, reason, Blame::Orchestration);
    }

    let old_draining = old.iter().filter(|m| p.draining.contains(&m.id)).count() as u32;
    let in_flight = status.draining > 0
        || live.len() < obs.desired as usize
        || live
            .iter()
            .any(|m| is_target(m) && launched_in_roll(m) && !in_service(m, &p, policy, now));

    // Advance through stages whose replacements are all done and whose
    // pause is over; stop at one still pausing.
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
    let cap = stages.get(p.stage as usize).map_or(total, |s| s.cap);
    status.stage = p.stage;
    status.stage_cap = cap;
    let cutoff = p.effective_cutoff(policy).filter(|c| now >= *c);
    if let Some(c) = cutoff {
        status.waiting = Some(format!(
            "window cutoff at {} ms passed: no new replacement starts",
            c.millis()
        ));
    } else {
        status.waiting = pausing.clone();
    }
    // Starting a replacement means launching a surge instance or draining
    // an old one beyond what pairs with instances already launched.
    let can_start = cutoff.is_none() && pausing.is_none();

    // The desired capacity this roll aims at, given old instances left and
    // replacements already counted against the stage cap.
    let aim = |old_left: u32, replaced: u32| {
        if can_start {
            n + surge.min(old_left).min(cap.saturating_sub(replaced))
        } else {
            n
        }
    };

    let mut actions = Vec::new();
    let mut desired = obs.desired;
    let mut old_remaining = old.len() as u32;
    let mut replaced_now = p.replaced;

    // 1. Terminate drained instances: old ones and surplus new ones (lowering
    //    desired when the surge is no longer needed), failed new ones (the
    //    group replaces them).
    for m in &old {
        if p.draining.contains(&m.id) && drained(m, policy, now) {
            old_remaining -= 1;
            replaced_now += 1;
            let decrement = aim(old_remaining, replaced_now) < desired;
            if decrement {
                desired -= 1;
            }
            actions.push(Action::Terminate {
                instance: m.id.clone(),
                decrement,
            });
        }
    }
    for m in &live {
        if p.draining_new.contains(&m.id) && drained(m, policy, now) {
            let decrement = !p.failed_new.contains(&m.id) && aim(old_remaining, replaced_now) < desired;
            if decrement {
                desired -= 1;
            }
            actions.push(Action::Terminate {
                instance: m.id.clone(),
                decrement,
            });
        }
    }

    // 2. Desired capacity: raise it for surge. Lowering it is done by
    //    draining and terminating chosen instances (step 4) so the group
    //    never picks a serving new instance while an old one remains.
    let want = aim(old_remaining, replaced_now);
    if want > desired {
        desired = want;
        actions.push(Action::SetDesired { desired });
    }

    // 3. Failed new instances: drain them (they serve nothing) so they can
    //    be terminated and replaced.
    for m in &failed {
        if !p.draining_new.contains(&m.id) {
            p.draining_new.insert(m.id.clone());
            actions.push(Action::Drain { instance: m.id.clone() });
        }
    }

    // 4. Drain while the floor allows. Two reasons: pairing with a surplus
    //    (more live than aimed at: surge launched before a pause or cutoff,
    //    or the autoscaler scaled in) — old instances first, then new ones
    //    not yet serving; and starting a replacement within the stage cap.
    //    Unhealthy ones first: draining them costs no capacity.
    let old_draining_left = old_draining - (old.len() as u32 - old_remaining);
    let live_not_draining = live.iter().filter(|m| !draining(&p, &m.id)).count() as u32;
    let mut surplus = live_not_draining.saturating_sub(want);
    let mut started = replaced_now + old_draining_left;
    let mut candidates: Vec<&&Member> = old
        .iter()
        .filter(|m| !p.draining.contains(&m.id) && held(m, policy).is_none())
        .collect();
    candidates.sort_by_key(|m| (in_service(m, &p, policy, now), m.launched_at, m.id.clone()));
    for m in candidates {
        let pairing = surplus > 0;
        let may_start = can_start && started < cap;
        if !(pairing || may_start) {
            break;
        }
        if in_service(m, &p, policy, now) {
            if healthy <= floor {
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
        actions.push(Action::Drain { instance: m.id.clone() });
    }
    if surplus > 0 {
        let mut spare: Vec<&&Member> = live
            .iter()
            .filter(|m| {
                is_target(m) && !draining(&p, &m.id) && held(m, policy).is_none() && !p.failed_new.contains(&m.id)
            })
            .collect();
        spare.sort_by_key(|m| {
            (
                in_service(m, &p, policy, now),
                std::cmp::Reverse(m.launched_at),
                m.id.clone(),
            )
        });
        for m in spare.into_iter().take(surplus as usize) {
            if in_service(m, &p, policy, now) {
                if healthy <= floor {
                    break;
                }
                healthy -= 1;
            }
            p.draining_new.insert(m.id.clone());
            actions.push(Action::Drain { instance: m.id.clone() });
        }
    }
    // Lower desired directly when the excess was never launched, or when
    // only held instances could absorb it (the group never picks those).
    let nothing_to_pair = !live
        .iter()
        .any(|m| !draining(&p, &m.id) && held(m, policy).is_none() && !p.failed_new.contains(&m.id));
    if want < desired && ((nothing_to_pair && status.draining == 0) || live.len() as u32 <= want) {
        desired = want;
        actions.push(Action::SetDesired { desired });
    }
    // What desired will be once these actions are done; a different value
    // next tick is somebody else's change.
    p.last_set_desired = Some(desired);

    // Held instances: `Blocked` has a deadline.
    let only_held_left = !blocked_on.is_empty() && old_remaining as usize == blocked_on.len();
    if only_held_left && actions.is_empty() {
        let since = *p.blocked_since.get_or_insert(now);
        let waited = now.since(since);
        if waited >= policy.hold_timeout {
            let reason = format!(
                "timed out after {}s waiting for protected or standby instance(s) {} (policy \"wait\", hold_timeout {}s); unprotect them or set protected/standby = \"skip\"",
                waited.as_secs(),
                ids(&blocked_on),
                policy.hold_timeout.as_secs()
            );
            return abort(actions, p, status, reason, Blame::Orchestration);
        }
    } else {
        p.blocked_since = None;
    }

    let all_new_serving = live
        .iter()
        .filter(|m| is_target(m))
        .all(|m| in_service(m, &p, policy, now));
    let settled = actions.is_empty() && !in_flight && desired == n && live.len() as u32 == n;
    let outcome = if settled && old_remaining == 0 && all_new_serving {
        Outcome::Complete
    } else if only_held_left {
        Outcome::Blocked {
            reason: format!(
                "waiting for protected or standby instance(s): {} (gives up after {}s)",
                ids(&blocked_on),
                policy.hold_timeout.as_secs()
            ),
        }
    } else if let (Some(c), true) = (cutoff, settled) {
        Outcome::Paused {
            reason: format!(
                "window cutoff ({} ms) reached with {old_remaining} instance(s) still to replace; `repave resume` or the next window continues",
                c.millis()
            ),
        }
    } else {
        Outcome::Progressing
    };
    Plan {
        actions,
        progress: p,
        status,
        outcome,
    }
}
