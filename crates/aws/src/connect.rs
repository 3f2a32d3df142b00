//! Many accounts and regions from one process: where each pipeline's calls
//! go ([`AwsTarget`]), roles assumed through STS, and a pool that builds one
//! provider per account + region + role and one request budget per account
//! + region, shared by every pipeline there.

use crate::budget::RequestBudget;
use crate::{AwsError, AwsOptions, AwsProvider};
use aws_config::sts::AssumeRoleProvider;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_ec2::config::SharedCredentialsProvider;
use repave_core::config::{PipelineAws, RoleArn};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// Default STS session: AWS's own default for AssumeRole.
pub const DEFAULT_SESSION: Duration = Duration::from_secs(3600);
/// Default role session name (what CloudTrail shows).
pub const DEFAULT_SESSION_NAME: &str = "repave";

/// A role to assume. Debug shows no secret: there is none here (the
/// external id is not one, AWS says, but it is left out of logs anyway).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct AssumeRole {
    pub role_arn: String,
    pub external_id: Option<String>,
    pub session_name: String,
    /// DurationSeconds of each session; renewed before it ends.
    pub session_duration: Duration,
}

impl std::fmt::Debug for AssumeRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AssumeRole")
            .field("role_arn", &self.role_arn)
            .field("external_id", &self.external_id.as_ref().map(|_| "(set)"))
            .field("session_name", &self.session_name)
            .field("session_duration", &self.session_duration)
            .finish()
    }
}

impl AssumeRole {
    /// The role of `[pipelines.X.aws]`, if it names one.
    pub fn from_pipeline(aws: &PipelineAws) -> Option<AssumeRole> {
        Some(AssumeRole {
            role_arn: aws.role_arn.clone()?,
            external_id: aws.external_id.clone(),
            session_name: aws.session_name.clone().unwrap_or_else(|| DEFAULT_SESSION_NAME.into()),
            session_duration: aws.session_duration.map(|d| d.get()).unwrap_or(DEFAULT_SESSION),
        })
    }

    /// The account the role is in (where the calls land).
    pub fn account(&self) -> Option<&str> {
        RoleArn::parse(&self.role_arn).ok().map(|r| r.account)
    }
}

/// Where one pipeline's AWS calls go.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AwsTarget {
    pub region: Option<String>,
    pub profile: Option<String>,
    pub endpoint_url: Option<String>,
    pub role: Option<AssumeRole>,
}

impl AwsTarget {
    /// `[providers.aws]` with `--profile` / `--region` applied, then the
    /// pipeline's own `[pipelines.X.aws]` (its region wins).
    pub fn new(provider: &repave_core::config::AwsProvider, pipeline: Option<&PipelineAws>) -> AwsTarget {
        AwsTarget {
            region: pipeline
                .and_then(|p| p.region.clone())
                .or_else(|| provider.region.clone()),
            profile: provider.profile.clone(),
            endpoint_url: provider.endpoint_url.clone(),
            role: pipeline.and_then(AssumeRole::from_pipeline),
        }
    }
}

/// Builds providers and shares them: one per source + region + role, one
/// request budget per account + region.
#[derive(Debug)]
pub struct ProviderPool {
    options: AwsOptions,
    /// 0: no budget.
    budget_percent: u32,
    inner: tokio::sync::Mutex<PoolInner>,
}

#[derive(Debug, Default)]
struct PoolInner {
    providers: HashMap<(String, String, Option<AssumeRole>), Arc<AwsProvider>>,
    budgets: HashMap<(String, String), Arc<RequestBudget>>,
}

impl ProviderPool {
    pub fn new(options: AwsOptions, budget_percent: u32) -> ProviderPool {
        ProviderPool {
            options,
            budget_percent,
            inner: tokio::sync::Mutex::new(PoolInner::default()),
        }
    }

    /// The provider for `target`, loading the standard credential chain
    /// (with the target's profile, region and endpoint) the first time.
    pub async fn provider(&self, target: &AwsTarget) -> Result<Arc<AwsProvider>, AwsError> {
        let source = format!(
            "profile={};endpoint={}",
            target.profile.as_deref().unwrap_or("(default)"),
            target.endpoint_url.as_deref().unwrap_or("(default)")
        );
        let region = target.region.clone().unwrap_or_default();
        if let Some(p) = self.existing(&source, &region, target.role.as_ref()).await {
            return Ok(p);
        }
        let mut loader = aws_config::defaults(BehaviorVersion::latest()).retry_config(crate::retry_config());
        if let Some(p) = &target.profile {
            loader = loader.profile_name(p);
        }
        if let Some(r) = &target.region {
            loader = loader.region(Region::new(r.clone()));
        }
        if let Some(u) = &target.endpoint_url {
            loader = loader.endpoint_url(u);
        }
        let base = loader.load().await;
        if base.region().is_none() {
            return Err(AwsError::NoRegion);
        }
        self.provider_on(&base, &source, None, target.role.as_ref()).await
    }

    async fn existing(&self, source: &str, region: &str, role: Option<&AssumeRole>) -> Option<Arc<AwsProvider>> {
        let inner = self.inner.lock().await;
        inner
            .providers
            .get(&(source.to_string(), region.to_string(), role.cloned()))
            .cloned()
    }

