//! `repave demo`: a fresh local fleet under steady load, the whole pipeline,
//! and a summary of what the traffic saw.

mod load;
mod report;

use crate::cli::{Cli, DemoArgs};
use crate::exit::{self, Exit};
use crate::progress::Bars;
use anyhow::{anyhow, Context as _};
use repave_core::ids::{Clock, SystemClock};
use repave_core::provider::{Groups, Lifecycle, Provider};
use repave_local::LocalClient;
use repave_store::RunKind;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

const PIPELINE: &str = "demo";

/// `repave load`: the demo's load generator on its own, for benchmarks.
pub async fn load_command(cli: &Cli, target: &str, connections: u32, seconds: u64) -> Result<i32, Exit> {
    if !target.starts_with("127.0.0.1:") {
        return Err(Exit::bad_input(anyhow!(
            "--target must be 127.0.0.1:PORT (load only goes to loopback)"
        )));
    }
    let seconds = seconds.clamp(1, 300);
    let load = load::Load::start(target, connections.clamp(1, 4096), false);
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let r = load.finish().await;
    if cli.json {
        crate::output::json(
            &json!({ "target": target, "connections": connections, "seconds": r.seconds, "total": r.total, "failed": r.failed, "per_second": r.per_second }),
        );
    } else {
        println!(
            "{target}: {} requests in {:.1}s, {:.0}/s, {} failed",
            r.total, r.seconds, r.per_second, r.failed
        );
    }
    Ok(if r.failed == 0 { exit::OK } else { exit::FAILED })
}

pub async fn run(cli: &Cli, args: &DemoArgs) -> Result<i32, Exit> {
    // Listening from the start: a Ctrl-C at any moment ends the demo through
    // the path that stops its fleet (before the run at once, during it at
    // the next safe point; a second one exits at once and the tether below
    // stops the fleet).
    let cancel = crate::commands::run::cancel_on_ctrl_c();
    let state_dir = fresh_state_dir(cli.state_dir.as_deref())?;
    let bars = Arc::new(Bars::new(cli.json));
    bars.println(&format!(
        "repave demo: {} instances, state in {}",
        args.instances,
        state_dir.display()
    ));

    // The demo's config goes through the same parser and validator as a
    // user's, and stays in the state dir for `repave --config ... status`.
    let port = free_port().map_err(Exit::failed)?;
    let os = repave_core::patch::OsFamily::parse(&args.os).expect("clap checked --os");
    let feed = if args.break_image || os != repave_core::patch::OsFamily::Windows {
        Some(write_feed(&state_dir, os, args.break_image)?)
    } else {
        None
    };
    let toml = demo_config(&state_dir, args, port, feed.as_deref());
    let config_path = state_dir.join("repave.toml");
    std::fs::write(&config_path, &toml)
        .context("writing the demo config")
        .map_err(Exit::failed)?;
    let config = repave_core::config::parse(&toml, &config_path.display().to_string()).map_err(Exit::failed)?;
    let pipeline = config.pipelines.get(PIPELINE).expect("demo pipeline").clone();
    let loaded = crate::context::Loaded::new(config, state_dir.clone(), state_dir.clone(), (None, None));

    let spin = bars.spinner(&format!(
        "starting {} instances behind the load balancer",
        args.instances
    ));
    let client = crate::context::start_local(&state_dir, feed.as_deref()).await?;
    let demo = Demo {
        cli,
        args,
        loaded: &loaded,
        pipeline: &pipeline,
        cancel: &cancel,
    };
    let (result, _tether) = match tether(&client, args.keep).await {
        Ok(tether) => (drive(&demo, bars.clone(), spin).await, tether),
        Err(e) => (Err(e), None),
    };
    if args.keep {
        bars.println(&format!(
            "the demo fleet keeps running (--keep): `repave --state-dir {} local down` stops it",
            state_dir.display()
        ));
    } else if let Err(e) = client.shutdown().await {
        eprintln!("warning: stopping the demo fleet: {e}");
    }
    result
}

