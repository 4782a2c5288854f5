//! Framing a client library never exercises but the protocol allows: content frames of
//! different channels interleaved, bodies split into many tiny frames, input arriving a byte
//! at a time, and the channel-close handshake (what the close carries, and methods sent
//! before close-ok being discarded).

use crate::harness::*;
use crate::raw::{self, id, Args, Frame, RawConn};

fn declare(channel: u16, queue: &str) -> Vec<u8> {
    raw::method_frame(
        channel,
        id::QUEUE,
        id::QUEUE_DECLARE,
        Args::new().u16(0).short(queue).u8(0).empty_table().bytes(),
    )
}

fn passive_declare(channel: u16, queue: &str) -> Vec<u8> {
    raw::method_frame(
        channel,
        id::QUEUE,
        id::QUEUE_DECLARE,
        Args::new().u16(0).short(queue).u8(1).empty_table().bytes(),
    )
}

fn publish_method(channel: u16, queue: &str) -> Vec<u8> {
    raw::method_frame(
        channel,
        id::BASIC,
        id::BASIC_PUBLISH,
        raw::publish_args("", queue).bytes(),
    )
}

/// `basic.get` (no-ack) on a raw connection: the body, or `None` on get-empty.
async fn raw_get(conn: &mut RawConn, channel: u16, queue: &str) -> Option<Vec<u8>> {
    let get = Args::new().u16(0).short(queue).u8(1);
    conn.send_method(channel, id::BASIC, id::BASIC_GET, get.bytes())
        .await;
    let size = match conn.next_method().await {
        Some(Frame::Method {
            class: id::BASIC,
            method: id::BASIC_GET_OK,
            ..
        }) => match conn.next_method().await {
            Some(Frame::Header { body_size, .. }) => body_size as usize,
            other => panic!("expected a content header, got {other:?}"),
        },
        Some(Frame::Method {
            class: id::BASIC,
            method: 72,
            ..
        }) => return None,
        other => panic!("expected get-ok or get-empty, got {other:?}"),
    };
    let mut body = Vec::with_capacity(size);
    while body.len() < size {
        match conn.next_method().await {
            Some(Frame::Body { data, .. }) => body.extend(data),
            other => panic!("expected a body frame, got {other:?}"),
        }
    }
    Some(body)
}

