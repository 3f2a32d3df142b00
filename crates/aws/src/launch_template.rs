//! Launch templates. A new version is made FROM the base version
//! (`SourceVersion`) with only `ImageId` given, so it inherits every other
//! launch parameter exactly as the base has it — network interfaces,
//! placement, metadata options, tags, user data, whatever EC2 adds next —
//! and EC2 drops the base's block-device snapshot ids, so the new image's
//! own snapshots are used (copying the data by hand kept the old image's
//! root snapshot and rewrote fields the source never set).
//!
//! How the group names its version is kept: a group on `$Latest` gets the
//! new version by it being the latest; one on `$Default` by making it the
//! default; a numbered one by naming the number. Rolling back a `$Latest`
//! group makes a new version copied from the previous one (EC2 cannot make
//! an older version the latest), so what the group launches is exactly
//! what it launched before.

use crate::convert::ts;
use crate::error::{malformed, map_sdk, not_found};
use crate::AwsProvider;
use aws_sdk_ec2::types::{LaunchTemplateVersion, RequestLaunchTemplateData, ResponseLaunchTemplateData};
use repave_core::provider::{InstanceSpec, LaunchSpec, LaunchSpecRef, Result};
use repave_core::ImageId;

/// Description of versions repave creates; also how a resumed publish
/// recognises the version it already made, and a rollback the version it
/// was made from.
fn description(image: &ImageId, base: u64) -> String {
    format!("repave: {image} on v{base}")
}

/// The base version of a version repave made (`None` for any other).
pub(crate) fn made_from(desc: Option<&str>) -> Option<u64> {
    desc?.strip_prefix("repave: ")?.rsplit_once(" on v")?.1.parse().ok()
}

/// Tries (500 ms apart) before a numbered version counts as missing.
const VERSION_VISIBILITY_ATTEMPTS: u32 = 10;

/// How a group (or an override) names its template version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum VersionRef {
    Latest,
    Default,
    Number(u64),
}

impl VersionRef {
    pub(crate) fn parse(raw: Option<&str>) -> VersionRef {
        match raw {
            Some("$Latest") => VersionRef::Latest,
            // AWS reads an absent version as $Default.
            None | Some("$Default") => VersionRef::Default,
            Some(n) => n.parse().map(VersionRef::Number).unwrap_or(VersionRef::Default),
        }
    }
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
        ..Default::default()
    };
    (ImageId::new(d.image_id().unwrap_or_default()), spec)
}

impl AwsProvider {
    /// One version. A numbered version that is not found is asked for again
    /// for a few seconds: versions are never renumbered, so right after
    /// CreateLaunchTemplateVersion its absence is EC2's eventual
    /// consistency, not a fact.
    async fn template_version(&self, id_or_name: &str, version: &str) -> Result<LaunchTemplateVersion> {
        let numbered = version.parse::<u64>().is_ok();
        let mut attempt = 0;
        loop {
            match self.template_version_once(id_or_name, version).await {
                Err(e) if e.is_not_found() && numbered && attempt < VERSION_VISIBILITY_ATTEMPTS => {
                    attempt += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                }
                r => return r,
            }
        }
    }

    async fn template_version_once(&self, id_or_name: &str, version: &str) -> Result<LaunchTemplateVersion> {
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

    /// New version of `id_or_name` from version `base` with `image` in it.
    /// A resumed publish finds the version it made (latest version, same
    /// image, repave's description) instead of making another.
    pub(crate) async fn create_template_version(
        &self,
        id_or_name: &str,
        base: u64,
        image: &ImageId,
    ) -> Result<LaunchSpecRef> {
        self.template_version_from(id_or_name, base, image, description(image, base))
            .await
    }

    async fn template_version_from(
        &self,
        id_or_name: &str,
        base: u64,
        image: &ImageId,
        desc: String,
    ) -> Result<LaunchSpecRef> {
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
        let call = self
            .ec2
            .create_launch_template_version()
            .source_version(base.to_string())
            .version_description(desc)
            .launch_template_data(RequestLaunchTemplateData::builder().image_id(image.as_str()).build());
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

    /// Make `version` what a reference of kind `by` launches: the default
    /// version for `$Default`, the latest (a copy, when it is older) for
    /// `$Latest`. A numbered reference is the caller's to rename.
    pub(crate) async fn make_current(&self, id_or_name: &str, by: VersionRef, version: u64) -> Result<()> {
        match by {
            VersionRef::Number(_) => Ok(()),
            VersionRef::Default => {
                let call = self.ec2.modify_launch_template().default_version(version.to_string());
                let call = if id_or_name.starts_with("lt-") {
                    call.launch_template_id(id_or_name)
                } else {
                    call.launch_template_name(id_or_name)
                };
                call.send().await.map_err(|e| map_sdk("ModifyLaunchTemplate", e))?;
                Ok(())
            }
            VersionRef::Latest => {
                let latest = self.template_version(id_or_name, "$Latest").await?;
                if latest.version_number() == Some(version as i64) {
                    return Ok(());
                }
                let v = self.template_version(id_or_name, &version.to_string()).await?;
                let image = ImageId::new(v.launch_template_data().and_then(|d| d.image_id()).unwrap_or_default());
                self.template_version_from(id_or_name, version, &image, format!("repave: restore v{version}"))
                    .await?;
                Ok(())
            }
        }
    }

    /// The version number `by` stands for now.
    pub(crate) async fn current_number(&self, id_or_name: &str, by: VersionRef) -> Result<u64> {
        match by {
            VersionRef::Number(n) => Ok(n),
            VersionRef::Latest => self.resolve_template_version(id_or_name, "$Latest").await,
            VersionRef::Default => self.resolve_template_version(id_or_name, "$Default").await,
        }
    }

    /// Image of version `version`.
    pub(crate) async fn template_image(&self, id_or_name: &str, version: u64) -> Result<ImageId> {
        let v = self.template_version(id_or_name, &version.to_string()).await?;
        Ok(ImageId::new(
            v.launch_template_data().and_then(|d| d.image_id()).unwrap_or_default(),
        ))
    }

    /// Description of version `version` (how repave recognises its own).
    pub(crate) async fn template_description(&self, id_or_name: &str, version: u64) -> Result<Option<String>> {
        let v = self.template_version(id_or_name, &version.to_string()).await?;
        Ok(v.version_description().map(str::to_string))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repave_versions_name_their_base() {
        let d = description(&ImageId::new("ami-0123"), 7);
        assert_eq!(made_from(Some(&d)), Some(7));
        assert_eq!(made_from(Some("repave: restore v3")), None);
        assert_eq!(made_from(Some("someone else's")), None);
        assert_eq!(made_from(None), None);
    }

    #[test]
    fn version_references() {
        assert_eq!(VersionRef::parse(Some("$Latest")), VersionRef::Latest);
        assert_eq!(VersionRef::parse(Some("$Default")), VersionRef::Default);
        assert_eq!(VersionRef::parse(None), VersionRef::Default);
        assert_eq!(VersionRef::parse(Some("12")), VersionRef::Number(12));
    }
}
