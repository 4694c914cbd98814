//! The `gcs` driver: objects in a Google Cloud Storage bucket (or
//! fake-gcs-server), with the same paths as the filesystem driver below
//! `rootdirectory`, so a bucket CNCF Distribution wrote is served as it is,
//! and the reverse.
//!
//! Uploads are composed objects: each `chunksize` of an upload is stored
//! as a part object under `<rootdirectory>/.berth/parts/<path>/<offset>`
//! (a path Distribution never reads), and committing composes the parts
//! into the object (GCS `compose`, 32 sources a request) and deletes them.
//! Parts are named by their offset, so a writer that opens the upload on
//! any instance knows its size from a listing, and parts a crash left
//! behind after their compose are recognised and skipped. A blob appears in
//! `blobs/` by a server-side `rewrite` once its digest is verified; small
//! files are single uploads. Objects appear whole: readers never see a
//! partial file.
//!
//! With a service account key (`keyfile` or `credentials`), requests carry
//! a JWT the key signs (GCS accepts self-signed JWTs with a scope, as
//! Google's Go client sends them), and blob `GET`/`HEAD` redirect to V4
//! signed URLs unless `storage.redirect.disable` is set. Without a key,
//! tokens come from the metadata server (GKE workload identity); with
//! `endpoint` set and no key (an emulator), requests go unauthorized.
//!
//! This is a small REST client over the process's hyper/rustls stack rather
//! than the `google-cloud-storage` crate, which brings reqwest, tonic and
//! prost (about 250 crates) and a second TLS crypto provider (aws-lc-rs).

use std::io;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::rest::{self, Authorize, Call, Rest, encode};
use super::staged::{Part, PartStore, Staged, StagedWriter};
use super::token::{BearerToken, Token};
use super::{ByteStream, FileInfo, FileWriter, Result, StorageDriver, StorageError};
use crate::config::GcsSettings;
pub use crate::config::ServiceAccountKey;

/// Lifetime of signed redirect URLs.
const SIGNED_URL_TTL: Duration = Duration::from_secs(20 * 60);
/// Most source objects of one compose request.
const MAX_COMPOSE: usize = 32;
/// Where upload parts live, below `rootdirectory`.
const PARTS_DIR: &str = ".berth/parts";

/// A bucket, seen as a tree of paths.
#[derive(Clone)]
pub struct GcsDriver {
    inner: Arc<Inner>,
}

struct Inner {
    rest: Rest,
    auth: Auth,
    bucket: String,
    endpoint: String,
    root: String,
    chunk_size: usize,
    key: Option<ServiceAccountKey>,
    redirect: bool,
}

/// How requests are authorized.
enum Auth {
    /// No credentials (an emulator).
    Anonymous,
    /// Bearer tokens (boxed: the token cache is large).
    Bearer(Box<BearerToken>),
}

#[async_trait]
impl Authorize for Auth {
    async fn authorize(&self, request: &mut Request<Full<Bytes>>) -> io::Result<()> {
        if let Auth::Bearer(token) = self {
            let value = format!("Bearer {}", token.get().await?);
            request.headers_mut().insert(
                http::header::AUTHORIZATION,
                HeaderValue::from_str(&value).map_err(io::Error::other)?,
            );
        }
        Ok(())
    }
}

impl GcsDriver {
    /// A driver for the bucket `settings` name. Makes no request: an
    /// unreachable service or a missing bucket shows in
    /// [`check`](StorageDriver::check).
    pub fn new(settings: &GcsSettings) -> GcsDriver {
        let rest = Rest::new();
        let emulated = settings.endpoint != crate::config::GCS_ENDPOINT;
        let auth = match &settings.key {
            Some(key) => Auth::Bearer(Box::new(BearerToken::new(Token::ServiceAccount(
                key.clone(),
            )))),
            None if emulated => Auth::Anonymous,
            None => Auth::Bearer(Box::new(BearerToken::new(Token::GceMetadata(rest.clone())))),
        };
        GcsDriver {
            inner: Arc::new(Inner {
                rest,
                auth,
                bucket: settings.bucket.clone(),
                endpoint: settings.endpoint.clone(),
                root: settings.root.clone(),
                chunk_size: settings.chunk_size as usize,
                key: settings.key.clone(),
                redirect: settings.redirect,
            }),
        }
    }
}

