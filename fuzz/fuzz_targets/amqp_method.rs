//! Method decoding (hand-written hot path and amq-protocol fallback) must never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = ferrymq_amqp::method::decode_method(data);
});
