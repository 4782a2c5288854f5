//! SCRAM-SHA-256 / SCRAM-SHA-512 (RFC 5802, RFC 7677) as Kafka speaks it (KIP-84).
//!
//! Sans-IO: the Kafka front feeds the client's `auth_bytes` in and sends what comes out.
//!
//! ```text
//! C1  n,,n=<user>,r=<client nonce>              ScramServer::client_first
//! S1  r=<client+server nonce>,s=<salt>,i=<n>    ClientFirst::server_first
//! C2  c=biws,r=<nonce>,p=<proof>                ScramServerState::client_final
//! S2  v=<server signature>                      (its Ok value)
//! ```
//!
//! Mirrors Kafka's `ScramSaslServer`: no channel binding (only the `n` flag), no
//! extensions (Kafka uses them only for delegation tokens, which FerryMQ does not issue),
//! an authorization id must equal the user name, no SASLprep of the password
//! (`ScramFormatter` hashes the UTF-8 bytes as they are). On failure the server sends no
//! `e=` message; the front answers error 58 with the text of
//! [`AuthError::ScramInvalidCredentials`].
//!
//! The server stores only salt, StoredKey = H(HMAC(SaltedPassword, "Client Key")),
//! ServerKey = HMAC(SaltedPassword, "Server Key") and the iteration count
//! (`ScramCredentialUtils`). For a user that does not exist the server still answers S1,
//! with a salt derived from the user name and a server secret (stable across attempts and
//! restarts), so S1 does not reveal whether the user exists; the exchange then fails at C2
//! exactly like a wrong password.

use std::fmt;
use std::sync::OnceLock;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use rand::RngCore as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256, Sha512};
use subtle::ConstantTimeEq as _;

use crate::error::{AuthError, ScramError};

/// Iteration count used when none is given (Kafka's default and minimum).
pub const DEFAULT_ITERATIONS: u32 = 4096;
/// Kafka's `ScramMechanism.minIterations()`.
pub const MIN_ITERATIONS: u32 = 4096;
/// Kafka's `ScramMechanism.maxIterations()`; also bounds the PBKDF2 work a stored
/// credential can make a client do.
pub const MAX_ITERATIONS: u32 = 16384;
/// Length of the random salt of credentials FerryMQ derives (and of fake salts).
pub const SALT_LEN: usize = 32;

/// A SCRAM hash function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ScramMechanism {
    Sha256,
    Sha512,
}

impl ScramMechanism {
    pub const ALL: [ScramMechanism; 2] = [ScramMechanism::Sha256, ScramMechanism::Sha512];

    /// The SASL mechanism name (`SCRAM-SHA-256`, `SCRAM-SHA-512`).
    pub fn name(self) -> &'static str {
        match self {
            ScramMechanism::Sha256 => "SCRAM-SHA-256",
            ScramMechanism::Sha512 => "SCRAM-SHA-512",
        }
    }

    /// Parses a SASL mechanism name (exact, upper case as Kafka clients send it).
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "SCRAM-SHA-256" => Some(ScramMechanism::Sha256),
            "SCRAM-SHA-512" => Some(ScramMechanism::Sha512),
            _ => None,
        }
    }

    /// The id used by Kafka's Describe/AlterUserScramCredentials (1 = SHA-256, 2 = SHA-512).
    pub fn kafka_id(self) -> i8 {
        match self {
            ScramMechanism::Sha256 => 1,
            ScramMechanism::Sha512 => 2,
        }
    }

    /// Inverse of [`kafka_id`](Self::kafka_id); 0 (`UNKNOWN`) and anything else is `None`.
    pub fn from_kafka_id(id: i8) -> Option<Self> {
        match id {
            1 => Some(ScramMechanism::Sha256),
            2 => Some(ScramMechanism::Sha512),
            _ => None,
        }
    }

    /// Output length of H (and of keys, proofs and signatures).
    pub fn hash_len(self) -> usize {
        match self {
            ScramMechanism::Sha256 => 32,
            ScramMechanism::Sha512 => 64,
        }
    }

    fn hash(self, data: &[u8]) -> Vec<u8> {
        match self {
            ScramMechanism::Sha256 => Sha256::digest(data).to_vec(),
            ScramMechanism::Sha512 => Sha512::digest(data).to_vec(),
        }
    }

    fn hmac(self, key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
        fn run<M: Mac + hmac::digest::KeyInit>(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
            // HMAC accepts keys of any length; new_from_slice cannot fail for it.
            let Ok(mut mac) = <M as hmac::digest::KeyInit>::new_from_slice(key) else {
                return Vec::new();
            };
            for p in parts {
                mac.update(p);
            }
            mac.finalize().into_bytes().to_vec()
        }
        match self {
            ScramMechanism::Sha256 => run::<Hmac<Sha256>>(key, parts),
            ScramMechanism::Sha512 => run::<Hmac<Sha512>>(key, parts),
        }
    }

    /// SaltedPassword = Hi(password, salt, i) = PBKDF2-HMAC-H with dkLen = hash length.
    fn salted_password(self, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
        let mut out = vec![0u8; self.hash_len()];
        match self {
            ScramMechanism::Sha256 => {
                pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, &mut out)
            }
            ScramMechanism::Sha512 => {
                pbkdf2::pbkdf2_hmac::<Sha512>(password, salt, iterations, &mut out)
            }
        }
        out
    }
}

