//! `SimProvider`: every provider trait over the lazily evaluated [`World`].

use crate::clock::SimClock;
use crate::latency::{chance, Faults, Latencies};
use crate::world::{SimCommand, SimGroup, SimImage, World};
use async_trait::async_trait;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use repave_core::ids::{Clock, CommandId, ImageId, InstanceId, Timestamp};
use repave_core::patch::Update;
use repave_core::provider::*;
use repave_core::{ErrorKind, ProviderError};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

/// A simulated cloud account in virtual time. Cheap to share: calls lock
/// one mutex briefly and never sleep (latency is in the returned state).
pub struct SimProvider {
    clock: Arc<SimClock>,
    world: Mutex<World>,
    calls: Mutex<BTreeMap<&'static str, u64>>,
    /// Native rolls in progress: group → (id, min healthy percent).
    native: Mutex<HashMap<String, (String, u32)>>,
    /// Every call fails (see [`SimProvider::set_unreachable`]).
    unreachable: std::sync::atomic::AtomicBool,
    /// Operations that fail (see [`SimProvider::fail_operation`]).
    failing: Mutex<std::collections::HashSet<&'static str>>,
    /// The account's request budget, when calls wait for it.
    budget: Option<crate::rate::SimBudget>,
    /// When each call went out (virtual seconds) and its AWS bucket.
    call_log: Mutex<Vec<(f64, repave_core::budget::ApiBucket)>>,
    started: tokio::time::Instant,
}

/// A simulated group's readiness settings, as an operator would set them
/// for these latencies: a grace period covering twice the median launch and
/// boot (the slow tail of a log-normal draw), one balancer check as long as
/// the median time to healthy, the deregistration delay.
pub(crate) fn sim_health_timing(lat: &crate::Latencies) -> repave_core::provider::HealthTiming {
    repave_core::provider::HealthTiming {
        grace_period: Some((lat.launch + lat.boot) * 2),
        health_check_type: Some("ELB".into()),
        checks: vec![repave_core::provider::BalancerCheck {
            name: "sim target group".into(),
            interval: lat.health,
            healthy_threshold: 1,
            deregistration_delay: Some(lat.deregistration_delay),
            port: None,
        }],
        launch_hooks: vec![],
        termination_hooks: vec![],
        default_warmup: None,
    }
}

/// Updates every simulated builder finds until it is patched.
fn pending_updates() -> Vec<Update> {
    ["KB5041580", "KB5041773", "KB890830"]
        .iter()
        .map(|id| Update {
            id: id.to_string(),
            package: "windows".into(),
            version: "2024-08".into(),
            severity: "Critical".into(),
            classification: "SecurityUpdates".into(),
            released: "2024-08-13".into(),
            reboot: false,
            files: BTreeMap::new(),
        })
        .collect()
}

fn has_tags(have: &Tags, want: &Tags) -> bool {
    want.iter().all(|(k, v)| have.get(k) == Some(v))
}

impl SimProvider {
    /// An empty account reading `clock`; every latency and fault draw comes
    /// from one ChaCha RNG seeded with `seed`.
    pub fn new(clock: Arc<SimClock>, latencies: Latencies, faults: Faults, seed: u64) -> Self {
        let world = World {
            rng: ChaCha8Rng::seed_from_u64(seed),
            lat: latencies,
            faults,
            next: 0,
            images: BTreeMap::new(),
            image_tokens: HashMap::new(),
            instances: HashMap::new(),
            launch_tokens: HashMap::new(),
            commands: HashMap::new(),
            params: BTreeMap::new(),
            specs: BTreeMap::new(),
            groups: BTreeMap::new(),
        };
        Self {
            clock,
            world: Mutex::new(world),
            calls: Mutex::new(BTreeMap::new()),
            native: Mutex::new(HashMap::new()),
            unreachable: std::sync::atomic::AtomicBool::new(false),
            failing: Mutex::new(Default::default()),
            budget: None,
            call_log: Mutex::new(Vec::new()),
            started: tokio::time::Instant::now(),
        }
    }

    /// Calls wait for one request budget (`percent` of each AWS bucket),
    /// as every provider of an account and region does on AWS.
    pub fn with_budget(mut self, percent: u32) -> Self {
        self.budget = Some(crate::rate::SimBudget::new(percent));
        self
    }

