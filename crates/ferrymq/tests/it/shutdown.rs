//! The ferrymq process itself: SIGTERM closes client connections with 320
//! CONNECTION_FORCED and exits, and durable state survives a restart. These tests start
//! private brokers and skip themselves against an external broker.

use std::time::Duration;

use futures_lite::StreamExt;
use lapin::options::{ConfirmSelectOptions, QueueDeclareOptions};
use lapin::{BasicProperties, Event};

use crate::harness::*;
use crate::raw::RawConn;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_connections_with_320() {
    if skip_if_external("sigterm_closes_connections_with_320") {
        return;
    }
    let mut broker = Broker::private(&[]);
    let (mut raw, _) = RawConn::open(&broker.addr()).await;
    raw.open_channel(1).await;
    let conn = broker.connect().await;
    let mut events = conn.events_listener();
    let ch = within(conn.create_channel()).await.expect("channel");
    round_trip(&ch).await;

    broker.sigterm();

    let close = raw.expect_connection_close().await;
    assert_eq!(close.code, 320, "{close:?}");
    assert!(close.text.starts_with("CONNECTION_FORCED"), "{close:?}");

    let code = within(async {
        while let Some(event) = events.next().await {
            if let Event::Error(e) = event {
                return reply_code(&e);
            }
        }
        None
    })
    .await;
    assert_eq!(code, Some(320), "lapin should see connection.close 320");

    let status = broker.wait_exit(Duration::from_secs(20));
    assert!(
        status.success(),
        "ferrymq exited with {status} after SIGTERM"
    );
}

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
