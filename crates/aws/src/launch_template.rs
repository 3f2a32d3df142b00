//! Launch templates: a new version carries the FULL data of the base version
//! with the new image. `SourceVersion` is sent too (real EC2 then inherits
//! whatever this copy does not name), but moto ignores it, so the fields an
//! instance needs are copied explicitly: image, type, key, security groups,
//! user data, instance profile, block devices, network interfaces, tag
//! specifications, metadata options, monitoring, placement, credit
//! specification, EBS optimisation, kernel / ramdisk, shutdown behaviour,
//! termination and stop protection.

use crate::convert::ts;
use crate::error::{malformed, map_sdk, not_found};
use crate::AwsProvider;
use aws_sdk_ec2::types::{
    CreditSpecificationRequest, LaunchTemplateBlockDeviceMappingRequest, LaunchTemplateEbsBlockDeviceRequest,
    LaunchTemplateIamInstanceProfileSpecificationRequest, LaunchTemplateInstanceMetadataOptionsRequest,
    LaunchTemplateInstanceNetworkInterfaceSpecificationRequest, LaunchTemplatePlacementRequest,
    LaunchTemplateTagSpecificationRequest, LaunchTemplateVersion, LaunchTemplatesMonitoringRequest,
    RequestLaunchTemplateData, ResponseLaunchTemplateData,
};
use repave_core::provider::{InstanceSpec, LaunchSpec, LaunchSpecRef, Result};
use repave_core::ImageId;

/// Description of versions repave creates; also how a resumed publish
/// recognises the version it already made.
fn description(image: &ImageId, base: u64) -> String {
    format!("repave: {image} on v{base}")
}

/// The request form of a version's data, with `image`.
pub(crate) fn request_data(d: &ResponseLaunchTemplateData, image: &ImageId) -> RequestLaunchTemplateData {
    let bdm = d
        .block_device_mappings()
        .iter()
        .map(|m| {
            let ebs = m.ebs().map(|e| {
                LaunchTemplateEbsBlockDeviceRequest::builder()
                    .set_encrypted(e.encrypted())
                    .set_delete_on_termination(e.delete_on_termination())
                    .set_iops(e.iops())
                    .set_kms_key_id(e.kms_key_id().map(str::to_string))
                    .set_snapshot_id(e.snapshot_id().map(str::to_string))
                    .set_volume_size(e.volume_size())
                    .set_volume_type(e.volume_type().cloned())
                    .set_throughput(e.throughput())
                    .build()
            });
            LaunchTemplateBlockDeviceMappingRequest::builder()
                .set_device_name(m.device_name().map(str::to_string))
                .set_virtual_name(m.virtual_name().map(str::to_string))
                .set_no_device(m.no_device().map(str::to_string))
                .set_ebs(ebs)
                .build()
        })
        .collect::<Vec<_>>();
    let nics = d
        .network_interfaces()
        .iter()
        .map(|n| {
            LaunchTemplateInstanceNetworkInterfaceSpecificationRequest::builder()
                .set_associate_public_ip_address(n.associate_public_ip_address())
                .set_delete_on_termination(n.delete_on_termination())
                .set_description(n.description().map(str::to_string))
                .set_device_index(n.device_index())
                .set_groups(Some(n.groups().to_vec()).filter(|g| !g.is_empty()))
                .set_interface_type(n.interface_type().map(str::to_string))
                .set_network_interface_id(n.network_interface_id().map(str::to_string))
                .set_private_ip_address(n.private_ip_address().map(str::to_string))
                .set_secondary_private_ip_address_count(n.secondary_private_ip_address_count())
                .set_subnet_id(n.subnet_id().map(str::to_string))
                .set_network_card_index(n.network_card_index())
                .build()
        })
        .collect::<Vec<_>>();
    let tags = d
        .tag_specifications()
        .iter()
        .map(|t| {
            LaunchTemplateTagSpecificationRequest::builder()
                .set_resource_type(t.resource_type().cloned())
                .set_tags(Some(t.tags().to_vec()))
                .build()
        })
        .collect::<Vec<_>>();
    let profile = d.iam_instance_profile().map(|p| {
        LaunchTemplateIamInstanceProfileSpecificationRequest::builder()
            .set_arn(p.arn().map(str::to_string))
            .set_name(if p.arn().is_some() {
                None
            } else {
                p.name().map(str::to_string)
            })
            .build()
    });
    let metadata = d.metadata_options().map(|m| {
        LaunchTemplateInstanceMetadataOptionsRequest::builder()
            .set_http_tokens(m.http_tokens().cloned())
            .set_http_put_response_hop_limit(m.http_put_response_hop_limit())
            .set_http_endpoint(m.http_endpoint().cloned())
            .set_instance_metadata_tags(m.instance_metadata_tags().cloned())
            .build()
    });
    let placement = d.placement().map(|p| {
        LaunchTemplatePlacementRequest::builder()
            .set_availability_zone(p.availability_zone().map(str::to_string))
            .set_group_name(p.group_name().map(str::to_string))
            .set_tenancy(p.tenancy().cloned())
            .set_host_id(p.host_id().map(str::to_string))
            .set_partition_number(p.partition_number())
            .build()
    });
    RequestLaunchTemplateData::builder()
        .image_id(image.as_str())
        .set_instance_type(d.instance_type().cloned())
        .set_key_name(d.key_name().map(str::to_string))
        .set_security_group_ids(Some(d.security_group_ids().to_vec()).filter(|v| !v.is_empty()))
        .set_security_groups(Some(d.security_groups().to_vec()).filter(|v| !v.is_empty()))
        .set_user_data(d.user_data().map(str::to_string))
        .set_iam_instance_profile(profile)
        .set_block_device_mappings(Some(bdm).filter(|v| !v.is_empty()))
        .set_network_interfaces(Some(nics).filter(|v| !v.is_empty()))
        .set_tag_specifications(Some(tags).filter(|v| !v.is_empty()))
        .set_metadata_options(metadata)
        .set_monitoring(d.monitoring().map(|m| {
            LaunchTemplatesMonitoringRequest::builder()
                .set_enabled(m.enabled())
                .build()
        }))
        .set_placement(placement)
        .set_credit_specification(d.credit_specification().map(|c| {
            CreditSpecificationRequest::builder()
                .set_cpu_credits(c.cpu_credits().map(str::to_string))
                .build()
        }))
        .set_ebs_optimized(d.ebs_optimized())
        .set_kernel_id(d.kernel_id().map(str::to_string))
        .set_ram_disk_id(d.ram_disk_id().map(str::to_string))
        .set_instance_initiated_shutdown_behavior(d.instance_initiated_shutdown_behavior().cloned())
        .set_disable_api_termination(d.disable_api_termination())
        .set_disable_api_stop(d.disable_api_stop())
        .build()
}

