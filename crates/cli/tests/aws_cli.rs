//! The AWS provider through the real binary, against the moto server that
//! `scripts/test` starts (`REPAVE_MOTO_ENDPOINT`; the test fails without it).

mod common;

use common::Repave;

fn moto() -> String {
    std::env::var("REPAVE_MOTO_ENDPOINT")
        .expect("REPAVE_MOTO_ENDPOINT must point at a moto server (scripts/test starts one)")
}

fn config(dir: &std::path::Path) -> String {
    let path = dir.join("repave.toml");
    std::fs::write(
        &path,
        format!(
            "[providers.aws]\nendpoint_url = {:?}\nemulator = true\n\n[pipelines.web]\nprovider = \"aws\"\ngroup = \"cli-test-missing-group\"\nparameter = \"/repave/cli-test/missing\"\n[pipelines.web.builder]\ninstance_type = \"t3.micro\"\n",
            moto()
        ),
    )
    .unwrap();
    path.display().to_string()
}

fn aws(args: &[&str], c: &str) -> common::Ran {
    let mut r = Repave::new().args(["--config", c, "--region", "us-east-1"]).args(args);
    r = r
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing");
    r.run()
}

#[test]
fn plan_against_aws_reports_problems_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let c = config(dir.path());
    let v = aws(&["--json", "plan"], &c).expect_code(1).json();
    let problems: Vec<&str> = v["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert!(
        problems
            .iter()
            .any(|p| p.contains("golden parameter /repave/cli-test/missing does not exist")),
        "{problems:?}"
    );
    assert!(
        problems.iter().any(|p| p.contains("cli-test-missing-group")),
        "{problems:?}"
    );
}

#[test]
fn iam_policy_is_least_privilege_json() {
    let dir = tempfile::tempdir().unwrap();
    let c = config(dir.path());
    let v = aws(&["iam-policy", "web"], &c).expect_code(0).json();
    let statements = v["Statement"].as_array().unwrap();
    assert!(!statements.is_empty());
    let text = v.to_string();
    assert!(
        text.contains("parameter/repave/cli-test/missing"),
        "scoped to the parameter: {text}"
    );
    assert!(!text.contains("\"Action\":\"*\""), "no wildcard actions: {text}");
}
