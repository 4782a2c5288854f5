//! Reliable-messaging features: dead-lettering with `x-death`, TTL, max-length and
//! overflow, priority queues, quorum delivery limits, `x-expires`, delayed retries. The
//! RabbitMQ-defined behaviours here also pass against RabbitMQ 3.10
//! (`FERRYMQ_TEST_AMQP_URL`); tests of FerryMQ's own extensions say so.

use lapin::message::Delivery;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, ExchangeKind};

use crate::confirm::{confirm_channel, publish_confirmed};
use crate::harness::*;
use crate::queue::max_length;

fn table(entries: &[(&str, AMQPValue)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in entries {
        t.insert((*k).into(), v.clone());
    }
    t
}

fn long_str(s: &str) -> AMQPValue {
    AMQPValue::LongString(s.into())
}

fn header<'a>(d: &'a Delivery, key: &str) -> Option<&'a AMQPValue> {
    d.properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get(key))
}

fn as_text(v: Option<&AMQPValue>) -> Option<String> {
    match v? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_string()),
        _ => None,
    }
}

fn as_int(v: Option<&AMQPValue>) -> Option<i64> {
    match v? {
        AMQPValue::LongLongInt(n) => Some(*n),
        AMQPValue::LongInt(n) => Some(*n as i64),
        AMQPValue::LongUInt(n) => Some(*n as i64),
        AMQPValue::ShortInt(n) => Some(*n as i64),
        AMQPValue::ShortUInt(n) => Some(*n as i64),
        AMQPValue::ShortShortInt(n) => Some(*n as i64),
        AMQPValue::ShortShortUInt(n) => Some(*n as i64),
        _ => None,
    }
}

/// Checks the `x-death` entry and `x-first-death-*` headers of a dead-lettered delivery.
fn assert_death(d: &Delivery, reason: &str, queue: &str, exchange: &str, key: &str) {
    let Some(AMQPValue::FieldArray(deaths)) = header(d, "x-death") else {
        panic!("no x-death array in {:?}", d.properties.headers());
    };
    let deaths = deaths.as_slice();
    assert_eq!(deaths.len(), 1, "{deaths:?}");
    let AMQPValue::FieldTable(death) = &deaths[0] else {
        panic!("x-death entry is not a table: {deaths:?}");
    };
    let get = |k: &str| death.inner().get(k);
    assert_eq!(as_text(get("reason")).as_deref(), Some(reason), "{death:?}");
    assert_eq!(as_text(get("queue")).as_deref(), Some(queue), "{death:?}");
    assert_eq!(
        as_text(get("exchange")).as_deref(),
        Some(exchange),
        "{death:?}"
    );
    assert_eq!(as_int(get("count")), Some(1), "{death:?}");
    assert!(
        matches!(get("time"), Some(AMQPValue::Timestamp(_))),
        "x-death time: {death:?}"
    );
    match get("routing-keys") {
        Some(AMQPValue::FieldArray(keys)) => {
            assert_eq!(keys.as_slice(), &[long_str(key)], "{death:?}")
        }
        other => panic!("x-death routing-keys: {other:?}"),
    }
    assert_eq!(
        as_text(header(d, "x-first-death-reason")).as_deref(),
        Some(reason)
    );
    assert_eq!(
        as_text(header(d, "x-first-death-queue")).as_deref(),
        Some(queue)
    );
    assert_eq!(
        as_text(header(d, "x-first-death-exchange")).as_deref(),
        Some(exchange)
    );
}

