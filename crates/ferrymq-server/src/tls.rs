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
        if verify_peer && ca.is_none() {
            tracing::warn!(
                "tls_verify_peer is set without tls_ca_file: client certificates are not asked for"
            );
        }
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
            let units = data.chunks_exact(2);
            if !units.remainder().is_empty() {
                return None;
            }
            let units = units.map(|c| u16::from_be_bytes([c[0], c[1]]));
            char::decode_utf16(units)
                .collect::<Result<String, _>>()
                .ok()
        }
        Tag::UniversalString => {
            let units = data.chunks_exact(4);
            if !units.remainder().is_empty() {
                return None;
            }
            units
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

/// A throw-away PKI for tests: a CA, a server certificate for `localhost` and `127.0.0.1`
/// (files in a temp dir, as the broker reads them) and client certificates on demand.
#[cfg(test)]
pub mod testpki {
    use std::path::PathBuf;
    use std::sync::Arc;

    use rcgen::{
        BasicConstraints, CertificateParams, DistinguishedName, DnType, DnValue,
        ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    };
    use rustls::ClientConfig;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
    use tokio::net::TcpStream;

    use super::Tls;

    pub struct TestPki {
        pub dir: tempfile::TempDir,
        issuer: Issuer<'static, KeyPair>,
        pub ca_der: CertificateDer<'static>,
        pub ca_file: PathBuf,
        pub cert_file: PathBuf,
        pub key_file: PathBuf,
        /// The server certificate last written.
        pub server_der: CertificateDer<'static>,
    }

    /// A client certificate chain and its key.
    pub struct ClientCert {
        pub chain: Vec<CertificateDer<'static>>,
        pub key: PrivateKeyDer<'static>,
    }

    fn dn(attrs: &[(DnType, DnValue)]) -> DistinguishedName {
        let mut dn = DistinguishedName::new();
        for (ty, value) in attrs {
            dn.push(ty.clone(), value.clone());
        }
        dn
    }

    impl TestPki {
        pub fn generate() -> TestPki {
            let dir = tempfile::tempdir().unwrap();
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params.distinguished_name = dn(&[(DnType::CommonName, "FerryMQ test CA".into())]);
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.key_usages = vec![
                KeyUsagePurpose::KeyCertSign,
                KeyUsagePurpose::CrlSign,
                KeyUsagePurpose::DigitalSignature,
            ];
            let ca = params.self_signed(&key).unwrap();
            let ca_file = dir.path().join("ca.pem");
            std::fs::write(&ca_file, ca.pem()).unwrap();
            let mut pki = TestPki {
                cert_file: dir.path().join("server.pem"),
                key_file: dir.path().join("server.key"),
                ca_file,
                ca_der: ca.der().clone(),
                issuer: Issuer::new(params, key),
                server_der: CertificateDer::from(Vec::new()),
                dir,
            };
            pki.write_server_cert("FerryMQ test server");
            pki
        }

        /// Issues a new server certificate with a new key and (re)writes the server files.
        pub fn write_server_cert(&mut self, cn: &str) -> CertificateDer<'static> {
            let key = KeyPair::generate().unwrap();
            let mut params =
                CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
                    .unwrap();
            params.distinguished_name = dn(&[(DnType::CommonName, cn.into())]);
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
            let cert = params.signed_by(&key, &self.issuer).unwrap();
            std::fs::write(&self.cert_file, cert.pem()).unwrap();
            std::fs::write(&self.key_file, key.serialize_pem()).unwrap();
            self.server_der = cert.der().clone();
            self.server_der.clone()
        }

        /// A client certificate whose subject lists `attrs` in this order (certificate
        /// order: the most general first).
        pub fn client_cert(&self, attrs: &[(DnType, DnValue)]) -> ClientCert {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params.distinguished_name = dn(attrs);
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
            let cert = params.signed_by(&key, &self.issuer).unwrap();
            ClientCert {
                chain: vec![cert.der().clone()],
                key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            }
        }

        /// `CN=alice,O=Acme`.
        pub fn alice(&self) -> ClientCert {
            self.client_cert(&[
                (DnType::OrganizationName, "Acme".into()),
                (DnType::CommonName, "alice".into()),
            ])
        }

        pub fn tls(&self, with_ca: bool, verify_peer: bool) -> Arc<Tls> {
            let ca = with_ca.then_some(self.ca_file.as_path());
            Tls::load(&self.cert_file, &self.key_file, ca, verify_peer).unwrap()
        }

        /// A client trusting this CA, offering `cert` if given, limited to `versions`
        /// (empty: rustls's defaults).
        pub fn client_config(
            &self,
            cert: Option<&ClientCert>,
            versions: &[&'static rustls::SupportedProtocolVersion],
        ) -> Arc<ClientConfig> {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(self.ca_der.clone()).unwrap();
            let builder = ClientConfig::builder_with_provider(super::provider());
            let builder = if versions.is_empty() {
                builder.with_safe_default_protocol_versions()
            } else {
                builder.with_protocol_versions(versions)
            }
            .unwrap()
            .with_root_certificates(roots);
            let config = match cert {
                Some(c) => builder
                    .with_client_auth_cert(c.chain.clone(), c.key.clone_key())
                    .unwrap(),
                None => builder.with_no_client_auth(),
            };
            Arc::new(config)
        }
    }

    /// Connects and handshakes as `server_name` (`localhost` or `127.0.0.1`).
    pub async fn connect(
        config: Arc<ClientConfig>,
        addr: std::net::SocketAddr,
        server_name: &str,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let tcp = TcpStream::connect(addr).await?;
        let name = ServerName::try_from(server_name.to_string()).unwrap();
        tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
    }
}

#[cfg(test)]
mod tests {
    use rcgen::string::BmpString;
    use rcgen::{DnType, DnValue};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::testpki::{connect, TestPki};
    use super::*;

    fn load_err(cert: &Path, key: &Path, ca: Option<&Path>) -> String {
        let err = Tls::load(cert, key, ca, true).unwrap_err();
        err.to_string()
    }

    #[test]
    fn load_errors_name_the_file() {
        let pki = TestPki::generate();
        let dir = pki.dir.path();
        let missing = dir.join("missing.pem");
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let garbage = dir.join("garbage.pem");
        std::fs::write(&garbage, "-----BEGIN CERTIFICATE-----\n!!!!\n").unwrap();

        let msg = load_err(&missing, &pki.key_file, None);
        assert!(
            msg.starts_with("cannot read TLS file") && msg.contains("missing.pem"),
            "{msg}"
        );
        let msg = load_err(&empty, &pki.key_file, None);
        assert!(
            msg.contains("empty.pem") && msg.contains("no certificate"),
            "{msg}"
        );
        let msg = load_err(&garbage, &pki.key_file, None);
        assert!(
            msg.contains("garbage.pem") && msg.contains("malformed PEM"),
            "{msg}"
        );
        // A certificate where the key should be.
        let msg = load_err(&pki.cert_file, &pki.cert_file, None);
        assert!(
            msg.contains("server.pem") && msg.contains("no private key"),
            "{msg}"
        );
        // A key in a PEM section of the right kind that is not a key.
        let bogus_key = dir.join("bogus.key");
        std::fs::write(
            &bogus_key,
            "-----BEGIN PRIVATE KEY-----\nAAECAwQFBgcICQ==\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        let msg = load_err(&pki.cert_file, &bogus_key, None);
        assert!(
            msg.contains("bogus.key") && msg.contains("unsupported private key"),
            "{msg}"
        );
        // Another server's key.
        let mut other = TestPki::generate();
        other.write_server_cert("other");
        let msg = load_err(&pki.cert_file, &other.key_file, None);
        assert!(
            msg.contains("does not match") && msg.contains(&*other.key_file.to_string_lossy()),
            "{msg}"
        );
        let msg = load_err(&pki.cert_file, &pki.key_file, Some(&empty));
        assert!(
            msg.contains("empty.pem") && msg.contains("no certificate"),
            "{msg}"
        );
        let msg = load_err(&pki.cert_file, &pki.key_file, Some(&missing));
        assert!(msg.contains("missing.pem"), "{msg}");
        // A CA "certificate" that is not DER.
        let not_der = dir.join("notder.pem");
        std::fs::write(
            &not_der,
            "-----BEGIN CERTIFICATE-----\nAAECAwQFBgcICQ==\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let msg = load_err(&pki.cert_file, &pki.key_file, Some(&not_der));
        assert!(
            msg.contains("notder.pem") && msg.contains("CA certificates unusable"),
            "{msg}"
        );

        assert!(Tls::load(&pki.cert_file, &pki.key_file, Some(&pki.ca_file), true).is_ok());
    }

    fn identity(pki: &TestPki, attrs: &[(DnType, DnValue)]) -> PeerIdentity {
        peer_identity(&pki.client_cert(attrs).chain).unwrap()
    }

    #[test]
    fn dn_is_most_specific_first_like_rabbitmq() {
        let pki = TestPki::generate();
        let id = identity(
            &pki,
            &[
                (DnType::CountryName, "GB".into()),
                (DnType::OrganizationName, "Acme".into()),
                (DnType::OrganizationalUnitName, "Ops".into()),
                (DnType::CommonName, "alice".into()),
            ],
        );
        assert_eq!(id.dn, "CN=alice,OU=Ops,O=Acme,C=GB");
        assert_eq!(id.cn.as_deref(), Some("alice"));

        let id = peer_identity(&pki.alice().chain).unwrap();
        assert_eq!(id.dn, "CN=alice,O=Acme");
    }

    #[test]
    fn dn_values_are_escaped_like_rabbitmq() {
        let pki = TestPki::generate();
        let id = identity(
            &pki,
            &[
                (DnType::OrganizationName, "#a,b+c;d<e>f\"g\\h ".into()),
                (DnType::LocalityName, " José~".into()),
                (DnType::CommonName, "bob".into()),
            ],
        );
        assert_eq!(
            id.dn,
            "CN=bob,L=\\ Jos\\C3\\A9\\7E,O=\\#a\\,b\\+c\\;d\\<e\\>f\\\"g\\\\h\\ "
        );
        // The CN is not escaped.
        let id = identity(&pki, &[(DnType::CommonName, "a,b".into())]);
        assert_eq!(id.cn.as_deref(), Some("a,b"));
        assert_eq!(id.dn, "CN=a\\,b");
    }

    #[test]
    fn dn_other_types_and_encodings() {
        let pki = TestPki::generate();
        let id = identity(
            &pki,
            &[
                // x500UniqueIdentifier: no short name, a dotted OID.
                (DnType::CustomDnType(vec![2, 5, 4, 45]), "u1".into()),
                (
                    DnType::CommonName,
                    DnValue::BmpString(BmpString::try_from("Ωmega").unwrap()),
                ),
            ],
        );
        assert_eq!(id.dn, "CN=\\CE\\A9mega,2.5.4.45=u1");
        assert_eq!(id.cn.as_deref(), Some("Ωmega"));
        // No CN at all.
        let id = identity(&pki, &[(DnType::OrganizationName, "Acme".into())]);
        assert_eq!(id.cn, None);
        assert_eq!(id.dn, "O=Acme");
    }

    #[test]
    fn peer_identity_of_nothing_or_garbage_is_none() {
        assert_eq!(peer_identity(&[]), None);
        assert_eq!(
            peer_identity(&[CertificateDer::from(vec![0x30, 0x03, 1, 2])]),
            None
        );
        assert_eq!(peer_identity(&[CertificateDer::from(vec![0xff; 64])]), None);
    }

    #[test]
    fn escape_edge_cases() {
        assert_eq!(escape_rdn_value(""), "");
        assert_eq!(escape_rdn_value(" "), "\\ ");
        assert_eq!(escape_rdn_value("#"), "\\#");
        assert_eq!(escape_rdn_value("a#b c"), "a#b c");
        assert_eq!(escape_rdn_value("a\nb"), "a\\0Ab");
        assert_eq!(escape_rdn_value("x="), "x=");
    }

    #[tokio::test]
    async fn accept_serves_async_streams_with_client_certs() {
        let pki = TestPki::generate();
        let tls = pki.tls(true, true);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = async {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut s = accept(&tls, tcp).await.unwrap();
            let id = peer_identity(s.get_ref().1.peer_certificates().unwrap()).unwrap();
            let mut buf = [0u8; 4];
            s.read_exact(&mut buf).await.unwrap();
            s.write_all(id.dn.as_bytes()).await.unwrap();
            s.shutdown().await.unwrap();
        };
        let client = async {
            let config = pki.client_config(Some(&pki.alice()), &[]);
            let mut c = connect(config, addr, "localhost").await.unwrap();
            c.write_all(b"ping").await.unwrap();
            let mut out = String::new();
            c.read_to_string(&mut out).await.unwrap();
            out
        };
        let ((), dn) = tokio::join!(server, client);
        assert_eq!(dn, "CN=alice,O=Acme");
    }
}
