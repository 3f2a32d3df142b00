//! AWS as it really behaves: the runs a new user would make, on the
//! AWS-behaviour harness (health checks that take threshold × interval,
//! draining for the deregistration delay, capacity limits, new images
//! pending and briefly invisible, new instances briefly invisible, launch
//! hooks holding instances, SourceVersion, Instance Refresh). Each of these
//! failed before the provider and engine were fixed (issue 9).

mod common;

use common::{
    assert_succeeded, default_pipeline, engine, engine_on, events, harness_account, FleetSpec, Moto, SpecKind,
    DESCRIPTION, USER_DATA,
};
use repave_core::provider::{tag, Groups, Images, Instances, Parameters, Tags};
use repave_store::{RunKind, Store};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Watches the group from the outside while a run goes on: the fewest
/// members healthy in every target group, and the largest desired capacity
/// seen. Independent of the engine's own bookkeeping.
struct Watch {
    stop: Arc<AtomicBool>,
    min_healthy: Arc<AtomicU32>,
    max_desired: Arc<AtomicU32>,
    task: tokio::task::JoinHandle<()>,
}

impl Watch {
    fn start(moto: &Moto, group: &str, target_groups: &[String]) -> Watch {
        Watch::start_with(moto, group, target_groups, None)
    }

    /// Watch the fleet's own balancers: its target groups, or its Classic
    /// Load Balancer (InService there, and not deregistering).
    fn fleet(moto: &Moto, fleet: &common::Fleet) -> Watch {
        Watch::start_with(moto, &fleet.group, &fleet.target_groups, fleet.classic_elb.clone())
    }

    fn start_with(moto: &Moto, group: &str, target_groups: &[String], classic: Option<String>) -> Watch {
        let stop = Arc::new(AtomicBool::new(false));
        let min_healthy = Arc::new(AtomicU32::new(u32::MAX));
        let max_desired = Arc::new(AtomicU32::new(0));
        let (asg, elb, clb) = (moto.asg.clone(), moto.elb.clone(), moto.clb.clone());
        let (group, tgs) = (group.to_string(), target_groups.to_vec());
        let (s, mh, md) = (stop.clone(), min_healthy.clone(), max_desired.clone());
        let task = tokio::spawn(async move {
            while !s.load(Ordering::SeqCst) {
                if let Ok(g) = asg
                    .describe_auto_scaling_groups()
                    .auto_scaling_group_names(&group)
                    .send()
                    .await
                {
                    let g = &g.auto_scaling_groups()[0];
                    md.fetch_max(g.desired_capacity().unwrap_or(0) as u32, Ordering::SeqCst);
                    let in_service: Vec<&str> = g
                        .instances()
                        .iter()
                        .filter(|i| i.lifecycle_state().map(|s| s.as_str()) == Some("InService"))
                        .filter_map(|i| i.instance_id())
                        .collect();
                    let mut healthy: Option<u32> = None;
                    for tg in &tgs {
                        let Ok(h) = elb.describe_target_health().target_group_arn(tg).send().await else {
                            continue;
                        };
                        let n = h
                            .target_health_descriptions()
                            .iter()
                            .filter(|d| {
                                d.target_health().and_then(|t| t.state()).map(|s| s.as_str()) == Some("healthy")
                                    && d.target()
                                        .and_then(|t| t.id())
                                        .is_some_and(|id| in_service.contains(&id))
                            })
                            .count() as u32;
                        healthy = Some(healthy.map_or(n, |h| h.min(n)));
                    }
                    if let Some(lb) = &classic {
                        if let Ok(h) = clb.describe_instance_health().load_balancer_name(lb).send().await {
                            let n = h
                                .instance_states()
                                .iter()
                                .filter(|i| {
                                    i.state() == Some("InService")
                                        && !i.description().unwrap_or_default().contains("deregistration")
                                        && i.instance_id().is_some_and(|id| in_service.contains(&id))
                                })
                                .count() as u32;
                            healthy = Some(healthy.map_or(n, |h| h.min(n)));
                        }
                    }
                    if let Some(h) = healthy {
                        mh.fetch_min(h, Ordering::SeqCst);
                    }
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        });
        Watch {
            stop,
            min_healthy,
            max_desired,
            task,
        }
    }

    async fn finish(self) -> (u32, u32) {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.expect("watcher");
        (
            self.min_healthy.load(Ordering::SeqCst),
            self.max_desired.load(Ordering::SeqCst),
        )
    }
}

async fn raw_group(moto: &Moto, group: &str) -> aws_sdk_autoscaling::types::AutoScalingGroup {
    moto.asg
        .describe_auto_scaling_groups()
        .auto_scaling_group_names(group)
        .send()
        .await
        .expect("asg")
        .auto_scaling_groups()[0]
        .clone()
}

async fn template_version(moto: &Moto, lt: &str, version: &str) -> aws_sdk_ec2::types::LaunchTemplateVersion {
    moto.ec2
        .describe_launch_template_versions()
        .launch_template_id(lt)
        .versions(version)
        .send()
        .await
        .expect("versions")
        .launch_template_versions()[0]
        .clone()
}

/// The seed's own setup: a launch-configuration group behind an ALB,
/// `latestAmi` with a description, a Windows builder, every rollout setting
/// left at its default. It must end `succeeded` with every instance on the
/// new image, the description kept and capacity never under the floor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_setup_with_every_default_succeeds() {
    let moto = Moto::new().await;
    let fleet = moto
        .fleet_with(FleetSpec {
            windows: true,
            ..FleetSpec::new(SpecKind::Configuration, 3)
        })
        .await;
    let provider = Arc::new(moto.provider());
    let pipeline = default_pipeline(&fleet, "windows", "");
    let store = Arc::new(Store::open_in_memory().expect("store"));
    let watch = Watch::start(&moto, &fleet.group, &fleet.target_groups);
    let out = engine_on(provider.clone(), store.clone())
        .start("web", &pipeline, RunKind::Run)
        .await
        .expect("run");
    let (min_healthy, max_desired) = watch.finish().await;
    assert_succeeded(&out);
    let new_image = out.summary.new_image.clone().expect("new image");
    let after = moto.member_images(&fleet.group).await;
    assert_eq!(after.len(), 3, "{after:?}");
    assert!(after.iter().all(|(_, i)| i == new_image.as_str()), "{after:?}");
    let p = provider.get_parameter(&fleet.parameter).await.expect("parameter");
    assert_eq!(p.value, new_image.as_str());
    assert_eq!(p.description.as_deref(), Some(DESCRIPTION), "description kept");
    // min_healthy_percent 100: never fewer than 3 serving, seen from outside.
    assert!(min_healthy >= 3, "healthy members dipped to {min_healthy}");
    assert!(max_desired <= 8, "desired {max_desired} above MaxSize");
    // The first events say which readiness timing was used, and why.
    let ev = events(&store, &out);
    let readiness = ev
        .iter()
        .find(|m| m.starts_with("readiness:"))
        .expect("readiness event");
    assert!(
        readiness.contains("from the group")
            && readiness.contains("grace period 2s")
            && readiness.contains("web-tg-0 2 × 2s"),
        "{readiness}"
    );
    let roll = out.summary.roll.as_ref().expect("roll report");
    assert!(roll.min_in_service >= roll.floor, "{roll:?}");
}

/// A Linux group with a MixedInstancesPolicy (on-demand base + spot over
/// two types), two target groups, naming `$Latest`: publishing changes the
/// image and nothing else, rolling back restores what was there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mixed_instances_group_on_latest_keeps_its_policy() {
    let moto = Moto::new().await;
    let fleet = moto
        .fleet_with(FleetSpec {
            version: "$Latest".into(),
            target_groups: 2,
            ..FleetSpec::new(SpecKind::Mixed, 3)
        })
        .await;
    let lt = fleet.launch_template.clone().expect("lt");
    let provider = Arc::new(moto.provider());
    let pipeline = default_pipeline(&fleet, "linux", "");
    let before = raw_group(&moto, &fleet.group).await;
    let v1 = template_version(&moto, &lt, "1").await;

