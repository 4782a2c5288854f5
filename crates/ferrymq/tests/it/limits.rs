//! Configured limits of the ferrymq binary: `--max-message-size`.
//!
//! RabbitMQ 3.10 answers a message above `max_message_size` with channel.close 406
//! PRECONDITION_FAILED ("message size N is larger than configured max size M"), so FerryMQ
//! must too. The limit is set on the command line, so this runs against a private broker
//! only.

use lapin::BasicProperties;

use crate::harness::*;

const LIMIT: usize = 1 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_over_max_message_size_is_406() {
    if skip_if_external("message_over_max_message_size_is_406") {
        return;
    }
    let broker = Broker::private(&["--max-message-size", &LIMIT.to_string()]);
    let (conn, ch) = broker.channel().await;
    let q = declare_queue(&ch).await;
    let at_limit = pattern(LIMIT);
    publish(&ch, "", &q, &at_limit).await;
    assert!(get_body(&ch, &q).await.expect("message at the limit") == at_limit);

    let watch = ChannelWatch::new(&ch).await;
    within(ch.basic_publish(
        "".into(),
        q.as_str().into(),
        Default::default(),
        &pattern(LIMIT + 1),
        BasicProperties::default(),
    ))
    .await
    .expect("publish is asynchronous");
    watch.closed_with(406).await;
    assert!(!ch.status().connected(), "the channel is closed");
    assert_connection_usable(&conn).await;
    let (_c, ch) = broker.channel().await;
    assert_eq!(
        message_count(&ch, &q).await,
        0,
        "the oversized message was not enqueued"
    );
}
