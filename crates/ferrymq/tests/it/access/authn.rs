//! Authentication.

use super::*;

/// `test12` hashed by RabbitMQ (salt 908DC60A, SHA-256), as `export_definitions` writes it.
const TEST12_HASH: &str = "kI3GCqW5JLMJa4iX1lo7X4D6XbYqlLgxIs30+P6tENUV2POR";

fn auth_defs() -> Defs {
    Defs::new()
        .user_with_hash("hashed", TEST12_HASH, "rabbit_password_hashing_sha256")
        .user("plain", "s3cret", &[])
        .user(ALICE, PW, &[])
        .user("nov", PW, &[])
        .vhost("/")
        .vhost(V1)
        .vhost(V2)
        .permit("hashed", "/", ".*", ".*", ".*")
        .permit("plain", "/", ".*", ".*", ".*")
        .permit(ALICE, V1, ".*", ".*", ".*")
}

fn auth_broker() -> Arc<Broker> {
    static SLOT: OnceLock<Mutex<Weak<Broker>>> = OnceLock::new();
    group_broker(&SLOT, auth_defs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imported_rabbitmq_hash_logs_in() {
    if skip_if_external("imported_rabbitmq_hash_logs_in") {
        return;
    }
    let broker = auth_broker();
    let conn = connect_as(&broker, "hashed", "test12", "/").await;
    round_trip(&chan(&conn).await).await;
    assert_reply(
        try_connect(&broker, "hashed", "test13", "/").await,
        403,
        LOGIN_REFUSED,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_logins_and_vhosts() {
    if skip_if_external("refused_logins_and_vhosts") {
        return;
    }
    let broker = auth_broker();
    // lapin announces authentication_failure_close, so a refused login is a 403 close.
    for (user, password) in [
        ("plain", "wrong"),
        ("ghost", "s3cret"),
        // No guest is created when definitions are loaded.
        ("guest", "guest"),
    ] {
        assert_reply(
            try_connect(&broker, user, password, "/").await,
            403,
            LOGIN_REFUSED,
        );
    }
    // No permission row in an existing vhost, or no such vhost: the same 530.
    assert_reply(
        try_connect(&broker, ALICE, PW, V2).await,
        530,
        &vhost_refused(V2, ALICE),
    );
    assert_reply(
        try_connect(&broker, ALICE, PW, "nope").await,
        530,
        &vhost_refused("nope", ALICE),
    );
    assert_reply(
        try_connect(&broker, "nov", PW, "/").await,
        530,
        &vhost_refused("/", "nov"),
    );
    // The refusal names the mechanism used.
    let amqplain = |user: &str, password: &str| {
        format!(
            "{}?auth_mechanism=amqplain",
            broker.url_for(user, password, "/")
        )
    };
    let r = within(Connection::connect(
        &amqplain("plain", "wrong"),
        ConnectionProperties::default(),
    ))
    .await;
    assert_reply(
        r,
        403,
        "ACCESS_REFUSED - Login was refused using authentication mechanism AMQPLAIN. For details see the broker logfile.",
    );
    let conn = within(Connection::connect(
        &amqplain("hashed", "test12"),
        ConnectionProperties::default(),
    ))
    .await
    .expect("AMQPLAIN login with the imported hash");
    round_trip(&chan(&conn).await).await;

    let ok = connect_as(&broker, ALICE, PW, V1).await;
    round_trip(&chan(&ok).await).await;
}

/// Without `authentication_failure_close` a refused client is told nothing: RabbitMQ
/// closes the socket after a pause.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_login_without_the_capability_is_dropped_silently() {
    if skip_if_external("refused_login_without_the_capability_is_dropped_silently") {
        return;
    }
    let broker = auth_broker();
    let (mut conn, _) = RawConn::start(&broker.addr()).await;
    let start_ok = Args::new()
        .client_properties(&["consumer_cancel_notify"])
        .short("PLAIN")
        .long(b"\0plain\0wrong")
        .short("en_US");
    conn.send_method(0, id::CONNECTION, id::CONNECTION_START_OK, start_ok.bytes())
        .await;
    let sent = Instant::now();
    let rest = conn.read_to_end_raw(1 << 16).await;
    assert!(
        rest.is_empty(),
        "nothing is sent to a refused client without the capability: {rest:?}"
    );
    assert!(
        sent.elapsed() >= Duration::from_secs(1),
        "the socket is closed after a pause, not at once ({:?})",
        sent.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_passwords_are_refused_cleanly() {
    if skip_if_external("huge_passwords_are_refused_cleanly") {
        return;
    }
    let broker = auth_broker();
    let bystander = connect_as(&broker, "plain", "s3cret", "/").await;
    let bystander_ch = chan(&bystander).await;

    // A long password in a start-ok that fits RabbitMQ's pre-authentication frame limit
    // (4096 bytes before 4.1, 8192 since) is just a wrong password.
    let long = "p".repeat(3000);
    assert_reply(
        try_connect(&broker, "plain", &long, "/").await,
        403,
        LOGIN_REFUSED,
    );

    // A 1 MiB start-ok exceeds any pre-authentication frame limit. RabbitMQ drops such a
    // client without a word (after a pause); a connection.close is acceptable too, but only
    // with FRAME_ERROR, and the login must never proceed to connection.tune.
    let (mut raw, _) = RawConn::start(&broker.addr()).await;
    let mut response = b"\0plain\0".to_vec();
    response.extend(std::iter::repeat_n(b'p', 1 << 20));
    let start_ok = Args::new()
        .client_properties(&["authentication_failure_close"])
        .short("PLAIN")
        .long(&response)
        .short("en_US");
    raw.send_lenient(&crate::raw::method_frame(
        0,
        id::CONNECTION,
        id::CONNECTION_START_OK,
        start_ok.bytes(),
    ))
    .await;
    loop {
        match raw.read_frame().await {
            // EOF, or a reset because the broker closed with our bytes unread.
            Ok(None) | Err(_) => break,
            Ok(Some((
                Frame::Method {
                    channel: 0,
                    class: id::CONNECTION,
                    method: id::CONNECTION_CLOSE,
                    args,
                },
                _,
            ))) => {
                let close = crate::raw::parse_close(&args);
                assert_eq!(close.code, 501, "{close:?}");
                assert!(close.text.starts_with("FRAME_ERROR - "), "{close:?}");
                raw.expect_eof().await;
                break;
            }
            Ok(Some((Frame::Heartbeat { .. }, _))) => continue,
            Ok(Some((other, _))) => panic!("unexpected frame after a 1 MiB start-ok: {other:?}"),
        }
    }

    // Through lapin the 1 MiB password fails too, promptly. (lapin cannot frame a start-ok
    // that large: the broker sees a malformed frame, so no particular reply is expected.)
    let huge = "p".repeat(1 << 20);
    let started = Instant::now();
    let err = try_connect(&broker, "plain", &huge, "/")
        .await
        .expect_err("a 1 MiB password cannot log in");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "refused after {:?}: {err:?}",
        started.elapsed()
    );

    // Everyone else carries on.
    assert!(bystander.status().connected());
    round_trip(&bystander_ch).await;
    let again = connect_as(&broker, "plain", "s3cret", "/").await;
    round_trip(&chan(&again).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_user_replaces_guest_on_first_boot_only() {
    if skip_if_external("default_user_replaces_guest_on_first_boot_only") {
        return;
    }
    let data = TempDir::new();
    {
        let broker = Broker::private_on(
            data.path(),
            &["--default-user", "boss", "--default-pass", "boss-pw"],
        );
        assert_reply(
            try_connect(&broker, "guest", "guest", "/").await,
            403,
            LOGIN_REFUSED,
        );
        let conn = connect_as(&broker, "boss", "boss-pw", "/").await;
        round_trip(&chan(&conn).await).await;
    }
    // A later boot with another default user keeps the database as it is.
    let broker = Broker::private_on(
        data.path(),
        &["--default-user", "other", "--default-pass", "other-pw"],
    );
    assert_reply(
        try_connect(&broker, "other", "other-pw", "/").await,
        403,
        LOGIN_REFUSED,
    );
    assert_reply(
        try_connect(&broker, "guest", "guest", "/").await,
        403,
        LOGIN_REFUSED,
    );
    let conn = connect_as(&broker, "boss", "boss-pw", "/").await;
    round_trip(&chan(&conn).await).await;
}
