//! The bench client's decoders of broker bytes (frames, methods, deliveries, confirms)
//! must never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| ferrymq_bench::amqp::fuzz_decoders(data));
