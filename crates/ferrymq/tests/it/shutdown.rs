//! The ferrymq process itself: SIGTERM closes client connections with 320
//! CONNECTION_FORCED and exits, and durable state survives a restart. These tests start
//! private brokers and skip themselves against an external broker.

use std::time::Duration;

use futures_lite::StreamExt;
use lapin::Event;

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
