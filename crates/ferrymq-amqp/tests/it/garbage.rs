//! Decoders never panic: random bytes and random mutations of valid frames, with a fixed
//! seed per run (printed, and settable with `FERRYMQ_FUZZ_SEED`).

use ferrymq_amqp::content::decode_content_header;
use ferrymq_amqp::frame::{peek_frame, FRAME_OVERHEAD};
use ferrymq_amqp::method::decode_method;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn seed() -> u64 {
    std::env::var("FERRYMQ_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_f377)
}

/// Valid payloads to mutate: publish, ack, queue.declare with arguments, a content header
/// with every property, connection.start-ok.
fn seeds() -> Vec<Vec<u8>> {
    let mut declare = vec![0, 50, 0, 10, 0, 0, 1, b'q', 0b0000_0010];
    let table = [
        3, b'x', b'-', b'a', b'F', 0, 0, 0, 9, 1, b'k', b'A', 0, 0, 0, 2, b'b', 1,
    ];
    declare.extend_from_slice(&(table.len() as u32).to_be_bytes());
    declare.extend_from_slice(&table);
    let mut header = vec![0, 60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9, 0xff, 0xfc];
    header.extend_from_slice(&[4, b't', b'e', b'x', b't']); // content-type
    header.extend_from_slice(&[0]); // content-encoding
    header.extend_from_slice(&[0, 0, 0, 4, 1, b'h', b't', 1]); // headers {h: true}
    header.extend_from_slice(&[2, 7]); // delivery-mode, priority
    for _ in 0..3 {
        header.extend_from_slice(&[1, b'x']); // correlation-id, reply-to, expiration
    }
    header.extend_from_slice(&[1, b'm']); // message-id
    header.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 1]); // timestamp
    for _ in 0..4 {
        header.extend_from_slice(&[1, b'y']); // type, user-id, app-id, cluster-id
    }
    vec![
        vec![0, 60, 0, 40, 0, 0, 2, b'e', b'x', 3, b'k', b'e', b'y', 1],
        vec![0, 60, 0, 80, 0, 0, 0, 0, 0, 0, 0, 7, 1],
        vec![0, 60, 0, 120, 0, 0, 0, 0, 0, 0, 0, 7, 3],
        declare,
        header,
    ]
}

fn mutate(rng: &mut StdRng, base: &[u8]) -> Vec<u8> {
    let mut v = base.to_vec();
    for _ in 0..rng.gen_range(1..4) {
        match rng.gen_range(0..4) {
            0 if !v.is_empty() => {
                let i = rng.gen_range(0..v.len());
                v[i] = rng.gen();
            }
            1 if !v.is_empty() => {
                let n = rng.gen_range(0..v.len());
                v.truncate(n);
            }
            2 => {
                let i = rng.gen_range(0..=v.len());
                v.insert(i, rng.gen());
            }
            _ => v.extend((0..rng.gen_range(0..8)).map(|_| rng.gen::<u8>())),
        }
    }
    v
}

#[test]
fn decoders_survive_random_and_mutated_input() {
    let seed = seed();
    eprintln!("seed {seed} (set FERRYMQ_FUZZ_SEED to replay)");
    let mut rng = StdRng::seed_from_u64(seed);
    let bases = seeds();
    for (i, base) in bases.iter().enumerate() {
        let ok = decode_method(base).is_ok() || decode_content_header(base).is_ok();
        assert!(ok, "seed input {i} must be valid");
    }
    for i in 0..200_000 {
        let input = if i % 4 == 0 {
            let n = rng.gen_range(0..64);
            (0..n).map(|_| rng.gen::<u8>()).collect()
        } else {
            let base = &bases[rng.gen_range(0..bases.len())];
            mutate(&mut rng, base)
        };
        let _ = decode_method(&input);
        if let Ok(h) = decode_content_header(&input) {
            assert!(h.raw_properties.len() <= input.len());
        }
        let max = rng.gen_range(0..200u32);
        if let Ok(Some(h)) = peek_frame(&input, max) {
            assert!(h.size as usize + FRAME_OVERHEAD <= input.len());
            assert!(max == 0 || h.size as usize + FRAME_OVERHEAD <= max as usize);
        }
    }
}
