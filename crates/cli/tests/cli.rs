//! CLI behaviour that needs no fleet: init, validate, bad input, help.

use crate::common;

use common::Repave;

#[test]
fn init_writes_a_config_that_validates() {
    let dir = tempfile::tempdir().unwrap();
    Repave::new().in_dir(dir.path()).args(["init"]).run().expect_code(0);
    let ran = Repave::new().in_dir(dir.path()).args(["validate"]).run().expect_code(0);
    assert!(ran.stdout.contains("ok"), "{}", ran.stdout);
    // A second init refuses to overwrite.
    let again = Repave::new().in_dir(dir.path()).args(["init"]).run().expect_code(2);
    assert!(again.stderr.contains("already exists"), "{}", again.stderr);
}

#[test]
fn bad_configs_exit_2_with_position() {
    let cases: &[(&str, &str, &str)] = &[
        ("syntax", "[pipelines.web\n", "repave.toml:1:"),
        ("unknown top-level field", "colour = 1\n", "repave.toml:1:1"),
        ("wrong type", "[pipelines.web]\nprovider = 5\n", "repave.toml:2:"),
        ("empty file", "", "no pipelines"),
        ("bad percent", "[providers.local.groups.web]\nmin = 1\nmax = 2\ndesired = 1\nport = 8080\n[pipelines.web]\nprovider = \"local\"\ngroup = \"web\"\nparameter = \"p\"\n[pipelines.web.rollout]\nmin_healthy_percent = 140\n", "repave.toml:11:"),
    ];
    let base = "[providers.local.groups.web]\nmin = 1\nmax = 2\ndesired = 1\nport = 8080\n[pipelines.web]\nprovider = \"local\"\ngroup = \"web\"\nparameter = \"p\"\n";
    let tz = format!("{base}window = {{ cron = \"0 1 * * SUN\", timezone = \"Mars/Olympus\", duration = \"4h\", cutoff = \"1h\" }}\n");
    let cron = format!("{base}window = {{ cron = \"0 1 * * FUNDAY\", timezone = \"Asia/Taipei\", duration = \"4h\", cutoff = \"1h\" }}\n");
    let min_over_max = format!("{base}[pipelines.web.rollout]\nmin_healthy_percent = 100\nmax_healthy_percent = 100\n");
    let huge = format!("{base}# {}\n", "x".repeat(5 * 1024 * 1024));
    let outside = format!("state_dir = \"../../elsewhere\"\n{base}");
    let more: Vec<(&str, &str, &str)> = vec![
        (
            "unknown time zone",
            &tz,
            "repave.toml:10:34: pipelines.web.window.timezone",
        ),
        ("invalid cron", &cron, "repave.toml:10:12: pipelines.web.window.cron"),
        (
            "no room to replace",
            &min_over_max,
            "repave.toml:12:1: pipelines.web.rollout.max_healthy_percent",
        ),
        ("5 MB file", &huge, "repave.toml:"),
        ("state dir outside", &outside, "repave.toml:1:"),
    ];
    for (name, body, want) in cases.iter().copied().chain(more) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("repave.toml"), body).unwrap();
        let ran = Repave::new().in_dir(dir.path()).args(["validate"]).run();
        assert_eq!(ran.code, 2, "{name}: {}", ran.stderr);
        assert!(ran.stderr.contains(want), "{name}: expected {want:?} in {}", ran.stderr);
        // Nothing was started or created.
        assert!(!dir.path().join(".repave").exists(), "{name}: state dir created");
    }
}

#[test]
fn binary_config_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("repave.toml"), [0xff, 0xfe, 0x00, 0x01]).unwrap();
    let ran = Repave::new()
        .in_dir(dir.path())
        .args(["--json", "run"])
        .run()
        .expect_code(2);
    assert!(
        ran.json()["error"].as_str().unwrap().contains("repave.toml:1:"),
        "{}",
        ran.stdout
    );
}

#[test]
fn missing_config_names_the_file_and_the_way_out() {
    let dir = tempfile::tempdir().unwrap();
    let ran = Repave::new().in_dir(dir.path()).args(["run"]).run().expect_code(2);
    assert!(
        ran.stderr.contains("repave.toml") && ran.stderr.contains("repave init"),
        "{}",
        ran.stderr
    );
}

#[test]
fn demo_refuses_a_non_empty_state_dir() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("precious"), "x").unwrap();
    let s = dir.path().display().to_string();
    let ran = Repave::new()
        .args(["demo", "--state-dir", s.as_str()])
        .run()
        .expect_code(2);
    assert!(ran.stderr.contains("not empty"), "{}", ran.stderr);
    assert!(dir.path().join("precious").exists());
}

#[test]
fn help_lists_exit_codes() {
    let ran = Repave::new().args(["--help"]).run().expect_code(0);
    assert!(ran.stdout.contains("Exit codes"), "{}", ran.stdout);
    for cmd in [
        "demo", "init", "validate", "run", "bake", "roll", "rollback", "resume", "cancel", "status", "history", "logs",
        "local",
    ] {
        assert!(ran.stdout.contains(cmd), "{cmd} missing from --help");
    }
}