    /// Every call so far: (virtual seconds since the provider was made,
    /// AWS bucket it draws from).
    pub fn call_log(&self) -> Vec<(f64, repave_core::budget::ApiBucket)> {
        self.call_log.lock().expect("call log lock").clone()
    }

    /// The limit the budget keeps `bucket` to, if there is a budget.
    pub fn budget_limit(&self, bucket: repave_core::budget::ApiBucket) -> Option<repave_core::budget::Limit> {
        self.budget.as_ref().map(|b| b.limit(bucket))
    }

    pub(crate) fn native_rolls(&self) -> MutexGuard<'_, HashMap<String, (String, u32)>> {
        self.native.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn now(&self) -> Timestamp {
        self.clock.now()
    }

    fn world(&self) -> MutexGuard<'_, World> {
        self.world.lock().expect("sim world lock")
    }

    /// Make the cloud unreachable (every call fails as a dropped connection
    /// would) or reachable again: the test of a provider lost mid-run.
    pub fn set_unreachable(&self, down: bool) {
        self.unreachable.store(down, std::sync::atomic::Ordering::SeqCst);
    }

    /// Make every call of `op` fail permanently (or work again).
    pub fn fail_operation(&self, op: &'static str, fail: bool) {
        let mut f = self.failing.lock().expect("failing lock");
        if fail {
            f.insert(op);
        } else {
            f.remove(op);
        }
    }

    /// Wait for the budget (if any), count the call, and maybe fail or
    /// throttle it.
    async fn call(&self, op: &'static str) -> Result<()> {
        let bucket = crate::rate::bucket_of(op);
        if let Some(b) = &self.budget {
            b.acquire(bucket, self.started).await;
        }
        let at = self.started.elapsed().as_secs_f64();
        self.call_log.lock().expect("call log lock").push((at, bucket));
        *self.calls.lock().expect("calls lock").entry(op).or_default() += 1;
        if self.unreachable.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(ProviderError::new(
                ErrorKind::Transient,
                op,
                "connection refused (simulated: the cloud is unreachable)",
            ));
        }
        if self.failing.lock().expect("failing lock").contains(op) {
            return Err(ProviderError::permanent(op, "AccessDenied (simulated failure)"));
        }
        let mut w = self.world();
        let pct = w.faults.throttle_percent;
        if chance(&mut w.rng, pct) {
            return Err(ProviderError::new(
                ErrorKind::Throttled,
                op,
                "Rate exceeded (simulated throttling)",
            ));
        }
        Ok(())
    }

    /// API calls so far, by operation.
    pub fn api_calls(&self) -> BTreeMap<String, u64> {
        self.calls
            .lock()
            .expect("calls lock")
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect()
    }

    /// Change faults mid-run (scenario tests).
    pub fn set_faults(&self, faults: Faults) {
        self.world().faults = faults;
    }

    /// A ready image (the golden image a fleet starts on).
    pub fn add_image(&self, name: &str) -> ImageId {
        let now = self.now();
        let mut w = self.world();
        let id = ImageId::new(w.id("ami"));
        let image = Image {
            id: id.clone(),
            name: name.into(),
            state: ImageState::Available,
            created_at: now,
            tags: Tags::new(),
            // The sim's latencies are a Windows fleet's.
            platform: Some("Windows".into()),
        };
        w.images.insert(
            id.clone(),
            SimImage {
                image,
                available_at: now,
                baked: false,
            },
        );
        id
    }

    /// A group of `size` healthy instances on `image`, behind a balancer,
    /// with launch spec `<group>-lt` v1 and golden parameter `parameter`.
    pub fn add_group(&self, group: &str, parameter: &str, image: &ImageId, size: u32) {
        let now = self.now();
        let long_ago = Timestamp(now.0 - 86_400_000);
        let mut w = self.world();
        let spec_name = format!("{group}-lt");
        w.specs.insert(
            spec_name.clone(),
            vec![LaunchSpec {
                name: spec_name.clone(),
                version: 1,
                image: image.clone(),
                spec: InstanceSpec::default(),
                created_at: long_ago,
            }],
        );
        w.params.insert(
            parameter.into(),
            vec![Parameter {
                name: parameter.into(),
                value: image.to_string(),
                version: 1,
                description: Some(format!("golden image for {group}")),
                labels: vec![],
                modified_at: long_ago,
            }],
        );
        let mut members = Vec::new();
        for _ in 0..size {
            let mut tags = Tags::new();
            tags.insert("aws:autoscaling:groupName".into(), group.to_string());
            let id = w.new_instance(image, tags, Some(group.into()), long_ago);
            members.push(id);
        }
        w.groups.insert(
            group.into(),
            SimGroup {
                name: group.into(),
                min: 0,
                max: size.saturating_mul(3).max(size + 10),
                desired: size,
                launch_spec: LaunchSpecRef {
                    name: spec_name,
                    version: 1,
                },
                members,
                retry_launch_at: long_ago,
            },
        );
    }

    /// The autoscaler changes desired capacity (not a roll action: not
    /// counted as an API call of the run).
    pub fn autoscale(&self, group: &str, desired: u32) {
        let now = self.now();
        let mut w = self.world();
        if let Some(g) = w.groups.get_mut(group) {
            g.desired = desired;
        }
        w.reconcile(group, now);
    }

    /// Put an instance into (or out of) standby.
    pub fn set_standby(&self, id: &InstanceId, standby: bool) {
        if let Some(i) = self.world().instances.get_mut(id) {
            i.standby = standby;
        }
    }

    /// The group's desired capacity right now.
    pub fn desired(&self, group: &str) -> u32 {
        self.world().groups.get(group).map_or(0, |g| g.desired)
    }

    /// Instances the group ever launched, by image (terminated included).
    pub fn launched_in_group(&self, group: &str) -> BTreeMap<ImageId, u32> {
        let w = self.world();
        let mut out = BTreeMap::new();
        for i in w.instances.values() {
            if i.tags.get("aws:autoscaling:groupName").map(String::as_str) == Some(group) {
                *out.entry(i.image.clone()).or_default() += 1;
            }
        }
        out
    }

    /// Live instances of a group by image (for assertions).
    pub fn images_in_group(&self, group: &str) -> BTreeMap<ImageId, u32> {
        let now = self.now();
        let mut w = self.world();
        w.reconcile(group, now);
        let mut out = BTreeMap::new();
        if let Some(g) = w.groups.get(group) {
            for id in &g.members {
                let i = &w.instances[id];
                if i.terminating.is_none() {
                    *out.entry(i.image.clone()).or_default() += 1;
                }
            }
        }
        out
    }
}

