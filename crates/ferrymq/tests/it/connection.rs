//! The connection and channel classes: handshake, advertised capabilities, authentication and
//! vhost refusal, heartbeat and frame_max negotiation, clean close, channel open/close/flow.

use std::time::Duration;

use lapin::options::{BasicGetOptions, ChannelFlowOptions};
use lapin::{BasicProperties, Connection, ConnectionProperties};

use crate::harness::*;
use crate::raw::{self, id, Args, Frame, RawConn, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_opens_connection_and_channel() {
    let broker = Broker::shared();
    let conn = broker.connect().await;
    assert!(conn.status().connected());
    assert_eq!(conn.status().vhost().as_str(), "/");
    let ch = within(conn.create_channel()).await.expect("channel.open");
    assert!(ch.status().connected());
    round_trip(&ch).await;
    within(conn.close(200, "bye".into())).await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_start_offers_0_9_1_plain_and_all_capabilities() {
    let broker = Broker::shared();
    let (_conn, hello) = RawConn::open(&broker.addr()).await;
    assert_eq!(
        hello.version,
        (0, 9),
        "connection.start version-major/minor"
    );
    assert!(
        hello.mechanisms.split(' ').any(|m| m == "PLAIN"),
        "mechanisms {:?} must offer PLAIN",
        hello.mechanisms
    );
    assert!(
        hello.locales.split(' ').any(|l| l == "en_US"),
        "locales {:?} must offer en_US",
        hello.locales
    );
    let Some(Value::Table(caps)) = hello.properties.get("capabilities") else {
        panic!(
            "server-properties lack a capabilities table: {:?}",
            hello.properties
        );
    };
    for cap in [
        "publisher_confirms",
        "exchange_exchange_bindings",
        "basic.nack",
        "consumer_cancel_notify",
        "connection.blocked",
        "consumer_priorities",
        "authentication_failure_close",
        "per_consumer_qos",
        "direct_reply_to",
    ] {
        assert_eq!(
            caps.get(cap),
            Some(&Value::Bool(true)),
            "capability {cap} must be advertised as true; got {caps:?}"
        );
    }
    for key in ["product", "version"] {
        assert!(
            matches!(hello.properties.get(key), Some(Value::Str(s)) if !s.is_empty()),
            "server-properties should carry {key}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tune_proposes_usable_limits() {
    let broker = Broker::shared();
    let (_conn, hello) = RawConn::open(&broker.addr()).await;
    assert!(
        hello.frame_max >= 4096,
        "frame_max {} below the protocol minimum 4096",
        hello.frame_max
    );
    assert!(hello.channel_max > 0, "channel_max 0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_is_refused_with_403() {
    let broker = Broker::shared();
    // On the wire: a client announcing authentication_failure_close gets connection.close 403.
    let (mut conn, _) = RawConn::start(&broker.addr()).await;
    conn.send_start_ok("PLAIN", b"\0guest\0not-the-password")
        .await;
    let close = conn.expect_connection_close().await;
    assert_eq!(close.code, 403, "{close:?}");
    assert!(close.text.starts_with("ACCESS_REFUSED"), "{close:?}");

    // And lapin (which announces it too) reports the 403.
    let url = broker.url_for("guest", "not-the-password", "/");
    let result = within(Connection::connect(&url, ConnectionProperties::default())).await;
    assert_code(result.map(|_| ()), 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_user_is_refused_with_403() {
    let broker = Broker::shared();
    let url = broker.url_for(&unique("nobody"), "guest", "/");
    let result = within(Connection::connect(&url, ConnectionProperties::default())).await;
    assert_code(result.map(|_| ()), 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_vhost_is_refused_with_530() {
    let broker = Broker::shared();
    let url = broker.url_for("guest", "guest", &unique("vhost"));
    let result = within(Connection::connect(&url, ConnectionProperties::default())).await;
    assert_code(result.map(|_| ()), 530);

    let (mut conn, _) = RawConn::start(&broker.addr()).await;
    conn.send_start_ok("PLAIN", b"\0guest\0guest").await;
    let tune = conn
        .expect_method(0, id::CONNECTION, id::CONNECTION_TUNE)
        .await;
    // Accept the server's proposal as is (RabbitMQ drops a client asking channel_max 0).
    let tune_ok = Args(tune);
    conn.send_method(0, id::CONNECTION, id::CONNECTION_TUNE_OK, tune_ok.bytes())
        .await;
    let open = Args::new().short("/no-such-vhost").short("").u8(0);
    conn.send_method(0, id::CONNECTION, id::CONNECTION_OPEN, open.bytes())
        .await;
    let close = conn.expect_connection_close().await;
    assert_eq!(close.code, 530, "{close:?}");
    assert!(close.text.starts_with("NOT_ALLOWED"), "{close:?}");
    assert_eq!((close.class, close.method), (10, 40), "{close:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_mechanism_ends_the_connection_before_tune() {
    let broker = Broker::shared();
    let (mut conn, _) = RawConn::start(&broker.addr()).await;
    conn.send_start_ok("NO-SUCH-MECHANISM", b"\0guest\0guest")
        .await;
    // RabbitMQ 3.10 closes the socket without a close method; a connection.close is fine
    // too, but tune (a successful login) is not.
    loop {
        match conn.read_frame().await {
            Ok(None) | Err(_) => break,
            Ok(Some((
                Frame::Method {
                    class: id::CONNECTION,
                    method: id::CONNECTION_CLOSE,
                    ..
                },
                _,
            ))) => break,
            Ok(Some((Frame::Heartbeat { .. }, _))) => continue,
            Ok(Some((other, _))) => panic!("unexpected frame after a bad mechanism: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_is_negotiated() {
    let broker = Broker::shared();
    // The client asks for less than the server's proposal: the lower value wins.
    let conn = connect_url(&broker.url_with_query("heartbeat=5")).await;
    assert_eq!(conn.configuration().heartbeat(), 5);
    within(conn.close(200, "bye".into())).await.expect("close");

    // With a 1 s heartbeat agreed, an idle server sends heartbeat frames.
    let (mut raw, hello) = RawConn::open_tuned(&broker.addr(), None, Some(1)).await;
    assert!(hello.heartbeat > 0, "server should propose a heartbeat");
    raw.expect_heartbeat(Duration::from_secs(5), Duration::from_millis(250))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_client_is_disconnected_after_missed_heartbeats() {
    let broker = Broker::shared();
    // Agree on a 1 s heartbeat, then never send anything again: the broker must drop the
    // connection after two missed intervals (RabbitMQ closes the socket without a close
    // method), while a connection that keeps talking stays up.
    let (mut silent, _) = RawConn::open_tuned(&broker.addr(), None, Some(1)).await;
    let started = std::time::Instant::now();
    within_for(Duration::from_secs(10), silent.expect_eof()).await;
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "closed after {:?}, before a heartbeat interval passed",
        started.elapsed()
    );
    let (conn, ch) = broker.channel().await;
    let q = declare_queue(&ch).await;
    publish(&ch, "", &q, b"still here").await;
    assert_eq!(get_body(&ch, &q).await.expect("message"), b"still here");
    within(conn.close(200, "bye".into())).await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frame_max_is_negotiated_and_honoured() {
    let broker = Broker::shared();
    let conn = connect_url(&broker.url_with_query("frame_max=8192")).await;
    assert_eq!(conn.configuration().frame_max(), 8192);
    let ch = within(conn.create_channel()).await.expect("channel");
    let q = declare_queue(&ch).await;
    let body = pattern(100_000);
    publish(&ch, "", &q, &body).await;
    assert_eq!(get_body(&ch, &q).await.expect("message"), body);
    within(conn.close(200, "bye".into())).await.expect("close");

    // On the wire: after tune-ok with frame_max 4096, every frame the broker sends fits.
    let (mut raw, _) = RawConn::open_tuned(&broker.addr(), Some(4096), Some(0)).await;
    raw.open_channel(1).await;
    let q = unique("q");
    let declare = Args::new().u16(0).short(&q).u8(0).empty_table();
    raw.send_method(1, id::QUEUE, id::QUEUE_DECLARE, declare.bytes())
        .await;
    raw.expect_method(1, id::QUEUE, id::QUEUE_DECLARE_OK).await;
    let body = pattern(20_000);
    let mut out = raw::method_frame(
        1,
        id::BASIC,
        id::BASIC_PUBLISH,
        raw::publish_args("", &q).bytes(),
    );
    out.extend(raw::header_frame(1, body.len() as u64));
    for chunk in body.chunks(4096 - 8) {
        out.extend(raw::frame(raw::FRAME_BODY, 1, chunk));
    }
    raw.send(&out).await;
    let get = Args::new().u16(0).short(&q).u8(1);
    raw.send_method(1, id::BASIC, id::BASIC_GET, get.bytes())
        .await;
    let mut received = Vec::new();
    let mut got_ok = false;
    while received.len() < body.len() {
        let (frame, len) = raw
            .read_frame()
            .await
            .expect("well-formed frame")
            .expect("frame before EOF");
        assert!(
            len <= 4096,
            "broker sent a {len}-byte frame over frame_max 4096"
        );
        match frame {
            Frame::Method {
                class: id::BASIC,
                method: id::BASIC_GET_OK,
                ..
            } => got_ok = true,
            Frame::Header { body_size, .. } => assert_eq!(body_size, body.len() as u64),
            Frame::Body { data, .. } => received.extend(data),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(got_ok);
    assert_eq!(received, body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_close_is_clean() {
    let broker = Broker::shared();
    let conn = broker.connect().await;
    let ch = within(conn.create_channel()).await.expect("channel");
    within(conn.close(200, "bye".into())).await.expect("close");
    assert!(!conn.status().connected());
    assert!(ch
        .basic_get("x".into(), BasicGetOptions::default())
        .await
        .is_err());

    // On the wire: connection.close is answered with close-ok, then the socket ends.
    let (mut raw, _) = RawConn::open(&broker.addr()).await;
    let close = Args::new().u16(200).short("bye").u16(0).u16(0);
    raw.send_method(0, id::CONNECTION, id::CONNECTION_CLOSE, close.bytes())
        .await;
    raw.expect_method(0, id::CONNECTION, id::CONNECTION_CLOSE_OK)
        .await;
    // The client closes the socket after close-ok; the broker need not close it first.
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channels_open_and_close_independently() {
    let broker = Broker::shared();
    let conn = broker.connect().await;
    let mut channels = Vec::new();
    for _ in 0..5 {
        channels.push(within(conn.create_channel()).await.expect("channel.open"));
    }
    let closed = channels.remove(2);
    within(closed.close(200, "done".into()))
        .await
        .expect("channel.close");
    assert!(!closed.status().connected());
    assert!(
        closed
            .basic_publish(
                "".into(),
                "x".into(),
                Default::default(),
                b"x",
                BasicProperties::default()
            )
            .await
            .is_err(),
        "a closed channel must refuse work"
    );
    for ch in &channels {
        round_trip(ch).await;
    }
    // A new channel after a close works too.
    let again = within(conn.create_channel()).await.expect("channel.open");
    round_trip(&again).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_channel_close_is_answered_with_close_ok() {
    let broker = Broker::shared();
    let (mut raw, _) = RawConn::open(&broker.addr()).await;
    raw.open_channel(1).await;
    let close = Args::new().u16(200).short("bye").u16(0).u16(0);
    raw.send_method(1, id::CHANNEL, id::CHANNEL_CLOSE, close.bytes())
        .await;
    raw.expect_method(1, id::CHANNEL, id::CHANNEL_CLOSE_OK)
        .await;
    // The channel number can be opened again.
    raw.open_channel(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_flow_active_true_is_confirmed() {
    let broker = Broker::shared();
    let (_conn, ch) = broker.channel().await;
    let active = within(ch.channel_flow(ChannelFlowOptions { active: true }))
        .await
        .expect("channel.flow");
    assert!(active, "channel.flow-ok must echo active=true");
    round_trip(&ch).await;
}
