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
    /// Simulate twice, without and with the shared request budget of the
    /// account (`[providers.aws] request_budget_percent`, default 50), and
    /// print API calls per second per bucket, peak and mean, side by side
    /// (all groups are in one account and region). A benchmark: e.g.
    /// `--instances 10000 --groups 100 --budget-compare`.
    #[arg(long)]
    pub budget_compare: bool,
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
    let mut latencies = Latencies::from_config(&pipeline.simulate, pipeline.builder.platform);
    if args.no_variance {
        latencies = latencies.fixed();
    }
    let mut opts = SimOptions::new(instances, args.seed, latencies);
    opts.groups = args.groups;
    opts.window = args.window;
    if args.budget_compare {
        let percent = loaded
            .config
            .providers
            .aws
            .as_ref()
            .map(|a| a.request_budget_percent)
            .filter(|p| *p > 0)
            .unwrap_or(repave_core::budget::DEFAULT_BUDGET_PERCENT);
        return compare(cli, &name, pipeline, opts, percent).await;
    }
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

/// The same fleet without and with the shared budget, side by side.
async fn compare(
    cli: &Cli,
    name: &str,
    pipeline: repave_core::config::Pipeline,
    opts: SimOptions,
    percent: u32,
) -> Result<i32, Exit> {
    let (p2, mut o2) = (pipeline.clone(), opts.clone());
    o2.budget_percent = Some(percent);
    let without = tokio::task::spawn_blocking(move || simulate(&pipeline, &opts));
    let with = tokio::task::spawn_blocking(move || simulate(&p2, &o2));
    let (without, with) =
        tokio::try_join!(without, with).map_err(|e| Exit::failed(anyhow!("simulation task failed: {e}")))?;
    if cli.json {
        crate::output::json(&serde_json::json!({
            "pipeline": name,
            "instances": with.instances,
            "groups": with.groups,
            "budget_percent": percent,
            "without_budget": { "state": without.state, "roll_seconds": without.roll_seconds, "run_seconds": without.run_seconds, "api_calls": without.api_calls, "api_rates": without.api_rates },
            "with_budget": { "state": with.state, "roll_seconds": with.roll_seconds, "run_seconds": with.run_seconds, "api_calls": with.api_calls, "api_rates": with.api_rates },
        }));
        return Ok(exit::OK);
    }
    println!(
        "simulated {name}: {} instance(s) in {} group(s) rolling at once in one account and region, seed {}",
        with.instances, with.groups, with.seed
    );
    println!("API calls per second of the account (peak / mean); budget = {percent}% of each AWS bucket");
    println!(
        "  {:<22} {:>20} {:>20} {:>18} {:>18}",
        "bucket", "without budget", "with budget", "budget rate/burst", "AWS rate/burst"
    );
    let cell = |r: Option<&repave_sim::Rate>| {
        r.map(|r| format!("{} / {:.1}", r.peak_per_second, r.mean_per_second))
            .unwrap_or_else(|| "-".into())
    };
    let mut names: Vec<&String> = without
        .api_rates
        .buckets
        .keys()
        .chain(with.api_rates.buckets.keys())
        .collect();
    names.sort();
    names.dedup();
    for b in names {
        let (a, w) = (without.api_rates.buckets.get(b), with.api_rates.buckets.get(b));
        let limit = |r: Option<&repave_sim::Rate>,
                     per: fn(&repave_sim::Rate) -> Option<f64>,
                     burst: fn(&repave_sim::Rate) -> Option<f64>| {
            r.and_then(|r| Some(format!("{:.1}/s / {:.0}", per(r)?, burst(r)?)))
                .unwrap_or_else(|| "-".into())
        };
        println!(
            "  {:<22} {:>20} {:>20} {:>18} {:>18}",
            b,
            cell(a),
            cell(w),
            limit(w, |r| r.budget_per_second, |r| r.budget_burst),
            limit(w.or(a), |r| r.aws_per_second, |r| r.aws_burst),
        );
    }
    println!(
        "  {:<22} {:>20} {:>20}",
        "all",
        cell(Some(&without.api_rates.all)),
        cell(Some(&with.api_rates.all))
    );
    println!("  {:<22} {:>20} {:>20}", "calls", without.api_calls, with.api_calls);
    println!(
        "  {:<22} {:>20} {:>20}",
        "roll (slowest group)",
        secs(without.roll_seconds),
        secs(with.roll_seconds)
    );
    println!("  {:<22} {:>20} {:>20}", "run state", without.state, with.state);
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