impl Provider for SimProvider {
    fn name(&self) -> &str {
        "sim"
    }
    fn native_roll(&self) -> Option<&dyn NativeRoll> {
        Some(self)
    }
    fn api_calls(&self) -> BTreeMap<String, u64> {
        SimProvider::api_calls(self)
    }
}

fn not_found(op: &str, what: impl std::fmt::Display) -> ProviderError {
    ProviderError::not_found(op, format!("{what} does not exist"))
}

#[async_trait]
impl Images for SimProvider {
    async fn describe_image(&self, id: &ImageId) -> Result<Image> {
        self.call("describe_image").await?;
        let now = self.now();
        self.world()
            .images
            .get(id)
            .map(|i| i.view(now))
            .ok_or_else(|| not_found("describe_image", id))
    }

    async fn create_image(&self, req: CreateImageRequest) -> Result<ImageId> {
        self.call("create_image").await?;
        let now = self.now();
        let mut w = self.world();
        if let Some(id) = w.image_tokens.get(&req.token) {
            return Ok(id.clone());
        }
        let patched = match w.instances.get(&req.instance) {
            None => return Err(not_found("create_image", &req.instance)),
            Some(i) if i.state(now).is_gone() => {
                return Err(ProviderError::permanent(
                    "create_image",
                    format!("{} is terminated", req.instance),
                ))
            }
            Some(i) => i.patched,
        };
        let id = ImageId::new(w.id("ami"));
        let lat = w.lat.clone();
        let available_at = now.plus(lat.draw(&mut w.rng, lat.create_image));
        let mut tags = req.tags.clone();
        tags.insert("sim:patched".into(), patched.to_string());
        let image = Image {
            id: id.clone(),
            name: req.name,
            state: ImageState::Pending,
            created_at: now,
            tags,
            platform: Some("Windows".into()),
        };
        w.images.insert(
            id.clone(),
            SimImage {
                image,
                available_at,
                baked: true,
            },
        );
        w.image_tokens.insert(req.token, id.clone());
        Ok(id)
    }

