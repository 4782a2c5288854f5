//! The tx class: publishes and acks take effect on commit only, rollback discards them, and
//! commit/rollback need tx.select first.

use lapin::options::BasicRecoverOptions;

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_messages_appear_on_commit() {
    let broker = Broker::shared();
    let (_conn, ch) = broker.plain_channel().await;
    let (_observer_conn, observer) = broker.channel().await;
    let q = declare_queue(&ch).await;
    within(ch.tx_select()).await.expect("tx.select");
    publish(&ch, "", &q, b"t-0").await;
    publish(&ch, "", &q, b"t-1").await;
    assert_eq!(
        message_count(&observer, &q).await,
        0,
        "invisible before commit"
    );
    within(ch.tx_commit()).await.expect("tx.commit");
    // basic.get on the committing channel is ordered after the committed deliveries.
    assert_eq!(get_body(&ch, &q).await, Some(b"t-0".to_vec()));
    assert_eq!(get_body(&ch, &q).await, Some(b"t-1".to_vec()));

    // The channel stays transactional: the next publish waits for the next commit.
    publish(&ch, "", &q, b"t-2").await;
    assert_eq!(message_count(&observer, &q).await, 0);
    within(ch.tx_commit()).await.expect("second commit");
    assert_eq!(get_body(&ch, &q).await, Some(b"t-2".to_vec()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_discards_published_messages() {
    let broker = Broker::shared();
    let (_conn, ch) = broker.plain_channel().await;
    let q = declare_queue(&ch).await;
    within(ch.tx_select()).await.expect("tx.select");
    publish(&ch, "", &q, b"discard-me").await;
    within(ch.tx_rollback()).await.expect("tx.rollback");
    within(ch.tx_commit()).await.expect("empty commit");
    assert_eq!(get_body(&ch, &q).await, None);
    publish(&ch, "", &q, b"keep-me").await;
    within(ch.tx_commit()).await.expect("commit");
    assert_eq!(get_body(&ch, &q).await, Some(b"keep-me".to_vec()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_apply_on_commit_only() {
    let broker = Broker::shared();
    let (_c, setup) = broker.channel().await;
    let q = declare_queue(&setup).await;
    publish(&setup, "", &q, b"a-0").await;
    publish(&setup, "", &q, b"a-1").await;

    let (_c1, ch) = broker.plain_channel().await;
    within(ch.tx_select()).await.expect("tx.select");
    let mut consumer = consume(&ch, &q, Default::default()).await;
    let d0 = next_delivery(&mut consumer).await;
    let d1 = next_delivery(&mut consumer).await;
    assert_eq!(
        (d0.data.as_slice(), d1.data.as_slice()),
        (&b"a-0"[..], &b"a-1"[..])
    );

    // Ack then rollback: the ack is forgotten and a-0 stays unacked, so a recover
    // redelivers both.
    within(ch.basic_ack(d0.delivery_tag, Default::default()))
        .await
        .expect("ack");
    within(ch.tx_rollback()).await.expect("rollback");
    within(ch.basic_recover(BasicRecoverOptions { requeue: true }))
        .await
        .expect("recover");
    let r0 = next_delivery(&mut consumer).await;
    let r1 = next_delivery(&mut consumer).await;
    assert_eq!(
        (
            r0.data.as_slice(),
            r0.redelivered,
            r1.data.as_slice(),
            r1.redelivered
        ),
        (&b"a-0"[..], true, &b"a-1"[..], true),
        "a rolled-back ack is not applied"
    );

    // Ack then commit: a-0 is gone for good; a-1 (unacked) comes back on close.
    within(ch.basic_ack(r0.delivery_tag, Default::default()))
        .await
        .expect("ack");
    within(ch.tx_commit()).await.expect("commit");
    within(ch.close(200, "bye".into())).await.expect("close");
    assert_queue_holds(&broker, &q, &[(b"a-1".to_vec(), true)]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tx_select_twice_is_fine() {
    let broker = Broker::shared();
    let (_conn, ch) = broker.plain_channel().await;
    within(ch.tx_select()).await.expect("tx.select");
    within(ch.tx_select()).await.expect("second tx.select");
    within(ch.tx_commit()).await.expect("commit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_without_select_is_406() {
    let broker = Broker::shared();
    let (conn, ch) = broker.plain_channel().await;
    assert_code(within(ch.tx_commit()).await, 406);
    assert_connection_usable(&conn).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_without_select_is_406() {
    let broker = Broker::shared();
    let (conn, ch) = broker.plain_channel().await;
    assert_code(within(ch.tx_rollback()).await, 406);
    assert_connection_usable(&conn).await;
}