    let out = engine(provider.clone())
        .start("web", &pipeline, RunKind::Run)
        .await
        .expect("run");
    assert_succeeded(&out);
    let new_image = out.summary.new_image.clone().expect("new image");
    let after = raw_group(&moto, &fleet.group).await;
    assert!(after.launch_template().is_none(), "still a mixed instances group");
    let (mb, ma) = (
        before.mixed_instances_policy().expect("policy before"),
        after.mixed_instances_policy().expect("policy kept"),
    );
    assert_eq!(
        ma.instances_distribution(),
        mb.instances_distribution(),
        "distribution untouched"
    );
    let types = |m: &aws_sdk_autoscaling::types::MixedInstancesPolicy| -> Vec<String> {
        m.launch_template()
            .map(|l| {
                l.overrides()
                    .iter()
                    .filter_map(|o| o.instance_type().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    assert_eq!(
        types(ma),
        vec!["t3.micro".to_string(), "t3a.micro".to_string()],
        "overrides untouched"
    );
    let spec = ma
        .launch_template()
        .and_then(|l| l.launch_template_specification())
        .expect("spec");
    assert_eq!(
        spec.version(),
        Some("$Latest"),
        "still names $Latest: no drift for infrastructure as code"
    );
    let v2 = template_version(&moto, &lt, "$Latest").await;
    assert_eq!(v2.version_number(), Some(2));
    let (d1, d2) = (
        v1.launch_template_data().expect("v1"),
        v2.launch_template_data().expect("v2"),
    );
    assert_eq!(d2.image_id(), Some(new_image.as_str()));
    assert_eq!(d2.key_name(), d1.key_name());
    assert_eq!(d2.user_data(), Some(USER_DATA));
    assert_eq!(d2.instance_type(), d1.instance_type());
    assert_eq!(d2.security_group_ids(), d1.security_group_ids());
    assert_eq!(d2.metadata_options(), d1.metadata_options());
    assert_eq!(d2.tag_specifications(), d1.tag_specifications());
    let members = moto.member_images(&fleet.group).await;
    assert!(members.iter().all(|(_, i)| i == new_image.as_str()), "{members:?}");
    for tg in &fleet.target_groups {
        let h = moto
            .elb
            .describe_target_health()
            .target_group_arn(tg)
            .send()
            .await
            .expect("health");
        let healthy: Vec<&str> = h
            .target_health_descriptions()
            .iter()
            .filter(|d| d.target_health().and_then(|t| t.state()).map(|s| s.as_str()) == Some("healthy"))
            .filter_map(|d| d.target().and_then(|t| t.id()))
            .collect();
        assert_eq!(healthy.len(), 3, "{tg}: {healthy:?}");
        assert!(
            members.iter().all(|(id, _)| healthy.contains(&id.as_str())),
            "{tg}: {healthy:?} vs {members:?}"
        );
    }

    // Rollback: what the group launches is exactly what it launched before.
    let back = engine(provider.clone())
        .start("web", &pipeline, RunKind::Rollback)
        .await
        .expect("rollback");
    assert_succeeded(&back);
    let after = raw_group(&moto, &fleet.group).await;
    let ma = after.mixed_instances_policy().expect("policy kept");
    assert_eq!(ma.instances_distribution(), mb.instances_distribution());
    let spec = ma
        .launch_template()
        .and_then(|l| l.launch_template_specification())
        .expect("spec");
    assert_eq!(spec.version(), Some("$Latest"));
    let latest = template_version(&moto, &lt, "$Latest").await;
    let dl = latest.launch_template_data().expect("latest");
    assert_eq!(dl.image_id(), Some(fleet.golden.as_str()));
    assert_eq!(dl.user_data(), d1.user_data());
    assert_eq!(dl.metadata_options(), d1.metadata_options());
    let members = moto.member_images(&fleet.group).await;
    assert!(members.iter().all(|(_, i)| i == &fleet.golden), "{members:?}");
}

/// A group already at MaxSize: the surge is never asked of it. With the
/// default 100 % floor there is no room, and the run says so before
/// anything is created; with room to terminate first, it rolls within the
/// limit — never a ValidationError mid-roll.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_at_max_size_is_never_asked_for_more() {
    let moto = Moto::new().await;
    let fleet = moto
        .fleet_with(FleetSpec {
            max: 3,
            ..FleetSpec::new(SpecKind::Template, 3)
        })
        .await;
    let provider = Arc::new(moto.provider());
    let refused = engine(provider.clone())
        .start("web", &default_pipeline(&fleet, "linux", ""), RunKind::Run)
        .await
        .expect("run");
    assert_eq!(refused.state, "failed");
    let err = refused.summary.error.clone().unwrap_or_default();
    assert!(err.contains("MaxSize 3") && err.contains("at least 4"), "{err}");
    let mut builders = Tags::new();
    builders.insert(tag::ROLE.into(), tag::ROLE_BUILDER.into());
    assert!(
        provider.list_instances(&builders).await.expect("list").is_empty(),
        "refused before anything was created"
    );

    let pipeline = default_pipeline(&fleet, "linux", "[pipelines.web.rollout]\nmin_healthy_percent = 66\n");
    let watch = Watch::start(&moto, &fleet.group, &fleet.target_groups);
    let out = engine(provider.clone())
        .start("web", &pipeline, RunKind::Run)
        .await
        .expect("run");
    let (min_healthy, max_desired) = watch.finish().await;
    assert_succeeded(&out);
    assert!(max_desired <= 3, "desired {max_desired} above MaxSize 3");
    assert!(min_healthy >= 2, "healthy dipped to {min_healthy} (floor 2)");
    let new_image = out.summary.new_image.clone().expect("new image");
    let after = moto.member_images(&fleet.group).await;
    assert!(
        after.len() == 3 && after.iter().all(|(_, i)| i == new_image.as_str()),
        "{after:?}"
    );
}

/// A launch hook holds new instances in Pending:Wait for its heartbeat:
/// the derived health_grace covers it, held instances are not in service,
/// and the run succeeds with defaults untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_launch_hook_holding_instances_is_waited_for() {
    let moto = Moto::new().await;
    let fleet = moto
        .fleet_with(FleetSpec {
            launch_hook: Some((5, "CONTINUE")),
            ..FleetSpec::new(SpecKind::Template, 2)
        })
        .await;
    let provider = Arc::new(moto.provider());
    let pipeline = default_pipeline(&fleet, "linux", "");
    let store = Arc::new(Store::open_in_memory().expect("store"));
    let watch = Watch::start(&moto, &fleet.group, &fleet.target_groups);
    let out = engine_on(provider.clone(), store.clone())
        .start("web", &pipeline, RunKind::Run)
        .await
        .expect("run");
    let (min_healthy, _) = watch.finish().await;
    assert_succeeded(&out);
    assert!(min_healthy >= 2, "healthy dipped to {min_healthy}");
    let ev = events(&store, &out);
    let readiness = ev
        .iter()
        .find(|m| m.starts_with("readiness:"))
        .expect("readiness event");
    assert!(readiness.contains("launch hook bootstrap heartbeat 5s"), "{readiness}");
    let roll = out.summary.roll.as_ref().expect("roll");
    // launch → healthy took at least the hook's hold plus the health checks.
    assert!(roll.launch_ready_ms_median >= 5_000, "{roll:?}");
}

/// A group behind a Classic Load Balancer (`LoadBalancerNames`, no target
/// groups, connection draining on): each old instance is deregistered from
/// the balancer and terminated only once its drain is over, new instances
/// count once the balancer has them InService, and the balancer never has
/// fewer in service than the floor. (Before: with no target groups the roll
/// took the group's own Healthy for "in service" and "drained" at once.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_classic_load_balancer_group_drains_before_terminating() {
    let moto = Moto::new().await;
    let fleet = moto
        .fleet_with(FleetSpec {
            classic_elb: true,
            ..FleetSpec::new(SpecKind::Template, 2)
        })
        .await;
    let provider = Arc::new(moto.provider());
    let pipeline = default_pipeline(&fleet, "linux", "");
    let store = Arc::new(Store::open_in_memory().expect("store"));
    let watch = Watch::fleet(&moto, &fleet);
    let out = engine_on(provider.clone(), store.clone())
        .start("web", &pipeline, RunKind::Run)
        .await
        .expect("run");
    let (min_in_service, _) = watch.finish().await;
    assert_succeeded(&out);
    let report = moto.harness_report().await;
    assert_eq!(
        report["early_terminations"],
        serde_json::json!([]),
        "instances terminated while the Classic Load Balancer still routed to or drained them"
    );
    assert!(
        min_in_service >= 2,
        "in service at the balancer dipped to {min_in_service}"
    );
    let calls = provider.api_calls();
    assert!(
        calls.get("DeregisterInstancesFromLoadBalancer").copied().unwrap_or(0) >= 2,
        "{calls:?}"
    );
    let roll = out.summary.roll.as_ref().expect("roll");
    assert!(
        roll.drain_ms_median >= (common::DEREGISTRATION_DELAY as i64 * 1000) - 500,
        "drains did not wait for connection draining: {roll:?}"
    );
    let ev = events(&store, &out);
    let readiness = ev
        .iter()
        .find(|m| m.starts_with("readiness:"))
        .expect("readiness event");
    assert!(readiness.contains("classic:web-clb"), "{readiness}");
    let images = moto.member_images(&fleet.group).await;
    assert_eq!(images.len(), 2, "{images:?}");
    assert!(images.iter().all(|(_, img)| img != &fleet.golden), "{images:?}");
}

/// The group's suspended processes, sorted.
fn process_names(g: &aws_sdk_autoscaling::types::AutoScalingGroup) -> Vec<String> {
    let mut v: Vec<String> = g
        .suspended_processes()
        .iter()
        .filter_map(|p| p.process_name().map(str::to_string))
        .collect();
    v.sort();
    v
}

async fn suspended(moto: &Moto, group: &str) -> Vec<String> {
    process_names(&raw_group(moto, group).await)
}

/// A group with a process a roll needs suspended (`Launch`) is refused
/// before anything is created, naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_with_launch_suspended_is_refused_before_anything_is_made() {
    let moto = Moto::new().await;
    let fleet = moto.fleet(SpecKind::Template, 2).await;
    moto.asg
        .suspend_processes()
        .auto_scaling_group_name(&fleet.group)
        .scaling_processes("Launch")
        .scaling_processes("AZRebalance")
        .send()
        .await
        .expect("suspend");
    let provider = Arc::new(moto.provider());
    let pipeline = default_pipeline(&fleet, "linux", "");
    let store = Arc::new(Store::open_in_memory().expect("store"));
    let out = engine_on(provider.clone(), store.clone())
        .start("web", &pipeline, RunKind::Run)
        .await
        .expect("run");
    let err = out.summary.error.clone().unwrap_or_default();
    assert!(err.contains("suspended process(es) Launch"), "{out:?}");
    assert!(!err.contains("AZRebalance"), "{err}");
    let mut builders = Tags::new();
    builders.insert(tag::RUN.into(), out.run.to_string());
    assert!(provider.list_instances(&builders).await.expect("list").is_empty());
    let calls = provider.api_calls();
    assert!(
        !calls.contains_key("RunInstances") && !calls.contains_key("SuspendProcesses"),
        "{calls:?}"
    );
    assert_eq!(suspended(&moto, &fleet.group).await, ["AZRebalance", "Launch"]);
}

