//! Many accounts and regions, on the AWS-behaviour harness: a pipeline with
//! `role_arn` assumes a role created in moto (its trust policy printed by
//! `repave_aws::trust`) and rolls its group in the role's account; one pool
//! drives two accounts in two regions; the STS session is renewed before it
//! expires; every provider of an account and region waits for one budget.
//!
//! The runner is an IAM user of its own account, signing with its access
//! key and no `x-moto-account-id` header: moto maps access keys to their
//! account, and assumed-role keys to the role's, as AWS does.

mod common;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_ec2::config::Credentials;
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::HttpRequest;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use common::{assert_succeeded, endpoint, engine, harness_account, pipeline, Moto, SpecKind};
use repave_aws::{AssumeRole, AwsOptions, ProviderPool};
use repave_core::config::PipelineAws;
use repave_core::provider::{Groups, Parameters};
use repave_core::ErrorKind;
use repave_store::RunKind;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// One IAM Query call to moto in `account` (IAM is not a dependency of
/// repave; moto does not check signatures unless told to).
async fn iam(account: &str, params: &[(&str, &str)]) -> String {
    let enc = |s: &str| {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    let mut body = String::from("Version=2010-05-08");
    for (k, v) in params {
        body.push_str(&format!("&{k}={}", enc(v)));
    }
    let addr = endpoint().trim_start_matches("http://").to_string();
    let req = format!(
        "POST / HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Authorization: AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/iam/aws4_request, SignedHeaders=host, Signature=0\r\n\
         x-moto-account-id: {account}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(&addr).await.expect("moto answers");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).await.expect("read");
    assert!(
        out.starts_with("HTTP/1.1 200") || out.starts_with("HTTP/1.0 200"),
        "IAM {params:?}: {out}"
    );
    out
}

fn xml<'a>(doc: &'a str, tag: &str) -> &'a str {
    let open = format!("<{tag}>");
    let start = doc.find(&open).unwrap_or_else(|| panic!("no <{tag}> in {doc}")) + open.len();
    let end = doc[start..].find(&format!("</{tag}>")).expect("closing tag") + start;
    &doc[start..end]
}

/// The runner: an IAM user with an access key in `account`.
struct Runner {
    arn: String,
    key: String,
    secret: String,
}

async fn runner(account: &str) -> Runner {
    let user = iam(account, &[("Action", "CreateUser"), ("UserName", "repave-ci")]).await;
    let keys = iam(account, &[("Action", "CreateAccessKey"), ("UserName", "repave-ci")]).await;
    Runner {
        arn: xml(&user, "Arn").to_string(),
        key: xml(&keys, "AccessKeyId").to_string(),
        secret: xml(&keys, "SecretAccessKey").to_string(),
    }
}

/// A role named `name` in `account` with the trust policy repave prints
/// for `aws`, trusting `principal`.
async fn role(account: &str, name: &str, aws: &PipelineAws, principal: &str, max_session: u32) -> String {
    let trust = repave_aws::trust::trust_policy(aws, principal, "us-east-1").to_string();
    let max = max_session.to_string();
    let out = iam(
        account,
        &[
            ("Action", "CreateRole"),
            ("RoleName", name),
            ("AssumeRolePolicyDocument", &trust),
            ("MaxSessionDuration", &max),
        ],
    )
    .await;
    xml(&out, "Arn").to_string()
}

/// Counts STS AssumeRole requests going out.
#[derive(Debug, Clone)]
struct Counting {
    inner: SharedHttpClient,
    assume_role: Arc<AtomicU32>,
}

#[derive(Debug)]
struct CountingConnector {
    inner: SharedHttpConnector,
    assume_role: Arc<AtomicU32>,
}

impl HttpConnector for CountingConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let body = request.body().bytes().unwrap_or_default();
        if String::from_utf8_lossy(body).contains("Action=AssumeRole") {
            self.assume_role.fetch_add(1, Ordering::SeqCst);
        }
        self.inner.call(request)
    }
}

impl HttpClient for Counting {
    fn http_connector(&self, settings: &HttpConnectorSettings, components: &RuntimeComponents) -> SharedHttpConnector {
        SharedHttpConnector::new(CountingConnector {
            inner: self.inner.http_connector(settings, components),
            assume_role: self.assume_role.clone(),
        })
    }
}

/// The runner's own configuration: its keys, no account header.
async fn source(runner: &Runner, assume_role: Arc<AtomicU32>) -> SdkConfig {
    use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};
    let inner = aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::AwsLc))
        .build_https();
    aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint())
        .credentials_provider(Credentials::new(&runner.key, &runner.secret, None, None, "runner"))
        .retry_config(repave_aws::retry_config())
        .http_client(Counting { inner, assume_role })
        .load()
        .await
}

fn pool() -> ProviderPool {
    ProviderPool::new(
        AwsOptions {
            empty_patch_output_is_clean: false,
        },
        50,
    )
}

fn assume(arn: &str, external_id: Option<&str>, session: Duration) -> AssumeRole {
    AssumeRole {
        role_arn: arn.to_string(),
        external_id: external_id.map(String::from),
        session_name: "repave".into(),
        session_duration: session,
    }
}

