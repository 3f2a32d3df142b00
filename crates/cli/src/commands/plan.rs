//! `repave plan`: a read-only preflight. What a run would create and
//! replace, and every problem found before anything changes.

use crate::cli::Cli;
use crate::exit::{self, Exit};
use repave_core::config::HeldInstances;
use repave_core::provider::{ImageState, Lifecycle, Provider};
use repave_core::rollout::{
    capacity_bounds, capacity_bounds_within, concurrency_within, no_room, HealthSettings, RollPolicy,
};
use repave_core::ImageId;
use serde_json::json;

pub async fn run(cli: &Cli, name: Option<&str>) -> Result<i32, Exit> {
    let loaded = crate::context::load(cli)?;
    let (name, pipeline) = loaded.pipeline(name)?;
    let store = loaded.store()?;
    let provider = loaded.provider(&pipeline).await?;
    let mut problems: Vec<String> = Vec::new();
    let p: &dyn Provider = provider.as_ref();

    let source = match p.get_parameter(&pipeline.parameter).await {
        Ok(v) => Some(ImageId::new(v.value.trim())),
        Err(e) if e.is_not_found() => {
            problems.push(format!("golden parameter {} does not exist", pipeline.parameter));
            None
        }
        Err(e) => return Err(Exit::failed(e)),
    };
    let mut os_note = None;
    if let Some(img) = &source {
        match p.describe_image(img).await {
            Ok(i) if i.state != ImageState::Available => problems.push(format!("source image {img} is {:?}", i.state)),
            Ok(i) if i.tags.get(repave_core::provider::tag::STATUS).map(String::as_str) == Some("bad") => {
                problems.push(format!("source image {img} is marked bad"))
            }
            // The builder's OS from the image, and whether the selection
            // can match anything on it.
            Ok(i) => match repave_core::config::builder_os(&pipeline, &i) {
                Ok(os) => os_note = Some(format!("builder OS: {os} (from image {img})")),
                Err(m) => problems.push(m),
            },
            Err(e) if e.is_not_found() => problems.push(format!("source image {img} does not exist")),
            Err(e) => return Err(Exit::failed(e)),
        }
    }
    let timing = match p.health_timing(&pipeline.group).await {
        Ok(t) => t,
        Err(e) if e.is_not_found() => Default::default(),
        Err(e) => return Err(Exit::failed(e)),
    };
    let health = HealthSettings::new(&pipeline.rollout, &timing);
    let policy = RollPolicy::new(&pipeline.rollout, &health);
    let mut notes: Vec<String> = os_note.into_iter().collect();
    let mut replace = Vec::new();
    let mut held = Vec::new();
    let mut group_json = serde_json::Value::Null;
    let mut builder_json =
        json!({ "instance_type": pipeline.builder.instance_type, "subnet": pipeline.builder.subnet });
    match p.describe_group(&pipeline.group).await {
        Ok(g) => {
            // The builder's settings as the run will resolve them.
            match p.describe_launch_spec(&g.launch_spec).await {
                Ok(launch) => {
                    match repave_core::builder::builder_spec(
                        &name,
                        &pipeline.builder,
                        &g,
                        &launch.spec,
                        p.builder_needs(),
                    ) {
                        Ok(b) => {
                            builder_json = json!({
                                "instance_type": b.spec.instance_type, "subnet": b.spec.subnet,
                                "security_groups": b.spec.security_groups, "instance_profile": b.spec.instance_profile,
                                "origins": b.origins,
                            })
                        }
                        Err(m) => problems.push(m),
                    }
                }
                Err(e) if e.is_not_found() => problems.push(format!(
                    "group {}: launch spec {:?} does not exist",
                    g.name, g.launch_spec
                )),
                Err(e) => return Err(Exit::failed(e)),
            }
            let (floor, max_total) = capacity_bounds_within(g.desired, g.max, &policy);
            let (_, wanted) = capacity_bounds(g.desired, &policy);
            if pipeline.rollout.strategy != repave_core::config::Strategy::Native {
                if let Some(reason) = no_room(g.desired, g.max, &policy) {
                    problems.push(format!("group {}: {reason}", g.name));
                } else if wanted > max_total {
                    notes.push(format!(
                        "the surge is held to the group's MaxSize {}: {} instances at once instead of {} (max_healthy_percent {})",
                        g.max, max_total, wanted, pipeline.rollout.max_healthy_percent
                    ));
                }
            }
            for m in g
                .members
                .iter()
                .filter(|m| !matches!(m.lifecycle, Lifecycle::Terminating | Lifecycle::Terminated))
            {
                let standby = m.lifecycle == Lifecycle::Standby;
                let r = &pipeline.rollout;
                if let Some(how) = HeldInstances::holding(standby, m.protected, r.standby, r.protected) {
                    held.push(json!({ "instance": m.id, "why": if standby { "standby" } else { "protected" }, "policy": how }));
                    if how == HeldInstances::Fail {
                        problems.push(format!(
                            "{} is {} and the policy says fail",
                            m.id,
                            if standby { "standby" } else { "protected" }
                        ));
                    }
                } else {
                    replace.push(json!({ "instance": m.id, "image": m.image }));
                }
            }
            group_json = json!({
                "name": g.name, "desired": g.desired, "min": g.min, "max": g.max, "launch_spec": g.launch_spec,
                "floor": floor, "max_total": max_total, "concurrency": concurrency_within(g.desired, g.max, &policy),
            });
        }
        Err(e) if e.is_not_found() => problems.push(format!("group {} does not exist", pipeline.group)),
        Err(e) => return Err(Exit::failed(e)),
    }
    let now = repave_core::ids::Clock::now(&repave_core::ids::SystemClock);
    if let Some(l) = store
        .current_lease(&repave_store::lease_key(&pipeline.group, p.place().as_deref()))
        .map_err(Exit::failed)?
    {
        if l.expires_at > now {
            problems.push(format!(
                "group {} is leased by run {} (a second run would be refused)",
                pipeline.group, l.holder
            ));
        }
    }
    let mut aws = serde_json::Value::Null;
    if pipeline.provider == repave_core::config::ProviderKind::Aws {
        let pf = loaded
            .aws_for(&pipeline)
            .await?
            .preflight(&name, &pipeline)
            .await
            .map_err(Exit::failed)?;
        for prob in &pf.problems {
            if !problems.contains(prob) {
                problems.push(prob.clone());
            }
        }
        notes.extend(pf.notes.iter().cloned());
        aws = serde_json::to_value(&pf).unwrap_or_default();
    }
    let creates = json!([
        { "what": "builder instance", "from": source, "settings": builder_json },
        { "what": "image", "from": "the patched builder" },
        { "what": "test instance", "when": pipeline.test.enabled },
        { "what": "launch spec version", "of": group_json["launch_spec"] },
        { "what": "golden parameter version", "name": pipeline.parameter },
    ]);
    let out = json!({
        "pipeline": name, "provider": pipeline.provider, "source_image": source, "group": group_json,
        "patch_selection": pipeline.patch.selection(), "creates": creates,
        "held": held, "would_replace": replace, "problems": problems, "notes": notes, "aws": aws,
        "health": { "health_grace_ms": health.health_grace.as_millis() as u64, "warmup_ms": health.warmup.as_millis() as u64,
                    "needed_ms": health.needed.as_millis() as u64, "sources": health.sources, "timing": timing },
    });
    if cli.json {
        crate::output::json(&out);
    } else {
        println!("plan for pipeline {name} ({}), read-only", pipeline.provider);
        println!(
            "  source image  {}",
            source.map(|s| s.to_string()).unwrap_or_else(|| "?".into())
        );
        if !group_json.is_null() {
            println!(
                "  group         {} desired {} (floor {}, up to {} during the roll, {} at once)",
                group_json["name"].as_str().unwrap_or(""),
                group_json["desired"],
                group_json["floor"],
                group_json["max_total"],
                group_json["concurrency"]
            );
        }
        for line in &health.sources {
            println!("  readiness     {line}");
        }
        for line in builder_json["origins"].as_array().into_iter().flatten() {
            println!("  builder       {}", line.as_str().unwrap_or(""));
        }
        println!(
            "  would create  builder from the golden image, an image, {}a launch spec version, a parameter version",
            if pipeline.test.enabled { "a test instance, " } else { "" }
        );
        for h in &held {
            println!(
                "  held          {} ({}, policy {})",
                h["instance"].as_str().unwrap_or(""),
                h["why"].as_str().unwrap_or(""),
                h["policy"].as_str().unwrap_or("")
            );
        }
        println!(
            "  would replace {} instance(s): {}",
            replace.len(),
            replace
                .iter()
                .filter_map(|r| r["instance"].as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
        for w in aws["warm_pool"].as_array().into_iter().flatten() {
            println!("  warm pool     {}", w.as_str().unwrap_or(""));
        }
        for note in &notes {
            println!("  note          {note}");
        }
        if problems.is_empty() {
            println!("  no problems found");
        }
        for prob in &problems {
            println!("  problem       {prob}");
        }
    }
    Ok(if problems.is_empty() { exit::OK } else { exit::FAILED })
}
