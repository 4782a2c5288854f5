//! End-to-end tests of `ferrymq bench amqp` against an in-process mock broker: the whole
//! client (handshake, topology, producers, consumers, confirms, acks, cleanup, errors)
//! through the public `run` entry point.

mod mock_broker;

use std::sync::atomic::Ordering;

use clap::Parser;
use ferrymq_bench::{run, AmqpArgs, BenchCommand};
use mock_broker::{MockBroker, MockOptions};

#[derive(Debug, Parser)]
struct Cli {
    #[command(flatten)]
    args: AmqpArgs,
}

/// Runs the bench with `args` (after the program name) against `mock`.
fn bench(mock: &MockBroker, args: &[&str]) -> anyhow::Result<()> {
    let uri = mock.uri();
    let mut argv = vec!["bench", "--uri", uri.as_str()];
    argv.extend_from_slice(args);
    run(BenchCommand::Amqp(Cli::try_parse_from(argv)?.args))
}

fn get(c: &std::sync::atomic::AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

#[test]
fn producers_and_consumers_move_every_message() {
    let mock = MockBroker::start(MockOptions::default());
    bench(
        &mock,
        &[
            "--producers",
            "2",
            "--consumers",
            "2",
            "--pmessages",
            "5000",
            "--confirm",
            "100",
            "--json",
        ],
    )
    .unwrap();
    assert_eq!(get(&mock.stats.published), 10_000);
    assert_eq!(get(&mock.stats.delivered), 10_000);
    // Consumers ack in multiples of prefetch/2; the tail below that is left unacked.
    assert!(
        get(&mock.stats.acked) >= 10_000 - 2 * 500,
        "acked {}",
        get(&mock.stats.acked)
    );
    // One server-named queue was declared by the setup connection and deleted at the end.
    assert_eq!(
        (get(&mock.stats.declared), get(&mock.stats.deleted)),
        (1, 1)
    );
    assert_eq!(get(&mock.stats.connections), 5);
}

#[test]
fn multi_ack_every_and_large_messages() {
    let mock = MockBroker::start(MockOptions::default());
    bench(
        &mock,
        &[
            "--pmessages",
            "300",
            "--size",
            "300000",
            "--multi-ack-every",
            "1",
            "--prefetch",
            "10",
        ],
    )
    .unwrap();
    assert_eq!(get(&mock.stats.delivered), 300);
    assert_eq!(get(&mock.stats.acked), 300);
}

#[test]
fn fanout_copies_to_every_queue() {
    let mock = MockBroker::start(MockOptions::default());
    bench(&mock, &["--fanout", "3", "--pmessages", "1000", "--no-ack"]).unwrap();
    assert_eq!(get(&mock.stats.published), 1000);
    assert_eq!(get(&mock.stats.delivered), 3000);
    assert_eq!(
        (get(&mock.stats.declared), get(&mock.stats.deleted)),
        (3, 3)
    );
}

#[test]
fn timed_run_with_rate_limit_stops() {
    let mock = MockBroker::start(MockOptions::default());
    bench(
        &mock,
        &[
            "--time",
            "1.5",
            "--rate",
            "2000",
            "--queue",
            "named",
            "--queues",
            "2",
            "--consumers",
            "2",
        ],
    )
    .unwrap();
    let published = get(&mock.stats.published);
    assert!(
        published > 0 && published <= 3 * 2000,
        "published {published}"
    );
    assert_eq!(get(&mock.stats.delivered), published);
    // Named queues are kept.
    assert_eq!(
        (get(&mock.stats.declared), get(&mock.stats.deleted)),
        (2, 0)
    );
}

#[test]
fn queue_declare_mode_declares_and_deletes() {
    let mock = MockBroker::start(MockOptions::default());
    bench(
        &mock,
        &["--queue-declare", "500", "--declare-window", "50", "--json"],
    )
    .unwrap();
    assert_eq!(
        (get(&mock.stats.declared), get(&mock.stats.deleted)),
        (500, 500)
    );
    let mock = MockBroker::start(MockOptions::default());
    bench(&mock, &["--queue-declare", "20"]).unwrap();
    assert_eq!(
        (get(&mock.stats.declared), get(&mock.stats.deleted)),
        (20, 20)
    );
}

#[test]
fn broker_refusals_are_reported() {
    let mock = MockBroker::start(MockOptions {
        refuse_declare: true,
        ..MockOptions::default()
    });
    let err = bench(&mock, &["--pmessages", "10"])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("406") && err.contains("queue.declare"),
        "{err}"
    );

    let mock = MockBroker::start(MockOptions {
        password: Some("secret".into()),
        ..MockOptions::default()
    });
    let err = format!("{:#}", bench(&mock, &["--pmessages", "10"]).unwrap_err());
    assert!(
        err.contains("403") && err.contains("ACCESS_REFUSED"),
        "{err}"
    );
}

#[test]
fn unreachable_broker_is_an_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let args = Cli::try_parse_from(["bench", "--uri", &format!("amqp://127.0.0.1:{port}")])
        .unwrap()
        .args;
    assert!(run(BenchCommand::Amqp(args)).is_err());
}

/// The fuzz target's body over deterministic random inputs: decoders never panic.
#[test]
fn decoders_survive_garbage() {
    let mut state = 0x243F_6A88_85A3_08D3u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..20_000 {
        let len = (next() % 200) as usize;
        let mut data: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        // Make plausible frame headers common: valid type, small sizes, frame-end octets.
        if len > 8 && next() % 2 == 0 {
            data[0] = [1, 2, 3, 8][(next() % 4) as usize];
            data[3..7].copy_from_slice(&((next() % (len as u64 - 7)) as u32).to_be_bytes());
            let end = 7 + u32::from_be_bytes([data[3], data[4], data[5], data[6]]) as usize;
            if end < len {
                data[end] = 0xCE;
            }
        }
        ferrymq_bench::amqp::fuzz_decoders(&data);
    }
}