/// An object's metadata, as the JSON API gives it.
#[derive(Deserialize)]
struct Object {
    name: String,
    #[serde(default)]
    size: Option<String>,
    #[serde(default)]
    updated: Option<String>,
}

impl Object {
    fn size(&self) -> u64 {
        self.size
            .as_deref()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }
}

/// A page of a listing.
#[derive(Deserialize)]
struct Listing {
    #[serde(default)]
    items: Vec<Object>,
    #[serde(default)]
    prefixes: Vec<String>,
    #[serde(rename = "nextPageToken")]
    next_page_token: Option<String>,
}

/// The answer to a rewrite request.
#[derive(Deserialize)]
struct Rewrite {
    #[serde(default)]
    done: bool,
    #[serde(rename = "rewriteToken")]
    rewrite_token: Option<String>,
}

fn io_error(path: &str, e: impl std::fmt::Display) -> StorageError {
    StorageError::Io {
        path: path.to_owned(),
        source: io::Error::other(e.to_string()),
    }
}

impl Inner {
    fn key(&self, path: &str) -> String {
        rest::key(&self.root, path)
    }

    /// The prefix of the part objects of the file at `path`.
    fn parts_prefix(&self, path: &str) -> String {
        rest::dir_prefix(&rest::key(
            &self.root,
            &format!("{PARTS_DIR}/{}", path.trim_matches('/')),
        ))
    }

    fn object_url(&self, key: &str) -> String {
        format!(
            "{}/storage/v1/b/{}/o/{}",
            self.endpoint,
            encode(&self.bucket, false),
            encode(key, false)
        )
    }

    /// Sends `call` about `path`; any status but 2xx is an error (404:
    /// `NotFound`).
    async fn expect_ok(&self, path: &str, call: Call) -> Result<Response<Incoming>> {
        let response = self
            .rest
            .send(&call, &self.auth)
            .await
            .map_err(|e| io_error(path, format!("bucket {}: {e}", self.bucket)))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        if status == StatusCode::NOT_FOUND {
            return Err(StorageError::NotFound(path.to_owned()));
        }
        let body = rest::read_small(response).await.unwrap_or_default();
        let message = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
            .unwrap_or_else(|| String::from_utf8_lossy(&body).chars().take(200).collect());
        Err(io_error(
            path,
            format!("bucket {}: {status} {message}", self.bucket),
        ))
    }

    /// Sends `call` and parses its JSON answer.
    async fn json<T: for<'de> Deserialize<'de>>(&self, path: &str, call: Call) -> Result<T> {
        let response = self.expect_ok(path, call).await?;
        let body = rest::read_small(response)
            .await
            .map_err(|e| io_error(path, e))?;
        serde_json::from_slice(&body)
            .map_err(|e| io_error(path, format!("bucket {}: {e}", self.bucket)))
    }

