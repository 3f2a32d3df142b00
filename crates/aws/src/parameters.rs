//! The golden parameter in SSM Parameter Store.
//!
//! `get_parameter` reads GetParameterHistory (one call for up to 50
//! versions) and takes its last entry: value, version, description and
//! labels in one go, which GetParameter alone does not return.
//! `put_parameter` always sends the description (the given one, or the
//! current one) together with the current type and data type
//! (`aws:ec2:image` stays `aws:ec2:image`), so an overwrite never loses
//! them whatever the service does with omitted fields.

use crate::convert::ts;
use crate::error::{map_sdk, not_found};
use crate::AwsProvider;
use async_trait::async_trait;
use aws_sdk_ssm::types::{ParameterHistory, ParameterType};
use repave_core::provider::{Parameter, Parameters, Result};
use repave_core::ProviderError;

fn parameter(h: &ParameterHistory) -> Parameter {
    Parameter {
        name: h.name().unwrap_or_default().to_string(),
        value: h.value().unwrap_or_default().to_string(),
        version: h.version().max(0) as u64,
        description: h.description().filter(|d| !d.is_empty()).map(str::to_string),
        labels: h.labels().to_vec(),
        modified_at: ts(h.last_modified_date()),
    }
}

impl AwsProvider {
    async fn history_raw(&self, name: &str) -> Result<Vec<ParameterHistory>> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .ssm
                .get_parameter_history()
                .name(name)
                .max_results(50)
                .set_next_token(token.take())
                .send()
                .await
                .map_err(|e| map_sdk("GetParameterHistory", e))?;
            out.extend(page.parameters().iter().cloned());
            match page.next_token() {
                Some(t) if !t.is_empty() => token = Some(t.to_string()),
                _ => break,
            }
        }
        out.sort_by_key(|h| h.version());
        Ok(out)
    }
}

#[async_trait]
impl Parameters for AwsProvider {
    async fn get_parameter(&self, name: &str) -> Result<Parameter> {
        let history = self.history_raw(name).await?;
        history
            .last()
            .map(parameter)
            .ok_or_else(|| not_found("GetParameterHistory", format!("parameter {name}")))
    }

    /// PutParameter with Overwrite; see the module doc for what is kept.
    async fn put_parameter(&self, name: &str, value: &str, description: Option<&str>) -> Result<u64> {
        let current = match self.history_raw(name).await {
            Ok(h) => h.last().cloned(),
            Err(e) if e.is_not_found() => None,
            Err(e) => return Err(e),
        };
        let kind = current
            .as_ref()
            .and_then(|c| c.r#type().cloned())
            .unwrap_or(ParameterType::String);
        let description = description
            .map(str::to_string)
            .or_else(|| current.as_ref().and_then(|c| c.description().map(str::to_string)));
        let data_type = current.as_ref().and_then(|c| c.data_type().map(str::to_string));
        let out = self
            .ssm
            .put_parameter()
            .name(name)
            .value(value)
            .r#type(kind)
            .overwrite(current.is_some())
            .set_description(description.filter(|d| !d.is_empty()))
            .set_data_type(data_type)
            .send()
            .await
            .map_err(|e| map_sdk("PutParameter", e))?;
        Ok(out.version().max(0) as u64)
    }

    async fn parameter_history(&self, name: &str) -> Result<Vec<Parameter>> {
        Ok(self.history_raw(name).await?.iter().map(parameter).collect())
    }

    /// LabelParameterVersion; a label moves from whichever version had it.
    async fn label_parameter_version(&self, name: &str, version: u64, labels: &[String]) -> Result<()> {
        let out = self
            .ssm
            .label_parameter_version()
            .name(name)
            .parameter_version(version as i64)
            .set_labels(Some(labels.to_vec()))
            .send()
            .await
            .map_err(|e| map_sdk("LabelParameterVersion", e))?;
        if !out.invalid_labels().is_empty() {
            return Err(ProviderError::permanent(
                "LabelParameterVersion",
                format!(
                    "ParameterVersionLabelLimitExceeded or invalid: {}",
                    out.invalid_labels().join(", ")
                ),
            ));
        }
        Ok(())
    }
}
