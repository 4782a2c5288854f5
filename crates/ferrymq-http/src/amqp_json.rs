//! AMQP values as the management API shows them in JSON: field tables (arguments, client
//! properties, headers), message properties (both ways, for queue get and exchange
//! publish), payloads (`auto` = UTF-8 text when it is, else base64) and a binding's
//! `properties_key` (RabbitMQ's `rabbit_mgmt_format:pack_binding_props`).

use amq_protocol::protocol::basic::AMQPProperties;
use amq_protocol::types::{AMQPValue, FieldTable, ShortString};
use base64::Engine as _;
use serde_json::{json, Map, Value};

use crate::error::{ApiError, ApiResult};

/// A field table as a JSON object (RabbitMQ's `rabbit_mgmt_format:amqp_table`).
pub fn table_to_json(t: &FieldTable) -> Value {
    Value::Object(
        t.inner()
            .iter()
            .map(|(k, v)| (k.to_string(), value_to_json(v)))
            .collect(),
    )
}

pub fn value_to_json(v: &AMQPValue) -> Value {
    match v {
        AMQPValue::Boolean(b) => json!(b),
        AMQPValue::ShortShortInt(n) => json!(n),
        AMQPValue::ShortShortUInt(n) => json!(n),
        AMQPValue::ShortInt(n) => json!(n),
        AMQPValue::ShortUInt(n) => json!(n),
        AMQPValue::LongInt(n) => json!(n),
        AMQPValue::LongUInt(n) => json!(n),
        AMQPValue::LongLongInt(n) => json!(n),
        AMQPValue::Float(f) => finite(f64::from(*f)),
        AMQPValue::Double(f) => finite(*f),
        AMQPValue::DecimalValue(d) => finite(f64::from(d.value) / 10f64.powi(i32::from(d.scale))),
        AMQPValue::ShortString(s) => json!(s.as_str()),
        AMQPValue::LongString(s) => json!(String::from_utf8_lossy(s.as_bytes())),
        AMQPValue::FieldArray(a) => Value::Array(a.as_slice().iter().map(value_to_json).collect()),
        AMQPValue::Timestamp(t) => json!(t),
        AMQPValue::FieldTable(t) => table_to_json(t),
        AMQPValue::ByteArray(b) => {
            json!(base64::engine::general_purpose::STANDARD.encode(b.as_slice()))
        }
        AMQPValue::Void => Value::Null,
    }
}

fn finite(f: f64) -> Value {
    serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)
}

/// A JSON object as a field table.
pub fn json_to_table(m: &Map<String, Value>) -> FieldTable {
    ferrymq_server::definitions::table(m)
}

/// Message properties as RabbitMQ's management plugin shows them (only those set;
/// `type` for the type property).
pub fn properties_to_json(p: &AMQPProperties) -> Value {
    let mut m = Map::new();
    let mut s = |k: &str, v: &Option<ShortString>| {
        if let Some(v) = v {
            m.insert(k.to_owned(), json!(v.as_str()));
        }
    };
    s("content_type", p.content_type());
    s("content_encoding", p.content_encoding());
    s("correlation_id", p.correlation_id());
    s("reply_to", p.reply_to());
    s("expiration", p.expiration());
    s("message_id", p.message_id());
    s("type", p.kind());
    s("user_id", p.user_id());
    s("app_id", p.app_id());
    s("cluster_id", p.cluster_id());
    if let Some(h) = p.headers() {
        m.insert("headers".into(), table_to_json(h));
    }
    if let Some(d) = p.delivery_mode() {
        m.insert("delivery_mode".into(), json!(d));
    }
    if let Some(d) = p.priority() {
        m.insert("priority".into(), json!(d));
    }
    if let Some(t) = p.timestamp() {
        m.insert("timestamp".into(), json!(t));
    }
    Value::Object(m)
}