    async fn deregister_image(&self, id: &ImageId) -> Result<()> {
        self.call("deregister_image").await?;
        match self.world().images.get_mut(id) {
            Some(i) => {
                i.image.state = ImageState::Deregistered;
                Ok(())
            }
            None => Err(not_found("deregister_image", id)),
        }
    }

    async fn list_images(&self, tags: &Tags) -> Result<Vec<Image>> {
        self.call("list_images").await?;
        let now = self.now();
        Ok(self
            .world()
            .images
            .values()
            .filter(|i| has_tags(&i.image.tags, tags))
            .map(|i| i.view(now))
            .collect())
    }

    async fn referenced_images(&self) -> Result<std::collections::BTreeSet<ImageId>> {
        self.call("referenced_images").await?;
        let now = self.now();
        let w = self.world();
        let mut out: std::collections::BTreeSet<ImageId> =
            w.specs.values().flatten().map(|s| s.image.clone()).collect();
        out.extend(
            w.instances
                .values()
                .filter(|i| !i.state(now).is_gone())
                .map(|i| i.image.clone()),
        );
        Ok(out)
    }

    async fn tag_image(&self, id: &ImageId, tags: &Tags) -> Result<()> {
        self.call("tag_image").await?;
        match self.world().images.get_mut(id) {
            Some(i) => {
                i.image.tags.extend(tags.clone());
                Ok(())
            }
            None => Err(not_found("tag_image", id)),
        }
    }
}

#[async_trait]
impl Instances for SimProvider {
    async fn launch(&self, req: LaunchRequest) -> Result<Instance> {
        self.call("launch").await?;
        let now = self.now();
        let mut w = self.world();
        if let Some(id) = w.launch_tokens.get(&req.token) {
            return Ok(w.instances[id].view(now));
        }
        match w.images.get(&req.image).map(|i| i.view(now).state) {
            Some(ImageState::Available) => {}
            Some(s) => {
                return Err(ProviderError::permanent(
                    "launch",
                    format!("image {} is {s:?}", req.image),
                ))
            }
            None => return Err(not_found("launch", &req.image)),
        }
        let pct = w.faults.launch_failure_percent;
        if chance(&mut w.rng, pct) {
            return Err(ProviderError::transient(
                "launch",
                "InsufficientInstanceCapacity (simulated)",
            ));
        }
        let id = w.new_instance(&req.image, req.tags, None, now);
        w.launch_tokens.insert(req.token, id.clone());
        Ok(w.instances[&id].view(now))
    }

    async fn describe_instances(&self, ids: &[InstanceId]) -> Result<Vec<Instance>> {
        self.call("describe_instances").await?;
        let now = self.now();
        let w = self.world();
        Ok(ids
            .iter()
            .filter_map(|id| w.instances.get(id))
            .map(|i| i.view(now))
            .collect())
    }

    async fn list_instances(&self, tags: &Tags) -> Result<Vec<Instance>> {
        self.call("list_instances").await?;
        let now = self.now();
        let w = self.world();
        let mut v: Vec<Instance> = w
            .instances
            .values()
            .filter(|i| has_tags(&i.tags, tags))
            .map(|i| i.view(now))
            .collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(v)
    }

    async fn stop_instance(&self, id: &InstanceId) -> Result<()> {
        self.call("stop_instance").await?;
        let now = self.now();
        let mut w = self.world();
        let d = {
            let lat = w.lat.clone();
            lat.draw(&mut w.rng, lat.stop)
        };
        let i = w.instances.get_mut(id).ok_or_else(|| not_found("stop_instance", id))?;
        match i.state(now) {
            InstanceState::Running | InstanceState::Pending => i.stopping = Some((now, now.plus(d))),
            InstanceState::Stopping | InstanceState::Stopped => {}
            s => return Err(ProviderError::permanent("stop_instance", format!("{id} is {s:?}"))),
        }
        Ok(())
    }

