//! What `repave iam-policy` reads from the account to scope the policy
//! ([`PolicyScope`]): the group's account, subnets and launch templates,
//! the roles of the builder's and the templates' instance profiles
//! (`iam:PassRole` names roles, not profiles), and the KMS keys of the
//! volumes repave will create. Read with clients of their own whose user
//! agent says `app/repave-iam-policy`: these reads are the operator's, not
//! the pipeline's, and the harness's operation record tells them apart.

use crate::error::{map_sdk, not_found};
use crate::iam::{partition, PolicyScope};
use crate::AwsProvider;
use aws_config::AppName;
use repave_core::config::Pipeline;
use repave_core::provider::Result;
use repave_core::ProviderError;
use std::collections::BTreeSet;

/// The user agent app name of the reads made to print a policy.
pub const POLICY_READS_APP: &str = "repave-iam-policy";

struct Clients {
    ec2: aws_sdk_ec2::Client,
    asg: aws_sdk_autoscaling::Client,
    ssm: aws_sdk_ssm::Client,
    iam: aws_sdk_iam::Client,
}

/// The profile's name from a name or an ARN (`...:instance-profile/path/name`).
fn profile_name(profile: &str) -> &str {
    profile.rsplit('/').next().unwrap_or(profile)
}

impl AwsProvider {
    /// Read what the policy for `pipeline` is scoped to. The group must
    /// exist (its templates and roles are the policy's); a profile that
    /// does not exist is an error naming it.
    pub async fn policy_scope(&self, pipeline: &Pipeline) -> Result<PolicyScope> {
        self.policy_scope_as(pipeline, POLICY_READS_APP).await
    }

