//! Frame splitting must never panic, and a frame it accepts must fit in the input.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let max = if data.len() > 2 { u16::from_be_bytes([data[0], data[1]]) as u32 * 4 } else { 0 };
    if let Ok(Some(h)) = ferrymq_amqp::frame::peek_frame(data, max) {
        assert!(h.size as usize + ferrymq_amqp::frame::FRAME_OVERHEAD <= data.len());
    }
});
