//! A tiny deterministic group model to drive the planner tick by tick and
//! check the invariants at every observation. (The full virtual-time
//! simulator with latency distributions lives in the sim crate.)

use super::*;

pub(super) struct Model {
    pub now: i64,
    pub desired: u32,
    pub next_id: u32,
    pub image: ImageId,
    /// (member, healthy_at, drained_at)
    pub members: Vec<(Member, Option<i64>, Option<i64>)>,
    pub launch_ms: i64,
    pub drain_ms: i64,
    pub broken_new: bool,
}

impl Model {
    pub fn new(n: u32, launch_ms: i64, drain_ms: i64) -> Self {
        let mut m = Model {
            now: 1_000_000,
            desired: n,
            next_id: 0,
            image: ImageId::new("old"),
            members: vec![],
            launch_ms,
            drain_ms,
            broken_new: false,
        };
        for _ in 0..n {
            m.launch(0);
        }
        for x in &mut m.members {
            x.0.target = Some((TargetState::Healthy, Timestamp(0)));
        }
        m
    }

    fn launch(&mut self, at: i64) {
        self.next_id += 1;
        let healthy_at = if self.broken_new && self.image.as_str() == "new" { None } else { Some(at + self.launch_ms) };
        self.members.push((
            Member {
                id: InstanceId::new(format!("i-{:04}", self.next_id)),
                image: self.image.clone(),
                lifecycle: Lifecycle::InService,
                protected: false,
                launched_at: Timestamp(at),
                target: Some((TargetState::Initial, Timestamp(at))),
            },
            healthy_at,
            None,
        ));
    }

    pub fn observe(&mut self) -> Observation {
        let now = self.now;
        for (m, healthy_at, drained_at) in &mut self.members {
            if let Some(d) = drained_at {
                if now >= *d {
                    m.target = None;
                }
            } else if let (Some(h), Some((TargetState::Initial, _))) = (healthy_at, m.target) {
                if now >= *h {
                    m.target = Some((TargetState::Healthy, Timestamp(*h)));
                }
            }
        }
        Observation { desired: self.desired, min: 0, max: 1000, members: self.members.iter().map(|x| x.0.clone()).collect() }
    }

    pub fn apply(&mut self, actions: &[Action]) {
        for a in actions {
            match a {
                Action::SetDesired { desired } => self.desired = *desired,
                Action::Drain { instance } => {
                    let now = self.now;
                    let d = self.drain_ms;
                    let x = self.members.iter_mut().find(|x| &x.0.id == instance).expect("drain unknown");
                    x.0.target = Some((TargetState::Draining, Timestamp(now)));
                    x.2 = Some(now + d);
                }
                Action::Terminate { instance, decrement } => {
                    let x = self.members.iter().position(|x| &x.0.id == instance).expect("terminate unknown");
                    let t = self.members[x].0.target.map(|t| t.0);
                    assert!(t.is_none() || t == Some(TargetState::Unused), "terminated {instance} before drain finished");
                    self.members.remove(x);
                    if *decrement {
                        self.desired -= 1;
                    }
                }
            }
        }
        // The group's reconciler: keep `desired` live members.
        while (self.members.len() as u32) < self.desired {
            let now = self.now;
            self.launch(now);
        }
    }
}

fn policy(min: u32, max: u32) -> RollPolicy {
    RollPolicy {
        min_healthy_percent: min,
        max_healthy_percent: max,
        warmup: Duration::from_millis(500),
        health_grace: Duration::from_secs(30),
        max_unhealthy_new: 1,
        skip_matching: true,
        protected: HeldInstances::Skip,
        standby: HeldInstances::Skip,
    }
}

