//! Instances: RunInstances with tags on instance and volumes, batched
//! DescribeInstances, stop / start / reboot / terminate, status checks.

use crate::convert::{filter, from_ec2_tags, tag_filters, tag_spec, ts};
use crate::error::{malformed, map_sdk};
use crate::groups::{spec_kind, SpecKind};
use crate::AwsProvider;
use async_trait::async_trait;
use aws_sdk_ec2::types::{
    HttpTokensState, IamInstanceProfileSpecification, InstanceMetadataOptionsRequest, InstanceStateName, InstanceType,
    LaunchTemplateSpecification, ResourceType, SummaryStatus,
};
use repave_core::provider::{HealthProbe, Instance, InstanceState, Instances, LaunchRequest, Result, Tags};
use repave_core::{ImageId, InstanceId};

/// DescribeInstances takes at most this many ids in one filter.
const BATCH: usize = 200;

/// How long an instance may stay invisible before its absence is a fact.
const INSTANCE_VISIBILITY: std::time::Duration = std::time::Duration::from_secs(30);

fn state(s: Option<&InstanceStateName>) -> InstanceState {
    match s {
        Some(InstanceStateName::Pending) => InstanceState::Pending,
        Some(InstanceStateName::Running) => InstanceState::Running,
        Some(InstanceStateName::Stopping) => InstanceState::Stopping,
        Some(InstanceStateName::Stopped) => InstanceState::Stopped,
        Some(InstanceStateName::ShuttingDown) => InstanceState::ShuttingDown,
        Some(InstanceStateName::Terminated) => InstanceState::Terminated,
        _ => InstanceState::Pending,
    }
}

pub(crate) fn instance(i: &aws_sdk_ec2::types::Instance) -> Instance {
    Instance {
        id: InstanceId::new(i.instance_id().unwrap_or_default()),
        image: ImageId::new(i.image_id().unwrap_or_default()),
        state: state(i.state().and_then(|s| s.name())),
        launched_at: ts(i.launch_time()),
        tags: from_ec2_tags(i.tags()),
        address: i.private_ip_address().map(str::to_string),
    }
}

impl AwsProvider {
    /// DescribeInstances over every page of `filters`.
    pub(crate) async fn describe_filtered(
        &self,
        filters: Vec<aws_sdk_ec2::types::Filter>,
    ) -> Result<Vec<aws_sdk_ec2::types::Instance>> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .ec2
                .describe_instances()
                .set_filters(Some(filters.clone()))
                .set_next_token(token.take())
                .send()
                .await
                .map_err(|e| map_sdk("DescribeInstances", e))?;
            for r in page.reservations() {
                out.extend(r.instances().iter().cloned());
            }
            match page.next_token() {
                Some(t) if !t.is_empty() => token = Some(t.to_string()),
                _ => break,
            }
        }
        Ok(out)
    }

    /// One instance this process is about to act on, waited for (bounded)
    /// while EC2 does not show it yet: right after RunInstances its absence
    /// is eventual consistency, not a fact.
    pub(crate) async fn describe_visible(&self, id: &InstanceId) -> Result<aws_sdk_ec2::types::Instance> {
        let deadline = tokio::time::Instant::now() + INSTANCE_VISIBILITY;
        loop {
            if let Some(i) = self.describe_by_ids(std::slice::from_ref(id)).await?.into_iter().next() {
                return Ok(i);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(crate::error::not_found("DescribeInstances", id));
            }
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
    }

    /// Instances by id in as few calls as possible. The `instance-id` filter
    /// (rather than `InstanceIds`) makes unknown ids vanish instead of failing
    /// the whole batch with InvalidInstanceID.NotFound.
    pub(crate) async fn describe_by_ids(&self, ids: &[InstanceId]) -> Result<Vec<aws_sdk_ec2::types::Instance>> {
        let mut out = Vec::new();
        for chunk in ids.chunks(BATCH) {
            out.extend(
                self.describe_filtered(vec![filter("instance-id", chunk.iter().map(|i| i.to_string()))])
                    .await?,
            );
        }
        Ok(out)
    }
}

