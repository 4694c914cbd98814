//! Test certificates made on the spot (rcgen on ring): a certificate
//! authority, server certificates for `127.0.0.1` and `localhost`, client
//! certificates for mutual TLS, their PEM files, and the public-key pin
//! curl takes (`--pinnedpubkey sha256//...`).

use std::fs;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PublicKeyData,
};
use sha2::{Digest as _, Sha256};

/// A certificate and its private key, as PEM, with the pin of its key.
#[derive(Debug, Clone)]
pub struct CertifiedKey {
    /// The certificate (PEM).
    pub cert_pem: String,
    /// The private key (PKCS#8 PEM).
    pub key_pem: String,
    /// `sha256//<base64 of the SHA-256 of the SubjectPublicKeyInfo>`, as
    /// curl's `--pinnedpubkey` takes it.
    pub pin: String,
}

impl CertifiedKey {
    /// Write the certificate and key to `cert` and `key`, each through a
    /// temporary file and a rename, so a watcher never sees half a file.
    pub fn write(&self, cert: &Path, key: &Path) {
        write_atomically(cert, self.cert_pem.as_bytes());
        write_atomically(key, self.key_pem.as_bytes());
    }
}

/// Write `bytes` to `path` through a temporary file in the same directory
/// and a rename.
pub fn write_atomically(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("tmp-write");
    fs::write(&tmp, bytes).unwrap_or_else(|e| panic!("write {}: {e}", tmp.display()));
    fs::rename(&tmp, path).unwrap_or_else(|e| panic!("rename to {}: {e}", path.display()));
}

/// A certificate authority that signs server and client certificates.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCa").finish_non_exhaustive()
    }
}

impl TestCa {
    /// A new self-signed CA named `name`.
    pub fn new(name: &str) -> TestCa {
        let key = KeyPair::generate().expect("generate CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).expect("self-sign CA");
        TestCa {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// The CA certificate (PEM), to trust.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Write the CA certificate to `path` and return the path.
    pub fn write_cert(&self, path: &Path) -> PathBuf {
        write_atomically(path, self.cert_pem.as_bytes());
        path.to_path_buf()
    }

    /// A server certificate for `127.0.0.1` and `localhost`, with common
    /// name `name`, signed by this CA.
    pub fn server_cert(&self, name: &str) -> CertifiedKey {
        self.server_cert_for(name, &["127.0.0.1", "localhost"])
    }

    /// A server certificate with common name `name` for the host names and
    /// IP addresses `sans`, signed by this CA.
    pub fn server_cert_for(&self, name: &str, sans: &[&str]) -> CertifiedKey {
        let sans = sans.iter().map(|s| s.to_string()).collect();
        self.leaf(name, sans, None, ExtendedKeyUsagePurpose::ServerAuth)
    }

    /// A client certificate for `name`, signed by this CA.
    pub fn client_cert(&self, name: &str) -> CertifiedKey {
        self.leaf(name, Vec::new(), None, ExtendedKeyUsagePurpose::ClientAuth)
    }

    /// A client certificate for user `name` in group `group` (its
    /// organization, as Kubernetes reads it), signed by this CA.
    pub fn client_cert_in_group(&self, name: &str, group: &str) -> CertifiedKey {
        self.leaf(
            name,
            Vec::new(),
            Some(group),
            ExtendedKeyUsagePurpose::ClientAuth,
        )
    }

    fn leaf(
        &self,
        name: &str,
        sans: Vec<String>,
        organization: Option<&str>,
        usage: ExtendedKeyUsagePurpose,
    ) -> CertifiedKey {
        let key = KeyPair::generate().expect("generate key");
        let mut params = CertificateParams::new(sans).expect("certificate params");
        params.distinguished_name.push(DnType::CommonName, name);
        if let Some(organization) = organization {
            params
                .distinguished_name
                .push(DnType::OrganizationName, organization);
        }
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![usage];
        params.use_authority_key_identifier_extension = true;
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("sign certificate");
        let spki = key.subject_public_key_info();
        CertifiedKey {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            pin: format!(
                "sha256//{}",
                base64::engine::general_purpose::STANDARD.encode(Sha256::digest(&spki))
            ),
        }
    }
}
