use repave_sim::{pipeline, simulate, Latencies, SimOptions};

#[test]
fn small_fleet_rolls() {
    let mut p = pipeline("web", "latestAmi");
    p.rollout.min_healthy_percent = 90;
    p.rollout.max_healthy_percent = 110;
    p.rollout.health_grace = Some(repave_core::duration::HumanDuration::from_secs(1800));
    let t = std::time::Instant::now();
    let r = simulate(&p, &SimOptions::new(20, 7, Latencies::default()));
    eprintln!("{}", serde_json::to_string_pretty(&r).unwrap());
    eprintln!("wall {:?}", t.elapsed());
    assert_eq!(r.state, "succeeded", "{:?}", r.error);
}

#[test]
fn same_seed_same_report() {
    let mut p = pipeline("web", "latestAmi");
    // Windows boot to SSM takes ~10 min: the 10 min default test timeout
    // would (rightly) be predicted to fail.
    p.test.timeout = repave_core::duration::HumanDuration::from_secs(1800);
    p.rollout.health_grace = Some(repave_core::duration::HumanDuration::from_secs(1800));
    let a = simulate(&p, &SimOptions::new(30, 5, Latencies::default()));
    let b = simulate(&p, &SimOptions::new(30, 5, Latencies::default()));
    let c = simulate(&p, &SimOptions::new(30, 6, Latencies::default()));
    assert_eq!(a.state, "succeeded", "{:?}", a.error);
    assert_eq!(
        (a.roll_seconds, a.bake_seconds, a.api_calls),
        (b.roll_seconds, b.bake_seconds, b.api_calls)
    );
    assert_ne!(
        (a.roll_seconds, a.bake_seconds),
        (c.roll_seconds, c.bake_seconds),
        "the seed matters"
    );
}
