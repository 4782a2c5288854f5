//! Topic permissions and user-id (vhost t).

use super::*;

fn topic_defs() -> Defs {
    Defs::new()
        .user(TOM, PW, &[])
        .user(TINA, PW, &[])
        .user(TESS, PW, &[])
        .user(IMP, PW, &["impersonator"])
        .user(VIC, PW, &[])
        .vhost(T)
        .permit(TOM, T, ".*", ".*", ".*")
        .permit(TINA, T, ".*", ".*", ".*")
        .permit(TESS, T, ".*", ".*", ".*")
        .permit(IMP, T, ".*", ".*", ".*")
        .permit(VIC, T, ".*", ".*", ".*")
        .topic_permit(VIC, T, "tx", "^{vhost}\\.", "^{vhost}\\.")
        .topic_permit(TOM, T, "tx", "^{username}\\.", "^public\\.|^{username}\\.")
        .topic_permit(TINA, T, "tx", "^{username}\\.", "^public\\.|^{username}\\.")
        // Topic permissions apply to topic exchanges only.
        .topic_permit(TOM, T, "dx", "^nothing$", "^nothing$")
        .exchange(T, "tx", "topic")
        .exchange(T, "tx2", "topic")
        .exchange(T, "dx", "direct")
        .queue(T, "tq")
        .queue(T, "tq2")
        .queue(T, "dq")
        .queue(T, "uq")
        .bind(T, "tx", "tq", "queue", "#")
        .bind(T, "tx2", "tq2", "queue", "#")
        .bind(T, "dx", "dq", "queue", "rk")
}

fn topic_broker() -> Arc<Broker> {
    static SLOT: OnceLock<Mutex<Weak<Broker>>> = OnceLock::new();
    group_broker(&SLOT, topic_defs)
}

