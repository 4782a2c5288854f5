//! End-to-end tests of `ferrymq bench amqp` against an in-process mock broker: the whole
//! client (handshake, topology, producers, consumers, confirms, acks, cleanup, errors)
//! through the public `run` entry point.

mod certs;
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

// ------------------------------------------------------------------ amqps

fn tls_mock(pki: &certs::TestPki) -> MockBroker {
    MockBroker::start(MockOptions {
        tls: Some(pki.server.clone()),
        ..MockOptions::default()
    })
}

/// Runs the bench against `uri` (not the mock's default URI).
fn bench_uri(uri: &str, args: &[&str]) -> anyhow::Result<()> {
    let mut argv = vec!["bench", "--uri", uri];
    argv.extend_from_slice(args);
    run(BenchCommand::Amqp(Cli::try_parse_from(argv)?.args))
}

#[test]
fn amqps_verified_against_the_ca_moves_every_message() {
    let pki = certs::pki("bench test CA", &["localhost", "127.0.0.1"]);
    let mock = tls_mock(&pki);
    // By IP address (checked against the IP SAN) and by DNS name (SNI + DNS SAN).
    for host in ["127.0.0.1", "localhost"] {
        let before = get(&mock.stats.published);
        bench_uri(
            &mock.uri_with_host(host),
            &[
                "--tls-ca-file",
                pki.ca(),
                "--producers",
                "2",
                "--consumers",
                "2",
                "--pmessages",
                "5000",
                "--confirm",
                "100",
                "--size",
                "1024",
            ],
        )
        .unwrap_or_else(|e| panic!("{host}: {e:#}"));
        assert_eq!(get(&mock.stats.published) - before, 10_000, "{host}");
    }
    assert_eq!(get(&mock.stats.delivered), 20_000);
    // Setup + 2 producers + 2 consumers per run, every one over TLS.
    assert_eq!(get(&mock.stats.connections), 10);
    assert_eq!(get(&mock.stats.tls_handshakes), 10);
}

