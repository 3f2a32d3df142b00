//! The group reconciler: level-triggered, every ~100 ms and right after a
//! group mutation. Each tick compares every group with its desired state and
//! acts: replace dead or long-unhealthy members, keep `desired` live members
//! on the current launch spec, scale in oldest-spec-first with draining, and
//! keep balancer registrations in line with each member's intent, and (for
//! groups with `scaling`) move desired capacity with the request rate.

use super::instances::{self, StopMode};
use super::Shared;
use crate::balancer::Balancer;
use repave_core::provider::{LaunchRequest, TargetState};
use repave_core::InstanceId;
use std::sync::Arc;
use std::time::Duration;

/// Period of the level-triggered pass.
const TICK: Duration = Duration::from_millis(100);

/// Run until the daemon shuts down.
pub(crate) async fn run(shared: Arc<Shared>) {
    loop {
        tick(&shared);
        tokio::select! {
            _ = tokio::time::sleep(TICK) => {}
            _ = shared.kick.notified() => {}
            _ = shared.shutdown.cancelled() => return,
        }
    }
}

/// A member to take out: drained first on scale-in, at once when dead.
struct Removal {
    group: String,
    id: InstanceId,
    drain: bool,
}

fn tick(shared: &Arc<Shared>) {
    let mut removals = Vec::new();
    let mut cloud = shared.cloud();
    let mut changed = false;
    let now = crate::util::now();
    let names: Vec<String> = cloud.state.groups.keys().cloned().collect();
    for name in names {
        let mut g = cloud.state.groups[&name].clone();
        if !cloud.balancers.contains_key(&name) {
            // Retried every tick: after a daemon restart the port may still be busy.
            match Balancer::start(&name, g.port, g.health_check.clone(), g.deregistration_delay) {
                Ok(b) => {
                    cloud.balancers.insert(name.clone(), b);
                }
                Err(e) => tracing::warn!(group = %name, port = g.port, "starting balancer: {e}"),
            }
        }
        let balancer = cloud.balancers.get(&name).cloned();
        let mut members = g.members.clone();

        // Members terminated behind the group's back leave it (and get replaced).
        members.retain(|m| {
            let gone = cloud
                .state
                .instances
                .get(&m.id)
                .is_none_or(|r| r.instance.state.is_gone());
            if gone && !m.terminating {
                if let Some(b) = &balancer {
                    b.remove(&m.id);
                }
                changed = true;
                return false;
            }
            true
        });

        // Dead, or unhealthy at the balancer past the grace period: replace.
        for m in members.iter_mut().filter(|m| !m.terminating) {
            if cloud.busy.contains(&m.id) {
                continue;
            }
            let launched = cloud
                .state
                .instances
                .get(&m.id)
                .map(|r| r.instance.launched_at)
                .unwrap_or(now);
            let dead = !instances::alive(&cloud, &m.id);
            let unhealthy = balancer
                .as_ref()
                .and_then(|b| b.target(&m.id))
                .is_some_and(|t| t.state == TargetState::Unhealthy)
                && now.since(launched) > g.health_check.grace.get();
            if dead || unhealthy {
                tracing::info!(group = %name, instance = %m.id, dead, unhealthy, "replacing member");
                m.terminating = true;
                changed = true;
                if let Some(b) = &balancer {
                    b.remove(&m.id);
                }
                removals.push(Removal {
                    group: name.clone(),
                    id: m.id.clone(),
                    drain: false,
                });
            }
        }

        // Balancer registrations follow each member's intent.
        if let Some(b) = &balancer {
            for m in members.iter().filter(|m| !m.terminating) {
                let target = b.target(&m.id);
                if m.registered && target.is_none() && instances::alive(&cloud, &m.id) {
                    if let Some(addr) = cloud
                        .state
                        .instances
                        .get(&m.id)
                        .and_then(|r| r.instance.address.clone())
                    {
                        b.register(&m.id, &addr);
                    }
                } else if !m.registered && target.is_some_and(|t| t.state != TargetState::Draining) {
                    b.drain(&m.id);
                }
            }
        }

        // Target tracking moves desired capacity before it is acted on.
        let live = members.iter().filter(|m| !m.terminating).count() as u32;
        if let (Some(sc), Some(b)) = (&g.scaling, &balancer) {
            let settled = live == g.desired
                && members
                    .iter()
                    .all(|m| !m.terminating && b.target(&m.id).is_some_and(|t| t.state == TargetState::Healthy));
            let now = super::autoscale::Now {
                at: std::time::Instant::now(),
                proxied: b.stats().proxied,
                desired: g.desired,
                min: g.min,
                max: g.max,
                settled,
            };
            let scaler = cloud.scalers.entry(name.clone()).or_default();
            if let Some((desired, why)) = super::autoscale::decide(scaler, sc, &now) {
                tracing::info!(group = %name, "{why}");
                g.desired = desired;
                if let Some(gr) = cloud.state.groups.get_mut(&name) {
                    gr.desired = desired;
                }
                changed = true;
            }
        }

        // Capacity.
        if live < g.desired {
            for _ in live..g.desired {
                let Some(spec) = cloud.state.launch_spec(&g.launch_spec).cloned() else {
                    tracing::warn!(group = %name, spec = ?g.launch_spec, "launch spec missing");
                    break;
                };
                let mut tags = repave_core::provider::Tags::new();
                tags.insert("repave:group".into(), name.clone());
                let req = LaunchRequest {
                    image: spec.image,
                    spec: spec.spec,
                    tags,
                    token: String::new(),
                };
                match instances::launch_locked(shared, &mut cloud, req, Some(name.clone())) {
                    Ok(inst) => {
                        // launch_locked wrote the member into the group's
                        // record; the list written back below keeps it.
                        let joined = cloud.state.groups[&name].members.iter().find(|m| m.id == inst.id);
                        members.push(joined.cloned().expect("launch_locked records the member"));
                        changed = true;
                    }
                    Err(e) => {
                        tracing::warn!(group = %name, "launching member: {e}");
                        break;
                    }
                }
            }
        } else if live > g.desired {
            let launched = |id: &InstanceId| cloud.state.instances.get(id).map(|r| r.instance.launched_at);
            let mut victims: Vec<(bool, u64, Option<repave_core::Timestamp>, usize)> = members
                .iter()
                .enumerate()
                .filter(|(_, m)| !m.terminating && !m.protected)
                .map(|(i, m)| {
                    (
                        m.launch_spec == g.launch_spec,
                        m.launch_spec.version,
                        launched(&m.id),
                        i,
                    )
                })
                .collect();
            // Oldest launch spec first, then oldest instance.
            victims.sort();
            for (_, _, _, i) in victims.into_iter().take((live - g.desired) as usize) {
                let m = &mut members[i];
                m.terminating = true;
                changed = true;
                removals.push(Removal {
                    group: name.clone(),
                    id: m.id.clone(),
                    drain: true,
                });
            }
        }

        // Terminations a previous daemon started but did not finish.
        for m in members.iter().filter(|m| m.terminating) {
            if !removals.iter().any(|r| r.id == m.id) && !cloud.reaping.contains(&m.id) {
                removals.push(Removal {
                    group: name.clone(),
                    id: m.id.clone(),
                    drain: true,
                });
            }
        }
        if let Some(gr) = cloud.state.groups.get_mut(&name) {
            gr.members = members;
        }
    }
    for r in &removals {
        cloud.reaping.insert(r.id.clone());
    }
    if changed {
        if let Err(e) = shared.save(&cloud) {
            tracing::error!("{e}");
        }
    }
    drop(cloud);
    for r in removals {
        tokio::spawn(remove_member(shared.clone(), r));
    }
}

/// Drain (if asked), terminate, and drop the member from its group.
async fn remove_member(shared: Arc<Shared>, r: Removal) {
    let (balancer, delay) = {
        let cloud = shared.cloud();
        let delay = cloud
            .state
            .groups
            .get(&r.group)
            .map(|g| g.deregistration_delay)
            .unwrap_or_default();
        (cloud.balancers.get(&r.group).cloned(), delay)
    };
    if let Some(b) = &balancer {
        if r.drain {
            b.drain(&r.id);
            let deadline = tokio::time::Instant::now() + delay + Duration::from_secs(1);
            while b.target(&r.id).is_some() && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        b.remove(&r.id);
    }
    if let Err(e) = instances::stop(&shared, &r.id, StopMode::Terminate).await {
        tracing::warn!(instance = %r.id, "terminating member: {e}");
    }
    let mut cloud = shared.cloud();
    if let Some(g) = cloud.state.groups.get_mut(&r.group) {
        g.members.retain(|m| m.id != r.id);
    }
    cloud.reaping.remove(&r.id);
    if let Err(e) = shared.save(&cloud) {
        tracing::error!("{e}");
    }
    drop(cloud);
    shared.kick.notify_one();
}
