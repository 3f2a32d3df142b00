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
    /// Latency spread: each launch and drain takes `base × (1 ± jitter%)`.
    pub jitter_pct: u32,
    /// Share of new launches that never turn healthy.
    pub broken_pct: u32,
    /// Share of drains that never finish (the balancer keeps reporting
    /// draining): only `drain_timeout` ends them.
    pub stuck_drain_pct: u32,
    /// Drain timeout the model tolerates terminating a still-draining
    /// instance after.
    pub drain_timeout_ms: i64,
    pub rng: u64,
    /// The group's MaxSize: a desired capacity above it is refused, as AWS
    /// refuses it (ValidationError).
    pub group_max: u32,
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
            jitter_pct: 0,
            broken_pct: 0,
            stuck_drain_pct: 0,
            drain_timeout_ms: i64::MAX,
            rng: 0x9E37_79B9_7F4A_7C15,
            group_max: 1000,
        };
        for _ in 0..n {
            m.launch(0);
        }
        for x in &mut m.members {
            x.0.target = Some((TargetState::Healthy, Timestamp(0)));
        }
        m
    }

    /// xorshift64*: deterministic draws without a dependency.
    pub fn draw(&mut self, below: u64) -> u64 {
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D) % below.max(1)
    }

    fn jittered(&mut self, base: i64) -> i64 {
        if self.jitter_pct == 0 {
            return base;
        }
        let spread = 2 * self.jitter_pct as u64 + 1;
        let pct = self.draw(spread) as i64 - self.jitter_pct as i64;
        (base + base * pct / 100).max(1)
    }

    fn launch(&mut self, at: i64) {
        self.next_id += 1;
        let is_new = self.image.as_str() == "new";
        let broken = is_new && (self.broken_new || (self.broken_pct > 0 && self.draw(100) < self.broken_pct as u64));
        let latency = self.jittered(self.launch_ms);
        let healthy_at = if broken { None } else { Some(at + latency) };
        self.members.push((
            Member {
                id: InstanceId::new(format!("i-{:04}", self.next_id)),
                image: self.image.clone(),
                lifecycle: Lifecycle::InService,
                protected: false,
                launched_at: Timestamp(at),
                target: Some((TargetState::Initial, Timestamp(at))),
                hook_wait: false,
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
        Observation {
            desired: self.desired,
            min: 0,
            max: self.group_max,
            members: self.members.iter().map(|x| x.0.clone()).collect(),
        }
    }

    pub fn apply(&mut self, actions: &[Action]) {
        for a in actions {
            match a {
                Action::SetDesired { desired } => {
                    assert!(
                        *desired <= self.group_max,
                        "ValidationError: desired {desired} above the group's MaxSize {}",
                        self.group_max
                    );
                    self.desired = *desired
                }
                Action::Drain { instance } => {
                    let now = self.now;
                    let stuck = self.stuck_drain_pct > 0 && self.draw(100) < self.stuck_drain_pct as u64;
                    let d = if stuck {
                        i64::MAX / 4
                    } else {
                        self.jittered(self.drain_ms)
                    };
                    let x = self
                        .members
                        .iter_mut()
                        .find(|x| &x.0.id == instance)
                        .expect("drain unknown");
                    x.0.target = Some((TargetState::Draining, Timestamp(now)));
                    x.2 = Some(now + d);
                }
                Action::Terminate { instance, decrement } => {
                    let x = self
                        .members
                        .iter()
                        .position(|x| &x.0.id == instance)
                        .expect("terminate unknown");
                    let t = self.members[x].0.target;
                    let drained = match t {
                        None | Some((TargetState::Unused, _)) => true,
                        Some((TargetState::Draining, since)) => self.now - since.0 >= self.drain_timeout_ms,
                        _ => false,
                    };
                    assert!(drained, "terminated {instance} before drain finished: {t:?}");
                    self.members.remove(x);
                    if *decrement {
                        self.desired -= 1;
                    }
                }
            }
        }
        self.reconcile();
    }

    /// The group's reconciler: keep `desired` live members; scale-in takes
    /// old-image instances first (like the ASG's oldest-launch-template
    /// termination policy).
    pub fn reconcile(&mut self) {
        while (self.members.len() as u32) < self.desired {
            let now = self.now;
            self.launch(now);
        }
        while (self.members.len() as u32) > self.desired {
            // Scale-in protection is honoured, as by an ASG.
            let Some(victim) = self
                .members
                .iter()
                .enumerate()
                .filter(|(_, x)| !x.0.protected)
                .min_by_key(|(_, x)| (x.0.image == self.image, x.0.launched_at))
                .map(|(i, _)| i)
            else {
                break;
            };
            self.members.remove(victim);
        }
    }

    /// The autoscaler changes desired capacity.
    pub fn autoscale(&mut self, delta: i64) {
        self.desired = (self.desired as i64 + delta).clamp(1, self.group_max as i64) as u32;
        self.reconcile();
    }

    /// In service as DESIGN.md defines it, counted independently of the
    /// planner: healthy, not draining, and past warmup if launched in roll.
    pub fn in_service(&self, warmup_ms: i64, roll_start: i64) -> u32 {
        self.members
            .iter()
            .filter(|(m, _, drained_at)| {
                drained_at.is_none()
                    && match m.target {
                        Some((TargetState::Healthy, since)) => {
                            m.launched_at.0 < roll_start || self.now - since.0 >= warmup_ms
                        }
                        _ => false,
                    }
            })
            .count() as u32
    }
}

pub(super) fn policy(min: u32, max: u32) -> RollPolicy {
    RollPolicy {
        min_healthy_percent: min,
        max_healthy_percent: max,
        warmup: Duration::from_millis(500),
        health_grace: Duration::from_secs(30),
        max_unhealthy_new: 1,
        skip_matching: true,
        protected: HeldInstances::Skip,
        standby: HeldInstances::Skip,
        ..RollPolicy::default()
    }
}

/// Drive a roll to its end; returns (ticks, elapsed ms, outcome).
pub(super) fn drive(model: &mut Model, pol: &RollPolicy, tick_ms: i64, max_ticks: u32) -> (u32, i64, Outcome) {
    let n = model.desired;
    let progress = RollProgress::new(ImageId::new("new"), n, Timestamp(model.now));
    drive_from(model, pol, progress, tick_ms, max_ticks)
}

/// Drive a roll from the given progress (a fresh one, or a resumed one).
pub(super) fn drive_from(
    model: &mut Model,
    pol: &RollPolicy,
    mut progress: RollProgress,
    tick_ms: i64,
    max_ticks: u32,
) -> (u32, i64, Outcome) {
    let start = model.now;
    model.image = ImageId::new("new");
    for tick in 0..max_ticks {
        let obs = model.observe();
        let plan = plan(&obs, pol, &progress, Timestamp(model.now));
        let (floor, max_total) = capacity_bounds(plan.progress.base_desired, pol);
        assert_eq!(
            plan.status.in_service,
            model.in_service(pol.warmup.as_millis() as i64, progress.started_at.0),
            "in-service count"
        );
        assert!(
            plan.status.in_service >= floor || tick == 0 && floor == 0,
            "floor broken: {:?}",
            plan.status
        );
        assert!(
            obs.members.len() as u32 <= max_total,
            "surge broken: {} > {max_total}",
            obs.members.len()
        );
        match &plan.outcome {
            Outcome::Complete | Outcome::Abort { .. } | Outcome::Paused { .. } => {
                return (tick, model.now - start, plan.outcome)
            }
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
    let cases = [
        (8, 100, 150, 8, 12, 4),
        (8, 90, 110, 8, 9, 1),
        (10, 90, 110, 9, 11, 2),
        (1000, 90, 110, 900, 1100, 200),
        (3, 100, 101, 3, 4, 1),
        (4, 50, 100, 2, 4, 2),
    ];
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
    let lb = lower_bound(
        8,
        4,
        Duration::from_millis(1000),
        Duration::ZERO,
        Duration::from_millis(500),
        Duration::from_millis(50),
    );
    assert!(
        elapsed as f64 <= lb.as_millis() as f64 * 1.25,
        "elapsed {elapsed} vs bound {lb:?}"
    );
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
    assert!(
        m.members.iter().any(|x| x.0.id.as_str() == "i-0001"),
        "matching instance kept"
    );
}

/// Drive until `stop` says so, returning the plan it stopped on.
fn drive_until(
    model: &mut Model,
    pol: &RollPolicy,
    progress: &mut RollProgress,
    tick_ms: i64,
    max_ticks: u32,
    stop: impl Fn(&Model, &Plan) -> bool,
) -> Plan {
    for _ in 0..max_ticks {
        let obs = model.observe();
        let p = plan(&obs, pol, progress, Timestamp(model.now));
        if stop(model, &p) {
            return p;
        }
        model.apply(&p.actions);
        *progress = p.progress;
        model.now += tick_ms;
    }
    panic!("condition not reached in {max_ticks} ticks");
}

fn new_count(m: &Model) -> usize {
    m.members.iter().filter(|x| x.0.image.as_str() == "new").count()
}

#[test]
fn canary_replaces_only_canaries_then_bakes() {
    let pol = RollPolicy {
        canary: 2,
        bake_time: Duration::from_secs(60),
        ..policy(100, 150)
    };
    let mut m = Model::new(10, 1000, 50);
    m.image = ImageId::new("new");
    let mut progress = RollProgress::new(ImageId::new("new"), 10, Timestamp(m.now));
    // Run until the canary stage is done and its bake started.
    let p = drive_until(&mut m, &pol, &mut progress, 100, 1000, |_, p| {
        p.progress.stage_done_at.is_some()
    });
    assert_eq!(p.status.stage, 0);
    let baked_from = m.now;
    assert_eq!(new_count(&m), 2, "only the canaries were replaced");
    // Nothing more starts during the bake.
    let p = drive_until(&mut m, &pol, &mut progress, 100, 2000, |_, p| p.progress.stage == 1);
    assert!(m.now - baked_from >= 60_000, "bake shortened: {}", m.now - baked_from);
    assert_eq!(new_count(&m), 2);
    assert!(p.status.waiting.is_none());
    let (_, _, outcome) = drive_from(&mut m, &pol, progress, 100, 10_000);
    assert_eq!(outcome, Outcome::Complete);
    assert_eq!(new_count(&m), 10);
}

#[test]
fn failed_canary_aborts_after_the_canary_only() {
    // max_unhealthy_new is high, but any canary failure aborts.
    let pol = RollPolicy {
        canary: 1,
        max_unhealthy_new: 5,
        ..policy(100, 150)
    };
    let mut m = Model::new(10, 1000, 50);
    m.broken_new = true;
    let (_, _, outcome) = drive(&mut m, &pol, 500, 10_000);
    match outcome {
        Outcome::Abort { reason, .. } => assert!(reason.starts_with("canary failed"), "{reason}"),
        o => panic!("{o:?}"),
    }
    assert_eq!(m.members.iter().filter(|x| x.0.image.as_str() == "old").count(), 10);
    assert_eq!(new_count(&m), 1, "one canary launched, nothing more");
}

#[test]
fn checkpoints_pause_between_stages() {
    let pol = RollPolicy {
        checkpoints: vec![50],
        checkpoint_pause: Duration::from_secs(30),
        ..policy(100, 120)
    };
    let mut m = Model::new(10, 1000, 50);
    m.image = ImageId::new("new");
    let mut progress = RollProgress::new(ImageId::new("new"), 10, Timestamp(m.now));
    let p = drive_until(&mut m, &pol, &mut progress, 100, 2000, |_, p| {
        p.status.waiting.is_some()
    });
    assert!(
        p.status.waiting.as_deref().unwrap_or("").contains("checkpoint 50%"),
        "{:?}",
        p.status.waiting
    );
    assert_eq!(new_count(&m), 5);
    let paused_at = m.now;
    drive_until(&mut m, &pol, &mut progress, 100, 2000, |_, p| p.progress.stage == 1);
    assert!(m.now - paused_at >= 30_000);
    let (_, _, outcome) = drive_from(&mut m, &pol, progress, 100, 10_000);
    assert_eq!(outcome, Outcome::Complete);
}

#[test]
fn unhealthy_threshold_as_percent() {
    // 70 % of 10 = 7: the first wave of 5 failures does not abort (they
    // are replaced), the second wave does.
    let pol = RollPolicy {
        max_unhealthy_new: 1,
        max_unhealthy_new_percent: Some(70),
        ..policy(100, 150)
    };
    let mut m = Model::new(10, 1000, 50);
    m.broken_new = true;
    let (_, _, outcome) = drive(&mut m, &pol, 500, 10_000);
    match outcome {
        Outcome::Abort { reason, .. } => assert!(reason.starts_with("10 new instance(s)"), "{reason}"),
        o => panic!("{o:?}"),
    }
}

#[test]
fn failed_new_instances_are_replaced_below_threshold() {
    let pol = RollPolicy {
        max_unhealthy_new: 50,
        ..policy(100, 150)
    };
    let mut m = Model::new(6, 1000, 50);
    m.broken_pct = 30;
    let (_, _, outcome) = drive(&mut m, &pol, 200, 50_000);
    assert_eq!(outcome, Outcome::Complete);
    assert_eq!(new_count(&m), 6);
}

#[test]
fn cutoff_pauses_then_resume_completes() {
    let pol = RollPolicy {
        window_cutoff: Some(Duration::from_millis(1500)),
        ..policy(90, 110)
    };
    let mut m = Model::new(20, 1000, 50);
    let (_, _, outcome) = drive(&mut m, &pol, 100, 10_000);
    match &outcome {
        Outcome::Paused { reason } => assert!(reason.contains("still to replace"), "{reason}"),
        o => panic!("{o:?}"),
    }
    let done = new_count(&m);
    assert!(done > 0 && done < 20, "{done}");
    assert_eq!(m.members.len(), 20, "back to base capacity while paused");
    // Next window: a fresh progress (the engine resumes the run).
    let progress = RollProgress::new(ImageId::new("new"), 20, Timestamp(m.now));
    let pol = RollPolicy {
        window_cutoff: None,
        ..pol
    };
    let (_, _, outcome) = drive_from(&mut m, &pol, progress, 100, 10_000);
    assert_eq!(outcome, Outcome::Complete);
    assert_eq!(new_count(&m), 20);
}

#[test]
fn protected_wait_blocks_then_times_out_with_reason() {
    let pol = RollPolicy {
        protected: HeldInstances::Wait,
        hold_timeout: Duration::from_secs(5),
        ..policy(100, 150)
    };
    let mut m = Model::new(4, 1000, 50);
    m.members[0].0.protected = true;
    m.image = ImageId::new("new");
    let mut progress = RollProgress::new(ImageId::new("new"), 4, Timestamp(m.now));
    let p = drive_until(&mut m, &pol, &mut progress, 100, 1000, |_, p| {
        matches!(p.outcome, Outcome::Blocked { .. })
    });
    let blocked_at = m.now;
    assert!(
        matches!(&p.outcome, Outcome::Blocked { reason } if reason.contains("i-0001")),
        "{:?}",
        p.outcome
    );
    let p = drive_until(&mut m, &pol, &mut progress, 100, 1000, |_, p| {
        !matches!(p.outcome, Outcome::Blocked { .. } | Outcome::Progressing)
    });
    match &p.outcome {
        Outcome::Abort { reason, .. } => {
            assert!(reason.starts_with("timed out after 5s"), "{reason}");
            assert!(reason.contains("i-0001") && reason.contains("hold_timeout"), "{reason}");
        }
        o => panic!("{o:?}"),
    }
    assert!(m.now - blocked_at >= 5_000);
}

#[test]
fn protected_wait_resumes_when_unprotected() {
    let pol = RollPolicy {
        protected: HeldInstances::Wait,
        hold_timeout: Duration::from_secs(60),
        ..policy(100, 150)
    };
    let mut m = Model::new(4, 1000, 50);
    m.members[0].0.protected = true;
    m.image = ImageId::new("new");
    let mut progress = RollProgress::new(ImageId::new("new"), 4, Timestamp(m.now));
    drive_until(&mut m, &pol, &mut progress, 100, 1000, |_, p| {
        matches!(p.outcome, Outcome::Blocked { .. })
    });
    m.members[0].0.protected = false;
    let (_, _, outcome) = drive_from(&mut m, &pol, progress, 100, 10_000);
    assert_eq!(outcome, Outcome::Complete);
    assert_eq!(new_count(&m), 4);
}

#[test]
fn protected_replace_replaces_them_like_the_rest() {
    let pol = RollPolicy {
        protected: HeldInstances::Replace,
        ..policy(100, 150)
    };
    let mut m = Model::new(4, 1000, 50);
    m.members[2].0.protected = true;
    let (_, _, outcome) = drive(&mut m, &pol, 100, 10_000);
    assert_eq!(outcome, Outcome::Complete);
    assert_eq!(new_count(&m), 4, "the protected member was replaced too");
}

#[test]
fn protected_fail_refuses() {
    let pol = RollPolicy {
        protected: HeldInstances::Fail,
        ..policy(100, 150)
    };
    let mut m = Model::new(4, 1000, 50);
    m.members[2].0.protected = true;
    let (tick, _, outcome) = drive(&mut m, &pol, 100, 10);
    assert_eq!(tick, 0);
    assert!(
        matches!(&outcome, Outcome::Abort { reason, .. } if reason.contains("i-0003") && reason.contains("\"fail\"")),
        "{outcome:?}"
    );
    assert_eq!(new_count(&m), 0, "nothing was launched");
}

#[test]
fn stuck_drain_ends_at_drain_timeout() {
    let pol = RollPolicy {
        drain_timeout: Duration::from_secs(3),
        ..policy(100, 150)
    };
    let mut m = Model::new(4, 1000, 50);
    m.stuck_drain_pct = 100;
    m.drain_timeout_ms = 3000;
    let (_, elapsed, outcome) = drive(&mut m, &pol, 100, 10_000);
    assert_eq!(outcome, Outcome::Complete);
    assert!(elapsed >= 3000, "{elapsed}");
}

#[test]
fn scale_out_mid_roll_launches_new_and_completes_at_new_size() {
    let pol = policy(100, 150);
    let mut m = Model::new(6, 1000, 50);
    m.image = ImageId::new("new");
    let mut progress = RollProgress::new(ImageId::new("new"), 6, Timestamp(m.now));
    drive_until(&mut m, &pol, &mut progress, 100, 1000, |_, p| p.progress.replaced >= 2);
    let before = new_count(&m);
    m.autoscale(4);
    assert_eq!(new_count(&m), before + 4, "scale-out launches on the new image");
    // The floor rises with the new capacity before the new instances are
    // up, so drive without the strict floor check.
    drive_until(&mut m, &pol, &mut progress, 100, 10_000, |_, p| {
        p.outcome == Outcome::Complete
    });
    assert_eq!(m.members.len(), 10);
    assert_eq!(new_count(&m), 10);
}

#[test]
fn scale_in_mid_roll_takes_old_first_and_completes() {
    let pol = policy(90, 110);
    let mut m = Model::new(20, 1000, 50);
    m.image = ImageId::new("new");
    let mut progress = RollProgress::new(ImageId::new("new"), 20, Timestamp(m.now));
    drive_until(&mut m, &pol, &mut progress, 100, 1000, |_, p| p.progress.replaced >= 4);
    let new_before = new_count(&m);
    m.autoscale(-8);
    assert_eq!(new_count(&m), new_before, "scale-in took old instances");
    let (_, _, outcome) = drive_from(&mut m, &pol, progress, 100, 10_000);
    assert_eq!(outcome, Outcome::Complete);
    assert_eq!(m.members.len(), 12);
    assert_eq!(m.desired, 12);
}

#[test]
fn planner_drains_surplus_old_when_desired_drops_below_live() {
    // A group that does not pick victims itself: the planner pairs the
    // surplus with old instances (drain, then terminate with decrement).
    let pol = policy(50, 100);
    let mut m = Model::new(6, 1000, 50);
    m.image = ImageId::new("new");
    let mut progress = RollProgress::new(ImageId::new("new"), 6, Timestamp(m.now));
    let obs = m.observe();
    let p1 = plan(&obs, &pol, &progress, Timestamp(m.now));
    m.apply(&p1.actions);
    progress = p1.progress;
    // The autoscaler lowers desired by 2 without removing anything.
    m.desired -= 2;
    let obs = m.observe();
    let p2 = plan(&obs, &pol, &progress, Timestamp(m.now));
    assert_eq!(p2.progress.base_desired, 4);
    let drained: Vec<_> = p2
        .actions
        .iter()
        .filter(|a| matches!(a, Action::Drain { .. }))
        .collect();
    assert!(!drained.is_empty(), "{:?}", p2.actions);
    assert!(
        !p2.actions.iter().any(|a| matches!(a, Action::SetDesired { .. })),
        "{:?}",
        p2.actions
    );
}

#[test]
fn policy_from_config_carries_every_knob() {
    let cfg = crate::config::parse(
        r#"[providers.local.groups.web]
min = 1
desired = 2
max = 4
port = 8080

[pipelines.web]
provider = "local"
group = "web"
parameter = "p"

[pipelines.web.rollout]
canary = 2
bake_time = "10m"
checkpoints = [25, 50]
checkpoint_pause = "5m"
max_unhealthy_new_percent = 10
protected = "wait"
hold_timeout = "20m"
drain_timeout = "15m"
window_cutoff = "3h"
"#,
        "repave.toml",
    )
    .expect("valid");
    let r = &cfg.pipelines["web"].rollout;
    let pol = RollPolicy::new(r, &HealthSettings::new(r, &crate::provider::HealthTiming::default()));
    assert_eq!(pol.canary, 2);
    assert_eq!(pol.bake_time, Duration::from_secs(600));
    assert_eq!(pol.checkpoints, vec![25, 50]);
    assert_eq!(pol.max_unhealthy_new_percent, Some(10));
    assert_eq!(pol.protected, HeldInstances::Wait);
    assert_eq!(pol.hold_timeout, Duration::from_secs(1200));
    assert_eq!(pol.drain_timeout, Duration::from_secs(900));
    assert_eq!(pol.window_cutoff, Some(Duration::from_secs(3 * 3600)));
    let stages = stage_caps(100, &pol);
    let caps: Vec<u32> = stages.iter().map(|s| s.cap).collect();
    assert_eq!(caps, vec![2, 25, 50, 100]);
}

#[test]
fn the_surge_stays_within_the_groups_max_size() {
    // 6 desired, max 8: 150 % would ask for 9, AWS refuses anything above 8.
    let mut m = Model::new(6, 1000, 50);
    m.group_max = 8;
    m.image = ImageId::new("new");
    let (_, _, outcome) = drive(&mut m, &policy(100, 150), 50, 10_000);
    assert_eq!(outcome, Outcome::Complete);
    assert!(m.members.iter().all(|x| x.0.image.as_str() == "new"));
}

#[test]
fn a_group_at_max_size_with_no_room_is_the_orchestrations_fault() {
    let mut m = Model::new(3, 1000, 50);
    m.group_max = 3;
    m.image = ImageId::new("new");
    let (_, _, outcome) = drive(&mut m, &policy(100, 150), 50, 10_000);
    match outcome {
        Outcome::Abort { reason, blame } => {
            assert_eq!(blame, Blame::Orchestration);
            assert!(
                reason.contains("MaxSize 3") && reason.contains("at least 4"),
                "{reason}"
            );
        }
        o => panic!("{o:?}"),
    }
    // Terminate-first fits in the same group.
    let mut m = Model::new(3, 1000, 50);
    m.group_max = 3;
    m.image = ImageId::new("new");
    let (_, _, outcome) = drive(&mut m, &policy(66, 150), 50, 10_000);
    assert_eq!(outcome, Outcome::Complete);
}

#[test]
fn failed_new_instances_are_the_images_fault() {
    let mut m = Model::new(3, 1000, 50);
    m.image = ImageId::new("new");
    m.broken_new = true;
    let (_, _, outcome) = drive(&mut m, &policy(100, 150), 50, 10_000);
    assert!(
        matches!(
            outcome,
            Outcome::Abort {
                blame: Blame::Image,
                ..
            }
        ),
        "{outcome:?}"
    );
}

/// A new instance seen held by a launch hook (Pending:Wait) that then
/// leaves the group without entering service was abandoned by the hook:
/// counted on its own, reported, and the abort blames the orchestration,
/// never the image. One that the hook lets through is no abandon.
#[test]
fn a_launch_hook_abandoning_new_instances_is_the_orchestrations_fault() {
    let pol = policy(100, 150);
    let old = |i: u32| Member {
        id: InstanceId::new(format!("i-old{i}")),
        image: ImageId::new("old"),
        lifecycle: Lifecycle::InService,
        protected: false,
        launched_at: Timestamp(0),
        target: Some((TargetState::Healthy, Timestamp(0))),
        hook_wait: false,
    };
    let waiting = Member {
        id: InstanceId::new("i-new1"),
        image: ImageId::new("new"),
        lifecycle: Lifecycle::Pending,
        protected: false,
        launched_at: Timestamp(2_000),
        target: None,
        hook_wait: true,
    };
    let obs = |members: Vec<Member>, desired: u32| Observation {
        desired,
        min: 1,
        max: 4,
        members,
    };
    let start = RollProgress::new(ImageId::new("new"), 2, Timestamp(1_000));
    let p1 = plan(
        &obs(vec![old(1), old(2), waiting.clone()], 3),
        &pol,
        &start,
        Timestamp(3_000),
    );
    assert_eq!(p1.progress.hook_waiting.len(), 1);
    assert_eq!(p1.outcome, Outcome::Progressing);

    // Let through: in service, not abandoned.
    let through = Member {
        lifecycle: Lifecycle::InService,
        hook_wait: false,
        ..waiting.clone()
    };
    let p2 = plan(
        &obs(vec![old(1), old(2), through], 3),
        &pol,
        &p1.progress,
        Timestamp(4_000),
    );
    assert!(p2.progress.abandoned_new.is_empty());

    // Gone from the wait: abandoned; with max_unhealthy_new 1 the roll stops.
    let p3 = plan(&obs(vec![old(1), old(2)], 3), &pol, &p1.progress, Timestamp(4_000));
    assert_eq!(p3.status.abandoned_new, 1);
    match p3.outcome {
        Outcome::Abort { reason, blame } => {
            assert_eq!(blame, Blame::Orchestration);
            assert!(
                reason.contains("launch lifecycle hook abandoned 1 new instance(s): i-new1"),
                "{reason}"
            );
        }
        o => panic!("{o:?}"),
    }
}
