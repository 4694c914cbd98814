//! The client of one upstream registry: requests with registry token
//! authentication, redirects followed, and short timeouts.
//!
//! Registries answer an unauthorized request with 401 and a
//! `WWW-Authenticate` challenge. `Bearer realm=..,service=..,scope=..` asks
//! for a token from the realm (fetched with basic credentials when some are
//! configured, cached per scope until it expires); `Basic` asks for the
//! credentials themselves. Credentials from a directory are read again each
//! time they are used, so a rotated Secret takes effect without a restart.
//!
//! Connecting and the first response byte each get a few seconds: a node
//! instance that cannot reach its upstream must fail fast, so that the
//! container runtime moves on to its next host.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use base64::Engine;
use bytes::Bytes;
use http::header::{ACCEPT, AUTHORIZATION, LOCATION, USER_AGENT, WWW_AUTHENTICATE};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;

use crate::config::UpstreamCredentials;
use crate::storage::rest::{error_chain, read_small, without_query};

/// How long an upstream may take to answer with its status and headers
/// (the connect timeout of the shared client is part of it).
pub const FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(5);
/// After a request got no answer in time, how long further requests fail
/// at once without trying.
const SILENT_COOLDOWN: Duration = Duration::from_secs(10);
/// Redirects followed per request (registries redirect blobs to storage).
const MAX_REDIRECTS: usize = 5;
/// A token without `expires_in` lives this long (the token spec's default).
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(60);

/// Why an upstream gave no usable answer.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// No answer: connection refused, timed out, reset.
    #[error("{url}: {why}")]
    Unreachable {
        /// The URL asked, without its query.
        url: String,
        /// What happened.
        why: String,
    },
    /// Authentication with the upstream failed.
    #[error("authenticating with {url}: {why}")]
    Auth {
        /// The token realm or registry URL.
        url: String,
        /// What happened.
        why: String,
    },
}

/// A token and when it stops being used.
struct Token {
    value: String,
    expires: Instant,
}

/// One upstream registry.
pub struct Upstream {
    url: String,
    credentials: UpstreamCredentials,
    client: Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
    tokens: Mutex<HashMap<String, Token>>,
    basic: AtomicBool,
    /// Until when requests fail at once, after one got no answer in time.
    silent_until: Mutex<Option<Instant>>,
}

impl Upstream {
    /// The upstream at `url` (no trailing slash).
    pub fn new(url: String, credentials: UpstreamCredentials) -> Upstream {
        Upstream {
            url,
            credentials,
            client: crate::https::client(),
            tokens: Mutex::new(HashMap::new()),
            basic: AtomicBool::new(false),
            silent_until: Mutex::new(None),
        }
    }

    /// The upstream's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Sends `method` to `/v2/<repo>/<rest>` with an optional `Accept`,
    /// authenticating as the upstream asks and following redirects. Any
    /// answer is returned as it is; only no answer is an error.
    pub async fn send(
        &self,
        method: Method,
        repo: &str,
        rest: &str,
        accept: Option<&HeaderValue>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let scope = format!("repository:{repo}:pull");
        let url = format!("{}/v2/{repo}/{rest}", self.url);
        let mut challenged = false;
        let response = loop {
            let authorization = self.authorization(&scope)?;
            let response = self
                .request(&method, &url, accept, authorization.as_ref())
                .await?;
            if response.status() != StatusCode::UNAUTHORIZED || challenged {
                break response;
            }
            challenged = true;
            let Some(challenge) = response
                .headers()
                .get(WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok())
                .and_then(Challenge::parse)
            else {
                break response;
            };
            match challenge {
                Challenge::Basic => {
                    if self.credentials == UpstreamCredentials::None {
                        break response;
                    }
                    self.basic.store(true, Ordering::Relaxed);
                }
                Challenge::Bearer {
                    realm,
                    service,
                    scope: asked,
                } => {
                    let token = self
                        .fetch_token(
                            &realm,
                            service.as_deref(),
                            asked.as_deref().unwrap_or(&scope),
                        )
                        .await?;
                    let mut tokens = self.lock();
                    let now = Instant::now();
                    tokens.retain(|_, t| t.expires > now);
                    tokens.insert(scope.clone(), token);
                }
            }
        };
        self.follow(method, response, accept).await
    }