/// `basic.get` until a message is there (it comes back asynchronously), within the
/// suite's bound.
async fn get_eventually(ch: &Channel, q: &str) -> lapin::message::BasicGetMessage {
    within(async {
        loop {
            if let Some(m) = get(ch, q).await {
                return m;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await
}

/// A dead-letter exchange (fanout) with a queue bound to it; returns (exchange, queue).
async fn dead_letter_target(ch: &Channel) -> (String, String) {
    let dlx = declare_exchange(ch, ExchangeKind::Fanout).await;
    let dlq = declare_queue(ch).await;
    within(ch.queue_bind(
        dlq.as_str().into(),
        dlx.as_str().into(),
        "".into(),
        Default::default(),
        FieldTable::default(),
    ))
    .await
    .expect("bind dead-letter queue");
    (dlx, dlq)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_message_is_dead_lettered_with_x_death() {
    let broker = Broker::shared();
    let (_conn, ch) = broker.channel().await;
    let (dlx, dlq) = dead_letter_target(&ch).await;
    let q = declare_queue_with(
        &ch,
        Default::default(),
        table(&[("x-dead-letter-exchange", long_str(&dlx))]),
    )
    .await;
    let mut dead = consume(&ch, &dlq, Default::default()).await;
    publish_with(
        &ch,
        "",
        &q,
        b"bad order",
        BasicProperties::default().with_message_id("order-7".into()),
    )
    .await;
    let m = get(&ch, &q).await.expect("message");
    m.delivery
        .reject(BasicRejectOptions { requeue: false })
        .await
        .expect("reject");
    let d = next_delivery(&mut dead).await;
    assert_eq!(d.data, b"bad order");
    assert_eq!(d.exchange.as_str(), dlx);
    assert_eq!(
        d.routing_key.as_str(),
        q,
        "the original routing key is kept"
    );
    assert_eq!(
        d.properties.message_id().as_ref().map(|s| s.as_str()),
        Some("order-7")
    );
    assert_death(&d, "rejected", &q, "", &q);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letter_routing_key_overrides_the_key() {
    let broker = Broker::shared();
    let (_conn, ch) = broker.channel().await;
    let dlx = declare_exchange(&ch, ExchangeKind::Direct).await;
    let dlq = declare_queue(&ch).await;
    within(ch.queue_bind(
        dlq.as_str().into(),
        dlx.as_str().into(),
        "parking".into(),
        Default::default(),
        FieldTable::default(),
    ))
    .await
    .expect("bind");
    let q = declare_queue_with(
        &ch,
        Default::default(),
        table(&[
            ("x-dead-letter-exchange", long_str(&dlx)),
            ("x-dead-letter-routing-key", long_str("parking")),
        ]),
    )
    .await;
    let mut dead = consume(&ch, &dlq, Default::default()).await;
    publish(&ch, "", &q, b"park me").await;
    let m = get(&ch, &q).await.expect("message");
    within(ch.basic_nack(
        m.delivery.delivery_tag,
        lapin::options::BasicNackOptions {
            multiple: false,
            requeue: false,
        },
    ))
    .await
    .expect("nack");
    let d = next_delivery(&mut dead).await;
    assert_eq!(d.routing_key.as_str(), "parking");
    assert_death(&d, "rejected", &q, "", &q);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_ttl_expires_into_the_dead_letter_exchange() {
    let broker = Broker::shared();
    let (_conn, ch) = broker.channel().await;
    let (dlx, dlq) = dead_letter_target(&ch).await;
    let q = declare_queue_with(
        &ch,
        Default::default(),
        table(&[
            ("x-dead-letter-exchange", long_str(&dlx)),
            ("x-message-ttl", AMQPValue::LongInt(20)),
        ]),
    )
    .await;
    let mut dead = consume(&ch, &dlq, Default::default()).await;
    publish(&ch, "", &q, b"stale").await;
    let d = next_delivery(&mut dead).await;
    assert_eq!(d.data, b"stale");
    assert_death(&d, "expired", &q, "", &q);
    assert_eq!(get_body(&ch, &q).await, None, "an expired message is gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_expiration_expires_into_the_dead_letter_exchange() {
    let broker = Broker::shared();
    let (_conn, ch) = broker.channel().await;
    let (dlx, dlq) = dead_letter_target(&ch).await;
    let q = declare_queue_with(
        &ch,
        Default::default(),
        table(&[("x-dead-letter-exchange", long_str(&dlx))]),
    )
    .await;
    let mut dead = consume(&ch, &dlq, Default::default()).await;
    publish_with(
        &ch,
        "",
        &q,
        b"short-lived",
        BasicProperties::default().with_expiration("20".into()),
    )
    .await;
    publish(&ch, "", &q, b"long-lived").await;
    let d = next_delivery(&mut dead).await;
    assert_eq!(d.data, b"short-lived");
    assert_death(&d, "expired", &q, "", &q);
    assert_eq!(
        d.properties.expiration(),
        &None,
        "the expiration property is removed when dead-lettered for expiry"
    );
    assert_eq!(get_body(&ch, &q).await, Some(b"long-lived".to_vec()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_length_overflow_dead_letters_the_head() {
    let broker = Broker::shared();
    let (_conn, ch) = broker.channel().await;
    let (dlx, dlq) = dead_letter_target(&ch).await;
    let q = declare_queue_with(
        &ch,
        Default::default(),
        table(&[
            ("x-dead-letter-exchange", long_str(&dlx)),
            ("x-max-length", AMQPValue::LongInt(1)),
        ]),
    )
    .await;
    let mut dead = consume(&ch, &dlq, Default::default()).await;
    publish(&ch, "", &q, b"first").await;
    publish(&ch, "", &q, b"second").await;
    let d = next_delivery(&mut dead).await;
    assert_eq!(d.data, b"first");
    assert_death(&d, "maxlen", &q, "", &q);
    assert_eq!(get_body(&ch, &q).await, Some(b"second".to_vec()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn priority_queue_delivers_highest_priority_first() {
    let broker = Broker::shared();
    let (_conn, ch) = broker.channel().await;
    let q = declare_queue_with(
        &ch,
        Default::default(),
        table(&[("x-max-priority", AMQPValue::LongInt(10))]),
    )
    .await;
    for (body, priority) in [
        ("low", 1u8),
        ("high", 9),
        ("mid", 5),
        ("none", 0),
        ("high2", 9),
    ] {
        publish_with(
            &ch,
            "",
            &q,
            body.as_bytes(),
            BasicProperties::default().with_priority(priority),
        )
        .await;
    }
    let mut order = Vec::new();
    while let Some(b) = get_body(&ch, &q).await {
        order.push(String::from_utf8(b).unwrap());
    }
    assert_eq!(order, vec!["high", "high2", "mid", "low", "none"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_reject_publish_queue_nacks() {
    let broker = Broker::shared();
    let (_conn, ch) = confirm_channel(&broker).await;
    let mut args = FieldTable::default();
    args.insert("x-max-length".into(), AMQPValue::LongInt(1));
    args.insert(
        "x-overflow".into(),
        AMQPValue::LongString("reject-publish".into()),
    );
    let q = declare_queue_with(&ch, Default::default(), args).await;
    let first = publish_confirmed(&ch, "", &q, false, b"fits", Default::default()).await;
    assert!(first.is_ack(), "{first:?}");
    let second = publish_confirmed(&ch, "", &q, false, b"overflows", Default::default()).await;
    assert!(second.is_nack(), "{second:?}");
    assert_eq!(get_body(&ch, &q).await.as_deref(), Some(&b"fits"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_length_drops_from_the_head() {
    let broker = Broker::shared();
    let (_conn, ch) = broker.channel().await;
    let q = declare_queue_with(&ch, Default::default(), max_length(2)).await;
    for body in numbered("m", 4) {
        publish(&ch, "", &q, &body).await;
    }
    assert_eq!(message_count(&ch, &q).await, 2);
    assert_eq!(get_body(&ch, &q).await, Some(b"m-2".to_vec()));
    assert_eq!(get_body(&ch, &q).await, Some(b"m-3".to_vec()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reject_publish_dlx_nacks_and_dead_letters() {
    let broker = Broker::shared();
    let (_conn, ch) = confirm_channel(&broker).await;
    let (dlx, dlq) = dead_letter_target(&ch).await;
    let q = declare_queue_with(
        &ch,
        Default::default(),
        table(&[
            ("x-max-length", AMQPValue::LongInt(1)),
            ("x-overflow", long_str("reject-publish-dlx")),
            ("x-dead-letter-exchange", long_str(&dlx)),
        ]),
    )
    .await;
    let mut dead = consume(&ch, &dlq, Default::default()).await;
    let first = publish_confirmed(&ch, "", &q, false, b"fits", Default::default()).await;
    assert!(first.is_ack(), "{first:?}");
    let second = publish_confirmed(&ch, "", &q, false, b"refused", Default::default()).await;
    assert!(second.is_nack(), "{second:?}");
    let d = next_delivery(&mut dead).await;
    assert_eq!(d.data, b"refused");
    assert_death(&d, "maxlen", &q, "", &q);
    assert_eq!(message_count(&ch, &q).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_queue_type_is_refused() {
    let broker = Broker::shared();
    let (_conn, ch) = broker.channel().await;
    let watch = ChannelWatch::new(&ch).await;
    let r = ch
        .queue_declare(
            unique("typed").as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            table(&[("x-queue-type", long_str("no-such-type"))]),
        )
        .await;
    assert_code(r, 406);
    watch.closed_with(406).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_queues_must_be_durable() {
    let broker = Broker::shared();
    let (_conn, ch) = broker.channel().await;
    let r = ch
        .queue_declare(
            unique("qq").as_str().into(),
            QueueDeclareOptions::default(),
            table(&[("x-queue-type", long_str("quorum"))]),
        )
        .await;
    assert_code(r, 406);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_queue_counts_deliveries_and_dead_letters_past_the_limit() {
    let broker = Broker::shared();
    let (_conn, ch) = broker.channel().await;
    let (dlx, dlq) = dead_letter_target(&ch).await;
    let q = unique("qq");
    within(ch.queue_declare(
        q.as_str().into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        table(&[
            ("x-queue-type", long_str("quorum")),
            ("x-delivery-limit", AMQPValue::LongInt(2)),
            ("x-dead-letter-exchange", long_str(&dlx)),
        ]),
    ))
    .await
    .expect("declare quorum queue");
    let mut dead = consume(&ch, &dlq, Default::default()).await;
    publish(&ch, "", &q, b"poison").await;
    let mut counts = Vec::new();
    for _ in 0..3 {
        let m = get_eventually(&ch, &q).await;
        counts.push(as_int(header(&m.delivery, "x-delivery-count")));
        m.delivery
            .nack(BasicNackOptions {
                requeue: true,
                ..Default::default()
            })
            .await
            .expect("nack");
    }
    // First delivery has no count; redeliveries say how often it came back.
    assert_eq!(counts, vec![None, Some(1), Some(2)]);
    let d = next_delivery(&mut dead).await;
    assert_eq!(d.data, b"poison");
    assert_death(&d, "delivery_limit", &q, "", &q);
    assert_eq!(message_count(&ch, &q).await, 0);
    within(ch.queue_delete(q.as_str().into(), Default::default()))
        .await
        .expect("delete");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unused_queue_expires() {
    let broker = Broker::shared();
    let (_conn, ch) = broker.channel().await;
    let q = declare_queue_with(
        &ch,
        Default::default(),
        table(&[("x-expires", AMQPValue::LongInt(300))]),
    )
    .await;
    publish(&ch, "", &q, b"kept while the queue lives").await;
    // Redeclaring renews the lease.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    passive_declare(&ch, &q).await.expect("still there");
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    passive_declare(&ch, &q).await.expect("lease renewed");
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    let (_c2, ch2) = broker.channel().await;
    assert_code(passive_declare(&ch2, &q).await, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letter_cycle_without_rejection_is_dropped() {
    let broker = Broker::shared();
    let (_conn, ch) = broker.channel().await;
    let q = unique("cycle");
    // Expired messages go back into the same queue through the default exchange.
    declare_named(
        &ch,
        &q,
        table(&[
            ("x-message-ttl", AMQPValue::LongInt(30)),
            ("x-dead-letter-exchange", long_str("")),
        ]),
    )
    .await;
    publish(&ch, "", &q, b"round and round").await;
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    assert_eq!(message_count(&ch, &q).await, 0, "the cycle is broken");
}

async fn declare_named(ch: &Channel, name: &str, args: FieldTable) {
    within(ch.queue_declare(name.into(), QueueDeclareOptions::default(), args))
        .await
        .expect("declare");
}

/// FerryMQ extension: RabbitMQ only expires messages at the head of a queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_message_behind_the_head_leaves_on_time() {
    let broker = Broker::shared();
    if skip_if_external("expired_message_behind_the_head_leaves_on_time") {
        return;
    }
    let (_conn, ch) = broker.channel().await;
    let (dlx, dlq) = dead_letter_target(&ch).await;
    let q = declare_queue_with(
        &ch,
        Default::default(),
        table(&[("x-dead-letter-exchange", long_str(&dlx))]),
    )
    .await;
    let mut dead = consume(&ch, &dlq, Default::default()).await;
    publish(&ch, "", &q, b"head, no ttl").await;
    let sent = std::time::Instant::now();
    publish_with(
        &ch,
        "",
        &q,
        b"behind the head",
        BasicProperties::default().with_expiration("100".into()),
    )
    .await;
    let d = next_delivery(&mut dead).await;
    let late = sent.elapsed();
    assert_eq!(d.data, b"behind the head");
    assert!(late >= std::time::Duration::from_millis(100), "{late:?}");
    assert_eq!(get_body(&ch, &q).await, Some(b"head, no ttl".to_vec()));
}

/// FerryMQ extension (`x-delayed-retry-*`, RabbitMQ 4.3's names): a nacked message comes
/// back after a growing delay instead of at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_retry_holds_back_requeued_messages() {
    let broker = Broker::shared();
    if skip_if_external("delayed_retry_holds_back_requeued_messages") {
        return;
    }
    let (_conn, ch) = broker.channel().await;
    let q = declare_queue_with(
        &ch,
        Default::default(),
        table(&[
            ("x-delayed-retry-min", AMQPValue::LongInt(300)),
            ("x-delayed-retry-type", long_str("failed")),
        ]),
    )
    .await;
    publish(&ch, "", &q, b"flaky").await;
    let m = get(&ch, &q).await.expect("message");
    let nacked = std::time::Instant::now();
    m.delivery
        .nack(BasicNackOptions {
            requeue: true,
            ..Default::default()
        })
        .await
        .expect("nack");
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert_eq!(
        get(&ch, &q).await.map(|m| m.delivery.data),
        None,
        "held back"
    );
    let m = get_eventually(&ch, &q).await;
    assert!(nacked.elapsed() >= std::time::Duration::from_millis(300));
    assert!(m.delivery.redelivered);
    assert_eq!(m.delivery.data, b"flaky");
}

/// FerryMQ's acknowledgement timeout cancels the consumer and keeps its channel open
/// (RabbitMQ closes the channel with 406).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_timeout_cancels_the_consumer_and_keeps_the_channel() {
    let broker = Broker::shared();
    if skip_if_external("consumer_timeout_cancels_the_consumer_and_keeps_the_channel") {
        return;
    }
    let (_conn, ch) = broker.channel().await;
    let q = declare_queue_with(
        &ch,
        Default::default(),
        table(&[("x-consumer-timeout", AMQPValue::LongInt(300))]),
    )
    .await;
    publish(&ch, "", &q, b"held too long").await;
    let mut slow = consume(&ch, &q, Default::default()).await;
    let first = next_delivery(&mut slow).await;
    assert!(!first.redelivered);
    // The broker cancels the consumer: lapin ends its stream.
    let end = within_for(
        std::time::Duration::from_secs(5),
        futures_lite::StreamExt::next(&mut slow),
    )
    .await;
    assert!(end.is_none(), "consumer cancelled by the broker: {end:?}");
    // The message is back, redelivered; the channel still works.
    let again = get_eventually(&ch, &q).await;
    assert!(again.delivery.redelivered);
    assert_eq!(again.delivery.data, b"held too long");
    // A late ack of the first delivery is stale: it neither closes the channel nor acks
    // the redelivered copy.
    first
        .ack(BasicAckOptions::default())
        .await
        .expect("late ack");
    round_trip(&ch).await;
    again
        .delivery
        .nack(BasicNackOptions {
            requeue: true,
            ..Default::default()
        })
        .await
        .expect("nack");
    let third = get_eventually(&ch, &q).await;
    assert_eq!(third.delivery.data, b"held too long");
    third
        .delivery
        .ack(BasicAckOptions::default())
        .await
        .expect("ack");
    round_trip(&ch).await;
    assert_eq!(message_count(&ch, &q).await, 0);
}

/// Queue-level de-duplication (the rabbitmq-message-deduplication plugin's convention; the
/// plugin is not in the reference RabbitMQ, so this runs against FerryMQ only).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deduplicating_queue_drops_copies_of_messages_it_holds() {
    let broker = Broker::shared();
    if skip_if_external("deduplicating_queue_drops_copies_of_messages_it_holds") {
        return;
    }
    let (_conn, ch) = confirm_channel(&broker).await;
    let q = declare_queue_with(
        &ch,
        Default::default(),
        table(&[("x-message-deduplication", AMQPValue::Boolean(true))]),
    )
    .await;
    let with_key = |k: &str| {
        BasicProperties::default().with_headers(table(&[("x-deduplication-header", long_str(k))]))
    };
    for (body, key) in [("a1", "a"), ("b1", "b"), ("a2", "a"), ("b2", "b")] {
        let c = publish_confirmed(&ch, "", &q, false, body.as_bytes(), with_key(key)).await;
        assert!(c.is_ack(), "duplicates are confirmed too: {c:?}");
    }
    // Messages without the header are never duplicates.
    publish(&ch, "", &q, b"plain").await;
    publish(&ch, "", &q, b"plain").await;
    assert_eq!(message_count(&ch, &q).await, 4);
    // Once "a1" is consumed (acked), its key is free again.
    let m = get(&ch, &q).await.expect("a1");
    assert_eq!(m.delivery.data, b"a1");
    let c = publish_confirmed(&ch, "", &q, false, b"a3", with_key("a")).await;
    assert!(c.is_ack());
    assert_eq!(
        message_count(&ch, &q).await,
        3,
        "a1 is unacked: a3 is still a copy"
    );
    m.delivery
        .ack(BasicAckOptions::default())
        .await
        .expect("ack");
    round_trip(&ch).await;
    publish_confirmed(&ch, "", &q, false, b"a4", with_key("a")).await;
    let mut bodies = Vec::new();
    while let Some(b) = get_body(&ch, &q).await {
        bodies.push(String::from_utf8(b).unwrap());
    }
    assert_eq!(bodies, vec!["b1", "plain", "plain", "a4"]);
}

/// Policies from the command line: a queue declared without arguments gets the matching
/// policy's TTL and dead-letter exchange; an operator policy caps a declared max-length.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_apply_arguments_to_matching_queues() {
    if skip_if_external("policies_apply_arguments_to_matching_queues") {
        return;
    }
    let broker = Broker::private(&[
        "--policy",
        r#"short-lived ^pol\.ttl\. {"message-ttl": 50, "dead-letter-exchange": "pol.dlx"}"#,
        "--operator-policy",
        r#"cap ^pol\. {"max-length": 2}"#,
    ]);
    let (_conn, ch) = broker.channel().await;
    within(ch.exchange_declare(
        "pol.dlx".into(),
        ExchangeKind::Fanout,
        Default::default(),
        FieldTable::default(),
    ))
    .await
    .expect("dlx");
    let dlq = declare_queue(&ch).await;
    within(ch.queue_bind(
        dlq.as_str().into(),
        "pol.dlx".into(),
        "".into(),
        Default::default(),
        FieldTable::default(),
    ))
    .await
    .expect("bind");
    let mut dead = consume(&ch, &dlq, Default::default()).await;
    declare_named(&ch, "pol.ttl.a", FieldTable::default()).await;
    publish(&ch, "", "pol.ttl.a", b"expires by policy").await;
    let d = next_delivery(&mut dead).await;
    assert_death(&d, "expired", "pol.ttl.a", "", "pol.ttl.a");
    // Declared x-max-length 10, capped to 2 by the operator policy (drop-head).
    declare_named(
        &ch,
        "pol.capped",
        table(&[("x-max-length", AMQPValue::LongInt(10))]),
    )
    .await;
    for body in numbered("m", 5) {
        publish(&ch, "", "pol.capped", &body).await;
    }
    assert_eq!(message_count(&ch, "pol.capped").await, 2);
    // Outside the patterns nothing changes.
    declare_named(&ch, "unrelated", FieldTable::default()).await;
    for body in numbered("m", 5) {
        publish(&ch, "", "unrelated", &body).await;
    }
    assert_eq!(message_count(&ch, "unrelated").await, 5);
}
