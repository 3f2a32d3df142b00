//! The least-privilege IAM policy a pipeline needs, as JSON: every call
//! this provider makes, scoped to the pipeline's group, parameter, subnets,
//! security groups, launch templates and the SSM documents it sends, to the
//! instance roles it passes, the KMS keys of its encrypted volumes, and to
//! resources tagged `repave:pipeline = <name>` where EC2 supports tag
//! conditions. Describe and Get-invocation calls have no resource-level
//! permissions in AWS, so they stay on `*`.
//!
//! The policy is a pure function of the pipeline and a [`PolicyScope`]:
//! what only the account can say (which roles the instance profiles hold,
//! which templates the group launches from, which keys encrypt its volumes)
//! is read once by [`crate::AwsProvider::policy_scope`].
//!
//! How it is proven (issue 12): every operation the provider makes on the
//! AWS-behaviour harness is recorded and checked against this policy with
//! AWS's service authorization reference (`tests/iam_coverage.rs`), whole
//! pipelines run as an IAM user holding it (`tests/iam_enforced.rs`), and
//! parliament lints it (`tests/iam_lint.rs`).

use repave_core::config::Pipeline;
use repave_core::provider::tag;
use serde_json::{json, Value};

const DOCUMENTS: &[&str] = &["AWS-RunShellScript", "AWS-RunPowerShellScript", "AWS-RunPatchBaseline"];

/// What the policy is scoped to beyond the pipeline's config: read from
/// the account by [`crate::AwsProvider::policy_scope`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PolicyScope {
    /// The region the pipeline runs in; its partition is [`partition`].
    pub region: String,
    /// The account id (`*` when unknown).
    pub account: String,
    /// Role ARNs of the builder's instance profile and of the profiles the
    /// group's launch templates / configuration name (`iam:PassRole`).
    pub pass_roles: Vec<String>,
    /// Launch template ids the group launches from (the image test launches
    /// from them; publishing adds versions to them).
    pub launch_templates: Vec<String>,
    /// Subnets the group launches into (the image test instance uses one).
    pub subnets: Vec<String>,
    /// KMS key ARNs that encrypt the volumes repave creates (the golden
    /// image's snapshots, the templates' block devices, the account's EBS
    /// default key when encryption by default is on).
    pub kms_keys: Vec<String>,
}

/// The AWS partition of a region: `aws-cn` for China, `aws-us-gov` for
/// GovCloud, `aws-iso*` for the isolated regions, `aws` otherwise (the
/// config's own [`repave_core::config::partition_of`]).
pub fn partition(region: &str) -> &'static str {
    repave_core::config::partition_of(region)
}

/// ARNs of one partition, region and account.
struct Arns<'a> {
    partition: &'static str,
    region: &'a str,
    account: &'a str,
}

impl Arns<'_> {
    fn ec2(&self, kind: &str, id: &str) -> String {
        format!(
            "arn:{}:ec2:{}:{}:{kind}/{id}",
            self.partition, self.region, self.account
        )
    }
    /// Images have no account in their ARN; AWS's own documents neither.
    fn ec2_unowned(&self, kind: &str, id: &str) -> String {
        format!("arn:{}:ec2:{}::{kind}/{id}", self.partition, self.region)
    }
    fn service(&self, service: &str, rest: &str) -> String {
        format!(
            "arn:{}:{service}:{}:{}:{rest}",
            self.partition, self.region, self.account
        )
    }
}

fn ids_or_all(ids: &[String]) -> Vec<String> {
    if ids.is_empty() {
        vec!["*".into()]
    } else {
        ids.to_vec()
    }
}

