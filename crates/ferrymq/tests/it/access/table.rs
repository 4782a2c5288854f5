//! The permission table (vhost v1): which rights each AMQP operation needs.

use super::*;

fn table_defs() -> Defs {
    let mut d = Defs::new()
        .user(ADMIN, ADMIN_PW, &["administrator"])
        .user(BOB, BOB_PW, &[])
        .user(GEN, GEN_PW, &[])
        .vhost(V1)
        .permit(ADMIN, V1, ".*", ".*", ".*")
        .permit(BOB, V1, "^[^-]*c[^-]*-", "^[^-]*w[^-]*-", "^[^-]*r[^-]*-")
        // Server-named queues only.
        .permit(GEN, V1, "^amq\\.gen-.*", "", "");
    for (name, kind) in [
        ("w-px", "fanout"),
        ("cr-px", "fanout"),
        ("w-dx", "fanout"),
        ("cr-dx", "fanout"),
        ("r-sx", "direct"),
        ("cw-sx", "direct"),
        ("r-bx", "direct"),
        ("cw-bx", "direct"),
        ("c-xd", "direct"),
        ("wr-xd", "direct"),
        ("c-pe", "direct"),
        ("w-pe", "direct"),
        ("r-pe", "direct"),
        ("n-pe", "direct"),
    ] {
        d = d.exchange(V1, name, kind);
    }
    for q in [
        "r-sink", "r-q", "cw-q", "w-bq", "cr-bq", "c-dq", "wr-dq", "c-pq", "w-pq", "r-pq", "n-pq",
    ] {
        d = d.queue(V1, q);
    }
    d.bind(V1, "w-px", "r-sink", "queue", "")
        .bind(V1, "r-bx", "cr-bq", "queue", "k")
        .bind(V1, "cw-bx", "w-bq", "queue", "k")
        .bind(V1, "r-sx", "cr-dx", "exchange", "k")
        .bind(V1, "cw-sx", "w-dx", "exchange", "k")
}