    /// [`Self::policy_scope`] read with the user agent app name `app`: a
    /// run's own permission check reads as the provider
    /// ([`crate::PROVIDER_APP`]), so the operation record holds it to the
    /// printed policy too.
    pub(crate) async fn policy_scope_as(&self, pipeline: &Pipeline, app: &str) -> Result<PolicyScope> {
        let app = AppName::new(app.to_string()).expect("valid app name");
        let sdk = self.sdk.to_builder().app_name(app).build();
        let c = Clients {
            ec2: aws_sdk_ec2::Client::new(&sdk),
            asg: aws_sdk_autoscaling::Client::new(&sdk),
            ssm: aws_sdk_ssm::Client::new(&sdk),
            iam: aws_sdk_iam::Client::new(&sdk),
        };
        let region = sdk.region().map(|r| r.to_string()).unwrap_or_default();
        let out = c
            .asg
            .describe_auto_scaling_groups()
            .auto_scaling_group_names(&pipeline.group)
            .send()
            .await
            .map_err(|e| map_sdk("DescribeAutoScalingGroups", e))?;
        let group = out
            .auto_scaling_groups()
            .first()
            .ok_or_else(|| not_found("DescribeAutoScalingGroups", format!("group {}", pipeline.group)))?;
        // arn:<partition>:autoscaling:<region>:<account>:autoScalingGroup:...
        let account = group
            .auto_scaling_group_arn()
            .and_then(|a| a.split(':').nth(4))
            .unwrap_or("*")
            .to_string();
        let subnets: Vec<String> = group
            .vpc_zone_identifier()
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();

        let mut profiles: BTreeSet<String> = pipeline.builder.instance_profile.iter().cloned().collect();
        let mut keys: BTreeSet<String> = BTreeSet::new();
        let key_arn = |where_: &str, key: &str| -> Result<String> {
            if key.starts_with("arn:") {
                Ok(key.to_string())
            } else if key.starts_with("alias/") {
                Err(ProviderError::permanent(
                    "iam-policy",
                    format!(
                        "{where_} names its KMS key by alias ({key}): a key policy statement needs the key's id or ARN; name the key by id in {where_}"
                    ),
                ))
            } else {
                Ok(format!("arn:{}:kms:{region}:{account}:key/{key}", partition(&region)))
            }
        };

        // Every template the group launches from: its own, the mixed
        // instances policy's, and the overrides' own templates.
        let mut specs: Vec<(Option<String>, Option<String>, Option<String>)> = Vec::new();
        if let Some(t) = group.launch_template() {
            specs.push((
                t.launch_template_id().map(String::from),
                t.launch_template_name().map(String::from),
                t.version().map(String::from),
            ));
        }
        if let Some(lt) = group.mixed_instances_policy().and_then(|m| m.launch_template()) {
            if let Some(t) = lt.launch_template_specification() {
                specs.push((
                    t.launch_template_id().map(String::from),
                    t.launch_template_name().map(String::from),
                    t.version().map(String::from),
                ));
            }
            for o in lt.overrides() {
                if let Some(t) = o.launch_template_specification() {
                    specs.push((
                        t.launch_template_id().map(String::from),
                        t.launch_template_name().map(String::from),
                        t.version().map(String::from),
                    ));
                }
            }
        }
        let mut templates = BTreeSet::new();
        for (id, name, version) in specs {
            let version = version.unwrap_or_else(|| "$Default".into());
            let call = c
                .ec2
                .describe_launch_template_versions()
                .set_launch_template_id(id.clone())
                .set_launch_template_name(if id.is_some() { None } else { name.clone() })
                .versions(&version);
            let out = call
                .send()
                .await
                .map_err(|e| map_sdk("DescribeLaunchTemplateVersions", e))?;
            let v = out.launch_template_versions().first().ok_or_else(|| {
                not_found(
                    "DescribeLaunchTemplateVersions",
                    format!(
                        "version {version} of launch template {}",
                        id.or(name).unwrap_or_default()
                    ),
                )
            })?;
            let template = v.launch_template_id().unwrap_or_default().to_string();
            let data = v.launch_template_data();
            if let Some(p) = data.and_then(|d| d.iam_instance_profile()) {
                if let Some(p) = p.arn().or(p.name()) {
                    profiles.insert(p.to_string());
                }
            }
            for m in data.map(|d| d.block_device_mappings()).unwrap_or_default() {
                if let Some(k) = m.ebs().and_then(|e| e.kms_key_id()) {
                    keys.insert(key_arn(&format!("launch template {template}"), k)?);
                }
            }
            templates.insert(template);
        }
        if let Some(lc) = group.launch_configuration_name() {
            let out = c
                .asg
                .describe_launch_configurations()
                .launch_configuration_names(lc)
                .send()
                .await
                .map_err(|e| map_sdk("DescribeLaunchConfigurations", e))?;
            if let Some(p) = out
                .launch_configurations()
                .first()
                .and_then(|l| l.iam_instance_profile())
            {
                profiles.insert(p.to_string());
            }
        }

        // The golden image's snapshots: the builder's volumes, and the new
        // image's, are encrypted with the same keys.
        let image = match c.ssm.get_parameter().name(&pipeline.parameter).send().await {
            Ok(o) => o.parameter().and_then(|p| p.value()).map(|v| v.trim().to_string()),
            Err(e) => {
                let e = map_sdk("GetParameter", e);
                if !e.is_not_found() {
                    return Err(e);
                }
                None
            }
        };
        if let Some(image) = image {
            let out = c
                .ec2
                .describe_images()
                .image_ids(&image)
                .send()
                .await
                .map_err(|e| map_sdk("DescribeImages", e))?;
            let snapshots: Vec<String> = out
                .images()
                .iter()
                .flat_map(|i| i.block_device_mappings())
                .filter_map(|m| m.ebs())
                .filter(|e| e.encrypted() == Some(true))
                .filter_map(|e| e.snapshot_id().map(String::from))
                .collect();
            if !snapshots.is_empty() {
                let out = c
                    .ec2
                    .describe_snapshots()
                    .set_snapshot_ids(Some(snapshots))
                    .send()
                    .await
                    .map_err(|e| map_sdk("DescribeSnapshots", e))?;
                for s in out.snapshots() {
                    if let Some(k) = s.kms_key_id() {
                        keys.insert(key_arn(
                            &format!("snapshot {}", s.snapshot_id().unwrap_or_default()),
                            k,
                        )?);
                    }
                }
            }
        }
        // Encryption by default encrypts every new volume with the
        // account's default key; the AWS managed `aws/ebs` needs no grant.
        let by_default = c
            .ec2
            .get_ebs_encryption_by_default()
            .send()
            .await
            .map_err(|e| map_sdk("GetEbsEncryptionByDefault", e))?;
        if by_default.ebs_encryption_by_default() == Some(true) {
            let out = c
                .ec2
                .get_ebs_default_kms_key_id()
                .send()
                .await
                .map_err(|e| map_sdk("GetEbsDefaultKmsKeyId", e))?;
            if let Some(k) = out.kms_key_id().filter(|k| !k.ends_with("alias/aws/ebs")) {
                keys.insert(key_arn("the account's EBS default KMS key", k)?);
            }
        }

        let mut roles = BTreeSet::new();
        for p in &profiles {
            let out = c
                .iam
                .get_instance_profile()
                .instance_profile_name(profile_name(p))
                .send()
                .await
                .map_err(|e| map_sdk("GetInstanceProfile", e))
                .map_err(|e| {
                    if e.is_not_found() {
                        not_found("GetInstanceProfile", format!("instance profile {p}"))
                    } else {
                        e
                    }
                })?;
            for r in out.instance_profile().map(|i| i.roles()).unwrap_or_default() {
                roles.insert(r.arn().to_string());
            }
        }
        Ok(PolicyScope {
            region,
            account,
            pass_roles: roles.into_iter().collect(),
            launch_templates: templates.into_iter().filter(|t| !t.is_empty()).collect(),
            subnets,
            kms_keys: keys.into_iter().collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profile_names_from_names_and_arns() {
        assert_eq!(profile_name("builder"), "builder");
        assert_eq!(
            profile_name("arn:aws:iam::123456789012:instance-profile/builder"),
            "builder"
        );
        assert_eq!(
            profile_name("arn:aws:iam::123456789012:instance-profile/team/web"),
            "web"
        );
    }
}
