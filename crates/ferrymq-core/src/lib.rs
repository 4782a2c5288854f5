//! FerryMQ's protocol-independent heart: messages, exchanges and their bindings (the router),
//! and the queue state machine. Everything here is pure: no tokio, no clock reads, no I/O,
//! so it can be unit-tested and simulated. The server crate owns one `QueueState` per queue
//! task and one `Topology` per virtual host.

pub mod args;
pub mod budget;
pub mod deadletter;
pub mod dedup;
pub mod delay;
pub mod error;
pub mod half;
pub mod headers;
pub mod message;
pub mod policy;
pub mod props;
pub mod queue;
pub mod sender;
pub mod topic;
pub mod topology;

pub use error::CoreError;
pub use message::Message;
