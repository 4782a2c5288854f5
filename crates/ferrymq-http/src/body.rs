//! Request bodies as RabbitMQ's management plugin reads them: a JSON object whose unknown
//! keys are ignored, whose booleans may be `true` or `"true"` and whose integers may be
//! numbers or numeric strings (`rabbit_misc:parse_bool` / `parse_int`; classic
//! `rabbitmqadmin` sends everything as strings). Malformed JSON, a body that is not an
//! object and a value of the wrong type are 400s naming the field.

use axum::extract::{FromRequest, Request};
use bytes::Bytes;
use serde_json::{Map, Value};

use crate::error::{ApiError, ApiResult};

/// Bodies above this are refused with 413 (definitions have their own, larger limit).
pub const MAX_BODY: usize = 10 * 1024 * 1024;
/// The limit for definitions imports.
pub const MAX_DEFINITIONS_BODY: usize = 100 * 1024 * 1024;

/// A parsed JSON object body (an empty body is an empty object, as PUT without a body is
/// allowed for vhosts).
#[derive(Debug, Default, Clone)]
pub struct Body(pub Map<String, Value>);

impl<S: Send + Sync> FromRequest<S> for Body {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let RawBody(bytes) = RawBody::from_request(req, state).await?;
        Body::parse(&bytes)
    }
}

/// The request body's bytes, within the route's limit (413 past it).
pub struct RawBody(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        Bytes::from_request(req, state)
            .await
            .map(RawBody)
            .map_err(|e| {
                if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::PayloadTooLarge
                } else {
                    ApiError::bad(format!("cannot read the request body: {e}"))
                }
            })
    }
}

impl Body {
    pub fn parse(bytes: &[u8]) -> ApiResult<Body> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Body::default());
        }
        match serde_json::from_slice::<Value>(bytes) {
            Ok(Value::Object(m)) => Ok(Body(m)),
            Ok(_) => Err(ApiError::bad("body must be a JSON object")),
            Err(e) => Err(ApiError::bad(format!("malformed JSON: {e}"))),
        }
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.get(key).filter(|v| !v.is_null())
    }

    pub fn bool_or(&self, key: &str, default: bool) -> ApiResult<bool> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => parse_bool(v).ok_or_else(|| wrong(key, "a boolean")),
        }
    }

    pub fn int(&self, key: &str) -> ApiResult<Option<i64>> {
        self.get(key)
            .map(|v| parse_int(v).ok_or_else(|| wrong(key, "an integer")))
            .transpose()
    }

    pub fn string(&self, key: &str) -> ApiResult<Option<String>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            Some(Value::Bool(b)) => Ok(Some(b.to_string())),
            Some(_) => Err(wrong(key, "a string")),
        }
    }

    pub fn required_string(&self, key: &str) -> ApiResult<String> {
        self.string(key)?
            .ok_or_else(|| ApiError::bad(format!("[{{key_missing,{key}}}]")))
    }

    /// An object field (`arguments`, `definition`): absent, `null`, `""` and `[]` are an
    /// empty object (kombu sends `"arguments": []`).
    pub fn object(&self, key: &str) -> ApiResult<Map<String, Value>> {
        match self.get(key) {
            None => Ok(Map::new()),
            Some(Value::Object(m)) => Ok(m.clone()),
            Some(Value::Array(a)) if a.is_empty() => Ok(Map::new()),
            Some(Value::String(s)) if s.is_empty() => Ok(Map::new()),
            Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
                Ok(Value::Object(m)) => Ok(m),
                _ => Err(wrong(key, "an object")),
            },
            Some(_) => Err(wrong(key, "an object")),
        }
    }
}

fn wrong(key: &str, what: &str) -> ApiError {
    ApiError::bad(format!("field '{key}' must be {what}"))
}

/// `true`, `false`, `"true"`, `"false"` (any case).
pub fn parse_bool(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::String(s) if s.eq_ignore_ascii_case("true") => Some(true),
        Value::String(s) if s.eq_ignore_ascii_case("false") => Some(false),
        _ => None,
    }
}

/// An integer, a float (truncated, as `rabbit_misc:parse_int`) or a numeric string.
pub fn parse_int(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64().or_else(|| {
            n.as_f64()
                .filter(|f| f.is_finite())
                .map(|f| f.trunc() as i64)
        }),
        Value::String(s) => {
            let s = s.trim();
            s.parse::<i64>().ok().or_else(|| {
                s.parse::<f64>()
                    .ok()
                    .filter(|f| f.is_finite() && f.abs() < 9.2e18)
                    .map(|f| f.trunc() as i64)
            })
        }
        _ => None,
    }
}

/// A query-string boolean (`?if-unused=true`).
pub fn query_bool(v: Option<&String>) -> bool {
    v.is_some_and(|s| s.eq_ignore_ascii_case("true"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body(v: Value) -> Body {
        Body::parse(v.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn booleans_and_integers_as_strings() {
        let b = body(json!({
            "durable": "true", "auto_delete": false, "internal": "False",
            "count": "5", "n": 7, "f": 2.9, "fs": "3.5", "bad": "yes", "neg": "-2"
        }));
        assert!(b.bool_or("durable", false).unwrap());
        assert!(!b.bool_or("auto_delete", true).unwrap());
        assert!(!b.bool_or("internal", true).unwrap());
        assert!(b.bool_or("missing", true).unwrap());
        assert!(b.bool_or("bad", true).is_err());
        assert_eq!(b.int("count").unwrap(), Some(5));
        assert_eq!(b.int("n").unwrap(), Some(7));
        assert_eq!(b.int("f").unwrap(), Some(2));
        assert_eq!(b.int("fs").unwrap(), Some(3));
        assert_eq!(b.int("neg").unwrap(), Some(-2));
        assert_eq!(b.int("missing").unwrap(), None);
        assert!(b.int("bad").is_err());
        assert!(body(json!({"x": "1e300"})).int("x").is_err());
        assert!(body(json!({"x": [1]})).int("x").is_err());
    }

    #[test]
    fn bodies_and_objects() {
        assert!(Body::parse(b"").unwrap().0.is_empty());
        assert!(Body::parse(b"  \n").unwrap().0.is_empty());
        assert!(Body::parse(b"{").is_err());
        assert!(Body::parse(b"[1]").is_err());
        assert!(Body::parse(b"\"x\"").is_err());
        assert!(Body::parse(&[0xff, 0xfe]).is_err());
        let b = body(json!({"a": [], "b": {"x": 1}, "c": 3, "d": null, "e": "", "f": "{\"k\":1}"}));
        assert!(b.object("a").unwrap().is_empty());
        assert_eq!(b.object("b").unwrap()["x"], 1);
        assert!(b.object("c").is_err());
        assert!(b.object("d").unwrap().is_empty());
        assert!(b.object("e").unwrap().is_empty());
        assert_eq!(b.object("f").unwrap()["k"], 1);
        assert_eq!(b.string("c").unwrap().as_deref(), Some("3"));
        assert!(b.string("b").is_err());
        assert!(b.required_string("zz").is_err());
    }

    #[test]
    fn query_booleans() {
        assert!(query_bool(Some(&"true".to_string())));
        assert!(query_bool(Some(&"TRUE".to_string())));
        assert!(!query_bool(Some(&"1".to_string())));
        assert!(!query_bool(None));
    }
}
