//! Kafka connections end to end inside the process: a `KafkaFront` on an in-memory user
//! store, a real listener, and raw requests encoded with `kafka-protocol` — SASL on the
//! wire, authorization of each API, vhosts, and `delete_vhost`.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use ferrymq_auth::scram::{ScramClient, ScramMechanism};
use ferrymq_auth::{AuthStore, PasswordSpec, Permission, Seed, VhostInfo};
use ferrymq_kafka::kafka_protocol::messages::*;
use ferrymq_kafka::kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use ferrymq_kafka::sasl::Mechanism;
use ferrymq_store::log::FsyncPolicy;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::*;

fn sb(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_owned())
}

/// guest (loopback, `.*` on `/`); adm/pw `.*` on `/` and `v1`; bob/pw writes `^wo\.` on `/`
/// and nothing else; vhost `v1`.
fn store() -> Arc<AuthStore> {
    let s = AuthStore::in_memory(Seed::default()).unwrap();
    s.put_vhost(VhostInfo::new("v1")).unwrap();
    for u in ["adm", "bob"] {
        s.put_user(u, Some(PasswordSpec::Plain("pw".into())), vec![])
            .unwrap();
    }
    s.set_permissions("adm", "/", Permission::all()).unwrap();
    s.set_permissions("adm", "v1", Permission::all()).unwrap();
    s.set_permissions(
        "bob",
        "/",
        Permission {
            configure: "^$".into(),
            write: r"^wo\.".into(),
            read: "^$".into(),
        },
    )
    .unwrap();
    Arc::new(s)
}

struct Broker {
    front: Arc<KafkaFront>,
    auth: Arc<AuthStore>,
    addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    accept: tokio::task::JoinHandle<()>,
}

async fn start(dir: &Path) -> Broker {
    let auth = store();
    let (shutdown, rx) = watch::channel(false);
    let config = KafkaConfig {
        data_dir: dir.to_path_buf(),
        advertised_host: "127.0.0.1".into(),
        auto_create_topics: true,
        default_partitions: 1,
        fsync: FsyncPolicy::Never,
        default_vhost: "/".into(),
        sasl_mechanisms: Mechanism::ALL.to_vec(),
        fetch_session_slots: 1000,
        cleaner_dedupe_buffer_bytes: 1 << 20,
        groups: Default::default(),
    };
    let front = KafkaFront::open(config, auth.clone(), rx).unwrap();
    let (addr, accept) = listen(front.clone(), "127.0.0.1", 0).await.unwrap();
    Broker {
        front,
        auth,
        addr,
        shutdown,
        accept,
    }
}

impl Broker {
    async fn stop(self) {
        self.shutdown.send_replace(true);
        let _ = self.accept.await;
        self.front.stop().await;
    }
}

/// A raw Kafka client connection.
struct Wire {
    stream: TcpStream,
    cid: i32,
}

impl Wire {
    async fn connect(b: &Broker) -> Wire {
        Wire {
            stream: TcpStream::connect(b.addr).await.unwrap(),
            cid: 0,
        }
    }

    /// Sends one request; the response, or `None` if the broker closed the connection.
    async fn call(&mut self, key: ApiKey, v: i16, body: RequestKind) -> Option<ResponseKind> {
        self.cid += 1;
        let mut buf = BytesMut::new();
        buf.put_i32(0);
        RequestHeader::default()
            .with_request_api_key(key as i16)
            .with_request_api_version(v)
            .with_correlation_id(self.cid)
            .with_client_id(Some(sb("test")))
            .encode(&mut buf, key.request_header_version(v))
            .unwrap();
        body.encode(&mut buf, v).unwrap();
        let n = (buf.len() - 4) as i32;
        buf[..4].copy_from_slice(&n.to_be_bytes());
        self.stream.write_all(&buf).await.ok()?;
        let mut len = [0u8; 4];
        tokio::time::timeout(Duration::from_secs(10), self.stream.read_exact(&mut len))
            .await
            .expect("no answer within 10 s")
            .ok()?;
        let mut body = vec![0u8; i32::from_be_bytes(len) as usize];
        self.stream.read_exact(&mut body).await.ok()?;
        let mut body = Bytes::from(body);
        let header = ResponseHeader::decode(&mut body, key.response_header_version(v)).unwrap();
        assert_eq!(header.correlation_id, self.cid);
        Some(ResponseKind::decode(key, &mut body, v).unwrap())
    }

