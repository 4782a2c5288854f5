//! The exchange class: declare (types, flags, passive, equivalence, reserved names), delete,
//! exchange-to-exchange bind/unbind, the predeclared exchanges and routing per type.

use lapin::options::{
    ExchangeBindOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, ExchangeUnbindOptions,
    QueueBindOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, ExchangeKind};

use crate::harness::*;

async fn declare(
    ch: &Channel,
    name: &str,
    kind: ExchangeKind,
    options: ExchangeDeclareOptions,
) -> lapin::Result<()> {
    within(ch.exchange_declare(name.into(), kind, options, FieldTable::default())).await
}

fn passive() -> ExchangeDeclareOptions {
    ExchangeDeclareOptions {
        passive: true,
        ..Default::default()
    }
}

async fn bind(ch: &Channel, queue: &str, exchange: &str, key: &str) {
    within(ch.queue_bind(
        queue.into(),
        exchange.into(),
        key.into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    ))
    .await
    .expect("queue.bind");
}

/// Publishes one message per routing key and returns, per queue, the bodies it received.
async fn route(ch: &Channel, exchange: &str, keys: &[&str], queues: &[&str]) -> Vec<Vec<String>> {
    for key in keys {
        publish(ch, exchange, key, key.as_bytes()).await;
    }
    let mut out = Vec::new();
    for q in queues {
        let mut got = Vec::new();
        while let Some(body) = get_body(ch, q).await {
            got.push(String::from_utf8(body).expect("utf8"));
        }
        out.push(got);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declare_every_type_and_redeclare_identically() {
    let broker = Broker::shared();
    let (_conn, ch) = broker.channel().await;
    for kind in [
        ExchangeKind::Direct,
        ExchangeKind::Fanout,
        ExchangeKind::Topic,
        ExchangeKind::Headers,
    ] {
        let name = unique("x");
        declare(&ch, &name, kind.clone(), Default::default())
            .await
            .unwrap_or_else(|e| panic!("declare {kind:?}: {e}"));
        declare(&ch, &name, kind.clone(), Default::default())
            .await
            .expect("identical redeclare is ok");
        declare(&ch, &name, kind.clone(), passive())
            .await
            .expect("passive declare of an existing exchange");
        within(ch.exchange_delete(name.as_str().into(), Default::default()))
            .await
            .expect("exchange.delete");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declare_with_flags() {
    let broker = Broker::shared();
    let (_conn, ch) = broker.channel().await;
    for options in [
        ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        },
        ExchangeDeclareOptions {
            auto_delete: true,
            ..Default::default()
        },
        ExchangeDeclareOptions {
            internal: true,
            ..Default::default()
        },
    ] {
        let name = unique("x");
        declare(&ch, &name, ExchangeKind::Direct, options)
            .await
            .unwrap_or_else(|e| panic!("declare {options:?}: {e}"));
        declare(&ch, &name, ExchangeKind::Direct, options)
            .await
            .expect("identical redeclare");
        within(ch.exchange_delete(name.as_str().into(), Default::default()))
            .await
            .expect("delete");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passive_declare_of_missing_exchange_is_404() {
    let broker = Broker::shared();
    let (conn, ch) = broker.channel().await;
    let result = declare(&ch, &unique("missing"), ExchangeKind::Direct, passive()).await;
    assert_code(result, 404);
    assert!(!ch.status().connected(), "404 closes the channel");
    assert_connection_usable(&conn).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redeclare_with_other_type_is_406() {
    let broker = Broker::shared();
    let (conn, ch) = broker.channel().await;
    let name = declare_exchange(&ch, ExchangeKind::Direct).await;
    let result = declare(&ch, &name, ExchangeKind::Fanout, Default::default()).await;
    assert_code(result, 406);
    assert_connection_usable(&conn).await;
    let ch = within(conn.create_channel()).await.expect("channel");
    declare(&ch, &name, ExchangeKind::Direct, Default::default())
        .await
        .expect("the original exchange is unchanged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redeclare_with_other_durability_is_406() {
    let broker = Broker::shared();
    let (conn, ch) = broker.channel().await;
    let name = declare_exchange(&ch, ExchangeKind::Topic).await;
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    let result = declare(&ch, &name, ExchangeKind::Topic, durable).await;
    assert_code(result, 406);
    assert_connection_usable(&conn).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declaring_amq_prefixed_names_is_403() {
    let broker = Broker::shared();
    let conn = broker.connect().await;
    for kind in [ExchangeKind::Direct, ExchangeKind::Fanout] {
        let ch = within(conn.create_channel()).await.expect("channel");
        let name = format!("amq.{}", unique("x"));
        let result = declare(&ch, &name, kind, Default::default()).await;
        assert_code(result, 403);
    }
    assert_connection_usable(&conn).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redeclaring_predeclared_exchanges_checks_equivalence() {
    // RabbitMQ checks an existing exchange for equivalence before the reserved prefix: an
    // identical redeclare of amq.direct (durable) is fine, a different one is 406.
    let broker = Broker::shared();
    let conn = broker.connect().await;
    let ch = within(conn.create_channel()).await.expect("channel");
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    declare(&ch, "amq.direct", ExchangeKind::Direct, durable)
        .await
        .expect("identical redeclare of amq.direct");
    let result = declare(&ch, "amq.direct", ExchangeKind::Direct, Default::default()).await;
    assert_code(result, 406);
    assert_connection_usable(&conn).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn predeclared_exchanges_exist() {
    let broker = Broker::shared();
    let (_conn, ch) = broker.channel().await;
    for (name, kind) in [
        ("amq.direct", ExchangeKind::Direct),
        ("amq.fanout", ExchangeKind::Fanout),
        ("amq.topic", ExchangeKind::Topic),
        ("amq.headers", ExchangeKind::Headers),
        ("amq.match", ExchangeKind::Headers),
    ] {
        declare(&ch, name, kind, passive())
            .await
            .unwrap_or_else(|e| panic!("{name} should exist: {e}"));
    }
    // The default exchange routes by queue name, and amq.direct works with a binding.
    let q = declare_queue(&ch).await;
    publish(&ch, "", &q, b"default").await;
    bind(&ch, &q, "amq.direct", &q).await;
    publish(&ch, "amq.direct", &q, b"amq.direct").await;
    assert_eq!(get_body(&ch, &q).await.as_deref(), Some(&b"default"[..]));
    assert_eq!(get_body(&ch, &q).await.as_deref(), Some(&b"amq.direct"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binding_to_or_from_the_default_exchange_is_403() {
    let broker = Broker::shared();
    let conn = broker.connect().await;
    let ch = within(conn.create_channel()).await.expect("channel");
    let q = declare_queue(&ch).await;
    let x = declare_exchange(&ch, ExchangeKind::Direct).await;

    let result = within(ch.queue_bind(
        q.as_str().into(),
        "".into(),
        "k".into(),
        Default::default(),
        FieldTable::default(),
    ))
    .await;
    assert_code(result, 403);

    let ch = within(conn.create_channel()).await.expect("channel");
    let result = within(ch.exchange_bind(
        x.as_str().into(),
        "".into(),
        "k".into(),
        Default::default(),
        FieldTable::default(),
    ))
    .await;
    assert_code(result, 403);

    let ch = within(conn.create_channel()).await.expect("channel");
    let result = within(ch.exchange_bind(
        "".into(),
        x.as_str().into(),
        "k".into(),
        Default::default(),
        FieldTable::default(),
    ))
    .await;
    assert_code(result, 403);
    assert_connection_usable(&conn).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_predeclared_exchanges_is_403() {
    let broker = Broker::shared();
    let conn = broker.connect().await;
    for name in ["amq.direct", ""] {
        let ch = within(conn.create_channel()).await.expect("channel");
        let result = within(ch.exchange_delete(name.into(), Default::default())).await;
        assert_code(result, 403);
    }
    assert_connection_usable(&conn).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_to_internal_exchange_is_403() {
    let broker = Broker::shared();
    let (conn, ch) = broker.channel().await;
    let name = unique("x");
    declare(
        &ch,
        &name,
        ExchangeKind::Fanout,
        ExchangeDeclareOptions {
            internal: true,
            ..Default::default()
        },
    )
    .await
    .expect("declare internal");
    let watch = ChannelWatch::new(&ch).await;
    within(ch.basic_publish(
        name.as_str().into(),
        "k".into(),
        Default::default(),
        b"nope",
        BasicProperties::default(),
    ))
    .await
    .expect("publish is asynchronous");
    watch.closed_with(403).await;
    assert!(!ch.status().connected(), "the channel is closed");
    assert_connection_usable(&conn).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_exchange_receives_through_exchange_binding() {
    let broker = Broker::shared();
    let (_conn, ch) = broker.channel().await;
    let front = declare_exchange(&ch, ExchangeKind::Direct).await;
    let inner = unique("x");
    declare(
        &ch,
        &inner,
        ExchangeKind::Fanout,
        ExchangeDeclareOptions {
            internal: true,
            ..Default::default()
        },
    )
    .await
    .expect("declare internal");
    within(ch.exchange_bind(
        inner.as_str().into(),
        front.as_str().into(),
        "k".into(),
        Default::default(),
        FieldTable::default(),
    ))
    .await
    .expect("exchange.bind");
    let q = declare_queue(&ch).await;
    bind(&ch, &q, &inner, "").await;
    publish(&ch, &front, "k", b"via-internal").await;
    assert_eq!(
        get_body(&ch, &q).await.as_deref(),
        Some(&b"via-internal"[..])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_if_unused_is_406_while_bound() {
    let broker = Broker::shared();
    let (conn, ch) = broker.channel().await;
    let x = declare_exchange(&ch, ExchangeKind::Direct).await;
    let q = declare_queue(&ch).await;
    bind(&ch, &q, &x, "k").await;
    let result = within(ch.exchange_delete(
        x.as_str().into(),
        ExchangeDeleteOptions {
            if_unused: true,
            ..Default::default()
        },
    ))
    .await;
    assert_code(result, 406);
    let ch = within(conn.create_channel()).await.expect("channel");
    declare(&ch, &x, ExchangeKind::Direct, passive())
        .await
        .expect("exchange still exists");
    within(ch.queue_unbind(
        q.as_str().into(),
        x.as_str().into(),
        "k".into(),
        FieldTable::default(),
    ))
    .await
    .expect("unbind");
    within(ch.exchange_delete(
        x.as_str().into(),
        ExchangeDeleteOptions {
            if_unused: true,
            ..Default::default()
        },
    ))
    .await
    .expect("if-unused delete of an unbound exchange");
    let result = declare(&ch, &x, ExchangeKind::Direct, passive()).await;
    assert_code(result, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_removes_bindings_and_missing_delete_is_ok() {
    let broker = Broker::shared();
    let (_conn, ch) = broker.channel().await;
    let x = declare_exchange(&ch, ExchangeKind::Fanout).await;
    let q = declare_queue(&ch).await;
    bind(&ch, &q, &x, "").await;
    within(ch.exchange_delete(x.as_str().into(), Default::default()))
        .await
        .expect("delete");
    within(ch.exchange_delete(x.as_str().into(), Default::default()))
        .await
        .expect("deleting a missing exchange is idempotent");
    within(ch.exchange_delete(unique("never").as_str().into(), Default::default()))
        .await
        .expect("deleting a never-declared exchange is ok");
    // Redeclared, the exchange starts without the old binding.
    declare(&ch, &x, ExchangeKind::Fanout, Default::default())
        .await
        .expect("redeclare");
    publish(&ch, &x, "", b"lost").await;
    assert_eq!(message_count(&ch, &q).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_delete_exchange_goes_with_its_last_binding() {
    let broker = Broker::shared();
    let (_conn, ch) = broker.channel().await;
    let x = unique("x");
    declare(
        &ch,
        &x,
        ExchangeKind::Direct,
        ExchangeDeclareOptions {
            auto_delete: true,
            ..Default::default()
        },
    )
    .await
    .expect("declare");
    let q = declare_queue(&ch).await;
    bind(&ch, &q, &x, "a").await;
    bind(&ch, &q, &x, "b").await;
    within(ch.queue_unbind(
        q.as_str().into(),
        x.as_str().into(),
        "a".into(),
        FieldTable::default(),
    ))
    .await
    .expect("unbind a");
    declare(&ch, &x, ExchangeKind::Direct, passive())
        .await
        .expect("still bound once: exists");
    within(ch.queue_unbind(
        q.as_str().into(),
        x.as_str().into(),
        "b".into(),
        FieldTable::default(),
    ))
    .await
    .expect("unbind b");
    let result = declare(&ch, &x, ExchangeKind::Direct, passive()).await;
    assert_code(result, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchange_to_exchange_bindings_route_through_two_hops() {
    let broker = Broker::shared();
    let (conn, ch) = broker.channel().await;
    let first = declare_exchange(&ch, ExchangeKind::Topic).await;
    let second = declare_exchange(&ch, ExchangeKind::Direct).await;
    let q = declare_queue(&ch).await;
    within(ch.exchange_bind(
        second.as_str().into(),
        first.as_str().into(),
        "orders.*".into(),
        ExchangeBindOptions::default(),
        FieldTable::default(),
    ))
    .await
    .expect("exchange.bind");
    bind(&ch, &q, &second, "orders.created").await;
    publish(&ch, &first, "orders.created", b"hop-hop").await;
    publish(&ch, &first, "orders.deleted", b"not-bound-at-second-hop").await;
    publish(&ch, &first, "users.created", b"not-bound-at-first-hop").await;
    assert_eq!(get_body(&ch, &q).await.as_deref(), Some(&b"hop-hop"[..]));
    assert_eq!(get_body(&ch, &q).await, None);

    within(ch.exchange_unbind(
        second.as_str().into(),
        first.as_str().into(),
        "orders.*".into(),
        ExchangeUnbindOptions::default(),
        FieldTable::default(),
    ))
    .await
    .expect("exchange.unbind");
    publish(&ch, &first, "orders.created", b"after-unbind").await;
    assert_eq!(get_body(&ch, &q).await, None);
    within(ch.exchange_unbind(
        second.as_str().into(),
        first.as_str().into(),
        "orders.*".into(),
        ExchangeUnbindOptions::default(),
        FieldTable::default(),
    ))
    .await
    .expect("unbinding a missing exchange binding is ok");

    // A binding from a missing source is 404.
    let result = within(ch.exchange_bind(
        second.as_str().into(),
        unique("missing").as_str().into(),
        "k".into(),
        ExchangeBindOptions::default(),
        FieldTable::default(),
    ))
    .await;
    assert_code(result, 404);
    assert_connection_usable(&conn).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchange_bind_to_missing_destination_is_404() {
    let broker = Broker::shared();
    let (conn, ch) = broker.channel().await;
    let source = declare_exchange(&ch, ExchangeKind::Fanout).await;
    let result = within(ch.exchange_bind(
        unique("missing").as_str().into(),
        source.as_str().into(),
        "".into(),
        ExchangeBindOptions::default(),
        FieldTable::default(),
    ))
    .await;
    assert_code(result, 404);
    assert_connection_usable(&conn).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_exchange_routes_by_exact_key() {
    let broker = Broker::shared();
    let (_conn, ch) = broker.channel().await;
    let x = declare_exchange(&ch, ExchangeKind::Direct).await;
    let (a, b) = (declare_queue(&ch).await, declare_queue(&ch).await);
    bind(&ch, &a, &x, "red").await;
    bind(&ch, &b, &x, "green").await;
    bind(&ch, &b, &x, "red").await;
    let got = route(&ch, &x, &["red", "green", "blue", "Red"], &[&a, &b]).await;
    assert_eq!(got, vec![vec!["red"], vec!["red", "green"]]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_exchange_ignores_keys() {
    let broker = Broker::shared();
    let (_conn, ch) = broker.channel().await;
    let x = declare_exchange(&ch, ExchangeKind::Fanout).await;
    let (a, b) = (declare_queue(&ch).await, declare_queue(&ch).await);
    bind(&ch, &a, &x, "").await;
    bind(&ch, &b, &x, "whatever").await;
    let got = route(&ch, &x, &["one", ""], &[&a, &b]).await;
    assert_eq!(got, vec![vec!["one", ""], vec!["one", ""]]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_exchange_matches_star_and_hash() {
    let broker = Broker::shared();
    let (_conn, ch) = broker.channel().await;
    let x = declare_exchange(&ch, ExchangeKind::Topic).await;
    let star = declare_queue(&ch).await;
    let hash_error = declare_queue(&ch).await;
    let everything = declare_queue(&ch).await;
    let exact = declare_queue(&ch).await;
    bind(&ch, &star, &x, "log.*").await;
    bind(&ch, &hash_error, &x, "#.error").await;
    bind(&ch, &everything, &x, "#").await;
    bind(&ch, &exact, &x, "a.b.c").await;
    let keys = [
        "log.info",
        "log.info.x",
        "error",
        "app.db.error",
        "log",
        "a.b.c",
        "",
    ];
    let got = route(&ch, &x, &keys, &[&star, &hash_error, &everything, &exact]).await;
    assert_eq!(got[0], vec!["log.info"]);
    assert_eq!(got[1], vec!["error", "app.db.error"]);
    assert_eq!(got[2], keys.to_vec());
    assert_eq!(got[3], vec!["a.b.c"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_exchange_matches_all_and_any() {
    let broker = Broker::shared();
    let (_conn, ch) = broker.channel().await;
    let x = declare_exchange(&ch, ExchangeKind::Headers).await;
    let (all, any) = (declare_queue(&ch).await, declare_queue(&ch).await);
    let mut args_all = FieldTable::default();
    args_all.insert("x-match".into(), AMQPValue::LongString("all".into()));
    args_all.insert("format".into(), AMQPValue::LongString("pdf".into()));
    args_all.insert("type".into(), AMQPValue::LongString("report".into()));
    let mut args_any = FieldTable::default();
    args_any.insert("x-match".into(), AMQPValue::LongString("any".into()));
    args_any.insert("format".into(), AMQPValue::LongString("pdf".into()));
    args_any.insert("type".into(), AMQPValue::LongString("report".into()));
    for (q, args) in [(&all, args_all), (&any, args_any)] {
        within(ch.queue_bind(
            q.as_str().into(),
            x.as_str().into(),
            "".into(),
            Default::default(),
            args,
        ))
        .await
        .expect("bind");
    }
    let cases: [(&str, &[(&str, &str)]); 4] = [
        ("both", &[("format", "pdf"), ("type", "report")]),
        ("format-only", &[("format", "pdf")]),
        ("wrong-value", &[("format", "zip"), ("type", "log")]),
        ("none", &[]),
    ];
    for (body, headers) in cases {
        let mut table = FieldTable::default();
        for (k, v) in headers {
            table.insert((*k).into(), AMQPValue::LongString((*v).into()));
        }
        publish_with(
            &ch,
            &x,
            "",
            body.as_bytes(),
            BasicProperties::default().with_headers(table),
        )
        .await;
    }
    let mut got = Vec::new();
    for q in [&all, &any] {
        let mut bodies = Vec::new();
        while let Some(b) = get_body(&ch, q).await {
            bodies.push(String::from_utf8(b).unwrap());
        }
        got.push(bodies);
    }
    assert_eq!(got, vec![vec!["both"], vec!["both", "format-only"]]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alternate_exchange_receives_unroutable_messages() {
    let broker = Broker::shared();
    let (_conn, ch) = broker.channel().await;
    let ae = declare_exchange(&ch, ExchangeKind::Fanout).await;
    let unrouted = declare_queue(&ch).await;
    within(ch.queue_bind(
        unrouted.as_str().into(),
        ae.as_str().into(),
        "".into(),
        Default::default(),
        FieldTable::default(),
    ))
    .await
    .expect("bind");
    let x = unique("x");
    within(ch.exchange_declare(
        x.as_str().into(),
        ExchangeKind::Direct,
        ExchangeDeclareOptions::default(),
        {
            let mut args = FieldTable::default();
            args.insert(
                "alternate-exchange".into(),
                AMQPValue::LongString(ae.as_str().into()),
            );
            args
        },
    ))
    .await
    .expect("declare with alternate-exchange");
    let routed = declare_queue(&ch).await;
    within(ch.queue_bind(
        routed.as_str().into(),
        x.as_str().into(),
        "known".into(),
        Default::default(),
        FieldTable::default(),
    ))
    .await
    .expect("bind");
    publish(&ch, &x, "known", b"routed").await;
    // Mandatory too: the alternate exchange counts as a route, so nothing is returned.
    let confirm = within(async {
        ch.basic_publish(
            x.as_str().into(),
            "unknown".into(),
            lapin::options::BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            },
            b"fallback",
            BasicProperties::default(),
        )
        .await
        .expect("publish")
        .await
        .expect("confirm")
    })
    .await;
    assert!(confirm.is_ack());
    assert!(confirm.take_message().is_none(), "not returned");
    assert_eq!(get_body(&ch, &routed).await, Some(b"routed".to_vec()));
    let m = get(&ch, &unrouted).await.expect("fallback message");
    assert_eq!(m.delivery.data, b"fallback");
    assert_eq!(
        m.delivery.exchange.as_str(),
        x,
        "delivered with the original exchange"
    );
    assert_eq!(m.delivery.routing_key.as_str(), "unknown");
}
