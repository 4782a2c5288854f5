//! The confirm class: publisher confirms for routed, unroutable and returned messages, nacks
//! from a full `reject-publish` queue, and the rule that confirms and transactions exclude
//! each other on one channel.

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Confirmation, ExchangeKind};

use crate::harness::*;

pub(crate) async fn confirm_channel(broker: &Broker) -> (lapin::Connection, Channel) {
    let (conn, ch) = broker.channel().await;
    within(ch.confirm_select(ConfirmSelectOptions::default()))
        .await
        .expect("confirm.select");
    (conn, ch)
}

pub(crate) async fn publish_confirmed(
    ch: &Channel,
    exchange: &str,
    key: &str,
    mandatory: bool,
    body: &[u8],
    props: BasicProperties,
) -> Confirmation {
    within(async {
        ch.basic_publish(
            exchange.into(),
            key.into(),
            BasicPublishOptions {
                mandatory,
                ..Default::default()
            },
            body,
            props,
        )
        .await
        .expect("publish")
        .await
        .expect("confirmation")
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routed_messages_are_acked() {
    let broker = Broker::shared();
    let (_conn, ch) = confirm_channel(&broker).await;
    let q = declare_queue(&ch).await;
    let mut pending = Vec::new();
    for i in 0..50u32 {
        pending.push(
            within(ch.basic_publish(
                "".into(),
                q.as_str().into(),
                Default::default(),
                &i.to_be_bytes(),
                BasicProperties::default(),
            ))
            .await
            .expect("publish"),
        );
    }
    for confirm in pending {
        let c = within(confirm).await.expect("confirmation");
        assert!(c.is_ack(), "{c:?}");
        assert!(c.take_message().is_none());
    }
    assert_eq!(message_count(&ch, &q).await, 50);
    assert!(within(ch.wait_for_confirms())
        .await
        .expect("wait")
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_messages_to_durable_queue_are_acked() {
    let broker = Broker::shared();
    let (_conn, ch) = confirm_channel(&broker).await;
    let q = declare_queue_with(&ch, QueueDeclareOptions::durable(), FieldTable::default()).await;
    for _ in 0..5 {
        let c = publish_confirmed(
            &ch,
            "",
            &q,
            false,
            b"persist",
            BasicProperties::default().with_delivery_mode(2),
        )
        .await;
        assert!(c.is_ack(), "{c:?}");
    }
    assert_eq!(message_count(&ch, &q).await, 5);
    within(ch.queue_delete(q.as_str().into(), Default::default()))
        .await
        .expect("delete");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unroutable_messages_are_acked() {
    let broker = Broker::shared();
    let (_conn, ch) = confirm_channel(&broker).await;
    let x = declare_exchange(&ch, ExchangeKind::Direct).await;
    let c = publish_confirmed(&ch, &x, "nowhere", false, b"void", Default::default()).await;
    assert!(c.is_ack(), "{c:?}");
    assert!(c.take_message().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mandatory_unroutable_is_returned_then_acked() {
    let broker = Broker::shared();
    let (_conn, ch) = confirm_channel(&broker).await;
    let x = declare_exchange(&ch, ExchangeKind::Topic).await;
    let c = publish_confirmed(&ch, &x, "no.route", true, b"back", Default::default()).await;
    assert!(c.is_ack(), "{c:?}");
    let returned = c.take_message().expect("basic.return before the ack");
    assert_eq!(returned.reply_code, 312);
    assert_eq!(returned.reply_text.as_str(), "NO_ROUTE");
    assert_eq!(returned.delivery.data, b"back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirm_select_is_idempotent() {
    let broker = Broker::shared();
    let (_conn, ch) = confirm_channel(&broker).await;
    within(ch.confirm_select(ConfirmSelectOptions::default()))
        .await
        .expect("second confirm.select");
    let q = declare_queue(&ch).await;
    let c = publish_confirmed(&ch, "", &q, false, b"x", Default::default()).await;
    assert!(c.is_ack());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tx_select_on_a_confirm_channel_is_406() {
    let broker = Broker::shared();
    let (conn, ch) = confirm_channel(&broker).await;
    assert_code(within(ch.tx_select()).await, 406);
    assert_connection_usable(&conn).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirm_select_on_a_tx_channel_is_406() {
    let broker = Broker::shared();
    let (conn, ch) = broker.plain_channel().await;
    within(ch.tx_select()).await.expect("tx.select");
    assert_code(
        within(ch.confirm_select(ConfirmSelectOptions::default())).await,
        406,
    );
    assert_connection_usable(&conn).await;
}