/// During the roll AZRebalance, AlarmNotification and ScheduledActions are
/// suspended; afterwards exactly the operator's own suspension is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_roll_suspends_what_could_disturb_it_and_restores_exactly_the_previous_set() {
    let moto = Moto::new().await;
    let fleet = moto.fleet(SpecKind::Template, 2).await;
    moto.asg
        .suspend_processes()
        .auto_scaling_group_name(&fleet.group)
        .scaling_processes("AlarmNotification")
        .send()
        .await
        .expect("suspend");
    let provider = Arc::new(moto.provider());
    let pipeline = default_pipeline(&fleet, "linux", "");
    let store = Arc::new(Store::open_in_memory().expect("store"));
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(std::sync::Mutex::new(std::collections::BTreeSet::<Vec<String>>::new()));
    let watcher = {
        let (asg, group, stop, seen) = (moto.asg.clone(), fleet.group.clone(), stop.clone(), seen.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                if let Ok(g) = asg
                    .describe_auto_scaling_groups()
                    .auto_scaling_group_names(&group)
                    .send()
                    .await
                {
                    seen.lock()
                        .expect("seen")
                        .insert(process_names(&g.auto_scaling_groups()[0]));
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        })
    };
    let out = engine_on(provider.clone(), store.clone())
        .start("web", &pipeline, RunKind::Run)
        .await
        .expect("run");
    stop.store(true, Ordering::SeqCst);
    watcher.await.expect("watcher");
    assert_succeeded(&out);
    let seen = seen.lock().expect("seen").clone();
    let during: Vec<String> = ["AZRebalance", "AlarmNotification", "ScheduledActions"]
        .iter()
        .map(|s| s.to_string())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    assert!(seen.contains(&during), "never saw the roll's suspensions: {seen:?}");
    assert_eq!(suspended(&moto, &fleet.group).await, ["AlarmNotification"]);
    let ev = events(&store, &out);
    assert!(
        ev.iter()
            .any(|m| m == "suspending AZRebalance, ScheduledActions for the roll"),
        "{ev:?}"
    );
    assert!(
        ev.iter()
            .any(|m| m.starts_with("resumed AZRebalance, ScheduledActions")),
        "{ev:?}"
    );
}

