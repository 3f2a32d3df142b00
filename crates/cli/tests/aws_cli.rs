//! The AWS provider through the real binary, against the moto server that
//! `scripts/test` starts (`REPAVE_MOTO_ENDPOINT`; the test fails without it).

use crate::common;

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

/// The policy is scoped with what the account says about the group (its
/// templates, subnets, instance roles): a group that does not exist is
/// bad input naming it, not a policy for nothing. The printed policy itself
/// is proven in crates/aws/tests/iam_*.rs.
#[test]
fn iam_policy_of_a_missing_group_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let c = config(dir.path());
    let r = aws(&["iam-policy", "web"], &c).expect_code(2);
    assert!(r.stdout.is_empty(), "no policy printed: {}", r.stdout);
    assert!(r.stderr.contains("cli-test-missing-group"), "{}", r.stderr);
}

/// The standard credential chain, not just environment keys: a profile
/// whose credentials come from `credential_process` (how SSO helpers and
/// vaults hand them out) reaches the API; with no credentials at all the
/// command fails saying so. HOME and the AWS files are the test's own.
#[test]
fn credential_process_profiles_are_used() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let c = config(dir.path());
    let marker = dir.path().join("creds-were-asked");
    let script = dir.path().join("creds.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\ntouch '{}'\necho '{{\"Version\": 1, \"AccessKeyId\": \"testing\", \"SecretAccessKey\": \"testing\"}}'\n",
            marker.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let aws_config = dir.path().join("aws-config");
    std::fs::write(
        &aws_config,
        format!("[profile ops]\ncredential_process = {}\n", script.display()),
    )
    .unwrap();
    let run = |profile: Option<&str>| {
        let mut r = Repave::new()
            .args(["--config", c.as_str(), "--region", "us-east-1"])
            .env("HOME", dir.path().to_str().unwrap())
            .env("AWS_CONFIG_FILE", aws_config.to_str().unwrap())
            .env("AWS_SHARED_CREDENTIALS_FILE", dir.path().join("none").to_str().unwrap())
            .env("AWS_EC2_METADATA_DISABLED", "true");
        for k in [
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN",
            "AWS_PROFILE",
            "AWS_WEB_IDENTITY_TOKEN_FILE",
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        ] {
            r = r.env_remove(k);
        }
        if let Some(p) = profile {
            r = r.args(["--profile", p]);
        }
        r.args(["--json", "plan"]).run()
    };
    let with = run(Some("ops"));
    assert!(marker.exists(), "credential_process was not run:\n{}", with.stderr);
    let v = with.expect_code(1).json();
    assert!(
        v["problems"]
            .to_string()
            .contains("/repave/cli-test/missing does not exist"),
        "moto answered through the profile's credentials: {v}"
    );
    std::fs::remove_file(&marker).unwrap();
    let without = run(None);
    assert!(!marker.exists());
    assert_ne!(without.code, 0, "{}", without.stdout);
    let said = format!("{}{}", without.stdout, without.stderr);
    assert!(
        said.contains("no usable AWS credentials") && said.contains("--profile"),
        "the error says what is missing and what to do: {said}"
    );
}

fn role_config(dir: &std::path::Path, aws_table: &str) -> String {
    let path = dir.join("repave.toml");
    std::fs::write(
        &path,
        format!(
            "[providers.aws]\nendpoint_url = {:?}\nemulator = true\n\n[pipelines.web]\nprovider = \"aws\"\ngroup = \"cli-test-missing-group\"\nparameter = \"/repave/cli-test/missing\"\n[pipelines.web.builder]\ninstance_type = \"t3.micro\"\n[pipelines.web.aws]\n{aws_table}\n",
            moto()
        ),
    )
    .unwrap();
    path.display().to_string()
}

