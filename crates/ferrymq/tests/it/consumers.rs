//! Consumer selection extensions: single active consumer (`x-single-active-consumer`) and
//! consumer priorities (`x-priority` on `basic.consume`).

use lapin::options::{BasicConsumeOptions, BasicQosOptions};
use lapin::types::{AMQPValue, FieldTable};

use crate::harness::*;

fn table(entries: &[(&str, AMQPValue)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in entries {
        t.insert((*k).into(), v.clone());
    }
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_active_consumer_gets_everything_until_it_leaves() {
    let broker = Broker::shared();
    let (_conn, ch) = broker.channel().await;
    let q = declare_queue_with(
        &ch,
        Default::default(),
        table(&[("x-single-active-consumer", AMQPValue::Boolean(true))]),
    )
    .await;
    let (_ca, cha) = broker.channel().await;
    let (_cb, chb) = broker.channel().await;
    let mut a = consume(&cha, &q, Default::default()).await;
    let mut b = consume(&chb, &q, Default::default()).await;
    for body in numbered("s", 3) {
        publish(&ch, "", &q, &body).await;
    }
    for expected in numbered("s", 3) {
        let d = next_delivery(&mut a).await;
        assert_eq!(d.data, expected);
        d.ack(Default::default()).await.expect("ack");
    }
    assert_no_delivery(&mut b).await;
    within(cha.basic_cancel(a.tag(), Default::default()))
        .await
        .expect("cancel");
    publish(&ch, "", &q, b"after").await;
    assert_eq!(next_delivery(&mut b).await.data, b"after");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn higher_priority_consumer_is_served_first() {
    let broker = Broker::shared();
    let (_conn, ch) = broker.channel().await;
    let q = declare_queue(&ch).await;
    let (_cl, chl) = broker.channel().await;
    let (_ch, chh) = broker.channel().await;
    let mut low = within(chl.basic_consume(
        q.as_str().into(),
        "".into(),
        BasicConsumeOptions::default(),
        table(&[("x-priority", AMQPValue::LongInt(0))]),
    ))
    .await
    .expect("consume");
    let mut high = within(chh.basic_consume(
        q.as_str().into(),
        "".into(),
        BasicConsumeOptions::default(),
        table(&[("x-priority", AMQPValue::LongInt(10))]),
    ))
    .await
    .expect("consume");
    for body in numbered("p", 4) {
        publish(&ch, "", &q, &body).await;
    }
    assert_eq!(next_bodies(&mut high, 4).await, numbered("p", 4));
    assert_no_delivery(&mut low).await;
    // A blocked high-priority consumer (prefetch full) lets the lower one have messages.
    let (_cq, chq) = broker.channel().await;
    within(chq.basic_qos(1, BasicQosOptions::default()))
        .await
        .expect("qos");
    let q2 = declare_queue(&ch).await;
    let mut high2 = within(chq.basic_consume(
        q2.as_str().into(),
        "".into(),
        BasicConsumeOptions::default(),
        table(&[("x-priority", AMQPValue::LongInt(10))]),
    ))
    .await
    .expect("consume");
    let mut low2 = consume(&chl, &q2, Default::default()).await;
    publish(&ch, "", &q2, b"one").await;
    assert_eq!(next_delivery(&mut high2).await.data, b"one");
    publish(&ch, "", &q2, b"two").await;
    assert_eq!(next_delivery(&mut low2).await.data, b"two");
}
