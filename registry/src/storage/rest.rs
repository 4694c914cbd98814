//! What the REST drivers (`azure`, `gcs`) share: requests that can be sent
//! again, retries with backoff, response bodies read with a limit or
//! streamed, and percent-encoding.
//!
//! Every request body is held in memory (a part of at most `chunksize`, or
//! a small file), so a failed attempt can be repeated as it was; a
//! download is retried only until its headers arrive, and then streams.
//! Throttling (408, 429), server errors (500, 502, 503, 504) and failed
//! connections are retried up to [`MAX_ATTEMPTS`] times, waiting
//! 200 ms, 400 ms, 800 ms, ... (with jitter, or the server's
//! `Retry-After`) in between.

use std::io;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use rand::RngExt;

use super::ByteStream;

/// Attempts per request, throttling and 5xx answers included.
pub const MAX_ATTEMPTS: u32 = 5;
/// The first wait between attempts; it doubles with each further one.
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// The longest wait between attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Largest error or metadata body read into memory.
const SMALL_BODY: usize = 1024 * 1024;

/// A request that can be sent more than once.
#[derive(Debug, Clone)]
pub struct Call {
    /// The method.
    pub method: Method,
    /// The full URL, percent-encoded.
    pub url: String,
    /// Headers other than the ones [`Authorize`] adds.
    pub headers: HeaderMap,
    /// The body.
    pub body: Bytes,
}

impl Call {
    /// A request without headers or body.
    pub fn new(method: Method, url: String) -> Call {
        Call {
            method,
            url,
            headers: HeaderMap::new(),
            body: Bytes::new(),
        }
    }

    /// Adds a header; `value` must be a valid header value (callers pass
    /// numbers, dates, encoded names and constants).
    pub fn header(mut self, name: impl Into<HeaderName>, value: &str) -> Call {
        if let Ok(value) = HeaderValue::from_str(value) {
            self.headers.append(name.into(), value);
        }
        self
    }

    /// Sets the body (and its `Content-Length`).
    pub fn body(mut self, body: Bytes) -> Call {
        self.body = body;
        self
    }
}

/// Signs or otherwise authorizes each attempt of a request.
#[async_trait]
pub trait Authorize: Send + Sync {
    /// Adds the headers that authorize `request` (dates, signatures, tokens).
    async fn authorize(&self, request: &mut Request<Full<Bytes>>) -> io::Result<()>;
}

/// The client every request of a driver goes through.
#[derive(Clone)]
pub struct Rest {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl Rest {
    /// A client on the process's one TLS stack.
    pub fn new() -> Rest {
        Rest {
            client: crate::https::client(),
        }
    }

    /// Sends `call`, authorized by `auth`, retrying throttling, server
    /// errors and failed connections with backoff. Any other answer is
    /// returned as it is (the caller judges its status); the last answer or
    /// error is returned once the attempts are spent.
    pub async fn send(&self, call: &Call, auth: &dyn Authorize) -> io::Result<Response<Incoming>> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut request = Request::builder()
                .method(call.method.clone())
                .uri(&call.url)
                .body(Full::new(call.body.clone()))
                .map_err(io::Error::other)?;
            *request.headers_mut() = call.headers.clone();
            if !call.body.is_empty() || [Method::PUT, Method::POST].contains(&call.method) {
                request.headers_mut().insert(
                    http::header::CONTENT_LENGTH,
                    HeaderValue::from(call.body.len()),
                );
            }
            auth.authorize(&mut request).await?;
            let wait = match self.client.request(request).await {
                Ok(response) if !retryable(response.status()) => return Ok(response),
                Ok(response) if attempt >= MAX_ATTEMPTS => return Ok(response),
                Ok(response) => retry_after(response.headers()).unwrap_or_else(|| backoff(attempt)),
                Err(e) if attempt >= MAX_ATTEMPTS => {
                    return Err(io::Error::other(format!(
                        "{} {}: {}",
                        call.method,
                        without_query(&call.url),
                        error_chain(&e)
                    )));
                }
                Err(_) => backoff(attempt),
            };
            tracing::debug!(method = %call.method, url = without_query(&call.url), attempt, "retrying");
            tokio::time::sleep(wait).await;
        }
    }
}

/// Whether an answer with `status` is worth another attempt.
fn retryable(status: StatusCode) -> bool {
    matches!(status.as_u16(), 408 | 429 | 500 | 502 | 503 | 504)
}

