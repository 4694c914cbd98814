//! Bearer tokens for the REST drivers, fetched when first needed and again
//! shortly before they expire: Azure workload identity (a federated token
//! exchanged at Entra ID), a GCS service account's self-signed JWT, and the
//! GCE/GKE metadata server (GKE workload identity).

use std::io;
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use http::{Method, Request};
use http_body_util::Full;
use serde::Deserialize;

use super::gcs::ServiceAccountKey;
use super::rest::{self, Authorize, Call, Rest, encode};

/// A token is fetched again when less than this is left of its lifetime.
const REFRESH_BEFORE: Duration = Duration::from_secs(5 * 60);
/// Lifetime of a self-signed JWT.
const JWT_LIFETIME: Duration = Duration::from_secs(3600);
/// The OAuth scope of GCS tokens.
const GCS_SCOPE: &str = "https://www.googleapis.com/auth/devstorage.full_control";

/// Where tokens come from.
pub enum Token {
    /// Azure workload identity: the federated token in
    /// `AZURE_FEDERATED_TOKEN_FILE`, exchanged for `scope` with the client
    /// `AZURE_CLIENT_ID` of tenant `AZURE_TENANT_ID` at `AZURE_AUTHORITY_HOST`.
    AzureWorkload {
        /// The client to reach Entra ID with.
        rest: Rest,
        /// The resource scope.
        scope: &'static str,
    },
    /// A JWT signed with a service account's key, used as the token itself.
    ServiceAccount(ServiceAccountKey),
    /// The default service account of the GCE/GKE metadata server
    /// (`GCE_METADATA_HOST`, default `metadata.google.internal`).
    GceMetadata(Rest),
}

/// A cached token of one source.
pub struct BearerToken {
    source: Token,
    cached: tokio::sync::Mutex<Option<(String, Instant)>>,
}

impl BearerToken {
    /// Tokens from `source`, none fetched yet.
    pub fn new(source: Token) -> BearerToken {
        BearerToken {
            source,
            cached: tokio::sync::Mutex::new(None),
        }
    }

    /// A token valid for at least a few more minutes.
    pub async fn get(&self) -> io::Result<String> {
        let mut cached = self.cached.lock().await;
        if let Some((token, expires)) = cached.as_ref()
            && Instant::now() + REFRESH_BEFORE < *expires
        {
            return Ok(token.clone());
        }
        let (token, lifetime) = self.source.fetch().await?;
        *cached = Some((token.clone(), Instant::now() + lifetime));
        Ok(token)
    }
}

/// Requests that need no authorization (token endpoints, emulators).
pub struct Anonymous;

#[async_trait]
impl Authorize for Anonymous {
    async fn authorize(&self, _request: &mut Request<Full<Bytes>>) -> io::Result<()> {
        Ok(())
    }
}

/// An OAuth token endpoint's answer.
#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    expires_in: u64,
}

fn env(name: &str) -> io::Result<String> {
    std::env::var(name).map_err(|_| {
        io::Error::other(format!(
            "no credentials: {name} is not set (configure a key, or workload identity)"
        ))
    })
}

impl Token {
    /// A new token and its lifetime.
    async fn fetch(&self) -> io::Result<(String, Duration)> {
        match self {
            Token::ServiceAccount(key) => {
                let now = SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map_err(io::Error::other)?
                    .as_secs();
                let claims = serde_json::json!({
                    "iss": key.email(),
                    "sub": key.email(),
                    "scope": GCS_SCOPE,
                    "iat": now,
                    "exp": now + JWT_LIFETIME.as_secs(),
                });
                Ok((key.jwt(&claims)?, JWT_LIFETIME))
            }
            Token::GceMetadata(rest) => {
                let host = std::env::var("GCE_METADATA_HOST")
                    .unwrap_or_else(|_| "metadata.google.internal".to_owned());
                let url = format!(
                    "http://{host}/computeMetadata/v1/instance/service-accounts/default/token"
                );
                let call = Call::new(Method::GET, url)
                    .header(http::HeaderName::from_static("metadata-flavor"), "Google");
                answer(rest, &call, "the metadata server").await
            }
            Token::AzureWorkload { rest, scope } => {
                let client = env("AZURE_CLIENT_ID")?;
                let tenant = env("AZURE_TENANT_ID")?;
                let file = env("AZURE_FEDERATED_TOKEN_FILE")?;
                let authority = std::env::var("AZURE_AUTHORITY_HOST")
                    .unwrap_or_else(|_| "https://login.microsoftonline.com/".to_owned());
                let assertion = tokio::fs::read_to_string(&file)
                    .await
                    .map_err(|e| io::Error::other(format!("{file}: {e}")))?;
                let form = format!(
                    "grant_type=client_credentials&client_id={}&scope={}&client_assertion_type={}&client_assertion={}",
                    encode(&client, false),
                    encode(scope, false),
                    encode(
                        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                        false
                    ),
                    encode(assertion.trim(), false),
                );
                let url = format!(
                    "{}/{}/oauth2/v2.0/token",
                    authority.trim_end_matches('/'),
                    encode(&tenant, false)
                );
                let call = Call::new(Method::POST, url)
                    .header(
                        http::header::CONTENT_TYPE,
                        "application/x-www-form-urlencoded",
                    )
                    .body(Bytes::from(form));
                answer(rest, &call, "Entra ID").await
            }
        }
    }
}

/// Sends a token request and reads the OAuth answer.
async fn answer(rest: &Rest, call: &Call, from: &str) -> io::Result<(String, Duration)> {
    let response = rest.send(call, &Anonymous).await?;
    let status = response.status();
    let body = rest::read_small(response).await?;
    if !status.is_success() {
        return Err(io::Error::other(format!(
            "a token from {from}: {status} {}",
            String::from_utf8_lossy(&body)
                .chars()
                .take(300)
                .collect::<String>()
        )));
    }
    let answer: TokenAnswer = serde_json::from_slice(&body)
        .map_err(|e| io::Error::other(format!("a token from {from}: {e}")))?;
    Ok((answer.access_token, Duration::from_secs(answer.expires_in)))
}
