//! The running broker: tokio listeners, one task per connection, one owner task per queue,
//! and structured shutdown. Protocol decoding lives in `ferrymq-amqp`, routing and queue
//! semantics in `ferrymq-core`; this crate wires them to sockets and tasks.

mod amqp;
mod blocking;
pub mod broker;
mod channel;
pub mod config;
pub mod definitions;
mod delayed;
mod exchange_state;
pub mod halfmsg;
pub mod kafka;
pub mod kafka_groups;
pub mod kafka_txn;
pub mod memory;
pub mod paths;
pub mod queue_task;
mod routing;
pub mod server;
pub mod session;
pub mod stats;
pub mod tls;
pub mod transport;
pub mod vhost;

pub use config::Config;
pub use server::{run, Running};
