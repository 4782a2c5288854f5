//! The basic class: publish (mandatory returns, missing exchange), consume (tags,
//! exclusivity, no-ack), qos, get, ack/nack/reject, recover, cancel (client and server side),
//! requeue on close, large messages and exact property round trips, direct reply-to.

use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicGetOptions, BasicNackOptions,
    BasicPublishOptions, BasicQosOptions, BasicRecoverOptions, BasicRejectOptions,
};
use lapin::types::{AMQPValue, ByteArray, DecimalValue, FieldArray, FieldTable};
use lapin::{BasicProperties, Channel};

use crate::harness::*;
use crate::raw::{self, id, Args, Frame, RawConn};

async fn publish_all(ch: &Channel, queue: &str, bodies: &[Vec<u8>]) {
    for body in bodies {
        publish(ch, "", queue, body).await;
    }
}

async fn drain_bodies(ch: &Channel, queue: &str) -> Vec<(Vec<u8>, bool)> {
    let mut out = Vec::new();
    while let Some(m) = within(ch.basic_get(queue.into(), BasicGetOptions { no_ack: true }))
        .await
        .expect("basic.get")
    {
        out.push((m.delivery.data, m.delivery.redelivered));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mandatory_unroutable_publish_is_returned_with_312() {
    let broker = Broker::shared();
    let (_conn, ch) = broker.plain_channel().await;
    let x = declare_exchange(&ch, lapin::ExchangeKind::Direct).await;
    within(ch.basic_publish(
        x.as_str().into(),
        "nobody-bound".into(),
        BasicPublishOptions {
            mandatory: true,
            ..Default::default()
        },
        b"bounce",
        BasicProperties::default().with_message_id("m1".into()),
    ))
    .await
    .expect("publish");
    // The return precedes the reply to any later synchronous method on the channel.
    passive_declare(&ch, &declare_queue(&ch).await)
        .await
        .expect("round trip");
    let returned = within(ch.wait_for_confirms()).await.expect("returns");
    assert_eq!(returned.len(), 1, "{returned:?}");
    let r = &returned[0];
    assert_eq!(r.reply_code, 312);
    assert_eq!(r.reply_text.as_str(), "NO_ROUTE");
    assert_eq!(r.delivery.exchange.as_str(), x);
    assert_eq!(r.delivery.routing_key.as_str(), "nobody-bound");
    assert_eq!(r.delivery.data, b"bounce");
    assert_eq!(
        r.delivery
            .properties
            .message_id()
            .as_ref()
            .map(|s| s.as_str()),
        Some("m1")
    );

    // A routable mandatory publish is delivered, not returned; a non-mandatory unroutable
    // one is dropped silently.
    let q = declare_queue(&ch).await;
    within(ch.basic_publish(
        "".into(),
        q.as_str().into(),
        BasicPublishOptions {
            mandatory: true,
            ..Default::default()
        },
        b"ok",
        BasicProperties::default(),
    ))
    .await
    .expect("publish");
    publish(&ch, &x, "nobody-bound", b"dropped").await;
    assert_eq!(get_body(&ch, &q).await.as_deref(), Some(&b"ok"[..]));
    assert_eq!(get_body(&ch, &q).await, None);
    assert!(within(ch.wait_for_confirms())
        .await
        .expect("returns")
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_return_on_the_wire() {
    let broker = Broker::shared();
    let (mut raw, _) = RawConn::open(&broker.addr()).await;
    raw.open_channel(1).await;
    let key = unique("unroutable");
    let mut out = raw::method_frame(
        1,
        id::BASIC,
        id::BASIC_PUBLISH,
        Args::new().u16(0).short("").short(&key).u8(1).bytes(),
    );
    out.extend(raw::header_frame(1, 3));
    out.extend(raw::frame(raw::FRAME_BODY, 1, b"abc"));
    raw.send(&out).await;
    let args = raw.expect_method(1, id::BASIC, 50).await;
    let mut r = raw::Reader::new(&args);
    assert_eq!(r.u16(), 312);
    assert_eq!(r.short(), b"NO_ROUTE");
    assert_eq!(r.short(), b"");
    assert_eq!(r.short(), key.as_bytes());
    match raw.next_method().await {
        Some(Frame::Header { body_size: 3, .. }) => {}
        other => panic!("expected the returned content header, got {other:?}"),
    }
    match raw.next_method().await {
        Some(Frame::Body { data, .. }) => assert_eq!(data, b"abc"),
        other => panic!("expected the returned body, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_to_missing_exchange_closes_the_channel_with_404() {
    let broker = Broker::shared();
    let (conn, ch) = broker.channel().await;
    let bystander = within(conn.create_channel()).await.expect("channel");
    let watch = ChannelWatch::new(&ch).await;
    within(ch.basic_publish(
        unique("missing").as_str().into(),
        "k".into(),
        Default::default(),
        b"x",
        BasicProperties::default(),
    ))
    .await
    .expect("publish is asynchronous");
    watch.closed_with(404).await;
    assert!(!ch.status().connected(), "the channel is closed");
    round_trip(&bystander).await;
    assert_connection_usable(&conn).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consume_from_missing_queue_is_404() {
    let broker = Broker::shared();
    let (conn, ch) = broker.channel().await;
    let result = within(ch.basic_consume(
        unique("missing").as_str().into(),
        "".into(),
        Default::default(),
        FieldTable::default(),
    ))
    .await;
    assert_code(result.map(|_| ()), 404);
    let ch = within(conn.create_channel()).await.expect("channel");
    let result = within(ch.basic_get(unique("missing").as_str().into(), Default::default())).await;
    assert_code(result.map(|_| ()), 404);
    assert_connection_usable(&conn).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consume_delivers_in_order_with_server_generated_tag() {
    let broker = Broker::shared();
    let (_conn, ch) = broker.channel().await;
    let q = declare_queue(&ch).await;
    let mut consumer = consume(&ch, &q, Default::default()).await;
    assert!(
        consumer.tag().as_str().starts_with("amq.ctag-"),
        "server-generated consumer tag {:?}",
        consumer.tag()
    );
    let bodies = numbered("c", 10);
    publish_all(&ch, &q, &bodies).await;
    let mut tags = Vec::new();
    for expected in &bodies {
        let d = next_delivery(&mut consumer).await;
        assert_eq!(&d.data, expected);
        assert!(!d.redelivered);
        assert_eq!(d.exchange.as_str(), "");
        assert_eq!(d.routing_key.as_str(), q);
        tags.push(d.delivery_tag);
        d.ack(BasicAckOptions::default()).await.expect("ack");
    }
    assert_eq!(
        tags,
        (1..=10).collect::<Vec<u64>>(),
        "delivery tags count from 1"
    );

    // A client-chosen tag is kept.
    let q2 = declare_queue(&ch).await;
    let named = within(ch.basic_consume(
        q2.as_str().into(),
        "my-tag".into(),
        Default::default(),
        FieldTable::default(),
    ))
    .await
    .expect("consume");
    assert_eq!(named.tag().as_str(), "my-tag");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn competing_consumers_share_messages() {
    let broker = Broker::shared();
    let (_conn, ch) = broker.channel().await;
    let q = declare_queue(&ch).await;
    let (_c1, ch1) = broker.channel().await;
    let (_c2, ch2) = broker.channel().await;
    within(ch1.basic_qos(1, Default::default()))
        .await
        .expect("qos");
    within(ch2.basic_qos(1, Default::default()))
        .await
        .expect("qos");
    let mut a = consume(&ch1, &q, Default::default()).await;
    let mut b = consume(&ch2, &q, Default::default()).await;
    publish_all(&ch, &q, &numbered("w", 2)).await;
    // With prefetch 1 and no acks, each consumer holds exactly one message.
    let da = next_delivery(&mut a).await;
    let db = next_delivery(&mut b).await;
    let mut got = vec![da.data.clone(), db.data.clone()];
    got.sort();
    assert_eq!(got, numbered("w", 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exclusive_consume_conflicts_are_403() {
    let broker = Broker::shared();
    let conn = broker.connect().await;
    let ch = within(conn.create_channel()).await.expect("channel");
    let q = declare_queue(&ch).await;
    let _exclusive = consume(
        &ch,
        &q,
        BasicConsumeOptions {
            exclusive: true,
            ..Default::default()
        },
    )
    .await;
    let other = within(conn.create_channel()).await.expect("channel");
    let result = within(other.basic_consume(
        q.as_str().into(),
        "".into(),
        Default::default(),
        FieldTable::default(),
    ))
    .await;
    assert_code(result.map(|_| ()), 403);

    // The other way round: an exclusive consumer on a queue that already has one.
    let q2 = declare_queue(&ch).await;
    let _plain = consume(&ch, &q2, Default::default()).await;
    let other = within(conn.create_channel()).await.expect("channel");
    let result = within(other.basic_consume(
        q2.as_str().into(),
        "".into(),
        BasicConsumeOptions {
            exclusive: true,
            ..Default::default()
        },
        FieldTable::default(),
    ))
    .await;
    assert_code(result.map(|_| ()), 403);
    assert_connection_usable(&conn).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_consumer_tag_on_a_channel_is_530() {
    let broker = Broker::shared();
    let conn = broker.connect().await;
    let ch = within(conn.create_channel()).await.expect("channel");
    let bystander = within(conn.create_channel()).await.expect("channel");
    let q = declare_queue(&ch).await;
    let _first = within(ch.basic_consume(
        q.as_str().into(),
        "dup-tag".into(),
        Default::default(),
        FieldTable::default(),
    ))
    .await
    .expect("first consume");
    let result = within(ch.basic_consume(
        q.as_str().into(),
        "dup-tag".into(),
        Default::default(),
        FieldTable::default(),
    ))
    .await;
    assert_code(result.map(|_| ()), 530);
    // 530 is a connection error: everything on the connection is gone.
    let after = within(bystander.basic_get(q.as_str().into(), Default::default())).await;
    assert!(after.is_err(), "channels of a closed connection must fail");
    assert!(!conn.status().connected());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_ack_consume_needs_no_acks() {
    let broker = Broker::shared();
    let (conn, ch) = broker.channel().await;
    let q = declare_queue(&ch).await;
    let consumer_ch = within(conn.create_channel()).await.expect("channel");
    let mut consumer = consume(
        &consumer_ch,
        &q,
        BasicConsumeOptions {
            no_ack: true,
            ..Default::default()
        },
    )
    .await;
    publish_all(&ch, &q, &numbered("n", 3)).await;
    assert_eq!(next_bodies(&mut consumer, 3).await, numbered("n", 3));
    within(consumer_ch.close(200, "bye".into()))
        .await
        .expect("close");
    assert_eq!(
        message_count(&ch, &q).await,
        0,
        "no-ack deliveries are never requeued"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_consumer_prefetch_limits_unacked_deliveries() {
    let broker = Broker::shared();
    let (_conn, ch) = broker.channel().await;
    let q = declare_queue(&ch).await;
    publish_all(&ch, &q, &numbered("p", 5)).await;
    within(ch.basic_qos(2, BasicQosOptions { global: false }))
        .await
        .expect("qos");
    let mut consumer = consume(&ch, &q, Default::default()).await;
    let first = next_delivery(&mut consumer).await;
    let second = next_delivery(&mut consumer).await;
    assert_eq!(
        (first.data.as_slice(), second.data.as_slice()),
        (&b"p-0"[..], &b"p-1"[..])
    );
    // Deliveries precede the declare-ok on the same channel: 3 must still be ready.
    assert_eq!(message_count(&ch, &q).await, 3);
    assert_no_delivery(&mut consumer).await;
    first.ack(BasicAckOptions::default()).await.expect("ack");
    let third = next_delivery(&mut consumer).await;
    assert_eq!(third.data, b"p-2");
    assert_eq!(message_count(&ch, &q).await, 2);
    assert_no_delivery(&mut consumer).await;
    // Acking several at once opens that many slots.
    third
        .ack(BasicAckOptions { multiple: true })
        .await
        .expect("ack multiple");
    assert_eq!(
        next_bodies(&mut consumer, 2).await,
        vec![b"p-3".to_vec(), b"p-4".to_vec()]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_prefetch_is_shared_by_the_channel() {
    let broker = Broker::shared();
    let (_conn, ch) = broker.channel().await;
    let (a, b) = (declare_queue(&ch).await, declare_queue(&ch).await);
    publish_all(&ch, &a, &numbered("a", 5)).await;
    publish_all(&ch, &b, &numbered("b", 5)).await;
    within(ch.basic_qos(3, BasicQosOptions { global: true }))
        .await
        .expect("qos global");
    let mut ca = consume(&ch, &a, Default::default()).await;
    let mut cb = consume(&ch, &b, Default::default()).await;
    // However the 3 slots are split between the consumers, only 3 messages go out.
    let mut delivered = 0;
    while delivered < 3 {
        within(async {
            tokio::select! {
                d = futures_lite::StreamExt::next(&mut ca) => d.expect("a").expect("a"),
                d = futures_lite::StreamExt::next(&mut cb) => d.expect("b").expect("b"),
            }
        })
        .await;
        delivered += 1;
    }
    let ready = message_count(&ch, &a).await + message_count(&ch, &b).await;
    assert_eq!(ready, 7, "3 of 10 messages in flight across both consumers");
    assert_no_delivery(&mut ca).await;
    assert_no_delivery(&mut cb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_and_get_empty() {
    let broker = Broker::shared();
    let (_conn, ch) = broker.channel().await;
    let q = declare_queue(&ch).await;
    assert!(get(&ch, &q).await.is_none(), "get-empty on an empty queue");
    publish_all(&ch, &q, &numbered("g", 3)).await;
    let m = get(&ch, &q).await.expect("get-ok");
    assert_eq!(m.delivery.data, b"g-0");
    assert_eq!(m.message_count, 2, "get-ok message-count is what remains");
    assert!(!m.delivery.redelivered);
    assert_eq!(m.delivery.routing_key.as_str(), q);
    m.delivery
        .ack(BasicAckOptions::default())
        .await
        .expect("ack");
    let m = get(&ch, &q).await.expect("get-ok");
    assert_eq!(m.message_count, 1);
    let m2 = within(ch.basic_get(q.as_str().into(), BasicGetOptions { no_ack: true }))
        .await
        .expect("get")
        .expect("get-ok");
    assert_eq!(m2.message_count, 0);
    assert!(get(&ch, &q).await.is_none());
    // The unacked one comes back when the channel closes.
    drop(m);
    within(ch.close(200, "bye".into())).await.expect("close");
    assert_queue_holds(&broker, &q, &[(b"g-1".to_vec(), true)]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ack_single_and_multiple() {
    let broker = Broker::shared();
    let (_conn, ch) = broker.channel().await;
    let q = declare_queue(&ch).await;
    publish_all(&ch, &q, &numbered("a", 5)).await;
    let mut consumer = consume(&ch, &q, Default::default()).await;
    let ds: Vec<Delivery> = {
        let mut v = Vec::new();
        for _ in 0..5 {
            v.push(next_delivery(&mut consumer).await);
        }
        v
    };
    // Ack #2 alone, then #1..#4 with multiple (skipping the already acked #2), leave #5.
    within(ch.basic_ack(ds[1].delivery_tag, BasicAckOptions { multiple: false }))
        .await
        .expect("ack");
    within(ch.basic_ack(ds[3].delivery_tag, BasicAckOptions { multiple: true }))
        .await
        .expect("ack multiple");
    within(ch.basic_cancel(consumer.tag(), BasicCancelOptions::default()))
        .await
        .expect("cancel");
    within(ch.close(200, "bye".into())).await.expect("close");
    assert_queue_holds(&broker, &q, &[(b"a-4".to_vec(), true)]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nack_multiple_requeues_at_original_positions() {
    let broker = Broker::shared();
    let (_conn, ch) = broker.channel().await;
    let q = declare_queue(&ch).await;
    publish_all(&ch, &q, &numbered("n", 5)).await;
    let mut tags = Vec::new();
    for _ in 0..3 {
        tags.push(get(&ch, &q).await.expect("get").delivery.delivery_tag);
    }
    within(ch.basic_nack(
        tags[2],
        BasicNackOptions {
            multiple: true,
            requeue: true,
        },
    ))
    .await
    .expect("nack");
    let got = drain_bodies(&ch, &q).await;
    let expected: Vec<(Vec<u8>, bool)> = numbered("n", 5)
        .into_iter()
        .enumerate()
        .map(|(i, b)| (b, i < 3))
        .collect();
    assert_eq!(got, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nack_single_requeues_before_later_messages() {
    let broker = Broker::shared();
    let (_conn, ch) = broker.channel().await;
    let q = declare_queue(&ch).await;
    publish_all(&ch, &q, &numbered("s", 3)).await;
    let m0 = get(&ch, &q).await.expect("get");
    let m1 = get(&ch, &q).await.expect("get");
    within(ch.basic_nack(
        m1.delivery.delivery_tag,
        BasicNackOptions {
            multiple: false,
            requeue: true,
        },
    ))
    .await
    .expect("nack");
    within(ch.basic_ack(m0.delivery.delivery_tag, Default::default()))
        .await
        .expect("ack");
    assert_eq!(
        drain_bodies(&ch, &q).await,
        vec![(b"s-1".to_vec(), true), (b"s-2".to_vec(), false)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nack_without_requeue_discards() {
    let broker = Broker::shared();
    let (_conn, ch) = broker.channel().await;
    let q = declare_queue(&ch).await;
    publish_all(&ch, &q, &numbered("d", 3)).await;
    let _ = get(&ch, &q).await.expect("get");
    let m = get(&ch, &q).await.expect("get");
    within(ch.basic_nack(
        m.delivery.delivery_tag,
        BasicNackOptions {
            multiple: true,
            requeue: false,
        },
    ))
    .await
    .expect("nack");
    within(ch.close(200, "bye".into())).await.expect("close");
    let (_conn2, ch2) = broker.channel().await;
    assert_eq!(drain_bodies(&ch2, &q).await, vec![(b"d-2".to_vec(), false)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reject_with_and_without_requeue() {
    let broker = Broker::shared();
    let (_conn, ch) = broker.channel().await;
    let q = declare_queue(&ch).await;
    publish_all(&ch, &q, &numbered("r", 2)).await;
    let m = get(&ch, &q).await.expect("get");
    assert_eq!(m.delivery.data, b"r-0");
    m.delivery
        .reject(BasicRejectOptions { requeue: true })
        .await
        .expect("reject requeue");
    let m = get(&ch, &q).await.expect("get");
    assert_eq!(m.delivery.data, b"r-0");
    assert!(m.delivery.redelivered, "a requeued message is redelivered");
    within(ch.basic_reject(
        m.delivery.delivery_tag,
        BasicRejectOptions { requeue: false },
    ))
    .await
    .expect("reject drop");
    within(ch.close(200, "bye".into())).await.expect("close");
    let (_conn2, ch2) = broker.channel().await;
    assert_eq!(drain_bodies(&ch2, &q).await, vec![(b"r-1".to_vec(), false)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ack_of_unknown_delivery_tag_is_406() {
    let broker = Broker::shared();
    let (conn, ch) = broker.channel().await;
    let watch = ChannelWatch::new(&ch).await;
    within(ch.basic_ack(999, BasicAckOptions::default()))
        .await
        .expect("ack is asynchronous");
    watch.closed_with(406).await;
    assert!(!ch.status().connected(), "the channel is closed");
    assert_connection_usable(&conn).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn double_ack_is_406() {
    let broker = Broker::shared();
    let (conn, ch) = broker.channel().await;
    let q = declare_queue(&ch).await;
    publish(&ch, "", &q, b"once").await;
    let m = get(&ch, &q).await.expect("get");
    let tag = m.delivery.delivery_tag;
    within(ch.basic_ack(tag, Default::default()))
        .await
        .expect("ack");
    let watch = ChannelWatch::new(&ch).await;
    within(ch.basic_ack(tag, Default::default()))
        .await
        .expect("ack is asynchronous");
    watch.closed_with(406).await;
    assert!(!ch.status().connected(), "the channel is closed");
    assert_connection_usable(&conn).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nack_and_reject_of_unknown_tags_are_406() {
    let broker = Broker::shared();
    let conn = broker.connect().await;
    let ch = within(conn.create_channel()).await.expect("channel");
    let watch = ChannelWatch::new(&ch).await;
    within(ch.basic_nack(42, BasicNackOptions::default()))
        .await
        .expect("nack is asynchronous");
    watch.closed_with(406).await;
    assert!(!ch.status().connected(), "the channel is closed");
    let ch = within(conn.create_channel()).await.expect("channel");
    let watch = ChannelWatch::new(&ch).await;
    within(ch.basic_reject(42, BasicRejectOptions::default()))
        .await
        .expect("reject is asynchronous");
    watch.closed_with(406).await;
    assert!(!ch.status().connected(), "the channel is closed");
    assert_connection_usable(&conn).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recover_with_requeue_redelivers_unacked() {
    let broker = Broker::shared();
    let (_conn, ch) = broker.channel().await;
    let q = declare_queue(&ch).await;
    let mut consumer = consume(&ch, &q, Default::default()).await;
    publish_all(&ch, &q, &numbered("u", 2)).await;
    let first = next_delivery(&mut consumer).await;
    let second = next_delivery(&mut consumer).await;
    assert!(!first.redelivered && !second.redelivered);
    second.ack(BasicAckOptions::default()).await.expect("ack");
    within(ch.basic_recover(BasicRecoverOptions { requeue: true }))
        .await
        .expect("recover");
    let again = next_delivery(&mut consumer).await;
    assert_eq!(again.data, b"u-0");
    assert!(again.redelivered);
    again.ack(BasicAckOptions::default()).await.expect("ack");
    assert_no_delivery(&mut consumer).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_cancel_ends_the_consumer() {
    let broker = Broker::shared();
    let (_conn, ch) = broker.channel().await;
    let q = declare_queue(&ch).await;
    let mut consumer = consume(&ch, &q, Default::default()).await;
    publish(&ch, "", &q, b"before").await;
    let d = next_delivery(&mut consumer).await;
    d.ack(BasicAckOptions::default()).await.expect("ack");
    within(ch.basic_cancel(consumer.tag(), BasicCancelOptions::default()))
        .await
        .expect("cancel");
    assert!(
        within(futures_lite::StreamExt::next(&mut consumer))
            .await
            .is_none(),
        "a cancelled consumer's stream ends"
    );
    publish(&ch, "", &q, b"after").await;
    assert_eq!(
        message_count(&ch, &q).await,
        1,
        "nothing consumes after cancel"
    );
    assert_eq!(passive_declare(&ch, &q).await.unwrap().consumer_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_queue_cancels_its_consumers() {
    let broker = Broker::shared();
    let (_conn, ch) = broker.channel().await;
    let q = declare_queue(&ch).await;
    let mut consumer = consume(&ch, &q, Default::default()).await;
    let (_conn2, admin) = broker.channel().await;
    within(admin.queue_delete(q.as_str().into(), Default::default()))
        .await
        .expect("delete");
    assert!(
        within(futures_lite::StreamExt::next(&mut consumer))
            .await
            .is_none(),
        "basic.cancel from the server ends the consumer stream"
    );
    assert!(ch.status().connected(), "the channel survives the cancel");
    round_trip(&ch).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacked_messages_return_when_the_channel_closes() {
    let broker = Broker::shared();
    let (conn, ch) = broker.channel().await;
    let q = declare_queue(&ch).await;
    publish_all(&ch, &q, &numbered("c", 3)).await;
    let consumer_ch = within(conn.create_channel()).await.expect("channel");
    let mut consumer = consume(&consumer_ch, &q, Default::default()).await;
    let got = next_bodies(&mut consumer, 3).await;
    assert_eq!(got, numbered("c", 3));
    assert_eq!(message_count(&ch, &q).await, 0);
    within(consumer_ch.close(200, "bye".into()))
        .await
        .expect("close");
    let expected: Vec<(Vec<u8>, bool)> = numbered("c", 3).into_iter().map(|b| (b, true)).collect();
    assert_queue_holds(&broker, &q, &expected).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacked_messages_return_when_the_connection_closes() {
    let broker = Broker::shared();
    let (_conn, ch) = broker.channel().await;
    let q = declare_queue(&ch).await;
    publish_all(&ch, &q, &numbered("k", 2)).await;
    let (consumer_conn, consumer_ch) = broker.channel().await;
    let mut consumer = consume(&consumer_ch, &q, Default::default()).await;
    assert_eq!(next_bodies(&mut consumer, 2).await, numbered("k", 2));
    within(consumer_conn.close(200, "bye".into()))
        .await
        .expect("close");
    let expected: Vec<(Vec<u8>, bool)> = numbered("k", 2).into_iter().map(|b| (b, true)).collect();
    assert_queue_holds(&broker, &q, &expected).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_messages_round_trip_byte_exact() {
    let broker = Broker::shared();
    let (_conn, ch) = broker.channel().await;
    let q = declare_queue(&ch).await;
    let mut consumer = consume(&ch, &q, Default::default()).await;
    for size in [0usize, 1, 131_072 - 8, 131_072, 1 << 20, 10 << 20] {
        let body = pattern(size);
        publish(&ch, "", &q, &body).await;
        let d = within_for(std::time::Duration::from_secs(60), async {
            next_delivery(&mut consumer).await
        })
        .await;
        assert_eq!(d.data.len(), size);
        assert!(
            d.data == body,
            "{size}-byte body differs after the round trip"
        );
        d.ack(BasicAckOptions::default()).await.expect("ack");
    }
    // And through basic.get.
    within(ch.basic_cancel(consumer.tag(), Default::default()))
        .await
        .expect("cancel");
    let body = pattern(1 << 20);
    publish(&ch, "", &q, &body).await;
    assert!(get_body(&ch, &q).await.expect("get") == body);
}

fn every_property() -> BasicProperties {
    let mut nested = FieldTable::default();
    nested.insert("inner".into(), AMQPValue::LongString("deep".into()));
    nested.insert("n".into(), AMQPValue::LongInt(-7));
    let mut headers = FieldTable::default();
    headers.insert("string".into(), AMQPValue::LongString("héllo wörld".into()));
    headers.insert("empty".into(), AMQPValue::LongString("".into()));
    headers.insert("bool-true".into(), AMQPValue::Boolean(true));
    headers.insert("bool-false".into(), AMQPValue::Boolean(false));
    headers.insert("i8".into(), AMQPValue::ShortShortInt(-8));
    headers.insert("i16".into(), AMQPValue::ShortInt(-1600));
    headers.insert("i32".into(), AMQPValue::LongInt(-320_000));
    headers.insert("i64".into(), AMQPValue::LongLongInt(-64_000_000_000));
    headers.insert("f32".into(), AMQPValue::Float(1.5));
    headers.insert("f64".into(), AMQPValue::Double(-2.25e100));
    headers.insert(
        "decimal".into(),
        AMQPValue::DecimalValue(DecimalValue {
            scale: 2,
            value: 12345,
        }),
    );
    headers.insert("timestamp".into(), AMQPValue::Timestamp(1_700_000_000));
    headers.insert("table".into(), AMQPValue::FieldTable(nested));
    headers.insert(
        "array".into(),
        AMQPValue::FieldArray(FieldArray::from(vec![
            AMQPValue::LongInt(1),
            AMQPValue::LongString("two".into()),
            AMQPValue::Boolean(true),
            AMQPValue::FieldArray(FieldArray::from(vec![])),
        ])),
    );
    headers.insert(
        "bytes".into(),
        AMQPValue::ByteArray(ByteArray::from(vec![0u8, 1, 2, 255])),
    );
    headers.insert("void".into(), AMQPValue::Void);
    BasicProperties::default()
        .with_content_type("application/json".into())
        .with_content_encoding("gzip".into())
        .with_headers(headers)
        .with_delivery_mode(2)
        .with_priority(5)
        .with_correlation_id("corr-1".into())
        .with_reply_to("reply-here".into())
        .with_expiration("3600000".into())
        .with_message_id("msg-1".into())
        .with_timestamp(1_700_000_123)
        .with_type("order.created".into())
        .with_user_id("guest".into())
        .with_app_id("ferrymq-it".into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn properties_and_headers_round_trip_exactly() {
    let broker = Broker::shared();
    let (_conn, ch) = broker.channel().await;
    let q = declare_queue(&ch).await;
    let props = every_property();
    publish_with(&ch, "", &q, b"{\"id\":1}", props.clone()).await;
    let got = get(&ch, &q).await.expect("get");
    assert_eq!(got.delivery.properties, props);
    assert_eq!(got.delivery.data, b"{\"id\":1}");

    let mut consumer = consume(&ch, &q, Default::default()).await;
    publish_with(&ch, "", &q, b"again", props.clone()).await;
    let d = next_delivery(&mut consumer).await;
    assert_eq!(d.properties, props);

    // No properties at all stays no properties.
    publish(&ch, "", &q, b"bare").await;
    let d = next_delivery(&mut consumer).await;
    assert_eq!(d.properties, BasicProperties::default());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_id_must_match_the_connection_user() {
    let broker = Broker::shared();
    let (conn, ch) = broker.channel().await;
    let q = declare_queue(&ch).await;
    let watch = ChannelWatch::new(&ch).await;
    within(ch.basic_publish(
        "".into(),
        q.as_str().into(),
        Default::default(),
        b"spoofed",
        BasicProperties::default().with_user_id("someone-else".into()),
    ))
    .await
    .expect("publish is asynchronous");
    watch.closed_with(406).await;
    assert!(!ch.status().connected(), "the channel is closed");
    assert_connection_usable(&conn).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_reply_to_routes_replies_to_the_requester() {
    let broker = Broker::shared();
    let (_conn, requester) = broker.channel().await;
    let (_conn2, responder) = broker.channel().await;
    let work = declare_queue(&responder).await;
    let mut replies = consume(
        &requester,
        "amq.rabbitmq.reply-to",
        BasicConsumeOptions {
            no_ack: true,
            ..Default::default()
        },
    )
    .await;
    publish_with(
        &requester,
        "",
        &work,
        b"ping",
        BasicProperties::default()
            .with_reply_to("amq.rabbitmq.reply-to".into())
            .with_correlation_id("c-42".into()),
    )
    .await;
    let request = get(&responder, &work).await.expect("request");
    let reply_to = request
        .delivery
        .properties
        .reply_to()
        .clone()
        .expect("reply_to")
        .to_string();
    assert!(
        reply_to.starts_with("amq.rabbitmq.reply-to."),
        "reply_to rewritten to a routable name, got {reply_to:?}"
    );
    publish_with(
        &responder,
        "",
        &reply_to,
        b"pong",
        BasicProperties::default().with_correlation_id("c-42".into()),
    )
    .await;
    let reply = next_delivery(&mut replies).await;
    assert_eq!(reply.data, b"pong");
    assert_eq!(
        reply
            .properties
            .correlation_id()
            .as_ref()
            .map(|s| s.as_str()),
        Some("c-42")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn immediate_publish_is_540_not_implemented() {
    let broker = Broker::shared();
    let (conn, ch) = broker.channel().await;
    let q = declare_queue(&ch).await;
    let watch = ChannelWatch::new(&ch).await;
    within(ch.basic_publish(
        "".into(),
        q.as_str().into(),
        BasicPublishOptions {
            immediate: true,
            ..Default::default()
        },
        b"now",
        BasicProperties::default(),
    ))
    .await
    .expect("publish is asynchronous");
    watch.closed_with(540).await;
    assert!(!conn.status().connected(), "540 closes the connection");
}