    async fn handshake(&mut self, mechanism: &str) -> SaslHandshakeResponse {
        let req = SaslHandshakeRequest::default().with_mechanism(sb(mechanism));
        match self
            .call(ApiKey::SaslHandshake, 1, RequestKind::SaslHandshake(req))
            .await
        {
            Some(ResponseKind::SaslHandshake(r)) => r,
            other => panic!("{other:?}"),
        }
    }

    async fn authenticate(&mut self, token: &[u8]) -> Option<SaslAuthenticateResponse> {
        let req = SaslAuthenticateRequest::default().with_auth_bytes(Bytes::copy_from_slice(token));
        match self
            .call(
                ApiKey::SaslAuthenticate,
                2,
                RequestKind::SaslAuthenticate(req),
            )
            .await?
        {
            ResponseKind::SaslAuthenticate(r) => Some(r),
            other => panic!("{other:?}"),
        }
    }

    /// Handshake + PLAIN; panics unless it succeeds.
    async fn login(b: &Broker, user: &str) -> Wire {
        let mut w = Wire::connect(b).await;
        assert_eq!(w.handshake("PLAIN").await.error_code, 0);
        let r = w
            .authenticate(format!("\0{user}\0pw").as_bytes())
            .await
            .unwrap();
        assert_eq!(r.error_code, 0, "{r:?}");
        w
    }

    /// (topic, error code) of a Metadata v12 answer (`None` = all topics).
    async fn metadata(&mut self, topics: Option<&[&str]>) -> Option<Vec<(String, i16)>> {
        let req = MetadataRequest::default()
            .with_topics(topics.map(|ts| {
                ts.iter()
                    .map(|t| {
                        metadata_request::MetadataRequestTopic::default()
                            .with_name(Some(TopicName(sb(t))))
                    })
                    .collect()
            }))
            .with_allow_auto_topic_creation(false);
        match self
            .call(ApiKey::Metadata, 12, RequestKind::Metadata(req))
            .await?
        {
            ResponseKind::Metadata(r) => Some(
                r.topics
                    .into_iter()
                    .map(|t| {
                        (
                            t.name.map(|n| n.0.to_string()).unwrap_or_default(),
                            t.error_code,
                        )
                    })
                    .collect(),
            ),
            other => panic!("{other:?}"),
        }
    }

    async fn create_topic(&mut self, name: &str) -> i16 {
        let req = CreateTopicsRequest::default().with_topics(vec![
            create_topics_request::CreatableTopic::default()
                .with_name(TopicName(sb(name)))
                .with_num_partitions(1)
                .with_replication_factor(1),
        ]);
        match self
            .call(ApiKey::CreateTopics, 7, RequestKind::CreateTopics(req))
            .await
        {
            Some(ResponseKind::CreateTopics(r)) => r.topics[0].error_code,
            other => panic!("{other:?}"),
        }
    }