/// Without `--keep`, the fleet lives only as long as this process: should
/// it end without stopping the fleet (a second Ctrl-C, SIGKILL, a closed
/// terminal), the fleet process stops it on its own.
async fn tether(client: &LocalClient, keep: bool) -> Result<Option<repave_local::Tether>, Exit> {
    if keep {
        return Ok(None);
    }
    client
        .tether()
        .await
        .map(Some)
        .context("tying the demo fleet to this process")
        .map_err(Exit::failed)
}

/// The demo's pipeline run on its started fleet.
struct Demo<'a> {
    cli: &'a Cli,
    args: &'a DemoArgs,
    loaded: &'a crate::context::Loaded,
    pipeline: &'a repave_core::config::Pipeline,
    /// Ctrl-C: the run stops at its next safe point; before the run, the
    /// demo stops at once.
    cancel: &'a tokio_util::sync::CancellationToken,
}

impl Demo<'_> {
    /// `work`, unless Ctrl-C comes first.
    async fn unless_interrupted<T>(&self, work: impl std::future::Future<Output = Result<T, Exit>>) -> Result<T, Exit> {
        tokio::select! {
            r = work => r,
            _ = self.cancel.cancelled() => Err(Exit {
                code: exit::PAUSED,
                error: anyhow!("interrupted before the demo's run started; its fleet is stopped"),
            }),
        }
    }
}

/// The group up and healthy, load on it, the pipeline run, the summary.
async fn drive(demo: &Demo<'_>, bars: Arc<Bars>, spin: indicatif::ProgressBar) -> Result<i32, Exit> {
    let Demo {
        cli,
        args,
        loaded,
        pipeline,
        ..
    } = *demo;
    let group = &pipeline.group;
    // The demo's group, created on the fleet process just started.
    let client = &demo.unless_interrupted(loaded.local()).await?;
    demo.unless_interrupted(crate::context::wait_healthy(client, group, args.instances))
        .await?;
    spin.finish_and_clear();
    let addr = client.balancer_address(group).await.map_err(Exit::failed)?;
    bars.println(&format!(
        "fleet healthy behind http://{addr}; driving load with {} keep-alive clients",
        args.clients
    ));

    let load_start_ms = SystemClock.now().millis();
    let load = load::Load::start(&addr, args.clients, true);
    // A moment of traffic on the old fleet first, so the report shows before and after.
    demo.unless_interrupted(async {
        tokio::time::sleep(Duration::from_millis(1000)).await;
        Ok(())
    })
    .await?;

    let store = loaded.store()?;
    let provider: Arc<dyn Provider> = Arc::new(client.clone());
    let engine = crate::commands::run::engine(
        provider,
        store,
        bars.clone(),
        demo.cancel.clone(),
        loaded.engine_options(pipeline),
    );
    let outcome = engine.start(PIPELINE, pipeline, RunKind::Run).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let traffic = load.finish().await;
    let outcome = outcome?;

    let group_now = client.describe_group(group).await.map_err(Exit::failed)?;
    let new_image = outcome.summary.new_image.clone();
    let on_new = group_now
        .members
        .iter()
        .filter(|m| m.lifecycle == Lifecycle::InService && Some(&m.image) == new_image.as_ref())
        .count();
    let leaked = leaks(client, &group_now).await?;

    let roll = outcome.summary.roll.clone().unwrap_or_default();
    let ratio = if roll.lower_bound_seconds > 0.0 {
        roll.seconds / roll.lower_bound_seconds
    } else {
        0.0
    };
    let report_path = loaded.state_dir.join("report.html");
    let mut summary = json!({
        "run": outcome.run,
        "state": outcome.state,
        "state_dir": loaded.state_dir,
        "report": report_path,
        "instances": args.instances,
        "requests": {
            "total": traffic.total, "failed": traffic.failed, "per_second": traffic.per_second,
            "clients": traffic.clients, "errors": traffic.errors, "by_image": traffic.by_image,
        },
        "roll": {
            "seconds": roll.seconds,
            "lower_bound_seconds": roll.lower_bound_seconds,
            "ratio": ratio,
            "min_in_service": roll.min_in_service,
            "floor": roll.floor,
            "max_live": roll.max_live,
            "max_total": roll.max_total,
            "concurrency": roll.concurrency,
            "replaced": roll.replaced,
            "launch_ready_ms_median": roll.launch_ready_ms_median,
            "warmup_ms": roll.warmup_ms,
            "drain_ms_median": roll.drain_ms_median,
        },
        "rolled_back": outcome.summary.rolled_back,
        "image": { "before": outcome.summary.source_image, "after": new_image },
        "instances_on_new_image": on_new,
        "leaked_instances": leaked.len(),
        "leaked": leaked,
        "installed_updates": outcome.summary.installed_updates,
        "nothing_to_install": outcome.summary.nothing_to_install,
        "os": args.os,
        "steps": outcome.steps,
        "error": outcome.summary.error,
    });
    let html = report::render(&outcome, &traffic, load_start_ms, &summary);
    std::fs::write(&report_path, html)
        .context("writing the report")
        .map_err(Exit::failed)?;
    summary["report"] = json!(report_path);

    if cli.json {
        crate::output::json(&summary);
    } else {
        print_summary(&summary, &outcome);
    }
    let mut code = exit::for_run_state(&outcome.state);
    // Nothing to install: nothing was published, the fleet rightly stays.
    let all_new = outcome.state != "succeeded" || outcome.summary.nothing_to_install || on_new as u32 == args.instances;
    if code == exit::OK && (traffic.failed > 0 || !leaked.is_empty() || !all_new) {
        code = exit::FAILED;
    }
    Ok(code)
}