/// Roll `fleet` onto a new image through `provider`; the new image.
/// The run checks its own permissions first, so the role `repave` in the
/// fleet's account is given the policy `repave iam-policy` prints for it.
async fn roll(moto: &Moto, fleet: &common::Fleet, provider: Arc<repave_aws::AwsProvider>) -> String {
    let scope = provider.policy_scope(&pipeline(fleet)).await.expect("policy scope");
    let policy = repave_aws::iam_policy("web", &pipeline(fleet), &scope).to_string();
    iam(
        &moto.account,
        &[
            ("Action", "PutRolePolicy"),
            ("RoleName", "repave"),
            ("PolicyName", "repave"),
            ("PolicyDocument", &policy),
        ],
    )
    .await;
    let next = moto.make_image("golden-v2", &fleet.subnets[0]).await;
    provider
        .put_parameter(&fleet.parameter, &next, None)
        .await
        .expect("publish by hand");
    let out = engine(provider)
        .start("web", &pipeline(fleet), RunKind::Roll)
        .await
        .expect("roll");
    assert_succeeded(&out);
    next
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_with_role_arn_rolls_its_group_in_the_roles_account() {
    let home = common::new_account();
    let me = runner(&home).await;
    let target = Moto::new().await;
    let fleet = target.fleet(SpecKind::Template, 2).await;
    let aws = PipelineAws {
        external_id: Some("tenant-42".into()),
        ..Default::default()
    };
    let arn = role(&target.account, "repave", &aws, &me.arn, 3600).await;
    let base = source(&me, Arc::new(AtomicU32::new(0))).await;
    let pool = pool();

    // Without the role, the runner's own account has no such group.
    let own = pool.provider_on(&base, "runner", None, None).await.expect("own");
    let err = own
        .describe_group(&fleet.group)
        .await
        .expect_err("not in the runner's account");
    assert_eq!(err.kind, ErrorKind::NotFound, "{err}");

    let role = assume(&arn, Some("tenant-42"), Duration::from_secs(900));
    let provider = pool
        .provider_on(&base, "runner", None, Some(&role))
        .await
        .expect("provider");
    let group = provider
        .describe_group(&fleet.group)
        .await
        .expect("group in the role's account");
    assert_eq!((group.name.as_str(), group.desired), (fleet.group.as_str(), 2));
    // The same role and region: the same provider.
    let again = pool
        .provider_on(&base, "runner", None, Some(&role))
        .await
        .expect("again");
    assert!(Arc::ptr_eq(&provider, &again));

    let next = roll(&target, &fleet, provider.clone()).await;
    let members = target.member_images(&fleet.group).await;
    assert_eq!(members.len(), 2, "{members:?}");
    assert!(members.iter().all(|(_, i)| i == &next), "{members:?}");

    // Every call went through the budget of the role's account.
    let budgets = pool.budgets().await;
    let (_, budget) = budgets
        .iter()
        .find(|((account, region), _)| account == &target.account && region == "us-east-1")
        .unwrap_or_else(|| panic!("no budget for the role's account: {budgets:?}"));
    let stats = budget.stats();
    let sent: u64 = stats.values().map(|s| s.requests).sum();
    // STS and IAM (the run's permission check) are global services with
    // quotas of their own; the budget paces EC2, Auto Scaling, SSM and ELB.
    let regional: u64 = provider
        .api_calls()
        .iter()
        .filter(|(op, _)| !matches!(op.as_str(), "GetCallerIdentity" | "SimulatePrincipalPolicy"))
        .map(|(_, n)| n)
        .sum();
    assert!(sent >= regional, "{sent} through the budget, {regional} calls");
    for (bucket, s) in &stats {
        repave_core::budget::conforms(&s.times, budget.limit(*bucket))
            .unwrap_or_else(|e| panic!("{bucket:?} over its budget: {e:?}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_is_refused_without_its_external_id_or_trust() {
    let home = common::new_account();
    let me = runner(&home).await;
    let target = Moto::new().await;
    let fleet = target.fleet(SpecKind::Template, 1).await;
    let aws = PipelineAws {
        external_id: Some("tenant-42".into()),
        ..Default::default()
    };
    let arn = role(&target.account, "repave", &aws, &me.arn, 3600).await;
    let stranger = role(
        &target.account,
        "not-for-you",
        &PipelineAws::default(),
        "arn:aws:iam::000000000000:root",
        3600,
    )
    .await;
    let base = source(&me, Arc::new(AtomicU32::new(0))).await;
    let pool = pool();
    for (what, role) in [
        (
            "wrong external id",
            assume(&arn, Some("tenant-43"), Duration::from_secs(900)),
        ),
        ("no external id", assume(&arn, None, Duration::from_secs(900))),
        ("untrusted", assume(&stranger, None, Duration::from_secs(900))),
        (
            "no such role",
            assume(
                &format!("arn:aws:iam::{}:role/missing", target.account),
                None,
                Duration::from_secs(900),
            ),
        ),
    ] {
        let provider = pool
            .provider_on(&base, "runner", None, Some(&role))
            .await
            .expect("provider");
        let err = provider.describe_group(&fleet.group).await.expect_err(what);
        assert_eq!(err.kind, ErrorKind::Permanent, "{what}: {err}");
        let text = err.to_string();
        assert!(
            text.contains("AccessDenied") && text.contains("sts:AssumeRole"),
            "{what}: {text}"
        );
        assert!(!text.contains(&me.secret), "the secret leaked: {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_is_renewed_before_it_expires() {
    let home = common::new_account();
    let me = runner(&home).await;
    let target = Moto::new().await;
    let fleet = target.fleet(SpecKind::Template, 1).await;
    // Sessions of 12 s for this account's roles (AWS: at least 15 min).
    harness_account(&target.account, serde_json::json!({ "sts_min_session_seconds": 5 })).await;
    let arn = role(&target.account, "repave", &PipelineAws::default(), &me.arn, 3600).await;
    let counted = Arc::new(AtomicU32::new(0));
    let base = source(&me, counted.clone()).await;

    // The harness does expire credentials: a session used past its end is
    // refused.
    let session = Duration::from_secs(12);
    let assumed = aws_config::sts::AssumeRoleProvider::builder(arn.clone())
        .configure(&base)
        .session_name("frozen")
        .session_length(session)
        .build()
        .await;
    let frozen = aws_sdk_ec2::config::ProvideCredentials::provide_credentials(&assumed)
        .await
        .expect("assumed");
    let frozen_sdk = base
        .to_builder()
        .credentials_provider(aws_sdk_ec2::config::SharedCredentialsProvider::new(frozen))
        .build();
    let frozen_provider = repave_aws::AwsProvider::from_sdk_config(&frozen_sdk, AwsOptions::default());
    frozen_provider
        .describe_group(&fleet.group)
        .await
        .expect("fresh session works");

    let provider = pool()
        .provider_on(&base, "runner", None, Some(&assume(&arn, None, session)))
        .await
        .expect("provider");
    let before = counted.load(Ordering::SeqCst);
    let start = std::time::Instant::now();
    while start.elapsed() < Duration::from_secs(16) {
        provider
            .describe_group(&fleet.group)
            .await
            .unwrap_or_else(|e| panic!("at {:?}: {e}", start.elapsed()));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let err = frozen_provider
        .describe_group(&fleet.group)
        .await
        .expect_err("an expired session is refused");
    assert!(err.to_string().contains("ExpiredToken"), "{err}");
    let renewals = counted.load(Ordering::SeqCst) - before;
    assert!(
        renewals >= 2,
        "AssumeRole called {renewals} times over 16 s of 12 s sessions"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_pool_drives_two_accounts_in_two_regions() {
    let home = common::new_account();
    let me = runner(&home).await;
    let east = Moto::in_region("us-east-1").await;
    let west = Moto::in_region("eu-west-1").await;
    let (fleet_east, fleet_west) = tokio::join!(east.fleet(SpecKind::Template, 1), west.fleet(SpecKind::Template, 1));
    let aws = PipelineAws::default();
    let arn_east = role(&east.account, "repave", &aws, &me.arn, 3600).await;
    let arn_west = role(&west.account, "repave", &aws, &me.arn, 3600).await;
    let base = source(&me, Arc::new(AtomicU32::new(0))).await;
    let pool = pool();
    let p_east = pool
        .provider_on(
            &base,
            "runner",
            Some("us-east-1"),
            Some(&assume(&arn_east, None, Duration::from_secs(900))),
        )
        .await
        .expect("east");
    let p_west = pool
        .provider_on(
            &base,
            "runner",
            Some("eu-west-1"),
            Some(&assume(&arn_west, None, Duration::from_secs(900))),
        )
        .await
        .expect("west");
    assert!(!Arc::ptr_eq(&p_east, &p_west));
    // Both groups are called web-asg: each provider sees its own account's
    // (its launch template).
    for (p, fleet) in [(&p_east, &fleet_east), (&p_west, &fleet_west)] {
        let g = p.describe_group(&fleet.group).await.expect("group");
        assert_eq!(Some(&g.launch_spec.name), fleet.launch_template.as_ref(), "{g:?}");
    }
    assert_ne!(fleet_east.launch_template, fleet_west.launch_template);
    let (a, b) = tokio::join!(
        roll(&east, &fleet_east, p_east.clone()),
        roll(&west, &fleet_west, p_west.clone())
    );
    for (moto, fleet, image) in [(&east, &fleet_east, a), (&west, &fleet_west, b)] {
        let members = moto.member_images(&fleet.group).await;
        assert!(
            !members.is_empty() && members.iter().all(|(_, i)| i == &image),
            "{members:?}"
        );
    }
    let keys: Vec<(String, String)> = pool.budgets().await.into_iter().map(|(k, _)| k).collect();
    assert_eq!(
        keys,
        {
            let mut k = vec![
                (east.account.clone(), "us-east-1".to_string()),
                (west.account.clone(), "eu-west-1".to_string()),
            ];
            k.sort();
            k
        },
        "one budget per account and region"
    );
}
