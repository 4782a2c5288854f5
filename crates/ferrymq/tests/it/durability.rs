//! Durable queues and persistent messages survive a restart of the broker.

use std::time::Duration;

use lapin::options::{ConfirmSelectOptions, QueueDeclareOptions};
use lapin::BasicProperties;

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_queue_and_persistent_messages_survive_restart() {
    if skip_if_external("durable_queue_and_persistent_messages_survive_restart") {
        return;
    }
    let dir = TempDir::new();
    let queue = unique("durable");
    let transient = unique("transient");
    {
        let mut broker = Broker::private_on(dir.path(), &[]);
        let (_conn, ch) = broker.channel().await;
        within(ch.confirm_select(ConfirmSelectOptions::default()))
            .await
            .expect("confirm");
        within(ch.queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions::durable(),
            Default::default(),
        ))
        .await
        .expect("declare durable");
        within(ch.queue_declare(
            transient.as_str().into(),
            Default::default(),
            Default::default(),
        ))
        .await
        .expect("declare transient");
        for (i, mode) in [(0, 2u8), (1, 1), (2, 2)] {
            publish_with(
                &ch,
                "",
                &queue,
                format!("m-{i}").as_bytes(),
                BasicProperties::default().with_delivery_mode(mode),
            )
            .await;
        }
        broker.sigterm();
        broker.wait_exit(Duration::from_secs(20));
    }
    let broker = Broker::private_on(dir.path(), &[]);
    let (_conn, ch) = broker.channel().await;
    assert_eq!(
        get_body(&ch, &queue).await,
        Some(b"m-0".to_vec()),
        "persistent message survives"
    );
    assert_eq!(get_body(&ch, &queue).await, Some(b"m-2".to_vec()));
    assert_eq!(
        get_body(&ch, &queue).await,
        None,
        "transient message is gone"
    );
    assert_code(passive_declare(&ch, &transient).await, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirms_arrive_when_a_durable_queue_is_deleted_right_after_publishes() {
    // Persistent publishes to a durable queue wait for the queue's store; if the queue is
    // deleted before it stores them, the publisher must still hear back (no hang).
    let broker = Broker::shared();
    let conn = broker.connect().await;
    let ch = within(conn.create_channel()).await.expect("channel");
    within(ch.confirm_select(ConfirmSelectOptions::default()))
        .await
        .expect("confirm");
    let queue = unique("doomed");
    within(ch.queue_declare(
        queue.as_str().into(),
        QueueDeclareOptions::durable(),
        Default::default(),
    ))
    .await
    .expect("declare");
    let deleter = within(conn.create_channel()).await.expect("channel");
    let mut confirms = Vec::new();
    for i in 0..50u32 {
        let c = within(ch.basic_publish(
            "".into(),
            queue.as_str().into(),
            Default::default(),
            &i.to_be_bytes(),
            BasicProperties::default().with_delivery_mode(2),
        ))
        .await
        .expect("publish");
        confirms.push(c);
    }
    within(deleter.queue_delete(queue.as_str().into(), Default::default()))
        .await
        .expect("delete");
    for c in confirms {
        let confirmation = within(c).await.expect("confirmation arrives");
        assert!(confirmation.is_ack(), "{confirmation:?}");
    }
}
