//! Produce, Fetch and ApiVersions on the wire; bad input closes only its connection.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_versions_fallback_and_table() {
    if skip_if_external("api_versions_fallback_and_table") {
        return;
    }
    let broker = Broker::shared();
    let mut c = Client::connect(&broker).await;
    // ApiVersions v99: answered in v0 with UNSUPPORTED_VERSION and the table (KIP-511).
    // (Encoded by hand: the codec refuses unknown versions. Header v1, null client id.)
    c.send_raw(&[0, 0, 0, 10, 0, 18, 0, 99, 0, 0, 0x12, 0x34, 0xff, 0xff])
        .await;
    let (got, r): (i32, ApiVersionsResponse) = c.recv(ApiKey::ApiVersions, 0).await;
    assert_eq!(got, 0x1234);
    assert_eq!(r.error_code, 35);
    let produce = r
        .api_keys
        .iter()
        .find(|k| k.api_key == 0)
        .expect("Produce listed");
    assert_eq!((produce.min_version, produce.max_version), (3, 12));
    // The connection stays usable, and v3 (flexible) works.
    let r: ApiVersionsResponse = c
        .call(
            ApiKey::ApiVersions,
            3,
            &ApiVersionsRequest::default()
                .with_client_software_name(StrBytes::from_static_str("it"))
                .with_client_software_version(StrBytes::from_static_str("1")),
        )
        .await;
    assert_eq!(r.error_code, 0);
    let list_offsets = r
        .api_keys
        .iter()
        .find(|k| k.api_key == 2)
        .expect("ListOffsets");
    assert_eq!(
        list_offsets.max_version, 10,
        "Kafka 4.0's range (kafka-python infers 4.0)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_fetch_and_errors() {
    if skip_if_external("produce_fetch_and_errors") {
        return;
    }
    let broker = Broker::shared();
    let mut c = Client::connect(&broker).await;
    let t = unique("kt");
    c.create_topic(&t, 2, &[("max.message.bytes", "2000")])
        .await;
    assert_eq!(c.produce(&t, 0, -1, batch(&["a", "b"], None)).await, (0, 0));
    assert_eq!(c.produce(&t, 0, 1, batch(&["c"], None)).await, (0, 2));
    let (err, hw, records) = c.fetch(&t, 0, 0, 0).await;
    assert_eq!((err, hw), (0, 3));
    assert_eq!(values(&records), ["a", "b", "c"]);
    assert_eq!(
        records.iter().map(|r| r.offset).collect::<Vec<_>>(),
        [0, 1, 2],
        "{:?}",
        values(&records)
    );
    // Fetching from inside a batch returns the whole batch.
    let (_, _, records) = c.fetch(&t, 0, 1, 0).await;
    assert_eq!(
        records.iter().map(|r| r.offset).collect::<Vec<_>>(),
        [0, 1, 2],
        "{:?}",
        values(&records)
    );
    // Out of range.
    assert_eq!(c.fetch(&t, 0, 4, 0).await.0, 1, "OFFSET_OUT_OF_RANGE");
    // Errors Kafka sends.
    assert_eq!(
        c.produce(&t, 0, 2, batch(&["x"], None)).await.0,
        21,
        "INVALID_REQUIRED_ACKS"
    );
    assert_eq!(
        c.produce(&t, 7, 1, batch(&["x"], None)).await.0,
        3,
        "UNKNOWN_TOPIC_OR_PARTITION"
    );
    assert_eq!(
        c.produce("no-such-topic-x", 0, 1, batch(&["x"], None))
            .await
            .0,
        3
    );
    let big = "x".repeat(3000);
    assert_eq!(
        c.produce(&t, 0, 1, batch(&[&big], None)).await.0,
        10,
        "MESSAGE_TOO_LARGE"
    );
    // A corrupt batch: CORRUPT_MESSAGE, and nothing appended.
    let mut bad = batch(&["zzz"], None).to_vec();
    let last = bad.len() - 1;
    bad[last] ^= 0xff;
    assert_eq!(
        c.produce(&t, 0, 1, Bytes::from(bad)).await.0,
        2,
        "CORRUPT_MESSAGE"
    );
    // Old message format (magic 1).
    let mut old = batch(&["old"], None).to_vec();
    old[16] = 1;
    assert_eq!(
        c.produce(&t, 0, 1, Bytes::from(old)).await.0,
        87,
        "INVALID_RECORD"
    );
    assert_eq!(
        c.fetch(&t, 0, 0, 0).await.1,
        3,
        "nothing appended by bad produces"
    );
    // ListOffsets: earliest, latest, by timestamp.
    let req = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![list_offsets_request::ListOffsetsTopic::default()
            .with_name(topic(&t))
            .with_partitions(
                [
                    -2i64,
                    -1,
                    1_700_000_000_000,
                    1_700_000_000_001,
                    1_800_000_000_000,
                ]
                .iter()
                .map(|&ts| {
                    list_offsets_request::ListOffsetsPartition::default()
                        .with_partition_index(0)
                        .with_timestamp(ts)
                })
                .collect(),
            )]);
    let r: ListOffsetsResponse = c.call(ApiKey::ListOffsets, 7, &req).await;
    let offsets: Vec<i64> = r.topics[0].partitions.iter().map(|p| p.offset).collect();
    // The second record of the first batch has timestamp ..001: the exact record.
    assert_eq!(offsets, [0, 3, 0, 1, -1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_zero_sends_no_response() {
    if skip_if_external("acks_zero_sends_no_response") {
        return;
    }
    let broker = Broker::shared();
    let mut c = Client::connect(&broker).await;
    let t = unique("k0");
    c.create_topic(&t, 1, &[]).await;
    c.send(
        ApiKey::Produce,
        9,
        &produce_req(&t, 0, 0, batch(&["fire", "forget"], None)),
    )
    .await;
    // The next frame on the wire answers the Metadata request, not the produce.
    let cid = c
        .send(ApiKey::Metadata, 12, &MetadataRequest::default())
        .await;
    let (got, _): (i32, MetadataResponse) = c.recv(ApiKey::Metadata, 12).await;
    assert_eq!(got, cid);
    let (_, hw, records) = c.fetch(&t, 0, 0, 1000).await;
    assert_eq!(hw, 2);
    assert_eq!(values(&records), ["fire", "forget"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_closes_only_its_connection() {
    if skip_if_external("bad_input_closes_only_its_connection") {
        return;
    }
    let broker = Broker::shared();
    let mut healthy = Client::connect(&broker).await;
    let t = unique("kbad");
    healthy.create_topic(&t, 1, &[]).await;
    // Negative size; garbage; unknown API key; unsupported version; truncated body.
    let mut cases: Vec<Vec<u8>> = vec![
        vec![0xff, 0xff, 0xff, 0xf0, 1, 2, 3],
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        vec![0, 0, 0, 8, 0x7f, 0x7f, 0, 0, 0, 0, 0, 1],
        vec![0, 0, 0, 8, 0, 0, 0, 99, 0, 0, 0, 1],
    ];
    let mut truncated = BytesMut::new();
    truncated.put_i32(0);
    RequestHeader::default()
        .with_request_api_key(ApiKey::Metadata as i16)
        .with_request_api_version(4)
        .with_correlation_id(1)
        .encode(&mut truncated, 1)
        .unwrap();
    truncated.put_i32(5); // five topics announced, none follow
    let n = (truncated.len() - 4) as i32;
    truncated[..4].copy_from_slice(&n.to_be_bytes());
    cases.push(truncated.to_vec());
    for (i, bytes) in cases.iter().enumerate() {
        let mut c = Client::connect(&broker).await;
        c.send_raw(bytes).await;
        assert!(c.is_closed().await, "case {i}: connection closed");
    }
    // The other connection never noticed.
    assert_eq!(
        healthy
            .produce(&t, 0, 1, batch(&["still", "fine"], None))
            .await,
        (0, 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_long_polls() {
    if skip_if_external("fetch_long_polls") {
        return;
    }
    let broker = Broker::shared();
    let mut c = Client::connect(&broker).await;
    let t = unique("kpoll");
    c.create_topic(&t, 1, &[]).await;
    // Nothing to read: the answer waits for max_wait_ms.
    let started = Instant::now();
    let (err, hw, records) = c.fetch(&t, 0, 0, 400).await;
    assert_eq!((err, hw, records.len()), (0, 0, 0));
    assert!(
        started.elapsed() >= Duration::from_millis(350),
        "waited {:?}",
        started.elapsed()
    );
    // A produce on another connection wakes a long poll well before its deadline.
    let mut fetcher = Client::connect(&broker).await;
    let cid = fetcher
        .send(ApiKey::Fetch, 11, &fetch_req(&t, 0, 0, 15_000, 1))
        .await;
    let started = Instant::now();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(c.produce(&t, 0, 1, batch(&["wake"], None)).await, (0, 0));
    let (got, r): (i32, FetchResponse) = fetcher.recv(ApiKey::Fetch, 11).await;
    assert_eq!(got, cid);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "woken by the produce"
    );
    assert_eq!(r.responses[0].partitions[0].high_watermark, 1);
}

/// An array length of i32::MAX (a 20-byte request) once made the decoder's allocation abort
/// the broker; it must close only its own connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_array_length_closes_only_its_connection() {
    if skip_if_external("huge_array_length_closes_only_its_connection") {
        return;
    }
    let broker = Broker::shared();
    let mut healthy = Client::connect(&broker).await;
    let t = unique("khuge");
    healthy.create_topic(&t, 1, &[]).await;
    // Metadata v4 (header v1, null client id), topics array of 0x7fffffff entries; and
    // the same in a flexible version (v12: compact array, varint length).
    let mut classic = vec![0, 3, 0, 4, 0, 0, 0, 1, 0xff, 0xff, 0x7f, 0xff, 0xff, 0xff];
    classic.extend([0u8; 8]);
    let mut flexible = vec![0, 3, 0, 12, 0, 0, 0, 1, 0xff, 0xff, 0];
    flexible.extend([0xff, 0xff, 0xff, 0xff, 0x07]);
    flexible.extend([0u8; 8]);
    for body in [classic, flexible] {
        let mut frame = (body.len() as i32).to_be_bytes().to_vec();
        frame.extend(body);
        let mut c = Client::connect(&broker).await;
        c.send_raw(&frame).await;
        assert!(c.is_closed().await);
    }
    assert_eq!(
        healthy.produce(&t, 0, 1, batch(&["alive"], None)).await,
        (0, 0)
    );
}

/// Every advertised version of every API answers a minimal request (a response that
/// cannot be encoded at some version would otherwise leave clients waiting).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_advertised_version_answers() {
    if skip_if_external("every_advertised_version_answers") {
        return;
    }
    let broker = Broker::shared();
    let mut c = Client::connect(&broker).await;
    let t = unique("kver");
    c.create_topic(&t, 1, &[]).await;
    let table: ApiVersionsResponse = c
        .call(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default())
        .await;
    async fn check<Q: Encodable>(c: &mut Client, key: ApiKey, version: i16, req: Q) {
        let cid = c.send(key, version, &req).await;
        let mut frame = c
            .read_frame()
            .await
            .unwrap_or_else(|| panic!("{key:?} v{version}: connection closed"));
        let h = ResponseHeader::decode(&mut frame, key.response_header_version(version))
            .expect("header");
        assert_eq!(h.correlation_id, cid, "{key:?} v{version}");
        ResponseKind::decode(key, &mut frame, version)
            .unwrap_or_else(|e| panic!("{key:?} v{version}: {e}"));
    }
    let mut checked = 0;
    for api in &table.api_keys {
        let key = ApiKey::try_from(api.api_key).expect("known key");
        for v in api.min_version..=api.max_version {
            let name = topic(&t);
            match key {
                ApiKey::Metadata => {
                    let req = MetadataRequest::default().with_topics(Some(vec![
                        metadata_request::MetadataRequestTopic::default().with_name(Some(name)),
                    ]));
                    check(&mut c, key, v, req).await
                }
                ApiKey::Produce => {
                    check(&mut c, key, v, produce_req(&t, 0, 1, batch(&["v"], None))).await
                }
                ApiKey::Fetch => check(&mut c, key, v, fetch_req(&t, 0, 0, 0, 0)).await,
                ApiKey::ListOffsets => {
                    let req = ListOffsetsRequest::default().with_topics(vec![
                        list_offsets_request::ListOffsetsTopic::default()
                            .with_name(name)
                            .with_partitions(vec![
                                list_offsets_request::ListOffsetsPartition::default()
                                    .with_timestamp(-1),
                            ]),
                    ]);
                    check(&mut c, key, v, req).await
                }
                ApiKey::FindCoordinator if v >= 4 => {
                    let req = FindCoordinatorRequest::default()
                        .with_coordinator_keys(vec![StrBytes::from_static_str("g")]);
                    check(&mut c, key, v, req).await
                }
                ApiKey::FindCoordinator => {
                    check(
                        &mut c,
                        key,
                        v,
                        FindCoordinatorRequest::default().with_key(StrBytes::from_static_str("g")),
                    )
                    .await
                }
                ApiKey::CreateTopics => check(&mut c, key, v, CreateTopicsRequest::default()).await,
                ApiKey::DeleteTopics => check(&mut c, key, v, DeleteTopicsRequest::default()).await,
                ApiKey::DescribeConfigs => {
                    let req = DescribeConfigsRequest::default().with_resources(vec![
                        describe_configs_request::DescribeConfigsResource::default()
                            .with_resource_type(2)
                            .with_resource_name(StrBytes::from_string(t.clone())),
                    ]);
                    check(&mut c, key, v, req).await
                }
                ApiKey::IncrementalAlterConfigs => {
                    check(&mut c, key, v, IncrementalAlterConfigsRequest::default()).await
                }
                ApiKey::CreatePartitions => {
                    check(&mut c, key, v, CreatePartitionsRequest::default()).await
                }
                ApiKey::DeleteRecords => {
                    check(&mut c, key, v, DeleteRecordsRequest::default()).await
                }
                ApiKey::DescribeCluster => {
                    check(&mut c, key, v, DescribeClusterRequest::default()).await
                }
                ApiKey::AlterConfigs => check(&mut c, key, v, AlterConfigsRequest::default()).await,
                ApiKey::DescribeLogDirs => {
                    check(&mut c, key, v, DescribeLogDirsRequest::default()).await
                }
                ApiKey::DescribeProducers => {
                    check(&mut c, key, v, DescribeProducersRequest::default()).await
                }
                ApiKey::OffsetForLeaderEpoch => {
                    check(&mut c, key, v, OffsetForLeaderEpochRequest::default()).await
                }
                ApiKey::ElectLeaders => check(&mut c, key, v, ElectLeadersRequest::default()).await,
                ApiKey::InitProducerId => {
                    check(
                        &mut c,
                        key,
                        v,
                        InitProducerIdRequest::default().with_transactional_id(None),
                    )
                    .await
                }
                ApiKey::ApiVersions => check(&mut c, key, v, ApiVersionsRequest::default()).await,
                // Transactions: minimal requests for ids the coordinator does not know.
                ApiKey::AddPartitionsToTxn => {
                    check(&mut c, key, v, AddPartitionsToTxnRequest::default()).await
                }
                ApiKey::AddOffsetsToTxn => {
                    check(&mut c, key, v, AddOffsetsToTxnRequest::default()).await
                }
                ApiKey::EndTxn => check(&mut c, key, v, EndTxnRequest::default()).await,
                ApiKey::TxnOffsetCommit => {
                    check(&mut c, key, v, TxnOffsetCommitRequest::default()).await
                }
                ApiKey::DescribeTransactions => {
                    check(&mut c, key, v, DescribeTransactionsRequest::default()).await
                }
                ApiKey::ListTransactions => {
                    check(&mut c, key, v, ListTransactionsRequest::default()).await
                }
                ApiKey::JoinGroup => check(&mut c, key, v, JoinGroupRequest::default()).await,
                ApiKey::SyncGroup => check(&mut c, key, v, SyncGroupRequest::default()).await,
                ApiKey::Heartbeat => check(&mut c, key, v, HeartbeatRequest::default()).await,
                ApiKey::LeaveGroup if v >= 3 => {
                    check(&mut c, key, v, LeaveGroupRequest::default()).await
                }
                ApiKey::LeaveGroup => {
                    check(
                        &mut c,
                        key,
                        v,
                        LeaveGroupRequest::default().with_member_id(StrBytes::from_static_str("m")),
                    )
                    .await
                }
                ApiKey::ListGroups => check(&mut c, key, v, ListGroupsRequest::default()).await,
                ApiKey::DescribeGroups => {
                    check(&mut c, key, v, DescribeGroupsRequest::default()).await
                }
                ApiKey::DeleteGroups => check(&mut c, key, v, DeleteGroupsRequest::default()).await,
                ApiKey::OffsetCommit => check(&mut c, key, v, OffsetCommitRequest::default()).await,
                ApiKey::OffsetFetch => check(&mut c, key, v, OffsetFetchRequest::default()).await,
                // KIP-848: an empty group id is INVALID_REQUEST; the answer must still decode.
                ApiKey::ConsumerGroupHeartbeat => {
                    check(&mut c, key, v, ConsumerGroupHeartbeatRequest::default()).await
                }
                ApiKey::ConsumerGroupDescribe => {
                    let req = ConsumerGroupDescribeRequest::default()
                        .with_group_ids(vec![GroupId(StrBytes::from_static_str("sweep"))]);
                    check(&mut c, key, v, req).await
                }
                ApiKey::OffsetDelete => {
                    let req = OffsetDeleteRequest::default()
                        .with_group_id(GroupId(StrBytes::from_static_str("sweep")));
                    check(&mut c, key, v, req).await
                }
                // ACLs and SCRAM credentials: empty or matching-nothing requests.
                ApiKey::DescribeAcls => {
                    let req = DescribeAclsRequest::default()
                        .with_resource_type_filter(1)
                        .with_pattern_type_filter(1)
                        .with_operation(1)
                        .with_permission_type(1);
                    check(&mut c, key, v, req).await
                }
                ApiKey::CreateAcls => check(&mut c, key, v, CreateAclsRequest::default()).await,
                ApiKey::DeleteAcls => check(&mut c, key, v, DeleteAclsRequest::default()).await,
                ApiKey::DescribeUserScramCredentials => {
                    check(
                        &mut c,
                        key,
                        v,
                        DescribeUserScramCredentialsRequest::default(),
                    )
                    .await
                }
                ApiKey::AlterUserScramCredentials => {
                    check(&mut c, key, v, AlterUserScramCredentialsRequest::default()).await
                }
                // SASL changes a connection's state: each version on its own connection.
                ApiKey::SaslHandshake => {
                    let mut s = Client::connect(&broker).await;
                    let req = SaslHandshakeRequest::default()
                        .with_mechanism(StrBytes::from_static_str("PLAIN"));
                    check(&mut s, key, v, req).await
                }
                ApiKey::SaslAuthenticate => {
                    let mut s = Client::connect(&broker).await;
                    let hs = SaslHandshakeRequest::default()
                        .with_mechanism(StrBytes::from_static_str("PLAIN"));
                    check(&mut s, ApiKey::SaslHandshake, 1, hs).await;
                    let req = SaslAuthenticateRequest::default()
                        .with_auth_bytes(bytes::Bytes::from_static(b"\0guest\0guest"));
                    check(&mut s, key, v, req).await
                }
                other => panic!("advertised {other:?} has no check here"),
            }
            checked += 1;
        }
    }
    assert!(checked > 100, "{checked} versions checked");
}
