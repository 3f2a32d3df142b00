//! `repave simulate`: the real binary, a config on disk, virtual time.

use crate::common;

use common::Repave;
use std::path::Path;

const CONFIG: &str = r#"[providers.local.groups.web]
min = 1
desired = 2
max = 4
port = 18080

[pipelines.web]
provider = "local"
group = "web"
parameter = "latestAmi"

[pipelines.web.rollout]
min_healthy_percent = 90
max_healthy_percent = 110
health_grace = "20m"
warmup = "1m"

[pipelines.web.simulate]
launch = "30s"
boot = "2m"
health = "20s"
updates = "10m"
create_image = "5m"
variance_percent = 0
"#;

fn config(dir: &Path, body: &str) -> String {
    let path = dir.join("repave.toml");
    std::fs::write(&path, body).unwrap();
    path.display().to_string()
}

#[test]
fn json_carries_the_prediction() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), CONFIG);
    let v = Repave::new()
        .args(["--config", &cfg, "simulate", "--instances", "40", "--json"])
        .run()
        .expect_code(0)
        .json();
    assert_eq!(v["state"], "succeeded", "{v}");
    assert_eq!(v["pipeline"], "web");
    for key in [
        "roll_seconds",
        "lower_bound_seconds",
        "efficiency",
        "min_in_service",
        "floor",
        "api_calls",
        "lockstep_roll_seconds",
        "bake_seconds",
    ] {
        assert!(v[key].is_number(), "{key} missing: {v}");
    }
    assert!(v["fits_window"].is_boolean());
    assert!(v["api_calls_by_op"]["describe_group"].as_u64().unwrap() > 0);
    let roll = v["roll_seconds"].as_f64().unwrap();
    let lb = v["lower_bound_seconds"].as_f64().unwrap();
    assert!(roll > 0.0 && lb > 0.0 && lb <= roll * 1.01, "{roll} vs {lb}");
    assert!((v["efficiency"].as_f64().unwrap() - lb / roll).abs() < 1e-9);
    assert!(v["min_in_service"].as_u64() >= v["floor"].as_u64(), "{v}");
    assert_eq!(v["floor"], 36);
    assert!(v["lockstep_roll_seconds"].as_f64().unwrap() > roll, "{v}");
    assert_eq!(v["fits_window"], true);
}

#[test]
fn same_seed_same_prediction_and_flags_override() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        &CONFIG.replace("variance_percent = 0", "variance_percent = 30"),
    );
    let args = [
        "--config",
        &cfg,
        "simulate",
        "web",
        "--instances",
        "20",
        "--seed",
        "9",
        "--min-healthy-percent",
        "50",
        "--json",
    ];
    let a = Repave::new().args(args).run().expect_code(0).json();
    let b = Repave::new().args(args).run().expect_code(0).json();
    assert_eq!(a["roll_seconds"], b["roll_seconds"]);
    assert_eq!(a["api_calls"], b["api_calls"]);
    assert_eq!(a["floor"], 10, "--min-healthy-percent overrides the config");
}

#[test]
fn short_window_does_not_fit_and_human_output_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), CONFIG);
    let v = Repave::new()
        .args([
            "--config",
            &cfg,
            "simulate",
            "--instances",
            "10",
            "--window",
            "10m",
            "--json",
        ])
        .run()
        .expect_code(0)
        .json();
    assert_eq!(v["fits_window"], false);
    let out = Repave::new()
        .args(["--config", &cfg, "simulate", "--instances", "10", "--window", "10m"])
        .run()
        .expect_code(0);
    for want in [
        "bake:",
        "roll:",
        "lower bound",
        "min in service:",
        "fits window:      no",
    ] {
        assert!(out.stdout.contains(want), "{want:?} not in:\n{}", out.stdout);
    }
}

#[test]
fn bad_input_is_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), CONFIG);
    Repave::new()
        .args(["--config", &cfg, "simulate", "nope", "--instances", "10"])
        .run()
        .expect_code(2);
    Repave::new()
        .args([
            "--config",
            &cfg,
            "simulate",
            "--instances",
            "10",
            "--min-healthy-percent",
            "100",
            "--max-healthy-percent",
            "100",
        ])
        .run()
        .expect_code(2);
    Repave::new()
        .args(["--config", &cfg, "simulate", "--instances", "0"])
        .run()
        .expect_code(2);
}

#[test]
fn instances_default_to_the_local_group_and_groups_split_the_fleet() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), CONFIG);
    let v = Repave::new()
        .args(["--config", &cfg, "simulate", "--json"])
        .run()
        .expect_code(0)
        .json();
    assert_eq!(v["instances"], 2, "the local group's desired: {v}");
    let v = Repave::new()
        .args([
            "--config",
            &cfg,
            "simulate",
            "--instances",
            "30",
            "--groups",
            "3",
            "--json",
        ])
        .run()
        .expect_code(0)
        .json();
    assert_eq!(v["state"], "succeeded", "{v}");
    assert_eq!(
        (v["groups"].as_u64(), v["replaced"].as_u64()),
        (Some(3), Some(30)),
        "{v}"
    );
    assert_eq!(v["floor"], 27, "9 per group of 10, summed");
}