/// The policy document for pipeline `name`.
pub fn iam_policy(name: &str, pipeline: &Pipeline, scope: &PolicyScope) -> Value {
    let region = if scope.region.is_empty() {
        "*"
    } else {
        scope.region.as_str()
    };
    let account = if scope.account.is_empty() {
        "*"
    } else {
        scope.account.as_str()
    };
    let arn = Arns {
        partition: partition(region),
        region,
        account,
    };
    let owned = json!({ "StringEquals": { format!("aws:ResourceTag/{}", tag::PIPELINE): name } });
    let requested = json!({ "StringEquals": { format!("aws:RequestTag/{}", tag::PIPELINE): name } });
    let parameter = arn.service(
        "ssm",
        &format!("parameter/{}", pipeline.parameter.trim_start_matches('/')),
    );
    let group = arn.service(
        "autoscaling",
        &format!("autoScalingGroup:*:autoScalingGroupName/{}", pipeline.group),
    );
    let templates: Vec<String> = ids_or_all(&scope.launch_templates)
        .iter()
        .map(|t| arn.ec2("launch-template", t))
        .collect();

    // What the builder launches with (its own subnet and security groups)
    // and what the image test instance launches with (the group's subnets
    // and, through `LaunchFromGroupTemplate`, whatever its template names).
    let mut launch_from = vec![arn.ec2_unowned("image", "*"), arn.ec2("network-interface", "*")];
    launch_from.extend(templates.iter().cloned());
    let mut subnets: Vec<String> = pipeline.builder.subnet.iter().cloned().collect();
    subnets.extend(scope.subnets.iter().cloned());
    subnets.sort();
    subnets.dedup();
    if pipeline.builder.subnet.is_none() && scope.subnets.is_empty() {
        subnets = vec!["*".into()];
    }
    launch_from.extend(subnets.iter().map(|s| arn.ec2("subnet", s)));
    if pipeline.builder.security_groups.is_empty() {
        launch_from.push(arn.ec2("security-group", "*"));
    } else {
        launch_from.extend(
            pipeline
                .builder
                .security_groups
                .iter()
                .map(|g| arn.ec2("security-group", g)),
        );
    }

    // Who the run is: the pipeline's role, or whoever runs repave.
    let principals: Vec<String> = match pipeline.aws.as_ref().and_then(|a| a.role_arn.clone()) {
        Some(role) => vec![role],
        None => ["user", "role", "group"]
            .iter()
            .map(|k| format!("arn:{}:iam::{account}:{k}/*", arn.partition))
            .collect(),
    };
    let mut statements = vec![
        json!({
            "Sid": "Describe",
            "Effect": "Allow",
            "Action": [
                "ec2:DescribeImages", "ec2:DescribeInstances", "ec2:DescribeInstanceStatus",
                "ec2:DescribeLaunchTemplates", "ec2:DescribeLaunchTemplateVersions",
                "ec2:DescribeSnapshots",
                "autoscaling:DescribeAutoScalingGroups", "autoscaling:DescribeLaunchConfigurations",
                "autoscaling:DescribeLifecycleHooks", "autoscaling:DescribeInstanceRefreshes",
                "autoscaling:DescribeWarmPool",
                "elasticloadbalancing:DescribeTargetHealth", "elasticloadbalancing:DescribeTargetGroups",
                "elasticloadbalancing:DescribeTargetGroupAttributes",
                "elasticloadbalancing:DescribeInstanceHealth", "elasticloadbalancing:DescribeLoadBalancers",
                "elasticloadbalancing:DescribeLoadBalancerAttributes",
                "ssm:GetCommandInvocation", "ssm:DescribePatchBaselines",
                // Read by the run's permission check, as `repave iam-policy`
                // reads them (the KMS keys of encrypted volumes).
                "ec2:GetEbsEncryptionByDefault", "ec2:GetEbsDefaultKmsKeyId"
            ],
            "Resource": "*"
        }),
        // A run checks, before it changes anything, that its principal
        // holds this policy (`iam:SimulatePrincipalPolicy` on itself), reading
        // what the policy is scoped to as `repave iam-policy` does.
        json!({
            "Sid": "CheckOwnPermissions",
            "Effect": "Allow",
            "Action": "iam:SimulatePrincipalPolicy",
            "Resource": principals
        }),
        json!({
            "Sid": "ReadPolicyScope",
            "Effect": "Allow",
            "Action": "iam:GetInstanceProfile",
            "Resource": format!("arn:{}:iam::{account}:instance-profile/*", arn.partition)
        }),
        json!({ "Sid": "LaunchFrom", "Effect": "Allow", "Action": "ec2:RunInstances", "Resource": launch_from }),
        // The image test instance launches from the group's own template:
        // whatever that template names (key pair, placement group,
        // security groups, snapshots, capacity reservation, Spot request)
        // may be used, but only when launching from that template.
        json!({
            "Sid": "LaunchFromGroupTemplate",
            "Effect": "Allow",
            "Action": "ec2:RunInstances",
            "Resource": [
                arn.ec2("key-pair", "*"), arn.ec2("security-group", "*"), arn.ec2("placement-group", "*"),
                arn.ec2_unowned("snapshot", "*"), arn.ec2("capacity-reservation", "*"),
                arn.ec2("spot-instances-request", "*"), arn.ec2("subnet", "*")
            ],
            "Condition": {
                "ArnLike": { "ec2:LaunchTemplate": templates },
                "Bool": { "ec2:IsLaunchTemplateResource": "true" }
            }
        }),
        json!({
            "Sid": "LaunchTaggedOnly",
            "Effect": "Allow",
            "Action": "ec2:RunInstances",
            "Resource": [arn.ec2("instance", "*"), arn.ec2("volume", "*")],
            "Condition": requested
        }),
        // Tags on create: repave's own (instance, volume, image, snapshot)
        // and those the group's template adds at launch (its instance,
        // volume, network interface and Spot request tags).
        json!({
            "Sid": "TagOnCreate",
            "Effect": "Allow",
            "Action": "ec2:CreateTags",
            "Resource": [
                arn.ec2("instance", "*"), arn.ec2("volume", "*"), arn.ec2("network-interface", "*"),
                arn.ec2("spot-instances-request", "*"),
                arn.ec2_unowned("image", "*"), arn.ec2_unowned("snapshot", "*")
            ],
            "Condition": { "StringEquals": { "ec2:CreateAction": ["RunInstances", "CreateImage"] } }
        }),
        json!({
            "Sid": "OwnInstancesAndImages",
            "Effect": "Allow",
            "Action": [
                "ec2:StopInstances", "ec2:RebootInstances", "ec2:TerminateInstances",
                "ec2:CreateImage", "ec2:DeregisterImage", "ec2:DeleteSnapshot", "ec2:CreateTags"
            ],
            "Resource": [arn.ec2("instance", "*"), arn.ec2_unowned("image", "*"), arn.ec2_unowned("snapshot", "*")],
            "Condition": owned
        }),
        json!({
            "Sid": "NewImage",
            "Effect": "Allow",
            "Action": "ec2:CreateImage",
            "Resource": [arn.ec2_unowned("image", "*"), arn.ec2_unowned("snapshot", "*")],
            "Condition": requested
        }),
        json!({
            "Sid": "LaunchTemplateVersions",
            "Effect": "Allow",
            // ModifyLaunchTemplate: a group on $Default gets the new version as the default.
            "Action": ["ec2:CreateLaunchTemplateVersion", "ec2:ModifyLaunchTemplate"],
            "Resource": templates
        }),
        json!({
            "Sid": "Group",
            "Effect": "Allow",
            "Action": [
                "autoscaling:UpdateAutoScalingGroup", "autoscaling:SetDesiredCapacity",
                "autoscaling:TerminateInstanceInAutoScalingGroup", "autoscaling:SetInstanceProtection",
                "autoscaling:StartInstanceRefresh", "autoscaling:CancelInstanceRefresh",
                // AZRebalance, AlarmNotification, ScheduledActions are held
                // during a roll. (Warm pool instances on the old image are
                // terminated with TerminateInstanceInAutoScalingGroup; the
                // pool's configuration is never changed.)
                "autoscaling:SuspendProcesses", "autoscaling:ResumeProcesses"
            ],
            "Resource": group
        }),
        json!({
            "Sid": "LaunchConfigurations",
            "Effect": "Allow",
            "Action": "autoscaling:CreateLaunchConfiguration",
            "Resource": arn.service("autoscaling", "launchConfiguration:*:launchConfigurationName/*")
        }),
        json!({
            "Sid": "Targets",
            "Effect": "Allow",
            "Action": ["elasticloadbalancing:RegisterTargets", "elasticloadbalancing:DeregisterTargets"],
            "Resource": arn.service("elasticloadbalancing", "targetgroup/*")
        }),
        // Classic Load Balancers attached through LoadBalancerNames.
        json!({
            "Sid": "ClassicLoadBalancers",
            "Effect": "Allow",
            "Action": [
                "elasticloadbalancing:RegisterInstancesWithLoadBalancer",
                "elasticloadbalancing:DeregisterInstancesFromLoadBalancer"
            ],
            "Resource": arn.service("elasticloadbalancing", "loadbalancer/*")
        }),
        json!({
            "Sid": "GoldenParameter",
            "Effect": "Allow",
            "Action": ["ssm:GetParameter", "ssm:GetParameterHistory", "ssm:PutParameter", "ssm:LabelParameterVersion"],
            "Resource": parameter
        }),
        json!({
            "Sid": "RunCommandDocuments",
            "Effect": "Allow",
            "Action": "ssm:SendCommand",
            // AWS's own documents (no account in their ARN; `*` matches the
            // empty account, and no account may name a document `AWS-*`).
            "Resource": DOCUMENTS.iter().map(|d| format!("arn:{}:ssm:{}:*:document/{d}", arn.partition, arn.region)).collect::<Vec<_>>()
        }),
        // The run's patch baseline (the pipeline's selection) and its patch
        // group; created, replaced with the frozen list, removed.
        // CreatePatchBaseline has no resource type: only the pipeline's tag
        // on the new baseline scopes it.
        json!({
            "Sid": "NewPatchBaseline",
            "Effect": "Allow",
            "Action": "ssm:CreatePatchBaseline",
            "Resource": "*",
            "Condition": requested
        }),
        json!({
            "Sid": "PatchBaselines",
            "Effect": "Allow",
            "Action": [
                "ssm:UpdatePatchBaseline", "ssm:GetPatchBaseline",
                "ssm:DeletePatchBaseline", "ssm:RegisterPatchBaselineForPatchGroup",
                "ssm:DeregisterPatchBaselineForPatchGroup", "ssm:ListTagsForResource"
            ],
            "Resource": arn.service("ssm", "patchbaseline/*")
        }),
        // A patch command still running at patch.timeout is cancelled;
        // CancelCommand has no resource-level permissions.
        // ListCommands (a command already sent with this token is not sent
        // again) has no resource-level permissions either.
        json!({ "Sid": "CommandControl", "Effect": "Allow", "Action": ["ssm:CancelCommand", "ssm:ListCommands"], "Resource": "*" }),
        json!({
            "Sid": "RunCommandOnOwnInstances",
            "Effect": "Allow",
            "Action": "ssm:SendCommand",
            "Resource": arn.ec2("instance", "*"),
            "Condition": { "StringEquals": { format!("ssm:resourceTag/{}", tag::PIPELINE): name } }
        }),
        // The builder's patch results; SSM names EC2 instances and managed
        // (hybrid) instances alike as this action's resources.
        json!({
            "Sid": "PatchStatesOfOwnInstances",
            "Effect": "Allow",
            "Action": ["ssm:DescribeInstancePatches", "ssm:DescribeInstancePatchStates"],
            "Resource": [arn.ec2("instance", "*"), arn.service("ssm", "managed-instance/*")],
            "Condition": { "StringEquals": { format!("ssm:resourceTag/{}", tag::PIPELINE): name } }
        }),
    ];
    // The builder's profile, and the group's templates' profiles: the image
    // test instance launches with it, and Auto Scaling requires PassRole
    // for the role of a template or configuration a group is updated to.
    let mut roles = scope.pass_roles.clone();
    roles.sort();
    roles.dedup();
    if !roles.is_empty() {
        statements.push(json!({
            "Sid": "PassInstanceRoles",
            "Effect": "Allow",
            "Action": "iam:PassRole",
            "Resource": roles
        }));
    }
    // Customer managed keys of encrypted volumes: what EC2 asks KMS for on
    // the caller's behalf when it launches from, or images, volumes
    // encrypted with them (EBS encryption, "Permissions for IAM users").
    let mut keys = scope.kms_keys.clone();
    keys.sort();
    keys.dedup();
    if !keys.is_empty() {
        let via_ec2 = format!("ec2.{region}.amazonaws.com");
        statements.push(json!({
            "Sid": "EncryptedVolumes",
            "Effect": "Allow",
            "Action": [
                "kms:Decrypt", "kms:DescribeKey", "kms:GenerateDataKeyWithoutPlaintext",
                "kms:ReEncryptFrom", "kms:ReEncryptTo"
            ],
            "Resource": keys,
            "Condition": { "StringEquals": { "kms:ViaService": via_ec2 } }
        }));
        statements.push(json!({
            "Sid": "EncryptedVolumeGrants",
            "Effect": "Allow",
            "Action": "kms:CreateGrant",
            "Resource": keys,
            "Condition": {
                "StringEquals": { "kms:ViaService": via_ec2 },
                "Bool": { "kms:GrantIsForAWSResource": "true" }
            }
        }));
    }
    json!({ "Version": "2012-10-17", "Statement": statements })
}