async fn failed_image_is_rolled_back(spec: FleetSpec) {
    let moto = Moto::new().await;
    let fleet = moto.fleet_with(spec).await;
    // The application model: images baked from this one break the app.
    moto.bakes_broken(&fleet.golden).await;
    let provider = Arc::new(moto.provider());
    let before = raw_group(&moto, &fleet.group).await;
    let pipeline = default_pipeline(&fleet, "linux", "[pipelines.web.test]\nenabled = false\n");
    let out = engine(provider.clone())
        .start("web", &pipeline, RunKind::Run)
        .await
        .expect("run");
    assert_eq!(out.state, "rolled_back", "{:?}", out.summary.error);
    let bad = out.summary.new_image.clone().expect("new image");
    let img = provider.describe_image(&bad).await.expect("image");
    assert_eq!(img.tags.get(tag::STATUS).map(String::as_str), Some(tag::STATUS_BAD));
    let after = raw_group(&moto, &fleet.group).await;
    assert_eq!(
        after.launch_template(),
        before.launch_template(),
        "launch template reference restored"
    );
    assert_eq!(
        after.launch_configuration_name(),
        before.launch_configuration_name(),
        "launch configuration restored"
    );
    match (after.mixed_instances_policy(), before.mixed_instances_policy()) {
        (Some(a), Some(b)) => {
            assert_eq!(a.instances_distribution(), b.instances_distribution());
            assert_eq!(
                a.launch_template()
                    .and_then(|l| l.launch_template_specification())
                    .and_then(|s| s.version()),
                b.launch_template()
                    .and_then(|l| l.launch_template_specification())
                    .and_then(|s| s.version())
            );
        }
        (None, None) => {}
        other => panic!("mixed instances policy changed: {other:?}"),
    }
    let g = provider.describe_group(&fleet.group).await.expect("group");
    let spec = provider.describe_launch_spec(&g.launch_spec).await.expect("spec");
    assert_eq!(
        spec.image.as_str(),
        fleet.golden,
        "the group launches the golden image again"
    );
    let members = moto.member_images(&fleet.group).await;
    assert!(members.iter().all(|(_, i)| i == &fleet.golden), "{members:?}");
    let p = provider.get_parameter(&fleet.parameter).await.expect("parameter");
    assert_eq!(p.value, fleet.golden);
    assert_eq!(p.description.as_deref(), Some(DESCRIPTION));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_image_on_a_numbered_version_is_rolled_back_exactly() {
    failed_image_is_rolled_back(FleetSpec::new(SpecKind::Template, 2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_image_on_a_mixed_group_on_default_is_rolled_back_exactly() {
    failed_image_is_rolled_back(FleetSpec {
        version: "$Default".into(),
        ..FleetSpec::new(SpecKind::Mixed, 2)
    })
    .await;
}

/// The image test boots the application from the group's launch template
/// (user data, profile, security groups) in one of its subnets and asks it
/// for its health path: a broken application is caught before publish.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_image_test_boots_the_application_and_catches_a_broken_one() {
    let moto = Moto::new().await;
    let fleet = moto.fleet(SpecKind::Template, 2).await;
    moto.bakes_broken(&fleet.golden).await;
    let provider = Arc::new(moto.provider());
    let pipeline = default_pipeline(&fleet, "linux", "[pipelines.web.test]\ntimeout = \"20s\"\n");
    let out = engine(provider.clone())
        .start("web", &pipeline, RunKind::Run)
        .await
        .expect("run");
    assert_eq!(out.state, "failed");
    let err = out.summary.error.clone().unwrap_or_default();
    assert!(err.contains("test image") && err.contains("answered 503"), "{err}");
    // Nothing published.
    let p = provider.get_parameter(&fleet.parameter).await.expect("parameter");
    assert_eq!(p.value, fleet.golden);
    let lt = fleet.launch_template.clone().expect("lt");
    let versions = moto
        .ec2
        .describe_launch_template_versions()
        .launch_template_id(&lt)
        .send()
        .await
        .expect("versions");
    assert_eq!(versions.launch_template_versions().len(), 1, "no version published");
    // The test instance was one of the group's kind, in one of its subnets.
    let mut tests = Tags::new();
    tests.insert(tag::ROLE.into(), tag::ROLE_TEST.into());
    let test = provider.list_instances(&tests).await.expect("tests");
    assert_eq!(test.len(), 1, "{test:?}");
    assert!(test[0].state.is_gone());
    let raw = moto
        .ec2
        .describe_instances()
        .instance_ids(test[0].id.as_str())
        .send()
        .await
        .expect("instance");
    let i = &raw.reservations()[0].instances()[0];
    assert!(
        fleet.subnets.iter().any(|s| Some(s.as_str()) == i.subnet_id()),
        "{:?}",
        i.subnet_id()
    );
    assert_eq!(i.key_name(), Some("web-key"), "launched from the group's template");
    assert!(
        i.tags()
            .iter()
            .any(|t| t.key() == Some("app") && t.value() == Some("web")),
        "the template's tags: {:?}",
        i.tags()
    );
    let commands = moto.ssm.list_commands().send().await.expect("commands");
    assert!(
        commands.commands().iter().any(|c| c
            .parameters()
            .and_then(|p| p.get("commands"))
            .is_some_and(|c| c.iter().any(|l| l.contains("repave-health-probe")))),
        "the health probe ran through SSM"
    );
}

/// `strategy = "native"`: Instance Refresh is started with the new numbered
/// version as its desired configuration, the group not moved first, and AWS
/// moves it on success.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_native_strategy_starts_an_instance_refresh() {
    let moto = Moto::new().await;
    let fleet = moto.fleet(SpecKind::Template, 2).await;
    let provider = Arc::new(moto.provider());
    let pipeline = default_pipeline(&fleet, "linux", "[pipelines.web.rollout]\nstrategy = \"native\"\n");
    let out = engine(provider.clone())
        .start("web", &pipeline, RunKind::Run)
        .await
        .expect("run");
    assert_succeeded(&out);
    let new_image = out.summary.new_image.clone().expect("new image");
    let refreshes = moto
        .asg
        .describe_instance_refreshes()
        .auto_scaling_group_name(&fleet.group)
        .send()
        .await
        .expect("refreshes");
    let r = &refreshes.instance_refreshes()[0];
    assert_eq!(r.status().map(|s| s.as_str()), Some("Successful"));
    let desired = r
        .desired_configuration()
        .and_then(|d| d.launch_template())
        .and_then(|t| t.version())
        .expect("desired configuration");
    assert_eq!(desired, "2");
    assert_eq!(
        r.preferences().and_then(|p| p.auto_rollback()),
        Some(true),
        "numbered: allowed"
    );
    assert_eq!(
        r.preferences().and_then(|p| p.instance_warmup()),
        None,
        "warmup not configured"
    );
    let after = raw_group(&moto, &fleet.group).await;
    assert_eq!(after.launch_template().and_then(|t| t.version()), Some("2"));
    let members = moto.member_images(&fleet.group).await;
    assert!(members.iter().all(|(_, i)| i == new_image.as_str()), "{members:?}");
}

/// An account that can no longer create launch configurations: the run
/// fails at publish saying so and how to move to a launch template, with
/// nothing published and the image not blamed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_without_launch_configurations_is_told_how_to_move() {
    let moto = Moto::new().await;
    let fleet = moto.fleet(SpecKind::Configuration, 2).await;
    harness_account(
        &moto.account,
        serde_json::json!({ "refuse_launch_configurations": true }),
    )
    .await;
    let provider = Arc::new(moto.provider());
    let out = engine(provider.clone())
        .start("web", &default_pipeline(&fleet, "linux", ""), RunKind::Run)
        .await
        .expect("run");
    assert_eq!(out.state, "failed");
    let err = out.summary.error.clone().unwrap_or_default();
    assert!(
        err.contains("can no longer create launch configurations") && err.contains("launch template"),
        "{err}"
    );
    let p = provider.get_parameter(&fleet.parameter).await.expect("parameter");
    assert_eq!(p.value, fleet.golden, "nothing published");
    assert_eq!(
        raw_group(&moto, &fleet.group).await.launch_configuration_name(),
        Some("web-lc")
    );
    let img = provider
        .describe_image(out.summary.new_image.as_ref().expect("baked"))
        .await
        .expect("image");
    assert_eq!(img.tags.get(tag::STATUS), None, "not the image's fault");
}

/// The provider contract every provider passes, on the harness.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_aws_provider_passes_the_conformance_suite() {
    let moto = Moto::new().await;
    let fleet = moto.fleet(SpecKind::Template, 2).await;
    let provider = moto.provider();
    let fx = repave_sim::conformance::Fixture {
        group: fleet.group.clone(),
        image: repave_core::ImageId::new(&fleet.golden),
        scratch_parameter: "/repave/conformance/scratch".into(),
        timeout: Duration::from_secs(60),
        poll: Duration::from_millis(250),
    };
    if let Err(v) = repave_sim::conformance::run(&provider, &fx).await {
        panic!("the AWS provider breaks the provider contract on the harness: {v}");
    }
}