impl fmt::Display for ScramMechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for ScramMechanism {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for ScramMechanism {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        ScramMechanism::from_name(&name)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown SCRAM mechanism '{name}'")))
    }
}

fn check_iterations(iterations: u32) -> Result<(), AuthError> {
    if (MIN_ITERATIONS..=MAX_ITERATIONS).contains(&iterations) {
        Ok(())
    } else {
        Err(AuthError::InvalidIterations {
            iterations,
            min: MIN_ITERATIONS,
            max: MAX_ITERATIONS,
        })
    }
}

/// What the server keeps for one user and one mechanism (never the password).
/// Serialized with base64 byte fields:
/// `{"mechanism":"SCRAM-SHA-256","salt":"…","stored_key":"…","server_key":"…","iterations":4096}`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScramCredential {
    pub mechanism: ScramMechanism,
    #[serde(with = "crate::b64")]
    pub salt: Vec<u8>,
    #[serde(with = "crate::b64")]
    pub stored_key: Vec<u8>,
    #[serde(with = "crate::b64")]
    pub server_key: Vec<u8>,
    pub iterations: u32,
}

impl fmt::Debug for ScramCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramCredential")
            .field("mechanism", &self.mechanism)
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

impl ScramCredential {
    /// Derives a credential with a fresh random salt. `iterations` must be within
    /// 4096..=16384 (Kafka's bounds); use [`DEFAULT_ITERATIONS`] when in doubt.
    pub fn derive(
        mechanism: ScramMechanism,
        password: impl AsRef<[u8]>,
        iterations: u32,
    ) -> Result<Self, AuthError> {
        let mut salt = vec![0u8; SALT_LEN];
        rand::rngs::OsRng.fill_bytes(&mut salt);
        Self::derive_with_salt(mechanism, password, &salt, iterations)
    }

    /// Derives a credential with the given salt (deterministic; for tests and vectors).
    pub fn derive_with_salt(
        mechanism: ScramMechanism,
        password: impl AsRef<[u8]>,
        salt: &[u8],
        iterations: u32,
    ) -> Result<Self, AuthError> {
        check_iterations(iterations)?;
        if salt.is_empty() {
            return Err(AuthError::MalformedScram("empty salt"));
        }
        let salted = mechanism.salted_password(password.as_ref(), salt, iterations);
        Self::from_salted_password(mechanism, salt, &salted, iterations)
    }

    /// Builds a credential from a salted password computed by the client, as Kafka's
    /// AlterUserScramCredentials (API 51) sends it.
    pub fn from_salted_password(
        mechanism: ScramMechanism,
        salt: &[u8],
        salted_password: &[u8],
        iterations: u32,
    ) -> Result<Self, AuthError> {
        check_iterations(iterations)?;
        if salt.is_empty() || salted_password.is_empty() {
            return Err(AuthError::MalformedScram("empty salt or salted password"));
        }
        let client_key = mechanism.hmac(salted_password, &[b"Client Key"]);
        Ok(ScramCredential {
            mechanism,
            salt: salt.to_vec(),
            stored_key: mechanism.hash(&client_key),
            server_key: mechanism.hmac(salted_password, &[b"Server Key"]),
            iterations,
        })
    }
}

// ---- the fake-salt secret -------------------------------------------------------------

static FAKE_SALT_SECRET: OnceLock<[u8; 32]> = OnceLock::new();

/// Installs the process-wide secret used to derive fake salts for unknown users.
/// [`AuthStore::open`](crate::store::AuthStore::open) installs the one persisted in the
/// snapshot so fake salts survive restarts. The first call wins; returns whether this
/// call installed it. Without any call a random secret is used.
pub fn set_fake_salt_secret(secret: [u8; 32]) -> bool {
    FAKE_SALT_SECRET.set(secret).is_ok()
}

fn fake_salt_secret() -> &'static [u8; 32] {
    FAKE_SALT_SECRET.get_or_init(|| {
        let mut s = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut s);
        s
    })
}

