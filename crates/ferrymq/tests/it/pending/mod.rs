//! Tests of features that later issues add (reliable messaging). They are kept compiling and runnable (they
//! pass against RabbitMQ) but are only part of the suite with the `later-issues` feature:
//! `cargo test -p ferrymq --test it --features later-issues`.

mod reliability;
