//! Integration tests for FerryMQ's AMQP 0-9-1 server: the real `ferrymq` binary (or, with
//! `FERRYMQ_TEST_AMQP_URL`, any external broker such as RabbitMQ) driven over sockets by the
//! lapin client and by a raw frame codec. See `harness` for how the broker is found.

mod bad_input;
mod basic;
mod confirm;
mod connection;
mod errors;
mod exchange;
mod features;
mod framing;
mod harness;
mod limits;
mod load;
mod queue;
mod raw;
mod shutdown;
mod tx;
