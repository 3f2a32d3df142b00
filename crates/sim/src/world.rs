//! The simulated cloud's state. Nothing here moves on its own: every state
//! is a function of stored timestamps and the time it is looked at.

use crate::latency::{chance, Faults, Latencies};
use rand_chacha::ChaCha8Rng;
use repave_core::ids::{CommandId, ImageId, InstanceId, Timestamp};
use repave_core::provider::{
    Image, ImageState, Instance, InstanceState, LaunchSpec, LaunchSpecRef, Lifecycle, Parameter, Tags, TargetHealth,
    TargetState,
};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

pub(crate) struct SimImage {
    pub image: Image,
    pub available_at: Timestamp,
    /// Baked during the simulation (faults for "new images" apply).
    pub baked: bool,
}

impl SimImage {
    pub fn view(&self, now: Timestamp) -> Image {
        let mut i = self.image.clone();
        if i.state == ImageState::Pending && now >= self.available_at {
            i.state = ImageState::Available;
        }
        i
    }
}

pub(crate) struct SimInstance {
    pub id: InstanceId,
    pub image: ImageId,
    pub tags: Tags,
    pub launched_at: Timestamp,
    pub running_at: Timestamp,
    /// Command channel reachable (moves on reboot and start).
    pub ready_at: Timestamp,
    /// Healthy at the balancer / probe; `None`: never.
    pub healthy_at: Option<Timestamp>,
    pub stopping: Option<(Timestamp, Timestamp)>,
    pub terminating: Option<(Timestamp, Timestamp)>,
    pub protected: bool,
    pub standby: bool,
    /// Deregistered from the balancer: (since, drain over at).
    pub drain: Option<(Timestamp, Timestamp)>,
    pub patched: bool,
}

impl SimInstance {
    pub fn state(&self, now: Timestamp) -> InstanceState {
        if let Some((_, done)) = self.terminating {
            return if now >= done {
                InstanceState::Terminated
            } else {
                InstanceState::ShuttingDown
            };
        }
        if let Some((_, done)) = self.stopping {
            return if now >= done {
                InstanceState::Stopped
            } else {
                InstanceState::Stopping
            };
        }
        if now >= self.running_at {
            InstanceState::Running
        } else {
            InstanceState::Pending
        }
    }

    pub fn view(&self, now: Timestamp) -> Instance {
        Instance {
            id: self.id.clone(),
            image: self.image.clone(),
            state: self.state(now),
            launched_at: self.launched_at,
            tags: self.tags.clone(),
            address: Some(format!(
                "10.0.{}.{}",
                (self.launched_at.0 / 256) % 256,
                self.launched_at.0 % 256
            )),
        }
    }

    pub fn healthy(&self, now: Timestamp) -> bool {
        self.state(now) == InstanceState::Running && self.healthy_at.is_some_and(|t| now >= t)
    }

    pub fn lifecycle(&self, now: Timestamp) -> Lifecycle {
        match self.state(now) {
            InstanceState::Terminated => Lifecycle::Terminated,
            InstanceState::ShuttingDown => Lifecycle::Terminating,
            _ if self.standby => Lifecycle::Standby,
            InstanceState::Pending => Lifecycle::Pending,
            _ => Lifecycle::InService,
        }
    }

    /// The balancer's view; `None` once deregistered and drained, or before
    /// the group registered it (running).
    pub fn target(&self, now: Timestamp) -> Option<TargetHealth> {
        let state = self.state(now);
        if self.standby || state == InstanceState::Pending || state.is_gone() && self.drain.is_none() {
            return None;
        }
        let (state, since) = match self.drain {
            Some((_, end)) if now >= end => return None,
            Some((start, _)) => (TargetState::Draining, start),
            None => match self.healthy_at {
                Some(t) if now >= t => (TargetState::Healthy, t),
                // Unhealthy once its checks have had a fair chance.
                None if now >= self.ready_at => (TargetState::Unhealthy, self.ready_at),
                _ => (TargetState::Initial, self.running_at),
            },
        };
        let in_flight = Some(u32::from(state == TargetState::Draining));
        Some(TargetHealth {
            instance: self.id.clone(),
            state,
            since,
            in_flight,
        })
    }
}

pub(crate) struct SimCommand {
    pub id: CommandId,
    pub instance: InstanceId,
    pub starts_at: Timestamp,
    pub done_at: Timestamp,
    pub timeout: Duration,
    pub ok: bool,
    pub stdout: String,
}

pub(crate) struct SimGroup {
    pub name: String,
    pub min: u32,
    pub max: u32,
    pub desired: u32,
    pub launch_spec: LaunchSpecRef,
    /// Live members and those still terminating, in launch order.
    pub members: Vec<InstanceId>,
    /// After a failed launch the group waits before trying again.
    pub retry_launch_at: Timestamp,
}

/// The whole simulated account.
pub(crate) struct World {
    pub rng: ChaCha8Rng,
    pub lat: Latencies,
    pub faults: Faults,
    pub next: u64,
    pub images: BTreeMap<ImageId, SimImage>,
    pub image_tokens: HashMap<String, ImageId>,
    pub instances: HashMap<InstanceId, SimInstance>,
    pub launch_tokens: HashMap<String, InstanceId>,
    pub commands: HashMap<CommandId, SimCommand>,
    pub params: BTreeMap<String, Vec<Parameter>>,
    pub specs: BTreeMap<String, Vec<LaunchSpec>>,
    pub groups: BTreeMap<String, SimGroup>,
}