fn table_broker() -> Arc<Broker> {
    static SLOT: OnceLock<Mutex<Weak<Broker>>> = OnceLock::new();
    group_broker(&SLOT, table_defs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_declare_needs_configure_and_dead_letter_rights() {
    if skip_if_external("queue_declare_needs_configure_and_dead_letter_rights") {
        return;
    }
    let broker = table_broker();
    let bob = connect_as(&broker, BOB, BOB_PW, V1).await;
    let ch = chan(&bob).await;
    declare_q(&ch, "c-q1", no_args())
        .await
        .expect("configure on the queue suffices");
    let r = declare_q(&ch, "wr-q1", no_args()).await;
    assert_refused(
        &bob,
        &ch,
        r,
        &denied("configure", "queue", "wr-q1", V1, BOB),
    );

    // x-dead-letter-exchange: also read on the queue and write on the DLX.
    let ch = chan(&bob).await;
    declare_q(&ch, "cr-dlq", table(&[("x-dead-letter-exchange", "w-dlx")]))
        .await
        .expect("configure+read on the queue and write on the DLX suffice");
    let r = declare_q(&ch, "c-dlq", table(&[("x-dead-letter-exchange", "w-dlx")])).await;
    assert_refused(&bob, &ch, r, &denied("read", "queue", "c-dlq", V1, BOB));
    let ch = chan(&bob).await;
    let r = declare_q(
        &ch,
        "cr-dlq2",
        table(&[("x-dead-letter-exchange", "r-dlx")]),
    )
    .await;
    assert_refused(&bob, &ch, r, &denied("write", "exchange", "r-dlx", V1, BOB));
    // The default exchange as DLX is checked under its name amq.default.
    let ch = chan(&bob).await;
    let r = declare_q(&ch, "cr-dlq3", table(&[("x-dead-letter-exchange", "")])).await;
    assert_refused(
        &bob,
        &ch,
        r,
        &denied("write", "exchange", "amq.default", V1, BOB),
    );
    // Configure is checked first.
    let ch = chan(&bob).await;
    let r = declare_q(&ch, "wr-dlq", table(&[("x-dead-letter-exchange", "w-dlx")])).await;
    assert_refused(
        &bob,
        &ch,
        r,
        &denied("configure", "queue", "wr-dlq", V1, BOB),
    );

    // The refused declarations created nothing.
    let admin = connect_as(&broker, ADMIN, ADMIN_PW, V1).await;
    for q in ["wr-q1", "c-dlq", "cr-dlq2", "cr-dlq3", "wr-dlq"] {
        let ch = chan(&admin).await;
        assert_reply(
            passive_declare(&ch, q).await,
            404,
            &format!("NOT_FOUND - no queue '{q}' in vhost 'v1'"),
        );
    }
    let ch = chan(&admin).await;
    passive_declare(&ch, "cr-dlq").await.expect("cr-dlq exists");
}

/// A reply text over 255 bytes is cut to 252 and marked with `...`, as RabbitMQ's
/// `rabbit_binary_generator:amqp_exception_explanation` does (a queue name may take 255
/// bytes itself).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_refusal_texts_are_cut_as_rabbitmq_cuts_them() {
    if skip_if_external("long_refusal_texts_are_cut_as_rabbitmq_cuts_them") {
        return;
    }
    let broker = table_broker();
    let bob = connect_as(&broker, BOB, BOB_PW, V1).await;
    let ch = chan(&bob).await;
    let name = format!("wr-{}", "q".repeat(240));
    let full = denied("configure", "queue", &name, V1, BOB);
    assert!(full.len() > 255);
    let r = declare_q(&ch, &name, no_args()).await;
    assert_refused(&bob, &ch, r, &format!("{}...", &full[..252]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_named_queues_need_configure_on_amq_gen() {
    if skip_if_external("server_named_queues_need_configure_on_amq_gen") {
        return;
    }
    let broker = table_broker();
    // bob's configure pattern does not match amq.gen-…
    let bob = connect_as(&broker, BOB, BOB_PW, V1).await;
    let ch = chan(&bob).await;
    let (code, text) = reply_of(declare_q(&ch, "", no_args()).await);
    assert_eq!(code, 403, "{text}");
    let name = text
        .strip_prefix("ACCESS_REFUSED - configure access to queue '")
        .and_then(|t| t.strip_suffix("' in vhost 'v1' refused for user 'bob'"))
        .unwrap_or_else(|| panic!("unexpected refusal text {text:?}"));
    assert!(
        name.starts_with("amq.gen-") && name.len() > "amq.gen-".len(),
        "the refusal names the generated queue: {text:?}"
    );
    assert!(bob.status().connected());

    // gen may configure amq.gen-.* and nothing else.
    let gen = connect_as(&broker, GEN, GEN_PW, V1).await;
    let ch = chan(&gen).await;
    let q = within(ch.queue_declare(
        "".into(),
        QueueDeclareOptions {
            exclusive: true,
            ..Default::default()
        },
        no_args(),
    ))
    .await
    .expect("server-named queue with configure on amq.gen-.*");
    assert!(q.name().as_str().starts_with("amq.gen-"), "{:?}", q.name());
    passive_declare(&ch, q.name().as_str())
        .await
        .expect("passive declare of its own server-named queue");
    let r = declare_q(&ch, "c-gen", no_args()).await;
    assert_refused(
        &gen,
        &ch,
        r,
        &denied("configure", "queue", "c-gen", V1, GEN),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchange_declare_needs_configure_and_alternate_exchange_rights() {
    if skip_if_external("exchange_declare_needs_configure_and_alternate_exchange_rights") {
        return;
    }
    let broker = table_broker();
    let bob = connect_as(&broker, BOB, BOB_PW, V1).await;
    let ch = chan(&bob).await;
    declare_x(&ch, "c-x1", ExchangeKind::Direct, no_args())
        .await
        .expect("configure on the exchange suffices");
    let r = declare_x(&ch, "wr-x1", ExchangeKind::Direct, no_args()).await;
    assert_refused(
        &bob,
        &ch,
        r,
        &denied("configure", "exchange", "wr-x1", V1, BOB),
    );

    // alternate-exchange: also read on the exchange and write on the AE.
    let ch = chan(&bob).await;
    declare_x(
        &ch,
        "cr-xae",
        ExchangeKind::Direct,
        table(&[("alternate-exchange", "w-ae")]),
    )
    .await
    .expect("configure+read on the exchange and write on the AE suffice");
    let r = declare_x(
        &ch,
        "c-xae",
        ExchangeKind::Direct,
        table(&[("alternate-exchange", "w-ae")]),
    )
    .await;
    assert_refused(&bob, &ch, r, &denied("read", "exchange", "c-xae", V1, BOB));
    let ch = chan(&bob).await;
    let r = declare_x(
        &ch,
        "cr-xae2",
        ExchangeKind::Direct,
        table(&[("alternate-exchange", "r-ae")]),
    )
    .await;
    assert_refused(&bob, &ch, r, &denied("write", "exchange", "r-ae", V1, BOB));
    let ch = chan(&bob).await;
    let r = declare_x(
        &ch,
        "w-xae",
        ExchangeKind::Direct,
        table(&[("alternate-exchange", "w-ae")]),
    )
    .await;
    assert_refused(
        &bob,
        &ch,
        r,
        &denied("configure", "exchange", "w-xae", V1, BOB),
    );

    let admin = connect_as(&broker, ADMIN, ADMIN_PW, V1).await;
    for x in ["wr-x1", "c-xae", "cr-xae2", "w-xae"] {
        let ch = chan(&admin).await;
        assert_reply(
            passive_x(&ch, x).await,
            404,
            &format!("NOT_FOUND - no exchange '{x}' in vhost 'v1'"),
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passive_declares_need_any_one_permission() {
    if skip_if_external("passive_declares_need_any_one_permission") {
        return;
    }
    let broker = table_broker();
    let bob = connect_as(&broker, BOB, BOB_PW, V1).await;
    let ch = chan(&bob).await;
    for q in ["c-pq", "w-pq", "r-pq"] {
        let ok = passive_declare(&ch, q)
            .await
            .unwrap_or_else(|e| panic!("passive declare of {q}: {e:?}"));
        assert_eq!(ok.message_count(), 0);
    }
    for x in ["c-pe", "w-pe", "r-pe"] {
        passive_x(&ch, x)
            .await
            .unwrap_or_else(|e| panic!("passive declare of {x}: {e:?}"));
    }
    let r = passive_declare(&ch, "n-pq").await;
    assert_refused(&bob, &ch, r, &denied("configure", "queue", "n-pq", V1, BOB));
    let ch = chan(&bob).await;
    let r = passive_x(&ch, "n-pe").await;
    assert_refused(
        &bob,
        &ch,
        r,
        &denied("configure", "exchange", "n-pe", V1, BOB),
    );

    // With a permission, a missing resource is 404 naming the vhost.
    let ch = chan(&bob).await;
    assert_reply(
        passive_declare(&ch, "c-missing").await,
        404,
        "NOT_FOUND - no queue 'c-missing' in vhost 'v1'",
    );
    let ch = chan(&bob).await;
    assert_reply(
        passive_x(&ch, "w-missing").await,
        404,
        "NOT_FOUND - no exchange 'w-missing' in vhost 'v1'",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletes_need_configure() {
    if skip_if_external("deletes_need_configure") {
        return;
    }
    let broker = table_broker();
    let bob = connect_as(&broker, BOB, BOB_PW, V1).await;
    let ch = chan(&bob).await;
    within(ch.queue_delete("c-dq".into(), QueueDeleteOptions::default()))
        .await
        .expect("queue.delete with configure");
    within(ch.exchange_delete("c-xd".into(), ExchangeDeleteOptions::default()))
        .await
        .expect("exchange.delete with configure");
    let r = within(ch.queue_delete("wr-dq".into(), QueueDeleteOptions::default())).await;
    assert_refused(
        &bob,
        &ch,
        r,
        &denied("configure", "queue", "wr-dq", V1, BOB),
    );
    let ch = chan(&bob).await;
    let r = within(ch.exchange_delete("wr-xd".into(), ExchangeDeleteOptions::default())).await;
    assert_refused(
        &bob,
        &ch,
        r,
        &denied("configure", "exchange", "wr-xd", V1, BOB),
    );

    let admin = connect_as(&broker, ADMIN, ADMIN_PW, V1).await;
    let ch = chan(&admin).await;
    passive_declare(&ch, "wr-dq")
        .await
        .expect("the refused queue.delete left wr-dq");
    passive_x(&ch, "wr-xd")
        .await
        .expect("the refused exchange.delete left wr-xd");
    assert_reply(
        passive_declare(&ch, "c-dq").await,
        404,
        "NOT_FOUND - no queue 'c-dq' in vhost 'v1'",
    );
    let ch = chan(&admin).await;
    assert_reply(
        passive_x(&ch, "c-xd").await,
        404,
        "NOT_FOUND - no exchange 'c-xd' in vhost 'v1'",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_get_and_consume_need_read() {
    if skip_if_external("purge_get_and_consume_need_read") {
        return;
    }
    let broker = table_broker();
    let admin = connect_as(&broker, ADMIN, ADMIN_PW, V1).await;
    let ach = confirm_chan(&admin).await;
    for q in ["r-q", "cw-q"] {
        publish_confirmed(&ach, "", q, b"m", BasicProperties::default())
            .await
            .expect("admin publishes through the default exchange");
    }

    let bob = connect_as(&broker, BOB, BOB_PW, V1).await;
    let ch = chan(&bob).await;
    let got = within(ch.basic_get("r-q".into(), BasicGetOptions { no_ack: true }))
        .await
        .expect("basic.get with read")
        .expect("the message");
    assert_eq!(got.delivery.data, b"m");
    within(ch.queue_purge("r-q".into(), QueuePurgeOptions::default()))
        .await
        .expect("queue.purge with read");
    within(ch.basic_consume(
        "r-q".into(),
        "".into(),
        BasicConsumeOptions::default(),
        no_args(),
    ))
    .await
    .expect("basic.consume with read");

    let text = denied("read", "queue", "cw-q", V1, BOB);
    let ch = chan(&bob).await;
    let r = within(ch.basic_get("cw-q".into(), BasicGetOptions { no_ack: true })).await;
    assert_refused(&bob, &ch, r, &text);
    let ch = chan(&bob).await;
    let r = within(ch.queue_purge("cw-q".into(), QueuePurgeOptions::default())).await;
    assert_refused(&bob, &ch, r, &text);
    let ch = chan(&bob).await;
    let r = within(ch.basic_consume(
        "cw-q".into(),
        "".into(),
        BasicConsumeOptions::default(),
        no_args(),
    ))
    .await;
    assert_refused(&bob, &ch, r, &text);

    assert_eq!(
        passive_declare(&ach, "cw-q")
            .await
            .expect("cw-q")
            .message_count(),
        1,
        "the refused get and purge took nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_bind_and_unbind_need_write_on_queue_and_read_on_exchange() {
    if skip_if_external("queue_bind_and_unbind_need_write_on_queue_and_read_on_exchange") {
        return;
    }
    let broker = table_broker();
    let bob = connect_as(&broker, BOB, BOB_PW, V1).await;
    let ch = chan(&bob).await;
    within(ch.queue_bind(
        "w-bq".into(),
        "r-bx".into(),
        "k2".into(),
        QueueBindOptions::default(),
        no_args(),
    ))
    .await
    .expect("queue.bind with write on the queue and read on the exchange");
    within(ch.queue_unbind("w-bq".into(), "r-bx".into(), "k2".into(), no_args()))
        .await
        .expect("queue.unbind with write on the queue and read on the exchange");

    let ch = chan(&bob).await;
    let r = within(ch.queue_bind(
        "cr-bq".into(),
        "r-bx".into(),
        "k9".into(),
        QueueBindOptions::default(),
        no_args(),
    ))
    .await;
    assert_refused(&bob, &ch, r, &denied("write", "queue", "cr-bq", V1, BOB));
    let ch = chan(&bob).await;
    let r = within(ch.queue_bind(
        "w-bq".into(),
        "cw-bx".into(),
        "k9".into(),
        QueueBindOptions::default(),
        no_args(),
    ))
    .await;
    assert_refused(&bob, &ch, r, &denied("read", "exchange", "cw-bx", V1, BOB));
    // Unbinding existing bindings is refused the same way.
    let ch = chan(&bob).await;
    let r = within(ch.queue_unbind("cr-bq".into(), "r-bx".into(), "k".into(), no_args())).await;
    assert_refused(&bob, &ch, r, &denied("write", "queue", "cr-bq", V1, BOB));
    let ch = chan(&bob).await;
    let r = within(ch.queue_unbind("w-bq".into(), "cw-bx".into(), "k".into(), no_args())).await;
    assert_refused(&bob, &ch, r, &denied("read", "exchange", "cw-bx", V1, BOB));

    // The imported bindings are still in place.
    let admin = connect_as(&broker, ADMIN, ADMIN_PW, V1).await;
    let ach = confirm_chan(&admin).await;
    publish_confirmed(&ach, "r-bx", "k", b"via-r-bx", BasicProperties::default())
        .await
        .expect("publish");
    publish_confirmed(&ach, "cw-bx", "k", b"via-cw-bx", BasicProperties::default())
        .await
        .expect("publish");
    assert_eq!(drain_bodies(&ach, "cr-bq").await, ["via-r-bx"]);
    assert_eq!(drain_bodies(&ach, "w-bq").await, ["via-cw-bx"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchange_bind_and_unbind_need_write_on_destination_and_read_on_source() {
    if skip_if_external("exchange_bind_and_unbind_need_write_on_destination_and_read_on_source") {
        return;
    }
    let broker = table_broker();
    let bob = connect_as(&broker, BOB, BOB_PW, V1).await;
    let ch = chan(&bob).await;
    within(ch.exchange_bind(
        "w-dx".into(),
        "r-sx".into(),
        "k2".into(),
        ExchangeBindOptions::default(),
        no_args(),
    ))
    .await
    .expect("exchange.bind with write on the destination and read on the source");
    within(ch.exchange_unbind(
        "w-dx".into(),
        "r-sx".into(),
        "k2".into(),
        ExchangeUnbindOptions::default(),
        no_args(),
    ))
    .await
    .expect("exchange.unbind with write on the destination and read on the source");

    let ch = chan(&bob).await;
    let r = within(ch.exchange_bind(
        "cr-dx".into(),
        "r-sx".into(),
        "k9".into(),
        ExchangeBindOptions::default(),
        no_args(),
    ))
    .await;
    assert_refused(&bob, &ch, r, &denied("write", "exchange", "cr-dx", V1, BOB));
    let ch = chan(&bob).await;
    let r = within(ch.exchange_bind(
        "w-dx".into(),
        "cw-sx".into(),
        "k9".into(),
        ExchangeBindOptions::default(),
        no_args(),
    ))
    .await;
    assert_refused(&bob, &ch, r, &denied("read", "exchange", "cw-sx", V1, BOB));
    let ch = chan(&bob).await;
    let r = within(ch.exchange_unbind(
        "cr-dx".into(),
        "r-sx".into(),
        "k".into(),
        ExchangeUnbindOptions::default(),
        no_args(),
    ))
    .await;
    assert_refused(&bob, &ch, r, &denied("write", "exchange", "cr-dx", V1, BOB));
    let ch = chan(&bob).await;
    let r = within(ch.exchange_unbind(
        "w-dx".into(),
        "cw-sx".into(),
        "k".into(),
        ExchangeUnbindOptions::default(),
        no_args(),
    ))
    .await;
    assert_refused(&bob, &ch, r, &denied("read", "exchange", "cw-sx", V1, BOB));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_needs_write_on_the_exchange() {
    if skip_if_external("publish_needs_write_on_the_exchange") {
        return;
    }
    let broker = table_broker();
    let bob = connect_as(&broker, BOB, BOB_PW, V1).await;
    let ch = confirm_chan(&bob).await;
    publish_confirmed(&ch, "w-px", "", b"allowed", BasicProperties::default())
        .await
        .expect("publish with write on the exchange");
    assert_eq!(drain_bodies(&ch, "r-sink").await, ["allowed"]);

    let r = publish_confirmed(&ch, "cr-px", "", b"refused", BasicProperties::default()).await;
    assert_refused(&bob, &ch, r, &denied("write", "exchange", "cr-px", V1, BOB));
    // The default exchange is named amq.default in the refusal.
    let ch = confirm_chan(&bob).await;
    let r = publish_confirmed(&ch, "", "r-q", b"refused", BasicProperties::default()).await;
    assert_refused(
        &bob,
        &ch,
        r,
        &denied("write", "exchange", "amq.default", V1, BOB),
    );

    // Permission comes before existence: a missing exchange is 403 without write, 404
    // with it.
    let ch = confirm_chan(&bob).await;
    let r = publish_confirmed(&ch, "cr-missing", "", b"x", BasicProperties::default()).await;
    assert_refused(
        &bob,
        &ch,
        r,
        &denied("write", "exchange", "cr-missing", V1, BOB),
    );
    let ch = confirm_chan(&bob).await;
    assert_reply(
        publish_confirmed(&ch, "w-missing", "", b"x", BasicProperties::default()).await,
        404,
        "NOT_FOUND - no exchange 'w-missing' in vhost 'v1'",
    );

    let admin = connect_as(&broker, ADMIN, ADMIN_PW, V1).await;
    let ach = chan(&admin).await;
    assert!(
        drain_bodies(&ach, "r-sink").await.is_empty(),
        "the refused publish to cr-px (bound nowhere else) routed nothing"
    );
}
