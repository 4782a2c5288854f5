//! Error scoping: a channel error closes only its channel (the connection and its other
//! channels carry on), a connection error closes everything on the connection, and the
//! methods RabbitMQ does not implement answer 540.

use lapin::options::{BasicRecoverOptions, ChannelFlowOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, ExchangeKind};

use crate::harness::*;
use crate::raw::{id, Args, RawConn};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_errors_leave_other_channels_working() {
    let broker = Broker::shared();
    let conn = broker.connect().await;
    let healthy = within(conn.create_channel()).await.expect("channel");
    let q = declare_queue(&healthy).await;
    for code in [404u16, 406, 403, 405] {
        let ch = within(conn.create_channel()).await.expect("channel");
        let result = match code {
            404 => passive_declare(&ch, &unique("missing")).await.map(|_| ()),
            406 => within(ch.tx_commit()).await,
            403 => {
                within(ch.exchange_declare(
                    "amq.forbidden".into(),
                    ExchangeKind::Direct,
                    Default::default(),
                    Default::default(),
                ))
                .await
            }
            _ => {
                let (_owner, owner_ch) = broker.channel().await;
                let locked = declare_queue_with(
                    &owner_ch,
                    lapin::options::QueueDeclareOptions::exclusive(),
                    Default::default(),
                )
                .await;
                passive_declare(&ch, &locked).await.map(|_| ())
            }
        };
        assert_code(result, code);
        assert!(!ch.status().connected(), "channel closed after {code}");
        assert!(conn.status().connected(), "connection open after {code}");
        publish(&healthy, "", &q, format!("after-{code}").as_bytes()).await;
        assert_eq!(
            get_body(&healthy, &q).await,
            Some(format!("after-{code}").into_bytes())
        );
    }
    assert_connection_usable(&conn).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_channels_survive_one_channels_error() {
    let broker = Broker::shared();
    let conn = broker.connect().await;
    let mut channels = Vec::new();
    for _ in 0..10 {
        channels.push(within(conn.create_channel()).await.expect("channel"));
    }
    let failing = channels.remove(4);
    assert_code(passive_declare(&failing, &unique("missing")).await, 404);
    for ch in &channels {
        round_trip(ch).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_errors_close_every_channel() {
    let broker = Broker::shared();
    let conn = broker.connect().await;
    let a = within(conn.create_channel()).await.expect("channel");
    let b = within(conn.create_channel()).await.expect("channel");
    let q = declare_queue(&a).await;
    let _c = within(a.basic_consume(
        q.as_str().into(),
        "same".into(),
        Default::default(),
        Default::default(),
    ))
    .await
    .expect("consume");
    let again = within(a.basic_consume(
        q.as_str().into(),
        "same".into(),
        Default::default(),
        Default::default(),
    ))
    .await;
    assert_code(again.map(|_| ()), 530);
    assert!(within(b.basic_get(q.as_str().into(), Default::default()))
        .await
        .is_err());
    assert!(!conn.status().connected());
    // The broker itself is fine.
    let (_conn, ch) = broker.channel().await;
    round_trip(&ch).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recover_without_requeue_is_540() {
    let broker = Broker::shared();
    let (conn, ch) = broker.channel().await;
    let result = within(ch.basic_recover(BasicRecoverOptions { requeue: false })).await;
    assert_code(result, 540);
    assert!(!conn.status().connected(), "540 is a connection error");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_flow_inactive_is_540() {
    let broker = Broker::shared();
    let (conn, ch) = broker.channel().await;
    let result = within(ch.channel_flow(ChannelFlowOptions { active: false })).await;
    assert_code(result, 540);
    assert!(!conn.status().connected(), "540 is a connection error");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos_prefetch_size_is_540() {
    // lapin cannot send a prefetch-size, so this one is on a raw connection.
    let broker = Broker::shared();
    let (mut raw, _) = RawConn::open(&broker.addr()).await;
    raw.open_channel(1).await;
    let qos = Args::new().u32(1000).u16(5).u8(0);
    raw.send_method(1, id::BASIC, 10, qos.bytes()).await;
    let close = raw.expect_connection_close().await;
    assert_eq!(close.code, 540, "{close:?}");
    assert_eq!((close.class, close.method), (id::BASIC, 10), "{close:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_exchange_type_is_503() {
    let broker = Broker::shared();
    let (conn, ch) = broker.plain_channel().await;
    let result = within(ch.exchange_declare(
        unique("x").as_str().into(),
        ExchangeKind::Custom("x-no-such-type".into()),
        Default::default(),
        Default::default(),
    ))
    .await;
    assert_code(result, 503);
    assert!(!conn.status().connected(), "503 is a connection error");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_queue_arguments_are_406() {
    let broker = Broker::shared();
    let conn = broker.connect().await;
    let cases = [
        ("x-max-length", AMQPValue::LongString("ten".into())),
        ("x-message-ttl", AMQPValue::LongInt(-5)),
    ];
    for (key, value) in cases {
        let ch = within(conn.create_channel()).await.expect("channel");
        let mut args = FieldTable::default();
        args.insert(key.into(), value.clone());
        let result =
            within(ch.queue_declare(unique("q").as_str().into(), Default::default(), args)).await;
        match result {
            Err(e) => assert_eq!(reply_code(&e), Some(406), "{key}={value:?}: {e:?}"),
            Ok(q) => panic!("{key}={value:?} accepted: {q:?}"),
        }
    }
    assert_connection_usable(&conn).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_expiration_property_is_406() {
    let broker = Broker::shared();
    let (conn, ch) = broker.plain_channel().await;
    let q = declare_queue(&ch).await;
    let watch = ChannelWatch::new(&ch).await;
    within(ch.basic_publish(
        "".into(),
        q.as_str().into(),
        Default::default(),
        b"x",
        BasicProperties::default().with_expiration("soon".into()),
    ))
    .await
    .expect("publish is asynchronous");
    watch.closed_with(406).await;
    assert_connection_usable(&conn).await;
}
