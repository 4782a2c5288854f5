//! FerryMQ's Kafka protocol layer (wire ⇄ broker commands). Pure: no I/O here.
pub mod group;
