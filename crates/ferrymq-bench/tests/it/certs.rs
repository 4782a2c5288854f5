//! Test certificates made on the fly with rcgen (none is committed): a CA, a server
//! certificate it signs for the given names, the CA as a PEM file for `--tls-ca-file`, and
//! a rustls server configuration for the mock brokers.

use std::path::PathBuf;
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::ServerConfig;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A CA and a server certificate it signed.
pub struct TestPki {
    _dir: tempfile::TempDir,
    /// PEM file of the CA certificate.
    pub ca_file: PathBuf,
    /// Server configuration presenting the signed certificate.
    pub server: Arc<ServerConfig>,
}

impl TestPki {
    /// `--tls-ca-file` value.
    pub fn ca(&self) -> &str {
        self.ca_file.to_str().expect("UTF-8 temp path")
    }
}

/// A fresh CA (named `cn`) and a server certificate for `names` (DNS names or IP addresses).
pub fn pki(cn: &str, names: &[&str]) -> TestPki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, cn);
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);

    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let mut params = CertificateParams::new(names).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "ferrymq-bench test server");
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca_cert.pem()).unwrap();

    #[allow(deprecated)] // ring: no post-quantum key exchange, as in ferrymq-server
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![
                CertificateDer::from(cert.der().to_vec()),
                CertificateDer::from(ca_cert.der().to_vec()),
            ],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .unwrap();
    TestPki {
        _dir: dir,
        ca_file,
        server: Arc::new(server),
    }
}