impl World {
    pub fn id(&mut self, prefix: &str) -> String {
        self.next += 1;
        format!("{prefix}-{:08x}", self.next)
    }

    /// A new instance with its whole future drawn now.
    pub fn new_instance(&mut self, image: &ImageId, tags: Tags, group: Option<String>, now: Timestamp) -> InstanceId {
        let id = InstanceId::new(self.id("i"));
        let lat = self.lat.clone();
        let running_at = now.plus(lat.draw(&mut self.rng, lat.launch));
        let ready_at = running_at.plus(lat.draw(&mut self.rng, lat.boot));
        let baked = self.images.get(image).is_some_and(|i| i.baked);
        let broken = baked
            && (self.faults.bad_image && group.is_some() || chance(&mut self.rng, self.faults.never_healthy_percent));
        let healthy_at = (!broken).then(|| ready_at.plus(lat.draw(&mut self.rng, lat.health)));
        self.instances.insert(
            id.clone(),
            SimInstance {
                id: id.clone(),
                image: image.clone(),
                tags,
                launched_at: now,
                running_at,
                ready_at,
                healthy_at,
                stopping: None,
                terminating: None,
                protected: false,
                standby: false,
                drain: None,
                patched: false,
            },
        );
        id
    }

    pub fn terminate(&mut self, id: &InstanceId, now: Timestamp) {
        let d = self.lat.draw(&mut self.rng, self.lat.terminate);
        if let Some(i) = self.instances.get_mut(id) {
            if i.terminating.is_none() {
                i.terminating = Some((now, now.plus(d)));
            }
        }
    }

    pub fn deregister(&mut self, id: &InstanceId, now: Timestamp) {
        let slow = chance(&mut self.rng, self.faults.slow_drain_percent);
        let d = self.lat.drain(&mut self.rng, slow);
        if let Some(i) = self.instances.get_mut(id) {
            if i.drain.is_none() {
                i.drain = Some((now, now.plus(d)));
            }
        }
    }

    /// The group's reconciler, run lazily whenever the group is looked at:
    /// forget finished terminations, launch up to desired on the current
    /// launch spec, scale in old-image instances first (never protected
    /// ones), draining them before they terminate.
    pub fn reconcile(&mut self, group: &str, now: Timestamp) {
        let Some(g) = self.groups.get(group) else {
            return;
        };
        let spec_ref = g.launch_spec.clone();
        let desired = g.desired as usize;
        let members: Vec<InstanceId> = g
            .members
            .iter()
            .filter(|id| {
                self.instances
                    .get(*id)
                    .is_some_and(|i| i.state(now) != InstanceState::Terminated)
            })
            .cloned()
            .collect();
        let live: Vec<InstanceId> = members
            .iter()
            .filter(|id| self.instances[*id].terminating.is_none())
            .cloned()
            .collect();
        let mut added = Vec::new();
        if live.len() < desired && now >= g.retry_launch_at {
            let spec = self
                .specs
                .get(&spec_ref.name)
                .and_then(|v| v.iter().find(|s| s.version == spec_ref.version))
                .cloned();
            if let Some(spec) = spec {
                for _ in live.len()..desired {
                    if chance(&mut self.rng, self.faults.launch_failure_percent) {
                        // An ASG backs off after a failed launch.
                        let g = self.groups.get_mut(group).expect("group");
                        g.retry_launch_at = now.plus(Duration::from_secs(10));
                        break;
                    }
                    let mut tags = Tags::new();
                    tags.insert("aws:autoscaling:groupName".into(), group.to_string());
                    added.push(self.new_instance(&spec.image, tags, Some(group.to_string()), now));
                }
            }
        } else if live.len() > desired {
            let target_image = self
                .specs
                .get(&spec_ref.name)
                .and_then(|v| v.iter().find(|s| s.version == spec_ref.version))
                .map(|s| s.image.clone());
            let mut victims: Vec<&SimInstance> = live
                .iter()
                .map(|id| &self.instances[id])
                .filter(|i| !i.protected)
                .collect();
            victims.sort_by_key(|i| (Some(&i.image) == target_image.as_ref(), i.launched_at, i.id.clone()));
            let chosen: Vec<InstanceId> = victims
                .into_iter()
                .take(live.len() - desired)
                .map(|i| i.id.clone())
                .collect();
            for id in chosen {
                // Deregister, then terminate once the drain is over.
                self.deregister(&id, now);
                let end = self.instances[&id].drain.map_or(now, |d| d.1);
                let d = self.lat.draw(&mut self.rng, self.lat.terminate);
                let i = self.instances.get_mut(&id).expect("member");
                if i.terminating.is_none() {
                    i.terminating = Some((now, end.plus(d)));
                }
            }
        }
        let g = self.groups.get_mut(group).expect("group");
        g.members = members;
        g.members.extend(added);
    }
}
