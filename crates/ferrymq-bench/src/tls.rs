//! The client side of TLS for both load generators (`amqps://` URIs, Kafka `ssl` and
//! `sasl_ssl`): rustls 0.23 with the `ring` provider passed explicitly (no process-wide
//! default provider), server certificates verified against `--tls-ca-file` (or the system
//! bundle), or not at all with `--tls-insecure`. The server name sent as SNI and checked
//! against the certificate is the host the client connects to (a DNS name or an IP
//! address, which then has to be in the certificate's IP SANs).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// Where the system's CA bundle usually is (Debian/Ubuntu; `SSL_CERT_FILE` overrides).
const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// How the server's certificate is checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// PEM file with the CA certificate(s) the server's chain must lead to; `None` = the
    /// system bundle (`SSL_CERT_FILE` or /etc/ssl/certs/ca-certificates.crt).
    pub ca_file: Option<PathBuf>,
    /// Accept any certificate (the handshake signature is still checked, so the session is
    /// encrypted, but the peer is not authenticated): for quick runs only.
    pub insecure: bool,
}

/// A TLS client configuration shared by every connection of a run (cheap to clone).
#[derive(Clone)]
pub struct TlsClient {
    connector: TlsConnector,
    /// What the configuration verifies against, for messages.
    trust: String,
}

impl fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsClient")
            .field("trust", &self.trust)
            .finish()
    }
}

/// rustls 0.23.48 deprecates the ring provider because it has no post-quantum key
/// exchange; the server uses the same classical provider (see ferrymq-server's `tls`).
#[allow(deprecated)]
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_roots(path: &Path) -> anyhow::Result<RootCertStore> {
    let pem = std::fs::read(path)
        .with_context(|| format!("cannot read the CA file {}", path.display()))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{}: malformed PEM", path.display()))?;
    if certs.is_empty() {
        bail!(
            "{}: no certificate in PEM (expected a BEGIN CERTIFICATE section)",
            path.display()
        );
    }
    let mut roots = RootCertStore::empty();
    let (added, ignored) = roots.add_parsable_certificates(certs);
    if added == 0 {
        bail!(
            "{}: none of its {ignored} certificate(s) is a usable CA certificate",
            path.display()
        );
    }
    Ok(roots)
}

impl TlsClient {
    /// Builds the client configuration; fails on unreadable or empty CA files.
    pub fn new(options: &TlsOptions) -> anyhow::Result<TlsClient> {
        let provider = provider();
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?;
        let (config, trust) = if options.insecure {
            let config = builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
                .with_no_client_auth();
            (config, "nothing (--tls-insecure)".to_string())
        } else {
            let path = match &options.ca_file {
                Some(p) => p.clone(),
                None => std::env::var_os("SSL_CERT_FILE")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| PathBuf::from(SYSTEM_CA_BUNDLE)),
            };
            let roots = read_roots(&path).with_context(|| {
                if options.ca_file.is_none() {
                    "no --tls-ca-file given and the system CA bundle is unusable \
                     (give --tls-ca-file PEM, or --tls-insecure for a quick run)"
                        .to_string()
                } else {
                    "--tls-ca-file".to_string()
                }
            })?;
            let config = builder.with_root_certificates(roots).with_no_client_auth();
            (config, path.display().to_string())
        };
        Ok(TlsClient {
            connector: TlsConnector::from(Arc::new(config)),
            trust,
        })
    }

    /// Runs the TLS handshake over `tcp`, with `host` as SNI and as the name the server's
    /// certificate must carry.
    pub async fn connect(
        &self,
        tcp: TcpStream,
        host: &str,
    ) -> anyhow::Result<TlsStream<TcpStream>> {
        let name = ServerName::try_from(host.to_string())
            .with_context(|| format!("{host:?} is not a valid TLS server name"))?;
        self.connector.connect(name, tcp).await.with_context(|| {
            format!(
                "TLS handshake with {host} failed (certificates verified against {})",
                self.trust
            )
        })
    }
}

/// `--tls-insecure`: accepts every certificate, but still checks that the handshake was
/// signed by the key of the certificate presented.
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
