//! The Kafka listener over real sockets, with `kafka-protocol` as the client codec for
//! protocol-level checks (KIP-511 fallback, acks=0, corrupt batches, bad input closing only
//! its own connection, idempotent sequences across a restart, long polls, kill -9 during
//! acks=all produce) and `kcat` (librdkafka) as a real client. These tests need the
//! ferrymq binary; with an external AMQP broker configured they print SKIPPED.

use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::*;

/// A minimal Kafka client over one connection.
struct Client {
    stream: TcpStream,
    next_cid: i32,
}

impl Client {
    async fn connect(broker: &Broker) -> Client {
        let stream = within(TcpStream::connect(broker.kafka_addr()))
            .await
            .expect("connect to the kafka listener");
        Client {
            stream,
            next_cid: 1,
        }
    }

    async fn send_raw(&mut self, bytes: &[u8]) {
        within(self.stream.write_all(bytes)).await.expect("write");
    }

    /// Sends a request; returns its correlation id.
    async fn send<T: Encodable>(&mut self, key: ApiKey, version: i16, body: &T) -> i32 {
        let cid = self.next_cid;
        self.next_cid += 1;
        let mut buf = BytesMut::new();
        buf.put_i32(0);
        RequestHeader::default()
            .with_request_api_key(key as i16)
            .with_request_api_version(version)
            .with_correlation_id(cid)
            .with_client_id(Some(StrBytes::from_static_str("ferrymq-it")))
            .encode(&mut buf, key.request_header_version(version))
            .expect("encode header");
        body.encode(&mut buf, version).expect("encode request");
        let size = (buf.len() - 4) as i32;
        buf[..4].copy_from_slice(&size.to_be_bytes());
        self.send_raw(&buf).await;
        cid
    }

    /// Reads one response frame (without its size); `None` on EOF.
    async fn read_frame(&mut self) -> Option<Bytes> {
        let mut size = [0u8; 4];
        match within(self.stream.read_exact(&mut size)).await {
            Ok(_) => {}
            Err(_) => return None,
        }
        let mut body = vec![0u8; i32::from_be_bytes(size) as usize];
        within(self.stream.read_exact(&mut body))
            .await
            .expect("read response body");
        Some(Bytes::from(body))
    }

    /// Reads a response: (correlation id, body).
    async fn recv<T: Decodable>(&mut self, key: ApiKey, version: i16) -> (i32, T) {
        let mut frame = self.read_frame().await.expect("a response, not EOF");
        let header = ResponseHeader::decode(&mut frame, key.response_header_version(version))
            .expect("response header");
        let body = T::decode(&mut frame, version).expect("response body");
        (header.correlation_id, body)
    }

    async fn call<Q: Encodable, R: Decodable>(&mut self, key: ApiKey, version: i16, req: &Q) -> R {
        let cid = self.send(key, version, req).await;
        let (got, resp) = self.recv(key, version).await;
        assert_eq!(got, cid, "correlation id");
        resp
    }

    /// True once the broker closed the connection.
    async fn is_closed(&mut self) -> bool {
        let mut byte = [0u8; 1];
        matches!(within(self.stream.read(&mut byte)).await, Ok(0) | Err(_))
    }

    async fn create_topic(&mut self, name: &str, partitions: i32, configs: &[(&str, &str)]) {
        let req = CreateTopicsRequest::default().with_topics(vec![
            create_topics_request::CreatableTopic::default()
                .with_name(topic(name))
                .with_num_partitions(partitions)
                .with_replication_factor(1)
                .with_configs(
                    configs
                        .iter()
                        .map(|(k, v)| {
                            create_topics_request::CreatableTopicConfig::default()
                                .with_name(StrBytes::from_string((*k).to_owned()))
                                .with_value(Some(StrBytes::from_string((*v).to_owned())))
                        })
                        .collect(),
                ),
        ]);
        let r: CreateTopicsResponse = self.call(ApiKey::CreateTopics, 7, &req).await;
        assert_eq!(
            r.topics[0].error_code, 0,
            "create {name}: {:?}",
            r.topics[0].error_message
        );
    }

    /// Produces one partition's records; returns (error code, base offset).
    async fn produce(
        &mut self,
        name: &str,
        partition: i32,
        acks: i16,
        records: Bytes,
    ) -> (i16, i64) {
        let req = produce_req(name, partition, acks, records);
        let r: ProduceResponse = self.call(ApiKey::Produce, 9, &req).await;
        let p = &r.responses[0].partition_responses[0];
        (p.error_code, p.base_offset)
    }