/// A pipeline that assumes a role: iam-policy prints the role's policy and
/// the trust policy it needs, trusting whoever STS says runs repave (or
/// `--principal`), with the external id as a condition, in the region's
/// partition.
#[test]
fn iam_policy_prints_the_roles_trust_policy() {
    let dir = tempfile::tempdir().unwrap();
    let c = role_config(
        dir.path(),
        "region = \"eu-west-1\"\nrole_arn = \"arn:aws:iam::210987654321:role/repave\"\nexternal_id = \"tenant-42\"",
    );
    let v = aws(&["iam-policy", "web"], &c).expect_code(0).json();
    assert_eq!(v["role"], "arn:aws:iam::210987654321:role/repave");
    assert!(
        v["policy"]["Statement"].as_array().is_some_and(|s| !s.is_empty()),
        "{v}"
    );
    let trust = &v["trust_policy"]["Statement"][0];
    assert_eq!(trust["Action"], "sts:AssumeRole");
    assert_eq!(trust["Condition"]["StringEquals"]["sts:ExternalId"], "tenant-42");
    // moto's GetCallerIdentity for keys it does not know.
    let principal = trust["Principal"]["AWS"].as_str().unwrap();
    assert!(
        principal.starts_with("arn:aws:") && principal.contains(":123456789012:"),
        "{principal}"
    );
    assert!(!v.to_string().contains("testing"), "no credential in the output: {v}");

    let v = aws(
        &[
            "iam-policy",
            "web",
            "--principal",
            "arn:aws:sts::123456789012:assumed-role/control-plane/i-1",
        ],
        &c,
    )
    .expect_code(0)
    .json();
    assert_eq!(
        v["trust_policy"]["Statement"][0]["Principal"]["AWS"],
        "arn:aws:iam::123456789012:role/control-plane"
    );
    let bad = aws(&["iam-policy", "web", "--principal", "bob"], &c).expect_code(2);
    assert!(bad.stderr.contains("--principal \"bob\""), "{}", bad.stderr);
}

/// A malformed role ARN, or an external id without a role, is a config
/// error naming file:line:col, before any AWS call.
#[test]
fn a_malformed_role_is_a_config_error_with_its_position() {
    let dir = tempfile::tempdir().unwrap();
    let c = role_config(dir.path(), "role_arn = \"arn:aws:iam::42:role/repave\"");
    let r = aws(&["plan", "web"], &c).expect_code(2);
    assert!(
        r.stderr.contains("repave.toml:12:1: pipelines.web.aws.role_arn:") && r.stderr.contains("must be 12 digits"),
        "{}",
        r.stderr
    );
    let c = role_config(dir.path(), "external_id = \"tenant-42\"");
    let r = aws(&["iam-policy", "web"], &c).expect_code(2);
    assert!(
        r.stderr.contains("repave.toml:12:1: pipelines.web.aws.external_id:") && r.stderr.contains("role_arn"),
        "{}",
        r.stderr
    );
}

/// The moto venv's python (boto3 comes with moto): the test's own hands on
/// the account, for what repave must find there. Fails, never skips,
/// without it.
fn python() -> std::path::PathBuf {
    let venv = std::env::var("MOTO_VENV")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/moto-venv"));
    let venv = if venv.is_relative() {
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../..")
            .join(venv)
    } else {
        venv
    };
    let py = venv.join("bin/python");
    assert!(
        py.exists(),
        "{} missing: scripts/moto.sh installs the venv",
        py.display()
    );
    py
}

/// boto3 against moto in `region`: run `script` (python, with `ec2` bound
/// to an EC2 client), return what it prints.
fn boto3(region: &str, script: &str) -> String {
    let prelude = "import boto3, sys, time\nec2 = boto3.client('ec2', endpoint_url=sys.argv[1], region_name=sys.argv[2], aws_access_key_id='testing', aws_secret_access_key='testing')\n";
    python_script(&format!("{prelude}{script}"), &[&moto(), region])
}