    /// The metadata of the object `key`, if it exists.
    async fn object(&self, key: &str) -> Result<Option<Object>> {
        match self
            .json(key, Call::new(Method::GET, self.object_url(key)))
            .await
        {
            Ok(object) => Ok(Some(object)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Uploads `body` as the object `key`, replacing it whole.
    async fn upload(&self, key: &str, body: Bytes) -> Result<()> {
        let url = format!(
            "{}/upload/storage/v1/b/{}/o?uploadType=media&name={}",
            self.endpoint,
            encode(&self.bucket, false),
            encode(key, false)
        );
        let call = Call::new(Method::POST, url)
            .header(http::header::CONTENT_TYPE, "application/octet-stream")
            .body(body);
        self.expect_ok(key, call).await.map(|_| ())
    }

    /// One page of the objects whose names start with `prefix`, split at
    /// `/` when `delimited`.
    async fn list_page(
        &self,
        prefix: &str,
        delimited: bool,
        token: Option<&str>,
        max: Option<u32>,
    ) -> Result<Listing> {
        let mut url = format!(
            "{}/storage/v1/b/{}/o?prefix={}",
            self.endpoint,
            encode(&self.bucket, false),
            encode(prefix, false)
        );
        if delimited {
            url.push_str("&delimiter=%2F");
        }
        if let Some(token) = token {
            url.push_str(&format!("&pageToken={}", encode(token, false)));
        }
        if let Some(max) = max {
            url.push_str(&format!("&maxResults={max}"));
        }
        self.json(prefix, Call::new(Method::GET, url)).await
    }

    /// Every object whose name starts with `prefix`.
    async fn objects_with_prefix(&self, prefix: &str) -> Result<Vec<Object>> {
        let mut objects = Vec::new();
        let mut token = None;
        loop {
            let page = self
                .list_page(prefix, false, token.as_deref(), None)
                .await?;
            objects.extend(page.items);
            match page.next_page_token {
                Some(next) => token = Some(next),
                None => return Ok(objects),
            }
        }
    }

    /// Deletes the object `key`; a missing one is no error.
    async fn delete_object(&self, key: &str) -> Result<()> {
        match self
            .expect_ok(key, Call::new(Method::DELETE, self.object_url(key)))
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Deletes every object of `keys`, several at a time.
    async fn delete_all(&self, keys: Vec<String>) -> Result<()> {
        rest::for_each_key(keys, |k| async move { self.delete_object(&k).await }).await
    }

    /// A V4 signed URL for `method` on the object `key`, valid for
    /// [`SIGNED_URL_TTL`].
    fn signed_url(&self, key: &str, method: &str) -> io::Result<Option<String>> {
        let Some(account) = &self.key else {
            return Ok(None);
        };
        let uri: http::Uri = self.endpoint.parse().map_err(io::Error::other)?;
        let host = uri.authority().map(|a| a.as_str()).unwrap_or("");
        let timestamp = humantime::format_rfc3339_seconds(SystemTime::now())
            .to_string()
            .replace(['-', ':'], "");
        let date = &timestamp[..8];
        let scope = format!("{date}/auto/storage/goog4_request");
        let path = format!("/{}/{}", encode(&self.bucket, false), encode(key, true));
        // Already in canonical (sorted) order.
        let query = format!(
            "X-Goog-Algorithm=GOOG4-RSA-SHA256&X-Goog-Credential={}&X-Goog-Date={timestamp}&X-Goog-Expires={}&X-Goog-SignedHeaders=host",
            encode(&format!("{}/{scope}", account.email()), false),
            SIGNED_URL_TTL.as_secs()
        );
        let canonical = format!("{method}\n{path}\n{query}\nhost:{host}\n\nhost\nUNSIGNED-PAYLOAD");
        let to_sign = format!(
            "GOOG4-RSA-SHA256\n{timestamp}\n{scope}\n{}",
            hex::encode(Sha256::digest(canonical.as_bytes()))
        );
        let signature = hex::encode(account.sign(to_sign.as_bytes())?);
        let base = self
            .endpoint
            .trim_end_matches(uri.path().trim_end_matches('/'));
        Ok(Some(format!(
            "{base}{path}?{query}&X-Goog-Signature={signature}"
        )))
    }
}

#[async_trait]
impl PartStore for Inner {
    /// `target` is the driver path of the file.
    async fn stage(&self, target: &str, part: &Part, body: Bytes) -> Result<()> {
        let name = format!("{}{:020}", self.parts_prefix(target), part.offset);
        self.upload(&name, body).await
    }

    /// Parts are objects, durable as they are; completing composes them.
    async fn merge(&self, target: &str, staged: &Staged, complete: bool) -> Result<()> {
        if !complete {
            return Ok(());
        }
        let key = self.key(target);
        if staged.parts.is_empty() {
            return match staged.merged {
                0 => self.upload(&key, Bytes::new()).await,
                _ => Ok(()),
            };
        }
        let prefix = self.parts_prefix(target);
        let names: Vec<String> = staged
            .parts
            .iter()
            .map(|p| format!("{prefix}{:020}", p.offset))
            .collect();
        let mut merged = staged.merged > 0;
        for batch in names.chunks(MAX_COMPOSE - 1) {
            let mut sources: Vec<serde_json::Value> = Vec::new();
            if merged {
                sources.push(serde_json::json!({"name": key}));
            }
            sources.extend(batch.iter().map(|n| serde_json::json!({"name": n})));
            let body = serde_json::json!({
                "sourceObjects": sources,
                "destination": {"contentType": "application/octet-stream"},
            });
            let call = Call::new(Method::POST, format!("{}/compose", self.object_url(&key)))
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(Bytes::from(body.to_string()));
            self.expect_ok(target, call).await?;
            merged = true;
        }
        self.delete_all(names).await
    }
}

#[async_trait]
impl StorageDriver for GcsDriver {
    fn name(&self) -> &'static str {
        "gcs"
    }

    async fn get_content(&self, path: &str, limit: u64) -> Result<Bytes> {
        let s = &self.inner;
        let url = format!("{}?alt=media", s.object_url(&s.key(path)));
        let response = s.expect_ok(path, Call::new(Method::GET, url)).await?;
        rest::read_limited(response, limit)
            .await
            .map_err(|e| io_error(path, e))?
            .ok_or_else(|| StorageError::TooLarge {
                path: path.to_owned(),
                limit,
            })
    }

    async fn put_content(&self, path: &str, content: Bytes) -> Result<()> {
        let s = &self.inner;
        s.upload(&s.key(path), content).await
    }

    async fn reader(&self, path: &str, offset: u64, len: Option<u64>) -> Result<ByteStream> {
        let s = &self.inner;
        if len == Some(0) {
            return Ok(Box::pin(futures_util::stream::empty()));
        }
        let mut call = Call::new(
            Method::GET,
            format!("{}?alt=media", s.object_url(&s.key(path))),
        );
        match (offset, len) {
            (0, None) => {}
            (a, None) => call = call.header(http::header::RANGE, &format!("bytes={a}-")),
            (a, Some(n)) => {
                call = call.header(http::header::RANGE, &format!("bytes={a}-{}", a + n - 1))
            }
        }
        let response = s.expect_ok(path, call).await?;
        Ok(rest::stream(response))
    }

    async fn writer(&self, path: &str) -> Result<Box<dyn FileWriter>> {
        let s = &self.inner;
        let merged = s.object(&s.key(path)).await?.map_or(0, |o| o.size());
        let mut parts: Vec<(u64, u64, String)> = Vec::new();
        let prefix = s.parts_prefix(path);
        let mut stale = Vec::new();
        for object in s.objects_with_prefix(&prefix).await? {
            let offset = object.name[prefix.len()..].parse::<u64>().ok();
            match offset {
                Some(offset) if offset >= merged => {
                    parts.push((offset, object.size(), object.name))
                }
                // Already composed into the object (a crash before the cleanup).
                _ => stale.push(object.name),
            }
        }
        s.delete_all(stale).await?;
        parts.sort();
        let mut staged = Staged {
            merged,
            ..Staged::default()
        };
        for (number, (offset, size, _)) in parts.into_iter().enumerate() {
            if offset != staged.size() {
                return Err(io_error(
                    path,
                    format!(
                        "bucket {}: upload part at {offset} does not follow byte {}",
                        s.bucket,
                        staged.size()
                    ),
                ));
            }
            staged.parts.push(Part {
                number: number as u32,
                offset,
                size,
            });
        }
        Ok(Box::new(StagedWriter::new(
            self.inner.clone(),
            path.to_owned(),
            staged,
            s.chunk_size,
        )))
    }

    async fn stat(&self, path: &str) -> Result<FileInfo> {
        let s = &self.inner;
        let key = s.key(path);
        if let Some(object) = s.object(&key).await? {
            return Ok(FileInfo {
                size: object.size(),
                modified: object
                    .updated
                    .as_deref()
                    .and_then(|t| humantime::parse_rfc3339_weak(t).ok())
                    .unwrap_or(SystemTime::UNIX_EPOCH),
                is_dir: false,
            });
        }
        let page = s
            .list_page(&rest::dir_prefix(&key), false, None, Some(1))
            .await?;
        if page.items.is_empty() && page.prefixes.is_empty() {
            return Err(StorageError::NotFound(path.to_owned()));
        }
        Ok(FileInfo {
            size: 0,
            modified: SystemTime::UNIX_EPOCH,
            is_dir: true,
        })
    }

    async fn list(&self, path: &str) -> Result<Vec<String>> {
        let s = &self.inner;
        let prefix = rest::dir_prefix(&s.key(path));
        let mut children = Vec::new();
        let mut token = None;
        loop {
            let page = s.list_page(&prefix, true, token.as_deref(), None).await?;
            children.extend(
                page.prefixes
                    .iter()
                    .chain(page.items.iter().map(|o| &o.name))
                    .filter_map(|n| n.strip_prefix(&prefix))
                    .map(|n| n.trim_end_matches('/').to_owned())
                    .filter(|n| !n.is_empty()),
            );
            match page.next_page_token {
                Some(next) => token = Some(next),
                None => break,
            }
        }
        if children.is_empty() {
            return Err(StorageError::NotFound(path.to_owned()));
        }
        Ok(children)
    }

    /// A server-side rewrite (the destination appears whole when it is
    /// done), then the source's delete.
    async fn rename(&self, from: &str, to: &str) -> Result<()> {
        let s = &self.inner;
        let (from_key, to_key) = (s.key(from), s.key(to));
        let url = format!(
            "{}/rewriteTo/b/{}/o/{}",
            s.object_url(&from_key),
            encode(&s.bucket, false),
            encode(&to_key, false)
        );
        let mut token: Option<String> = None;
        loop {
            let mut call_url = url.clone();
            if let Some(token) = &token {
                call_url.push_str(&format!("?rewriteToken={}", encode(token, false)));
            }
            let call = Call::new(Method::POST, call_url)
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(Bytes::from_static(b"{}"));
            let answer: Rewrite = s.json(from, call).await?;
            if answer.done {
                break;
            }
            token = Some(
                answer
                    .rewrite_token
                    .ok_or_else(|| io_error(from, "a rewrite neither done nor continued"))?,
            );
        }
        s.delete_object(&from_key).await
    }

    async fn delete(&self, path: &str) -> Result<()> {
        let s = &self.inner;
        let key = s.key(path);
        let below = rest::dir_prefix(&key);
        let mut keys: Vec<String> = s
            .objects_with_prefix(&key)
            .await?
            .into_iter()
            .map(|o| o.name)
            .filter(|n| *n == key || n.starts_with(&below))
            .collect();
        if keys.is_empty() {
            return Err(StorageError::NotFound(path.to_owned()));
        }
        keys.extend(
            s.objects_with_prefix(&s.parts_prefix(path))
                .await?
                .into_iter()
                .map(|o| o.name),
        );
        // Deepest first, as Distribution does, so a concurrent listing never
        // sees a directory without the files it had.
        keys.sort_by(|a, b| b.cmp(a));
        s.delete_all(keys).await
    }

    async fn check(&self) -> Result<()> {
        let s = &self.inner;
        let url = format!("{}/storage/v1/b/{}", s.endpoint, encode(&s.bucket, false));
        let reason = match s.rest.send(&Call::new(Method::GET, url), &s.auth).await {
            Ok(response) => match response.status() {
                status if status.is_success() => return Ok(()),
                StatusCode::NOT_FOUND => "does not exist".to_owned(),
                StatusCode::FORBIDDEN | StatusCode::UNAUTHORIZED => {
                    "access denied (check the service account key)".to_owned()
                }
                status => format!("answered {status}"),
            },
            Err(e) => e.to_string(),
        };
        Err(io_error("", format!("bucket {}: {reason}", s.bucket)))
    }

    fn redirects(&self) -> bool {
        self.inner.redirect
    }

    async fn redirect_url(&self, path: &str, head: bool) -> Result<Option<String>> {
        let s = &self.inner;
        if !s.redirect {
            return Ok(None);
        }
        s.signed_url(&s.key(path), if head { "HEAD" } else { "GET" })
            .map_err(|e| io_error(path, e))
    }
}
