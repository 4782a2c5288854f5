//! The integration tests' in-memory Kafka-protocol mock as a standalone server, for
//! measuring the bench client's own ceiling without a real broker in the way:
//! `cargo run --release -p ferrymq-bench --example kafka_mock -- 19099`, then
//! `ferrymq bench kafka --bootstrap 127.0.0.1:19099 ...`.

#[allow(dead_code)] // the tests use more of it than this server does
#[path = "../tests/it/kafka_mock.rs"]
mod kafka_mock;

fn main() {
    let port = std::env::args()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(19099);
    let mock = kafka_mock::KafkaMock::start_on(port, kafka_mock::KafkaMockOptions::default());
    println!("kafka mock broker listening on 127.0.0.1:{}", mock.port);
    loop {
        std::thread::park();
    }
}