/// Run python `code` with `args` (`sys.argv[1..]`); what it prints. A
/// failing script fails the test with its stderr.
fn python_script(code: &str, args: &[&str]) -> String {
    let out = std::process::Command::new(python())
        .arg("-c")
        .arg(code)
        .args(args)
        .output()
        .expect("python");
    assert!(
        out.status.success(),
        "boto3 script failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A builder a killed run left behind in `region` (tagged as repave tags
/// it, for a run the store never heard of).
fn leftover_builder(region: &str, pipeline: &str) -> String {
    boto3(
        region,
        &format!(
            "image = ec2.describe_images()['Images'][0]['ImageId']\n\
             r = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, TagSpecifications=[{{'ResourceType': 'instance', 'Tags': [\
             {{'Key': 'repave:role', 'Value': 'builder'}}, {{'Key': 'repave:run', 'Value': 'run-gone-{region}'}}, {{'Key': 'repave:pipeline', 'Value': '{pipeline}'}}]}}])\n\
             time.sleep(1.5)\n\
             print(r['Instances'][0]['InstanceId'])\n"
        ),
    )
}

fn instance_state(region: &str, id: &str) -> String {
    boto3(
        region,
        &format!(
            "print(ec2.describe_instances(InstanceIds=['{id}'])['Reservations'][0]['Instances'][0]['State']['Name'])"
        ),
    )
}

/// `gc` sweeps every account and region a pipeline names, each with its
/// own pipelines — not only the default `[providers.aws]` place. (Before:
/// all AWS pipelines were swept with the first one's region, and a builder
/// left in another region stayed running.)
#[test]
fn gc_sweeps_every_region_the_pipelines_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("repave.toml");
    let pipeline = |name: &str, region: &str| {
        format!(
            "[pipelines.{name}]\nprovider = \"aws\"\ngroup = \"cli-gc-{name}\"\nparameter = \"/repave/cli-gc/{name}\"\n[pipelines.{name}.builder]\ninstance_type = \"t3.micro\"\n[pipelines.{name}.aws]\nregion = \"{region}\"\n\n"
        )
    };
    std::fs::write(
        &path,
        format!(
            "[providers.aws]\nendpoint_url = {:?}\nemulator = true\n\n{}{}",
            moto(),
            pipeline("south", "ap-southeast-2"),
            pipeline("north", "eu-north-1")
        ),
    )
    .unwrap();
    let c = path.display().to_string();
    let south = leftover_builder("ap-southeast-2", "south");
    let north = leftover_builder("eu-north-1", "north");
    let v = aws(&["--json", "gc"], &c).expect_code(0).json();
    let terminated: Vec<&str> = v["actions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["action"] == "terminate")
        .filter_map(|a| a["instance"].as_str())
        .collect();
    assert!(
        terminated.contains(&south.as_str()) && terminated.contains(&north.as_str()),
        "{v}"
    );
    for (region, id) in [("ap-southeast-2", &south), ("eu-north-1", &north)] {
        let state = instance_state(region, id);
        assert!(
            state == "shutting-down" || state == "terminated",
            "{region} {id}: {state}"
        );
    }
}

/// A fresh 12-digit account id for this test run (the moto server lives
/// across tests).
fn fresh_account(n: u64) -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64;
    format!("{:012}", (t % 100_000_000_000) * 10 + n)
}

/// boto3 against moto as `account` in `region`: `script` runs with `ec2`,
/// `asg` and `ssm` clients bound (`client(name)` for others) and `args`
/// from `sys.argv[4]` on; what it prints.
fn boto3_as(account: &str, region: &str, script: &str, args: &[&str]) -> String {
    let prelude = "import boto3, sys, json\n\
        def client(s):\n    c = boto3.client(s, endpoint_url=sys.argv[1], region_name=sys.argv[2], aws_access_key_id='testing', aws_secret_access_key='testing')\n    \
        c.meta.events.register('before-sign.*.*', lambda request, **_: request.headers.__setitem__('x-moto-account-id', sys.argv[3]))\n    return c\n\
        ec2, asg, ssm = client('ec2'), client('autoscaling'), client('ssm')\n";
    let endpoint = moto();
    let argv: Vec<&str> = [endpoint.as_str(), region, account]
        .into_iter()
        .chain(args.iter().copied())
        .collect();
    python_script(&format!("{prelude}{script}"), &argv)
}

/// `repave serve` drives two pipelines at once, each in its own account
/// and region through a role it assumes (created with the trust and
/// permission policies `repave iam-policy` prints, which each run's
/// permission check at its start finds complete): both groups end on
/// their own new image and each parameter points at it, in its own
/// account. (Before: the second run was refused, its group "leased" by
/// the first — leases were keyed by group name alone.)
#[test]
fn serve_rolls_pipelines_in_two_accounts_and_regions_at_once() {
    use common::serve::{get, post, wait_state, Serve, TOKEN};
    let dir = tempfile::tempdir().unwrap();
    let places = [
        ("east", fresh_account(1), "us-east-2"),
        ("west", fresh_account(2), "us-west-2"),
    ];
    // Not `emulator`: the harness models Patch Manager, as AWS does.
    let mut src = format!("[providers.aws]\nendpoint_url = {:?}\n\n", moto());
    for (name, account, region) in &places {
        src.push_str(&format!(
            "[pipelines.{name}]\nprovider = \"aws\"\ngroup = \"web-asg\"\nparameter = \"/repave/web/latestAmi\"\nimage_timeout = \"60s\"\n\
             [pipelines.{name}.aws]\nregion = \"{region}\"\nrole_arn = \"arn:aws:iam::{account}:role/repave\"\n\
             [pipelines.{name}.builder]\nready_timeout = \"60s\"\n[pipelines.{name}.test]\ntimeout = \"30s\"\n\
             [pipelines.{name}.rollout]\nmin_healthy_percent = 100\nmax_healthy_percent = 200\nwarmup = \"0s\"\ntimeout = \"120s\"\n\n"
        ));
    }
    let path = dir.path().join("repave.toml");
    std::fs::write(&path, &src).unwrap();
    let c = path.display().to_string();
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/aws_fleet.py");
    let mut golden = Vec::new();
    for (name, account, region) in &places {
        let v = aws(&["--json", "iam-policy", name], &c).expect_code(0).json();
        let trust = v["trust_policy"].to_string();
        let out = std::process::Command::new(python())
            .arg(&fixture)
            .args([moto().as_str(), region, account, trust.as_str()])
            .output()
            .expect("python");
        assert!(
            out.status.success(),
            "fleet in {account}/{region}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let fleet: serde_json::Value = serde_json::from_slice(&out.stdout).expect("fixture prints JSON");
        assert_eq!(fleet["role_arn"], format!("arn:aws:iam::{account}:role/repave"));
        golden.push(fleet["golden"].as_str().unwrap().to_string());
        // As an operator does: once the group and role exist, print the
        // role's policy (now scoped to the group's templates and instance
        // role) and attach it.
        let v = aws(&["--json", "iam-policy", name], &c).expect_code(0).json();
        let policy = v["policy"].to_string();
        boto3_as(
            account,
            region,
            "client('iam').put_role_policy(RoleName='repave', PolicyName='repave', PolicyDocument=sys.argv[4])",
            &[&policy],
        );
    }

    let mut cmd = common::serve::serve_command(&path);
    cmd.env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .env_remove("AWS_PROFILE");
    let serve = Serve::spawn(cmd, &dir.path().join("serve.log"));
    let runs: Vec<String> = places
        .iter()
        .map(|(name, ..)| {
            let (status, v) = post(
                &serve.addr,
                "/api/runs",
                Some(TOKEN),
                &format!(r#"{{"pipeline":"{name}","kind":"run"}}"#),
            );
            assert_eq!(status, 202, "{name}: {v}");
            v["run"]["id"].as_str().unwrap().to_string()
        })
        .collect();
    // Both drive at once: seen running side by side before either ends.
    let together = common::wait_for("both runs driving at once", std::time::Duration::from_secs(120), || {
        let states: Vec<String> = runs
            .iter()
            .map(|r| {
                get(&serve.addr, &format!("/api/runs/{r}"))["run"]["state"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        if states.iter().all(|s| s == "running") {
            return Some(true);
        }
        states.iter().any(|s| s != "running" && s != "pending").then_some(false)
    });
    assert!(together, "one run ended before the other was driven");
    for r in &runs {
        let state = wait_state(
            &serve.addr,
            r,
            &["succeeded", "failed", "paused", "cancelled"],
            std::time::Duration::from_secs(300),
        );
        if state != "succeeded" {
            let v = get(&serve.addr, &format!("/api/runs/{r}"));
            panic!("run {r} {state}: {}\nevents: {}", v["run"], v["events"]);
        }
        let v = get(&serve.addr, &format!("/api/runs/{r}"));
        assert!(
            v["events"].as_array().unwrap().iter().any(|e| e["message"]
                .as_str()
                .is_some_and(|m| m.contains("the caller holds every statement"))),
            "run {r}: the role's permissions were checked at its start: {}",
            v["events"]
        );
    }
    for ((_, account, region), golden) in places.iter().zip(&golden) {
        let out = boto3_as(
            account,
            region,
            "ids = [m['InstanceId'] for m in asg.describe_auto_scaling_groups(AutoScalingGroupNames=['web-asg'])['AutoScalingGroups'][0]['Instances'] if m['LifecycleState'] == 'InService']\n\
             images = sorted({i['ImageId'] for r in ec2.describe_instances(InstanceIds=ids)['Reservations'] for i in r['Instances']})\n\
             print(json.dumps({'members': len(ids), 'images': images, 'parameter': ssm.get_parameter(Name='/repave/web/latestAmi')['Parameter']['Value']}))",
            &[],
        );
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        let images = v["images"].as_array().unwrap();
        assert_eq!(v["members"], 2, "{account}/{region}: {v}");
        assert_eq!(images.len(), 1, "{account}/{region}: {v}");
        assert_ne!(
            images[0].as_str(),
            Some(golden.as_str()),
            "{account}/{region} still on the golden image: {v}"
        );
        assert_eq!(v["parameter"], images[0], "{account}/{region}: {v}");
    }
}
