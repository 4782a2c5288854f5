//! TLS for every listener: the server certificate, the client-certificate policy and the
//! identity a client certificate carries.
//!
//! `Tls` owns the rustls `ServerConfig` built from the configured PEM files
//! (`tls_cert_file`, `tls_key_file`, `tls_ca_file`, `tls_verify_peer`) and swaps it
//! atomically on `reload` (SIGHUP): a handshake takes the config current when it starts, so
//! open connections keep their session and new ones get the new certificate. A reload that
//! fails leaves the old config in place.
//!
//! Client certificates follow RabbitMQ's `verify`/`fail_if_no_peer_cert` and Kafka's
//! `ssl.client.auth`: with a CA file and `verify_peer` a certificate chaining to that CA is
//! required; with a CA file alone one is verified if offered ("requested"); without a CA
//! file none is asked for. `peer_identity` turns the verified leaf certificate into the
//! names authentication uses (RabbitMQ's EXTERNAL user, Kafka's `User:` principal).
//!
//! Crypto is rustls with the `ring` provider, passed explicitly so no process-wide default
//! provider is needed. Kafka and HTTP use `accept` (a tokio-rustls stream); the AMQP
//! connection uses `crate::transport`, which drives the same `ServerConfig` over its
//! readiness-based loop.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpStream;
use x509_parser::prelude::{FromDer, X509Certificate};

/// How long a client has to complete the TLS handshake (RabbitMQ's `ssl_handshake_timeout`).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the TLS files could not be turned into a server configuration. Every message names
/// the file at fault.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read TLS file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{}: malformed PEM: {source}", path.display())]
    Pem {
        path: PathBuf,
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    #[error("{}: no certificate in PEM (expected a BEGIN CERTIFICATE section)", path.display())]
    NoCertificate { path: PathBuf },
    #[error(
        "{}: no private key in PEM (expected an unencrypted PKCS#8, PKCS#1 or SEC1 key)",
        path.display()
    )]
    NoKey { path: PathBuf },
    #[error("{}: unsupported private key: {source}", path.display())]
    UnsupportedKey {
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("{}: private key does not match the certificate in {}", key.display(), cert.display())]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error("{}: unusable server certificate: {source}", path.display())]
    Certificate {
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("{}: CA certificates unusable: {reason}", path.display())]
    Ca { path: PathBuf, reason: String },
}

/// The files a `Tls` was loaded from, re-read on reload.
#[derive(Debug, Clone)]
struct TlsFiles {
    cert: PathBuf,
    key: PathBuf,
    ca: Option<PathBuf>,
    verify_peer: bool,
}

/// The server side of TLS shared by all listeners (`Arc<Tls>`).
pub struct Tls {
    files: TlsFiles,
    current: ArcSwap<ServerConfig>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").field("files", &self.files).finish()
    }
}

impl Tls {
    /// Reads the certificate chain, key and optional client CA and builds the server
    /// configuration.
    pub fn load(
        cert: &Path,
        key: &Path,
        ca: Option<&Path>,
        verify_peer: bool,
    ) -> Result<Arc<Tls>, TlsError> {
        let files = TlsFiles {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            ca: ca.map(Path::to_path_buf),
            verify_peer,
        };
        let config = build_config(&files)?;
        Ok(Arc::new(Tls {
            files,
            current: ArcSwap::from(config),
        }))
    }

    /// The configuration new handshakes use.
    pub fn config(&self) -> Arc<ServerConfig> {
        self.current.load_full()
    }

    /// Re-reads the same files. On success new handshakes use the new certificate (and
    /// a fresh session cache, so no session from before the reload resumes); on failure
    /// the current configuration stays and the error is returned.
    pub fn reload(&self) -> Result<(), TlsError> {
        let config = build_config(&self.files)?;
        self.current.store(config);
        Ok(())
    }

    /// Whether clients are asked for a certificate (a CA file is configured).
    pub fn requests_client_cert(&self) -> bool {
        self.files.ca.is_some()
    }

