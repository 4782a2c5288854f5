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

mod admin;
mod durability;
mod protocol;

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
