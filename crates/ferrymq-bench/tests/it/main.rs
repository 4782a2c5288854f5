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

// ------------------------------------------------------------------ kafka

mod kafka_mock;

use ferrymq_bench::kafka::batch::partition_for_key;
use ferrymq_bench::KafkaArgs;
use kafka_mock::{KafkaMock, KafkaMockOptions};

#[derive(Debug, Parser)]
struct KafkaCli {
    #[command(flatten)]
    args: KafkaArgs,
}

fn kafka_bench(mock: &KafkaMock, args: &[&str]) -> anyhow::Result<()> {
    let boot = mock.bootstrap();
    let mut argv = vec!["bench", "--bootstrap", boot.as_str()];
    argv.extend_from_slice(args);
    run(BenchCommand::Kafka(KafkaCli::try_parse_from(argv)?.args))
}

#[test]
fn kafka_produce_then_consume_every_record() {
    let mock = KafkaMock::start(KafkaMockOptions::default());
    kafka_bench(
        &mock,
        &[
            "-t",
            "t1",
            "--mode",
            "produce",
            "-n",
            "25000",
            "-p",
            "3",
            "-x",
            "2",
            "--batch-bytes",
            "8192",
        ],
    )
    .unwrap();
    let counts = mock.counts("t1");
    assert_eq!(counts.len(), 3, "topic created with 3 partitions");
    assert_eq!(counts.iter().sum::<i64>(), 25000);
    assert!(
        counts.iter().all(|c| *c > 0),
        "sticky round-robin uses every partition: {counts:?}"
    );
    assert_eq!(get(&mock.stats.crc_failures), 0);
    assert!(get(&mock.stats.produce_requests) > 25000 * 100 / 8192);
    // Consume reads them all back (and stops there).
    kafka_bench(&mock, &["-t", "t1", "--mode", "consume", "-n", "25000"]).unwrap();
    assert!(get(&mock.stats.fetch_requests) >= 1);
}

#[test]
fn kafka_both_modes_with_every_codec() {
    for codec in ["none", "gzip", "snappy", "lz4", "zstd"] {
        let mock = KafkaMock::start(KafkaMockOptions {
            decode_records: true,
            ..Default::default()
        });
        kafka_bench(
            &mock,
            &[
                "-t",
                "c",
                "--mode",
                "both",
                "-n",
                "3000",
                "--compression",
                codec,
                "-s",
                "200",
            ],
        )
        .unwrap_or_else(|e| panic!("{codec}: {e:#}"));
        assert_eq!(mock.counts("c"), vec![3000], "{codec}");
    }
}

#[test]
fn kafka_keyed_records_follow_murmur2() {
    let mock = KafkaMock::start(KafkaMockOptions {
        decode_records: true,
        ..Default::default()
    });
    kafka_bench(
        &mock,
        &[
            "-t",
            "k",
            "--mode",
            "produce",
            "-n",
            "2000",
            "-p",
            "4",
            "--keys",
            "sequential",
        ],
    )
    .unwrap();
    let st = mock.state.lock().unwrap();
    let parts = &st.topics["k"];
    let mut total = 0;
    for (i, p) in parts.iter().enumerate() {
        for k in &p.keys {
            let k = k.as_ref().expect("keyed record");
            assert_eq!(partition_for_key(k, 4), i as u32, "key {k:?}");
            total += 1;
        }
    }
    assert_eq!(total, 2000);
}

#[test]
fn kafka_acks_zero_sends_without_responses() {
    let mock = KafkaMock::start(KafkaMockOptions::default());
    kafka_bench(
        &mock,
        &["-t", "a0", "--mode", "produce", "-n", "5000", "--acks", "0"],
    )
    .unwrap();
    // No response is awaited: wait for the mock to have read everything.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while mock.counts("a0").iter().sum::<i64>() < 5000 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(mock.counts("a0"), vec![5000]);
}

#[test]
fn kafka_timed_rate_limited_run_stops() {
    let mock = KafkaMock::start(KafkaMockOptions::default());
    let start = std::time::Instant::now();
    kafka_bench(
        &mock,
        &[
            "-t",
            "r",
            "--mode",
            "both",
            "--time",
            "1",
            "--rate",
            "2000",
            "--linger-ms",
            "5",
        ],
    )
    .unwrap();
    let n = mock.counts("r")[0];
    assert!(
        (1000..=3000).contains(&n),
        "about 2000 records in 1 s, got {n}"
    );
    assert!(start.elapsed() < std::time::Duration::from_secs(15));
}

#[test]
fn kafka_produce_errors_fail_the_run() {
    let mock = KafkaMock::start(KafkaMockOptions {
        produce_error: Some(10),
        ..Default::default()
    });
    let err = kafka_bench(&mock, &["-t", "e", "--mode", "produce", "-n", "100"]).unwrap_err();
    assert!(format!("{err:#}").contains("error 10"), "{err:#}");
}

#[test]
fn kafka_unreachable_broker_is_an_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let boot = format!("127.0.0.1:{port}");
    let args =
        KafkaCli::try_parse_from(["bench", "--bootstrap", boot.as_str(), "-n", "1"]).unwrap();
    assert!(run(BenchCommand::Kafka(args.args)).is_err());
}