    /// Waits for the broker to close the connection.
    async fn closed(&mut self) -> bool {
        let mut byte = [0u8; 1];
        matches!(
            tokio::time::timeout(Duration::from_secs(5), self.stream.read(&mut byte)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }
}

fn names(m: &[(String, i16)]) -> Vec<&str> {
    m.iter().map(|(n, _)| n.as_str()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sasl_is_advertised_and_plain_and_scram_log_in() {
    let dir = tempfile::tempdir().unwrap();
    let b = start(dir.path()).await;
    let mut w = Wire::connect(&b).await;
    let Some(ResponseKind::ApiVersions(v)) = w
        .call(
            ApiKey::ApiVersions,
            3,
            RequestKind::ApiVersions(ApiVersionsRequest::default()),
        )
        .await
    else {
        panic!()
    };
    let has = |k: ApiKey| v.api_keys.iter().any(|a| a.api_key == k as i16);
    assert!(has(ApiKey::SaslHandshake) && has(ApiKey::SaslAuthenticate));
    let hs = w.handshake("PLAIN").await;
    assert_eq!(hs.error_code, 0);
    assert_eq!(hs.mechanisms.len(), 3);
    let r = w.authenticate(b"\0adm\0pw").await.unwrap();
    assert_eq!((r.error_code, r.session_lifetime_ms), (0, 0));
    assert_eq!(w.create_topic("t1").await, 0);
    assert_eq!(names(&w.metadata(None).await.unwrap()), ["t1"]);

    for m in [ScramMechanism::Sha256, ScramMechanism::Sha512] {
        let mut w = Wire::connect(&b).await;
        assert_eq!(w.handshake(m.name()).await.error_code, 0);
        let (mut client, c1) = ScramClient::new(m, "adm", "pw", "abcdef");
        let s1 = w.authenticate(&c1).await.unwrap();
        assert_eq!(s1.error_code, 0);
        let c2 = client.server_first(&s1.auth_bytes).unwrap();
        let s2 = w.authenticate(&c2).await.unwrap();
        assert_eq!(s2.error_code, 0);
        client.server_final(&s2.auth_bytes).unwrap();
        assert_eq!(names(&w.metadata(None).await.unwrap()), ["t1"]);
    }
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_answer_then_close_and_leave_others_alone() {
    let dir = tempfile::tempdir().unwrap();
    let b = start(dir.path()).await;
    let mut other = Wire::login(&b, "adm").await;

    let mut w = Wire::connect(&b).await;
    assert_eq!(w.handshake("PLAIN").await.error_code, 0);
    let r = w.authenticate(b"\0adm\0wrong").await.unwrap();
    assert_eq!(r.error_code, 58);
    assert_eq!(
        r.error_message.as_deref(),
        Some("Authentication failed: Invalid username or password")
    );
    assert!(w.closed().await);

    let mut w = Wire::connect(&b).await;
    let hs = w.handshake("GSSAPI").await;
    assert_eq!(hs.error_code, 33);
    assert!(w.closed().await);

    // A request between the handshake and the token: not served, closed.
    let mut w = Wire::connect(&b).await;
    assert_eq!(w.handshake("PLAIN").await.error_code, 0);
    assert_eq!(w.metadata(None).await, None);

    assert!(other.metadata(None).await.is_some());
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unauthenticated_loopback_client_is_guest() {
    let dir = tempfile::tempdir().unwrap();
    let b = start(dir.path()).await;
    let mut w = Wire::connect(&b).await;
    assert_eq!(w.create_topic("g1").await, 0);
    assert_eq!(names(&w.metadata(None).await.unwrap()), ["g1"]);
    // Without guest the same client is disconnected.
    b.auth.delete_user("guest").unwrap();
    let mut w = Wire::connect(&b).await;
    assert_eq!(w.metadata(None).await, None);
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_only_user_sees_and_writes_only_its_topics() {
    let dir = tempfile::tempdir().unwrap();
    let b = start(dir.path()).await;
    let mut adm = Wire::login(&b, "adm").await;
    for t in ["wo.a", "secret"] {
        assert_eq!(adm.create_topic(t).await, 0);
    }
    let mut bob = Wire::login(&b, "bob").await;
    assert_eq!(names(&bob.metadata(None).await.unwrap()), ["wo.a"]);
    assert_eq!(
        bob.metadata(Some(&["secret", "wo.a", "wo.missing"]))
            .await
            .unwrap(),
        vec![
            ("secret".to_owned(), 29),
            ("wo.a".to_owned(), 0),
            ("wo.missing".to_owned(), 3)
        ]
    );
    // No configure: creating is refused.
    assert_eq!(bob.create_topic("wo.new").await, 29);
    // Produce to a topic it may not write: 29 before the records are even looked at.
    let req = ProduceRequest::default().with_acks(1).with_topic_data(vec![
        produce_request::TopicProduceData::default()
            .with_name(TopicName(sb("secret")))
            .with_partition_data(vec![produce_request::PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(Bytes::from_static(b"not a batch")))]),
    ]);
    let Some(ResponseKind::Produce(r)) = bob
        .call(ApiKey::Produce, 9, RequestKind::Produce(req))
        .await
    else {
        panic!()
    };
    assert_eq!(r.responses[0].partition_responses[0].error_code, 29);
    // Groups need read on the group id.
    let req = FindCoordinatorRequest::default().with_key(sb("wo.g"));
    let Some(ResponseKind::FindCoordinator(r)) = bob
        .call(
            ApiKey::FindCoordinator,
            3,
            RequestKind::FindCoordinator(req),
        )
        .await
    else {
        panic!()
    };
    assert_eq!(r.error_code, 30);
    // A revoke applies to the open connection's next request.
    b.auth.clear_permissions("bob", "/").unwrap();
    assert_eq!(bob.metadata(None).await.unwrap(), vec![]);
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vhosts_are_separate_and_delete_vhost_removes_one() {
    let dir = tempfile::tempdir().unwrap();
    let b = start(dir.path()).await;
    let mut root = Wire::login(&b, "adm").await;
    let mut v1 = Wire::login(&b, "v1:adm").await;
    assert_eq!(v1.create_topic("x").await, 0);
    assert_eq!(root.create_topic("y").await, 0);
    assert_eq!(names(&v1.metadata(None).await.unwrap()), ["x"]);
    assert_eq!(names(&root.metadata(None).await.unwrap()), ["y"]);
    let v1_kafka = crate::paths::vhost_dir(dir.path(), "v1").join("kafka");
    assert!(v1_kafka.join("x-0").exists() || v1_kafka.exists());
    // A vhost must exist in the store; bob has no row in v1.
    for token in [&b"\0nowhere:adm\0pw"[..], b"\0v1:bob\0pw"] {
        let mut w = Wire::connect(&b).await;
        w.handshake("PLAIN").await;
        assert_eq!(w.authenticate(token).await.unwrap().error_code, 58);
    }

    b.auth.delete_vhost("v1").unwrap();
    b.front.delete_vhost("v1").unwrap();
    assert!(v1.closed().await, "connections in a deleted vhost close");
    assert!(!v1_kafka.exists());
    assert_eq!(names(&root.metadata(None).await.unwrap()), ["y"]);
    // Created again, it starts empty.
    b.auth.put_vhost(VhostInfo::new("v1")).unwrap();
    b.auth
        .set_permissions("adm", "v1", Permission::all())
        .unwrap();
    let mut v1 = Wire::login(&b, "v1:adm").await;
    assert_eq!(v1.metadata(None).await.unwrap(), vec![]);
    drop(v1);
    drop(root);
    b.stop().await;
    let trash = dir.path().join("trash");
    assert!(std::fs::read_dir(&trash).map_or(true, |mut d| d.next().is_none()));
}

/// A Fetch v12 of topic `x` partition 0 in session (`id`, `epoch`): (error, session id,
/// partitions answered).
async fn fetch_in_session(w: &mut Wire, id: i32, epoch: i32, list: bool) -> (i16, i32, usize) {
    let topics = if list {
        vec![fetch_request::FetchTopic::default()
            .with_topic(TopicName(sb("x")))
            .with_partitions(vec![fetch_request::FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(0)
                .with_partition_max_bytes(1 << 20)])]
    } else {
        vec![]
    };
    let req = FetchRequest::default()
        .with_max_wait_ms(0)
        .with_max_bytes(1 << 20)
        .with_session_id(id)
        .with_session_epoch(epoch)
        .with_topics(topics);
    match w.call(ApiKey::Fetch, 12, RequestKind::Fetch(req)).await {
        Some(ResponseKind::Fetch(r)) => (
            r.error_code,
            r.session_id,
            r.responses.iter().map(|t| t.partitions.len()).sum(),
        ),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetch_session_belongs_to_its_vhost_and_user() {
    let dir = tempfile::tempdir().unwrap();
    let b = start(dir.path()).await;
    let mut adm = Wire::login(&b, "adm").await;
    assert_eq!(adm.create_topic("x").await, 0);
    let (err, id, n) = fetch_in_session(&mut adm, 0, 0, true).await;
    assert_eq!((err, n), (0, 1));
    assert!(id > 0, "a full fetch creates a session");
    // The same user in another vhost, and another user in the same vhost: unknown id.
    let mut v1 = Wire::login(&b, "v1:adm").await;
    assert_eq!(v1.create_topic("x").await, 0);
    let mut guest = Wire::connect(&b).await;
    for w in [&mut v1, &mut guest] {
        let (err, sid, n) = fetch_in_session(w, id, 1, false).await;
        assert_eq!((err, sid, n), (70, 0, 0), "FETCH_SESSION_ID_NOT_FOUND");
        // Nor can they close it.
        assert_eq!(fetch_in_session(w, id, -1, true).await.1, 0);
    }
    // Its owner goes on (nothing new: an empty incremental answer), even from another
    // connection; a wrong epoch is INVALID_FETCH_SESSION_EPOCH.
    let mut adm2 = Wire::login(&b, "adm").await;
    assert_eq!(fetch_in_session(&mut adm2, id, 1, false).await, (0, id, 0));
    assert_eq!(fetch_in_session(&mut adm, id, 1, false).await.0, 71);
    assert_eq!(fetch_in_session(&mut adm, id, 2, false).await, (0, id, 0));
    // Epoch -1 closes it.
    assert_eq!(fetch_in_session(&mut adm, id, -1, true).await, (0, 0, 1));
    assert_eq!(fetch_in_session(&mut adm, id, 3, false).await.0, 70);
    drop((adm, adm2, v1, guest));
    b.stop().await;
}