    /// Follows redirects of `response` (without credentials: the target is
    /// another server, often storage with a signed URL).
    async fn follow(
        &self,
        method: Method,
        mut response: Response<Incoming>,
        accept: Option<&HeaderValue>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        for _ in 0..MAX_REDIRECTS {
            if !response.status().is_redirection() {
                break;
            }
            let Some(location) = response
                .headers()
                .get(LOCATION)
                .and_then(|v| v.to_str().ok())
            else {
                break;
            };
            let target = if location.starts_with('/') {
                format!("{}{location}", origin(&self.url))
            } else {
                location.to_owned()
            };
            response = self.request(&method, &target, accept, None).await?;
        }
        Ok(response)
    }

    /// One request, bounded by [`FIRST_BYTE_TIMEOUT`] until its headers.
    async fn request(
        &self,
        method: &Method,
        url: &str,
        accept: Option<&HeaderValue>,
        authorization: Option<&HeaderValue>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let unreachable = |why: String| UpstreamError::Unreachable {
            url: without_query(url).to_owned(),
            why,
        };
        let mut request = Request::builder().method(method.clone()).uri(url).header(
            USER_AGENT,
            concat!("berth-registry/", env!("CARGO_PKG_VERSION")),
        );
        if let Some(accept) = accept {
            request = request.header(ACCEPT, accept);
        }
        if let Some(authorization) = authorization {
            request = request.header(AUTHORIZATION, authorization);
        }
        let request = request
            .body(Empty::new())
            .map_err(|e| unreachable(format!("invalid request: {e}")))?;
        let silent = || {
            self.silent_until
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
        };
        if silent().is_some_and(|until| until > Instant::now()) {
            return Err(unreachable(format!(
                "it answered nothing within {}s moments ago; asking again after {}s",
                FIRST_BYTE_TIMEOUT.as_secs(),
                SILENT_COOLDOWN.as_secs()
            )));
        }
        match tokio::time::timeout(FIRST_BYTE_TIMEOUT, self.client.request(request)).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(e)) => Err(unreachable(error_chain(&e))),
            Err(_) => {
                // A partition: the next requests fail at once instead of
                // each waiting out the timeout (cached tags are then served
                // without delay, and clients fall back sooner).
                *silent() = Some(Instant::now() + SILENT_COOLDOWN);
                Err(unreachable(format!(
                    "no answer within {}s",
                    FIRST_BYTE_TIMEOUT.as_secs()
                )))
            }
        }
    }

    /// The `Authorization` to send for `scope`: a cached token, or basic
    /// credentials once the upstream asked for them.
    fn authorization(&self, scope: &str) -> Result<Option<HeaderValue>, UpstreamError> {
        if let Some(token) = self
            .lock()
            .get(scope)
            .filter(|t| t.expires > Instant::now())
        {
            return Ok(HeaderValue::from_str(&format!("Bearer {}", token.value)).ok());
        }
        if self.basic.load(Ordering::Relaxed) {
            return self.basic_authorization();
        }
        Ok(None)
    }

    /// `Basic <credentials>`, when credentials are configured.
    fn basic_authorization(&self) -> Result<Option<HeaderValue>, UpstreamError> {
        let Some((user, password)) = self.read_credentials()? else {
            return Ok(None);
        };
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        Ok(HeaderValue::from_str(&format!("Basic {encoded}")).ok())
    }

    /// The credentials, read from their directory when they come from one.
    fn read_credentials(&self) -> Result<Option<(String, String)>, UpstreamError> {
        match &self.credentials {
            UpstreamCredentials::None => Ok(None),
            UpstreamCredentials::Fixed { username, password } => {
                Ok(Some((username.clone(), password.expose().clone())))
            }
            UpstreamCredentials::Dir(dir) => {
                let read = |name: &str| {
                    let path = dir.join(name);
                    std::fs::read_to_string(&path)
                        .map(|text| text.trim_end_matches(['\r', '\n']).to_owned())
                        .map_err(|e| UpstreamError::Auth {
                            url: self.url.clone(),
                            why: format!("reading {}: {e}", path.display()),
                        })
                };
                Ok(Some((read("username")?, read("password")?)))
            }
        }
    }

    /// Fetches a token for `scope` from `realm`.
    async fn fetch_token(
        &self,
        realm: &str,
        service: Option<&str>,
        scope: &str,
    ) -> Result<Token, UpstreamError> {
        let auth_error = |why: String| UpstreamError::Auth {
            url: realm.to_owned(),
            why,
        };
        let mut url = format!(
            "{realm}{}scope={}",
            if realm.contains('?') { '&' } else { '?' },
            crate::storage::rest::encode(scope, false)
        );
        if let Some(service) = service {
            url.push_str(&format!(
                "&service={}",
                crate::storage::rest::encode(service, false)
            ));
        }
        let authorization = self.basic_authorization()?;
        let response = self
            .request(&Method::GET, &url, None, authorization.as_ref())
            .await?;
        let status = response.status();
        let body = read_small(response)
            .await
            .map_err(|e| auth_error(e.to_string()))?;
        if !status.is_success() {
            return Err(auth_error(format!("the token server answered {status}")));
        }
        #[derive(serde::Deserialize)]
        struct Answer {
            token: Option<String>,
            access_token: Option<String>,
            expires_in: Option<u64>,
        }
        let answer: Answer = serde_json::from_slice(&body)
            .map_err(|e| auth_error(format!("the token server's answer: {e}")))?;
        let value = answer
            .token
            .or(answer.access_token)
            .ok_or_else(|| auth_error("the token server's answer holds no token".into()))?;
        let lifetime = answer
            .expires_in
            .map_or(DEFAULT_TOKEN_LIFETIME, Duration::from_secs);
        // Renew a little early, so a token never expires on its way.
        Ok(Token {
            value,
            expires: Instant::now() + lifetime.mul_f64(0.9),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Token>> {
        self.tokens.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// `scheme://authority` of a URL.
fn origin(url: &str) -> &str {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    match url[after_scheme..].find('/') {
        Some(i) => &url[..after_scheme + i],
        None => url,
    }
}

/// A `WWW-Authenticate` challenge.
#[derive(Debug, PartialEq, Eq)]
enum Challenge {
    /// `Basic realm=...`.
    Basic,
    /// `Bearer realm=...,service=...,scope=...`.
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
}

impl Challenge {
    /// Parses a challenge; `None` for other schemes or a Bearer without realm.
    fn parse(text: &str) -> Option<Challenge> {
        let text = text.trim();
        let (scheme, params) = text.split_once(' ').unwrap_or((text, ""));
        if scheme.eq_ignore_ascii_case("basic") {
            return Some(Challenge::Basic);
        }
        if !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        let params = auth_params(params);
        let get = |key: &str| {
            params
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(key))
                .map(|(_, v)| v.clone())
        };
        Some(Challenge::Bearer {
            realm: get("realm")?,
            service: get("service"),
            scope: get("scope"),
        })
    }
}

/// `key=value` and `key="quoted, value"` pairs separated by commas.
fn auth_params(text: &str) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.next_if(|c| *c == ',' || c.is_whitespace()).is_some() {}
        let key: String =
            std::iter::from_fn(|| chars.next_if(|c| *c != '=' && *c != ',')).collect();
        if key.is_empty() {
            return pairs;
        }
        if chars.next_if_eq(&'=').is_none() {
            continue;
        }
        let mut value = String::new();
        if chars.next_if_eq(&'"').is_some() {
            while let Some(c) = chars.next() {
                match c {
                    '"' => break,
                    '\\' => value.extend(chars.next()),
                    c => value.push(c),
                }
            }
        } else {
            value.extend(std::iter::from_fn(|| chars.next_if(|c| *c != ',')));
        }
        pairs.push((key.trim().to_owned(), value.trim().to_owned()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges() {
        assert_eq!(
            Challenge::parse(
                r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull,push""#
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/alpine:pull,push".into()),
            })
        );
        assert_eq!(
            Challenge::parse(r#"Basic realm="Registry Realm""#),
            Some(Challenge::Basic)
        );
        assert_eq!(
            Challenge::parse("bearer realm=http://x/t"),
            Some(Challenge::Bearer {
                realm: "http://x/t".into(),
                service: None,
                scope: None
            })
        );
        for junk in [
            "",
            "Bearer",
            "Bearer service=x",
            "Negotiate abc",
            "Bearer ,,=\"",
            "\"",
        ] {
            assert_eq!(Challenge::parse(junk), None, "{junk:?}");
        }
    }

    #[test]
    fn origins() {
        assert_eq!(
            origin("http://127.0.0.1:5000/v2/a"),
            "http://127.0.0.1:5000"
        );
        assert_eq!(origin("https://h"), "https://h");
    }
}
