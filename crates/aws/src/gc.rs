//! What `repave gc` and retention must never delete: every image the
//! account still references — in any launch template version, any launch
//! configuration, or any instance that is not terminated (group members
//! included). The golden parameter's history is the engine's part (it
//! knows the rollback window).

use crate::convert::filter;
use crate::error::map_sdk;
use crate::AwsProvider;
use repave_core::provider::Result;
use repave_core::ImageId;
use std::collections::BTreeSet;

impl AwsProvider {
    /// Image ids referenced anywhere in the account and region.
    /// Cost: 1 + (launch templates) + (launch configuration pages) +
    /// (instance pages) calls.
    pub(crate) async fn account_references(&self) -> Result<BTreeSet<ImageId>> {
        let mut out = BTreeSet::new();
        let mut templates = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .ec2
                .describe_launch_templates()
                .set_next_token(token.take())
                .send()
                .await
                .map_err(|e| map_sdk("DescribeLaunchTemplates", e))?;
            templates.extend(
                page.launch_templates()
                    .iter()
                    .filter_map(|t| t.launch_template_id())
                    .map(str::to_string),
            );
            match page.next_token() {
                Some(t) if !t.is_empty() => token = Some(t.to_string()),
                _ => break,
            }
        }
        for id in templates {
            let mut token: Option<String> = None;
            loop {
                let page = self
                    .ec2
                    .describe_launch_template_versions()
                    .launch_template_id(&id)
                    .set_next_token(token.take())
                    .send()
                    .await
                    .map_err(|e| map_sdk("DescribeLaunchTemplateVersions", e))?;
                out.extend(
                    page.launch_template_versions()
                        .iter()
                        .filter_map(|v| v.launch_template_data().and_then(|d| d.image_id()))
                        .map(ImageId::new),
                );
                match page.next_token() {
                    Some(t) if !t.is_empty() => token = Some(t.to_string()),
                    _ => break,
                }
            }
        }
        let mut token: Option<String> = None;
        loop {
            let page = self
                .asg
                .describe_launch_configurations()
                .set_next_token(token.take())
                .send()
                .await
                .map_err(|e| map_sdk("DescribeLaunchConfigurations", e))?;
            out.extend(
                page.launch_configurations()
                    .iter()
                    .filter_map(|l| l.image_id())
                    .map(ImageId::new),
            );
            match page.next_token() {
                Some(t) if !t.is_empty() => token = Some(t.to_string()),
                _ => break,
            }
        }
        let live = filter(
            "instance-state-name",
            ["pending", "running", "stopping", "stopped", "shutting-down"],
        );
        for i in self.describe_filtered(vec![live]).await? {
            if let Some(img) = i.image_id() {
                out.insert(ImageId::new(img));
            }
        }
        Ok(out)
    }
}
