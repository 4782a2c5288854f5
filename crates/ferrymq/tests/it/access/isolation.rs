//! Vhost isolation.

use super::*;

fn isolation_defs() -> Defs {
    let mut d = Defs::new().user(ALICE, PW, &[]);
    for v in [V1, V2] {
        d = d
            .vhost(v)
            .permit(ALICE, v, ".*", ".*", ".*")
            .exchange(v, "same-x", "fanout")
            .queue(v, "same")
            .bind(v, "same-x", "same", "queue", "");
    }
    d.queue(V1, "only1")
}

fn isolation_broker() -> Arc<Broker> {
    static SLOT: OnceLock<Mutex<Weak<Broker>>> = OnceLock::new();
    group_broker(&SLOT, isolation_defs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vhosts_are_isolated() {
    if skip_if_external("vhosts_are_isolated") {
        return;
    }
    let broker = isolation_broker();
    let c1 = connect_as(&broker, ALICE, PW, V1).await;
    let c2 = connect_as(&broker, ALICE, PW, V2).await;
    let ch1 = confirm_chan(&c1).await;
    let ch2 = confirm_chan(&c2).await;

    // The predeclared exchanges exist in each vhost.
    for x in [
        "amq.direct",
        "amq.fanout",
        "amq.topic",
        "amq.headers",
        "amq.match",
    ] {
        passive_x(&ch1, x)
            .await
            .unwrap_or_else(|e| panic!("{x} in v1: {e:?}"));
        passive_x(&ch2, x)
            .await
            .unwrap_or_else(|e| panic!("{x} in v2: {e:?}"));
    }

    // Same names, imported and declared, in both vhosts: messages never cross.
    for ch in [&ch1, &ch2] {
        declare_q(ch, "dyn", no_args()).await.expect("declare dyn");
    }
    let none = BasicProperties::default;
    publish_confirmed(&ch1, "", "same", b"v1-direct", none())
        .await
        .expect("publish");
    publish_confirmed(&ch1, "same-x", "", b"v1-fanout", none())
        .await
        .expect("publish");
    publish_confirmed(&ch2, "same-x", "", b"v2-fanout", none())
        .await
        .expect("publish");
    publish_confirmed(&ch2, "", "dyn", b"v2-dyn", none())
        .await
        .expect("publish");
    // only1 exists in v1 only: unroutable in v2.
    publish_confirmed(&ch2, "", "only1", b"v2-only1", none())
        .await
        .expect("publish");
    assert_eq!(drain_bodies(&ch1, "same").await, ["v1-direct", "v1-fanout"]);
    assert_eq!(drain_bodies(&ch2, "same").await, ["v2-fanout"]);
    assert!(drain_bodies(&ch1, "dyn").await.is_empty());
    assert_eq!(drain_bodies(&ch2, "dyn").await, ["v2-dyn"]);
    assert!(drain_bodies(&ch1, "only1").await.is_empty());

    // NOT_FOUND names the connection's vhost.
    assert_reply(
        passive_declare(&ch2, "only1").await,
        404,
        "NOT_FOUND - no queue 'only1' in vhost 'v2'",
    );
    let ch = chan(&c1).await;
    assert_reply(
        within(ch.basic_get("nope".into(), BasicGetOptions { no_ack: true })).await,
        404,
        "NOT_FOUND - no queue 'nope' in vhost 'v1'",
    );
    let ch = chan(&c2).await;
    assert_reply(
        passive_x(&ch, "nope-x").await,
        404,
        "NOT_FOUND - no exchange 'nope-x' in vhost 'v2'",
    );
    let ch = chan(&c1).await;
    assert_reply(
        within(ch.queue_bind(
            "same".into(),
            "nope-x".into(),
            "".into(),
            QueueBindOptions::default(),
            no_args(),
        ))
        .await,
        404,
        "NOT_FOUND - no exchange 'nope-x' in vhost 'v1'",
    );
    let ch = confirm_chan(&c2).await;
    assert_reply(
        publish_confirmed(&ch, "nope-x", "", b"lost", none()).await,
        404,
        "NOT_FOUND - no exchange 'nope-x' in vhost 'v2'",
    );
    assert!(c1.status().connected() && c2.status().connected());
}

/// Names are echoed as they are, whatever they contain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_found_texts_echo_names_verbatim() {
    if skip_if_external("not_found_texts_echo_names_verbatim") {
        return;
    }
    let broker = isolation_broker();
    let c1 = connect_as(&broker, ALICE, PW, V1).await;
    let ch = chan(&c1).await;
    assert_reply(
        passive_declare(&ch, "q in vhost '/'").await,
        404,
        "NOT_FOUND - no queue 'q in vhost '/'' in vhost 'v1'",
    );
}