fn fake_salt(mechanism: ScramMechanism, username: &str, secret: &[u8]) -> Vec<u8> {
    // HMAC-SHA256 gives exactly SALT_LEN (32) bytes, the length of real salts.
    ScramMechanism::Sha256.hmac(
        secret,
        &[
            b"ferrymq-scram-fake-salt\0",
            mechanism.name().as_bytes(),
            b"\0",
            username.as_bytes(),
        ],
    )
}

/// A fresh server nonce: 24 printable characters (18 random bytes, base64).
pub fn generate_nonce() -> String {
    let mut b = [0u8; 18];
    rand::rngs::OsRng.fill_bytes(&mut b);
    B64.encode(b)
}

// ---- message syntax -------------------------------------------------------------------

/// RFC 5802 `printable` minus `,`: what a nonce may contain.
fn is_valid_nonce(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b',')
}

/// Decodes a `saslname` (`=2C` → `,`, `=3D` → `=`; any other `=` is an error).
fn decode_saslname(s: &str) -> Result<String, ScramError> {
    if s.is_empty() {
        return Err(AuthError::MalformedScram("empty user name"));
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = rest.find(['=', ',']) {
        out.push_str(&rest[..pos]);
        let tail = &rest[pos..];
        if tail.starts_with("=2C") {
            out.push(',');
        } else if tail.starts_with("=3D") {
            out.push('=');
        } else {
            return Err(AuthError::MalformedScram("invalid escape in user name"));
        }
        rest = &tail[3..];
    }
    out.push_str(rest);
    if out.chars().any(|c| c.is_control()) {
        return Err(AuthError::MalformedScram("control character in user name"));
    }
    Ok(out)
}

/// Encodes a user name as a `saslname` (inverse of the server's decoding).
pub fn encode_saslname(name: &str) -> String {
    name.replace('=', "=3D").replace(',', "=2C")
}

// ---- server ---------------------------------------------------------------------------

/// Entry point of the server side of an exchange.
pub struct ScramServer;

impl ScramServer {
    /// Parses the client-first message `gs2-header client-first-message-bare`.
    ///
    /// Accepts only the `n` channel-binding flag, an empty authzid or `a=` equal to the
    /// user name, `n=<saslname>,r=<nonce>` and nothing after (no `m=` or other
    /// extensions).
    pub fn client_first(mechanism: ScramMechanism, msg: &[u8]) -> Result<ClientFirst, ScramError> {
        let msg = std::str::from_utf8(msg).map_err(|_| AuthError::MalformedScram("not UTF-8"))?;
        let rest = match msg.as_bytes().first() {
            Some(b'n') => msg
                .strip_prefix("n,")
                .ok_or(AuthError::MalformedScram("malformed GS2 header"))?,
            Some(b'y') | Some(b'p') => {
                return Err(AuthError::MalformedScram(
                    "channel binding is not supported",
                ))
            }
            _ => return Err(AuthError::MalformedScram("malformed GS2 header")),
        };
        let (authz, bare) = rest
            .split_once(',')
            .ok_or(AuthError::MalformedScram("malformed GS2 header"))?;
        let authzid = if authz.is_empty() {
            None
        } else if let Some(a) = authz.strip_prefix("a=") {
            Some(decode_saslname(a)?)
        } else {
            return Err(AuthError::MalformedScram("malformed authzid"));
        };
        let gs2_header_len = msg.len() - bare.len();
        let gs2_header = &msg[..gs2_header_len];

        let mut attrs = bare.split(',');
        let user_attr = attrs.next().unwrap_or("");
        if user_attr.starts_with("m=") {
            return Err(AuthError::MalformedScram(
                "mandatory extensions are not supported",
            ));
        }
        let username = decode_saslname(
            user_attr
                .strip_prefix("n=")
                .ok_or(AuthError::MalformedScram("expected n=<user>"))?,
        )?;
        let nonce = attrs
            .next()
            .and_then(|a| a.strip_prefix("r="))
            .ok_or(AuthError::MalformedScram("expected r=<nonce>"))?;
        if !is_valid_nonce(nonce) {
            return Err(AuthError::MalformedScram("invalid nonce"));
        }
        if attrs.next().is_some() {
            return Err(AuthError::MalformedScram("extensions are not supported"));
        }
        if let Some(a) = &authzid {
            if *a != username {
                return Err(AuthError::AuthzidMismatch);
            }
        }
        Ok(ClientFirst {
            mechanism,
            username,
            authzid,
            client_nonce: nonce.to_owned(),
            client_first_bare: bare.to_owned(),
            gs2_header_b64: B64.encode(gs2_header),
        })
    }
}

/// A parsed client-first message.
#[derive(Debug, Clone)]
pub struct ClientFirst {
    pub mechanism: ScramMechanism,
    /// The user name with `=2C` / `=3D` decoded.
    pub username: String,
    /// The authorization id, if the client sent one (then equal to `username`).
    pub authzid: Option<String>,
    pub client_nonce: String,
    client_first_bare: String,
    /// base64 of the GS2 header: what `c=` must carry in the client-final message
    /// (`biws` for `n,,`).
    gs2_header_b64: String,
}

impl ClientFirst {
    /// Produces the server-first message and the state that checks the client-final.
    ///
    /// `cred` is the user's credential for this mechanism, `None` if the user does not
    /// exist (or has no credential for it): then a plausible S1 is produced from a
    /// deterministic fake salt and the exchange fails at the final step. `server_nonce`
    /// must be printable ASCII without `,` (use [`generate_nonce`]); an unusable one is
    /// replaced by a fresh random nonce.
    pub fn server_first(
        &self,
        cred: Option<&ScramCredential>,
        server_nonce: &str,
    ) -> (Vec<u8>, ScramServerState) {
        self.server_first_with_secret(cred, server_nonce, fake_salt_secret())
    }

    /// [`server_first`](Self::server_first) with an explicit fake-salt secret.
    pub fn server_first_with_secret(
        &self,
        cred: Option<&ScramCredential>,
        server_nonce: &str,
        secret: &[u8],
    ) -> (Vec<u8>, ScramServerState) {
        let mech = self.mechanism;
        let cred = cred.filter(|c| {
            c.mechanism == mech
                && c.stored_key.len() == mech.hash_len()
                && c.server_key.len() == mech.hash_len()
        });
        let (known, salt, iterations, stored_key, server_key) = match cred {
            Some(c) => (
                true,
                c.salt.clone(),
                c.iterations,
                c.stored_key.clone(),
                c.server_key.clone(),
            ),
            None => {
                let mut keys = vec![0u8; 2 * mech.hash_len()];
                rand::rngs::OsRng.fill_bytes(&mut keys);
                let server_key = keys.split_off(mech.hash_len());
                (
                    false,
                    fake_salt(mech, &self.username, secret),
                    DEFAULT_ITERATIONS,
                    keys,
                    server_key,
                )
            }
        };
        let server_nonce = if is_valid_nonce(server_nonce) {
            server_nonce.to_owned()
        } else {
            generate_nonce()
        };
        let nonce = format!("{}{}", self.client_nonce, server_nonce);
        let server_first = format!("r={nonce},s={},i={iterations}", B64.encode(&salt));
        let state = ScramServerState {
            mechanism: mech,
            username: self.username.clone(),
            known,
            gs2_header_b64: self.gs2_header_b64.clone(),
            client_first_bare: self.client_first_bare.clone(),
            server_first: server_first.clone(),
            nonce,
            stored_key,
            server_key,
        };
        (server_first.into_bytes(), state)
    }
}

/// Server state between S1 and C2.
pub struct ScramServerState {
    mechanism: ScramMechanism,
    username: String,
    known: bool,
    gs2_header_b64: String,
    client_first_bare: String,
    server_first: String,
    nonce: String,
    stored_key: Vec<u8>,
    server_key: Vec<u8>,
}

impl fmt::Debug for ScramServerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramServerState")
            .field("mechanism", &self.mechanism)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

impl ScramServerState {
    /// The user this exchange authenticates (decoded).
    pub fn username(&self) -> &str {
        &self.username
    }

    pub fn mechanism(&self) -> ScramMechanism {
        self.mechanism
    }

    /// Checks the client-final message `c=<gs2 b64>,r=<nonce>,p=<proof>` and returns the
    /// server-final message `v=<ServerSignature>`.
    ///
    /// The channel binding must be the base64 of the GS2 header (`biws` for `n,,`), the
    /// nonce must be exactly client nonce + server nonce, no extensions are allowed, and
    /// the proof is checked in constant time. Any proof failure (including an unknown
    /// user) is [`AuthError::ScramInvalidCredentials`].
    pub fn client_final(&self, msg: &[u8]) -> Result<Vec<u8>, ScramError> {
        let msg = std::str::from_utf8(msg).map_err(|_| AuthError::MalformedScram("not UTF-8"))?;
        let proof_at = msg
            .rfind(",p=")
            .ok_or(AuthError::MalformedScram("expected p=<proof>"))?;
        let without_proof = &msg[..proof_at];
        let proof_b64 = &msg[proof_at + 3..];
        let mut attrs = without_proof.split(',');
        let cbind = attrs
            .next()
            .and_then(|a| a.strip_prefix("c="))
            .ok_or(AuthError::MalformedScram("expected c=<channel binding>"))?;
        let nonce = attrs
            .next()
            .and_then(|a| a.strip_prefix("r="))
            .ok_or(AuthError::MalformedScram("expected r=<nonce>"))?;
        if attrs.next().is_some() {
            return Err(AuthError::MalformedScram("extensions are not supported"));
        }
        if cbind != self.gs2_header_b64 {
            return Err(AuthError::MalformedScram("channel binding mismatch"));
        }
        // Kafka's ScramSaslServer only checks that the nonce ends with the server-first
        // one, and librdkafka 2.0.x (Debian's kcat) relies on it: it sends the client nonce
        // twice (`r=<cn><cn><sn>`). The proof covers the message as sent, so this accepts
        // nothing a forged nonce could use.
        if !nonce.ends_with(&self.nonce) {
            return Err(AuthError::MalformedScram("nonce mismatch"));
        }
        let proof = B64
            .decode(proof_b64)
            .map_err(|_| AuthError::MalformedScram("proof is not base64"))?;
        let mech = self.mechanism;
        if proof.len() != mech.hash_len() {
            return Err(AuthError::MalformedScram("proof has the wrong length"));
        }
        let auth_message = [
            self.client_first_bare.as_bytes(),
            b",",
            self.server_first.as_bytes(),
            b",",
            without_proof.as_bytes(),
        ];
        let client_signature = mech.hmac(&self.stored_key, &auth_message);
        let client_key: Vec<u8> = proof
            .iter()
            .zip(&client_signature)
            .map(|(p, s)| p ^ s)
            .collect();
        let proof_ok: bool = mech.hash(&client_key).ct_eq(&self.stored_key).into();
        if !(proof_ok & self.known) {
            return Err(AuthError::ScramInvalidCredentials {
                mechanism: mech.name(),
            });
        }
        let server_signature = mech.hmac(&self.server_key, &auth_message);
        Ok(format!("v={}", B64.encode(server_signature)).into_bytes())
    }
}

// ---- client (tests and tools) ---------------------------------------------------------

/// The client side of an exchange, for tests and tools (FerryMQ itself is only a server).
#[derive(Debug)]
pub struct ScramClient {
    mechanism: ScramMechanism,
    password: Vec<u8>,
    client_first_bare: String,
    client_nonce: String,
    expected_server_signature: Option<Vec<u8>>,
}

impl ScramClient {
    /// Starts an exchange; returns the client and C1 (`n,,n=<user>,r=<nonce>`).
    pub fn new(
        mechanism: ScramMechanism,
        username: &str,
        password: impl AsRef<[u8]>,
        client_nonce: &str,
    ) -> (Self, Vec<u8>) {
        let client_first_bare = format!("n={},r={client_nonce}", encode_saslname(username));
        let c1 = format!("n,,{client_first_bare}").into_bytes();
        (
            ScramClient {
                mechanism,
                password: password.as_ref().to_vec(),
                client_first_bare,
                client_nonce: client_nonce.to_owned(),
                expected_server_signature: None,
            },
            c1,
        )
    }

    /// Processes S1 and returns C2 (`c=biws,r=<nonce>,p=<proof>`).
    pub fn server_first(&mut self, s1: &[u8]) -> Result<Vec<u8>, ScramError> {
        let s1 = std::str::from_utf8(s1).map_err(|_| AuthError::MalformedScram("not UTF-8"))?;
        let mut attrs = s1.split(',');
        let nonce = attrs
            .next()
            .and_then(|a| a.strip_prefix("r="))
            .ok_or(AuthError::MalformedScram("expected r="))?;
        let salt = attrs
            .next()
            .and_then(|a| a.strip_prefix("s="))
            .and_then(|s| B64.decode(s).ok())
            .ok_or(AuthError::MalformedScram("expected s="))?;
        let iterations: u32 = attrs
            .next()
            .and_then(|a| a.strip_prefix("i="))
            .and_then(|i| i.parse().ok())
            .ok_or(AuthError::MalformedScram("expected i="))?;
        if !nonce.starts_with(&self.client_nonce) || nonce.len() == self.client_nonce.len() {
            return Err(AuthError::MalformedScram(
                "server nonce does not extend the client nonce",
            ));
        }
        check_iterations(iterations)?;
        let mech = self.mechanism;
        let salted = mech.salted_password(&self.password, &salt, iterations);
        let client_key = mech.hmac(&salted, &[b"Client Key"]);
        let stored_key = mech.hash(&client_key);
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = [
            self.client_first_bare.as_bytes(),
            b",",
            s1.as_bytes(),
            b",",
            without_proof.as_bytes(),
        ];
        let client_signature = mech.hmac(&stored_key, &auth_message);
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&client_signature)
            .map(|(k, s)| k ^ s)
            .collect();
        let server_key = mech.hmac(&salted, &[b"Server Key"]);
        self.expected_server_signature = Some(mech.hmac(&server_key, &auth_message));
        Ok(format!("{without_proof},p={}", B64.encode(proof)).into_bytes())
    }

    /// Verifies S2 (`v=<ServerSignature>`): proves the server knew the credential.
    pub fn server_final(&self, s2: &[u8]) -> Result<(), ScramError> {
        let expected =
            self.expected_server_signature
                .as_deref()
                .ok_or(AuthError::MalformedScram(
                    "server-final before server-first",
                ))?;
        let v = std::str::from_utf8(s2)
            .ok()
            .and_then(|s| s.strip_prefix("v="))
            .and_then(|v| B64.decode(v).ok())
            .ok_or(AuthError::MalformedScram("expected v="))?;
        if bool::from(v.ct_eq(expected)) {
            Ok(())
        } else {
            Err(AuthError::ScramInvalidCredentials {
                mechanism: self.mechanism.name(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RFC_SALT: &str = "W22ZaJ0SNY7soEsUEjb6gQ==";
    const RFC_CLIENT_NONCE: &str = "rOprNGfwEbeRWgbNEkqO";
    const RFC_SERVER_NONCE: &str = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
    const RFC_PROOF: &str = "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
    const RFC_SIGNATURE: &str = "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";

    fn rfc_cred() -> ScramCredential {
        let salt = B64.decode(RFC_SALT).unwrap();
        ScramCredential::derive_with_salt(ScramMechanism::Sha256, "pencil", &salt, 4096).unwrap()
    }

    fn rfc_state() -> (Vec<u8>, ScramServerState) {
        let c1 = format!("n,,n=user,r={RFC_CLIENT_NONCE}");
        let first = ScramServer::client_first(ScramMechanism::Sha256, c1.as_bytes()).unwrap();
        assert_eq!(first.username, "user");
        assert_eq!(first.client_nonce, RFC_CLIENT_NONCE);
        first.server_first(Some(&rfc_cred()), RFC_SERVER_NONCE)
    }

    #[test]
    fn rfc7677_vector() {
        let (s1, state) = rfc_state();
        assert_eq!(
            std::str::from_utf8(&s1).unwrap(),
            format!("r={RFC_CLIENT_NONCE}{RFC_SERVER_NONCE},s={RFC_SALT},i=4096")
        );
        let c2 = format!("c=biws,r={RFC_CLIENT_NONCE}{RFC_SERVER_NONCE},p={RFC_PROOF}");
        let s2 = state.client_final(c2.as_bytes()).unwrap();
        assert_eq!(s2, format!("v={RFC_SIGNATURE}").into_bytes());
    }

    #[test]
    fn rfc7677_vector_from_the_client_side() {
        let (mut client, c1) =
            ScramClient::new(ScramMechanism::Sha256, "user", "pencil", RFC_CLIENT_NONCE);
        assert_eq!(c1, format!("n,,n=user,r={RFC_CLIENT_NONCE}").into_bytes());
        let (s1, _) = rfc_state();
        let c2 = client.server_first(&s1).unwrap();
        assert_eq!(
            c2,
            format!("c=biws,r={RFC_CLIENT_NONCE}{RFC_SERVER_NONCE},p={RFC_PROOF}").into_bytes()
        );
        client
            .server_final(format!("v={RFC_SIGNATURE}").as_bytes())
            .unwrap();
        assert!(client.server_final(b"v=AAAA").is_err());
    }

    fn full_exchange(
        mech: ScramMechanism,
        user: &str,
        stored_pw: &str,
        client_pw: &str,
    ) -> Result<(), ScramError> {
        let cred = ScramCredential::derive(mech, stored_pw, DEFAULT_ITERATIONS)?;
        let (mut client, c1) = ScramClient::new(mech, user, client_pw, &generate_nonce());
        let first = ScramServer::client_first(mech, &c1)?;
        assert_eq!(first.username, user);
        let (s1, state) = first.server_first(Some(&cred), &generate_nonce());
        let c2 = client.server_first(&s1)?;
        let s2 = state.client_final(&c2)?;
        client.server_final(&s2)
    }

    #[test]
    fn sha512_full_exchange() {
        full_exchange(ScramMechanism::Sha512, "alice", "wonderland", "wonderland").unwrap();
        full_exchange(ScramMechanism::Sha256, "a,b=c", "pw", "pw").unwrap();
        let err =
            full_exchange(ScramMechanism::Sha512, "alice", "wonderland", "Wonderland").unwrap_err();
        assert_eq!(
            err.to_string(),
            "Authentication failed during authentication due to invalid credentials with SASL mechanism SCRAM-SHA-512"
        );
    }

    /// librdkafka 2.0.x sends `r=<client nonce><client nonce><server nonce>`; Kafka
    /// accepts it (the nonce only has to end with the server-first one), so FerryMQ does.
    #[test]
    fn a_doubled_client_nonce_is_accepted_as_kafka_does() {
        let (s1, state) = rfc_state();
        let mech = ScramMechanism::Sha256;
        let salted = mech.salted_password(b"pencil", &B64.decode(RFC_SALT).unwrap(), 4096);
        let client_key = mech.hmac(&salted, &[b"Client Key"]);
        let stored_key = mech.hash(&client_key);
        let without_proof =
            format!("c=biws,r={RFC_CLIENT_NONCE}{RFC_CLIENT_NONCE}{RFC_SERVER_NONCE}");
        let bare = format!("n=user,r={RFC_CLIENT_NONCE}");
        let signature = mech.hmac(
            &stored_key,
            &[bare.as_bytes(), b",", &s1, b",", without_proof.as_bytes()],
        );
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&signature)
            .map(|(k, s)| k ^ s)
            .collect();
        let c2 = format!("{without_proof},p={}", B64.encode(proof));
        assert!(state.client_final(c2.as_bytes()).is_ok());
    }

    #[test]
    fn wrong_proof_and_nonce() {
        let (_, state) = rfc_state();
        let nonce = format!("{RFC_CLIENT_NONCE}{RFC_SERVER_NONCE}");
        // Flip one bit of the proof.
        let mut proof = B64.decode(RFC_PROOF).unwrap();
        proof[0] ^= 1;
        let bad = format!("c=biws,r={nonce},p={}", B64.encode(&proof));
        assert!(matches!(
            state.client_final(bad.as_bytes()),
            Err(AuthError::ScramInvalidCredentials {
                mechanism: "SCRAM-SHA-256"
            })
        ));
        // Only the client's half of the nonce.
        let bad = format!("c=biws,r={RFC_CLIENT_NONCE},p={RFC_PROOF}");
        assert!(state.client_final(bad.as_bytes()).is_err());
        // Nonce with an extra character.
        let bad = format!("c=biws,r={nonce}x,p={RFC_PROOF}");
        assert!(state.client_final(bad.as_bytes()).is_err());
        // Channel binding other than biws.
        let bad = format!("c=eSws,r={nonce},p={RFC_PROOF}");
        assert!(state.client_final(bad.as_bytes()).is_err());
        // Extensions.
        let bad = format!("c=biws,r={nonce},x=1,p={RFC_PROOF}");
        assert!(state.client_final(bad.as_bytes()).is_err());
        // Truncated proof.
        let bad = format!("c=biws,r={nonce},p=dHzbZapWIk4jUhN+");
        assert!(state.client_final(bad.as_bytes()).is_err());
        // The right message still works afterwards.
        let good = format!("c=biws,r={nonce},p={RFC_PROOF}");
        assert!(state.client_final(good.as_bytes()).is_ok());
    }

    #[test]
    fn unknown_user_gets_stable_fake_salt_and_fails() {
        let c1 = b"n,,n=ghost,r=abc";
        let first = ScramServer::client_first(ScramMechanism::Sha256, c1).unwrap();
        let (s1a, state) = first.server_first_with_secret(None, "srv", b"secret");
        let (s1b, _) = first.server_first_with_secret(None, "srv", b"secret");
        assert_eq!(s1a, s1b, "same fake salt for the same user and secret");
        let (s1c, _) = first.server_first_with_secret(None, "srv", b"other secret");
        assert_ne!(s1a, s1c);
        // Looks like a real S1: same salt length as derived credentials, i=4096.
        let s1 = std::str::from_utf8(&s1a).unwrap();
        let salt = s1.split(',').nth(1).unwrap().strip_prefix("s=").unwrap();
        assert_eq!(B64.decode(salt).unwrap().len(), SALT_LEN);
        assert!(s1.ends_with(",i=4096"));
        // A client that computes a proof with any password fails like a wrong password.
        let (mut client, _) = ScramClient::new(ScramMechanism::Sha256, "ghost", "pw", "abc");
        let c2 = client.server_first(&s1a).unwrap();
        assert!(matches!(
            state.client_final(&c2),
            Err(AuthError::ScramInvalidCredentials { .. })
        ));
    }

    #[test]
    fn credential_of_the_other_mechanism_is_treated_as_unknown() {
        let cred = ScramCredential::derive(ScramMechanism::Sha512, "pw", 4096).unwrap();
        let (mut client, c1) = ScramClient::new(ScramMechanism::Sha256, "u", "pw", "n1");
        let first = ScramServer::client_first(ScramMechanism::Sha256, &c1).unwrap();
        let (s1, state) = first.server_first(Some(&cred), "n2");
        let c2 = client.server_first(&s1).unwrap();
        assert!(state.client_final(&c2).is_err());
    }

    #[test]
    fn client_first_rejections() {
        let m = ScramMechanism::Sha256;
        for bad in [
            &b""[..],
            b"n",
            b"n,",
            b"n,,",
            b"n,,n=",
            b"n,,n=user",
            b"n,,n=user,r=",
            b"n,,r=abc,n=user",
            b"y,,n=user,r=abc",
            b"p=tls-unique,,n=user,r=abc",
            b"n,,m=ext,n=user,r=abc",
            b"n,,n=user,r=abc,tokenauth=true",
            b"n,,n=us=er,r=abc",
            b"n,,n=us=2Xer,r=abc",
            b"n,,n=user,r=a bc",
            b"n,x,n=user,r=abc",
            b"n,a=other,n=user,r=abc",
            b"n,,n=\xff,r=abc",
            b"n,,n=a\x00b,r=abc",
            b"e=x",
        ] {
            assert!(
                ScramServer::client_first(m, bad).is_err(),
                "accepted {:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert!(matches!(
            ScramServer::client_first(m, b"n,a=other,n=user,r=abc"),
            Err(AuthError::AuthzidMismatch)
        ));
        let ok = ScramServer::client_first(m, b"n,a=u=2Cv,n=u=2Cv,r=abc").unwrap();
        assert_eq!(ok.username, "u,v");
        assert_eq!(ok.authzid.as_deref(), Some("u,v"));
        let ok = ScramServer::client_first(m, b"n,,n==3D=2C,r=abc").unwrap();
        assert_eq!(ok.username, "=,");
    }

    #[test]
    fn authzid_changes_the_channel_binding() {
        let cred = ScramCredential::derive(ScramMechanism::Sha256, "pw", 4096).unwrap();
        let first = ScramServer::client_first(ScramMechanism::Sha256, b"n,a=u,n=u,r=abc").unwrap();
        let (_, state) = first.server_first(Some(&cred), "xyz");
        // c=biws would be wrong here: the GS2 header is "n,a=u,".
        assert!(state.client_final(b"c=biws,r=abcxyz,p=AAAA").is_err());
    }

    #[test]
    fn client_final_garbage() {
        let (_, state) = rfc_state();
        for bad in [
            &b""[..],
            b",p=",
            b"p=",
            b"c=biws",
            b"c=biws,p=abc",
            b"c=biws,r=x,p=",
            b"c=biws,r=x,p=!!!",
            b"\xff\xfe",
            b"r=x,c=biws,p=AAAA",
            b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=====",
        ] {
            assert!(state.client_final(bad).is_err());
        }
    }

    #[test]
    fn iteration_bounds() {
        assert!(ScramCredential::derive(ScramMechanism::Sha256, "pw", 4095).is_err());
        assert!(ScramCredential::derive(ScramMechanism::Sha256, "pw", 16385).is_err());
        assert!(
            ScramCredential::derive_with_salt(ScramMechanism::Sha256, "pw", b"", 4096).is_err()
        );
    }

    #[test]
    fn mechanism_names_and_ids() {
        for m in ScramMechanism::ALL {
            assert_eq!(ScramMechanism::from_name(m.name()), Some(m));
            assert_eq!(ScramMechanism::from_kafka_id(m.kafka_id()), Some(m));
        }
        assert_eq!(ScramMechanism::Sha256.kafka_id(), 1);
        assert_eq!(ScramMechanism::Sha512.kafka_id(), 2);
        assert_eq!(ScramMechanism::from_kafka_id(0), None);
        assert_eq!(ScramMechanism::from_name("PLAIN"), None);
    }

    #[test]
    fn credential_serde_round_trip() {
        let cred = rfc_cred();
        let json = serde_json::to_string(&cred).unwrap();
        assert!(json.contains("\"mechanism\":\"SCRAM-SHA-256\""));
        assert!(json.contains(&format!("\"salt\":\"{RFC_SALT}\"")));
        let back: ScramCredential = serde_json::from_str(&json).unwrap();
        assert_eq!(back, cred);
        assert!(
            serde_json::from_str::<ScramCredential>(&json.replace("SCRAM-SHA-256", "MD5")).is_err()
        );
    }

    #[test]
    fn from_salted_password_matches_derive() {
        let salt = B64.decode(RFC_SALT).unwrap();
        let salted = ScramMechanism::Sha256.salted_password(b"pencil", &salt, 4096);
        let c = ScramCredential::from_salted_password(ScramMechanism::Sha256, &salt, &salted, 4096)
            .unwrap();
        assert_eq!(c, rfc_cred());
    }
}