#[async_trait]
impl Instances for AwsProvider {
    /// RunInstances: one instance, no key pair, IMDSv2 required, the tags on
    /// the instance and its volumes. An instance already carrying all of
    /// `req.tags` that is not gone is returned instead (the client token is a
    /// second line of defence; moto ignores it).
    async fn launch(&self, req: LaunchRequest) -> Result<Instance> {
        if !req.tags.is_empty() {
            let existing = self.list_instances(&req.tags).await?;
            if let Some(i) = existing.into_iter().find(|i| !i.state.is_gone()) {
                return Ok(i);
            }
        }
        let spec = &req.spec;
        let mut call = self
            .ec2
            .run_instances()
            .image_id(req.image.as_str())
            .min_count(1)
            .max_count(1)
            .client_token(token(&req.token))
            .tag_specifications(tag_spec(ResourceType::Instance, &req.tags))
            .tag_specifications(tag_spec(ResourceType::Volume, &req.tags))
            .set_subnet_id(spec.subnet.clone());
        let template = spec.launch_template.as_ref().and_then(|t| match spec_kind(t) {
            SpecKind::Template { id_or_name, version } => Some((id_or_name.to_string(), version)),
            SpecKind::Configuration { .. } => None,
        });
        if let Some((id_or_name, version)) = &template {
            // As the group launches: the template's version with the
            // image overridden; everything else (type, security groups,
            // profile, user data, metadata options) comes from it.
            let t = LaunchTemplateSpecification::builder().version(version.to_string());
            let t = if id_or_name.starts_with("lt-") {
                t.launch_template_id(id_or_name)
            } else {
                t.launch_template_name(id_or_name)
            };
            call = call.launch_template(t.build());
            let out = run_instances(call).await?;
            return out
                .instances()
                .first()
                .map(instance)
                .ok_or_else(|| malformed("RunInstances", "no instance in the reservation"));
        }
        call = call.metadata_options(
            InstanceMetadataOptionsRequest::builder()
                .http_tokens(HttpTokensState::Required)
                .build(),
        );
        if let Some(u) = &spec.user_data {
            call = call.user_data(u);
        }
        if let Some(t) = &spec.instance_type {
            call = call.instance_type(InstanceType::from(t.as_str()));
        }
        for sg in &spec.security_groups {
            call = call.security_group_ids(sg);
        }
        if let Some(p) = &spec.instance_profile {
            let profile = if p.starts_with("arn:") {
                IamInstanceProfileSpecification::builder().arn(p).build()
            } else {
                IamInstanceProfileSpecification::builder().name(p).build()
            };
            call = call.iam_instance_profile(profile);
        }
        let out = run_instances(call).await?;
        out.instances()
            .first()
            .map(instance)
            .ok_or_else(|| malformed("RunInstances", "no instance in the reservation"))
    }

    async fn describe_instances(&self, ids: &[InstanceId]) -> Result<Vec<Instance>> {
        Ok(self.describe_by_ids(ids).await?.iter().map(instance).collect())
    }

    async fn list_instances(&self, tags: &Tags) -> Result<Vec<Instance>> {
        Ok(self
            .describe_filtered(tag_filters(tags))
            .await?
            .iter()
            .map(instance)
            .collect())
    }

    async fn stop_instance(&self, id: &InstanceId) -> Result<()> {
        self.ec2
            .stop_instances()
            .instance_ids(id.as_str())
            .send()
            .await
            .map_err(|e| map_sdk("StopInstances", e))?;
        Ok(())
    }

    async fn reboot_instance(&self, id: &InstanceId) -> Result<()> {
        self.ec2
            .reboot_instances()
            .instance_ids(id.as_str())
            .send()
            .await
            .map_err(|e| map_sdk("RebootInstances", e))?;
        Ok(())
    }

    async fn terminate_instance(&self, id: &InstanceId) -> Result<()> {
        self.ec2
            .terminate_instances()
            .instance_ids(id.as_str())
            .send()
            .await
            .map_err(|e| map_sdk("TerminateInstances", e))?;
        Ok(())
    }

