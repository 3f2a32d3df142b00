//! The API's one error shape, `{"error": {"code": "...", "message": "...",
//! ...details}}` (the `Error` schema of `/openapi.json`), for every error
//! under `/api/`: the handlers' own, the token guard's, and what axum
//! answers by itself (a body that is not JSON, a missing query parameter,
//! an unknown route, a wrong method), which [`json_errors`] rewrites.

use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use repave_engine::EngineError;
use serde::Serialize;
use serde_json::{json, Map, Value};

/// What went wrong, for programs; the message is for people.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Code {
    /// A malformed request: bad query parameter, body that is not JSON.
    BadRequest,
    /// No or wrong bearer token on a mutating call.
    Unauthorized,
    /// No such run, pipeline, image or endpoint.
    NotFound,
    /// The endpoint exists but not with this method.
    MethodNotAllowed,
    /// The run's state does not allow it (finished, already running).
    Conflict,
    /// The group is leased by another run (`holder`, `group`, `expires_at`).
    Leased,
    /// The body is not `application/json`.
    UnsupportedMediaType,
    /// The body is JSON, but not what the endpoint takes.
    InvalidBody,
    /// The body is too large.
    PayloadTooLarge,
    /// A provider could not be asked (the answer is unknown, not no).
    Unavailable,
    /// A bug or a store failure.
    Internal,
}

impl Code {
    /// Every code, for `/openapi.json`.
    pub const ALL: [Code; 11] = [
        Code::BadRequest,
        Code::Unauthorized,
        Code::NotFound,
        Code::MethodNotAllowed,
        Code::Conflict,
        Code::Leased,
        Code::UnsupportedMediaType,
        Code::InvalidBody,
        Code::PayloadTooLarge,
        Code::Unavailable,
        Code::Internal,
    ];

    /// The code for an answer only its status describes.
    fn of_status(status: StatusCode) -> Code {
        match status {
            StatusCode::UNAUTHORIZED => Code::Unauthorized,
            StatusCode::NOT_FOUND => Code::NotFound,
            StatusCode::METHOD_NOT_ALLOWED => Code::MethodNotAllowed,
            StatusCode::CONFLICT => Code::Conflict,
            StatusCode::UNSUPPORTED_MEDIA_TYPE => Code::UnsupportedMediaType,
            StatusCode::UNPROCESSABLE_ENTITY => Code::InvalidBody,
            StatusCode::PAYLOAD_TOO_LARGE => Code::PayloadTooLarge,
            StatusCode::SERVICE_UNAVAILABLE | StatusCode::BAD_GATEWAY => Code::Unavailable,
            s if s.is_server_error() => Code::Internal,
            _ => Code::BadRequest,
        }
    }
}

/// An error answer: its status and the body's `error` object.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub status: StatusCode,
    pub code: Code,
    pub message: String,
    /// Extra fields of the `error` object (e.g. the lease's `holder`).
    pub details: Map<String, Value>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: Code, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            details: Map::new(),
        }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, Code::NotFound, message)
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, Code::BadRequest, message)
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::CONFLICT, Code::Conflict, message)
    }

    fn with(mut self, key: &str, value: Value) -> Self {
        self.details.insert(key.into(), value);
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut error = Map::new();
        error.insert("code".into(), json!(self.code));
        error.insert("message".into(), json!(self.message));
        error.extend(self.details);
        (self.status, Json(json!({ "error": error }))).into_response()
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        match &e {
            EngineError::Leased {
                group,
                holder,
                expires_at,
                driver,
            } => ApiError::new(
                StatusCode::CONFLICT,
                Code::Leased,
                format!(
                    "group {group} is being changed by run {holder}{} (its lease runs until {})",
                    driver.as_ref().map(|d| format!(", driven by {d}")).unwrap_or_default(),
                    rfc3339(*expires_at)
                ),
            )
            .with("group", json!(group))
            .with("holder", json!(holder))
            .with("expires_at", json!(expires_at))
            .with("driver", json!(driver)),
            EngineError::Unfinished { group, run, .. } => {
                ApiError::new(StatusCode::CONFLICT, Code::Leased, e.to_string())
                    .with("group", json!(group))
                    .with("holder", json!(run))
            }
            EngineError::UnknownRun(_) => ApiError::not_found(e.to_string()),
            EngineError::NotResumable { .. } => ApiError::conflict(e.to_string()),
            EngineError::Config(_) => ApiError::bad_request(e.to_string()),
            _ => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, Code::Internal, e.to_string()),
        }
    }
}

impl From<repave_store::StoreError> for ApiError {
    fn from(e: repave_store::StoreError) -> Self {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, Code::Internal, e.to_string())
    }
}

/// `2026-11-26T05:50:20Z` for a millisecond timestamp.
fn rfc3339(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| format!("{t:.0}"))
        .unwrap_or_else(|_| format!("{ms} ms after the epoch"))
}

/// Largest plain-text error body taken over as the message.
const MAX_MESSAGE: usize = 4096;

/// Rewrite any error under `/api/` that is not already in the error shape
/// (axum's rejections are plain text, an unknown route or method has no
/// body), keeping its status and headers (`Allow` on a 405).
pub(crate) async fn json_errors(req: Request, next: Next) -> Response {
    let api = req.uri().path().starts_with("/api/");
    let what = format!("{} {}", req.method(), req.uri().path());
    let resp = next.run(req).await;
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !api || is_json || !(status.is_client_error() || status.is_server_error()) {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, MAX_MESSAGE)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let message = match (text.is_empty(), status) {
        (false, _) => text,
        (true, StatusCode::NOT_FOUND) => format!("no such endpoint: {what} (see /openapi.json)"),
        (true, StatusCode::METHOD_NOT_ALLOWED) => format!("method not allowed: {what} (see /openapi.json)"),
        (true, s) => s.canonical_reason().unwrap_or("error").to_string(),
    };
    let fresh = ApiError::new(status, Code::of_status(status), message).into_response();
    let (fresh_parts, body) = fresh.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts
        .headers
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    drop(fresh_parts);
    Response::from_parts(parts, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_snake_case_and_statuses_map_to_them() {
        assert_eq!(json!(Code::MethodNotAllowed), "method_not_allowed");
        assert_eq!(Code::of_status(StatusCode::UNPROCESSABLE_ENTITY), Code::InvalidBody);
        assert_eq!(Code::of_status(StatusCode::BAD_GATEWAY), Code::Unavailable);
        assert_eq!(Code::of_status(StatusCode::IM_A_TEAPOT), Code::BadRequest);
        assert_eq!(rfc3339(1_795_672_220_000), "2026-11-26T05:50:20Z");
    }
}