fn print_summary(s: &serde_json::Value, outcome: &repave_engine::RunOutcome) {
    crate::commands::run::print_outcome(outcome);

    let r = &s["requests"];
    println!(
        "  requests   {} total, {} failed ({:.0}/s from {} keep-alive clients)",
        r["total"],
        r["failed"],
        r["per_second"].as_f64().unwrap_or(0.0),
        r["clients"]
    );
    println!(
        "  fleet      {}/{} instances on the new image, {} leaked",
        s["instances_on_new_image"], s["instances"], s["leaked_instances"]
    );
    println!("  report     {}", s["report"].as_str().unwrap_or(""));
}

/// Instances whose process or root is still there but that are not live
/// members of the group: builders, test instances, replaced instances.
/// Terminations finish asynchronously, so give them a bounded moment.
async fn leaks(client: &LocalClient, group: &repave_core::provider::Group) -> Result<Vec<serde_json::Value>, Exit> {
    let members: Vec<_> = group
        .members
        .iter()
        .filter(|m| !matches!(m.lifecycle, Lifecycle::Terminating | Lifecycle::Terminated))
        .map(|m| m.id.clone())
        .collect();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let report = client.leak_report().await.map_err(Exit::failed)?;
        let mut leaked = Vec::new();
        for id in report.live_processes.iter().filter(|i| !members.contains(i)) {
            leaked.push(json!({ "instance": id, "what": "process alive" }));
        }
        for id in report.roots.iter().filter(|i| !members.contains(i)) {
            let stopped_builder = report
                .instances
                .iter()
                .any(|i| &i.id == id && i.state == repave_core::provider::InstanceState::Stopped);
            leaked.push(json!({ "instance": id, "what": if stopped_builder { "stopped instance root" } else { "root on disk" } }));
        }
        if leaked.is_empty() || Instant::now() >= deadline {
            return Ok(leaked);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn fresh_state_dir(given: Option<&Path>) -> Result<PathBuf, Exit> {
    match given {
        Some(d) => {
            if d.exists() && std::fs::read_dir(d).map(|mut r| r.next().is_some()).unwrap_or(true) {
                return Err(Exit::bad_input(anyhow!(
                    "{} is not empty; the demo builds a fresh state dir (give a new or empty directory)",
                    d.display()
                )));
            }
            std::fs::create_dir_all(d).map_err(|e| Exit::failed(anyhow!("creating {}: {e}", d.display())))?;
            Ok(std::fs::canonicalize(d).unwrap_or_else(|_| d.to_path_buf()))
        }
        None => {
            let base = std::env::temp_dir();
            for _ in 0..100 {
                let d = base.join(format!("repave-demo-{:08x}", rand_u32()));
                if std::fs::create_dir(&d).is_ok() {
                    return Ok(d);
                }
            }
            Err(Exit::failed(anyhow!(
                "could not create a demo state dir under {}",
                base.display()
            )))
        }
    }
}

fn rand_u32() -> u32 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    (t.subsec_nanos() ^ std::process::id().rotate_left(16)).wrapping_mul(2_654_435_761)
}

fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port for the balancer")?;
    Ok(l.local_addr()?.port())
}