/// Scales the group out the moment `verify` starts (an autoscaler reacting
/// to load): verify waits for the new member to become healthy.
struct ScaleOutAtVerify {
    asg: aws_sdk_autoscaling::Client,
    group: String,
    to: i32,
    done: AtomicBool,
}

impl repave_engine::Observer for ScaleOutAtVerify {
    fn on_event(&self, event: &repave_engine::EngineEvent) {
        if let repave_engine::EngineEvent::StepStarted { step, .. } = event {
            if step == "verify" && !self.done.swap(true, Ordering::SeqCst) {
                let (asg, group, to) = (self.asg.clone(), self.group.clone(), self.to);
                tokio::spawn(async move {
                    asg.set_desired_capacity()
                        .auto_scaling_group_name(group)
                        .desired_capacity(to)
                        .send()
                        .await
                        .expect("scale out");
                });
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scale_out_during_verify_is_not_a_failure() {
    let moto = Moto::new().await;
    let fleet = moto.fleet(SpecKind::Template, 2).await;
    let provider = Arc::new(moto.provider());
    let observer = Arc::new(ScaleOutAtVerify {
        asg: moto.asg.clone(),
        group: fleet.group.clone(),
        to: 3,
        done: AtomicBool::new(false),
    });
    let opts = repave_engine::EngineOptions {
        tick: Duration::from_millis(250),
        poll: Duration::from_millis(200),
        roll_cutoff: None,
        lease_ttl: Duration::from_secs(60),
    };
    let engine = repave_engine::Engine::new(
        provider.clone(),
        Arc::new(Store::open_in_memory().expect("store")),
        Arc::new(repave_core::ids::SystemClock),
        observer.clone(),
        tokio_util::sync::CancellationToken::new(),
        opts,
    );
    let out = engine
        .start("web", &default_pipeline(&fleet, "linux", ""), RunKind::Run)
        .await
        .expect("run");
    assert_succeeded(&out);
    assert!(
        observer.done.load(Ordering::SeqCst),
        "the group was scaled out during verify"
    );
    let new_image = out.summary.new_image.clone().expect("new image");
    let after = moto.member_images(&fleet.group).await;
    assert_eq!(after.len(), 3, "{after:?}");
    assert!(after.iter().all(|(_, i)| i == new_image.as_str()), "{after:?}");
}

/// The builder instances of a run, terminated ones included.
async fn builders_of(moto: &Moto, run: &str) -> Vec<aws_sdk_ec2::types::Instance> {
    let out = moto
        .ec2
        .describe_instances()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("tag:repave:run")
                .values(run)
                .build(),
        )
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("tag:repave:role")
                .values(tag::ROLE_BUILDER)
                .build(),
        )
        .send()
        .await
        .expect("describe builders");
    out.reservations().iter().flat_map(|r| r.instances().to_vec()).collect()
}

/// With no subnet, security groups or type in the config the builder
/// launches where the group does — the group's subnet, its launch
/// template's security groups, type and instance profile — never in the
/// default VPC on EC2's default type.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_builder_with_nothing_set_launches_where_the_group_does() {
    let moto = Moto::new().await;
    let fleet = moto.fleet(SpecKind::Template, 1).await;
    let provider = Arc::new(moto.provider());
    let mut pipeline = default_pipeline(&fleet, "linux", "");
    pipeline.builder.subnet = None;
    pipeline.builder.security_groups.clear();
    pipeline.builder.instance_type = None;
    pipeline.builder.instance_profile = None;
    // EC2 drops a terminated instance's profile association: watch it live.
    let seen = Arc::new(std::sync::Mutex::new(None::<String>));
    let (ec2, seen_w, stop) = (moto.ec2.clone(), seen.clone(), Arc::new(AtomicBool::new(false)));
    let stop_w = stop.clone();
    let watcher = tokio::spawn(async move {
        while !stop_w.load(Ordering::SeqCst) {
            let assoc = ec2.describe_iam_instance_profile_associations().send().await;
            if let Some(arn) = assoc.ok().and_then(|a| {
                a.iam_instance_profile_associations()
                    .iter()
                    .find_map(|x| x.iam_instance_profile().and_then(|p| p.arn()).map(str::to_string))
            }) {
                *seen_w.lock().unwrap() = Some(arn);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let store = Arc::new(Store::open_in_memory().expect("store"));
    let out = engine_on(provider.clone(), store.clone())
        .start("web", &pipeline, RunKind::Bake)
        .await
        .expect("bake");
    stop.store(true, Ordering::SeqCst);
    watcher.await.expect("watcher");
    assert_succeeded(&out);
    let builders = builders_of(&moto, out.run.as_str()).await;
    assert_eq!(builders.len(), 1, "{builders:?}");
    let b = &builders[0];
    assert_eq!(b.vpc_id(), Some(fleet.vpc.as_str()), "in the group's VPC: {b:?}");
    assert_eq!(
        b.subnet_id(),
        Some(fleet.subnets[0].as_str()),
        "the group's first subnet"
    );
    let groups: Vec<&str> = b.security_groups().iter().filter_map(|g| g.group_id()).collect();
    assert_eq!(
        groups,
        [fleet.security_group.as_str()],
        "the template's security groups"
    );
    assert_eq!(
        b.instance_type().map(|t| t.as_str()),
        Some("t3.micro"),
        "the template's type"
    );
    let profile = seen
        .lock()
        .unwrap()
        .clone()
        .expect("a live builder with an instance profile");
    assert!(
        profile.ends_with(&format!("/{}", common::INSTANCE_PROFILE)),
        "the template's profile: {profile:?}"
    );
    let ev = events(&store, &out);
    let said = ev.iter().find(|m| m.starts_with("builder:")).expect("builder event");
    assert!(
        said.contains(&format!("subnet {} (the group's first subnet)", fleet.subnets[0]))
            && said.contains("instance type t3.micro (the group's launch spec)"),
        "{said}"
    );
}

/// A builder without an instance profile can never reach SSM: `plan`
/// names the missing setting, and `run` refuses before anything is made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_builder_without_an_instance_profile_is_refused_by_plan_and_run() {
    let moto = Moto::new().await;
    let fleet = moto
        .fleet_with(FleetSpec {
            instance_profile: false,
            ..FleetSpec::new(SpecKind::Template, 1)
        })
        .await;
    let provider = Arc::new(moto.provider());
    let pipeline = default_pipeline(&fleet, "linux", "");
    let said = "[pipelines.web.builder] instance_profile is not set";
    let plan = provider.preflight("web", &pipeline).await.expect("preflight");
    assert!(plan.problems.iter().any(|p| p.starts_with(said)), "{plan:#?}");
    let store = Arc::new(Store::open_in_memory().expect("store"));
    let out = engine_on(provider.clone(), store.clone())
        .start("web", &pipeline, RunKind::Run)
        .await
        .expect("run");
    let err = out.summary.error.clone().unwrap_or_default();
    assert!(err.contains(said), "{out:?}");
    assert!(builders_of(&moto, out.run.as_str()).await.is_empty());
    let calls = provider.api_calls();
    assert!(!calls.contains_key("RunInstances"), "{calls:?}");
}

/// A builder profile created a moment before the run (by the operator's
/// Terraform, say) is not known to EC2 yet: RunInstances answers `Invalid
/// IAM Instance Profile` and is asked again until IAM has propagated it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_builder_profile_created_a_moment_ago_is_retried_until_ec2_knows_it() {
    let moto = Moto::new().await;
    let fleet = moto.fleet(SpecKind::Template, 1).await;
    harness_account(&moto.account, serde_json::json!({ "profile_propagation_seconds": 5 })).await;
    let profile = moto.instance_profile("builder-new").await;
    let provider = Arc::new(moto.provider());
    let mut pipeline = default_pipeline(&fleet, "linux", "");
    pipeline.builder.instance_profile = Some(profile);
    let store = Arc::new(Store::open_in_memory().expect("store"));
    let out = engine_on(provider.clone(), store.clone())
        .start("web", &pipeline, RunKind::Bake)
        .await
        .expect("bake");
    assert_succeeded(&out);
    let refused = moto.harness_report().await["profile_refusals"].as_u64().unwrap_or(0);
    assert!(refused >= 1, "EC2 refused the new profile at first: {refused}");
    assert_eq!(
        builders_of(&moto, out.run.as_str()).await.len(),
        1,
        "one builder, not one per attempt"
    );
}

/// A fleet of two, one member protected from scale in, rolled with
/// `strategy` and `protected`: the run's outcome, the protected member,
/// and every member's image afterwards.
async fn roll_with_a_protected_member(
    strategy: &str,
    protected: &str,
) -> (repave_engine::RunOutcome, String, Vec<(String, String)>) {
    let moto = Moto::new().await;
    let fleet = moto.fleet(SpecKind::Template, 2).await;
    let members = moto.member_images(&fleet.group).await;
    let held = members[0].0.clone();
    moto.asg
        .set_instance_protection()
        .auto_scaling_group_name(&fleet.group)
        .instance_ids(&held)
        .protected_from_scale_in(true)
        .send()
        .await
        .expect("protect");
    let provider = Arc::new(moto.provider());
    let pipeline = default_pipeline(
        &fleet,
        "linux",
        &format!("[pipelines.web.rollout]\nstrategy = \"{strategy}\"\nprotected = \"{protected}\"\n"),
    );
    let out = engine(provider.clone())
        .start("web", &pipeline, RunKind::Run)
        .await
        .expect("run");
    let after = moto.member_images(&fleet.group).await;
    (out, held, after)
}

/// `protected = "replace"` replaces protected members too, with repave's
/// roll and with Instance Refresh (`ScaleInProtectedInstances=Refresh`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protected_replace_replaces_protected_members_too() {
    for strategy in ["rolling", "native"] {
        let (out, held, after) = roll_with_a_protected_member(strategy, "replace").await;
        assert_succeeded(&out);
        let new_image = out.summary.new_image.clone().expect("new image");
        assert!(
            !after.iter().any(|(id, _)| *id == held),
            "{strategy}: {held} replaced: {after:?}"
        );
        assert!(
            after.iter().all(|(_, i)| i == new_image.as_str()),
            "{strategy}: {after:?}"
        );
        let roll = out.summary.roll.as_ref().expect("roll report");
        assert!(roll.left_on_old_image.is_empty(), "{strategy}: {roll:?}");
    }
}

/// With `skip` the protected member stays on the old image, and the
/// verified run says so instead of passing over it in silence — with
/// repave's roll and with Instance Refresh (which ignores protected
/// instances by default).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protected_skip_reports_the_members_left_on_the_old_image() {
    for strategy in ["rolling", "native"] {
        let (out, held, after) = roll_with_a_protected_member(strategy, "skip").await;
        assert_succeeded(&out);
        let old = out.summary.source_image.clone().expect("source image");
        assert!(
            after.contains(&(held.clone(), old.to_string())),
            "{strategy}: {after:?}"
        );
        let roll = out.summary.roll.as_ref().expect("roll report");
        assert_eq!(
            roll.left_on_old_image,
            [format!("{held} on {old} (protected)")],
            "{strategy}"
        );
    }
}

/// A group with a warm pool of old-image instances, rolled with `strategy`:
/// no surge draws an old-image instance out of the pool and passes it off
/// as a replacement, and afterwards the pool holds only new-image
/// instances (repave's roll terminates the old ones before it surges;
/// Instance Refresh replaces the pool after the group's members). `plan`
/// reports the pool first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_pool_is_refreshed_onto_the_new_image_not_drawn_from() {
    for strategy in ["rolling", "native"] {
        let moto = Moto::new().await;
        let fleet = moto
            .fleet_with(FleetSpec {
                warm_pool: Some(2),
                ..FleetSpec::new(SpecKind::Template, 2)
            })
            .await;
        let provider = Arc::new(moto.provider());
        let pipeline = default_pipeline(
            &fleet,
            "linux",
            &format!("[pipelines.web.rollout]\nstrategy = \"{strategy}\"\n"),
        );
        let plan = provider.preflight("web", &pipeline).await.expect("plan");
        assert_eq!(plan.warm_pool.len(), 2, "{strategy}: {plan:?}");
        assert!(
            plan.notes.iter().any(|n| n.starts_with("warm pool of 2 instance(s)")),
            "{strategy}: {:?}",
            plan.notes
        );
        let out = engine(provider.clone())
            .start("web", &pipeline, RunKind::Run)
            .await
            .expect("run");
        assert_succeeded(&out);
        let old = out.summary.source_image.clone().expect("source image");
        let new = out.summary.new_image.clone().expect("new image");
        let drawn_old: Vec<serde_json::Value> = moto.harness_report().await["warm_pool_draws"]
            .as_array()
            .cloned()
            .expect("the harness reports warm_pool_draws")
            .into_iter()
            .filter(|d| d["image"] == old.as_str())
            .collect();
        assert!(
            drawn_old.is_empty(),
            "{strategy}: old-image instances drawn from the warm pool during the roll: {drawn_old:?}"
        );
        let members = moto.member_images(&fleet.group).await;
        assert!(
            members.iter().all(|(_, i)| i == new.as_str()),
            "{strategy}: {members:?}"
        );
        let pool = moto.warm_pool(&fleet.group).await;
        let serving: Vec<_> = pool.iter().filter(|(_, s, _)| s != "Warmed:Terminating").collect();
        assert!(!serving.is_empty(), "{strategy}: the pool refilled: {pool:?}");
        assert!(
            serving.iter().all(|(_, _, i)| i == new.as_str()),
            "{strategy}: warm pool after the roll: {pool:?}"
        );
        let roll = out.summary.roll.as_ref().expect("roll report");
        if strategy == "rolling" {
            assert_eq!(roll.warm_pool_replaced.len(), 2, "{roll:?}");
        }
    }
}