    /// EC2 status checks (running, instance and system status `ok`), then,
    /// for an instance launched like a group's (tagged `repave:group`), the
    /// application itself: `path` fetched on the instance, through SSM, on
    /// the port its target group checks.
    async fn probe_health(&self, id: &InstanceId, path: &str) -> Result<HealthProbe> {
        let status = self.status_checks(id).await?;
        if !status.healthy {
            return Ok(status);
        }
        match self.app_probe(id, path).await? {
            Some(app) => Ok(app),
            None => Ok(status),
        }
    }
}

impl AwsProvider {
    async fn status_checks(&self, id: &InstanceId) -> Result<HealthProbe> {
        let out = self
            .ec2
            .describe_instance_status()
            .instance_ids(id.as_str())
            .include_all_instances(true)
            .send()
            .await
            .map_err(|e| map_sdk("DescribeInstanceStatus", e))?;
        let Some(s) = out.instance_statuses().first() else {
            return Ok(HealthProbe {
                healthy: false,
                detail: "no status reported".into(),
            });
        };
        let running = matches!(
            s.instance_state().and_then(|s| s.name()),
            Some(InstanceStateName::Running)
        );
        let inst = s.instance_status().and_then(|x| x.status()).cloned();
        let sys = s.system_status().and_then(|x| x.status()).cloned();
        let healthy = running && inst == Some(SummaryStatus::Ok) && sys == Some(SummaryStatus::Ok);
        Ok(HealthProbe {
            healthy,
            detail: format!(
                "state {:?}, instance status {:?}, system status {:?}",
                s.instance_state()
                    .and_then(|s| s.name())
                    .map(|n| n.as_str().to_string()),
                inst.map(|x| x.as_str().to_string()),
                sys.map(|x| x.as_str().to_string())
            ),
        })
    }
}

/// ClientToken allows at most 64 ASCII characters.
fn token(t: &str) -> String {
    let clean: String = t.chars().filter(|c| c.is_ascii_graphic()).collect();
    if clean.len() <= 64 {
        clean
    } else {
        clean[clean.len() - 64..].to_string()
    }
}

/// How long RunInstances is asked again while EC2 does not know an
/// instance profile yet.
const PROFILE_PROPAGATION: std::time::Duration = std::time::Duration::from_secs(60);

/// RunInstances, asked again for [`PROFILE_PROPAGATION`] while it answers
/// `Invalid IAM Instance Profile`: a profile created moments ago (by the
/// operator's Terraform, say) is not known to EC2 until IAM has propagated
/// it (IAM is eventually consistent; IAM User Guide, troubleshooting:
/// https://docs.aws.amazon.com/IAM/latest/UserGuide/troubleshoot_general.html#troubleshoot_general_eventual-consistency).
/// A profile that really does not exist fails after the minute with EC2's
/// own message.
async fn run_instances(
    call: aws_sdk_ec2::operation::run_instances::builders::RunInstancesFluentBuilder,
) -> Result<aws_sdk_ec2::operation::run_instances::RunInstancesOutput> {
    let deadline = std::time::Instant::now() + PROFILE_PROPAGATION;
    loop {
        match call.clone().send().await.map_err(|e| map_sdk("RunInstances", e)) {
            Err(e) if unknown_profile(&e.message) && std::time::Instant::now() < deadline => {
                tracing::info!("RunInstances: {} (IAM propagating); asking again", e.message);
                tokio::time::sleep(std::time::Duration::from_secs(2)).await;
            }
            r => return r,
        }
    }
}

/// EC2's answer for an instance profile it does not know (yet).
fn unknown_profile(message: &str) -> bool {
    message.starts_with("InvalidParameterValue") && message.contains("Invalid IAM Instance Profile")
}

#[cfg(test)]
mod profile_tests {
    #[test]
    fn only_the_unknown_profile_answer_is_asked_again() {
        assert!(super::unknown_profile(
            "InvalidParameterValue: Value (web) for parameter iamInstanceProfile.name is invalid. Invalid IAM Instance Profile name (HTTP 400)"
        ));
        assert!(!super::unknown_profile(
            "InvalidParameterValue: Invalid subnet (HTTP 400)"
        ));
        assert!(!super::unknown_profile(
            "UnauthorizedOperation: Invalid IAM Instance Profile (HTTP 403)"
        ));
    }
}