fn with_header_list(name: &str, keys: &[&str]) -> BasicProperties {
    let list: Vec<AMQPValue> = keys
        .iter()
        .map(|k| AMQPValue::LongString(LongString::from(*k)))
        .collect();
    let mut headers = FieldTable::default();
    headers.insert(name.into(), AMQPValue::FieldArray(FieldArray::from(list)));
    BasicProperties::default().with_headers(headers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_write_permissions_on_publish() {
    if skip_if_external("topic_write_permissions_on_publish") {
        return;
    }
    let broker = topic_broker();
    let tom = connect_as(&broker, TOM, PW, T).await;
    let ch = confirm_chan(&tom).await;
    publish_confirmed(&ch, "tx", "tom.a", b"tom.a", BasicProperties::default())
        .await
        .expect("{username} expands to tom");
    let r = publish_confirmed(&ch, "tx", "rk", b"rk", BasicProperties::default()).await;
    assert_refused(&tom, &ch, r, &denied_topic("write", "rk", "tx", T, TOM));

    // CC and BCC routing keys are checked too.
    let ch = confirm_chan(&tom).await;
    let r = publish_confirmed(
        &ch,
        "tx",
        "tom.b",
        b"cc",
        with_header_list("CC", &["tom.c", "other.d"]),
    )
    .await;
    assert_refused(
        &tom,
        &ch,
        r,
        &denied_topic("write", "other.d", "tx", T, TOM),
    );
    let ch = confirm_chan(&tom).await;
    let r = publish_confirmed(
        &ch,
        "tx",
        "tom.b",
        b"bcc",
        with_header_list("BCC", &["other.e"]),
    )
    .await;
    assert_refused(
        &tom,
        &ch,
        r,
        &denied_topic("write", "other.e", "tx", T, TOM),
    );
    let ch = confirm_chan(&tom).await;
    publish_confirmed(
        &ch,
        "tx",
        "tom.f",
        b"tom.f",
        with_header_list("CC", &["tom.g"]),
    )
    .await
    .expect("CC keys within the pattern");
    // No topic-permission row for the exchange (or a non-topic exchange): allowed.
    publish_confirmed(&ch, "tx2", "other.x", b"tx2", BasicProperties::default())
        .await
        .expect("no row for tx2");
    publish_confirmed(
        &ch,
        "amq.topic",
        "other.x",
        b"amq.topic",
        BasicProperties::default(),
    )
    .await
    .expect("no row for amq.topic");
    publish_confirmed(&ch, "dx", "rk", b"dx", BasicProperties::default())
        .await
        .expect("topic rows do not apply to a direct exchange");

    // {username} is per user.
    let tina = connect_as(&broker, TINA, PW, T).await;
    let ch = confirm_chan(&tina).await;
    publish_confirmed(&ch, "tx", "tina.a", b"tina.a", BasicProperties::default())
        .await
        .expect("tina.a for tina");
    let r = publish_confirmed(
        &ch,
        "tx",
        "tom.a",
        b"tina-as-tom",
        BasicProperties::default(),
    )
    .await;
    assert_refused(
        &tina,
        &ch,
        r,
        &denied_topic("write", "tom.a", "tx", T, TINA),
    );

    // {vhost} expands to the connection's vhost.
    let vic = connect_as(&broker, VIC, PW, T).await;
    let ch = confirm_chan(&vic).await;
    publish_confirmed(&ch, "tx", "t.vic", b"t.vic", BasicProperties::default())
        .await
        .expect("{vhost} expands to t");
    let r = publish_confirmed(&ch, "tx", "vic.t", b"vic.t", BasicProperties::default()).await;
    assert_refused(&vic, &ch, r, &denied_topic("write", "vic.t", "tx", T, VIC));

    // A user without topic-permission rows publishes any key.
    let tess = connect_as(&broker, TESS, PW, T).await;
    let ch = confirm_chan(&tess).await;
    publish_confirmed(&ch, "tx", "other.z", b"tess", BasicProperties::default())
        .await
        .expect("no topic permissions at all");

    assert_eq!(
        drain_bodies(&ch, "tq").await,
        ["tom.a", "tom.f", "tina.a", "t.vic", "tess"],
        "exactly the allowed publishes were routed"
    );
    assert_eq!(drain_bodies(&ch, "tq2").await, ["tx2"]);
    assert_eq!(drain_bodies(&ch, "dq").await, ["dx"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_read_permissions_on_queue_bind() {
    if skip_if_external("topic_read_permissions_on_queue_bind") {
        return;
    }
    let broker = topic_broker();
    let tom = connect_as(&broker, TOM, PW, T).await;
    let ch = chan(&tom).await;
    declare_q(&ch, "tom-bq", no_args()).await.expect("declare");
    for key in ["public.#", "tom.#"] {
        within(ch.queue_bind(
            "tom-bq".into(),
            "tx".into(),
            key.into(),
            QueueBindOptions::default(),
            no_args(),
        ))
        .await
        .unwrap_or_else(|e| panic!("bind with {key}: {e:?}"));
    }
    within(ch.queue_bind(
        "tom-bq".into(),
        "tx2".into(),
        "other.#".into(),
        QueueBindOptions::default(),
        no_args(),
    ))
    .await
    .expect("no row for tx2");
    within(ch.queue_bind(
        "tom-bq".into(),
        "dx".into(),
        "other".into(),
        QueueBindOptions::default(),
        no_args(),
    ))
    .await
    .expect("topic rows do not apply to a direct exchange");
    let r = within(ch.queue_bind(
        "tom-bq".into(),
        "tx".into(),
        "other.#".into(),
        QueueBindOptions::default(),
        no_args(),
    ))
    .await;
    assert_refused(&tom, &ch, r, &denied_topic("read", "other.#", "tx", T, TOM));
    let ch = chan(&tom).await;
    let r =
        within(ch.queue_unbind("tom-bq".into(), "tx".into(), "other.#".into(), no_args())).await;
    assert_refused(&tom, &ch, r, &denied_topic("read", "other.#", "tx", T, TOM));

    let tina = connect_as(&broker, TINA, PW, T).await;
    let ch = chan(&tina).await;
    declare_q(&ch, "tina-bq", no_args()).await.expect("declare");
    within(ch.queue_bind(
        "tina-bq".into(),
        "tx".into(),
        "tina.#".into(),
        QueueBindOptions::default(),
        no_args(),
    ))
    .await
    .expect("tina.# for tina");
    let r = within(ch.queue_bind(
        "tina-bq".into(),
        "tx".into(),
        "tom.#".into(),
        QueueBindOptions::default(),
        no_args(),
    ))
    .await;
    assert_refused(&tina, &ch, r, &denied_topic("read", "tom.#", "tx", T, TINA));

    let tess = connect_as(&broker, TESS, PW, T).await;
    let ch = chan(&tess).await;
    declare_q(&ch, "tess-bq", no_args()).await.expect("declare");
    within(ch.queue_bind(
        "tess-bq".into(),
        "tx".into(),
        "other.#".into(),
        QueueBindOptions::default(),
        no_args(),
    ))
    .await
    .expect("no topic permissions at all");
}

/// RabbitMQ's `binding_action` checks topic read on the binding key whatever the
/// destination, so an exchange-to-exchange binding from a topic exchange is checked too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_read_permissions_on_exchange_bind() {
    if skip_if_external("topic_read_permissions_on_exchange_bind") {
        return;
    }
    let broker = topic_broker();
    let tom = connect_as(&broker, TOM, PW, T).await;
    let ch = chan(&tom).await;
    declare_x(&ch, "tom-dest", ExchangeKind::Fanout, no_args())
        .await
        .expect("declare");
    within(ch.exchange_bind(
        "tom-dest".into(),
        "tx".into(),
        "public.#".into(),
        ExchangeBindOptions::default(),
        no_args(),
    ))
    .await
    .expect("public.# for tom");
    let r = within(ch.exchange_bind(
        "tom-dest".into(),
        "tx".into(),
        "other.#".into(),
        ExchangeBindOptions::default(),
        no_args(),
    ))
    .await;
    assert_refused(&tom, &ch, r, &denied_topic("read", "other.#", "tx", T, TOM));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_id_must_match_unless_impersonator() {
    if skip_if_external("user_id_must_match_unless_impersonator") {
        return;
    }
    let broker = topic_broker();
    let tom = connect_as(&broker, TOM, PW, T).await;
    let ch = confirm_chan(&tom).await;
    publish_confirmed(
        &ch,
        "",
        "uq",
        b"own",
        BasicProperties::default().with_user_id(TOM.into()),
    )
    .await
    .expect("user-id equal to the user");
    let r = publish_confirmed(
        &ch,
        "",
        "uq",
        b"foreign",
        BasicProperties::default().with_user_id("someone".into()),
    )
    .await;
    assert_reply(
        r,
        406,
        "PRECONDITION_FAILED - user_id property set to 'someone' but authenticated user was 'tom'",
    );
    assert!(!ch.status().connected(), "406 closes the channel");
    assert!(tom.status().connected(), "406 leaves the connection open");

    let imp = connect_as(&broker, IMP, PW, T).await;
    let ch = confirm_chan(&imp).await;
    publish_confirmed(
        &ch,
        "",
        "uq",
        b"impersonated",
        BasicProperties::default().with_user_id("someone".into()),
    )
    .await
    .expect("an impersonator may set any user-id");

    let mut got = Vec::new();
    while let Some(m) = within(ch.basic_get("uq".into(), BasicGetOptions { no_ack: true }))
        .await
        .expect("basic.get")
    {
        got.push((
            String::from_utf8_lossy(&m.delivery.data).into_owned(),
            m.delivery
                .properties
                .user_id()
                .as_ref()
                .map(|u| u.to_string()),
        ));
    }
    assert_eq!(
        got,
        [
            ("own".to_owned(), Some("tom".to_owned())),
            ("impersonated".to_owned(), Some("someone".to_owned())),
        ]
    );
}