    async fn reboot_instance(&self, id: &InstanceId) -> Result<()> {
        self.call("reboot_instance").await?;
        let now = self.now();
        let mut w = self.world();
        let boot = {
            let lat = w.lat.clone();
            lat.draw(&mut w.rng, lat.boot)
        };
        let i = w
            .instances
            .get_mut(id)
            .ok_or_else(|| not_found("reboot_instance", id))?;
        i.ready_at = now.plus(boot);
        Ok(())
    }

    async fn terminate_instance(&self, id: &InstanceId) -> Result<()> {
        self.call("terminate_instance").await?;
        let now = self.now();
        let mut w = self.world();
        if !w.instances.contains_key(id) {
            return Err(not_found("terminate_instance", id));
        }
        w.terminate(id, now);
        Ok(())
    }

    async fn probe_health(&self, id: &InstanceId, _path: &str) -> Result<HealthProbe> {
        self.call("probe_health").await?;
        let now = self.now();
        let w = self.world();
        let i = w.instances.get(id).ok_or_else(|| not_found("probe_health", id))?;
        // The probe reaches the instance directly: a `bad_image` fault only
        // breaks group instances (a bug only balancer traffic shows).
        let healthy = i.healthy(now);
        let detail = if healthy {
            "200 OK".into()
        } else {
            format!("not answering ({:?})", i.state(now))
        };
        Ok(HealthProbe { healthy, detail })
    }
}

#[async_trait]
impl Commands for SimProvider {
    async fn send_command(&self, req: CommandRequest) -> Result<CommandId> {
        self.call("send_command").await?;
        let now = self.now();
        let mut w = self.world();
        let Some(inst) = w.instances.get(&req.instance) else {
            return Err(not_found("send_command", &req.instance));
        };
        if inst.state(now).is_gone() {
            return Err(ProviderError::permanent(
                "send_command",
                format!("{} is not running", req.instance),
            ));
        }
        // Like SSM, a command waits for the agent to come up.
        let starts_at = inst.ready_at.max(now);
        let patched = inst.patched;
        let lat = w.lat.clone();
        let (took, ok, stdout) = match &req.document {
            CommandDocument::Shell { .. } => (lat.draw(&mut w.rng, lat.command), true, String::new()),
            CommandDocument::ScanUpdates { .. } => {
                let updates = if patched { vec![] } else { pending_updates() };
                (
                    lat.draw(&mut w.rng, lat.scan),
                    true,
                    serde_json::to_string(&updates).expect("updates serialize"),
                )
            }
            CommandDocument::InstallUpdates { ids, .. } => {
                let fail = w.faults.patch_failure;
                let installed: Vec<Update> = pending_updates().into_iter().filter(|u| ids.contains(&u.id)).collect();
                let report = InstallReport {
                    failed: if fail { ids.clone() } else { vec![] },
                    installed: if fail { vec![] } else { installed },
                    reboot_required: false,
                    rebooted: false,
                };
                if !fail {
                    w.instances.get_mut(&req.instance).expect("instance").patched = true;
                }
                (
                    lat.draw(&mut w.rng, lat.updates),
                    true,
                    serde_json::to_string(&report).expect("report serializes"),
                )
            }
        };
        let id = CommandId::new(w.id("cmd"));
        w.commands.insert(
            id.clone(),
            SimCommand {
                id: id.clone(),
                instance: req.instance,
                starts_at,
                done_at: starts_at.plus(took),
                timeout: req.timeout,
                ok,
                stdout,
            },
        );
        Ok(id)
    }

    async fn command_result(&self, id: &CommandId) -> Result<CommandResult> {
        self.call("command_result").await?;
        let now = self.now();
        let w = self.world();
        let c = w.commands.get(id).ok_or_else(|| not_found("command_result", id))?;
        let gone = w.instances.get(&c.instance).is_none_or(|i| i.state(now).is_gone());
        let timed_out = c.done_at.since(c.starts_at) > c.timeout;
        let (status, code, stdout) = if timed_out && now >= c.starts_at.plus(c.timeout) {
            (CommandStatus::TimedOut, None, String::new())
        } else if now >= c.done_at && !timed_out {
            if c.ok {
                (CommandStatus::Success, Some(0), c.stdout.clone())
            } else {
                (CommandStatus::Failed, Some(1), c.stdout.clone())
            }
        } else if gone {
            (CommandStatus::Cancelled, None, String::new())
        } else if now >= c.starts_at {
            (CommandStatus::InProgress, None, String::new())
        } else {
            (CommandStatus::Pending, None, String::new())
        };
        Ok(CommandResult {
            id: c.id.clone(),
            status,
            exit_code: code,
            stdout,
            stderr: String::new(),
        })
    }
}