    /// Whether a client without a valid certificate is refused.
    pub fn requires_client_cert(&self) -> bool {
        self.files.ca.is_some() && self.files.verify_peer
    }
}

/// rustls 0.23.48 deprecates the ring provider because it has no post-quantum key exchange
/// (X25519MLKEM768 needs aws-lc-rs, whose build needs cmake); classical X25519/P-256 it is.
#[allow(deprecated)]
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_file(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read_file(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Pem {
            path: path.to_path_buf(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read_file(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => TlsError::NoKey {
            path: path.to_path_buf(),
        },
        source => TlsError::Pem {
            path: path.to_path_buf(),
            source,
        },
    })
}

fn build_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
    let certs = read_certs(&files.cert)?;
    let key = read_key(&files.key)?;
    let provider = provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|source| TlsError::Certificate {
            path: files.cert.clone(),
            source,
        })?;
    let builder = match &files.ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let ca_err = |reason: String| TlsError::Ca {
                path: ca.clone(),
                reason,
            };
            let mut roots = RootCertStore::empty();
            for cert in read_certs(ca)? {
                roots.add(cert).map_err(|e| ca_err(e.to_string()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = if files.verify_peer {
                verifier
            } else {
                verifier.allow_unauthenticated()
            };
            let verifier = verifier.build().map_err(|e| ca_err(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    // `with_single_cert` parses the key and checks it against the leaf's public key.
    let config = builder.with_single_cert(certs, key).map_err(|e| match e {
        rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => {
            TlsError::KeyMismatch {
                cert: files.cert.clone(),
                key: files.key.clone(),
            }
        }
        rustls::Error::General(_) => TlsError::UnsupportedKey {
            path: files.key.clone(),
            source: e,
        },
        source => TlsError::Certificate {
            path: files.cert.clone(),
            source,
        },
    })?;
    Ok(Arc::new(config))
}

/// Handshakes with `HANDSHAKE_TIMEOUT` and returns an `AsyncRead + AsyncWrite` stream, for
/// the Kafka and HTTP listeners.
pub async fn accept(
    tls: &Tls,
    tcp: TcpStream,
) -> io::Result<tokio_rustls::server::TlsStream<TcpStream>> {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.config());
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(r) => r,
        Err(_) => Err(handshake_timed_out()),
    }
}

pub(crate) fn handshake_timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out")
}

/// The names a client certificate gives its holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    /// The subject as RabbitMQ prints it (`rabbit_cert_info:subject`): RFC 4514 order, most
    /// specific attribute first (`CN=alice,O=Acme,C=GB`; x509-parser and the certificate
    /// itself list it the other way round), `,` between RDNs without spaces, `+` inside a
    /// multi-valued RDN, RabbitMQ's short names (CN L ST O OU C STREET DC UID SN GIVENNAME
    /// INITIALS GENERATIONQUALIFIER TITLE SERIALNUMBER PSEUDONYM EMAILADDRESS, others as
    /// dotted OIDs), and RabbitMQ's escaping: `\` before `"+,;<>\`, before a leading space
    /// or `#` and a trailing space, and `\XX` (upper-case hex) for each UTF-8 byte below
    /// 0x20 or from 0x7E up. Values in no string type are `#` and the hex of their DER.
    /// This is the `ssl_cert_login_from = distinguished_name` user name.
    pub dn: String,
    /// Every common name in certificate order, unescaped, joined with `,` (RabbitMQ's
    /// `ssl_cert_login_from = common_name`); `None` without a CN.
    pub cn: Option<String>,
}

/// The identity in the leaf (first) certificate of a verified client chain. `None` when
/// there is no certificate or it does not parse.
pub fn peer_identity(certs: &[CertificateDer]) -> Option<PeerIdentity> {
    let leaf = certs.first()?;
    let (_, cert) = X509Certificate::from_der(leaf.as_ref()).ok()?;
    let subject = cert.subject();
    let mut rdns = Vec::new();
    let mut cns = Vec::new();
    for rdn in subject.iter() {
        let mut parts = Vec::new();
        for atv in rdn.iter() {
            let oid = atv.attr_type().to_id_string();
            let value = directory_string(atv.attr_value());
            let name = short_name(&oid).unwrap_or(&oid);
            let escaped = match &value {
                Some(s) => escape_rdn_value(s),
                None => format!("#{}", hex_of_der(atv.attr_value())),
            };
            if oid == OID_CN {
                if let Some(s) = value {
                    cns.push(s);
                }
            }
            parts.push(format!("{name}={escaped}"));
        }
        rdns.push(parts.join("+"));
    }
    rdns.reverse();
    Some(PeerIdentity {
        dn: rdns.join(","),
        cn: (!cns.is_empty()).then(|| cns.join(",")),
    })
}

const OID_CN: &str = "2.5.4.3";

/// RabbitMQ's attribute names (`rabbit_cert_info:format_rdn`).
fn short_name(oid: &str) -> Option<&'static str> {
    Some(match oid {
        "2.5.4.4" => "SN",
        "2.5.4.42" => "GIVENNAME",
        "2.5.4.43" => "INITIALS",
        "2.5.4.44" => "GENERATIONQUALIFIER",
        OID_CN => "CN",
        "2.5.4.7" => "L",
        "2.5.4.8" => "ST",
        "2.5.4.10" => "O",
        "2.5.4.11" => "OU",
        "2.5.4.12" => "TITLE",
        "2.5.4.6" => "C",
        "2.5.4.5" => "SERIALNUMBER",
        "2.5.4.65" => "PSEUDONYM",
        "0.9.2342.19200300.100.1.25" => "DC",
        "1.2.840.113549.1.9.1" => "EMAILADDRESS",
        "2.5.4.9" => "STREET",
        "0.9.2342.19200300.100.1.1" => "UID",
        _ => return None,
    })
}

