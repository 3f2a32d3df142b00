//! `repave simulate`: run the pipeline on a simulated fleet in virtual time
//! and print the predicted timeline.

use crate::cli::Cli;
use crate::exit::{self, Exit};
use anyhow::anyhow;
use repave_core::duration::{format_duration, parse_duration};
use repave_sim::{simulate, Latencies, SimOptions, SimReport};
use std::time::Duration;

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Latencies come from [pipelines.<name>.simulate] in repave.toml (defaults: public AWS \
figures — launch 1m, boot to SSM 10m on Windows / 90s on Linux, updates 40m, create image 15m, deregistration \
delay 5m, 20% log-normal variance). The config has no window section yet: `fits_window` means bake + roll \
<= --window."
)]
pub struct SimulateArgs {
    /// Pipeline (may be omitted when the config has only one).
    pub pipeline: Option<String>,
    /// Instances in the fleet (split evenly across --groups). Default: the
    /// local group's `desired` from the config.
    #[arg(long)]
    pub instances: Option<u32>,
    /// Groups rolled at once, each its own run.
    #[arg(long, default_value_t = 1)]
    pub groups: u32,
    /// Override rollout.min_healthy_percent.
    #[arg(long)]
    pub min_healthy_percent: Option<u32>,
    /// Override rollout.max_healthy_percent.
    #[arg(long)]
    pub max_healthy_percent: Option<u32>,
    /// Seed of the latency and fault draws (same seed, same prediction).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Maintenance window the bake and roll must fit in (e.g. "4h", "90m");
    /// a flag until the config has a window section.
    #[arg(long, default_value = "4h", value_parser = parse_duration)]
    pub window: Duration,
    /// Every latency exactly its median (no variance).
    #[arg(long)]
    pub no_variance: bool,
}

pub async fn run(cli: &Cli, args: &SimulateArgs) -> Result<i32, Exit> {
    let loaded = crate::context::load(cli)?;
    let (name, mut pipeline) = loaded.pipeline(args.pipeline.as_deref())?;
    let configured = loaded
        .config
        .providers
        .local
        .as_ref()
        .and_then(|l| l.groups.get(&pipeline.group))
        .map(|g| g.desired);
    let instances = args.instances.or(configured).ok_or_else(|| {
        Exit::bad_input(anyhow!(
            "--instances is required (the config does not say how large group {:?} is)",
            pipeline.group
        ))
    })?;
    if instances == 0 || args.groups == 0 || args.groups > instances {
        return Err(Exit::bad_input(anyhow!(
            "--instances must be at least 1 and at least --groups"
        )));
    }
    if let Some(min) = args.min_healthy_percent {
        pipeline.rollout.min_healthy_percent = min;
    }
    if let Some(max) = args.max_healthy_percent {
        pipeline.rollout.max_healthy_percent = max;
    }
    let (min, max) = (
        pipeline.rollout.min_healthy_percent,
        pipeline.rollout.max_healthy_percent,
    );
    if min > 100 || !(100..=200).contains(&max) || (min == 100 && max == 100) {
        return Err(Exit::bad_input(anyhow!(
            "min_healthy_percent {min} / max_healthy_percent {max}: min must be 0..=100, max 100..=200, and not both 100"
        )));
    }
    let mut latencies = Latencies::from_config(&pipeline.simulate, &pipeline.builder.platform);
    if args.no_variance {
        latencies = latencies.fixed();
    }
    let mut opts = SimOptions::new(instances, args.seed, latencies);
    opts.groups = args.groups;
    opts.window = args.window;
    let report = tokio::task::spawn_blocking(move || simulate(&pipeline, &opts))
        .await
        .map_err(|e| Exit::failed(anyhow!("simulation task failed: {e}")))?;
    if cli.json {
        let mut v = serde_json::to_value(&report).map_err(|e| Exit::failed(anyhow!(e)))?;
        v["pipeline"] = serde_json::Value::String(name);
        crate::output::json(&v);
    } else {
        print_human(&name, &report);
    }
    Ok(exit::OK)
}

fn secs(s: f64) -> String {
    format_duration(Duration::from_secs_f64(s.max(0.0).round()))
}

fn print_human(name: &str, r: &SimReport) {
    println!(
        "simulated {name}: {} instance(s) in {} group(s), seed {} — predicted run {}",
        r.instances, r.groups, r.seed, r.state
    );
    if let Some(e) = &r.error {
        println!("  error:            {e}");
    }
    println!("  bake:             {}", secs(r.bake_seconds));
    if r.state == "succeeded" {
        println!(
            "  roll:             {}  (lower bound {}, efficiency {:.2})",
            secs(r.roll_seconds),
            secs(r.lower_bound_seconds),
            r.efficiency
        );
        println!(
            "  lock-step:        {}  (Instance Refresh batches; repave {:.0}% faster)",
            secs(r.lockstep_roll_seconds),
            100.0 * r.faster_than_lockstep
        );
    } else {
        println!(
            "  roll:             did not complete (a lock-step roll would take {})",
            secs(r.lockstep_roll_seconds)
        );
    }
    println!(
        "  min in service:   {} (floor {}), at most {} live (cap {})",
        r.min_in_service, r.floor, r.max_live, r.max_total
    );
    println!(
        "  fits window:      {} (bake + roll {} vs window {})",
        if r.fits_window { "yes" } else { "no" },
        secs(r.bake_seconds + r.roll_seconds),
        secs(r.window_seconds)
    );
    if r.exceeds_roll_timeout {
        println!("  warning:          the roll outlasts rollout.timeout; the real run would time out");
    }
    println!("  api calls:        {}", r.api_calls);
    for w in &r.warnings {
        println!("  warning:          {w}");
    }
}
