//! RabbitMQ behaviours clients rely on that need no queue features: `no-local` is ignored
//! and a publish to the default exchange without a matching queue is dropped quietly. (The
//! extensions — dead-lettering, TTL, priorities, … — are in `pending::reliability`.)

use lapin::options::BasicConsumeOptions;

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_local_is_ignored() {
    let broker = Broker::shared();
    let (_conn, ch) = broker.channel().await;
    let q = declare_queue(&ch).await;
    let mut consumer = consume(
        &ch,
        &q,
        BasicConsumeOptions {
            no_local: true,
            ..Default::default()
        },
    )
    .await;
    publish(&ch, "", &q, b"mine").await;
    assert_eq!(next_delivery(&mut consumer).await.data, b"mine");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_to_default_exchange_without_queue_is_dropped_quietly() {
    let broker = Broker::shared();
    let (_conn, ch) = broker.channel().await;
    publish(&ch, "", &unique("nobody"), b"void").await;
    assert!(ch.status().connected());
    round_trip(&ch).await;
}
