//! Integration tests of the AMQP wire codec.

mod garbage;
