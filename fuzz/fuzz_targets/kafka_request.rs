//! Kafka request framing and decoding must never panic on any bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(Some(len)) = ferrymq_kafka::frame::peek_request(data, 1 << 20) {
        assert!(len <= data.len());
        let frame = bytes::Bytes::copy_from_slice(&data[4..len]);
        let _ = ferrymq_kafka::frame::decode_request(frame);
    }
    let _ = ferrymq_kafka::frame::decode_request(bytes::Bytes::copy_from_slice(data));
});
