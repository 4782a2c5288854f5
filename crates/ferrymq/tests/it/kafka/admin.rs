//! Topic administration, configs, retention and compaction; kcat end to end.

use super::*;

/// kcat (librdkafka 2.0.2 from Debian): metadata, produce, consume.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kcat_produces_and_consumes() {
    if skip_if_external("kcat_produces_and_consumes") {
        return;
    }
    let broker = Broker::shared();
    let addr = broker.kafka_addr();
    let t = unique("kcat");
    let run = move |args: Vec<String>, input: &'static str| {
        use std::io::Write;
        let mut child = std::process::Command::new("kcat")
            .args(&args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("kcat is installed (apt-get install kcat)");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "kcat {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let (a, t2) = (addr.clone(), t.clone());
    let produce = vec![
        "-b".into(),
        a.clone(),
        "-P".into(),
        "-t".into(),
        t2.clone(),
        "-K:".into(),
    ];
    tokio::task::spawn_blocking(move || run(produce, "k1:one\nk2:two\nk1:three\n"))
        .await
        .unwrap();
    let consume = vec![
        "-b".into(),
        a.clone(),
        "-C".into(),
        "-t".into(),
        t2.clone(),
        "-e".into(),
        "-f".into(),
        "%o %k %s\n".into(),
    ];
    let out = tokio::task::spawn_blocking(move || run(consume, ""))
        .await
        .unwrap();
    assert_eq!(out, "0 k1 one\n1 k2 two\n2 k1 three\n");
    let list = vec!["-b".into(), a, "-L".into(), "-t".into(), t2];
    let out = tokio::task::spawn_blocking(move || run(list, ""))
        .await
        .unwrap();
    assert!(
        out.contains(&format!("topic \"{t}\" with 1 partitions")),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_topics_configs_and_records() {
    if skip_if_external("admin_topics_configs_and_records") {
        return;
    }
    let broker = Broker::shared();
    let mut c = Client::connect(&broker).await;
    let t = unique("kadm");
    let create = |name: &str, partitions: i32, validate_only: bool| {
        CreateTopicsRequest::default()
            .with_validate_only(validate_only)
            .with_topics(vec![create_topics_request::CreatableTopic::default()
                .with_name(topic(name))
                .with_num_partitions(partitions)
                .with_replication_factor(-1)])
    };
    // validate_only creates nothing; then create with the default partition count.
    let r: CreateTopicsResponse = c.call(ApiKey::CreateTopics, 7, &create(&t, 3, true)).await;
    assert_eq!(r.topics[0].error_code, 0);
    let r: CreateTopicsResponse = c
        .call(ApiKey::CreateTopics, 7, &create(&t, -1, false))
        .await;
    assert_eq!((r.topics[0].error_code, r.topics[0].num_partitions), (0, 1));
    let id = r.topics[0].topic_id;
    assert!(!id.is_nil());
    let r: CreateTopicsResponse = c.call(ApiKey::CreateTopics, 7, &create(&t, 1, false)).await;
    assert_eq!(r.topics[0].error_code, 36, "TOPIC_ALREADY_EXISTS");
    let r: CreateTopicsResponse = c
        .call(ApiKey::CreateTopics, 7, &create("bad name!", 1, false))
        .await;
    assert_eq!(r.topics[0].error_code, 17, "INVALID_TOPIC_EXCEPTION");
    let r: CreateTopicsResponse = c
        .call(ApiKey::CreateTopics, 7, &create(&unique("kz"), 0, false))
        .await;
    assert_eq!(r.topics[0].error_code, 37, "INVALID_PARTITIONS");
    // CreatePartitions: 1 → 3; shrinking is INVALID_PARTITIONS.
    let more = |count| {
        CreatePartitionsRequest::default().with_topics(vec![
            // No assignments: null, as clients send it (an empty list is an assignment
            // of the wrong size, INVALID_REPLICA_ASSIGNMENT as in Kafka).
            create_partitions_request::CreatePartitionsTopic::default()
                .with_name(topic(&t))
                .with_count(count)
                .with_assignments(None),
        ])
    };
    let r: CreatePartitionsResponse = c.call(ApiKey::CreatePartitions, 3, &more(3)).await;
    assert_eq!(r.results[0].error_code, 0);
    let r: CreatePartitionsResponse = c.call(ApiKey::CreatePartitions, 3, &more(2)).await;
    assert_eq!(r.results[0].error_code, 37);
    assert_eq!(c.produce(&t, 2, -1, batch(&["p2"], None)).await, (0, 0));
    // IncrementalAlterConfigs, then DescribeConfigs shows it; a bad value is INVALID_CONFIG.
    let alter = |name: &str, value: &str| {
        IncrementalAlterConfigsRequest::default().with_resources(vec![
            incremental_alter_configs_request::AlterConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(StrBytes::from_string(t.clone()))
                .with_configs(vec![
                    incremental_alter_configs_request::AlterableConfig::default()
                        .with_name(StrBytes::from_string(name.to_owned()))
                        .with_config_operation(0)
                        .with_value(Some(StrBytes::from_string(value.to_owned()))),
                ]),
        ])
    };
    let r: IncrementalAlterConfigsResponse = c
        .call(
            ApiKey::IncrementalAlterConfigs,
            1,
            &alter("retention.ms", "123456"),
        )
        .await;
    assert_eq!(r.responses[0].error_code, 0);
    let r: IncrementalAlterConfigsResponse = c
        .call(
            ApiKey::IncrementalAlterConfigs,
            1,
            &alter("retention.ms", "soon"),
        )
        .await;
    assert_eq!(r.responses[0].error_code, 40, "INVALID_CONFIG");
    let r: DescribeConfigsResponse = c
        .call(
            ApiKey::DescribeConfigs,
            4,
            &DescribeConfigsRequest::default().with_resources(vec![
                describe_configs_request::DescribeConfigsResource::default()
                    .with_resource_type(2)
                    .with_resource_name(StrBytes::from_string(t.clone()))
                    .with_configuration_keys(Some(vec![StrBytes::from_static_str("retention.ms")])),
            ]),
        )
        .await;
    let cfg = &r.results[0].configs[0];
    assert_eq!(
        (cfg.value.as_deref(), cfg.config_source),
        (Some("123456"), 1)
    );
    // DeleteRecords moves the log start offset.
    for v in ["a", "b", "c"] {
        c.produce(&t, 0, -1, batch(&[v], None)).await;
    }
    let r: DeleteRecordsResponse = c
        .call(
            ApiKey::DeleteRecords,
            2,
            &DeleteRecordsRequest::default().with_topics(vec![
                delete_records_request::DeleteRecordsTopic::default()
                    .with_name(topic(&t))
                    .with_partitions(vec![
                        delete_records_request::DeleteRecordsPartition::default().with_offset(2),
                    ]),
            ]),
        )
        .await;
    assert_eq!(
        (
            r.topics[0].partitions[0].error_code,
            r.topics[0].partitions[0].low_watermark
        ),
        (0, 2)
    );
    assert_eq!(
        c.fetch(&t, 0, 0, 0).await.0,
        1,
        "below the start: OFFSET_OUT_OF_RANGE"
    );
    assert_eq!(values(&c.fetch(&t, 0, 2, 0).await.2), ["c"]);
    // DeleteTopics by id; the topic is gone.
    let r: DeleteTopicsResponse = c
        .call(
            ApiKey::DeleteTopics,
            6,
            &DeleteTopicsRequest::default().with_topics(vec![
                delete_topics_request::DeleteTopicState::default().with_topic_id(id),
            ]),
        )
        .await;
    assert_eq!(r.responses[0].error_code, 0);
    assert_eq!(c.produce(&t, 0, 1, batch(&["x"], None)).await.0, 3);
    let r: DeleteTopicsResponse = c
        .call(
            ApiKey::DeleteTopics,
            6,
            &DeleteTopicsRequest::default().with_topics(vec![
                delete_topics_request::DeleteTopicState::default().with_topic_id(id),
            ]),
        )
        .await;
    assert_eq!(r.responses[0].error_code, 100, "UNKNOWN_TOPIC_ID");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletes_old_segments() {
    if skip_if_external("retention_deletes_old_segments") {
        return;
    }
    let broker = Broker::shared();
    let mut c = Client::connect(&broker).await;
    let t = unique("kret");
    c.create_topic(
        &t,
        1,
        &[("segment.bytes", "1000"), ("retention.bytes", "3000")],
    )
    .await;
    let value = "r".repeat(200);
    for _ in 0..60 {
        assert_eq!(c.produce(&t, 0, -1, batch(&[&value], None)).await.0, 0);
    }
    // The partition's retention tick runs every second; wait for the start to move.
    let list = ListOffsetsRequest::default().with_topics(vec![
        list_offsets_request::ListOffsetsTopic::default()
            .with_name(topic(&t))
            .with_partitions(vec![
                list_offsets_request::ListOffsetsPartition::default().with_timestamp(-2)
            ]),
    ]);
    let deadline = Instant::now() + Duration::from_secs(15);
    let start = loop {
        let r: ListOffsetsResponse = c.call(ApiKey::ListOffsets, 7, &list).await;
        let start = r.topics[0].partitions[0].offset;
        if start > 0 || Instant::now() > deadline {
            break start;
        }
        // Retention is a timer in the broker: there is no event to await from here.
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(start > 30, "old segments deleted, start offset {start}");
    let (err, hw, records) = c.fetch(&t, 0, start, 0).await;
    assert_eq!((err, hw), (0, 60));
    assert_eq!(records[0].offset, start);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_keeps_the_latest_record_per_key() {
    if skip_if_external("compaction_keeps_the_latest_record_per_key") {
        return;
    }
    let broker = Broker::shared();
    let mut c = Client::connect(&broker).await;
    let t = unique("kcompact");
    c.create_topic(
        &t,
        1,
        &[("cleanup.policy", "compact"), ("segment.bytes", "1000")],
    )
    .await;
    let keyed = |key: &str, value: &str| {
        let record = Record {
            transactional: false,
            control: false,
            partition_leader_epoch: 0,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: 0,
            sequence: -1,
            timestamp: 1_700_000_000_000,
            key: Some(Bytes::from(key.to_owned())),
            value: Some(Bytes::from(value.to_owned())),
            headers: Default::default(),
            delete_horizon: false,
        };
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            &[record],
            &RecordEncodeOptions {
                version: 2,
                compression: Compression::Gzip,
            },
        )
        .unwrap();
        buf.freeze()
    };
    let rounds = 60;
    for round in 0..rounds {
        for k in 0..5 {
            let (err, _) = c
                .produce(&t, 0, -1, keyed(&format!("k{k}"), &format!("k{k}-{round}")))
                .await;
            assert_eq!(err, 0);
        }
    }
    let produced = rounds * 5;
    // Compaction runs on the partition's one-second tick once a segment is sealed.
    let deadline = Instant::now() + Duration::from_secs(15);
    let records = loop {
        let mut all = Vec::new();
        let mut offset = 0;
        loop {
            let (err, hw, records) = c.fetch(&t, 0, offset, 0).await;
            assert_eq!(err, 0);
            assert_eq!(hw, produced as i64, "offsets never move");
            let Some(last) = records.last() else { break };
            offset = last.offset + 1;
            all.extend(records);
        }
        if all.len() < produced / 2 || Instant::now() > deadline {
            break all;
        }
        // Compaction is a timer in the broker: no event to await from here.
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        records.len() < produced / 2,
        "compacted: {} of {produced} records left",
        records.len()
    );
    let offsets: Vec<i64> = records.iter().map(|r| r.offset).collect();
    assert!(offsets.windows(2).all(|w| w[0] < w[1]), "offsets increase");
    let vals = values(&records);
    for k in 0..5 {
        assert!(
            vals.contains(&format!("k{k}-{}", rounds - 1)),
            "latest value of k{k} kept"
        );
    }
    // Each key appears once in the compacted (sealed) part: at most once per key plus
    // whatever the active segment holds.
    let early: Vec<&String> = vals.iter().filter(|v| v.ends_with("-0")).collect();
    assert!(
        early.is_empty(),
        "superseded first-round values removed: {early:?}"
    );
}
