//! Sender-selected distribution (RabbitMQ's `CC` and `BCC` headers): arrays of long
//! strings that add routing keys to a publish on every exchange type that routes by key.
//! `BCC` is removed from the message before delivery; `CC` stays.

use amq_protocol::types::{AMQPValue, FieldTable};

use crate::error::CoreError;

pub const CC: &str = "CC";
pub const BCC: &str = "BCC";

/// The extra routing keys a message's headers ask for (`CC` then `BCC`). Elements that
/// are not long strings are ignored; a header that is not an array is refused with 406,
/// as RabbitMQ does (`invalid message: {unacceptable_type_in_header,...}`).
pub fn extra_routing_keys(headers: Option<&FieldTable>) -> Result<Vec<String>, CoreError> {
    let Some(h) = headers else {
        return Ok(Vec::new());
    };
    let mut keys = Vec::new();
    for name in [CC, BCC] {
        match h.inner().get(name) {
            None => {}
            Some(AMQPValue::FieldArray(a)) => {
                for v in a.as_slice() {
                    if let AMQPValue::LongString(s) = v {
                        keys.push(String::from_utf8_lossy(s.as_bytes()).into_owned());
                    }
                }
            }
            Some(other) => {
                return Err(CoreError::Precondition(format!(
                    "invalid message: {{unacceptable_type_in_header,\"{name}\",{}}}",
                    type_name(other)
                )))
            }
        }
    }
    Ok(keys)
}

fn type_name(v: &AMQPValue) -> &'static str {
    match v {
        AMQPValue::LongString(_) | AMQPValue::ShortString(_) => "longstr",
        AMQPValue::FieldTable(_) => "table",
        AMQPValue::Boolean(_) => "bool",
        AMQPValue::Void => "void",
        _ => "number",
    }
}

/// Whether the headers carry `BCC` (then the properties must be re-encoded without it).
pub fn has_bcc(headers: Option<&FieldTable>) -> bool {
    headers.is_some_and(|h| h.inner().contains_key(BCC))
}

/// The headers without `BCC`.
pub fn without_bcc(headers: &FieldTable) -> FieldTable {
    without(headers, BCC)
}

/// The headers without `key`.
pub fn without(headers: &FieldTable, key: &str) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in headers.inner() {
        if k.as_str() != key {
            t.insert(k.clone(), v.clone());
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::types::FieldArray;

    fn arr(items: &[&str]) -> AMQPValue {
        AMQPValue::FieldArray(FieldArray::from(
            items
                .iter()
                .map(|s| AMQPValue::LongString((*s).into()))
                .collect::<Vec<_>>(),
        ))
    }

    #[test]
    fn cc_then_bcc() {
        let mut h = FieldTable::default();
        h.insert(BCC.into(), arr(&["b1"]));
        h.insert(CC.into(), arr(&["c1", "c2"]));
        h.insert("other".into(), AMQPValue::LongInt(1));
        assert_eq!(
            extra_routing_keys(Some(&h)).unwrap(),
            vec!["c1", "c2", "b1"]
        );
        assert!(has_bcc(Some(&h)));
        let stripped = without_bcc(&h);
        assert!(!has_bcc(Some(&stripped)));
        assert!(stripped.inner().contains_key(CC));
        assert!(stripped.inner().contains_key("other"));
        assert!(extra_routing_keys(None).unwrap().is_empty());
    }

    #[test]
    fn wrong_types() {
        let mut h = FieldTable::default();
        h.insert(CC.into(), AMQPValue::LongString("k".into()));
        let e = extra_routing_keys(Some(&h)).unwrap_err();
        assert!(matches!(e, CoreError::Precondition(ref m) if m.contains("\"CC\",longstr")));
        let mut h = FieldTable::default();
        h.insert(
            CC.into(),
            AMQPValue::FieldArray(FieldArray::from(vec![
                AMQPValue::LongInt(1),
                AMQPValue::LongString("ok".into()),
            ])),
        );
        assert_eq!(extra_routing_keys(Some(&h)).unwrap(), vec!["ok"]);
    }
}
