//! AWS errors → [`ProviderError`]: throttling codes are `Throttled`; 5xx,
//! timeouts and dispatch failures `Transient`; `*.NotFound`,
//! `ParameterNotFound` and friends `NotFound`; everything else `Permanent`.
//! The message always starts with the AWS error code.

use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use repave_core::{ErrorKind, ProviderError};

/// Errors building the provider.
#[derive(Debug, thiserror::Error)]
pub enum AwsError {
    /// No region in the config, the profile or `AWS_REGION`.
    #[error("no AWS region: set [provider.aws] region, --region, AWS_REGION or a profile region")]
    NoRegion,
}

impl AwsError {
    /// Nothing about building the provider gets better by retrying.
    pub fn is_retryable(&self) -> bool {
        false
    }
}

const THROTTLING: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottledException",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "RequestThrottled",
    "BandwidthLimitExceeded",
    "SlowDown",
    "PriorRequestNotComplete",
    "EC2ThrottledException",
    "ProvisionedThroughputExceededException",
    "TransactionInProgressException",
];

const TRANSIENT: &[&str] = &[
    "InternalError",
    "InternalFailure",
    "InternalServerError",
    "ServiceUnavailable",
    "Unavailable",
    "RequestTimeout",
    "RequestTimeoutException",
    "InsufficientInstanceCapacity",
    "ResourceContention",
    "ScalingActivityInProgress",
    "IncorrectInstanceState",
];

const NOT_FOUND: &[&str] = &[
    "ParameterNotFound",
    "ParameterVersionNotFound",
    "InvocationDoesNotExist",
    "InvalidInstanceId",
    "TargetGroupNotFound",
    "LoadBalancerNotFound",
    "InvalidAMIID.Unavailable",
    // IAM: GetInstanceProfile of a profile that does not exist.
    "NoSuchEntity",
];

/// Classify an AWS error code (and HTTP status, when there was a response).
pub fn classify(code: Option<&str>, status: Option<u16>) -> ErrorKind {
    if let Some(code) = code {
        if THROTTLING.contains(&code) {
            return ErrorKind::Throttled;
        }
        if NOT_FOUND.contains(&code)
            || code.ends_with(".NotFound")
            || code.ends_with("NotFound")
            || code.ends_with("NotFoundException")
        {
            return ErrorKind::NotFound;
        }
        if TRANSIENT.contains(&code) {
            return ErrorKind::Transient;
        }
    }
    match status {
        Some(429) => ErrorKind::Throttled,
        Some(s) if s >= 500 => ErrorKind::Transient,
        _ => ErrorKind::Permanent,
    }
}

/// Map any SDK error of `operation` into a classified provider error.
pub fn map_sdk<E>(operation: &str, err: SdkError<E, HttpResponse>) -> ProviderError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match &err {
        SdkError::ServiceError(se) => {
            let e = se.err();
            let status = se.raw().status().as_u16();
            let code = e.code();
            let kind = classify(code, Some(status));
            let message = format!(
                "{}: {} (HTTP {status})",
                code.unwrap_or("UnknownError"),
                e.message().unwrap_or("no message")
            );
            ProviderError::new(kind, operation, message)
        }
        SdkError::TimeoutError(_) => ProviderError::transient(operation, format!("Timeout: {}", chain(&err))),
        SdkError::DispatchFailure(_) => {
            let detail = chain(&err);
            // No credentials will not appear by retrying: say what to do.
            if detail.contains("no credentials found in chain")
                || detail.contains("credentials provider was not properly configured")
            {
                return ProviderError::permanent(
                    operation,
                    format!(
                        "no usable AWS credentials ({detail}); pass --profile NAME (or set AWS_PROFILE) for a \
                         profile with keys, credential_process or SSO (`aws sso login` first), or run with \
                         environment keys or an instance / container role"
                    ),
                );
            }
            // A role that cannot be assumed (not trusted, wrong external id,
            // no such role) or a session AWS refuses stays so.
            if detail.contains("sts:AssumeRole") || detail.contains("AccessDenied") || detail.contains("ExpiredToken") {
                return ProviderError::permanent(operation, format!("assuming the pipeline's role failed: {detail}"));
            }
            ProviderError::transient(operation, format!("DispatchFailure: {detail}"))
        }
        SdkError::ResponseError(_) => ProviderError::transient(operation, format!("ResponseError: {}", chain(&err))),
        SdkError::ConstructionFailure(_) => {
            ProviderError::permanent(operation, format!("ConstructionFailure: {}", chain(&err)))
        }
        _ => ProviderError::permanent(operation, format!("Unknown: {}", chain(&err))),
    }
}

/// The error and its sources, one line.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// A `NotFound` error for lookups that return an empty list instead of an
/// error (DescribeAutoScalingGroups, DescribeImages by id on some regions).
pub(crate) fn not_found(operation: &str, what: impl std::fmt::Display) -> ProviderError {
    ProviderError::not_found(operation, format!("NotFound: {what} does not exist"))
}

/// A `Permanent` error for answers the provider cannot use.
pub(crate) fn malformed(operation: &str, what: impl std::fmt::Display) -> ProviderError {
    ProviderError::permanent(operation, format!("UnexpectedResponse: {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_codes() {
        let cases: &[(Option<&str>, Option<u16>, ErrorKind)] = &[
            (Some("Throttling"), Some(400), ErrorKind::Throttled),
            (Some("RequestLimitExceeded"), Some(503), ErrorKind::Throttled),
            (Some("ThrottlingException"), Some(400), ErrorKind::Throttled),
            (Some("InvalidInstanceID.NotFound"), Some(400), ErrorKind::NotFound),
            (Some("InvalidAMIID.NotFound"), Some(400), ErrorKind::NotFound),
            (Some("ParameterNotFound"), Some(400), ErrorKind::NotFound),
            (
                Some("InvalidLaunchTemplateName.NotFoundException"),
                Some(400),
                ErrorKind::NotFound,
            ),
            (Some("InternalError"), Some(500), ErrorKind::Transient),
            (Some("Unknown"), Some(502), ErrorKind::Transient),
            (None, Some(429), ErrorKind::Throttled),
            (Some("UnauthorizedOperation"), Some(403), ErrorKind::Permanent),
            (Some("ValidationError"), Some(400), ErrorKind::Permanent),
            (Some("IdempotentParameterMismatch"), Some(400), ErrorKind::Permanent),
        ];
        for (code, status, want) in cases {
            assert_eq!(classify(*code, *status), *want, "{code:?} {status:?}");
        }
    }
}
