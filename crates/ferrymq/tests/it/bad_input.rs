//! Malformed input on raw sockets: wrong protocol headers, garbage, truncated and oversized
//! frames, bad frame ends, unopened channels, unknown methods and out-of-order content
//! frames. Each case checks the broker's exact answer and that a connection opened
//! beforehand still works afterwards.

use lapin::{Channel, Connection};

use crate::harness::*;
use crate::raw::{self, id, Args, RawConn};

/// A lapin connection opened before the bad input, checked after it.
struct Survivor {
    _conn: Connection,
    ch: Channel,
}

impl Survivor {
    async fn open(broker: &Broker) -> Survivor {
        let (conn, ch) = broker.channel().await;
        Survivor { _conn: conn, ch }
    }

    async fn check(&self) {
        round_trip(&self.ch).await;
    }
}

fn queue_declare(channel: u16, name: &str) -> Vec<u8> {
    raw::method_frame(
        channel,
        id::QUEUE,
        id::QUEUE_DECLARE,
        Args::new().u16(0).short(name).u8(0).empty_table().bytes(),
    )
}

/// Opens a raw connection with channel 1, sends `bytes`, and returns the connection.close
/// the broker answers with.
async fn close_after(broker: &Broker, bytes: &[u8]) -> raw::Close {
    let (mut conn, _) = RawConn::open(&broker.addr()).await;
    conn.open_channel(1).await;
    conn.send_lenient(bytes).await;
    conn.expect_connection_close().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_protocol_header_gets_the_supported_one() {
    let broker = Broker::shared();
    let survivor = Survivor::open(&broker).await;
    for header in [
        &b"AMQP\x00\x00\x0a\x00"[..],
        &b"AMQP\x00\x00\x09\x02"[..],
        &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
    ] {
        let mut conn = RawConn::tcp(&broker.addr()).await;
        conn.send_lenient(header).await;
        let answer = conn.read_to_end_raw(64).await;
        assert_eq!(
            answer,
            raw::PROTOCOL_HEADER,
            "answer to {:?}",
            String::from_utf8_lossy(header)
        );
    }
    survivor.check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_after_handshake_is_501() {
    let broker = Broker::shared();
    let survivor = Survivor::open(&broker).await;
    // 'A' is no frame type; RabbitMQ reads the next bytes as a huge frame size.
    let close = close_after(&broker, b"ABCDEFGHIJKLMNOP").await;
    assert_eq!(close.code, 501, "{close:?}");
    // A well-sized frame of an unknown type.
    let close = close_after(&broker, &raw::frame(9, 0, b"abc")).await;
    assert_eq!(close.code, 501, "{close:?}");
    survivor.check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_frame_then_disconnect_is_harmless() {
    let broker = Broker::shared();
    let survivor = Survivor::open(&broker).await;
    let (mut conn, _) = RawConn::open(&broker.addr()).await;
    conn.open_channel(1).await;
    let frame = queue_declare(1, &unique("q"));
    conn.send(&frame[..frame.len() / 2]).await;
    conn.shutdown_write().await;
    conn.expect_eof().await;
    // A truncated protocol header too.
    let mut conn = RawConn::tcp(&broker.addr()).await;
    conn.send(b"AMQ").await;
    conn.shutdown_write().await;
    conn.expect_eof().await;
    survivor.check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frame_end_is_501() {
    let broker = Broker::shared();
    let survivor = Survivor::open(&broker).await;
    let mut frame = queue_declare(1, &unique("q"));
    *frame.last_mut().unwrap() = 0x00;
    let close = close_after(&broker, &frame).await;
    assert_eq!(close.code, 501, "{close:?}");
    assert!(close.text.starts_with("FRAME_ERROR"), "{close:?}");
    survivor.check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frame_over_frame_max_is_501() {
    let broker = Broker::shared();
    let survivor = Survivor::open(&broker).await;
    let (_, hello) = RawConn::open(&broker.addr()).await;
    // RabbitMQ tolerates payloads up to frame_max itself (8 bytes of "fudge" over the
    // spec's frame_max - 8), so these frames exceed the limit by a clear margin.
    let over = hello.frame_max as usize + 100;
    // A method frame larger than the negotiated (server default) frame_max.
    let big = raw::method_frame(1, id::QUEUE, id::QUEUE_DECLARE, &vec![0u8; over]);
    let close = close_after(&broker, &big).await;
    assert_eq!(close.code, 501, "{close:?}");
    // A body frame over the limit after a valid publish and header.
    let mut out = raw::method_frame(
        1,
        id::BASIC,
        id::BASIC_PUBLISH,
        raw::publish_args("", "x").bytes(),
    );
    out.extend(raw::header_frame(1, over as u64 * 2));
    out.extend(raw::frame(raw::FRAME_BODY, 1, &vec![7u8; over]));
    let close = close_after(&broker, &out).await;
    assert_eq!(close.code, 501, "{close:?}");
    // The limit is the negotiated one, not the server's default.
    let (mut conn, _) = RawConn::open_tuned(&broker.addr(), Some(4096), None).await;
    conn.open_channel(1).await;
    let mut out = raw::method_frame(
        1,
        id::BASIC,
        id::BASIC_PUBLISH,
        raw::publish_args("", "x").bytes(),
    );
    out.extend(raw::header_frame(1, 6000));
    out.extend(raw::frame(raw::FRAME_BODY, 1, &vec![7u8; 6000]));
    conn.send_lenient(&out).await;
    let close = conn.expect_connection_close().await;
    assert_eq!(close.code, 501, "{close:?}");
    survivor.check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn method_on_unopened_channel_is_504() {
    let broker = Broker::shared();
    let survivor = Survivor::open(&broker).await;
    let close = close_after(&broker, &queue_declare(5, &unique("q"))).await;
    assert_eq!(close.code, 504, "{close:?}");
    assert_eq!((close.class, close.method), (id::QUEUE, id::QUEUE_DECLARE));
    survivor.check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_channel_open_is_504() {
    let broker = Broker::shared();
    let survivor = Survivor::open(&broker).await;
    let close = close_after(
        &broker,
        &raw::method_frame(
            1,
            id::CHANNEL,
            id::CHANNEL_OPEN,
            Args::new().short("").bytes(),
        ),
    )
    .await;
    assert_eq!(close.code, 504, "{close:?}");
    survivor.check().await;
}

/// Unknown class or method ids. The spec wants 540 NOT_IMPLEMENTED (or 503); RabbitMQ 3.10
/// crashes the connection process (`unknown_method_id`) and just closes the socket. Either
/// the socket ends, or it carries a connection.close with 540 or 503.
async fn assert_unknown_method_ends_connection(broker: &Broker, class: u16, method: u16) {
    let (mut conn, _) = RawConn::open(&broker.addr()).await;
    conn.open_channel(1).await;
    conn.send_lenient(&raw::method_frame(1, class, method, &[]))
        .await;
    loop {
        match conn.read_frame().await {
            Ok(None) | Err(_) => return,
            Ok(Some((
                raw::Frame::Method {
                    channel: 0,
                    class: id::CONNECTION,
                    method: id::CONNECTION_CLOSE,
                    args,
                },
                _,
            ))) => {
                let close = raw::parse_close(&args);
                assert!(
                    close.code == 540 || close.code == 503,
                    "unknown {class}.{method}: {close:?}"
                );
                return;
            }
            Ok(Some((raw::Frame::Heartbeat { .. }, _))) => continue,
            Ok(Some((other, _))) => panic!("unknown {class}.{method} answered with {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_class_or_method_ends_the_connection() {
    let broker = Broker::shared();
    let survivor = Survivor::open(&broker).await;
    assert_unknown_method_ends_connection(&broker, 99, 10).await;
    assert_unknown_method_ends_connection(&broker, id::BASIC, 99).await;
    assert_unknown_method_ends_connection(&broker, id::QUEUE, 99).await;
    survivor.check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_header_without_publish_is_505() {
    let broker = Broker::shared();
    let survivor = Survivor::open(&broker).await;
    let close = close_after(&broker, &raw::header_frame(1, 10)).await;
    assert_eq!(close.code, 505, "{close:?}");
    assert!(close.text.starts_with("UNEXPECTED_FRAME"), "{close:?}");
    survivor.check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_without_header_is_505() {
    let broker = Broker::shared();
    let survivor = Survivor::open(&broker).await;
    let close = close_after(&broker, &raw::frame(raw::FRAME_BODY, 1, b"hello")).await;
    assert_eq!(close.code, 505, "{close:?}");
    survivor.check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn method_instead_of_content_is_505() {
    let broker = Broker::shared();
    let survivor = Survivor::open(&broker).await;
    // A method where the content header should be.
    let mut out = raw::method_frame(
        1,
        id::BASIC,
        id::BASIC_PUBLISH,
        raw::publish_args("", "x").bytes(),
    );
    out.extend(queue_declare(1, &unique("q")));
    let close = close_after(&broker, &out).await;
    assert_eq!(close.code, 505, "{close:?}");
    // A method where the rest of the body should be.
    let mut out = raw::method_frame(
        1,
        id::BASIC,
        id::BASIC_PUBLISH,
        raw::publish_args("", "x").bytes(),
    );
    out.extend(raw::header_frame(1, 10));
    out.extend(raw::frame(raw::FRAME_BODY, 1, b"12345"));
    out.extend(queue_declare(1, &unique("q")));
    let close = close_after(&broker, &out).await;
    assert_eq!(close.code, 505, "{close:?}");
    survivor.check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_on_a_channel_other_than_zero_is_505() {
    let broker = Broker::shared();
    let survivor = Survivor::open(&broker).await;
    let close = close_after(&broker, &raw::frame(raw::FRAME_HEARTBEAT, 1, &[])).await;
    assert_eq!(close.code, 505, "{close:?}");
    survivor.check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_method_arguments_are_501() {
    let broker = Broker::shared();
    let survivor = Survivor::open(&broker).await;
    let close = close_after(
        &broker,
        &raw::method_frame(1, id::QUEUE, id::QUEUE_DECLARE, &[0, 0, 3]),
    )
    .await;
    assert_eq!(close.code, 501, "{close:?}");
    survivor.check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_method_on_a_channel_is_503() {
    let broker = Broker::shared();
    let survivor = Survivor::open(&broker).await;
    let close = close_after(
        &broker,
        &raw::method_frame(
            1,
            id::CONNECTION,
            id::CONNECTION_OPEN,
            Args::new().short("/").short("").u8(0).bytes(),
        ),
    )
    .await;
    assert_eq!(close.code, 503, "{close:?}");
    survivor.check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tune_ok_ends_the_connection() {
    let broker = Broker::shared();
    let survivor = Survivor::open(&broker).await;
    // frame_max below the 4096 minimum, then above the server's maximum.
    for frame_max in [1000u32, 100_000_000] {
        let (mut conn, _) = RawConn::start(&broker.addr()).await;
        conn.send_start_ok("PLAIN", b"\0guest\0guest").await;
        let tune = conn
            .expect_method(0, id::CONNECTION, id::CONNECTION_TUNE)
            .await;
        let channel_max = raw::Reader::new(&tune).u16();
        let tune_ok = Args::new().u16(channel_max).u32(frame_max).u16(0);
        conn.send_method(0, id::CONNECTION, id::CONNECTION_TUNE_OK, tune_ok.bytes())
            .await;
        let open = Args::new().short("/").short("").u8(0);
        conn.send_lenient(&raw::method_frame(
            0,
            id::CONNECTION,
            id::CONNECTION_OPEN,
            open.bytes(),
        ))
        .await;
        // RabbitMQ closes the socket without open-ok; a connection.close would do too.
        loop {
            match conn.read_frame().await {
                Ok(None) | Err(_) => break,
                Ok(Some((
                    raw::Frame::Method {
                        class: id::CONNECTION,
                        method: id::CONNECTION_CLOSE,
                        ..
                    },
                    _,
                ))) => break,
                Ok(Some((raw::Frame::Heartbeat { .. }, _))) => continue,
                Ok(Some((other, _))) => {
                    panic!("tune-ok frame_max {frame_max} was accepted: {other:?}")
                }
            }
        }
    }
    survivor.check().await;
}