#[async_trait]
impl Parameters for SimProvider {
    async fn get_parameter(&self, name: &str) -> Result<Parameter> {
        self.call("get_parameter").await?;
        self.world()
            .params
            .get(name)
            .and_then(|v| v.last().cloned())
            .ok_or_else(|| not_found("get_parameter", name))
    }

    async fn put_parameter(&self, name: &str, value: &str, description: Option<&str>) -> Result<u64> {
        self.call("put_parameter").await?;
        let now = self.now();
        let mut w = self.world();
        let history = w.params.entry(name.to_string()).or_default();
        let last = history.last();
        let version = last.map_or(1, |p| p.version + 1);
        let description = description
            .map(str::to_string)
            .or_else(|| last.and_then(|p| p.description.clone()));
        history.push(Parameter {
            name: name.into(),
            value: value.into(),
            version,
            description,
            labels: vec![],
            modified_at: now,
        });
        Ok(version)
    }

    async fn parameter_history(&self, name: &str) -> Result<Vec<Parameter>> {
        self.call("parameter_history").await?;
        self.world()
            .params
            .get(name)
            .cloned()
            .ok_or_else(|| not_found("parameter_history", name))
    }

    async fn label_parameter_version(&self, name: &str, version: u64, labels: &[String]) -> Result<()> {
        self.call("label_parameter_version").await?;
        let mut w = self.world();
        let history = w
            .params
            .get_mut(name)
            .ok_or_else(|| not_found("label_parameter_version", name))?;
        // A label lives on one version at a time, as in SSM.
        for p in history.iter_mut() {
            p.labels.retain(|l| !labels.contains(l));
        }
        let p = history
            .iter_mut()
            .find(|p| p.version == version)
            .ok_or_else(|| not_found("label_parameter_version", version))?;
        p.labels.extend(labels.iter().cloned());
        Ok(())
    }
}

#[async_trait]
impl Groups for SimProvider {
    async fn describe_group(&self, name: &str) -> Result<Group> {
        self.call("describe_group").await?;
        let now = self.now();
        let mut w = self.world();
        w.reconcile(name, now);
        let g = w.groups.get(name).ok_or_else(|| not_found("describe_group", name))?;
        let members = g
            .members
            .iter()
            .map(|id| {
                let i = &w.instances[id];
                GroupMember {
                    id: id.clone(),
                    image: i.image.clone(),
                    lifecycle: i.lifecycle(now),
                    healthy: i.state(now) != InstanceState::Terminated,
                    protected: i.protected,
                    launched_at: i.launched_at,
                    launch_spec: None,
                    hook_wait: false,
                }
            })
            .collect();
        Ok(Group {
            name: g.name.clone(),
            min: g.min,
            max: g.max,
            desired: g.desired,
            launch_spec: g.launch_spec.clone(),
            members,
            balancer: Some(format!("{}.elb.sim", g.name)),
            subnets: vec![],
            health: sim_health_timing(&w.lat),
            suspended: vec![],
        })
    }

    async fn describe_launch_spec(&self, spec: &LaunchSpecRef) -> Result<LaunchSpec> {
        self.call("describe_launch_spec").await?;
        self.world()
            .specs
            .get(&spec.name)
            .and_then(|v| v.iter().find(|s| s.version == spec.version).cloned())
            .ok_or_else(|| not_found("describe_launch_spec", format!("{} v{}", spec.name, spec.version)))
    }

