//! TLS with rustls: the server configuration built from `http.tls`, with a
//! certificate that follows its files.
//!
//! The certificate and key are re-read when either file changes (checked
//! every [`RELOAD_INTERVAL`]), so a rotated Kubernetes Secret is served to new
//! connections within seconds; connections already open keep their session.
//! A half-written pair (certificate swapped, key not yet) fails to load and
//! the previous one stays in force until the next check.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::{TlsSettings, TlsVersion};

/// How often the certificate files are checked for changes.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(1);

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("{key}: {path}: {message}")]
    Pem {
        /// The config key naming the file.
        key: &'static str,
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// rustls refused the configuration.
    #[error("http.tls: {0}")]
    Rustls(#[from] rustls::Error),
    /// The client CA set is unusable.
    #[error("http.tls.clientcas: {0}")]
    ClientCas(String),
}

fn pem_error(key: &'static str, path: &Path, message: impl ToString) -> TlsError {
    TlsError::Pem {
        key,
        path: path.display().to_string(),
        message: message.to_string(),
    }
}

fn read_certs(key: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem_error(key, path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(key, path, e))?;
    if certs.is_empty() {
        return Err(pem_error(key, path, "no certificate found"));
    }
    Ok(certs)
}

/// Modification time and size of a file, to notice replacements.
type Stamp = Option<(SystemTime, u64)>;

fn stamp(path: &Path) -> Stamp {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// Serves the certificate currently on disk.
pub struct CertReloader {
    certificate: PathBuf,
    key: PathBuf,
    provider: Arc<CryptoProvider>,
    current: RwLock<(Arc<CertifiedKey>, Stamp, Stamp)>,
}

impl fmt::Debug for CertReloader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertReloader")
            .field("certificate", &self.certificate)
            .finish_non_exhaustive()
    }
}

/// Loads a certificate chain and its private key, checking they match.
fn load_pair(
    certificate: &Path,
    key: &Path,
    provider: &CryptoProvider,
) -> Result<Arc<CertifiedKey>, TlsError> {
    let certs = read_certs("http.tls.certificate", certificate)?;
    let key_der =
        PrivateKeyDer::from_pem_file(key).map_err(|e| pem_error("http.tls.key", key, e))?;
    let signing = provider.key_provider.load_private_key(key_der)?;
    let certified = CertifiedKey::new(certs, signing);
    certified.keys_match()?;
    Ok(Arc::new(certified))
}

impl CertReloader {
    fn new(
        certificate: PathBuf,
        key: PathBuf,
        provider: Arc<CryptoProvider>,
    ) -> Result<Self, TlsError> {
        let stamps = (stamp(&certificate), stamp(&key));
        let first = load_pair(&certificate, &key, &provider)?;
        Ok(CertReloader {
            current: RwLock::new((first, stamps.0, stamps.1)),
            certificate,
            key,
            provider,
        })
    }

    /// Reloads when either file changed. Returns whether a new pair is in force.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let stamps = (stamp(&self.certificate), stamp(&self.key));
        {
            let current = self.current.read().unwrap_or_else(|e| e.into_inner());
            if (current.1, current.2) == stamps {
                return Ok(false);
            }
        }
        let loaded = load_pair(&self.certificate, &self.key, &self.provider)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = (loaded, stamps.0, stamps.1);
        Ok(true)
    }

    /// Keeps the certificate in step with its files until the task is dropped.
    pub async fn follow_files(self: Arc<Self>) {
        crate::reload::follow("TLS certificate", RELOAD_INTERVAL, move || {
            self.reload_if_changed()
        })
        .await
    }
}

impl ResolvesServerCert for CertReloader {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .0
                .clone(),
        )
    }
}

/// Builds the rustls server configuration for `tls`, offering HTTP/2 unless
/// disabled; the returned reloader must be followed for rotation to work.
pub fn server_config(
    tls: &TlsSettings,
    http2: bool,
) -> Result<(Arc<ServerConfig>, Arc<CertReloader>), TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let reloader = Arc::new(CertReloader::new(
        tls.certificate.clone(),
        tls.key.clone(),
        provider.clone(),
    )?);

    let versions: &[&rustls::SupportedProtocolVersion] = match tls.minimum_version {
        TlsVersion::Tls13 => &[&rustls::version::TLS13],
        TlsVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
    };
    let builder =
        ServerConfig::builder_with_provider(provider.clone()).with_protocol_versions(versions)?;
    let builder = if tls.client_cas.is_empty() {
        builder.with_no_client_auth()
    } else {
        let mut roots = rustls::RootCertStore::empty();
        for path in &tls.client_cas {
            for cert in read_certs("http.tls.clientcas", path)? {
                roots.add(cert)?;
            }
        }
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|e| TlsError::ClientCas(e.to_string()))?;
        builder.with_client_cert_verifier(verifier)
    };
    let mut config = builder.with_cert_resolver(reloader.clone());
    config.alpn_protocols = if http2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    Ok((Arc::new(config), reloader))
}