/// The same policy with every `Resource` widened to `*` and every
/// `Condition` dropped: what moto's IAM enforcement can evaluate (it
/// matches EC2, Auto Scaling, SSM and ELB actions against `*` only, and
/// denies any condition whose keys the request does not carry).
pub fn widened(policy: &Value) -> Value {
    let mut p = policy.clone();
    if let Some(statements) = p["Statement"].as_array_mut() {
        for s in statements {
            if let Some(o) = s.as_object_mut() {
                o.insert("Resource".into(), json!("*"));
                o.remove("Condition");
            }
        }
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pipeline() -> Pipeline {
        let src = r#"
[providers.aws]
region = "eu-west-1"
[pipelines.web]
provider = "aws"
group = "web-asg"
parameter = "/golden/latestAmi"
[pipelines.web.builder]
subnet = "subnet-123"
security_groups = ["sg-1"]
instance_profile = "builder"
"#;
        repave_core::config::parse(src, "repave.toml")
            .expect("parses")
            .pipelines["web"]
            .clone()
    }

    fn scope(region: &str) -> PolicyScope {
        PolicyScope {
            region: region.into(),
            account: "123456789012".into(),
            pass_roles: vec![
                "arn:aws:iam::123456789012:role/builder".into(),
                "arn:aws:iam::123456789012:role/web".into(),
            ],
            launch_templates: vec!["lt-0abc".into()],
            subnets: vec!["subnet-9".into()],
            kms_keys: vec!["arn:aws:kms:eu-west-1:123456789012:key/k1".into()],
        }
    }

    fn statement<'a>(p: &'a Value, sid: &str) -> &'a Value {
        p["Statement"]
            .as_array()
            .expect("statements")
            .iter()
            .find(|s| s["Sid"] == sid)
            .unwrap_or_else(|| panic!("no statement {sid}"))
    }

    #[test]
    fn policy_is_scoped_to_the_pipeline() {
        let p = iam_policy("web", &pipeline(), &scope("eu-west-1"));
        let text = p.to_string();
        assert_eq!(p["Version"], "2012-10-17");
        assert!(
            text.contains("arn:aws:autoscaling:eu-west-1:123456789012:autoScalingGroup:*:autoScalingGroupName/web-asg")
        );
        assert!(text.contains("arn:aws:ssm:eu-west-1:123456789012:parameter/golden/latestAmi"));
        assert!(text.contains("subnet/subnet-123") && text.contains("subnet/subnet-9"));
        assert!(text.contains("security-group/sg-1"));
        assert!(text.contains("aws:ResourceTag/repave:pipeline"));
        assert!(text.contains("patchbaseline/*") && text.contains("ssm:CancelCommand"));
        assert!(!text.contains("AWS-InstallWindowsUpdates"), "not sent any more");
        // No wildcard actions, no full-access shortcuts.
        for s in p["Statement"].as_array().expect("statements") {
            let actions: Vec<String> = match &s["Action"] {
                Value::String(a) => vec![a.clone()],
                Value::Array(a) => a.iter().map(|x| x.as_str().expect("action").to_string()).collect(),
                other => panic!("bad action {other}"),
            };
            assert!(actions.iter().all(|a| !a.contains('*')), "{actions:?}");
        }
        // Mutations never on "*" except where AWS has no resource ARN.
        let mutating_on_star: Vec<&Value> = p["Statement"]
            .as_array()
            .expect("statements")
            .iter()
            .filter(|s| {
                s["Resource"] == "*"
                    && !["Describe", "CommandControl", "NewPatchBaseline"]
                        .contains(&s["Sid"].as_str().unwrap_or_default())
            })
            .collect();
        assert!(mutating_on_star.is_empty(), "{mutating_on_star:?}");
    }

    #[test]
    fn pass_role_is_scoped_to_the_instance_roles() {
        let p = iam_policy("web", &pipeline(), &scope("eu-west-1"));
        assert_eq!(
            statement(&p, "PassInstanceRoles")["Resource"],
            json!([
                "arn:aws:iam::123456789012:role/builder",
                "arn:aws:iam::123456789012:role/web"
            ])
        );
        // No role to pass, no PassRole at all.
        let none = PolicyScope {
            pass_roles: vec![],
            ..scope("eu-west-1")
        };
        assert!(!iam_policy("web", &pipeline(), &none)
            .to_string()
            .contains("iam:PassRole"));
    }

    #[test]
    fn partition_comes_from_the_region() {
        for (region, partition_name) in [
            ("eu-west-1", "aws"),
            ("cn-north-1", "aws-cn"),
            ("cn-northwest-1", "aws-cn"),
            ("us-gov-west-1", "aws-us-gov"),
            ("us-east-1", "aws"),
            ("us-iso-east-1", "aws-iso"),
        ] {
            assert_eq!(partition(region), partition_name, "{region}");
            let p = iam_policy("web", &pipeline(), &scope(region));
            for s in p["Statement"].as_array().expect("statements") {
                let resources = match &s["Resource"] {
                    Value::String(r) => vec![r.clone()],
                    Value::Array(r) => r.iter().map(|x| x.as_str().expect("resource").to_string()).collect(),
                    other => panic!("bad resource {other}"),
                };
                for r in resources
                    .iter()
                    .filter(|r| r.as_str() != "*" && !r.contains(":iam::") && !r.contains(":kms:"))
                {
                    assert!(r.starts_with(&format!("arn:{partition_name}:")), "{region}: {r}");
                    assert!(r.contains(&format!(":{region}:")), "{region}: {r}");
                }
            }
        }
    }

    #[test]
    fn launching_from_the_group_template_is_allowed_only_from_it() {
        let p = iam_policy("web", &pipeline(), &scope("eu-west-1"));
        let s = statement(&p, "LaunchFromGroupTemplate");
        assert_eq!(
            s["Condition"]["ArnLike"]["ec2:LaunchTemplate"],
            json!(["arn:aws:ec2:eu-west-1:123456789012:launch-template/lt-0abc"])
        );
        assert!(s["Resource"].to_string().contains("key-pair/*"));
        assert_eq!(
            statement(&p, "LaunchTemplateVersions")["Resource"],
            json!(["arn:aws:ec2:eu-west-1:123456789012:launch-template/lt-0abc"])
        );
    }

    #[test]
    fn kms_statements_only_for_encrypting_keys() {
        let p = iam_policy("web", &pipeline(), &scope("eu-west-1"));
        let s = statement(&p, "EncryptedVolumeGrants");
        assert_eq!(s["Condition"]["Bool"]["kms:GrantIsForAWSResource"], "true");
        assert_eq!(
            s["Condition"]["StringEquals"]["kms:ViaService"],
            "ec2.eu-west-1.amazonaws.com"
        );
        let none = PolicyScope {
            kms_keys: vec![],
            ..scope("eu-west-1")
        };
        assert!(!iam_policy("web", &pipeline(), &none).to_string().contains("kms:"));
    }

    #[test]
    fn widened_has_no_resource_but_star_and_no_condition() {
        let w = widened(&iam_policy("web", &pipeline(), &scope("eu-west-1")));
        for s in w["Statement"].as_array().expect("statements") {
            assert_eq!(s["Resource"], "*");
            assert!(s.get("Condition").is_none());
        }
    }
}