fn spec_of(d: Option<&ResponseLaunchTemplateData>) -> (ImageId, InstanceSpec) {
    let Some(d) = d else {
        return (ImageId::new(""), InstanceSpec::default());
    };
    let nic = d.network_interfaces().first();
    let mut groups = d.security_group_ids().to_vec();
    if groups.is_empty() {
        groups = nic.map(|n| n.groups().to_vec()).unwrap_or_default();
    }
    let spec = InstanceSpec {
        instance_type: d.instance_type().map(|t| t.as_str().to_string()),
        subnet: nic.and_then(|n| n.subnet_id()).map(str::to_string),
        security_groups: groups,
        instance_profile: d
            .iam_instance_profile()
            .and_then(|p| p.arn().or(p.name()))
            .map(str::to_string),
        command: vec![],
    };
    (ImageId::new(d.image_id().unwrap_or_default()), spec)
}

impl AwsProvider {
    async fn template_version(&self, id_or_name: &str, version: &str) -> Result<LaunchTemplateVersion> {
        let call = self.ec2.describe_launch_template_versions().versions(version);
        let call = if id_or_name.starts_with("lt-") {
            call.launch_template_id(id_or_name)
        } else {
            call.launch_template_name(id_or_name)
        };
        let out = call
            .send()
            .await
            .map_err(|e| map_sdk("DescribeLaunchTemplateVersions", e))?;
        out.launch_template_versions().first().cloned().ok_or_else(|| {
            not_found(
                "DescribeLaunchTemplateVersions",
                format!("launch template {id_or_name} version {version}"),
            )
        })
    }

    /// `$Latest` / `$Default` → the version number they stand for.
    pub(crate) async fn resolve_template_version(&self, id_or_name: &str, raw: &str) -> Result<u64> {
        let v = self.template_version(id_or_name, raw).await?;
        v.version_number()
            .map(|n| n as u64)
            .ok_or_else(|| malformed("DescribeLaunchTemplateVersions", "version without a number"))
    }

    pub(crate) async fn describe_template_spec(&self, id_or_name: &str, version: u64) -> Result<LaunchSpec> {
        let v = self.template_version(id_or_name, &version.to_string()).await?;
        let (image, spec) = spec_of(v.launch_template_data());
        Ok(LaunchSpec {
            name: id_or_name.to_string(),
            version,
            image,
            spec,
            created_at: ts(v.create_time()),
        })
    }