    /// The provider on an already loaded base configuration (its
    /// credentials are the source for `role`), in `region` or the base's.
    /// `source` names the base for sharing: the same source, region and
    /// role give the same provider.
    pub async fn provider_on(
        &self,
        base: &SdkConfig,
        source: &str,
        region: Option<&str>,
        role: Option<&AssumeRole>,
    ) -> Result<Arc<AwsProvider>, AwsError> {
        let region = match region {
            Some(r) => r.to_string(),
            None => base.region().map(|r| r.to_string()).ok_or(AwsError::NoRegion)?,
        };
        let key = (source.to_string(), region.clone(), role.cloned());
        let mut inner = self.inner.lock().await;
        if let Some(p) = inner.providers.get(&key) {
            return Ok(p.clone());
        }
        let base = base.to_builder().region(Region::new(region.clone())).build();
        let sdk = match role {
            Some(role) => assumed(&base, role).await,
            None => base,
        };
        // Calls under a role land in the role's account; without one, in the
        // source's account, which is not known without a call: every
        // pipeline of the same source shares it.
        let account = role
            .and_then(|r| r.account().map(str::to_string))
            .unwrap_or_else(|| format!("source:{source}"));
        let budget = (self.budget_percent > 0).then(|| {
            inner
                .budgets
                .entry((account.clone(), region.clone()))
                .or_insert_with(|| RequestBudget::new(self.budget_percent))
                .clone()
        });
        tracing::info!(
            region = %region,
            account = %account,
            role = role.map(|r| r.role_arn.as_str()).unwrap_or("(none)"),
            budget = budget.is_some(),
            "AWS provider"
        );
        // Group names are unique within an account and region: the role's
        // account when there is one, else the region alone (every
        // role-less pipeline shares the source's account).
        let place = match role.and_then(|r| r.account()) {
            Some(account) => format!("{account}/{region}"),
            None => region.clone(),
        };
        let provider = Arc::new(AwsProvider::from_sdk_config_with(&sdk, self.options.clone(), budget).in_place(place));
        inner.providers.insert(key, provider.clone());
        Ok(provider)
    }

    /// The budgets made so far: (account, region) → budget.
    pub async fn budgets(&self) -> Vec<((String, String), Arc<RequestBudget>)> {
        let inner = self.inner.lock().await;
        let mut out: Vec<_> = inner.budgets.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

/// `base` with its credentials replaced by the role's: the base's
/// credentials call STS AssumeRole; the SDK's identity cache keeps the
/// session and assumes the role again shortly before it expires.
pub async fn assumed(base: &SdkConfig, role: &AssumeRole) -> SdkConfig {
    let mut builder = AssumeRoleProvider::builder(role.role_arn.clone())
        .configure(base)
        .session_name(role.session_name.clone())
        .session_length(role.session_duration);
    if let Some(id) = &role.external_id {
        builder = builder.external_id(id.clone());
    }
    let provider = builder.build().await;
    base.to_builder()
        .credentials_provider(SharedCredentialsProvider::new(provider))
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(region: &str, role: Option<&str>) -> AwsTarget {
        AwsTarget {
            region: Some(region.into()),
            profile: None,
            // Nothing listens there: building a provider makes no call.
            endpoint_url: Some("http://127.0.0.1:9".into()),
            role: role.map(|arn| AssumeRole {
                role_arn: arn.into(),
                external_id: None,
                session_name: DEFAULT_SESSION_NAME.into(),
                session_duration: DEFAULT_SESSION,
            }),
        }
    }

    #[tokio::test]
    async fn one_provider_per_region_and_role_one_budget_per_account_and_region() {
        let pool = ProviderPool::new(AwsOptions::default(), 50);
        let a = "arn:aws:iam::111111111111:role/repave";
        let a2 = "arn:aws:iam::111111111111:role/other";
        let b = "arn:aws:iam::222222222222:role/repave";
        let p1 = pool.provider(&target("us-east-1", Some(a))).await.unwrap();
        let p2 = pool.provider(&target("us-east-1", Some(a))).await.unwrap();
        let p3 = pool.provider(&target("us-east-1", Some(a2))).await.unwrap();
        let p4 = pool.provider(&target("eu-west-1", Some(a))).await.unwrap();
        let p5 = pool.provider(&target("us-east-1", Some(b))).await.unwrap();
        assert!(Arc::ptr_eq(&p1, &p2), "same account, region and role: one provider");
        assert!(!Arc::ptr_eq(&p1, &p3) && !Arc::ptr_eq(&p1, &p4) && !Arc::ptr_eq(&p1, &p5));
        let budget = |p: &AwsProvider| p.budget().cloned().expect("budget");
        // Two roles of one account in one region draw from one budget.
        assert!(Arc::ptr_eq(&budget(&p1), &budget(&p3)));
        assert!(!Arc::ptr_eq(&budget(&p1), &budget(&p4)), "another region");
        assert!(!Arc::ptr_eq(&budget(&p1), &budget(&p5)), "another account");
        let keys: Vec<_> = pool.budgets().await.into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys.len(), 3, "{keys:?}");
        // Percent 0: no budget.
        let off = ProviderPool::new(AwsOptions::default(), 0);
        assert!(off
            .provider(&target("us-east-1", None))
            .await
            .unwrap()
            .budget()
            .is_none());
    }

    #[test]
    fn the_external_id_stays_out_of_debug_output() {
        let role = AssumeRole {
            role_arn: "arn:aws:iam::111111111111:role/repave".into(),
            external_id: Some("s3cr3t-tenant".into()),
            session_name: "repave".into(),
            session_duration: DEFAULT_SESSION,
        };
        let text = format!("{:?}", target("us-east-1", None)) + &format!("{role:?}");
        assert!(!text.contains("s3cr3t-tenant"), "{text}");
    }
}
