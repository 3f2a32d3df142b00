//! The run's patch baseline in SSM (see [`crate::patching`] for why):
//! found by name before it is made (a resumed run reuses it), registered to
//! the run's patch group, the builder tagged into that group; removed by
//! `finish_patching` and swept by `repave gc`.

use crate::error::{malformed, map_sdk};
use crate::patching::{self, Baseline, PATCH_GROUP_TAG};
use crate::AwsProvider;
use aws_sdk_ssm::types::{
    OperatingSystem, PatchAction, PatchFilter, PatchFilterGroup, PatchFilterKey, PatchOrchestratorFilter, PatchRule,
    PatchRuleGroup, Tag,
};
use repave_core::patch::{OsFamily, PatchSelection};
use repave_core::provider::{tag, Result};
use repave_core::{InstanceId, ProviderError};

/// Who a builder's patching belongs to, from its tags and image.
#[derive(Debug, Clone)]
pub(crate) struct PatchContext {
    pub run: String,
    pub pipeline: String,
    pub os: OsFamily,
    pub operating_system: &'static str,
    /// Baseline and patch group name.
    pub name: String,
}

/// A baseline repave made, as `gc` sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatchBaselineRecord {
    pub id: String,
    pub name: String,
    pub run: Option<String>,
    pub pipeline: Option<String>,
}

fn build_err(e: impl std::fmt::Display) -> ProviderError {
    ProviderError::permanent("CreatePatchBaseline", format!("InvalidParameters: {e}"))
}

fn rules(b: &Baseline) -> Result<Option<PatchRuleGroup>> {
    let Some(rule) = &b.rule else { return Ok(None) };
    let mut filters = Vec::new();
    for (key, values) in &rule.filters {
        filters.push(
            PatchFilter::builder()
                .key(PatchFilterKey::from(*key))
                .set_values(Some(values.clone()))
                .build()
                .map_err(build_err)?,
        );
    }
    let group = PatchFilterGroup::builder()
        .set_patch_filters(Some(filters))
        .build()
        .map_err(build_err)?;
    let mut r = PatchRule::builder()
        .patch_filter_group(group)
        .enable_non_security(rule.enable_non_security);
    if let Some(days) = rule.approve_after_days {
        r = r.approve_after_days(days as i32);
    }
    Ok(Some(
        PatchRuleGroup::builder()
            .patch_rules(r.build())
            .build()
            .map_err(build_err)?,
    ))
}

impl AwsProvider {
    /// Run, pipeline and OS family of a builder (cached: none of it changes).
    pub(crate) async fn patch_context(&self, id: &InstanceId, os: Option<OsFamily>) -> Result<PatchContext> {
        if let Some(c) = self.patch_contexts.lock().expect("patch context lock").get(id) {
            return Ok(c.clone());
        }
        let i = self.describe_visible(id).await?;
        let tag_of = |k: &str| {
            i.tags()
                .iter()
                .find(|t| t.key() == Some(k))
                .and_then(|t| t.value())
                .map(str::to_string)
        };
        let run = tag_of(tag::RUN).ok_or_else(|| {
            ProviderError::permanent(
                "SendCommand",
                format!(
                    "InvalidInstanceId: {id} has no {} tag; only repave builders are patched",
                    tag::RUN
                ),
            )
        })?;
        let pipeline = tag_of(tag::PIPELINE).unwrap_or_else(|| "pipeline".into());
        let image = match i.image_id() {
            Some(image) => self.describe_raw(&repave_core::ImageId::new(image)).await.ok(),
            None => None,
        };
        let name = image.as_ref().and_then(|m| m.name()).unwrap_or_default().to_string();
        let detected = image.as_ref().and_then(|m| {
            OsFamily::detect(
                m.platform_details().unwrap_or_default(),
                m.name().unwrap_or_default(),
                m.description().unwrap_or_default(),
            )
        });
        let windows = self.platform(id).await? == patching::Platform::Windows;
        let os = os.or(detected).unwrap_or(if windows {
            OsFamily::Windows
        } else {
            OsFamily::AmazonLinux
        });
        let c = PatchContext {
            name: patching::baseline_name(&pipeline, &run),
            operating_system: patching::operating_system(os, &name),
            run,
            pipeline,
            os,
        };
        self.patch_contexts
            .lock()
            .expect("patch context lock")
            .insert(id.clone(), c.clone());
        Ok(c)
    }