/// The text of an attribute value in one of X.520's string types (`None` for any other
/// type or an invalid encoding).
fn directory_string(value: &x509_parser::der_parser::asn1_rs::Any) -> Option<String> {
    use x509_parser::der_parser::asn1_rs::Tag;
    let data = value.data;
    match value.tag() {
        Tag::Utf8String
        | Tag::PrintableString
        | Tag::Ia5String
        | Tag::NumericString
        | Tag::VisibleString => std::str::from_utf8(data).ok().map(str::to_owned),
        // Treated as Latin-1, as RabbitMQ does.
        Tag::TeletexString => Some(data.iter().map(|&b| char::from(b)).collect()),
        Tag::BmpString => {
            if !data.len().is_multiple_of(2) {
                return None;
            }
            let units = data
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]));
            char::decode_utf16(units)
                .collect::<Result<String, _>>()
                .ok()
        }
        Tag::UniversalString => {
            if !data.len().is_multiple_of(4) {
                return None;
            }
            data.chunks_exact(4)
                .map(|c| char::from_u32(u32::from_be_bytes([c[0], c[1], c[2], c[3]])))
                .collect()
        }
        _ => None,
    }
}

fn hex_of_der(value: &x509_parser::der_parser::asn1_rs::Any) -> String {
    use x509_parser::der_parser::asn1_rs::ToDer;
    let der = value.to_der_vec().unwrap_or_else(|_| value.data.to_vec());
    der.iter().map(|b| format!("{b:02X}")).collect()
}

/// RabbitMQ's `escape_rdn_value`, over the UTF-8 bytes of `value`.
fn escape_rdn_value(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = String::with_capacity(bytes.len());
    for (i, &b) in bytes.iter().enumerate() {
        let first = i == 0;
        let last = i + 1 == bytes.len();
        match b {
            b' ' | b'#' if first => {
                out.push('\\');
                out.push(char::from(b));
            }
            b' ' if last => out.push_str("\\ "),
            b'"' | b'+' | b',' | b';' | b'<' | b'>' | b'\\' => {
                out.push('\\');
                out.push(char::from(b));
            }
            0..=31 | 126..=255 => out.push_str(&format!("\\{b:02X}")),
            _ => out.push(char::from(b)),
        }
    }
    out
}