    /// Fetches from one partition: (error, high watermark, records).
    async fn fetch(
        &mut self,
        name: &str,
        partition: i32,
        offset: i64,
        max_wait_ms: i32,
    ) -> (i16, i64, Vec<Record>) {
        let req = fetch_req(name, partition, offset, max_wait_ms, 1);
        let r: FetchResponse = self.call(ApiKey::Fetch, 11, &req).await;
        let p = &r.responses[0].partitions[0];
        let mut records = Vec::new();
        if let Some(mut bytes) = p.records.clone() {
            while bytes.has_remaining() {
                let set = RecordBatchDecoder::decode(&mut bytes).expect("decode fetched batches");
                records.extend(set.records);
            }
        }
        (p.error_code, p.high_watermark, records)
    }
}

fn topic(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_owned()))
}

fn produce_req(name: &str, partition: i32, acks: i16, records: Bytes) -> ProduceRequest {
    ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![produce_request::TopicProduceData::default()
            .with_name(topic(name))
            .with_partition_data(vec![
                produce_request::PartitionProduceData::default()
                    .with_index(partition)
                    .with_records(Some(records)),
            ])])
}

fn fetch_req(
    name: &str,
    partition: i32,
    offset: i64,
    max_wait_ms: i32,
    min_bytes: i32,
) -> FetchRequest {
    FetchRequest::default()
        .with_max_wait_ms(max_wait_ms)
        .with_min_bytes(min_bytes)
        .with_max_bytes(50 << 20)
        .with_topics(vec![fetch_request::FetchTopic::default()
            .with_topic(topic(name))
            .with_partitions(vec![fetch_request::FetchPartition::default()
                .with_partition(partition)
                .with_fetch_offset(offset)
                .with_partition_max_bytes(10 << 20)])])
}

