//! Images: AMIs and their EBS snapshots.

use crate::convert::{ec2_tags, filter, from_ec2_tags, tag_filters, tag_spec, ts_str};
use crate::error::{map_sdk, not_found};
use crate::AwsProvider;
use async_trait::async_trait;
use aws_sdk_ec2::types::{ImageState as AwsImageState, ResourceType};
use repave_core::provider::{CreateImageRequest, Image, ImageState, Images, Result, Tags};
use repave_core::ImageId;

/// How long a name EC2 calls a duplicate may stay unlisted.
const DUPLICATE_VISIBILITY: std::time::Duration = std::time::Duration::from_secs(60);

fn state(s: Option<&AwsImageState>) -> ImageState {
    match s {
        Some(AwsImageState::Available) => ImageState::Available,
        Some(AwsImageState::Pending) | Some(AwsImageState::Transient) => ImageState::Pending,
        Some(AwsImageState::Deregistered) => ImageState::Deregistered,
        // failed, error, invalid, disabled: nothing will launch from it.
        _ => ImageState::Failed,
    }
}

pub(crate) fn image(i: &aws_sdk_ec2::types::Image) -> Image {
    Image {
        id: ImageId::new(i.image_id().unwrap_or_default()),
        name: i.name().unwrap_or_default().to_string(),
        state: state(i.state()),
        created_at: ts_str(i.creation_date()),
        tags: from_ec2_tags(i.tags()),
        // PlatformDetails ("Linux/UNIX", "Windows", "Red Hat Enterprise
        // Linux", ...) and the name tell the OS family; the description is
        // added for names that do not say.
        platform: i.platform_details().map(|d| match i.description() {
            Some(desc) if !desc.is_empty() => format!("{d} ({desc})"),
            _ => d.to_string(),
        }),
    }
}

fn snapshot_ids(i: &aws_sdk_ec2::types::Image) -> Vec<String> {
    i.block_device_mappings()
        .iter()
        .filter_map(|m| m.ebs().and_then(|e| e.snapshot_id()).map(str::to_string))
        .collect()
}

impl AwsProvider {
    async fn create_image_call(&self, req: &CreateImageRequest) -> Result<ImageId> {
        // The OS family in the description: PlatformDetails and a repave
        // image name do not tell Amazon Linux from Ubuntu, and the next bake
        // from this image needs to know.
        let family = match self.patch_context(&req.instance, None).await {
            Ok(c) => format!(" ({})", c.os),
            Err(_) => String::new(),
        };
        let out = self
            .ec2
            .create_image()
            .instance_id(req.instance.as_str())
            .name(&req.name)
            .description(format!("repave image from {}{family}", req.instance))
            .tag_specifications(tag_spec(ResourceType::Image, &req.tags))
            .tag_specifications(tag_spec(ResourceType::Snapshot, &req.tags))
            .send()
            .await
            .map_err(|e| map_sdk("CreateImage", e))?;
        out.image_id()
            .map(ImageId::new)
            .ok_or_else(|| crate::error::malformed("CreateImage", "no image id"))
    }

    pub(crate) async fn describe_raw(&self, id: &ImageId) -> Result<aws_sdk_ec2::types::Image> {
        let out = self
            .ec2
            .describe_images()
            .image_ids(id.as_str())
            .send()
            .await
            .map_err(|e| map_sdk("DescribeImages", e))?;
        out.images()
            .first()
            .cloned()
            .ok_or_else(|| not_found("DescribeImages", id))
    }

    /// The existing image of this run, if a previous attempt created it
    /// (ClientToken is not trusted: emulators ignore it).
    async fn image_by_name(&self, name: &str) -> Result<Option<ImageId>> {
        let out = self
            .ec2
            .describe_images()
            .owners("self")
            .filters(filter("name", [name]))
            .send()
            .await
            .map_err(|e| map_sdk("DescribeImages", e))?;
        Ok(out
            .images()
            .iter()
            .find(|i| !matches!(i.state(), Some(AwsImageState::Deregistered)))
            .and_then(|i| i.image_id())
            .map(ImageId::new))
    }
}

#[async_trait]
impl Images for AwsProvider {
    async fn describe_image(&self, id: &ImageId) -> Result<Image> {
        Ok(image(&self.describe_raw(id).await?))
    }

    /// CreateImage with the tags on the image and on its snapshots. An image
    /// of the same name (names are unique per account and region) is this
    /// request's earlier attempt and is returned instead — also when EC2
    /// refuses the name as a duplicate of an image it does not list yet
    /// (eventual consistency right after an interrupted CreateImage).
    async fn create_image(&self, req: CreateImageRequest) -> Result<ImageId> {
        if let Some(id) = self.image_by_name(&req.name).await? {
            return Ok(id);
        }
        match self.create_image_call(&req).await {
            Ok(id) => Ok(id),
            Err(e) if e.message.starts_with("InvalidAMIName.Duplicate") => {
                let deadline = tokio::time::Instant::now() + DUPLICATE_VISIBILITY;
                loop {
                    if let Some(id) = self.image_by_name(&req.name).await? {
                        return Ok(id);
                    }
                    if tokio::time::Instant::now() >= deadline {
                        return Err(e);
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                }
            }
            Err(e) => Err(e),
        }
    }

    /// DeregisterImage, then DeleteSnapshot for every EBS snapshot it had.
    /// Already gone is success.
    async fn deregister_image(&self, id: &ImageId) -> Result<()> {
        let img = match self.describe_raw(id).await {
            Ok(i) => i,
            Err(e) if e.is_not_found() => return Ok(()),
            Err(e) => return Err(e),
        };
        let snapshots = snapshot_ids(&img);
        if !matches!(img.state(), Some(AwsImageState::Deregistered)) {
            match self.ec2.deregister_image().image_id(id.as_str()).send().await {
                Ok(_) => {}
                Err(e) => {
                    let e = map_sdk("DeregisterImage", e);
                    if !e.is_not_found() {
                        return Err(e);
                    }
                }
            }
        }
        for s in snapshots {
            if let Err(e) = self.ec2.delete_snapshot().snapshot_id(&s).send().await {
                let e = map_sdk("DeleteSnapshot", e);
                if !e.is_not_found() {
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Images owned by this account carrying every tag.
    async fn list_images(&self, tags: &Tags) -> Result<Vec<Image>> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .ec2
                .describe_images()
                .owners("self")
                .set_filters(Some(tag_filters(tags)))
                .set_next_token(token.take())
                .send()
                .await
                .map_err(|e| map_sdk("DescribeImages", e))?;
            out.extend(page.images().iter().map(image));
            match page.next_token() {
                Some(t) if !t.is_empty() => token = Some(t.to_string()),
                _ => break,
            }
        }
        Ok(out)
    }

    async fn referenced_images(&self) -> Result<std::collections::BTreeSet<ImageId>> {
        self.account_references().await
    }

    async fn tag_image(&self, id: &ImageId, tags: &Tags) -> Result<()> {
        self.ec2
            .create_tags()
            .resources(id.as_str())
            .set_tags(Some(ec2_tags(tags)))
            .send()
            .await
            .map_err(|e| map_sdk("CreateTags", e))?;
        Ok(())
    }
}
