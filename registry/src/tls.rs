//! TLS with rustls: the server configuration built from `http.tls`.

use std::path::Path;
use std::sync::Arc;

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::Tls;

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
    /// rustls refused the certificate and key.
    #[error("http.tls: {0}")]
    Rustls(#[from] rustls::Error),
}

fn pem_error(key: &'static str, path: &Path, message: impl ToString) -> TlsError {
    TlsError::Pem { key, path: path.display().to_string(), message: message.to_string() }
}

/// Builds the rustls server configuration for `tls`, offering HTTP/2 unless disabled.
pub fn server_config(tls: &Tls, http2: bool) -> Result<Arc<ServerConfig>, TlsError> {
    let cert_path = tls.certificate.as_deref().ok_or_else(|| pem_error("http.tls.certificate", Path::new(""), "missing"))?;
    let key_path = tls.key.as_deref().ok_or_else(|| pem_error("http.tls.key", Path::new(""), "missing"))?;
    let certs = CertificateDer::pem_file_iter(cert_path)
        .map_err(|e| pem_error("http.tls.certificate", cert_path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error("http.tls.certificate", cert_path, e))?;
    if certs.is_empty() {
        return Err(pem_error("http.tls.certificate", cert_path, "no certificate found"));
    }
    let key = PrivateKeyDer::from_pem_file(key_path).map_err(|e| pem_error("http.tls.key", key_path, e))?;
    let versions: &[&rustls::SupportedProtocolVersion] = match tls.minimumtls.as_deref() {
        Some("tls1.3") => &[&rustls::version::TLS13],
        _ => &[&rustls::version::TLS13, &rustls::version::TLS12],
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.alpn_protocols = if http2 { vec![b"h2".to_vec(), b"http/1.1".to_vec()] } else { vec![b"http/1.1".to_vec()] };
    Ok(Arc::new(config))
}