/// One batch of `values`, optionally from an idempotent producer (id, epoch, base seq).
fn batch(values: &[&str], producer: Option<(i64, i16, i32)>) -> Bytes {
    let (pid, epoch, seq) = producer.unwrap_or((-1, -1, -1));
    let records: Vec<Record> = values
        .iter()
        .enumerate()
        .map(|(i, v)| Record {
            transactional: false,
            control: false,
            partition_leader_epoch: 0,
            producer_id: pid,
            producer_epoch: epoch,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // The encoder keeps records in one batch while offset - sequence is constant;
            // only the first record's sequence (-1: none) is written.
            sequence: seq + i as i32,
            timestamp: 1_700_000_000_000 + i as i64,
            key: None,
            value: Some(Bytes::from(v.to_string())),
            headers: Default::default(),
            delete_horizon: false,
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .expect("encode batch");
    let infos =
        RecordBatchDecoder::decode_batch_info(&mut buf.clone().freeze()).expect("batch info");
    assert_eq!(infos.len(), 1, "one batch");
    buf.freeze()
}

fn values(records: &[Record]) -> Vec<String> {
    records
        .iter()
        .map(|r| String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned())
        .collect()
}

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
async fn idempotent_sequences_survive_restart() {
    if skip_if_external("idempotent_sequences_survive_restart") {
        return;
    }
    let dir = TempDir::new();
    let t = unique("kidem");
    let pid;
    {
        let broker = Broker::private_on(dir.path(), &[]);
        let mut c = Client::connect(&broker).await;
        c.create_topic(&t, 1, &[]).await;
        let r: InitProducerIdResponse = c
            .call(
                ApiKey::InitProducerId,
                4,
                &InitProducerIdRequest::default()
                    .with_transactional_id(None)
                    .with_producer_id(ProducerId(-1))
                    .with_producer_epoch(-1)
                    .with_transaction_timeout_ms(60000),
            )
            .await;
        assert_eq!(r.error_code, 0);
        pid = r.producer_id.0;
        assert!(pid >= 0);
        assert_eq!(
            c.produce(&t, 0, -1, batch(&["a", "b", "c"], Some((pid, 0, 0))))
                .await,
            (0, 0)
        );
        assert_eq!(
            c.produce(&t, 0, -1, batch(&["d"], Some((pid, 0, 3)))).await,
            (0, 3)
        );
        // The same batch again: success with the original offset, not appended twice.
        assert_eq!(
            c.produce(&t, 0, -1, batch(&["a", "b", "c"], Some((pid, 0, 0))))
                .await,
            (0, 0)
        );
        // A gap.
        assert_eq!(
            c.produce(&t, 0, -1, batch(&["g"], Some((pid, 0, 9))))
                .await
                .0,
            45,
            "OUT_OF_ORDER_SEQUENCE_NUMBER"
        );
        // A second producer id is different.
        let r2: InitProducerIdResponse = c
            .call(
                ApiKey::InitProducerId,
                4,
                &InitProducerIdRequest::default()
                    .with_transactional_id(None)
                    .with_producer_id(ProducerId(-1))
                    .with_producer_epoch(-1),
            )
            .await;
        assert_ne!(r2.producer_id.0, pid);
    }
    // kill -9 (the harness's drop) and restart on the same data.
    let broker = Broker::private_on(dir.path(), &[]);
    let mut c = Client::connect(&broker).await;
    assert_eq!(
        c.produce(&t, 0, -1, batch(&["d"], Some((pid, 0, 3)))).await,
        (0, 3),
        "duplicate after restart"
    );
    assert_eq!(
        c.produce(&t, 0, -1, batch(&["e"], Some((pid, 0, 4)))).await,
        (0, 4)
    );
    assert_eq!(
        c.produce(&t, 0, -1, batch(&["f"], Some((pid, 0, 7))))
            .await
            .0,
        45
    );
    // A newer epoch restarts at 0; the old epoch is then fenced.
    assert_eq!(
        c.produce(&t, 0, -1, batch(&["n"], Some((pid, 1, 0)))).await,
        (0, 5)
    );
    assert_eq!(
        c.produce(&t, 0, -1, batch(&["o"], Some((pid, 0, 5))))
            .await
            .0,
        47,
        "INVALID_PRODUCER_EPOCH"
    );
    let (_, hw, records) = c.fetch(&t, 0, 0, 0).await;
    assert_eq!(hw, 6);
    assert_eq!(values(&records), ["a", "b", "c", "d", "e", "n"]);
    // New producer ids never repeat one handed out before the restart.
    let r: InitProducerIdResponse = c
        .call(
            ApiKey::InitProducerId,
            4,
            &InitProducerIdRequest::default()
                .with_transactional_id(None)
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1),
        )
        .await;
    assert!(r.producer_id.0 > pid + 1);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_acks_all_loses_nothing_acknowledged() {
    if skip_if_external("kill_9_during_acks_all_loses_nothing_acknowledged") {
        return;
    }
    let dir = TempDir::new();
    let t = unique("kcrash");
    let mut broker = Broker::private_on(dir.path(), &[]);
    {
        let mut c = Client::connect(&broker).await;
        c.create_topic(&t, 1, &[]).await;
    }
    // Four producers pipelining acks=all produces; each records what was acknowledged.
    let mut producers = Vec::new();
    for p in 0..4 {
        let mut c = Client::connect(&broker).await;
        let t = t.clone();
        producers.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0.. {
                let value = format!("p{p}-{i}");
                let req = produce_req(&t, 0, -1, batch(&[&value], None));
                let cid = c.send(ApiKey::Produce, 9, &req).await;
                let Some(mut frame) = c.read_frame().await else {
                    break;
                };
                let header_version = ApiKey::Produce.response_header_version(9);
                let Ok(h) = ResponseHeader::decode(&mut frame, header_version) else {
                    break;
                };
                let Ok(r) = ProduceResponse::decode(&mut frame, 9) else {
                    break;
                };
                assert_eq!(h.correlation_id, cid);
                if r.responses[0].partition_responses[0].error_code == 0 {
                    acked.push(value);
                }
            }
            acked
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    broker.kill9();
    let mut acked = Vec::new();
    for p in producers {
        acked.extend(within(p).await.expect("producer task"));
    }
    assert!(
        acked.len() > 10,
        "some produces were acknowledged: {}",
        acked.len()
    );
    let broker = Broker::private_on(dir.path(), &[]);
    let mut c = Client::connect(&broker).await;
    let mut stored = std::collections::HashSet::new();
    let mut offset = 0;
    loop {
        let (err, hw, records) = c.fetch(&t, 0, offset, 0).await;
        assert_eq!(err, 0);
        if records.is_empty() {
            assert_eq!(offset, hw);
            break;
        }
        offset = records.last().unwrap().offset + 1;
        stored.extend(values(&records));
    }
    let lost: Vec<&String> = acked.iter().filter(|v| !stored.contains(*v)).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged records lost, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
}

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
