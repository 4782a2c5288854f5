//! Deterministic random inputs through every parser that sees untrusted bytes (the fuzz
//! targets in `fuzz/` do the same, open-ended). Nothing may panic.

use ferrymq_auth::scram::ScramCredential;
use ferrymq_auth::{parse_plain, split_vhost_user, Definitions, ScramMechanism, ScramServer};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const SEED: u64 = 0x5eed_a075;

/// Random bytes biased towards the syntax the parsers look for.
fn input(rng: &mut StdRng) -> Vec<u8> {
    const ALPHABET: &[u8] = b"\0,=nyrpcsiaemv2C3D{}[]\":biws/+";
    let len = rng.gen_range(0..64);
    (0..len)
        .map(|_| {
            if rng.gen_bool(0.7) {
                ALPHABET[rng.gen_range(0..ALPHABET.len())]
            } else {
                rng.gen()
            }
        })
        .collect()
}

#[test]
fn plain_and_vhost_split() {
    let mut rng = StdRng::seed_from_u64(SEED);
    for _ in 0..20_000 {
        let data = input(&mut rng);
        if let Ok(c) = parse_plain(&data) {
            assert!(!c.username.is_empty());
            let (v, u) = split_vhost_user(&c.username);
            assert!(!u.contains(':'));
            assert_eq!(v.map_or(0, |v| v.len() + 1) + u.len(), c.username.len());
        }
    }
}

#[test]
fn scram_messages() {
    let mut rng = StdRng::seed_from_u64(SEED);
    let cred =
        ScramCredential::from_salted_password(ScramMechanism::Sha256, b"salt", &[7; 32], 4096)
            .unwrap();
    let first = ScramServer::client_first(ScramMechanism::Sha256, b"n,,n=user,r=abc").unwrap();
    let (_, state) = first.server_first(Some(&cred), "def");
    for i in 0..20_000 {
        let mut data = input(&mut rng);
        if i % 4 == 0 {
            // Keep a valid prefix so the later checks are reached.
            let mut m = b"c=biws,r=abcdef,p=".to_vec();
            m.append(&mut data);
            data = m;
        }
        assert!(state.client_final(&data).is_err());
        if let Ok(c1) = ScramServer::client_first(ScramMechanism::Sha512, &data) {
            let (s1, _) = c1.server_first(None, "n");
            assert!(s1.starts_with(format!("r={}n,s=", c1.client_nonce).as_bytes()));
        }
    }
}

#[test]
fn definitions() {
    let mut rng = StdRng::seed_from_u64(SEED);
    for _ in 0..5_000 {
        let mut data = b"{\"users\":[{\"name\":".to_vec();
        data.extend(input(&mut rng));
        let _ = Definitions::parse(&data);
        let _ = Definitions::parse(&input(&mut rng));
    }
}
