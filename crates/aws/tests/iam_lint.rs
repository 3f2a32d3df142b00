//! The printed policy passes parliament, the IAM linter (issue 12), with no
//! finding at any severity: unknown actions, resources of the wrong type,
//! condition keys an action does not support, `Resource: "*"` where the
//! action has resource-level permissions, malformed ARNs. parliament is
//! installed into the moto venv by `scripts/moto.sh` (MOTO_VENV, default
//! `target/moto-venv`); the test fails, never skips, without it.

use repave_aws::{iam_policy, PolicyScope};
use std::path::PathBuf;
use std::process::Command;

fn parliament() -> PathBuf {
    let venv = std::env::var("MOTO_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/moto-venv"));
    let venv = if venv.is_relative() {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..").join(venv)
    } else {
        venv
    };
    let bin = venv.join("bin/parliament");
    assert!(
        bin.exists(),
        "{} is missing: `scripts/moto.sh start` installs parliament into the moto venv",
        bin.display()
    );
    bin
}

fn lint(policy: &serde_json::Value) -> Vec<String> {
    let out = Command::new(parliament())
        .args(["--json", "--minimum_severity", "INFO", "--string"])
        .arg(policy.to_string())
        .output()
        .expect("parliament runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() || !stdout.trim().is_empty(),
        "parliament failed ({}): {stderr}",
        out.status
    );
    stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(String::from)
        .collect()
}

fn pipeline() -> repave_core::config::Pipeline {
    let src = r#"
[providers.aws]
region = "us-east-1"
[pipelines.web]
provider = "aws"
group = "web-asg"
parameter = "/golden/web"
[pipelines.web.builder]
subnet = "subnet-1"
security_groups = ["sg-1"]
instance_profile = "builder"
"#;
    repave_core::config::parse(src, "repave.toml")
        .expect("parses")
        .pipelines["web"]
        .clone()
}

fn scope(region: &str) -> PolicyScope {
    let partition = repave_aws::partition(region);
    PolicyScope {
        region: region.into(),
        account: "123456789012".into(),
        pass_roles: vec![
            format!("arn:{partition}:iam::123456789012:role/builder"),
            format!("arn:{partition}:iam::123456789012:role/web"),
        ],
        launch_templates: vec!["lt-0123".into()],
        subnets: vec!["subnet-2".into()],
        kms_keys: vec![format!("arn:{partition}:kms:{region}:123456789012:key/k")],
    }
}

/// parliament's RESOURCE_MISMATCH asks every statement naming an action to
/// name all of its required resource types. An action whose resources need
/// different conditions cannot be written so: AWS's own examples split
/// RunInstances into a statement for what it uses (image, subnet, security
/// group) and one for what it creates, conditioned on the request's tags
/// (EC2 User Guide, "Example policies to control access to the Amazon EC2
/// API", Launch instances: "Require tags"). These three actions are split
/// that way, and `tests/iam_coverage.rs` proves each of their resource types
/// is granted by some statement with conditions AWS evaluates for it.
const SPLIT_BY_CONDITION: &[&str] = &["ec2:RunInstances", "ec2:CreateImage", "ssm:SendCommand"];

/// Findings other than RESOURCE_MISMATCH of the split actions above.
fn unexpected(findings: Vec<String>) -> Vec<String> {
    findings
        .into_iter()
        .filter(|f| {
            let v: serde_json::Value = serde_json::from_str(f).unwrap_or_else(|e| panic!("finding {f}: {e}"));
            let split = v["issue"] == "RESOURCE_MISMATCH"
                && v["detail"].as_array().is_some_and(|d| {
                    d.iter()
                        .all(|x| SPLIT_BY_CONDITION.contains(&x["action"].as_str().unwrap_or_default()))
                });
            !split
        })
        .collect()
}

#[test]
fn the_printed_policy_has_no_parliament_finding() {
    for region in ["us-east-1", "cn-north-1", "us-gov-west-1"] {
        let findings = unexpected(lint(&iam_policy("web", &pipeline(), &scope(region))));
        assert!(
            findings.is_empty(),
            "{region}: parliament findings:\n{}",
            findings.join("\n")
        );
    }
}

/// The linter is really asked: a policy with a made-up action and a
/// resource of the wrong type has findings.
#[test]
fn parliament_finds_what_is_wrong() {
    let bad = serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [
            { "Effect": "Allow", "Action": "ec2:RunInstancez", "Resource": "*" },
            { "Effect": "Allow", "Action": "ssm:GetParameter", "Resource": "arn:aws:ec2:us-east-1:123456789012:instance/i-1" }
        ]
    });
    let findings = unexpected(lint(&bad)).join("\n");
    assert!(findings.contains("UNKNOWN_ACTION"), "{findings}");
    assert!(findings.contains("RESOURCE_MISMATCH"), "{findings}");
}