/// Message properties from the JSON a publish request carries. Unknown keys are ignored;
/// a value of the wrong type is a 400.
pub fn properties_from_json(m: &Map<String, Value>) -> ApiResult<AMQPProperties> {
    let mut p = AMQPProperties::default();
    let short = |k: &str| -> ApiResult<Option<ShortString>> {
        match m.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.len() <= 255 => Ok(Some(s.as_str().into())),
            Some(Value::Number(n)) => Ok(Some(n.to_string().into())),
            Some(_) => Err(ApiError::bad(format!(
                "property '{k}' must be a string of at most 255 bytes"
            ))),
        }
    };
    let small = |k: &str, max: i64| -> ApiResult<Option<u8>> {
        match m.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => crate::body::parse_int(v)
                .filter(|n| (0..=max).contains(n))
                .map(|n| Some(n as u8))
                .ok_or_else(|| ApiError::bad(format!("property '{k}' must be 0..={max}"))),
        }
    };
    if let Some(v) = short("content_type")? {
        p = p.with_content_type(v);
    }
    if let Some(v) = short("content_encoding")? {
        p = p.with_content_encoding(v);
    }
    match m.get("headers") {
        None | Some(Value::Null) => {}
        Some(Value::Object(h)) => p = p.with_headers(json_to_table(h)),
        Some(Value::Array(a)) if a.is_empty() => {}
        Some(_) => return Err(ApiError::bad("property 'headers' must be an object")),
    }
    if let Some(v) = small("delivery_mode", 2)? {
        p = p.with_delivery_mode(v);
    }
    if let Some(v) = small("priority", 255)? {
        p = p.with_priority(v);
    }
    if let Some(v) = short("correlation_id")? {
        p = p.with_correlation_id(v);
    }
    if let Some(v) = short("reply_to")? {
        p = p.with_reply_to(v);
    }
    if let Some(v) = short("expiration")? {
        let ok = !v.as_str().is_empty()
            && v.as_str().len() <= 19
            && v.as_str().bytes().all(|b| b.is_ascii_digit());
        if !ok {
            return Err(ApiError::bad(format!(
                "invalid expiration '{}': {{error,no_integer}}",
                v.as_str()
            )));
        }
        p = p.with_expiration(v);
    }
    if let Some(v) = short("message_id")? {
        p = p.with_message_id(v);
    }
    match m.get("timestamp") {
        None | Some(Value::Null) => {}
        Some(v) => {
            let t = crate::body::parse_int(v)
                .filter(|n| *n >= 0)
                .ok_or_else(|| ApiError::bad("property 'timestamp' must be an integer"))?;
            p = p.with_timestamp(t as u64);
        }
    }
    if let Some(v) = short("type")? {
        p = p.with_type(v);
    }
    if let Some(v) = short("user_id")? {
        p = p.with_user_id(v);
    }
    if let Some(v) = short("app_id")? {
        p = p.with_app_id(v);
    }
    if let Some(v) = short("cluster_id")? {
        p = p.with_cluster_id(v);
    }
    Ok(p)
}

/// A payload as `POST …/get` returns it: `auto` gives UTF-8 text as a `"string"` and
/// anything else as `"base64"`; `base64` always base64. Returns (payload, encoding).
pub fn encode_payload(body: &[u8], base64_only: bool) -> (String, &'static str) {
    if !base64_only {
        if let Ok(s) = std::str::from_utf8(body) {
            return (s.to_owned(), "string");
        }
    }
    (
        base64::engine::general_purpose::STANDARD.encode(body),
        "base64",
    )
}

/// A payload as `POST …/publish` takes it (`payload_encoding` `string` or `base64`).
pub fn decode_payload(payload: &str, encoding: &str) -> ApiResult<Vec<u8>> {
    match encoding {
        "string" => Ok(payload.as_bytes().to_vec()),
        "base64" => base64::engine::general_purpose::STANDARD
            .decode(payload.trim())
            .map_err(|_| ApiError::bad("payload is not valid base64")),
        other => Err(ApiError::bad(format!(
            "payload_encoding must be string or base64, not '{other}'"
        ))),
    }
}

