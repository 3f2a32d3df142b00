//! The trust policy a pipeline's role needs: who may assume it. Printed by
//! `repave iam-policy` beside the role's permission policy.
//!
//! The principal is whoever runs repave (an IAM user or role ARN, or an
//! account); with `external_id` the statement requires it through the
//! `sts:ExternalId` condition key, as AWS recommends for roles assumed from
//! another account
//! (<https://docs.aws.amazon.com/IAM/latest/UserGuide/id_roles_common-scenarios_third-party.html>).

use repave_core::config::{partition_of, PipelineAws};
use serde_json::{json, Value};

/// The principal's ARN as a trust policy names it. STS reports a role
/// session (`arn:aws:sts::ACCOUNT:assumed-role/NAME/SESSION`); trust
/// policies name the role (`arn:aws:iam::ACCOUNT:role/NAME`). STS drops a
/// role's path, so a role with a path must be given as it is.
pub fn principal_arn(caller: &str) -> String {
    let parts: Vec<&str> = caller.splitn(6, ':').collect();
    if parts.len() == 6 && parts[2] == "sts" {
        if let Some(rest) = parts[5].strip_prefix("assumed-role/") {
            let role = rest.split('/').next().unwrap_or(rest);
            return format!("arn:{}:iam::{}:role/{role}", parts[1], parts[4]);
        }
    }
    if caller.len() == 12 && caller.bytes().all(|b| b.is_ascii_digit()) {
        // An account: every principal of it that its own policies allow.
        return caller.to_string();
    }
    caller.to_string()
}

/// The trust policy for the role of `aws`, trusting `principal` (an ARN or
/// an account id) in the partition of `region`.
pub fn trust_policy(aws: &PipelineAws, principal: &str, region: &str) -> Value {
    let partition = partition_of(region);
    let principal = principal_arn(principal);
    let principal = if principal.len() == 12 && principal.bytes().all(|b| b.is_ascii_digit()) {
        format!("arn:{partition}:iam::{principal}:root")
    } else {
        principal
    };
    let mut statement = json!({
        "Sid": "RepaveAssumesThisRole",
        "Effect": "Allow",
        "Principal": { "AWS": principal },
        "Action": "sts:AssumeRole",
    });
    if let Some(id) = &aws.external_id {
        statement["Condition"] = json!({ "StringEquals": { "sts:ExternalId": id } });
    }
    json!({ "Version": "2012-10-17", "Statement": [statement] })
}

/// Who the standard credential chain is: STS GetCallerIdentity's ARN
/// (needs no permission). Only the ARN is kept; no credential is returned
/// or logged.
pub async fn caller_arn(sdk: &aws_config::SdkConfig) -> Result<String, String> {
    let sts = aws_sdk_sts::Client::new(sdk);
    match sts.get_caller_identity().send().await {
        Ok(out) => out
            .arn()
            .map(str::to_string)
            .ok_or_else(|| "STS GetCallerIdentity returned no ARN".to_string()),
        Err(e) => Err(format!(
            "STS GetCallerIdentity failed ({}): pass --principal ARN for who runs repave",
            aws_smithy_types::error::display::DisplayErrorContext(&e)
        )),
    }
}

/// [`caller_arn`] for `[providers.aws]` (profile, region, endpoint).
pub async fn caller_arn_for(cfg: &repave_core::config::AwsProvider) -> Result<String, String> {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest()).retry_config(crate::retry_config());
    if let Some(p) = &cfg.profile {
        loader = loader.profile_name(p);
    }
    if let Some(r) = &cfg.region {
        loader = loader.region(aws_config::Region::new(r.clone()));
    }
    if let Some(u) = &cfg.endpoint_url {
        loader = loader.endpoint_url(u);
    }
    caller_arn(&loader.load().await).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn aws(external_id: Option<&str>) -> PipelineAws {
        PipelineAws {
            role_arn: Some("arn:aws:iam::210987654321:role/repave".into()),
            external_id: external_id.map(String::from),
            ..Default::default()
        }
    }

    #[test]
    fn the_runner_is_the_principal_and_the_external_id_a_condition() {
        let p = trust_policy(
            &aws(Some("tenant-42")),
            "arn:aws:iam::123456789012:user/ci",
            "eu-west-1",
        );
        let s = &p["Statement"][0];
        assert_eq!(s["Principal"]["AWS"], "arn:aws:iam::123456789012:user/ci");
        assert_eq!(s["Action"], "sts:AssumeRole");
        assert_eq!(s["Condition"]["StringEquals"]["sts:ExternalId"], "tenant-42");
        let p = trust_policy(&aws(None), "arn:aws:iam::123456789012:user/ci", "eu-west-1");
        assert!(p["Statement"][0].get("Condition").is_none(), "{p}");
    }

    #[test]
    fn a_role_session_is_trusted_as_its_role_and_an_account_as_its_root() {
        let p = trust_policy(
            &aws(None),
            "arn:aws:sts::123456789012:assumed-role/control-plane/i-0abc",
            "us-east-1",
        );
        assert_eq!(
            p["Statement"][0]["Principal"]["AWS"],
            "arn:aws:iam::123456789012:role/control-plane"
        );
        let p = trust_policy(&aws(None), "123456789012", "cn-north-1");
        assert_eq!(
            p["Statement"][0]["Principal"]["AWS"],
            "arn:aws-cn:iam::123456789012:root"
        );
        let p = trust_policy(&aws(None), "123456789012", "us-gov-west-1");
        assert_eq!(
            p["Statement"][0]["Principal"]["AWS"],
            "arn:aws-us-gov:iam::123456789012:root"
        );
    }
}
