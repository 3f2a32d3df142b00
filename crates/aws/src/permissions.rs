//! Before a run changes anything: does its principal hold the policy
//! `repave iam-policy` prints for the pipeline? Each statement of that
//! policy is put to IAM's policy simulator (`SimulatePrincipalPolicy`) for
//! the caller — its actions, its resources (a wildcard inside an ARN stands
//! for any one name) and the context keys its conditions test — so a
//! permission missing from any statement, publish and roll included, stops
//! the run at its start, named, instead of after a bake.
//!
//! The simulator evaluates the principal's identity policies and its
//! permissions boundary, not service control policies or session
//! policies (IAM API reference, SimulatePrincipalPolicy): what it allows
//! may still be refused by an SCP, which the run then reports at the call.
//! A check that cannot be made (the simulator itself denied, the root user,
//! a role STS names without its path) is reported and the run goes on.

use crate::iam::iam_policy;
use crate::{AwsProvider, PROVIDER_APP};
use aws_sdk_iam::types::{ContextEntry, ContextKeyTypeEnum, PolicyEvaluationDecisionType};
use repave_core::config::Pipeline;
use repave_core::provider::PermissionReport;
use serde_json::Value;

/// What stands for the one name a wildcard in a policy's ARN matches.
const ANY_NAME: &str = "repave-check";

fn strings(v: &Value) -> Vec<String> {
    match v {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) => a.iter().filter_map(|x| x.as_str().map(String::from)).collect(),
        _ => vec![],
    }
}

/// A resource of a policy as the simulator is asked about it: `*` stays
/// `*`; a wildcard inside an ARN becomes one name.
fn one_of(resource: &str) -> String {
    if resource == "*" {
        resource.to_string()
    } else {
        resource.replace('*', ANY_NAME)
    }
}

/// The context a request the statement is written for carries: each key
/// its conditions test, with the (first) value they want. `Null` keys are
/// given only when the condition wants them present.
fn context_of(conditions: &Value) -> Vec<ContextEntry> {
    let mut out: Vec<ContextEntry> = Vec::new();
    let Some(ops) = conditions.as_object() else { return out };
    for (op, keys) in ops {
        let base = op.rsplit(':').next().unwrap_or(op).trim_end_matches("IfExists");
        let Some(keys) = keys.as_object() else { continue };
        for (key, wanted) in keys {
            // A condition with no value matches no request: nothing to
            // put in the context for it.
            let Some(value) = strings(wanted).into_iter().next() else {
                continue;
            };
            let (kind, value) = match base {
                "Null" if value.eq_ignore_ascii_case("true") => continue,
                "Null" => (ContextKeyTypeEnum::String, ANY_NAME.to_string()),
                "Bool" => (ContextKeyTypeEnum::Boolean, value),
                b if b.starts_with("Numeric") => (ContextKeyTypeEnum::Numeric, value),
                b if b.contains("Not") => (ContextKeyTypeEnum::String, format!("not-{ANY_NAME}")),
                _ => (ContextKeyTypeEnum::String, value.replace('*', ANY_NAME)),
            };
            if out.iter().any(|e| e.context_key_name() == Some(key.as_str())) {
                continue;
            }
            out.push(
                ContextEntry::builder()
                    .context_key_name(key)
                    .context_key_values(value)
                    .context_key_type(kind)
                    .build(),
            );
        }
    }
    out
}