#[test]
fn amqps_large_messages_acks_and_declare_mode() {
    let pki = certs::pki("bench test CA", &["127.0.0.1"]);
    let mock = tls_mock(&pki);
    // Bodies over several TLS records and AMQP frames; one ack per message, so every ack
    // write must leave the TLS buffer or the prefetch window stalls.
    bench(
        &mock,
        &[
            "--tls-ca-file",
            pki.ca(),
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
    bench(&mock, &["--tls-insecure", "--queue-declare", "50"]).unwrap();
    assert_eq!(get(&mock.stats.declared), 1 + 50);
}

#[test]
fn amqps_insecure_accepts_an_unknown_certificate() {
    let pki = certs::pki("some CA", &["broker.invalid"]);
    let mock = tls_mock(&pki);
    bench(&mock, &["--tls-insecure", "--pmessages", "1000"]).unwrap();
    assert_eq!(get(&mock.stats.delivered), 1000);
}

#[test]
fn amqps_refuses_wrong_ca_and_wrong_name() {
    let pki = certs::pki("the real CA", &["127.0.0.1"]);
    let mock = tls_mock(&pki);
    let other = certs::pki("another CA", &["127.0.0.1"]);
    let err = format!(
        "{:#}",
        bench(&mock, &["--tls-ca-file", other.ca(), "--pmessages", "10"]).unwrap_err()
    );
    assert!(
        err.contains("TLS handshake") && err.contains("UnknownIssuer"),
        "{err}"
    );

    let pki = certs::pki("bench test CA", &["broker.invalid"]);
    let mock = tls_mock(&pki);
    let err = format!(
        "{:#}",
        bench(&mock, &["--tls-ca-file", pki.ca(), "--pmessages", "10"]).unwrap_err()
    );
    assert!(err.contains("not valid for name \"127.0.0.1\""), "{err}");
    assert_eq!(get(&mock.stats.tls_handshakes), 0);
}

#[test]
fn amqps_option_mistakes_are_reported() {
    let pki = certs::pki("bench test CA", &["127.0.0.1"]);
    // TLS options without amqps://.
    let mock = MockBroker::start(MockOptions::default());
    let err = bench(&mock, &["--tls-ca-file", pki.ca()]).unwrap_err();
    assert!(err.to_string().contains("amqps://"), "{err}");
    // Both verification options at once.
    let tls = tls_mock(&pki);
    assert!(bench(&tls, &["--tls-ca-file", pki.ca(), "--tls-insecure"]).is_err());
    // A CA file that is missing or holds no certificate.
    let err = format!(
        "{:#}",
        bench(&tls, &["--tls-ca-file", "/nonexistent/ca.pem"]).unwrap_err()
    );
    assert!(err.contains("/nonexistent/ca.pem"), "{err}");
    let empty = tempfile::NamedTempFile::new().unwrap();
    let err = format!(
        "{:#}",
        bench(&tls, &["--tls-ca-file", empty.path().to_str().unwrap()]).unwrap_err()
    );
    assert!(err.contains("no certificate"), "{err}");
    // amqps:// to a plaintext listener: a handshake error, not a hang.
    let plain = MockBroker::start(MockOptions::default());
    let started = std::time::Instant::now();
    let err = format!(
        "{:#}",
        bench_uri(
            &format!("amqps://127.0.0.1:{}/", plain.port),
            &["--tls-insecure", "--pmessages", "1"]
        )
        .unwrap_err()
    );
    assert!(err.contains("TLS"), "{err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(15));
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

// ------------------------------------------------------------------ kafka security

fn sasl_mock(pki: Option<&certs::TestPki>, mechanisms: Option<Vec<&'static str>>) -> KafkaMock {
    KafkaMock::start(KafkaMockOptions {
        tls: pki.map(|p| p.server.clone()),
        sasl_users: vec![("bench".into(), "s3cret pass".into())],
        sasl_mechanisms: mechanisms,
        ..Default::default()
    })
}

#[test]
fn kafka_sasl_ssl_with_every_mechanism() {
    let pki = certs::pki("bench test CA", &["127.0.0.1"]);
    for mechanism in ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] {
        let mock = sasl_mock(Some(&pki), None);
        kafka_bench(
            &mock,
            &[
                "-t",
                "s",
                "--mode",
                "both",
                "-n",
                "20000",
                "--security-protocol",
                "SASL_SSL",
                "--sasl-mechanism",
                mechanism,
                "--sasl-username",
                "bench",
                "--sasl-password",
                "s3cret pass",
                "--tls-ca-file",
                pki.ca(),
            ],
        )
        .unwrap_or_else(|e| panic!("{mechanism}: {e:#}"));
        assert_eq!(mock.counts("s"), vec![20000], "{mechanism}");
        // Bootstrap, the producer's connection to the leader and the consumer's: each
        // over TLS and authenticated.
        let conns = get(&mock.stats.connections);
        assert_eq!(conns, 3, "{mechanism}");
        assert_eq!(get(&mock.stats.tls_handshakes), conns, "{mechanism}");
        assert_eq!(mock.authenticated(mechanism), conns, "{mechanism}");
        assert_eq!(get(&mock.stats.crc_failures), 0);
    }
}

#[test]
fn kafka_ssl_and_sasl_plaintext() {
    let pki = certs::pki("bench test CA", &["127.0.0.1"]);
    let mock = KafkaMock::start(KafkaMockOptions {
        tls: Some(pki.server.clone()),
        ..Default::default()
    });
    kafka_bench(
        &mock,
        &[
            "-t",
            "t",
            "--mode",
            "produce",
            "-n",
            "10000",
            "-p",
            "2",
            "--security-protocol",
            "ssl",
            "--tls-ca-file",
            pki.ca(),
        ],
    )
    .unwrap();
    assert_eq!(mock.counts("t").iter().sum::<i64>(), 10000);
    assert_eq!(
        get(&mock.stats.tls_handshakes),
        get(&mock.stats.connections)
    );

    let mock = sasl_mock(None, None);
    kafka_bench(
        &mock,
        &[
            "-t",
            "t",
            "--mode",
            "produce",
            "-n",
            "10000",
            "--security-protocol",
            "sasl_plaintext",
            "--sasl-mechanism",
            "scram-sha-256",
            "--sasl-username",
            "bench",
            "--sasl-password",
            "s3cret pass",
        ],
    )
    .unwrap();
    assert_eq!(mock.counts("t"), vec![10000]);
    assert_eq!(get(&mock.stats.tls_handshakes), 0);
    assert_eq!(mock.authenticated("SCRAM-SHA-256"), 2);
}

#[test]
fn kafka_sasl_failures_are_reported() {
    let mock = sasl_mock(None, None);
    let base = [
        "-t",
        "f",
        "--mode",
        "produce",
        "-n",
        "10",
        "--security-protocol",
        "sasl_plaintext",
        "--sasl-username",
        "bench",
    ];
    for mechanism in ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] {
        let mut args = base.to_vec();
        args.extend(["--sasl-mechanism", mechanism, "--sasl-password", "wrong"]);
        let err = format!("{:#}", kafka_bench(&mock, &args).unwrap_err());
        assert!(
            err.contains("SASL_AUTHENTICATION_FAILED") && err.contains(mechanism),
            "{mechanism}: {err}"
        );
    }
    assert_eq!(get(&mock.stats.auth_failures), 3);

    // A mechanism the broker does not offer: the error lists what it offers.
    let mock = sasl_mock(None, Some(vec!["PLAIN"]));
    let mut args = base.to_vec();
    args.extend([
        "--sasl-mechanism",
        "SCRAM-SHA-512",
        "--sasl-password",
        "s3cret pass",
    ]);
    let err = format!("{:#}", kafka_bench(&mock, &args).unwrap_err());
    assert!(
        err.contains("UNSUPPORTED_SASL_MECHANISM") && err.contains("[\"PLAIN\"]"),
        "{err}"
    );

    // No SASL against a broker that requires it: the broker hangs up.
    let err = kafka_bench(&mock, &["-t", "f", "--mode", "produce", "-n", "10"]).unwrap_err();
    assert!(format!("{err:#}").contains("closed"), "{err:#}");
}

#[test]
fn kafka_tls_failures_and_option_mistakes() {
    let pki = certs::pki("the real CA", &["127.0.0.1"]);
    let other = certs::pki("another CA", &["127.0.0.1"]);
    let mock = KafkaMock::start(KafkaMockOptions {
        tls: Some(pki.server.clone()),
        ..Default::default()
    });
    let err = kafka_bench(
        &mock,
        &[
            "-n",
            "1",
            "--security-protocol",
            "ssl",
            "--tls-ca-file",
            other.ca(),
        ],
    )
    .unwrap_err();
    assert!(format!("{err:#}").contains("UnknownIssuer"), "{err:#}");
    // --tls-insecure takes any certificate.
    kafka_bench(
        &mock,
        &[
            "-t",
            "i",
            "--mode",
            "produce",
            "-n",
            "100",
            "--security-protocol",
            "ssl",
            "--tls-insecure",
        ],
    )
    .unwrap();
    assert_eq!(mock.counts("i"), vec![100]);

    for (args, expected) in [
        (
            vec!["--security-protocol", "sasl_ssl", "--tls-insecure"],
            "--sasl-mechanism",
        ),
        (
            vec![
                "--security-protocol",
                "sasl_plaintext",
                "--sasl-mechanism",
                "PLAIN",
            ],
            "--sasl-username",
        ),
        (vec!["--sasl-username", "u"], "--security-protocol"),
        (vec!["--tls-insecure"], "--security-protocol"),
    ] {
        let err = kafka_bench(&mock, &args).unwrap_err().to_string();
        assert!(err.contains(expected), "{args:?}: {err}");
    }
    assert!(KafkaCli::try_parse_from(["bench", "--security-protocol", "tls"]).is_err());
    assert!(KafkaCli::try_parse_from(["bench", "--sasl-mechanism", "GSSAPI"]).is_err());
}
