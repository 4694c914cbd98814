//! A GCS service account's key (`storage.gcs.keyfile` or
//! `storage.gcs.credentials`), parsed while the configuration is checked so
//! that a bad key stops the start naming its key, and signing what the
//! `gcs` driver sends with it.

use std::io;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD as BASE64, URL_SAFE_NO_PAD};
use ring::rand::SystemRandom;
use ring::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use serde::Deserialize;

/// A service account's key, from its JSON key file.
#[derive(Clone)]
pub struct ServiceAccountKey {
    email: String,
    key_id: Option<String>,
    pair: Arc<RsaKeyPair>,
}

impl std::fmt::Debug for ServiceAccountKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceAccountKey")
            .field("email", &self.email)
            .finish_non_exhaustive()
    }
}

/// The fields of a JSON key file Berth uses.
#[derive(Deserialize)]
struct KeyFile {
    client_email: String,
    private_key: String,
    private_key_id: Option<String>,
}

impl ServiceAccountKey {
    /// Reads a JSON key file's content: `client_email`, and `private_key`
    /// as a PEM PKCS#8 RSA key.
    pub fn from_json(json: &[u8]) -> std::result::Result<ServiceAccountKey, String> {
        let file: KeyFile =
            serde_json::from_slice(json).map_err(|e| format!("not a service account key: {e}"))?;
        let base64: String = file
            .private_key
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .map(str::trim)
            .collect();
        let der = BASE64
            .decode(base64)
            .map_err(|e| format!("private_key is not PEM: {e}"))?;
        let pair = RsaKeyPair::from_pkcs8(&der)
            .map_err(|e| format!("private_key is not a PKCS#8 RSA key: {e}"))?;
        Ok(ServiceAccountKey {
            email: file.client_email,
            key_id: file.private_key_id,
            pair: Arc::new(pair),
        })
    }

    /// The service account's email address.
    pub fn email(&self) -> &str {
        &self.email
    }

    /// An RSA-SHA256 signature of `message`.
    pub fn sign(&self, message: &[u8]) -> io::Result<Vec<u8>> {
        let mut signature = vec![0; self.pair.public().modulus_len()];
        self.pair
            .sign(
                &RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                message,
                &mut signature,
            )
            .map_err(|_| io::Error::other("signing with the service account key failed"))?;
        Ok(signature)
    }

    /// A JWT (RS256) of `claims`, signed with this key.
    pub fn jwt(&self, claims: &serde_json::Value) -> io::Result<String> {
        let header = serde_json::json!({"alg": "RS256", "typ": "JWT", "kid": self.key_id});
        let signed = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = self.sign(signed.as_bytes())?;
        Ok(format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature)))
    }
}
