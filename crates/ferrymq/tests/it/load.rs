//! Many messages, publishers and consumers at once: nothing lost, nothing duplicated, FIFO
//! per publisher, and a worker that dies mid-stream loses nothing (its unacked messages go
//! to the surviving worker).

use std::collections::BTreeSet;
use std::time::Duration;

use lapin::options::{BasicAckOptions, BasicQosOptions};

use crate::harness::*;

const LONG: Duration = Duration::from_secs(90);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn competing_consumers_get_every_message_exactly_once() {
    const PUBLISHERS: usize = 4;
    const PER_PUBLISHER: usize = 500;
    let broker = Broker::shared();
    let (_conn, ch) = broker.channel().await;
    let q = declare_queue(&ch).await;

    let mut consumers = Vec::new();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
    for _ in 0..3 {
        let (conn, cch) = broker.channel().await;
        within(cch.basic_qos(20, BasicQosOptions::default()))
            .await
            .expect("qos");
        let mut consumer = consume(&cch, &q, Default::default()).await;
        let tx = tx.clone();
        consumers.push(tokio::spawn(async move {
            let _keep = conn;
            while let Some(Ok(d)) = futures_lite::StreamExt::next(&mut consumer).await {
                d.ack(BasicAckOptions::default()).await.expect("ack");
                if tx.send(d.data).is_err() {
                    break;
                }
            }
        }));
    }
    drop(tx);

    let mut publishers = Vec::new();
    for p in 0..PUBLISHERS {
        let (conn, pch) = broker.channel().await;
        let q = q.clone();
        publishers.push(tokio::spawn(async move {
            let _keep = conn;
            for i in 0..PER_PUBLISHER {
                publish(&pch, "", &q, format!("{p}:{i}").as_bytes()).await;
            }
        }));
    }
    for p in publishers {
        within_for(LONG, p).await.expect("publisher");
    }

    let mut seen = BTreeSet::new();
    within_for(LONG, async {
        while seen.len() < PUBLISHERS * PER_PUBLISHER {
            let body = rx.recv().await.expect("consumers ended early");
            let body = String::from_utf8(body).expect("utf8");
            assert!(seen.insert(body.clone()), "{body} delivered twice");
        }
    })
    .await;
    assert_eq!(message_count(&ch, &q).await, 0);
    for c in consumers {
        c.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_publisher_one_consumer_keeps_fifo_order() {
    const N: usize = 5000;
    let broker = Broker::shared();
    let (_conn, pch) = broker.plain_channel().await;
    let (_cconn, cch) = broker.channel().await;
    let q = declare_queue(&cch).await;
    let mut consumer = consume(
        &cch,
        &q,
        lapin::options::BasicConsumeOptions {
            no_ack: true,
            ..Default::default()
        },
    )
    .await;
    let publisher = {
        let q = q.clone();
        tokio::spawn(async move {
            for i in 0..N {
                within(pch.basic_publish(
                    "".into(),
                    q.as_str().into(),
                    Default::default(),
                    &(i as u32).to_be_bytes(),
                    Default::default(),
                ))
                .await
                .expect("publish");
            }
            pch
        })
    };
    within_for(LONG, async {
        for i in 0..N {
            let d = next_delivery(&mut consumer).await;
            let got = u32::from_be_bytes(d.data.as_slice().try_into().expect("4 bytes"));
            assert_eq!(got as usize, i, "out of order");
        }
    })
    .await;
    within(publisher).await.expect("publisher");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_worker_loses_nothing() {
    const N: usize = 200;
    let broker = Broker::shared();
    let (_conn, ch) = broker.channel().await;
    let q = declare_queue(&ch).await;
    for i in 0..N {
        publish(&ch, "", &q, format!("job-{i}").as_bytes()).await;
    }

    // The doomed worker takes up to 10 jobs, acks 3 of them, and its connection dies.
    let (doomed_conn, doomed) = broker.channel().await;
    within(doomed.basic_qos(10, BasicQosOptions::default()))
        .await
        .expect("qos");
    let mut doomed_consumer = consume(&doomed, &q, Default::default()).await;
    let mut done = BTreeSet::new();
    for _ in 0..3 {
        let d = next_delivery(&mut doomed_consumer).await;
        d.ack(BasicAckOptions::default()).await.expect("ack");
        done.insert(String::from_utf8(d.data).unwrap());
    }
    let _unacked = next_delivery(&mut doomed_consumer).await;
    within(doomed_conn.close(320, "worker crashed".into()))
        .await
        .expect("close");

    // The survivor ends up with every other job exactly once.
    let (_sconn, survivor) = broker.channel().await;
    let mut consumer = consume(&survivor, &q, Default::default()).await;
    within_for(LONG, async {
        while done.len() < N {
            let d = next_delivery(&mut consumer).await;
            let body = String::from_utf8(d.data.clone()).unwrap();
            assert!(done.insert(body.clone()), "{body} processed twice");
            d.ack(BasicAckOptions::default()).await.expect("ack");
        }
    })
    .await;
    assert_no_delivery(&mut consumer).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_channels_and_queues() {
    let broker = Broker::shared();
    let conn = broker.connect().await;
    let mut channels = Vec::new();
    for _ in 0..50 {
        channels.push(within(conn.create_channel()).await.expect("channel.open"));
    }
    let mut queues = Vec::new();
    for (i, ch) in channels.iter().enumerate() {
        let q = declare_queue(ch).await;
        within(ch.basic_publish(
            "".into(),
            q.as_str().into(),
            Default::default(),
            &(i as u32).to_be_bytes(),
            Default::default(),
        ))
        .await
        .expect("publish");
        queues.push(q);
    }
    for (i, (ch, q)) in channels.iter().zip(&queues).enumerate() {
        assert_eq!(
            get_body(ch, q).await,
            Some((i as u32).to_be_bytes().to_vec())
        );
        within(ch.queue_delete(q.as_str().into(), Default::default()))
            .await
            .expect("delete");
    }
    for ch in channels {
        within(ch.close(200, "bye".into())).await.expect("close");
    }
    assert_connection_usable(&conn).await;
}
