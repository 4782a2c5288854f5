//! A published message as the broker stores and routes it. Properties stay in their AMQP
//! wire encoding (`raw_properties`) so that the hot path never re-encodes them; the few
//! fields routing and queueing need are parsed out once at publish time.

use amq_protocol::types::FieldTable;
use bytes::Bytes;

/// One message, shared (behind an `Arc`) by every queue it was routed to.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// Exchange it was published to (empty for the default exchange).
    pub exchange: Bytes,
    /// Routing key it was published with.
    pub routing_key: Bytes,
    /// The content header's property flags and property list, exactly as received.
    pub raw_properties: Bytes,
    /// The message body.
    pub body: Bytes,
    /// `delivery-mode = 2`.
    pub persistent: bool,
    /// The `priority` property, if any.
    pub priority: Option<u8>,
    /// The `headers` property, parsed lazily by whoever needs it (headers exchange, CC/BCC).
    pub headers: Option<FieldTable>,
    /// Per-message TTL from the `expiration` property, in milliseconds.
    pub ttl_ms: Option<u64>,
}

impl Message {
    /// Size used for limits and accounting: body plus properties.
    pub fn size(&self) -> usize {
        self.body.len() + self.raw_properties.len()
    }
}
