//! `repave iam-policy`: the least-privilege IAM policy a pipeline needs,
//! scoped with what the account says (the group's templates and subnets,
//! the instance profiles' roles, the volumes' KMS keys: it reads, never
//! changes, and needs the group to exist), and for a pipeline that assumes
//! a role, the trust policy of that role.

use crate::cli::Cli;
use crate::exit::{self, Exit};
use anyhow::anyhow;

pub async fn run(cli: &Cli, name: Option<&str>, principal: Option<&str>) -> Result<i32, Exit> {
    let loaded = crate::context::load(cli)?;
    let (name, pipeline) = loaded.pipeline(name)?;
    if pipeline.provider != repave_core::config::ProviderKind::Aws {
        return Err(Exit::bad_input(anyhow!(
            "pipeline {name} runs on the {} provider; an IAM policy is for provider = \"aws\"",
            pipeline.provider
        )));
    }
    let role = pipeline.aws.as_ref().filter(|a| a.role_arn.is_some());
    // A role's trust policy is needed before the role exists: for a role
    // pipeline whose role cannot be assumed yet (or whose group is not
    // there yet) the policy is printed scoped by the config alone, and
    // says so.
    let scoped = match loaded.aws_for(&pipeline).await {
        Ok(provider) => provider
            .policy_scope(&pipeline)
            .await
            .map_err(|e| (e.is_not_found(), anyhow::Error::new(e))),
        Err(e) if role.is_none() => return Err(e),
        Err(e) => Err((false, e.error)),
    };
    let (scope, unscoped) = match (scoped, role) {
        (Ok(s), _) => (s, None),
        (Err((_, e)), Some(aws)) => {
            let region = aws
                .region
                .clone()
                .or_else(|| cli.region.clone())
                .or_else(|| loaded.config.providers.aws.as_ref().and_then(|a| a.region.clone()))
                .unwrap_or_else(|| "us-east-1".into());
            let account = aws
                .role_arn
                .as_deref()
                .and_then(|a| a.split(':').nth(4))
                .unwrap_or("*")
                .to_string();
            let why = format!(
                "not scoped by the account ({e:#}): instance roles, launch templates, subnets and KMS keys are `*`; run iam-policy again once the role can be assumed"
            );
            (
                repave_aws::PolicyScope {
                    region,
                    account,
                    ..Default::default()
                },
                Some(why),
            )
        }
        // The config names a group or profile the account does not have.
        (Err((true, e)), None) => {
            return Err(Exit::bad_input(
                e.context(format!("pipeline {name} (group {})", pipeline.group)),
            ))
        }
        (Err((false, e)), None) => {
            return Err(Exit::failed(
                e.context(format!("reading what pipeline {name}'s policy is scoped to")),
            ))
        }
    };
    let policy = repave_aws::iam_policy(&name, &pipeline, &scope);
    let Some(aws) = role else {
        if principal.is_some() {
            return Err(Exit::bad_input(anyhow!(
                "--principal is for a pipeline with [pipelines.{name}.aws] role_arn; {name} assumes no role"
            )));
        }
        // The policy document is JSON either way; `--json` changes nothing.
        crate::output::json(&policy);
        return Ok(exit::OK);
    };
    let mut provider_cfg = loaded.config.providers.aws.clone().unwrap_or_default();
    if let Some(p) = &cli.profile {
        provider_cfg.profile = Some(p.clone());
    }
    if let Some(r) = &cli.region {
        provider_cfg.region = Some(r.clone());
    }
    let region = aws
        .region
        .clone()
        .or_else(|| provider_cfg.region.clone())
        .unwrap_or_else(|| "us-east-1".into());
    let principal = match principal {
        Some(p) if !(p.starts_with("arn:") || (p.len() == 12 && p.bytes().all(|b| b.is_ascii_digit()))) => {
            return Err(Exit::bad_input(anyhow!(
                "--principal {p:?}: give an IAM user or role ARN (arn:aws:iam::123456789012:role/NAME) or a 12-digit account id"
            )))
        }
        Some(p) => p.to_string(),
        None => repave_aws::trust::caller_arn_for(&provider_cfg)
            .await
            .map_err(|e| Exit::failed(anyhow!(e)))?,
    };
    let trust = repave_aws::trust::trust_policy(aws, &principal, &region);
    crate::output::json(&serde_json::json!({
        "role": aws.role_arn,
        "policy": policy,
        "trust_policy": trust,
        "unscoped": unscoped,
    }));
    Ok(exit::OK)
}