/// RabbitMQ's `quote_plus` with `~` escaped: unreserved characters stay, space becomes
/// `+`, every other byte `%XX`.
pub fn quote_binding(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'.' | b'-' | b'_' => out.push(b as char),
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// A binding's `properties_key`: `~` for an empty key without arguments, the quoted key
/// without arguments, else the quoted key, `~` and a hash of the arguments (FerryMQ's own
/// stable hash: clients treat the key as opaque and take it from `Location` or a listing).
pub fn properties_key(routing_key: &str, arguments: &FieldTable) -> String {
    if arguments.inner().is_empty() {
        if routing_key.is_empty() {
            return "~".into();
        }
        return quote_binding(routing_key);
    }
    // FNV-1a over the canonical JSON of the arguments (a BTreeMap: ordered keys).
    let text = table_to_json(arguments).to_string();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let hash = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(h.to_be_bytes());
    format!("{}~{}", quote_binding(routing_key), quote_binding(&hash))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_keys() {
        let none = FieldTable::default();
        assert_eq!(properties_key("", &none), "~");
        assert_eq!(properties_key("rk", &none), "rk");
        assert_eq!(properties_key("a b/c~d", &none), "a+b%2Fc%7Ed");
        assert_eq!(properties_key("ключ", &none), "%D0%BA%D0%BB%D1%8E%D1%87");
        let mut args = FieldTable::default();
        args.insert("x-match".into(), AMQPValue::LongString("all".into()));
        let k = properties_key("rk", &args);
        assert!(k.starts_with("rk~"), "{k}");
        assert_eq!(k, properties_key("rk", &args), "stable");
        let mut other = FieldTable::default();
        other.insert("x-match".into(), AMQPValue::LongString("any".into()));
        assert_ne!(k, properties_key("rk", &other));
        assert!(properties_key("", &args).starts_with('~'));
    }

    #[test]
    fn tables_to_json() {
        let mut t = FieldTable::default();
        t.insert("i".into(), AMQPValue::LongInt(-3));
        t.insert("s".into(), AMQPValue::LongString("x".into()));
        t.insert("b".into(), AMQPValue::Boolean(true));
        t.insert("d".into(), AMQPValue::Double(f64::NAN));
        let mut inner = FieldTable::default();
        inner.insert("k".into(), AMQPValue::ShortString("v".into()));
        t.insert("t".into(), AMQPValue::FieldTable(inner));
        let j = table_to_json(&t);
        assert_eq!(
            j,
            json!({"i": -3, "s": "x", "b": true, "d": null, "t": {"k": "v"}})
        );
        let back = json_to_table(j.as_object().unwrap());
        assert_eq!(back.inner().len(), 5);
    }

    #[test]
    fn properties_round_trip() {
        let m = json!({
            "content_type": "text/plain", "delivery_mode": "2", "priority": 3,
            "headers": {"h": 1}, "timestamp": 1700000000, "type": "t", "expiration": "60000",
            "unknown": [1, 2]
        });
        let p = properties_from_json(m.as_object().unwrap()).unwrap();
        assert_eq!(p.delivery_mode(), &Some(2));
        let back = properties_to_json(&p);
        assert_eq!(back["content_type"], "text/plain");
        assert_eq!(back["headers"]["h"], 1);
        assert_eq!(back["type"], "t");
        assert_eq!(back["timestamp"], 1700000000);
        let bad = |v: Value| properties_from_json(v.as_object().unwrap()).is_err();
        assert!(bad(json!({"delivery_mode": 3})));
        assert!(bad(json!({"priority": "high"})));
        assert!(bad(json!({"headers": 5})));
        assert!(bad(json!({"expiration": "soon"})));
        assert!(bad(json!({"content_type": {"a": 1}})));
        assert!(bad(json!({"message_id": "x".repeat(300)})));
        assert!(properties_from_json(&Map::new()).is_ok());
    }

    #[test]
    fn payloads() {
        assert_eq!(encode_payload(b"hi", false), ("hi".into(), "string"));
        assert_eq!(encode_payload(b"hi", true), ("aGk=".into(), "base64"));
        assert_eq!(encode_payload(&[0xff], false).1, "base64");
        assert_eq!(decode_payload("aGk=", "base64").unwrap(), b"hi");
        assert_eq!(
            decode_payload("héllo", "string").unwrap(),
            "héllo".as_bytes()
        );
        assert!(decode_payload("%%", "base64").is_err());
        assert!(decode_payload("x", "hex").is_err());
    }
}
