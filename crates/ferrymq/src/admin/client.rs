//! The HTTP side of `ferrymq admin`: one blocking client (reqwest, rustls) with basic
//! auth against the management API, and the error an operator sees for each failure.

use std::time::Duration;

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde_json::Value;

/// What can go wrong talking to the API.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The API answered with an error status.
    #[error("{method} {path}: HTTP {status}: {reason}")]
    Http {
        method: &'static str,
        path: String,
        status: u16,
        reason: String,
    },
    /// No answer (connection refused, timeout, TLS failure).
    #[error("cannot reach {url}: {source}")]
    Unreachable {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// Bad input or an answer that is not what the API sends.
    #[error("{0}")]
    Other(String),
}

impl AdminError {
    /// The process exit code: 1 for an HTTP error answer, 3 when the API cannot be
    /// reached, 4 for bad input (clap's usage errors are 2).
    pub fn exit_code(&self) -> i32 {
        match self {
            AdminError::Http { .. } => 1,
            AdminError::Unreachable { .. } => 3,
            AdminError::Other(_) => 4,
        }
    }
}

/// Path segments are encoded as RabbitMQ's clients do (`/` → `%2F`).
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

pub fn seg(s: &str) -> String {
    utf8_percent_encode(s, SEGMENT).to_string()
}

pub struct Client {
    http: reqwest::blocking::Client,
    base: String,
    username: String,
    password: String,
}

impl Client {
    pub fn new(
        base: String,
        username: String,
        password: String,
        cacert: Option<&std::path::Path>,
    ) -> Result<Client, AdminError> {
        let mut b = reqwest::blocking::Client::builder().timeout(Duration::from_secs(60));
        if let Some(path) = cacert {
            let pem = std::fs::read(path)
                .map_err(|e| AdminError::Other(format!("reading {}: {e}", path.display())))?;
            let cert = reqwest::Certificate::from_pem(&pem)
                .map_err(|e| AdminError::Other(format!("{}: {e}", path.display())))?;
            b = b.add_root_certificate(cert);
        }
        let http = b
            .build()
            .map_err(|e| AdminError::Other(format!("HTTP client: {e}")))?;
        Ok(Client {
            http,
            base,
            username,
            password,
        })
    }

    /// Sends a request; a 2xx answer's JSON body (`Value::Null` when empty), else the
    /// API's `reason`.
    pub fn call(
        &self,
        method: &'static str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, AdminError> {
        self.call_with(method, path, body, &[])
    }

    /// [`Client::call`] with extra request headers.
    pub fn call_with(
        &self,
        method: &'static str,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Result<Value, AdminError> {
        let url = format!("{}{}", self.base, path);
        let m = reqwest::Method::from_bytes(method.as_bytes()).expect("a known method");
        let mut req = self
            .http
            .request(m, &url)
            .basic_auth(&self.username, Some(&self.password));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().map_err(|source| AdminError::Unreachable {
            url: self.base.clone(),
            source,
        })?;
        let status = resp.status();
        let text = resp.text().map_err(|source| AdminError::Unreachable {
            url: self.base.clone(),
            source,
        })?;
        if !status.is_success() {
            let reason = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| {
                    let error = v.get("error").and_then(Value::as_str).map(str::to_owned);
                    let reason = v.get("reason").and_then(Value::as_str).map(str::to_owned);
                    match (error, reason) {
                        (Some(e), Some(r)) => Some(format!("{e} ({r})")),
                        (e, r) => e.or(r),
                    }
                })
                .unwrap_or_else(|| {
                    let t = text.trim();
                    if t.is_empty() {
                        status.canonical_reason().unwrap_or("error").to_owned()
                    } else {
                        t.chars().take(200).collect()
                    }
                });
            return Err(AdminError::Http {
                method,
                path: path.to_owned(),
                status: status.as_u16(),
                reason,
            });
        }
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text)
            .map_err(|e| AdminError::Other(format!("{method} {path}: answer is not JSON: {e}")))
    }

    pub fn get(&self, path: &str) -> Result<Value, AdminError> {
        self.call("GET", path, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_encoded_like_rabbitmq_clients_do() {
        assert_eq!(seg("/"), "%2F");
        assert_eq!(seg("a b/c%"), "a%20b%2Fc%25");
        assert_eq!(seg("orders.v1-x_y~"), "orders.v1-x_y~");
        assert_eq!(seg("é"), "%C3%A9");
    }

    #[test]
    fn exit_codes_tell_failures_apart() {
        let http = AdminError::Http {
            method: "GET",
            path: "/api/queues/%2F/q".into(),
            status: 404,
            reason: "Object Not Found (Not Found)".into(),
        };
        assert_eq!(http.exit_code(), 1);
        assert_eq!(
            http.to_string(),
            "GET /api/queues/%2F/q: HTTP 404: Object Not Found (Not Found)"
        );
        assert_eq!(AdminError::Other("x".into()).exit_code(), 4);
    }
}
