//! cargo-afl entry point; the body is `ferrymq_fuzz::kafka_request` (crates/ferrymq-fuzz), which the
//! corpus replay under `cargo test` calls too.
fn main() {
    afl::fuzz!(|data: &[u8]| ferrymq_fuzz::kafka_request(data));
}
