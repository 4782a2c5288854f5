//! The integration tests' in-memory mock broker as a standalone server, for measuring the
//! bench client's own ceiling without a real broker in the way:
//! `cargo run --release -p ferrymq-bench --example mock_broker -- 5679`, then
//! `ferrymq bench amqp --uri amqp://guest:guest@127.0.0.1:5679/%2f`.

#[allow(dead_code)] // the tests use more of it than this server does
#[path = "../tests/it/mock_broker.rs"]
mod mock_broker;

fn main() {
    let port = std::env::args()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(5679);
    let mock = mock_broker::MockBroker::start_on(port, mock_broker::MockOptions::default());
    println!("mock broker listening on 127.0.0.1:{}", mock.port);
    loop {
        std::thread::park();
    }
}
