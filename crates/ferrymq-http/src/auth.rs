//! HTTP basic authentication against the broker's user store, and RabbitMQ's tag rules
//! (`rabbit_web_dispatch_access_control`): a management user has one of `administrator`,
//! `monitoring`, `policymaker` or `management`; admin-only endpoints need `administrator`,
//! monitor endpoints `administrator` or `monitoring`, policy endpoints `administrator` or
//! `policymaker`. Every refusal is a 401, never a 403. `guest` keeps its loopback-only
//! rule here too.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use base64::Engine as _;
use ferrymq_auth::User;

use crate::error::{ApiError, ApiResult};
use crate::AppState;

/// Tags that allow logging in to the management API.
const MANAGEMENT_TAGS: &[&str] = &["administrator", "monitoring", "policymaker", "management"];

/// The authenticated user of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user: Arc<User>,
}

impl Caller {
    pub fn name(&self) -> &str {
        &self.user.name
    }

    pub fn is_admin(&self) -> bool {
        self.user.has_tag("administrator")
    }

    pub fn is_monitor(&self) -> bool {
        self.is_admin() || self.user.has_tag("monitoring")
    }

    pub fn is_policymaker(&self) -> bool {
        self.is_admin() || self.user.has_tag("policymaker")
    }

    pub fn require_admin(&self) -> ApiResult<()> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(ApiError::NotAuthorised("Not administrator user".into()))
        }
    }

    pub fn require_monitor(&self) -> ApiResult<()> {
        if self.is_monitor() {
            Ok(())
        } else {
            Err(ApiError::NotAuthorised("Not monitor user".into()))
        }
    }

    pub fn require_policymaker(&self) -> ApiResult<()> {
        if self.is_policymaker() {
            Ok(())
        } else {
            Err(ApiError::NotAuthorised("Not policymaker user".into()))
        }
    }
}

/// The (user, password) of an `Authorization: Basic …` header.
pub fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, pass) = text.split_once(':')?;
    Some((user.to_owned(), pass.to_owned()))
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> ApiResult<Caller> {
        if parts.headers.get(header::AUTHORIZATION).is_none() {
            return Err(ApiError::LoginFailed("Not_Authorized".into()));
        }
        let Some((user, pass)) = basic_credentials(&parts.headers) else {
            return Err(ApiError::LoginFailed("Login failed".into()));
        };
        let loopback = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .is_some_and(|c| c.0.ip().is_loopback());
        let auth = state.broker.auth.clone();
        let user = auth
            .authenticate_plain(&user, pass.as_bytes(), loopback)
            .map_err(|_| ApiError::LoginFailed("Login failed".into()))?;
        if !MANAGEMENT_TAGS.iter().any(|t| user.has_tag(t)) {
            return Err(ApiError::NotAuthorised("Not management user".into()));
        }
        Ok(Caller { user })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn basic_headers() {
        // guest:guest
        assert_eq!(
            basic_credentials(&headers("Basic Z3Vlc3Q6Z3Vlc3Q=")),
            Some(("guest".into(), "guest".into()))
        );
        // a:b:c → user a, password b:c
        assert_eq!(
            basic_credentials(&headers("basic YTpiOmM=")),
            Some(("a".into(), "b:c".into()))
        );
        assert_eq!(basic_credentials(&headers("Bearer xyz")), None);
        assert_eq!(basic_credentials(&headers("Basic !!!")), None);
        assert_eq!(basic_credentials(&headers("Basic bm9jb2xvbg==")), None);
        assert_eq!(basic_credentials(&HeaderMap::new()), None);
    }
}
