//! RabbitMQ-compatible password hashes.
//!
//! RabbitMQ's internal backend (`rabbit_password.erl`) stores
//! `salt ‖ H(salt ‖ password)` with a 4-byte random salt, and exports it base64-encoded in
//! definitions as `password_hash` next to `hashing_algorithm`
//! (`rabbit_password_hashing_sha256` by default, `_sha512`, or the legacy `_md5`). This
//! module reproduces that format bit for bit, so definitions move between RabbitMQ and
//! FerryMQ with their passwords intact.
//!
//! An empty hash means "passwordless": such a user can never log in with PLAIN (RabbitMQ
//! lets it in only through EXTERNAL / x509). Verification compares in constant time.

use std::fmt;
use std::sync::OnceLock;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use md5::Md5;
use rand::RngCore as _;
use sha2::{Digest, Sha256, Sha512};
use subtle::ConstantTimeEq as _;

use crate::error::AuthError;

/// Length of the random salt RabbitMQ prepends to the digest.
pub const SALT_LEN: usize = 4;

/// The digest of a [`PasswordHash`], named as RabbitMQ names its hashing modules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum HashingAlgorithm {
    /// `rabbit_password_hashing_sha256`, RabbitMQ's default since 3.6.0.
    #[default]
    Sha256,
    /// `rabbit_password_hashing_sha512`.
    Sha512,
    /// `rabbit_password_hashing_md5`, the only algorithm before 3.6.0 (legacy; accepted
    /// on import so old definitions keep working, never chosen for new passwords).
    Md5,
}

impl HashingAlgorithm {
    /// Parses RabbitMQ's module name (`rabbit_password_hashing_sha256`, …).
    pub fn from_rabbit_name(name: &str) -> Option<Self> {
        match name {
            "rabbit_password_hashing_sha256" => Some(HashingAlgorithm::Sha256),
            "rabbit_password_hashing_sha512" => Some(HashingAlgorithm::Sha512),
            "rabbit_password_hashing_md5" => Some(HashingAlgorithm::Md5),
            _ => None,
        }
    }

    /// RabbitMQ's module name, as written to `hashing_algorithm` in definitions.
    pub fn rabbit_name(self) -> &'static str {
        match self {
            HashingAlgorithm::Sha256 => "rabbit_password_hashing_sha256",
            HashingAlgorithm::Sha512 => "rabbit_password_hashing_sha512",
            HashingAlgorithm::Md5 => "rabbit_password_hashing_md5",
        }
    }

    /// Digest length in bytes.
    pub fn digest_len(self) -> usize {
        match self {
            HashingAlgorithm::Sha256 => 32,
            HashingAlgorithm::Sha512 => 64,
            HashingAlgorithm::Md5 => 16,
        }
    }

    /// `salt ‖ H(salt ‖ password)`.
    fn salted(self, salt: &[u8; SALT_LEN], password: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(SALT_LEN + self.digest_len());
        out.extend_from_slice(salt);
        match self {
            HashingAlgorithm::Sha256 => out.extend_from_slice(
                &Sha256::new()
                    .chain_update(salt)
                    .chain_update(password)
                    .finalize(),
            ),
            HashingAlgorithm::Sha512 => out.extend_from_slice(
                &Sha512::new()
                    .chain_update(salt)
                    .chain_update(password)
                    .finalize(),
            ),
            HashingAlgorithm::Md5 => out.extend_from_slice(
                &Md5::new()
                    .chain_update(salt)
                    .chain_update(password)
                    .finalize(),
            ),
        }
        out
    }
}

impl fmt::Display for HashingAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.rabbit_name())
    }
}

/// A stored password: `bytes` = 4 salt bytes ‖ H(salt ‖ password), or empty for a
/// passwordless user.
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordHash {
    pub algorithm: HashingAlgorithm,
    pub bytes: Vec<u8>,
}

impl fmt::Debug for PasswordHash {
    // Never print hash bytes into logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PasswordHash")
            .field("algorithm", &self.algorithm)
            .field("len", &self.bytes.len())
            .finish()
    }
}

impl PasswordHash {
    /// Hashes `password` with a fresh random salt.
    pub fn new(algorithm: HashingAlgorithm, password: &[u8]) -> Self {
        let mut salt = [0u8; SALT_LEN];
        rand::rngs::OsRng.fill_bytes(&mut salt);
        Self::with_salt(algorithm, salt, password)
    }

    /// Hashes `password` with the given salt (deterministic; for tests and vectors).
    pub fn with_salt(algorithm: HashingAlgorithm, salt: [u8; SALT_LEN], password: &[u8]) -> Self {
        PasswordHash {
            algorithm,
            bytes: algorithm.salted(&salt, password),
        }
    }

    /// The hash of a passwordless user: [`verify`](Self::verify) is always false.
    pub fn passwordless() -> Self {
        PasswordHash {
            algorithm: HashingAlgorithm::Sha256,
            bytes: Vec::new(),
        }
    }