/// A termination lifecycle hook holds each terminated member in
/// Terminating:Wait for its heartbeat: the roll is not reported done (and
/// the run does not go on) while old instances still run their hooks, and
/// the run says what it waited for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_termination_hook_is_waited_for_within_its_heartbeat() {
    let moto = Moto::new().await;
    let fleet = moto
        .fleet_with(FleetSpec {
            termination_hook: Some((8, "CONTINUE")),
            ..FleetSpec::new(SpecKind::Template, 2)
        })
        .await;
    let provider = Arc::new(moto.provider());
    let pipeline = default_pipeline(&fleet, "linux", "");
    let store = Arc::new(Store::open_in_memory().expect("store"));
    let out = engine_on(provider.clone(), store.clone())
        .start("web", &pipeline, RunKind::Run)
        .await
        .expect("run");
    assert_succeeded(&out);
    let g = raw_group(&moto, &fleet.group).await;
    let leaving: Vec<String> = g
        .instances()
        .iter()
        .filter(|i| {
            i.lifecycle_state()
                .is_some_and(|s| s.as_str().starts_with("Terminating"))
        })
        .filter_map(|i| i.instance_id().map(str::to_string))
        .collect();
    assert!(
        leaving.is_empty(),
        "old instances still in their termination hook when the run ended: {leaving:?}"
    );
    let ev = events(&store, &out);
    assert!(
        ev.iter()
            .any(|m| m.contains("held by termination lifecycle hook(s) drain-logs (heartbeat 8s)")),
        "{ev:#?}"
    );
}

