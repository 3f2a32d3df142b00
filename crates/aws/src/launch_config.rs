//! Legacy launch configurations: immutable, so a "new version" is a new
//! configuration copied from the current one with the new image, named
//! `<base name without a previous -ami-... suffix>-<image id>`. The name is
//! deterministic, so a resumed publish finds the copy it already made.

use crate::convert::ts;
use crate::error::{map_sdk, not_found};
use crate::groups::LAUNCH_CONFIGURATION_PREFIX;
use crate::AwsProvider;
use aws_sdk_autoscaling::types::LaunchConfiguration;
use repave_core::provider::{InstanceSpec, LaunchSpec, LaunchSpecRef, Result};
use repave_core::{ImageId, ProviderError};

/// Name of the copy of `base` that launches `image` (at most 255 chars).
pub(crate) fn copy_name(base: &str, image: &ImageId) -> String {
    let root = match base.rfind("-ami-") {
        Some(i) if base[i + 5..].chars().all(|c| c.is_ascii_hexdigit()) && i + 5 < base.len() => &base[..i],
        _ => base,
    };
    let suffix = format!("-{image}");
    let keep = 255usize.saturating_sub(suffix.len()).min(root.len());
    let mut cut = keep;
    while !root.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}{suffix}", &root[..cut])
}

impl AwsProvider {
    async fn configuration(&self, name: &str) -> Result<Option<LaunchConfiguration>> {
        let out = self
            .asg
            .describe_launch_configurations()
            .launch_configuration_names(name)
            .send()
            .await
            .map_err(|e| map_sdk("DescribeLaunchConfigurations", e))?;
        Ok(out.launch_configurations().first().cloned())
    }

    pub(crate) async fn describe_configuration_spec(&self, name: &str) -> Result<LaunchSpec> {
        let lc = self
            .configuration(name)
            .await?
            .ok_or_else(|| not_found("DescribeLaunchConfigurations", format!("launch configuration {name}")))?;
        Ok(LaunchSpec {
            name: format!("{LAUNCH_CONFIGURATION_PREFIX}{name}"),
            version: 0,
            image: ImageId::new(lc.image_id().unwrap_or_default()),
            spec: InstanceSpec {
                instance_type: lc.instance_type().map(str::to_string),
                subnet: None,
                security_groups: lc.security_groups().to_vec(),
                instance_profile: lc.iam_instance_profile().map(str::to_string),
                user_data: lc.user_data().filter(|u| !u.is_empty()).map(str::to_string),
                ..Default::default()
            },
            created_at: ts(lc.created_time()),
        })
    }

    /// CreateLaunchConfiguration copying every field of `base` but the image.
    pub(crate) async fn copy_configuration(&self, base: &str, image: &ImageId) -> Result<LaunchSpecRef> {
        let name = copy_name(base, image);
        let r = LaunchSpecRef {
            name: format!("{LAUNCH_CONFIGURATION_PREFIX}{name}"),
            version: 0,
        };
        if self.configuration(&name).await?.is_some() {
            return Ok(r);
        }
        let lc = self
            .configuration(base)
            .await?
            .ok_or_else(|| not_found("DescribeLaunchConfigurations", format!("launch configuration {base}")))?;
        let user_data = lc.user_data().filter(|u| !u.is_empty()).map(str::to_string);
        let result = self
            .asg
            .create_launch_configuration()
            .launch_configuration_name(&name)
            .image_id(image.as_str())
            .set_key_name(lc.key_name().filter(|k| !k.is_empty()).map(str::to_string))
            .set_security_groups(Some(lc.security_groups().to_vec()).filter(|v| !v.is_empty()))
            .set_user_data(user_data)
            .set_instance_type(lc.instance_type().map(str::to_string))
            .set_kernel_id(lc.kernel_id().filter(|k| !k.is_empty()).map(str::to_string))
            .set_ramdisk_id(lc.ramdisk_id().filter(|k| !k.is_empty()).map(str::to_string))
            .set_block_device_mappings(Some(lc.block_device_mappings().to_vec()).filter(|v| !v.is_empty()))
            .set_instance_monitoring(lc.instance_monitoring().cloned())
            .set_spot_price(lc.spot_price().map(str::to_string))
            .set_iam_instance_profile(lc.iam_instance_profile().map(str::to_string))
            .set_ebs_optimized(lc.ebs_optimized())
            .set_associate_public_ip_address(lc.associate_public_ip_address())
            .set_placement_tenancy(lc.placement_tenancy().map(str::to_string))
            .set_metadata_options(lc.metadata_options().cloned())
            .send()
            .await;
        match result {
            Ok(_) => Ok(r),
            Err(e) => {
                let e = map_sdk("CreateLaunchConfiguration", e);
                // A concurrent or earlier attempt made it: same name, same data.
                if e.message.starts_with("AlreadyExists") {
                    Ok(r)
                } else if e.message.starts_with("UnsupportedOperation")
                    || e.message.contains("not available in your account")
                {
                    Err(ProviderError::permanent(
                        "CreateLaunchConfiguration",
                        lc_unsupported(base, &e.message),
                    ))
                } else {
                    Err(e)
                }
            }
        }
    }
}

/// Accounts created since 2023-10-01 cannot create launch configurations:
/// say so, and how to move the group to a launch template.
fn lc_unsupported(base: &str, aws: &str) -> String {
    format!(
        "{aws} — this account can no longer create launch configurations (AWS stopped them for accounts \
         created on or after 2023-10-01), so repave cannot publish a copy of {base}. Move the group to a \
         launch template: copy the configuration into one (console: EC2 Auto Scaling > Launch configurations > \
         Copy to launch template, or `aws ec2 create-launch-template` with the same image, type, security \
         groups, user data and profile), point the group at it (`aws autoscaling update-auto-scaling-group \
         --launch-template LaunchTemplateId=lt-...,Version=1`), then run again: repave publishes launch \
         template versions from then on"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_names_replace_the_previous_image() {
        let img = ImageId::new("ami-0123abcd");
        assert_eq!(copy_name("web-lc", &img), "web-lc-ami-0123abcd");
        assert_eq!(copy_name("web-lc-ami-99999999", &img), "web-lc-ami-0123abcd");
        assert_eq!(copy_name("web-ami-zzz", &img), "web-ami-zzz-ami-0123abcd");
        assert!(copy_name(&"x".repeat(300), &img).len() <= 255);
    }
}