    async fn create_launch_spec_version(&self, base: &LaunchSpecRef, image: &ImageId) -> Result<LaunchSpecRef> {
        self.call("create_launch_spec_version").await?;
        let now = self.now();
        let mut w = self.world();
        let versions = w
            .specs
            .get_mut(&base.name)
            .ok_or_else(|| not_found("create_launch_spec_version", &base.name))?;
        let src = versions.iter().find(|s| s.version == base.version).cloned();
        let src =
            src.ok_or_else(|| not_found("create_launch_spec_version", format!("{} v{}", base.name, base.version)))?;
        let version = versions.iter().map(|s| s.version).max().unwrap_or(0) + 1;
        versions.push(LaunchSpec {
            name: base.name.clone(),
            version,
            image: image.clone(),
            spec: src.spec,
            created_at: now,
        });
        Ok(LaunchSpecRef {
            name: base.name.clone(),
            version,
        })
    }

    async fn set_group_launch_spec(&self, group: &str, spec: &LaunchSpecRef) -> Result<()> {
        self.call("set_group_launch_spec").await?;
        let mut w = self.world();
        if !w
            .specs
            .get(&spec.name)
            .is_some_and(|v| v.iter().any(|s| s.version == spec.version))
        {
            return Err(not_found(
                "set_group_launch_spec",
                format!("{} v{}", spec.name, spec.version),
            ));
        }
        let g = w
            .groups
            .get_mut(group)
            .ok_or_else(|| not_found("set_group_launch_spec", group))?;
        g.launch_spec = spec.clone();
        Ok(())
    }

    async fn set_desired_capacity(&self, group: &str, desired: u32) -> Result<()> {
        self.call("set_desired_capacity").await?;
        let now = self.now();
        let mut w = self.world();
        let g = w
            .groups
            .get_mut(group)
            .ok_or_else(|| not_found("set_desired_capacity", group))?;
        if desired < g.min || desired > g.max {
            return Err(ProviderError::permanent(
                "set_desired_capacity",
                format!("{desired} outside min {} / max {}", g.min, g.max),
            ));
        }
        g.desired = desired;
        w.reconcile(group, now);
        Ok(())
    }

    async fn terminate_group_instance(&self, group: &str, instance: &InstanceId, decrement: bool) -> Result<()> {
        self.call("terminate_group_instance").await?;
        let now = self.now();
        let mut w = self.world();
        let g = w
            .groups
            .get_mut(group)
            .ok_or_else(|| not_found("terminate_group_instance", group))?;
        if !g.members.contains(instance) {
            return Err(not_found("terminate_group_instance", instance));
        }
        if decrement {
            g.desired = g.desired.saturating_sub(1).max(g.min);
        }
        let already = w.instances.get(instance).is_some_and(|i| i.terminating.is_some());
        if !already {
            w.terminate(instance, now);
        }
        w.reconcile(group, now);
        Ok(())
    }

    async fn set_instance_protection(&self, group: &str, instance: &InstanceId, protected: bool) -> Result<()> {
        self.call("set_instance_protection").await?;
        let mut w = self.world();
        if !w.groups.get(group).is_some_and(|g| g.members.contains(instance)) {
            return Err(not_found("set_instance_protection", instance));
        }
        w.instances.get_mut(instance).expect("member").protected = protected;
        Ok(())
    }
}

#[async_trait]
impl Traffic for SimProvider {
    async fn target_health(&self, group: &str) -> Result<Vec<TargetHealth>> {
        self.call("target_health").await?;
        let now = self.now();
        let mut w = self.world();
        w.reconcile(group, now);
        let g = w.groups.get(group).ok_or_else(|| not_found("target_health", group))?;
        Ok(g.members.iter().filter_map(|id| w.instances[id].target(now)).collect())
    }

    async fn deregister_target(&self, group: &str, instance: &InstanceId) -> Result<()> {
        self.call("deregister_target").await?;
        let now = self.now();
        let mut w = self.world();
        if !w.groups.get(group).is_some_and(|g| g.members.contains(instance)) {
            return Err(not_found("deregister_target", instance));
        }
        w.deregister(instance, now);
        Ok(())
    }

    async fn register_target(&self, group: &str, instance: &InstanceId) -> Result<()> {
        self.call("register_target").await?;
        let mut w = self.world();
        if !w.groups.get(group).is_some_and(|g| g.members.contains(instance)) {
            return Err(not_found("register_target", instance));
        }
        w.instances.get_mut(instance).expect("member").drain = None;
        Ok(())
    }
}