/// The wait before attempt `attempt + 1`: doubling from [`FIRST_BACKOFF`],
/// at most [`MAX_BACKOFF`], between half and all of that at random.
fn backoff(attempt: u32) -> Duration {
    let full = FIRST_BACKOFF
        .saturating_mul(1 << (attempt - 1).min(16))
        .min(MAX_BACKOFF);
    full.mul_f64(rand::rng().random_range(0.5..=1.0))
}

/// A `Retry-After` of whole seconds, capped at [`MAX_BACKOFF`].
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let seconds: u64 = headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .parse()
        .ok()?;
    Some(Duration::from_secs(seconds).min(MAX_BACKOFF))
}

/// A URL without its query, which may hold a signature.
pub fn without_query(url: &str) -> &str {
    url.split('?').next().unwrap_or(url)
}

/// An error and its causes, joined: hyper's top-level message alone says
/// little ("client error (Connect)").
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Requests sent at once by [`for_each_key`].
const CONCURRENCY: usize = 16;

/// Runs `op` on every key, [`CONCURRENCY`] at a time; the first error ends it.
pub async fn for_each_key<F, Fut>(keys: Vec<String>, op: F) -> super::Result<()>
where
    F: Fn(String) -> Fut,
    Fut: Future<Output = super::Result<()>>,
{
    let mut running = futures_util::stream::iter(keys)
        .map(op)
        .buffer_unordered(CONCURRENCY);
    while let Some(result) = running.next().await {
        result?;
    }
    Ok(())
}

/// Reads a small body (metadata, listings, error documents) whole.
pub async fn read_small(response: Response<Incoming>) -> io::Result<Bytes> {
    Limited::new(response.into_body(), SMALL_BODY)
        .collect()
        .await
        .map(|body| body.to_bytes())
        .map_err(|e| io::Error::other(format!("reading a response body: {e}")))
}

/// Reads a body of at most `limit` bytes whole; `None` past the limit.
pub async fn read_limited(response: Response<Incoming>, limit: u64) -> io::Result<Option<Bytes>> {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    match Limited::new(response.into_body(), limit).collect().await {
        Ok(body) => Ok(Some(body.to_bytes())),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Ok(None),
        Err(e) => Err(io::Error::other(format!("reading a response body: {e}"))),
    }
}

/// The body as a stream of its own chunks, as they arrive.
pub fn stream(response: Response<Incoming>) -> ByteStream {
    Box::pin(
        response
            .into_body()
            .into_data_stream()
            .map_err(io::Error::other),
    )
}

/// Characters a URL carries as they are (RFC 3986's unreserved ones).
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');
/// [`UNRESERVED`] and `/`, for keys kept as paths.
const UNRESERVED_AND_SLASH: &AsciiSet = &UNRESERVED.remove(b'/');

/// Percent-encodes `text` for a URL: everything but unreserved characters,
/// and `/` too unless `keep_slash`.
pub fn encode(text: &str, keep_slash: bool) -> String {
    let set = if keep_slash {
        UNRESERVED_AND_SLASH
    } else {
        UNRESERVED
    };
    utf8_percent_encode(text, set).to_string()
}

/// The key of a driver path below `root` (a prefix without slashes at
/// either end; empty for the container or bucket root).
pub fn key(root: &str, path: &str) -> String {
    let path = path.trim_matches('/');
    match (root.is_empty(), path.is_empty()) {
        (true, _) => path.to_owned(),
        (false, true) => root.to_owned(),
        (false, false) => format!("{root}/{path}"),
    }
}

/// The listing prefix of the directory `key`: `key/`, or nothing at the root.
pub fn dir_prefix(key: &str) -> String {
    if key.is_empty() {
        String::new()
    } else {
        format!("{key}/")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_within_bounds() {
        for attempt in 1..=8 {
            let full = FIRST_BACKOFF
                .saturating_mul(1 << (attempt - 1))
                .min(MAX_BACKOFF);
            let wait = backoff(attempt);
            assert!(
                wait >= full / 2 && wait <= full,
                "attempt {attempt}: {wait:?}"
            );
        }
    }

    #[test]
    fn keys_and_encoding() {
        assert_eq!(key("", "/docker/registry"), "docker/registry");
        assert_eq!(key("root/dir", "/a/b"), "root/dir/a/b");
        assert_eq!(key("root", "/"), "root");
        assert_eq!(dir_prefix(""), "");
        assert_eq!(dir_prefix("a"), "a/");
        assert_eq!(encode("a b/c:d", true), "a%20b/c%3Ad");
        assert_eq!(encode("a/b", false), "a%2Fb");
    }
}
