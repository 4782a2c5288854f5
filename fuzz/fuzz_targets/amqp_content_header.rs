//! Content header scanning must never panic, and accepted properties lie inside the input.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = ferrymq_amqp::content::decode_content_header(data) {
        assert!(h.raw_properties.len() <= data.len());
    }
});
