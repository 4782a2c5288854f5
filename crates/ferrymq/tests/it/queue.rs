//! The queue class: declare (passive, flags, server-named, equivalence, counts), bind,
//! unbind, purge, delete (if-unused, if-empty), exclusivity and auto-delete.

use lapin::options::{BasicCancelOptions, QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, ExchangeKind};

use crate::harness::*;

async fn declare(
    ch: &Channel,
    name: &str,
    options: QueueDeclareOptions,
    args: FieldTable,
) -> lapin::Result<lapin::Queue> {
    within(ch.queue_declare(name.into(), options, args)).await
}

pub(crate) fn max_length(n: i32) -> FieldTable {
    let mut t = FieldTable::default();
    t.insert("x-max-length".into(), AMQPValue::LongInt(n));
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declare_ok_reports_message_and_consumer_counts() {
    let broker = Broker::shared();
    let (_conn, ch) = broker.channel().await;
    let q = unique("q");
    let declared = declare(&ch, &q, Default::default(), Default::default())
        .await
        .expect("declare");
    assert_eq!(declared.name().as_str(), q);
    assert_eq!(
        (declared.message_count(), declared.consumer_count()),
        (0, 0)
    );
    for i in 0..3u8 {
        publish(&ch, "", &q, &[i]).await;
    }
    let again = declare(&ch, &q, Default::default(), Default::default())
        .await
        .expect("redeclare");
    assert_eq!((again.message_count(), again.consumer_count()), (3, 0));

    let (_conn2, other) = broker.channel().await;
    let _consumer = consume(&other, &q, Default::default()).await;
    let _consumer2 = consume(&other, &q, Default::default()).await;
    let seen = passive_declare(&ch, &q).await.expect("passive");
    assert_eq!(seen.consumer_count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passive_declare_of_missing_queue_is_404() {
    let broker = Broker::shared();
    let (conn, ch) = broker.channel().await;
    assert_code(passive_declare(&ch, &unique("missing")).await, 404);
    assert!(!ch.status().connected());
    assert_connection_usable(&conn).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_named_queue_is_amq_gen() {
    let broker = Broker::shared();
    let (_conn, ch) = broker.channel().await;
    let declared = declare(
        &ch,
        "",
        QueueDeclareOptions::exclusive(),
        Default::default(),
    )
    .await
    .expect("declare");
    let name = declared.name().as_str().to_string();
    assert!(name.starts_with("amq.gen-"), "server-named queue {name:?}");
    let other = declare(
        &ch,
        "",
        QueueDeclareOptions::exclusive(),
        Default::default(),
    )
    .await
    .expect("declare");
    assert_ne!(other.name().as_str(), name, "server names are unique");
    publish(&ch, "", &name, b"to-generated").await;
    assert_eq!(
        get_body(&ch, &name).await.as_deref(),
        Some(&b"to-generated"[..])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declare_with_flags_and_passive_ignores_them() {
    let broker = Broker::shared();
    let (_conn, ch) = broker.channel().await;
    for options in [
        QueueDeclareOptions::durable(),
        QueueDeclareOptions::exclusive(),
        QueueDeclareOptions::default().auto_delete(),
        QueueDeclareOptions::durable().auto_delete(),
    ] {
        let q = unique("q");
        declare(&ch, &q, options, Default::default())
            .await
            .unwrap_or_else(|e| panic!("declare {options:?}: {e}"));
        declare(&ch, &q, options, Default::default())
            .await
            .expect("identical redeclare");
        passive_declare(&ch, &q)
            .await
            .expect("passive declare does not check flags");
        within(ch.queue_delete(q.as_str().into(), Default::default()))
            .await
            .expect("delete");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redeclare_with_other_durability_is_406() {
    let broker = Broker::shared();
    let (conn, ch) = broker.channel().await;
    let q = declare_queue(&ch).await;
    let result = declare(&ch, &q, QueueDeclareOptions::durable(), Default::default()).await;
    assert_code(result, 406);
    assert_connection_usable(&conn).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redeclare_with_other_auto_delete_is_406() {
    let broker = Broker::shared();
    let (conn, ch) = broker.channel().await;
    let q = declare_queue(&ch).await;
    let result = declare(
        &ch,
        &q,
        QueueDeclareOptions::default().auto_delete(),
        Default::default(),
    )
    .await;
    assert_code(result, 406);
    assert_connection_usable(&conn).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redeclare_with_other_arguments_is_406() {
    let broker = Broker::shared();
    let conn = broker.connect().await;
    let ch = within(conn.create_channel()).await.expect("channel");
    let q = declare_queue_with(&ch, Default::default(), max_length(10)).await;
    declare(&ch, &q, Default::default(), max_length(10))
        .await
        .expect("same arguments");
    let result = declare(&ch, &q, Default::default(), max_length(20)).await;
    assert_code(result, 406);
    let ch = within(conn.create_channel()).await.expect("channel");
    let result = declare(&ch, &q, Default::default(), FieldTable::default()).await;
    assert_code(result, 406);
    assert_connection_usable(&conn).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amq_prefixed_queue_names_are_403() {
    let broker = Broker::shared();
    let (conn, ch) = broker.channel().await;
    let result = declare(
        &ch,
        &format!("amq.{}", unique("q")),
        Default::default(),
        Default::default(),
    )
    .await;
    assert_code(result, 403);
    assert_connection_usable(&conn).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bind_to_missing_exchange_or_queue_is_404() {
    let broker = Broker::shared();
    let conn = broker.connect().await;
    let ch = within(conn.create_channel()).await.expect("channel");
    let q = declare_queue(&ch).await;
    let x = declare_exchange(&ch, ExchangeKind::Direct).await;
    let result = within(ch.queue_bind(
        q.as_str().into(),
        unique("missing").as_str().into(),
        "k".into(),
        Default::default(),
        FieldTable::default(),
    ))
    .await;
    assert_code(result, 404);

    let ch = within(conn.create_channel()).await.expect("channel");
    let result = within(ch.queue_bind(
        unique("missing").as_str().into(),
        x.as_str().into(),
        "k".into(),
        Default::default(),
        FieldTable::default(),
    ))
    .await;
    assert_code(result, 404);
    assert_connection_usable(&conn).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bind_is_idempotent_and_unbind_stops_routing() {
    let broker = Broker::shared();
    let (_conn, ch) = broker.channel().await;
    let q = declare_queue(&ch).await;
    let x = declare_exchange(&ch, ExchangeKind::Direct).await;
    for _ in 0..2 {
        within(ch.queue_bind(
            q.as_str().into(),
            x.as_str().into(),
            "k".into(),
            Default::default(),
            FieldTable::default(),
        ))
        .await
        .expect("bind");
    }
    publish(&ch, &x, "k", b"once").await;
    assert_eq!(
        message_count(&ch, &q).await,
        1,
        "a duplicate binding routes once"
    );
    within(ch.queue_unbind(
        q.as_str().into(),
        x.as_str().into(),
        "k".into(),
        FieldTable::default(),
    ))
    .await
    .expect("unbind");
    publish(&ch, &x, "k", b"after").await;
    assert_eq!(message_count(&ch, &q).await, 1);
    within(ch.queue_unbind(
        q.as_str().into(),
        x.as_str().into(),
        "k".into(),
        FieldTable::default(),
    ))
    .await
    .expect("unbinding a missing binding is ok");
    within(ch.queue_unbind(
        q.as_str().into(),
        x.as_str().into(),
        "never-bound".into(),
        FieldTable::default(),
    ))
    .await
    .expect("unbinding a never-made binding is ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_returns_the_count_and_empties_the_queue() {
    let broker = Broker::shared();
    let (_conn, ch) = broker.channel().await;
    let q = declare_queue(&ch).await;
    for i in 0..7u8 {
        publish(&ch, "", &q, &[i]).await;
    }
    let purged = within(ch.queue_purge(q.as_str().into(), Default::default()))
        .await
        .expect("purge");
    assert_eq!(purged, 7);
    assert_eq!(message_count(&ch, &q).await, 0);
    assert_eq!(get_body(&ch, &q).await, None);
    let purged = within(ch.queue_purge(q.as_str().into(), Default::default()))
        .await
        .expect("purge");
    assert_eq!(purged, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_of_missing_queue_is_404() {
    let broker = Broker::shared();
    let (conn, ch) = broker.channel().await;
    let result =
        within(ch.queue_purge(unique("missing").as_str().into(), Default::default())).await;
    assert_code(result, 404);
    assert_connection_usable(&conn).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_returns_the_count_and_missing_delete_is_ok() {
    let broker = Broker::shared();
    let (_conn, ch) = broker.channel().await;
    let q = declare_queue(&ch).await;
    for i in 0..4u8 {
        publish(&ch, "", &q, &[i]).await;
    }
    let deleted = within(ch.queue_delete(q.as_str().into(), Default::default()))
        .await
        .expect("delete");
    assert_eq!(deleted, 4);
    let deleted = within(ch.queue_delete(q.as_str().into(), Default::default()))
        .await
        .expect("deleting a missing queue is ok");
    assert_eq!(deleted, 0);
    assert_code(passive_declare(&ch, &q).await, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_if_unused_is_406_with_a_consumer() {
    let broker = Broker::shared();
    let conn = broker.connect().await;
    let ch = within(conn.create_channel()).await.expect("channel");
    let q = declare_queue(&ch).await;
    let consumer = consume(&ch, &q, Default::default()).await;
    let probe = within(conn.create_channel()).await.expect("channel");
    let result = within(probe.queue_delete(
        q.as_str().into(),
        QueueDeleteOptions {
            if_unused: true,
            ..Default::default()
        },
    ))
    .await;
    assert_code(result, 406);
    within(ch.basic_cancel(consumer.tag(), BasicCancelOptions::default()))
        .await
        .expect("cancel");
    within(ch.queue_delete(
        q.as_str().into(),
        QueueDeleteOptions {
            if_unused: true,
            ..Default::default()
        },
    ))
    .await
    .expect("if-unused delete without consumers");
    assert_connection_usable(&conn).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_if_empty_is_406_with_messages() {
    let broker = Broker::shared();
    let conn = broker.connect().await;
    let ch = within(conn.create_channel()).await.expect("channel");
    let q = declare_queue(&ch).await;
    publish(&ch, "", &q, b"still-here").await;
    let probe = within(conn.create_channel()).await.expect("channel");
    let result = within(probe.queue_delete(
        q.as_str().into(),
        QueueDeleteOptions {
            if_empty: true,
            ..Default::default()
        },
    ))
    .await;
    assert_code(result, 406);
    assert_eq!(get_body(&ch, &q).await.as_deref(), Some(&b"still-here"[..]));
    let deleted = within(ch.queue_delete(
        q.as_str().into(),
        QueueDeleteOptions {
            if_empty: true,
            ..Default::default()
        },
    ))
    .await
    .expect("if-empty delete of an empty queue");
    assert_eq!(deleted, 0);
    assert_connection_usable(&conn).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exclusive_queue_is_405_from_another_connection() {
    let broker = Broker::shared();
    let (_owner, ch) = broker.channel().await;
    let q = declare_queue_with(&ch, QueueDeclareOptions::exclusive(), Default::default()).await;
    publish(&ch, "", &q, b"mine").await;

    let other = broker.connect().await;
    let attempts: Vec<(&str, lapin::Result<()>)> = vec![
        ("passive declare", {
            let c = within(other.create_channel()).await.unwrap();
            passive_declare(&c, &q).await.map(|_| ())
        }),
        ("declare", {
            let c = within(other.create_channel()).await.unwrap();
            declare(&c, &q, QueueDeclareOptions::exclusive(), Default::default())
                .await
                .map(|_| ())
        }),
        ("consume", {
            let c = within(other.create_channel()).await.unwrap();
            within(c.basic_consume(
                q.as_str().into(),
                "".into(),
                Default::default(),
                FieldTable::default(),
            ))
            .await
            .map(|_| ())
        }),
        ("get", {
            let c = within(other.create_channel()).await.unwrap();
            within(c.basic_get(q.as_str().into(), Default::default()))
                .await
                .map(|_| ())
        }),
        ("purge", {
            let c = within(other.create_channel()).await.unwrap();
            within(c.queue_purge(q.as_str().into(), Default::default()))
                .await
                .map(|_| ())
        }),
        ("delete", {
            let c = within(other.create_channel()).await.unwrap();
            within(c.queue_delete(q.as_str().into(), Default::default()))
                .await
                .map(|_| ())
        }),
    ];
    for (what, result) in attempts {
        match result {
            Err(e) => assert_eq!(reply_code(&e), Some(405), "{what}: {e:?}"),
            Ok(()) => panic!("{what} on another connection's exclusive queue succeeded"),
        }
    }
    assert_connection_usable(&other).await;
    assert_eq!(
        message_count(&ch, &q).await,
        1,
        "the owner still has its queue"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exclusive_queue_is_deleted_with_its_connection() {
    let broker = Broker::shared();
    let (owner, ch) = broker.channel().await;
    let q = declare_queue_with(&ch, QueueDeclareOptions::exclusive(), Default::default()).await;
    within(owner.close(200, "bye".into())).await.expect("close");
    let (_conn, probe) = broker.channel().await;
    assert_code(passive_declare(&probe, &q).await, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_delete_queue_goes_after_last_consumer_cancels() {
    let broker = Broker::shared();
    let (_conn, ch) = broker.channel().await;
    let q = declare_queue_with(
        &ch,
        QueueDeclareOptions::default().auto_delete(),
        Default::default(),
    )
    .await;
    // Never consumed from: it stays.
    publish(&ch, "", &q, b"x").await;
    assert_eq!(message_count(&ch, &q).await, 1);
    let first = consume(&ch, &q, Default::default()).await;
    let second = consume(&ch, &q, Default::default()).await;
    within(ch.basic_cancel(first.tag(), Default::default()))
        .await
        .expect("cancel first");
    passive_declare(&ch, &q)
        .await
        .expect("one consumer left: the queue stays");
    within(ch.basic_cancel(second.tag(), Default::default()))
        .await
        .expect("cancel second");
    let (_conn2, probe) = broker.channel().await;
    assert_code(passive_declare(&probe, &q).await, 404);
}
