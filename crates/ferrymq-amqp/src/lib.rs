//! AMQP 0-9-1 wire format for the broker side: frame splitting, method decoding (the hot
//! methods by hand, the rest through the `amq-protocol` crate), content headers whose
//! properties stay raw, and frame encoders for what the broker sends. Everything here is
//! pure and never panics on any input.

pub mod content;
pub mod encode;
pub mod error;
pub mod frame;
pub mod method;

pub use error::WireError;
