//! Record batch validation must never panic, and what it accepts must tile the input.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(headers) = ferrymq_kafka::batch::validate(data) {
        let total: usize = headers.iter().map(|h| h.size).sum();
        assert_eq!(total, data.len());
    }
    let _ = ferrymq_kafka::batch::parse_header(data);
});
