//! `ferrymq bench amqp`: a load generator for any AMQP 0-9-1 broker, in the spirit of
//! RabbitMQ PerfTest and lavinmqperf. It speaks the protocol through a small hand-written
//! client (no lapin in the hot path) so that it can drive a broker at many hundreds of
//! thousands of messages per second from a couple of cores. This module owns the
//! command-line options; `load` runs producer/consumer tests and `declare` the
//! queue-declaration test.

mod confirm;
mod conn;
mod consumer;
mod declare;
mod delivery;
#[cfg(test)]
mod interop_tests;
mod load;
mod method;
mod producer;
mod uri;
mod wire;

/// Options of `ferrymq bench amqp`.
#[derive(Debug, Clone, clap::Args)]
pub struct AmqpArgs {
    /// Broker to test: amqp://user:pass@host:port/vhost, or amqps://... for TLS (port
    /// 5671 by default; see --tls-ca-file and --tls-insecure).
    #[arg(
        long,
        env = "FERRYMQ_BENCH_URI",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f"
    )]
    pub uri: String,
    /// With amqps://: PEM file of the CA certificate(s) the broker's certificate must chain
    /// to; its name must match the URI's host (DNS name or IP address) [default: the
    /// system bundle, SSL_CERT_FILE or /etc/ssl/certs/ca-certificates.crt].
    #[arg(long, value_name = "PEM")]
    pub tls_ca_file: Option<std::path::PathBuf>,
    /// With amqps://: do not verify the broker's certificate (encrypted but not
    /// authenticated; for quick runs).
    #[arg(long, conflicts_with = "tls_ca_file")]
    pub tls_insecure: bool,
    /// Number of publishing connections (one thread each).
    #[arg(short = 'x', long, default_value_t = 1)]
    pub producers: u32,
    /// Number of consuming connections (one thread each); with --fanout, per queue.
    #[arg(short = 'y', long, default_value_t = 1)]
    pub consumers: u32,
    /// Message body size in bytes; the first 8 carry the send time when size >= 8.
    #[arg(short = 's', long, default_value_t = 16)]
    pub size: usize,
    /// Publish with delivery-mode 2 and declare queues (and exchange) durable.
    #[arg(short = 'f', long)]
    pub persistent: bool,
    /// Use publisher confirms with at most this many unconfirmed messages per producer (0 = off).
    #[arg(short = 'c', long, default_value_t = 0, value_name = "WINDOW")]
    pub confirm: u64,
    /// Consumer prefetch (basic.qos) per consumer; 0 = unlimited.
    #[arg(short = 'q', long, default_value_t = 1000)]
    pub prefetch: u16,
    /// Acknowledge with multiple=true every N messages [default: prefetch / 2].
    #[arg(short = 'A', long, value_name = "N")]
    pub multi_ack_every: Option<u64>,
    /// Consume in no-ack (automatic acknowledgement) mode.
    #[arg(short = 'a', long)]
    pub no_ack: bool,
    /// Queue name [default: server-named queues, deleted at the end]; a named queue is kept.
    #[arg(short = 'u', long)]
    pub queue: Option<String>,
    /// Extra queue.declare argument KEY=VALUE (repeatable), e.g. x-queue-type=quorum;
    /// integers and true/false are sent typed, anything else as a string.
    #[arg(long, value_name = "KEY=VALUE")]
    pub queue_arg: Vec<String>,
    /// Spread producers and consumers round-robin over this many queues (named QUEUE-0, QUEUE-1, ...).
    #[arg(long, default_value_t = 1)]
    pub queues: u32,
    /// Publish to a fanout exchange bound to N queues, each with --consumers consumers (0 = off).
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub fanout: u32,
    /// Publish rate limit per producer in messages per second (0 = as fast as possible).
    #[arg(short = 'r', long, default_value_t = 0.0, value_name = "MSGS_PER_SEC")]
    pub rate: f64,
    /// Stop after this many seconds [default: run until Ctrl-C or --pmessages].
    #[arg(short = 'z', long, value_name = "SECONDS")]
    pub time: Option<f64>,
    /// Stop each producer after it published this many messages.
    #[arg(short = 'C', long, value_name = "COUNT")]
    pub pmessages: Option<u64>,
    /// Delayed messages: publish to an `x-delayed-message` exchange (x-delayed-type
    /// direct, queues bound by name) with an `x-delay` header uniform in
    /// [--delay-min, --delay-min + MS] ms; consumers report lateness (arrival minus due
    /// time) instead of latency. Needs --size >= 16 (send time and delay in the body).
    #[arg(long, value_name = "MS")]
    pub delay_spread: Option<u64>,
    /// With --delay-spread: the shortest delay in ms (0 = some messages are not delayed).
    #[arg(
        long,
        default_value_t = 1,
        value_name = "MS",
        requires = "delay_spread"
    )]
    pub delay_min: u64,
    /// Instead of moving messages, declare COUNT queues over one channel, report queues/s,
    /// then delete them (also timed).
    #[arg(long, value_name = "COUNT")]
    pub queue_declare: Option<u64>,
    /// With --queue-declare: declarations in flight at once (1 = sequential, wait for each
    /// declare-ok; more = pipelined).
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub declare_window: u64,
    /// Print the final summary as one JSON object on stdout (progress goes to stderr).
    #[arg(long)]
    pub json: bool,
}

/// Runs the benchmark the options describe.
pub fn run(args: AmqpArgs) -> anyhow::Result<()> {
    load::run(args)
}

/// Runs every decoder that sees broker bytes over `data`: frame splitting, method decoding,
/// the consumer's delivery state machine and confirm tracking. The entry point of the fuzz
/// target in `crates/ferrymq-bench/fuzz`; panics only if an invariant breaks.
#[doc(hidden)]
pub fn fuzz_decoders(data: &[u8]) {
    use confirm::ConfirmTracker;
    use delivery::DeliveryParser;
    use method::Method;

    const PUBLISHED: u64 = 1000;
    let mut rest = data;
    let mut parser = DeliveryParser::new();
    let mut tracker = ConfirmTracker::new();
    while let Ok(Some((frame, used))) = wire::parse_frame(rest, 1 << 16) {
        assert!(used >= wire::FRAME_OVERHEAD && used <= rest.len());
        if frame.kind == wire::FRAME_METHOD {
            if let Ok(Method::Confirm {
                ack,
                delivery_tag,
                multiple,
            }) = Method::decode(frame.payload)
            {
                tracker.settle(delivery_tag, multiple, ack, PUBLISHED);
                assert!(tracker.nacked() <= tracker.settled() && tracker.settled() <= PUBLISHED);
            }
        }
        if parser.on_frame(frame).is_err() {
            parser = DeliveryParser::new();
        }
        rest = &rest[used..];
    }
    let _ = wire::Cursor::new(data).table_strings("fuzz");
}