impl AwsProvider {
    /// Whether the caller holds every statement of the pipeline's policy.
    pub async fn check_permissions_of(&self, name: &str, pipeline: &Pipeline) -> PermissionReport {
        let unchecked = |why: String| PermissionReport {
            missing: vec![],
            unchecked: Some(why),
        };
        let sts = aws_sdk_sts::Client::from_conf(
            aws_sdk_sts::config::Builder::from(&self.sdk)
                .interceptor(self.counter.clone())
                .build(),
        );
        let caller = match sts.get_caller_identity().send().await {
            Ok(c) => match c.arn() {
                Some(arn) => arn.to_string(),
                None => return unchecked("GetCallerIdentity answered without the caller's ARN".into()),
            },
            Err(e) => {
                return unchecked(format!(
                    "GetCallerIdentity: {}",
                    crate::error::map_sdk("GetCallerIdentity", e)
                ))
            }
        };
        let principal = crate::trust::principal_arn(&caller);
        if !principal.contains(":user/") && !principal.contains(":role/") {
            return unchecked(format!(
                "{caller} is not an IAM user or role: the policy simulator cannot check it"
            ));
        }
        let scope = match self.policy_scope_as(pipeline, PROVIDER_APP).await {
            Ok(s) => s,
            Err(e) => return unchecked(format!("reading what the policy is scoped to: {e}")),
        };
        let policy = iam_policy(name, pipeline, &scope);
        let iam = aws_sdk_iam::Client::from_conf(
            aws_sdk_iam::config::Builder::from(&self.sdk)
                .interceptor(self.counter.clone())
                .build(),
        );
        let mut missing = Vec::new();
        for st in policy["Statement"].as_array().into_iter().flatten() {
            let sid = st["Sid"].as_str().unwrap_or("(no Sid)");
            let actions = strings(&st["Action"]);
            let resources: Vec<String> = strings(&st["Resource"]).iter().map(|r| one_of(r)).collect();
            let mut marker: Option<String> = None;
            loop {
                let out = iam
                    .simulate_principal_policy()
                    .policy_source_arn(&principal)
                    .set_action_names(Some(actions.clone()))
                    .set_resource_arns(Some(resources.clone()))
                    .set_context_entries(Some(context_of(&st["Condition"])))
                    .set_marker(marker.clone())
                    .send()
                    .await;
                let out = match out {
                    Ok(o) => o,
                    Err(e) => {
                        let e = crate::error::map_sdk("SimulatePrincipalPolicy", e);
                        if e.is_not_found() {
                            return unchecked(format!(
                                "IAM does not know {principal} ({}): STS names a role without its path",
                                e.message
                            ));
                        }
                        return unchecked(format!(
                            "the policy simulator could not check {principal} ({}): grant it iam:SimulatePrincipalPolicy on itself (statement CheckOwnPermissions of `repave iam-policy {name}`)",
                            e.message
                        ));
                    }
                };
                for r in out.evaluation_results() {
                    let mut verdicts: Vec<(String, &PolicyEvaluationDecisionType)> = r
                        .resource_specific_results()
                        .iter()
                        .map(|x| (x.eval_resource_name().to_string(), x.eval_resource_decision()))
                        .collect();
                    if verdicts.is_empty() {
                        verdicts.push((r.eval_resource_name().unwrap_or("*").to_string(), r.eval_decision()));
                    }
                    for (resource, decision) in verdicts {
                        if *decision != PolicyEvaluationDecisionType::Allowed {
                            missing.push(format!(
                                "{} on {resource} (statement {sid}; {})",
                                r.eval_action_name(),
                                decision.as_str()
                            ));
                        }
                    }
                }
                marker = out.marker().map(str::to_string).filter(|_| out.is_truncated());
                if marker.is_none() {
                    break;
                }
            }
        }
        missing.dedup();
        PermissionReport {
            missing,
            unchecked: None,
        }
    }
}

#[async_trait::async_trait]
impl repave_core::provider::Permissions for AwsProvider {
    async fn check_permissions(&self, name: &str, pipeline: &Pipeline) -> PermissionReport {
        self.check_permissions_of(name, pipeline).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_statements_conditions_become_the_context_it_is_written_for() {
        let c = context_of(&json!({
            "StringEquals": { "aws:RequestTag/repave:pipeline": "web", "ec2:CreateAction": ["RunInstances", "CreateImage"] },
            "StringLike": { "aws:ResourceTag/repave:run": "run-*" },
            "Bool": { "kms:GrantIsForAWSResource": "true" },
            "Null": { "aws:RequestTag/absent": "true", "aws:RequestTag/present": "false" }
        }));
        let got: Vec<(String, Vec<String>, String)> = c
            .iter()
            .map(|e| {
                (
                    e.context_key_name().unwrap().to_string(),
                    e.context_key_values().to_vec(),
                    e.context_key_type().unwrap().as_str().to_string(),
                )
            })
            .collect();
        let want = |k: &str, v: &str, t: &str| (k.to_string(), vec![v.to_string()], t.to_string());
        assert_eq!(
            got,
            vec![
                want("kms:GrantIsForAWSResource", "true", "boolean"),
                want("aws:RequestTag/present", ANY_NAME, "string"),
                want("aws:RequestTag/repave:pipeline", "web", "string"),
                want("ec2:CreateAction", "RunInstances", "string"),
                want("aws:ResourceTag/repave:run", "run-repave-check", "string"),
            ]
        );
        assert_eq!(one_of("*"), "*");
        assert_eq!(
            one_of("arn:aws:ec2:us-east-1:123456789012:instance/*"),
            "arn:aws:ec2:us-east-1:123456789012:instance/repave-check"
        );
    }
}
