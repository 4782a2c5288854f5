//! FerryMQ's Kafka protocol layer (wire ⇄ broker commands). Pure: no I/O here.
//! [`frame`] takes requests off the wire, [`batch`] validates record batches without
//! re-encoding them, [`api`] holds one module per API with its rules and response
//! assembly, [`group`] the classic consumer-group coordinator (sans-IO), [`sasl`] a
//! connection's authentication (sans-IO), [`txn`] the transaction coordinator (sans-IO)
//! and a partition's transaction index, [`control`] transaction markers, [`error`] the layer's error type.

pub mod api;
pub mod batch;
pub mod compaction;
pub mod control;
pub mod error;
pub mod fetch_session;
pub mod frame;
pub mod group;
pub mod sasl;
pub mod txn;

pub use error::KafkaError;
pub use kafka_protocol;
