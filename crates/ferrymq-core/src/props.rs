//! Re-encoding a message's AMQP property list. The hot path never does this: properties
//! stay in their wire form. Only features that must change what a consumer sees re-encode
//! them: dead-lettering (`x-death`, no `expiration`), quorum redeliveries
//! (`x-delivery-count`) and sender-selected distribution (`BCC` removed).

use amq_protocol::protocol::basic::{gen_properties, parse_properties, AMQPProperties};
use amq_protocol::types::FieldTable;
use bytes::Bytes;

/// Parses a property list (flags + properties, as in a content header).
pub fn parse(raw: &[u8]) -> Option<AMQPProperties> {
    parse_properties(raw).ok().map(|(_, p)| p)
}

/// Encodes a property list.
pub fn encode(p: &AMQPProperties) -> Bytes {
    match cookie_factory::gen(gen_properties(p), Vec::with_capacity(64)) {
        Ok((buf, _)) => Bytes::from(buf),
        // Writing into a Vec cannot fail; keep an empty property list if it ever did.
        Err(_) => Bytes::from_static(&[0, 0]),
    }
}

/// The same properties with `headers` replaced and, if `drop_expiration`, no
/// `expiration` (the generated type has setters only, so it is rebuilt field by field).
pub fn with_headers(
    p: &AMQPProperties,
    headers: FieldTable,
    drop_expiration: bool,
) -> AMQPProperties {
    let mut out = AMQPProperties::default().with_headers(headers);
    if let Some(v) = p.content_type() {
        out = out.with_content_type(v.clone());
    }
    if let Some(v) = p.content_encoding() {
        out = out.with_content_encoding(v.clone());
    }
    if let Some(v) = p.delivery_mode() {
        out = out.with_delivery_mode(*v);
    }
    if let Some(v) = p.priority() {
        out = out.with_priority(*v);
    }
    if let Some(v) = p.correlation_id() {
        out = out.with_correlation_id(v.clone());
    }
    if let Some(v) = p.reply_to() {
        out = out.with_reply_to(v.clone());
    }
    if let (false, Some(v)) = (drop_expiration, p.expiration()) {
        out = out.with_expiration(v.clone());
    }
    if let Some(v) = p.message_id() {
        out = out.with_message_id(v.clone());
    }
    if let Some(v) = p.timestamp() {
        out = out.with_timestamp(*v);
    }
    if let Some(v) = p.kind() {
        out = out.with_type(v.clone());
    }
    if let Some(v) = p.user_id() {
        out = out.with_user_id(v.clone());
    }
    if let Some(v) = p.app_id() {
        out = out.with_app_id(v.clone());
    }
    if let Some(v) = p.cluster_id() {
        out = out.with_cluster_id(v.clone());
    }
    out
}

/// Rewrites a raw property list: `edit` changes the headers table (created if absent);
/// `drop_expiration` removes the `expiration` property. Returns the new raw list and the
/// new headers, or `None` if the list does not parse.
pub fn rewrite(
    raw: &[u8],
    drop_expiration: bool,
    edit: impl FnOnce(&mut FieldTable),
) -> Option<(Bytes, FieldTable)> {
    let p = parse(raw)?;
    let mut headers = p.headers().clone().unwrap_or_default();
    edit(&mut headers);
    let new = with_headers(&p, headers.clone(), drop_expiration);
    Some((encode(&new), headers))
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::types::{AMQPValue, LongString, ShortString};

    #[test]
    fn rewrite_keeps_other_properties_and_drops_expiration() {
        let p = AMQPProperties::default()
            .with_content_type(ShortString::from("text/plain"))
            .with_delivery_mode(2)
            .with_expiration(ShortString::from("1000"))
            .with_correlation_id(ShortString::from("c1"))
            .with_timestamp(42);
        let raw = encode(&p);
        let (new, headers) = rewrite(&raw, true, |h| {
            h.insert("k".into(), AMQPValue::LongString(LongString::from("v")));
        })
        .unwrap();
        let back = parse(&new).unwrap();
        assert_eq!(back.content_type().as_ref().unwrap().as_str(), "text/plain");
        assert_eq!(*back.delivery_mode(), Some(2));
        assert_eq!(*back.expiration(), None);
        assert_eq!(back.correlation_id().as_ref().unwrap().as_str(), "c1");
        assert_eq!(*back.timestamp(), Some(42));
        assert!(headers.inner().contains_key("k"));
        assert_eq!(back.headers().as_ref(), Some(&headers));
        // Without dropping, expiration stays.
        let (kept, _) = rewrite(&raw, false, |_| {}).unwrap();
        assert_eq!(
            parse(&kept)
                .unwrap()
                .expiration()
                .as_ref()
                .unwrap()
                .as_str(),
            "1000"
        );
    }

    #[test]
    fn garbage_does_not_parse() {
        assert!(rewrite(&[0xff], false, |_| {}).is_none());
    }
}
