//! The least-privilege IAM policy a pipeline needs, as JSON: every call
//! this provider makes, scoped to the pipeline's group, parameter, subnet,
//! security groups and the SSM documents it sends, and to resources tagged
//! `repave:pipeline = <name>` where EC2 supports tag conditions. Describe
//! and Get-invocation calls have no resource-level permissions in AWS, so
//! they stay on `*`.

use repave_core::config::Pipeline;
use repave_core::provider::tag;
use serde_json::{json, Value};

const DOCUMENTS: &[&str] = &["AWS-RunShellScript", "AWS-RunPowerShellScript", "AWS-RunPatchBaseline"];

fn ec2(kind: &str, id: &str) -> String {
    format!("arn:aws:ec2:*:*:{kind}/{id}")
}

/// The policy document for pipeline `name`.
pub fn iam_policy(name: &str, pipeline: &Pipeline) -> Value {
    let owned = json!({ "StringEquals": { format!("aws:ResourceTag/{}", tag::PIPELINE): name } });
    let requested = json!({ "StringEquals": { format!("aws:RequestTag/{}", tag::PIPELINE): name } });
    let parameter = format!(
        "arn:aws:ssm:*:*:parameter/{}",
        pipeline.parameter.trim_start_matches('/')
    );
    let group = format!(
        "arn:aws:autoscaling:*:*:autoScalingGroup:*:autoScalingGroupName/{}",
        pipeline.group
    );

    let mut launch_from = vec![
        ec2("image", "*"),
        ec2("network-interface", "*"),
        ec2("launch-template", "*"),
    ];
    match &pipeline.builder.subnet {
        Some(s) => launch_from.push(ec2("subnet", s)),
        None => launch_from.push(ec2("subnet", "*")),
    }
    if pipeline.builder.security_groups.is_empty() {
        launch_from.push(ec2("security-group", "*"));
    } else {
        launch_from.extend(
            pipeline
                .builder
                .security_groups
                .iter()
                .map(|g| ec2("security-group", g)),
        );
    }

    let mut statements = vec![
        json!({
            "Sid": "Describe",
            "Effect": "Allow",
            "Action": [
                "ec2:DescribeImages", "ec2:DescribeInstances", "ec2:DescribeInstanceStatus",
                "ec2:DescribeLaunchTemplates", "ec2:DescribeLaunchTemplateVersions",
                "autoscaling:DescribeAutoScalingGroups", "autoscaling:DescribeLaunchConfigurations",
                "autoscaling:DescribeLifecycleHooks", "autoscaling:DescribeInstanceRefreshes",
                "elasticloadbalancing:DescribeTargetHealth", "elasticloadbalancing:DescribeTargetGroups",
                "elasticloadbalancing:DescribeTargetGroupAttributes",
                "ssm:GetCommandInvocation", "ssm:DescribeInstancePatches", "ssm:DescribeInstancePatchStates",
                "ssm:DescribePatchBaselines"
            ],
            "Resource": "*"
        }),
        json!({ "Sid": "LaunchFrom", "Effect": "Allow", "Action": "ec2:RunInstances", "Resource": launch_from }),
        json!({
            "Sid": "LaunchTaggedOnly",
            "Effect": "Allow",
            "Action": "ec2:RunInstances",
            "Resource": [ec2("instance", "*"), ec2("volume", "*")],
            "Condition": requested
        }),
        json!({
            "Sid": "TagOnCreate",
            "Effect": "Allow",
            "Action": "ec2:CreateTags",
            "Resource": [ec2("instance", "*"), ec2("volume", "*"), "arn:aws:ec2:*::image/*", "arn:aws:ec2:*::snapshot/*"],
            "Condition": { "StringEquals": { "ec2:CreateAction": ["RunInstances", "CreateImage"] } }
        }),
        json!({
            "Sid": "OwnInstancesAndImages",
            "Effect": "Allow",
            "Action": [
                "ec2:StopInstances", "ec2:StartInstances", "ec2:RebootInstances", "ec2:TerminateInstances",
                "ec2:CreateImage", "ec2:DeregisterImage", "ec2:DeleteSnapshot", "ec2:CreateTags"
            ],
            "Resource": [ec2("instance", "*"), "arn:aws:ec2:*::image/*", "arn:aws:ec2:*::snapshot/*"],
            "Condition": owned
        }),
        json!({
            "Sid": "NewImage",
            "Effect": "Allow",
            "Action": "ec2:CreateImage",
            "Resource": ["arn:aws:ec2:*::image/*", "arn:aws:ec2:*::snapshot/*"],
            "Condition": requested
        }),
        json!({
            "Sid": "LaunchTemplateVersions",
            "Effect": "Allow",
            // ModifyLaunchTemplate: a group on $Default gets the new version as the default.
            "Action": ["ec2:CreateLaunchTemplateVersion", "ec2:ModifyLaunchTemplate"],
            "Resource": ec2("launch-template", "*")
        }),
        json!({
            "Sid": "Group",
            "Effect": "Allow",
            "Action": [
                "autoscaling:UpdateAutoScalingGroup", "autoscaling:SetDesiredCapacity",
                "autoscaling:TerminateInstanceInAutoScalingGroup", "autoscaling:SetInstanceProtection",
                "autoscaling:StartInstanceRefresh", "autoscaling:CancelInstanceRefresh"
            ],
            "Resource": group
        }),
        json!({
            "Sid": "LaunchConfigurations",
            "Effect": "Allow",
            "Action": "autoscaling:CreateLaunchConfiguration",
            "Resource": "arn:aws:autoscaling:*:*:launchConfiguration:*:launchConfigurationName/*"
        }),
        json!({
            "Sid": "Targets",
            "Effect": "Allow",
            "Action": ["elasticloadbalancing:RegisterTargets", "elasticloadbalancing:DeregisterTargets"],
            "Resource": "arn:aws:elasticloadbalancing:*:*:targetgroup/*"
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
            "Resource": DOCUMENTS.iter().map(|d| format!("arn:aws:ssm:*::document/{d}")).collect::<Vec<_>>()
        }),
        // The run's patch baseline (the pipeline's selection) and its patch
        // group; created, replaced with the frozen list, removed.
        json!({
            "Sid": "PatchBaselines",
            "Effect": "Allow",
            "Action": [
                "ssm:CreatePatchBaseline", "ssm:UpdatePatchBaseline", "ssm:GetPatchBaseline",
                "ssm:DeletePatchBaseline", "ssm:RegisterPatchBaselineForPatchGroup",
                "ssm:DeregisterPatchBaselineForPatchGroup", "ssm:AddTagsToResource", "ssm:ListTagsForResource"
            ],
            "Resource": "arn:aws:ssm:*:*:patchbaseline/*"
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
            "Resource": ec2("instance", "*"),
            "Condition": { "StringEquals": { format!("ssm:resourceTag/{}", tag::PIPELINE): name } }
        }),
    ];
    // The builder's profile, and the group's template's profile for the
    // image test instance (launched from the group's launch template).
    statements.push(json!({
        "Sid": "PassInstanceRoles",
        "Effect": "Allow",
        "Action": "iam:PassRole",
        "Resource": "*",
        "Condition": { "StringEquals": { "iam:PassedToService": "ec2.amazonaws.com" } }
    }));
    json!({ "Version": "2012-10-17", "Statement": statements })
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

    #[test]
    fn policy_is_scoped_to_the_pipeline() {
        let p = iam_policy("web", &pipeline());
        let text = p.to_string();
        assert_eq!(p["Version"], "2012-10-17");
        assert!(text.contains("autoScalingGroupName/web-asg"));
        assert!(text.contains("parameter/golden/latestAmi"));
        assert!(text.contains("subnet/subnet-123"));
        assert!(text.contains("security-group/sg-1"));
        assert!(text.contains("aws:ResourceTag/repave:pipeline"));
        assert!(text.contains("iam:PassRole"));
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
                    && !["Describe", "PassInstanceRoles", "CommandControl"]
                        .contains(&s["Sid"].as_str().unwrap_or_default())
            })
            .collect();
        assert!(mutating_on_star.is_empty(), "{mutating_on_star:?}");
    }
}