async fn declared(conn: &mut RawConn, channel: u16) -> String {
    let q = unique("q");
    conn.send(&declare(channel, &q)).await;
    conn.expect_method(channel, id::QUEUE, id::QUEUE_DECLARE_OK)
        .await;
    q
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_close_names_the_failing_method() {
    let broker = Broker::shared();
    let (mut conn, _) = RawConn::open(&broker.addr()).await;
    conn.open_channel(1).await;
    let missing = unique("missing");
    conn.send(&passive_declare(1, &missing)).await;
    let close = match conn.next_method().await {
        Some(Frame::Method {
            channel: 1,
            class: id::CHANNEL,
            method: id::CHANNEL_CLOSE,
            args,
        }) => raw::parse_close(&args),
        other => panic!("expected channel.close, got {other:?}"),
    };
    assert_eq!(close.code, 404, "{close:?}");
    assert_eq!((close.class, close.method), (id::QUEUE, id::QUEUE_DECLARE));
    assert!(close.text.starts_with("NOT_FOUND"), "{close:?}");
    assert!(close.text.contains(&missing), "{close:?}");
    conn.send_method(1, id::CHANNEL, id::CHANNEL_CLOSE_OK, &[])
        .await;
    // The channel number is free again and the connection is fine.
    conn.open_channel(1).await;
    let q = declared(&mut conn, 1).await;
    assert_eq!(raw_get(&mut conn, 1, &q).await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn methods_before_close_ok_are_discarded() {
    let broker = Broker::shared();
    let (mut conn, _) = RawConn::open(&broker.addr()).await;
    conn.open_channel(1).await;
    conn.open_channel(2).await;
    let q = declared(&mut conn, 2).await;
    // The failing method, then (before the broker's close can be seen) a publish and a
    // declare on the same channel: both must be dropped, not answered or applied.
    let mut out = passive_declare(1, &unique("missing"));
    out.extend(publish_method(1, &q));
    out.extend(raw::header_frame(1, 4));
    out.extend(raw::frame(raw::FRAME_BODY, 1, b"lost"));
    out.extend(declare(1, &unique("q")));
    conn.send(&out).await;
    match conn.next_method().await {
        Some(Frame::Method {
            channel: 1,
            class: id::CHANNEL,
            method: id::CHANNEL_CLOSE,
            args,
        }) => assert_eq!(raw::parse_close(&args).code, 404),
        other => panic!("expected channel.close, got {other:?}"),
    }
    conn.send_method(1, id::CHANNEL, id::CHANNEL_CLOSE_OK, &[])
        .await;
    // Channel 2 answers next: nothing else arrived on channel 1 in between.
    assert_eq!(
        raw_get(&mut conn, 2, &q).await,
        None,
        "the publish was dropped"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_of_different_channels_may_interleave() {
    let broker = Broker::shared();
    let (mut conn, _) = RawConn::open(&broker.addr()).await;
    conn.open_channel(1).await;
    conn.open_channel(2).await;
    let q1 = declared(&mut conn, 1).await;
    let q2 = declared(&mut conn, 2).await;
    let mut out = publish_method(1, &q1);
    out.extend(publish_method(2, &q2));
    out.extend(raw::header_frame(1, 6));
    out.extend(raw::header_frame(2, 6));
    out.extend(raw::frame(raw::FRAME_BODY, 1, b"one"));
    out.extend(raw::frame(raw::FRAME_BODY, 2, b"two"));
    out.extend(raw::frame(raw::FRAME_BODY, 2, b"TWO"));
    out.extend(raw::frame(raw::FRAME_BODY, 1, b"ONE"));
    conn.send(&out).await;
    assert_eq!(raw_get(&mut conn, 1, &q1).await, Some(b"oneONE".to_vec()));
    assert_eq!(raw_get(&mut conn, 2, &q2).await, Some(b"twoTWO".to_vec()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_split_into_tiny_frames_is_reassembled() {
    let broker = Broker::shared();
    let (mut conn, _) = RawConn::open(&broker.addr()).await;
    conn.open_channel(1).await;
    let q = declared(&mut conn, 1).await;
    let body = pattern(300);
    let mut out = publish_method(1, &q);
    out.extend(raw::header_frame(1, body.len() as u64));
    for byte in &body {
        out.extend(raw::frame(raw::FRAME_BODY, 1, std::slice::from_ref(byte)));
    }
    // An empty body has no body frames at all.
    out.extend(publish_method(1, &q));
    out.extend(raw::header_frame(1, 0));
    conn.send(&out).await;
    assert_eq!(raw_get(&mut conn, 1, &q).await, Some(body));
    assert_eq!(raw_get(&mut conn, 1, &q).await, Some(Vec::new()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn input_arriving_a_byte_at_a_time_is_handled() {
    let broker = Broker::shared();
    let mut conn = RawConn::tcp(&broker.addr()).await;
    for b in raw::PROTOCOL_HEADER {
        conn.send(&[*b]).await;
    }
    conn.expect_method(0, id::CONNECTION, id::CONNECTION_START)
        .await;
    let start_ok = raw::method_frame(
        0,
        id::CONNECTION,
        id::CONNECTION_START_OK,
        Args::new()
            .empty_table()
            .short("PLAIN")
            .long(b"\0guest\0guest")
            .short("en_US")
            .bytes(),
    );
    for b in &start_ok {
        conn.send(&[*b]).await;
    }
    let tune = conn
        .expect_method(0, id::CONNECTION, id::CONNECTION_TUNE)
        .await;
    let mut r = raw::Reader::new(&tune);
    let (channel_max, frame_max) = (r.u16(), r.u32());
    let mut out = raw::method_frame(
        0,
        id::CONNECTION,
        id::CONNECTION_TUNE_OK,
        Args::new().u16(channel_max).u32(frame_max).u16(0).bytes(),
    );
    out.extend(raw::method_frame(
        0,
        id::CONNECTION,
        id::CONNECTION_OPEN,
        Args::new().short("/").short("").u8(0).bytes(),
    ));
    out.extend(raw::method_frame(
        1,
        id::CHANNEL,
        id::CHANNEL_OPEN,
        Args::new().short("").bytes(),
    ));
    let q = unique("q");
    out.extend(declare(1, &q));
    out.extend(publish_method(1, &q));
    out.extend(raw::header_frame(1, 5));
    out.extend(raw::frame(raw::FRAME_BODY, 1, b"bytes"));
    for b in &out {
        conn.send(&[*b]).await;
    }
    conn.expect_method(0, id::CONNECTION, id::CONNECTION_OPEN_OK)
        .await;
    conn.expect_method(1, id::CHANNEL, id::CHANNEL_OPEN_OK)
        .await;
    conn.expect_method(1, id::QUEUE, id::QUEUE_DECLARE_OK).await;
    assert_eq!(raw_get(&mut conn, 1, &q).await, Some(b"bytes".to_vec()));
}