/// Drive a roll to its end; returns (ticks, elapsed ms, outcome).
pub(super) fn drive(model: &mut Model, pol: &RollPolicy, tick_ms: i64, max_ticks: u32) -> (u32, i64, Outcome) {
    let start = model.now;
    model.image = ImageId::new("new");
    let n = model.desired;
    let mut progress = RollProgress::new(ImageId::new("new"), n, Timestamp(model.now));
    for tick in 0..max_ticks {
        let obs = model.observe();
        let plan = plan(&obs, pol, &progress, Timestamp(model.now));
        let (floor, max_total) = capacity_bounds(plan.progress.base_desired, pol);
        assert!(plan.status.in_service >= floor || tick == 0 && floor == 0, "floor broken: {:?}", plan.status);
        assert!(obs.members.len() as u32 <= max_total, "surge broken: {} > {max_total}", obs.members.len());
        match &plan.outcome {
            Outcome::Complete | Outcome::Abort { .. } => return (tick, model.now - start, plan.outcome),
            _ => {}
        }
        model.apply(&plan.actions);
        progress = plan.progress;
        model.now += tick_ms;
    }
    panic!("roll did not finish in {max_ticks} ticks");
}

#[test]
fn bounds_table() {
    let cases = [(8, 100, 150, 8, 12, 4), (8, 90, 110, 8, 9, 1), (10, 90, 110, 9, 11, 2), (1000, 90, 110, 900, 1100, 200), (3, 100, 101, 3, 4, 1), (4, 50, 100, 2, 4, 2)];
    for (n, min, max, floor, total, k) in cases {
        let p = policy(min, max);
        assert_eq!(capacity_bounds(n, &p), (floor, total), "{n} {min} {max}");
        assert_eq!(concurrency(n, &p), k, "{n} {min} {max}");
    }
}

#[test]
fn rolls_eight_with_surge_in_two_waves() {
    let mut m = Model::new(8, 1000, 50);
    let (_, elapsed, outcome) = drive(&mut m, &policy(100, 150), 50, 10_000);
    assert_eq!(outcome, Outcome::Complete);
    assert!(m.members.iter().all(|x| x.0.image.as_str() == "new"));
    assert_eq!(m.members.len(), 8);
    assert_eq!(m.desired, 8);
    // Two waves of launch (1000) + warmup (500), plus drains and ticks.
    let lb = lower_bound(8, 4, Duration::from_millis(1000), Duration::ZERO, Duration::from_millis(500), Duration::from_millis(50));
    assert!(elapsed as f64 <= lb.as_millis() as f64 * 1.25, "elapsed {elapsed} vs bound {lb:?}");
}

#[test]
fn rolls_without_surge_below_full_capacity() {
    let mut m = Model::new(10, 1000, 100);
    let (_, _, outcome) = drive(&mut m, &policy(80, 100), 50, 10_000);
    assert_eq!(outcome, Outcome::Complete);
    assert_eq!(m.members.len(), 10);
    assert!(m.members.iter().all(|x| x.0.image.as_str() == "new"));
}

#[test]
fn broken_image_aborts() {
    let mut m = Model::new(4, 1000, 50);
    m.broken_new = true;
    let (_, _, outcome) = drive(&mut m, &policy(100, 150), 500, 10_000);
    assert!(matches!(outcome, Outcome::Abort { .. }), "{outcome:?}");
    // No old instance was drained: the floor protected the fleet.
    assert_eq!(m.members.iter().filter(|x| x.0.image.as_str() == "old").count(), 4);
}

#[test]
fn autoscaler_change_moves_base() {
    let pol = policy(100, 150);
    let mut m = Model::new(4, 1000, 50);
    m.image = ImageId::new("new");
    let mut progress = RollProgress::new(ImageId::new("new"), 4, Timestamp(m.now));
    let obs = m.observe();
    let p1 = plan(&obs, &pol, &progress, Timestamp(m.now));
    m.apply(&p1.actions);
    progress = p1.progress;
    assert_eq!(m.desired, 6);
    // The autoscaler adds two.
    m.desired += 2;
    let obs = m.observe();
    let p2 = plan(&obs, &pol, &progress, Timestamp(m.now));
    assert_eq!(p2.progress.base_desired, 6);
}

#[test]
fn skips_instances_on_target() {
    let mut m = Model::new(3, 1000, 50);
    m.members[0].0.image = ImageId::new("new");
    let (_, _, outcome) = drive(&mut m, &policy(100, 150), 50, 10_000);
    assert_eq!(outcome, Outcome::Complete);
    assert!(m.members.iter().any(|x| x.0.id.as_str() == "i-0001"), "matching instance kept");
}