/// A launch lifecycle hook that abandons every new instance (its handler
/// never answers; the default result is ABANDON): the run does not spin
/// until its timeout, nor blame the image — it pauses, naming the hook's
/// doing, and the image stays good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_launch_hook_that_abandons_pauses_the_run_and_says_so() {
    let moto = Moto::new().await;
    let fleet = moto.fleet(SpecKind::Template, 2).await;
    // After the fleet is up: its own members were never held.
    moto.asg
        .put_lifecycle_hook()
        .auto_scaling_group_name(&fleet.group)
        .lifecycle_hook_name("bootstrap")
        .lifecycle_transition("autoscaling:EC2_INSTANCE_LAUNCHING")
        .heartbeat_timeout(2)
        .default_result("ABANDON")
        .send()
        .await
        .expect("hook");
    let provider = Arc::new(moto.provider());
    let pipeline = default_pipeline(&fleet, "linux", "[pipelines.web.rollout]\ntimeout = \"2m\"\n");
    let store = Arc::new(Store::open_in_memory().expect("store"));
    let out = engine_on(provider.clone(), store.clone())
        .start("web", &pipeline, RunKind::Run)
        .await
        .expect("run");
    assert_eq!(out.state, "paused", "{:?}", out.summary.error);
    let error = out.summary.error.clone().unwrap_or_default();
    assert!(error.contains("launch lifecycle hook abandoned"), "{error}");
    let ev = events(&store, &out);
    assert!(
        ev.iter()
            .any(|m| m.contains("abandoned by a launch lifecycle hook (bootstrap (heartbeat 2s))")),
        "{ev:#?}"
    );
    let image = out.summary.new_image.clone().expect("new image");
    let img = provider.describe_image(&image).await.expect("image");
    assert_ne!(img.tags.get(tag::STATUS).map(String::as_str), Some(tag::STATUS_BAD));
}

