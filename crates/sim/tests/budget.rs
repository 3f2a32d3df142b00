//! The shared request budget in virtual time: many groups rolling at once
//! in one account never exceed it, over any window; without it the same
//! rolls do.

use repave_core::budget::{conforms, ApiBucket};
use repave_core::duration::HumanDuration;
use repave_sim::{pipeline, simulate, Latencies, SimOptions};

fn run(budget: Option<u32>) -> repave_sim::SimReport {
    let mut p = pipeline("web", "latestAmi");
    p.rollout.min_healthy_percent = 50;
    p.rollout.max_healthy_percent = 150;
    p.test.timeout = HumanDuration::from_secs(1800);
    p.rollout.health_grace = Some(HumanDuration::from_secs(3600));
    let mut opts = SimOptions::new(40, 3, Latencies::default().fixed());
    opts.groups = 8;
    opts.budget_percent = budget;
    simulate(&p, &opts)
}

#[test]
fn eight_groups_rolling_at_once_stay_within_the_shared_budget() {
    // 10 % of each bucket: Auto Scaling 4 tokens refilled at 1 per second.
    let with = run(Some(10));
    assert_eq!(with.state, "succeeded", "{:?}", with.error);
    assert_eq!(with.replaced, 40);
    for bucket in ApiBucket::ALL {
        let times: Vec<f64> = with
            .call_log
            .iter()
            .filter(|(_, b)| *b == bucket)
            .map(|(t, _)| *t)
            .collect();
        let limit = bucket.documented_limit().share(10);
        conforms(&times, limit)
            .unwrap_or_else(|(a, b, n)| panic!("{bucket:?}: {n} calls between {a:.1}s and {b:.1}s, over {limit:?}"));
    }
    let asg = &with.api_rates.buckets["autoscaling"];
    assert!(asg.peak_per_second <= 4, "{asg:?}");

    // The same rolls without the budget burst past it: the check above can
    // fail.
    let without = run(None);
    assert_eq!(without.state, "succeeded", "{:?}", without.error);
    let over = ApiBucket::ALL.iter().any(|bucket| {
        let times: Vec<f64> = without
            .call_log
            .iter()
            .filter(|(_, b)| b == bucket)
            .map(|(t, _)| *t)
            .collect();
        conforms(&times, bucket.documented_limit().share(10)).is_err()
    });
    assert!(over, "without a budget no bucket went over: {:?}", without.api_rates);
    assert!(
        without.api_rates.all.peak_per_second > with.api_rates.all.peak_per_second,
        "{:?} vs {:?}",
        without.api_rates.all,
        with.api_rates.all
    );
}
