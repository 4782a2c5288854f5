//! The API's one error type and the single place where engine, user-store and Kafka errors
//! become HTTP answers, in RabbitMQ's shapes: `{"error": …, "reason": …}` bodies, 400 for
//! bad input and failed preconditions, 404 for missing objects, 401 (never 403) for
//! everything about identity and permissions, 413 for oversized bodies, 503 for failed
//! health checks. Nothing internal (paths, I/O details) leaks into a body.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use ferrymq_auth::AuthError;
use ferrymq_core::CoreError;
use serde_json::json;

/// The `WWW-Authenticate` challenge RabbitMQ's management plugin sends.
pub const CHALLENGE: &str = "Basic realm=\"RabbitMQ Management\"";

/// An error answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// 400 `{"error":"bad_request","reason":…}`.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// 404 `{"error":"Object Not Found","reason":"Not Found"}`.
    #[error("not found")]
    NotFound,
    /// 401 after a failed login: `{"error":"not_authorized","reason":…}` with the
    /// `WWW-Authenticate` challenge.
    #[error("login failed: {0}")]
    LoginFailed(String),
    /// 401 for a logged-in user without the tag or permission needed:
    /// `{"error":"not_authorised","reason":…}` (RabbitMQ's spelling), no challenge.
    #[error("not authorised: {0}")]
    NotAuthorised(String),
    /// 405.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// 413.
    #[error("request body too large")]
    PayloadTooLarge,
    /// 503 `{"status":"failed","reason":…}` (health checks).
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// 500; the detail is logged, not sent.
    #[error("internal error: {0}")]
    Internal(String),
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn bad(reason: impl Into<String>) -> ApiError {
        ApiError::BadRequest(reason.into())
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::LoginFailed(_) | ApiError::NotAuthorised(_) => StatusCode::UNAUTHORIZED,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The JSON body.
    pub fn body(&self) -> serde_json::Value {
        match self {
            ApiError::BadRequest(r) => json!({"error": "bad_request", "reason": r}),
            ApiError::NotFound => json!({"error": "Object Not Found", "reason": "Not Found"}),
            ApiError::LoginFailed(r) => json!({"error": "not_authorized", "reason": r}),
            ApiError::NotAuthorised(r) => json!({"error": "not_authorised", "reason": r}),
            ApiError::MethodNotAllowed => {
                json!({"error": "Method Not Allowed", "reason": "Method Not Allowed"})
            }
            ApiError::PayloadTooLarge => {
                json!({"error": "Payload Too Large", "reason": "request body too large"})
            }
            ApiError::Unavailable(r) => json!({"status": "failed", "reason": r}),
            ApiError::Internal(_) => {
                json!({"error": "internal_server_error", "reason": "internal error, see the broker log"})
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Internal(detail) = &self {
            tracing::error!("management API: {detail}");
        }
        let mut r = (self.status(), axum::Json(self.body())).into_response();
        if matches!(self, ApiError::LoginFailed(_)) {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(CHALLENGE),
            );
        }
        if matches!(self, ApiError::PayloadTooLarge) {
            // The rest of the oversized body is never read, so the connection cannot carry
            // another request: say so, or a keep-alive client reuses it and sees a reset.
            r.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        r
    }
}

/// Core errors, as the management plugin answers the same failures: missing objects 404,
/// permission refusals 401, everything else the client can fix 400.
impl From<CoreError> for ApiError {
    fn from(e: CoreError) -> Self {
        match e {
            CoreError::NotFound { .. } => ApiError::NotFound,
            CoreError::AccessRefused(r) => ApiError::NotAuthorised(r),
            CoreError::Internal(r) => ApiError::Internal(r),
            CoreError::Precondition(r)
            | CoreError::ResourceLocked(r)
            | CoreError::NotAllowed(r)
            | CoreError::CommandInvalid(r) => ApiError::BadRequest(r),
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::NoSuchUser(_) | AuthError::NoSuchVhost(_) => ApiError::NotFound,
            AuthError::AccessRefused(r) => ApiError::NotAuthorised(r.to_string()),
            AuthError::Io { .. } | AuthError::Corrupt { .. } => ApiError::Internal(e.to_string()),
            e if e.is_authentication_failure() => ApiError::LoginFailed("Login failed".into()),
            e => ApiError::BadRequest(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(e: impl Into<ApiError>, status: u16, error: &str) {
        let e = e.into();
        assert_eq!(e.status().as_u16(), status, "{e:?}");
        assert_eq!(e.body()["error"], error, "{e:?}");
    }

    #[test]
    fn errors_map_to_rabbitmq_answers() {
        check(
            CoreError::not_found("queue", "q", "/"),
            404,
            "Object Not Found",
        );
        check(
            CoreError::Precondition("inequivalent arg".into()),
            400,
            "bad_request",
        );
        check(
            CoreError::ResourceLocked("exclusive".into()),
            400,
            "bad_request",
        );
        check(
            CoreError::AccessRefused("access refused".into()),
            401,
            "not_authorised",
        );
        check(
            CoreError::Internal("disk".into()),
            500,
            "internal_server_error",
        );
        check(AuthError::NoSuchVhost("v".into()), 404, "Object Not Found");
        check(
            AuthError::InvalidName {
                what: "user",
                name: String::new(),
            },
            400,
            "bad_request",
        );
        check(
            AuthError::InvalidCredentials {
                username: "u".into(),
            },
            401,
            "not_authorized",
        );
        assert_eq!(ApiError::Unavailable("alarm".into()).status().as_u16(), 503);
        assert_eq!(ApiError::Unavailable("x".into()).body()["status"], "failed");
        check(ApiError::PayloadTooLarge, 413, "Payload Too Large");
    }

    #[test]
    fn oversized_bodies_close_the_connection() {
        let r = ApiError::PayloadTooLarge.into_response();
        assert_eq!(r.headers()[header::CONNECTION], "close");
        let r = ApiError::NotFound.into_response();
        assert!(r.headers().get(header::CONNECTION).is_none());
    }

    #[test]
    fn only_failed_logins_carry_the_challenge() {
        let r = ApiError::LoginFailed("Login failed".into()).into_response();
        assert_eq!(r.headers()[header::WWW_AUTHENTICATE], CHALLENGE);
        let r = ApiError::NotAuthorised("Not administrator user".into()).into_response();
        assert!(r.headers().get(header::WWW_AUTHENTICATE).is_none());
    }

    #[test]
    fn internal_details_do_not_leak() {
        let body = ApiError::Internal("/data/auth.json: EIO".into()).body();
        assert!(!body.to_string().contains("auth.json"));
    }
}
