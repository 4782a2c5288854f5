//! Integration tests for FerryMQ's AMQP 0-9-1 server: the real `ferrymq` binary (or, with
//! `FERRYMQ_TEST_AMQP_URL`, any external broker such as RabbitMQ) driven over sockets by the
//! lapin client and by a raw frame codec of the suite's own. See `harness` for how the
//! broker is found.
//!
//! Every expectation about RabbitMQ-compatible behaviour (reply codes, which errors close a
//! channel and which the connection, routing, acks, confirms, transactions, extensions) is
//! validated against RabbitMQ 3.10:
//!
//! ```text
//! FERRYMQ_TEST_AMQP_URL=amqp://guest:guest@127.0.0.1:5673/%2f cargo test -p ferrymq --test it
//! ```
//!
//! Tests of the binary itself (SIGTERM, restart, `--max-message-size`) print `SKIPPED` and
//! pass in that mode.

mod access;
mod bad_input;
mod basic;
mod confirm;
mod connection;
mod consumers;
mod durability;
mod errors;
mod exchange;
mod features;
mod framing;
mod harness;
mod kafka;
mod limits;
mod load;
mod queue;
mod raw;
mod reliability;
mod shutdown;
mod spill;
mod tx;
