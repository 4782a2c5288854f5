//! User and vhost limits.

use super::*;

fn limits_defs() -> Defs {
    Defs::new()
        .user("lu", PW, &[])
        .user("free", PW, &[])
        .user_with_limits("uc", PW, &[], r#"{"max-connections":2}"#)
        .user_with_limits("uch", PW, &[], r#"{"max-channels":2}"#)
        .user_with_limits("uz", PW, &[], r#"{"max-connections":0}"#)
        .user_with_limits("uzc", PW, &[], r#"{"max-channels":0}"#)
        .user_with_limits("un", PW, &[], r#"{"max-connections":-1,"max-channels":-1}"#)
        .vhost("lv")
        .vhost("qv")
        .vhost("zv")
        .vhost("uv")
        .vhost("nv")
        .permit("lu", "lv", ".*", ".*", ".*")
        .permit("lu", "nv", ".*", ".*", ".*")
        .permit("uz", "uv", ".*", ".*", ".*")
        .permit("uzc", "uv", ".*", ".*", ".*")
        .permit("un", "uv", ".*", ".*", ".*")
        .permit("lu", "qv", ".*", ".*", ".*")
        .permit("lu", "zv", ".*", ".*", ".*")
        .permit("free", "lv", ".*", ".*", ".*")
        .permit("uc", "uv", ".*", ".*", ".*")
        .permit("uch", "uv", ".*", ".*", ".*")
        .vhost_limits("lv", r#"{"max-connections":2}"#)
        .vhost_limits("qv", r#"{"max-queues":2}"#)
        .vhost_limits("zv", r#"{"max-connections":0}"#)
        // Negative: unlimited.
        .vhost_limits("nv", r#"{"max-connections":-1,"max-queues":-1}"#)
}

fn limits_broker() -> Arc<Broker> {
    static SLOT: OnceLock<Mutex<Weak<Broker>>> = OnceLock::new();
    group_broker(&SLOT, limits_defs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vhost_connection_limit() {
    if skip_if_external("vhost_connection_limit") {
        return;
    }
    let broker = limits_broker();
    let first = raw_open_as(&broker, "lu", PW, "lv").await;
    let second = connect_as(&broker, "lu", PW, "lv").await;
    // The limit counts every user's connections to the vhost.
    assert_reply(
        try_connect(&broker, "free", PW, "lv").await,
        530,
        "NOT_ALLOWED - access to vhost 'lv' refused for user 'free': connection limit (2) is reached",
    );
    assert_reply(
        try_connect(&broker, "lu", PW, "lv").await,
        530,
        "NOT_ALLOWED - access to vhost 'lv' refused for user 'lu': connection limit (2) is reached",
    );
    // Closing a connection frees its slot.
    raw_close(first).await;
    let third = connect_as(&broker, "free", PW, "lv").await;
    round_trip(&chan(&third).await).await;
    round_trip(&chan(&second).await).await;

    assert_reply(
        try_connect(&broker, "lu", PW, "zv").await,
        530,
        "NOT_ALLOWED - access to vhost 'zv' refused for user 'lu': connection limit (0) is reached",
    );
    // A negative limit is no limit.
    let mut unlimited = Vec::new();
    for _ in 0..3 {
        unlimited.push(connect_as(&broker, "lu", PW, "nv").await);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vhost_queue_limit() {
    if skip_if_external("vhost_queue_limit") {
        return;
    }
    let broker = limits_broker();
    let conn = connect_as(&broker, "lu", PW, "qv").await;
    let ch = chan(&conn).await;
    declare_q(&ch, "q1", no_args()).await.expect("first queue");
    declare_q(&ch, "q2", no_args()).await.expect("second queue");
    declare_q(&ch, "q1", no_args())
        .await
        .expect("redeclaring an existing queue at the limit");
    passive_declare(&ch, "q2")
        .await
        .expect("passive declare at the limit");
    let r = declare_q(&ch, "q3", no_args()).await;
    assert_reply(
        r,
        406,
        "PRECONDITION_FAILED - cannot declare queue 'q3': queue limit in vhost 'qv' (2) is reached",
    );
    assert!(!ch.status().connected() && conn.status().connected());

    // Server-named queues count too.
    let ch = chan(&conn).await;
    let (code, text) = reply_of(declare_q(&ch, "", no_args()).await);
    assert_eq!(code, 406, "{text}");
    let name = text
        .strip_prefix("PRECONDITION_FAILED - cannot declare queue '")
        .and_then(|t| t.strip_suffix("': queue limit in vhost 'qv' (2) is reached"))
        .unwrap_or_else(|| panic!("unexpected text {text:?}"));
    assert!(name.starts_with("amq.gen-"), "{text:?}");

    // Deleting a queue frees its slot.
    let ch = chan(&conn).await;
    within(ch.queue_delete("q1".into(), QueueDeleteOptions::default()))
        .await
        .expect("delete q1");
    declare_q(&ch, "q3", no_args())
        .await
        .expect("q3 after deleting q1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_connection_limit() {
    if skip_if_external("user_connection_limit") {
        return;
    }
    let broker = limits_broker();
    let first = raw_open_as(&broker, "uc", PW, "uv").await;
    let second = connect_as(&broker, "uc", PW, "uv").await;
    assert_reply(
        try_connect(&broker, "uc", PW, "uv").await,
        530,
        "NOT_ALLOWED - connection refused for user 'uc': user connection limit (2) is reached",
    );
    raw_close(first).await;
    let third = connect_as(&broker, "uc", PW, "uv").await;
    round_trip(&chan(&third).await).await;
    round_trip(&chan(&second).await).await;

    // 0 allows no connection at all; a negative limit is no limit.
    assert_reply(
        try_connect(&broker, "uz", PW, "uv").await,
        530,
        "NOT_ALLOWED - connection refused for user 'uz': user connection limit (0) is reached",
    );
    let mut unlimited = Vec::new();
    for _ in 0..3 {
        unlimited.push(connect_as(&broker, "un", PW, "uv").await);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_channel_limit() {
    if skip_if_external("user_channel_limit") {
        return;
    }
    let broker = limits_broker();
    let text = "NOT_ALLOWED - number of channels opened for user 'uch' has reached the maximum allowed user limit of 2";
    let first = connect_as(&broker, "uch", PW, "uv").await;
    let ch1 = chan(&first).await;
    let ch2 = chan(&first).await;
    // The limit is per user, across connections; exceeding it is a connection error.
    let second = connect_as(&broker, "uch", PW, "uv").await;
    assert_reply(within(second.create_channel()).await, 530, text);
    assert!(!second.status().connected(), "530 closes the connection");
    assert!(first.status().connected());

    // Closing a channel frees its slot.
    within(ch1.close(200, "bye".into())).await.expect("close");
    let third = connect_as(&broker, "uch", PW, "uv").await;
    let ch3 = chan(&third).await;
    round_trip(&ch3).await;
    assert_reply(within(third.create_channel()).await, 530, text);
    round_trip(&ch2).await;

    // 0 allows no channel at all; a negative limit is no limit.
    let zero = connect_as(&broker, "uzc", PW, "uv").await;
    assert_reply(
        within(zero.create_channel()).await,
        530,
        "NOT_ALLOWED - number of channels opened for user 'uzc' has reached the maximum allowed user limit of 0",
    );
    let unlimited = connect_as(&broker, "un", PW, "uv").await;
    let mut channels = Vec::new();
    for _ in 0..3 {
        channels.push(chan(&unlimited).await);
    }
}