    /// New version = base version's data with `image`. A resumed publish
    /// finds the version it made (latest version, same image, repave's
    /// description) instead of making another.
    pub(crate) async fn create_template_version(
        &self,
        id_or_name: &str,
        base: u64,
        image: &ImageId,
    ) -> Result<LaunchSpecRef> {
        let desc = description(image, base);
        let latest = self.template_version(id_or_name, "$Latest").await?;
        let latest_image = latest.launch_template_data().and_then(|d| d.image_id());
        if latest_image == Some(image.as_str()) && latest.version_description() == Some(desc.as_str()) {
            if let Some(n) = latest.version_number() {
                return Ok(LaunchSpecRef {
                    name: id_or_name.to_string(),
                    version: n as u64,
                });
            }
        }
        let base_version = if latest.version_number() == Some(base as i64) {
            latest
        } else {
            self.template_version(id_or_name, &base.to_string()).await?
        };
        let data = base_version.launch_template_data().ok_or_else(|| {
            malformed(
                "DescribeLaunchTemplateVersions",
                format!("version {base} of {id_or_name} has no data"),
            )
        })?;
        let call = self
            .ec2
            .create_launch_template_version()
            .source_version(base.to_string())
            .version_description(desc)
            .launch_template_data(request_data(data, image));
        let call = if id_or_name.starts_with("lt-") {
            call.launch_template_id(id_or_name)
        } else {
            call.launch_template_name(id_or_name)
        };
        let out = call
            .send()
            .await
            .map_err(|e| map_sdk("CreateLaunchTemplateVersion", e))?;
        let n = out
            .launch_template_version()
            .and_then(|v| v.version_number())
            .ok_or_else(|| malformed("CreateLaunchTemplateVersion", "no version number"))?;
        Ok(LaunchSpecRef {
            name: id_or_name.to_string(),
            version: n as u64,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_ec2::types::{
        InstanceType, LaunchTemplateBlockDeviceMapping, LaunchTemplateEbsBlockDevice, LaunchTemplateHttpTokensState,
        LaunchTemplateIamInstanceProfileSpecification, LaunchTemplateInstanceMetadataOptions,
        LaunchTemplateTagSpecification, ResourceType, Tag,
    };

    #[test]
    fn request_data_copies_everything_but_the_image() {
        let d = ResponseLaunchTemplateData::builder()
            .image_id("ami-old")
            .instance_type(InstanceType::T3Micro)
            .key_name("k")
            .security_group_ids("sg-1")
            .user_data("IyEvYmluL3NoCg==")
            .iam_instance_profile(
                LaunchTemplateIamInstanceProfileSpecification::builder()
                    .name("builder")
                    .build(),
            )
            .block_device_mappings(
                LaunchTemplateBlockDeviceMapping::builder()
                    .device_name("/dev/xvda")
                    .ebs(
                        LaunchTemplateEbsBlockDevice::builder()
                            .volume_size(30)
                            .encrypted(true)
                            .build(),
                    )
                    .build(),
            )
            .tag_specifications(
                LaunchTemplateTagSpecification::builder()
                    .resource_type(ResourceType::Instance)
                    .tags(Tag::builder().key("app").value("web").build())
                    .build(),
            )
            .metadata_options(
                LaunchTemplateInstanceMetadataOptions::builder()
                    .http_tokens(LaunchTemplateHttpTokensState::Required)
                    .build(),
            )
            .ebs_optimized(true)
            .build();
        let r = request_data(&d, &ImageId::new("ami-new"));
        assert_eq!(r.image_id(), Some("ami-new"));
        assert_eq!(r.instance_type(), Some(&InstanceType::T3Micro));
        assert_eq!(r.key_name(), Some("k"));
        assert_eq!(r.security_group_ids(), ["sg-1".to_string()]);
        assert_eq!(r.user_data(), Some("IyEvYmluL3NoCg=="));
        assert_eq!(r.iam_instance_profile().and_then(|p| p.name()), Some("builder"));
        let bdm = &r.block_device_mappings()[0];
        assert_eq!(bdm.device_name(), Some("/dev/xvda"));
        assert_eq!(bdm.ebs().and_then(|e| e.volume_size()), Some(30));
        assert_eq!(bdm.ebs().and_then(|e| e.encrypted()), Some(true));
        assert_eq!(r.tag_specifications()[0].tags()[0].key(), Some("app"));
        assert_eq!(
            r.metadata_options().and_then(|m| m.http_tokens()),
            Some(&LaunchTemplateHttpTokensState::Required)
        );
        assert_eq!(r.ebs_optimized(), Some(true));
    }
}