    async fn find_baseline(&self, name: &str) -> Result<Option<String>> {
        Ok(self
            .list_baselines(name)
            .await?
            .into_iter()
            .find(|(_, n)| n == name)
            .map(|(id, _)| id))
    }

    /// (id, name) of this account's baselines whose name starts with `prefix`.
    async fn list_baselines(&self, prefix: &str) -> Result<Vec<(String, String)>> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .ssm
                .describe_patch_baselines()
                .filters(
                    PatchOrchestratorFilter::builder()
                        .key("NAME_PREFIX")
                        .values(prefix)
                        .build(),
                )
                .set_next_token(token.take())
                .send()
                .await
                .map_err(|e| map_sdk("DescribePatchBaselines", e))?;
            out.extend(
                page.baseline_identities()
                    .iter()
                    .filter_map(|b| Some((b.baseline_id()?.to_string(), b.baseline_name()?.to_string()))),
            );
            match page.next_token() {
                Some(t) if !t.is_empty() => token = Some(t.to_string()),
                _ => break,
            }
        }
        Ok(out)
    }

    /// Make the run's baseline say `b` (creating it the first time),
    /// register it to the run's patch group and put the builder in it.
    pub(crate) async fn apply_baseline(&self, id: &InstanceId, c: &PatchContext, b: &Baseline) -> Result<String> {
        let rules = rules(b)?;
        let baseline = match self.find_baseline(&c.name).await? {
            Some(existing) => {
                // Replace: fields left out are cleared, so an install
                // baseline really has no approval rules.
                self.ssm
                    .update_patch_baseline()
                    .baseline_id(&existing)
                    .replace(true)
                    .name(&b.name)
                    .set_approval_rules(rules)
                    .set_approved_patches(Some(b.approved.clone()))
                    .approved_patches_enable_non_security(b.approved_enable_non_security)
                    .set_rejected_patches(Some(b.rejected.clone()))
                    .rejected_patches_action(PatchAction::Block)
                    .send()
                    .await
                    .map_err(|e| map_sdk("UpdatePatchBaseline", e))?;
                existing
            }
            None => {
                let tags = [(tag::RUN, c.run.as_str()), (tag::PIPELINE, c.pipeline.as_str())]
                    .iter()
                    .map(|(k, v)| Tag::builder().key(*k).value(*v).build().map_err(build_err))
                    .collect::<Result<Vec<_>>>()?;
                self.ssm
                    .create_patch_baseline()
                    .name(&b.name)
                    .operating_system(OperatingSystem::from(b.operating_system))
                    .description(format!(
                        "repave run {} of pipeline {}: its patch selection",
                        c.run, c.pipeline
                    ))
                    .set_approval_rules(rules)
                    .set_approved_patches(Some(b.approved.clone()))
                    .approved_patches_enable_non_security(b.approved_enable_non_security)
                    .set_rejected_patches(Some(b.rejected.clone()))
                    .rejected_patches_action(PatchAction::Block)
                    .client_token(&b.name)
                    .set_tags(Some(tags))
                    .send()
                    .await
                    .map_err(|e| map_sdk("CreatePatchBaseline", e))?
                    .baseline_id()
                    .map(str::to_string)
                    .ok_or_else(|| malformed("CreatePatchBaseline", "no baseline id"))?
            }
        };
        match self
            .ssm
            .register_patch_baseline_for_patch_group()
            .baseline_id(&baseline)
            .patch_group(&c.name)
            .send()
            .await
        {
            Ok(_) => {}
            // Registered by an earlier attempt of this step.
            Err(e) => {
                let e = map_sdk("RegisterPatchBaselineForPatchGroup", e);
                if !e.message.starts_with("AlreadyExistsException") {
                    return Err(e);
                }
            }
        }
        self.ec2
            .create_tags()
            .resources(id.as_str())
            .tags(
                aws_sdk_ec2::types::Tag::builder()
                    .key(PATCH_GROUP_TAG)
                    .value(&c.name)
                    .build(),
            )
            .send()
            .await
            .map_err(|e| map_sdk("CreateTags", e))?;
        Ok(baseline)
    }

    /// The baseline's explicitly approved patches: an install's frozen list.
    pub(crate) async fn approved_patches(&self, c: &PatchContext) -> Result<Vec<String>> {
        let Some(id) = self.find_baseline(&c.name).await? else {
            return Ok(Vec::new());
        };
        let out = self
            .ssm
            .get_patch_baseline()
            .baseline_id(&id)
            .send()
            .await
            .map_err(|e| map_sdk("GetPatchBaseline", e))?;
        Ok(out.approved_patches().to_vec())
    }

    /// Deregister and delete a baseline repave made. Already gone is fine.
    pub async fn delete_patch_baseline(&self, id: &str, patch_group: &str) -> Result<()> {
        let not_found = |e: &ProviderError| {
            e.is_not_found() || e.message.starts_with("DoesNotExistException") || e.message.contains("does not exist")
        };
        if let Err(e) = self
            .ssm
            .deregister_patch_baseline_for_patch_group()
            .baseline_id(id)
            .patch_group(patch_group)
            .send()
            .await
        {
            let e = map_sdk("DeregisterPatchBaselineForPatchGroup", e);
            if !not_found(&e) {
                return Err(e);
            }
        }
        if let Err(e) = self.ssm.delete_patch_baseline().baseline_id(id).send().await {
            let e = map_sdk("DeletePatchBaseline", e);
            if !not_found(&e) {
                return Err(e);
            }
        }
        Ok(())
    }

    pub(crate) async fn finish_baseline(&self, id: &InstanceId) -> Result<()> {
        let c = match self.patch_context(id, None).await {
            Ok(c) => c,
            // Not a repave builder, or gone: nothing of ours to remove.
            Err(e) if e.is_not_found() => return Ok(()),
            Err(e) => return Err(e),
        };
        if let Some(baseline) = self.find_baseline(&c.name).await? {
            self.delete_patch_baseline(&baseline, &c.name).await?;
        }
        Ok(())
    }

    /// Every patch baseline repave made in this account and region, with
    /// the run it belongs to (`repave gc` deletes those of finished runs).
    pub async fn patch_baselines(&self) -> Result<Vec<PatchBaselineRecord>> {
        let mut out = Vec::new();
        for (id, name) in self.list_baselines("repave-").await? {
            let tags = self
                .ssm
                .list_tags_for_resource()
                .resource_type(aws_sdk_ssm::types::ResourceTypeForTagging::PatchBaseline)
                .resource_id(&id)
                .send()
                .await
                .map_err(|e| map_sdk("ListTagsForResource", e))?;
            let get = |k: &str| {
                tags.tag_list()
                    .iter()
                    .find(|t| t.key() == k)
                    .map(|t| t.value().to_string())
            };
            out.push(PatchBaselineRecord {
                run: get(tag::RUN),
                pipeline: get(tag::PIPELINE),
                id,
                name,
            });
        }
        Ok(out)
    }

    /// The selection as the scan baseline for this builder.
    pub(crate) fn scan_baseline_for(c: &PatchContext, selection: &PatchSelection) -> Baseline {
        patching::scan_baseline(&c.name, c.operating_system, c.os, selection)
    }
}