    /// Decodes a definitions `password_hash`. An empty string is a passwordless user.
    /// Any decodable length is accepted (as RabbitMQ does); a hash of the wrong length
    /// simply never verifies.
    pub fn from_base64(algorithm: HashingAlgorithm, encoded: &str) -> Result<Self, AuthError> {
        let bytes = B64
            .decode(encoded.trim())
            .map_err(|_| AuthError::InvalidBase64 {
                field: "password_hash",
            })?;
        Ok(PasswordHash { algorithm, bytes })
    }

    /// Base64 (standard alphabet, padded) as in RabbitMQ's definitions export.
    pub fn to_base64(&self) -> String {
        B64.encode(&self.bytes)
    }

    /// True for a passwordless user (empty hash).
    pub fn is_passwordless(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The salt (first 4 bytes), if the hash is long enough to have one.
    pub fn salt(&self) -> Option<[u8; SALT_LEN]> {
        self.bytes.get(..SALT_LEN)?.try_into().ok()
    }

    /// Checks `password` against the hash in constant time (with respect to the hash
    /// contents). Always false for a passwordless user or a malformed hash.
    pub fn verify(&self, password: &[u8]) -> bool {
        let Some(salt) = self.salt() else {
            return false;
        };
        let expected = self.algorithm.salted(&salt, password);
        if expected.len() != self.bytes.len() {
            return false;
        }
        expected.ct_eq(&self.bytes).into()
    }

    /// A fixed hash to verify against when the user does not exist, so that an unknown
    /// user costs the same as a wrong password (RabbitMQ does the same).
    pub fn dummy() -> &'static PasswordHash {
        static DUMMY: OnceLock<PasswordHash> = OnceLock::new();
        DUMMY.get_or_init(|| PasswordHash::new(HashingAlgorithm::Sha256, b"ferrymq: no such user"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rabbitmq_vector() {
        // rabbit_password.erl: salt 908DC60A + "test12" with SHA-256.
        let h = PasswordHash::with_salt(
            HashingAlgorithm::Sha256,
            [0x90, 0x8D, 0xC6, 0x0A],
            b"test12",
        );
        assert_eq!(
            h.to_base64(),
            "kI3GCqW5JLMJa4iX1lo7X4D6XbYqlLgxIs30+P6tENUV2POR"
        );
        let parsed = PasswordHash::from_base64(
            HashingAlgorithm::Sha256,
            "kI3GCqW5JLMJa4iX1lo7X4D6XbYqlLgxIs30+P6tENUV2POR",
        )
        .unwrap();
        assert_eq!(parsed, h);
        assert!(parsed.verify(b"test12"));
        assert!(!parsed.verify(b"test13"));
        assert!(!parsed.verify(b""));
    }

    #[test]
    fn every_algorithm_round_trips() {
        for alg in [
            HashingAlgorithm::Sha256,
            HashingAlgorithm::Sha512,
            HashingAlgorithm::Md5,
        ] {
            assert_eq!(
                HashingAlgorithm::from_rabbit_name(alg.rabbit_name()),
                Some(alg)
            );
            let h = PasswordHash::new(alg, b"s3cret");
            assert_eq!(h.bytes.len(), SALT_LEN + alg.digest_len());
            assert!(h.verify(b"s3cret"));
            assert!(!h.verify(b"s3cret "));
            let back = PasswordHash::from_base64(alg, &h.to_base64()).unwrap();
            assert!(back.verify(b"s3cret"));
            // The same bytes under another algorithm do not verify.
            let other = if alg == HashingAlgorithm::Sha256 {
                HashingAlgorithm::Sha512
            } else {
                HashingAlgorithm::Sha256
            };
            assert!(!PasswordHash {
                algorithm: other,
                bytes: h.bytes.clone()
            }
            .verify(b"s3cret"));
        }
        assert_eq!(HashingAlgorithm::from_rabbit_name("sha256"), None);
    }

    #[test]
    fn salts_differ() {
        let a = PasswordHash::new(HashingAlgorithm::Sha256, b"x");
        let b = PasswordHash::new(HashingAlgorithm::Sha256, b"x");
        // 2^-32 chance of a false failure per run.
        assert_ne!(a.bytes, b.bytes);
    }

    #[test]
    fn passwordless_and_malformed_never_verify() {
        let empty = PasswordHash::from_base64(HashingAlgorithm::Sha256, "").unwrap();
        assert!(empty.is_passwordless());
        assert!(!empty.verify(b""));
        assert!(!PasswordHash::passwordless().verify(b"guest"));
        for bytes in [vec![1u8], vec![1, 2, 3, 4], vec![0; 35], vec![0; 37]] {
            let h = PasswordHash {
                algorithm: HashingAlgorithm::Sha256,
                bytes,
            };
            assert!(!h.verify(b""));
            assert!(!h.verify(b"guest"));
        }
        assert!(PasswordHash::from_base64(HashingAlgorithm::Sha256, "not base64!").is_err());
        assert!(!PasswordHash::dummy().verify(b""));
    }

    #[test]
    fn debug_hides_bytes() {
        let h = PasswordHash::new(HashingAlgorithm::Sha256, b"x");
        assert!(!format!("{h:?}").contains(&h.to_base64()));
    }
}
