//! Fleet benchmarks (a report, not timed tests): `cargo bench -p repave-sim`.
//!
//! (a) 1,000 instances, realistic latency variance, min 90 % / max 110 %:
//!     repave's continuous roll vs the lock-step (Instance Refresh) baseline,
//!     and efficiency vs the lower bound with zero-variance latencies.
//! (b) 10,000 instances across 100 groups: wall-clock time of the whole
//!     simulation (bake + roll of every group) and peak memory.

use repave_core::duration::HumanDuration;
use repave_sim::{pipeline, simulate, Latencies, SimOptions, SimReport};
use std::time::Instant;

fn policy() -> repave_core::config::Pipeline {
    let mut p = pipeline("web", "latestAmi");
    p.builder.platform = repave_core::patch::PlatformChoice::Family(repave_core::patch::OsFamily::Windows);
    p.rollout.min_healthy_percent = 90;
    p.rollout.max_healthy_percent = 110;
    p.rollout.warmup = Some(HumanDuration::from_secs(120));
    p.rollout.health_grace = Some(HumanDuration::from_secs(1800));
    p.test.timeout = HumanDuration::from_secs(1800);
    // Windows boot to SSM is ~10 min with a long tail; the 15 min default
    // would fail a few of the 100 bakes in (b).
    p.builder.ready_timeout = HumanDuration::from_secs(1800);
    p
}

/// Peak resident set size of this process (Linux), in MB.
fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn row(label: &str, r: &SimReport, wall: f64) {
    println!(
        "{label:<34} {:>9} {:>8.0}s {:>8.0}s {:>9.0}s {:>7.3} {:>8.1}% {:>5}/{:<5} {:>8} {:>7.2}s",
        r.state,
        r.roll_seconds,
        r.lower_bound_seconds,
        r.lockstep_roll_seconds,
        r.efficiency,
        100.0 * r.faster_than_lockstep,
        r.min_in_service,
        r.floor,
        r.api_calls,
        wall
    );
    if let Some(e) = &r.error {
        println!("    error: {e}");
    }
}

fn main() {
    // `cargo bench` passes --bench; a filter argument picks one part.
    let filter = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .unwrap_or_default();
    println!(
        "{:<34} {:>9} {:>9} {:>9} {:>10} {:>7} {:>9} {:>11} {:>8} {:>8}",
        "case", "state", "roll", "lower bd", "lock-step", "effic.", "faster", "min/floor", "api", "wall"
    );
    let p = policy();
    if filter.is_empty() || filter == "a" {
        let t = Instant::now();
        let real = simulate(&p, &SimOptions::new(1000, 1, Latencies::default()));
        row("(a) 1000, variance 20%", &real, t.elapsed().as_secs_f64());
        let t = Instant::now();
        let fixed = simulate(&p, &SimOptions::new(1000, 1, Latencies::default().fixed()));
        row("(a) 1000, zero variance", &fixed, t.elapsed().as_secs_f64());
        // A kinder baseline: batches sized by the surge room as well
        // (desired × (max − min)%), i.e. the same concurrency as repave.
        let surge_batch = 1000 * (110 - 90) / 100;
        let kind = repave_sim::lockstep_with_batch(
            1000,
            surge_batch,
            p.rollout.warmup.expect("the bench sets warmup").get(),
            &Latencies::default(),
            &Default::default(),
            1,
        );
        println!(
            "    lock-step with batches of {surge_batch} (same concurrency as repave): {kind:.0}s -> repave {:.1}% faster",
            100.0 * (1.0 - real.roll_seconds / kind)
        );
        println!(
            "    goal: >= 25% faster than lock-step -> {:.1}% ({}); efficiency >= 0.95 at zero variance -> {:.3} ({})",
            100.0 * real.faster_than_lockstep,
            if real.faster_than_lockstep >= 0.25 {
                "met"
            } else {
                "NOT met"
            },
            fixed.efficiency,
            if fixed.efficiency >= 0.95 { "met" } else { "NOT met" }
        );
    }
    if filter.is_empty() || filter == "b" {
        let mut opts = SimOptions::new(10_000, 2, Latencies::default());
        opts.groups = 100;
        let t = Instant::now();
        let big = simulate(&p, &opts);
        let wall = t.elapsed().as_secs_f64();
        row("(b) 10000 in 100 groups", &big, wall);
        let rss = peak_rss_mb().unwrap_or(f64::NAN);
        println!(
            "    goal: wall < 60 s -> {wall:.1} s ({}); peak memory < 300 MB -> {rss:.0} MB ({})",
            if wall < 60.0 { "met" } else { "NOT met" },
            if rss < 300.0 { "met" } else { "NOT met" }
        );
    }
}