/// The child process of
/// [`a_run_killed_with_processes_suspended_is_restored_by_gc_and_resumes`]:
/// drives one run of the pipeline in `REPAVE_CHILD_PIPELINE` for the
/// account in `REPAVE_CHILD_ACCOUNT`, journaled in `REPAVE_CHILD_STORE`,
/// until the parent kills it. Fails at once when run on its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the child process of a_run_killed_with_processes_suspended_is_restored_by_gc_and_resumes, which runs it"]
async fn child_drives_a_run_until_killed() {
    let var = |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("{k} must be set by the parent test"));
    let moto = Moto::of_account(&var("REPAVE_CHILD_ACCOUNT"), "us-east-1").await;
    let src = std::fs::read_to_string(var("REPAVE_CHILD_PIPELINE")).expect("pipeline file");
    let cfg = repave_core::config::parse(&src, "repave.toml").expect("pipeline parses");
    let pipeline = cfg.pipelines.get("web").expect("web").clone();
    let store = Arc::new(Store::open(std::path::Path::new(&var("REPAVE_CHILD_STORE"))).expect("store"));
    let out = engine_on(Arc::new(moto.provider()), store)
        .start("web", &pipeline, RunKind::Run)
        .await;
    panic!("the parent should have killed this run before it ended: {out:?}");
}

/// `kill -9` of the process driving a roll while the roll's processes are
/// suspended (on the AWS-behaviour harness, the real SDK): the suspensions
/// outlive the process; `gc` — once no process drives the run — resumes
/// exactly those (the operator's own stays); `resume` finishes the roll and
/// restores them again; nothing is left suspended that was not before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_killed_with_processes_suspended_is_restored_by_gc_and_resumes() {
    let moto = Moto::new().await;
    let fleet = moto.fleet(SpecKind::Template, 2).await;
    moto.asg
        .suspend_processes()
        .auto_scaling_group_name(&fleet.group)
        .scaling_processes("AlarmNotification")
        .send()
        .await
        .expect("suspend");
    let dir = std::env::temp_dir().join(format!("repave-kill9-{}", moto.account));
    std::fs::create_dir_all(&dir).expect("dir");
    let store_path = dir.join("state.db");
    let pipeline_path = dir.join("repave.toml");
    let src = common::default_pipeline_src(&fleet, "linux", "[pipelines.web.test]\nenabled = false\n");
    std::fs::write(&pipeline_path, &src).expect("pipeline file");
    let mut child = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", "child_drives_a_run_until_killed", "--ignored", "--nocapture"])
        .env("REPAVE_CHILD_ACCOUNT", &moto.account)
        .env("REPAVE_CHILD_PIPELINE", &pipeline_path)
        .env("REPAVE_CHILD_STORE", &store_path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("child");
    // Until the roll has suspended its processes and launched its first
    // replacement.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(240);
    loop {
        let g = raw_group(&moto, &fleet.group).await;
        if process_names(&g).len() == 3 && g.desired_capacity() > Some(2) {
            break;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the child ended before the roll began: {status}");
        }
        assert!(tokio::time::Instant::now() < deadline, "the roll never began: {g:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    child.kill().expect("kill -9");
    child.wait().expect("reaped");
    assert_eq!(
        suspended(&moto, &fleet.group).await,
        ["AZRebalance", "AlarmNotification", "ScheduledActions"],
        "the killed driver left its suspensions"
    );

    let store = Arc::new(Store::open(&store_path).expect("store"));
    let provider = Arc::new(moto.provider());
    let pipeline = default_pipeline(&fleet, "linux", "[pipelines.web.test]\nenabled = false\n");
    let pipelines = vec![("web".to_string(), pipeline.clone())];
    let now = repave_core::ids::Clock::now(&repave_core::ids::SystemClock);
    let actions = repave_engine::gc(provider.as_ref(), &store, &pipelines, now, false)
        .await
        .expect("gc");
    assert_eq!(
        suspended(&moto, &fleet.group).await,
        ["AlarmNotification"],
        "gc resumed what the run suspended, and only that: {actions:?}"
    );

    let run = store
        .list_runs(&Default::default())
        .expect("runs")
        .into_iter()
        .next()
        .expect("the killed run")
        .id;
    let out = engine_on(provider.clone(), store.clone())
        .resume(&run)
        .await
        .expect("resume");
    assert_succeeded(&out);
    let new_image = out.summary.new_image.clone().expect("new image");
    let members = moto.member_images(&fleet.group).await;
    assert!(members.iter().all(|(_, i)| i == new_image.as_str()), "{members:?}");
    assert_eq!(suspended(&moto, &fleet.group).await, ["AlarmNotification"]);
    let builders = builders_of(&moto, run.as_str()).await;
    assert!(
        builders
            .iter()
            .all(|b| b.state().and_then(|s| s.name()).map(|n| n.as_str()) == Some("terminated")),
        "{builders:?}"
    );
    // Best effort: the directory is this test's own, under the temp dir.
    std::fs::remove_dir_all(&dir).ok();
}