/// The demo feed in `os`'s vocabulary, with `broken`: plus one update that
/// breaks the app's health check.
fn write_feed(state_dir: &Path, os: repave_core::patch::OsFamily, broken: bool) -> Result<PathBuf, Exit> {
    let mut updates = repave_local::feed::demo_feed();
    if broken {
        let today = repave_core::patch::epoch_days(SystemClock.now().millis());
        let mut files = std::collections::BTreeMap::new();
        files.insert("etc/demo-app.conf".to_string(), "health = fail\n".to_string());
        updates.push(repave_core::patch::Update {
            id: "KB-BROKEN-1".into(),
            package: "demo-app".into(),
            version: "2.0.0".into(),
            severity: "Critical".into(),
            classification: "CriticalUpdates".into(),
            released: repave_core::patch::format_date_days(today - 30),
            reboot: false,
            files,
        });
    }
    let feed = repave_local::feed::for_os(os, updates);
    let path = state_dir.join("feed.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&feed).expect("feed"))
        .context("writing the feed")
        .map_err(Exit::failed)?;
    Ok(path)
}

/// The demo's selection in `os`'s words: the two most severe levels, at
/// least `min_age_days` old where the family knows release dates.
fn demo_selection(os: repave_core::patch::OsFamily, min_age_days: u32) -> String {
    if os.is_apt() {
        "priorities = [\"Required\", \"Important\"]".to_string()
    } else {
        format!("severities = [\"Critical\", \"Important\"]\nmin_age_days = {min_age_days}")
    }
}

fn demo_config(state_dir: &Path, args: &DemoArgs, port: u16, feed: Option<&Path>) -> String {
    let n = args.instances;
    let feed_line = feed
        .map(|f| format!("feed = {:?}\n", f.display().to_string()))
        .unwrap_or_default();
    format!(
        r#"# Written by `repave demo`.
state_dir = {state:?}

[providers.local]
{feed_line}
[providers.local.groups.demo]
min = {n}
max = {max}
desired = {n}
port = {port}
deregistration_delay = "10s"

[providers.local.groups.demo.health_check]
interval = "200ms"
healthy_threshold = 2
unhealthy_threshold = 2
grace = "60s"

[pipelines.demo]
provider = "local"
group = "demo"
parameter = "latestAmi"

[pipelines.demo.builder]
platform = "{os}"

[pipelines.demo.patch]
{selection}

[pipelines.demo.test]
enabled = {test}

[pipelines.demo.rollout]
min_healthy_percent = 100
max_healthy_percent = 150
warmup = "2s"
health_grace = "10s"

[pipelines.demo.retention]
keep = 3
"#,
        state = state_dir.display().to_string(),
        max = (n * 2).min(256),
        test = !args.break_image,
        os = args.os,
        selection = demo_selection(
            repave_core::patch::OsFamily::parse(&args.os).expect("clap checked --os"),
            args.min_age_days
        ),
    )
}
