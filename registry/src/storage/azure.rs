//! The `azure` driver: blobs in a container of an Azure storage account (or
//! Azurite), with the same paths as the filesystem driver below
//! `rootdirectory`, so a container CNCF Distribution wrote is served as it
//! is, and the reverse.
//!
//! Uploads are block blobs built from staged blocks: each `chunksize` of an
//! upload is a `Put Block`, and closing a writer commits the block list
//! (`Put Block List`, the blocks already committed first), so the data is
//! durable and its size known to every instance, which continues by
//! reading the committed list back. A blob appears in `blobs/` by a
//! server-side `Copy Blob` once its digest is verified; small files are
//! single `Put Blob`s, which replace a blob whole. Readers never see a
//! partial file.
//!
//! Requests are signed with the account's shared key (Azure's SharedKey
//! scheme), or carry a token of Azure workload identity when no key is
//! configured. Blob `GET`/`HEAD` redirect to service SAS URLs signed with
//! the key, unless `storage.redirect.disable` is set or there is no key.
//!
//! This is a small REST client over the process's hyper/rustls stack rather
//! than the `azure_storage_blob` crate: that crate authorizes with Entra ID
//! tokens only (no shared key, so no Azurite, and no SAS), and brings reqwest
//! with a second TLS crypto provider (aws-lc-rs) and about 180 crates.

use std::io;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use ring::hmac;

use super::rest::{self, Authorize, Call, Rest, encode};
use super::staged::{Part, PartStore, Staged, StagedWriter};
use super::token::{BearerToken, Token};
use super::{ByteStream, FileInfo, FileWriter, Result, StorageDriver, StorageError};
use crate::config::AzureSettings;

/// The REST API version every request asks for (and SAS URLs are signed with).
const API_VERSION: &str = "2021-08-06";
/// Lifetime of SAS redirect URLs.
const SAS_TTL: Duration = Duration::from_secs(20 * 60);
/// How long to wait between polls of a pending copy, and how many polls.
const COPY_POLL: (Duration, u32) = (Duration::from_millis(100), 600);
/// Where Azure workload identity's tokens are for.
const STORAGE_SCOPE: &str = "https://storage.azure.com/.default";

/// A container, seen as a tree of paths.
#[derive(Clone)]
pub struct AzureDriver {
    inner: Arc<Inner>,
}

struct Inner {
    rest: Rest,
    auth: Auth,
    account: String,
    container: String,
    /// `<serviceurl>/<container>`.
    container_url: String,
    root: String,
    chunk_size: usize,
    redirect: bool,
}

/// How requests are authorized.
enum Auth {
    /// Azure's SharedKey scheme with the account key.
    SharedKey { account: String, key: hmac::Key },
    /// Bearer tokens of Azure workload identity (boxed: the token cache is
    /// much larger than a key).
    Workload(Box<BearerToken>),
}

impl AzureDriver {
    /// A driver for the container `settings` name. Makes no request: an
    /// unreachable service or a missing container shows in
    /// [`check`](StorageDriver::check).
    pub fn new(settings: &AzureSettings) -> AzureDriver {
        let rest = Rest::new();
        let auth = match &settings.key {
            Some(key) => Auth::SharedKey {
                account: settings.account.clone(),
                key: hmac::Key::new(hmac::HMAC_SHA256, key.expose()),
            },
            None => Auth::Workload(Box::new(BearerToken::new(Token::AzureWorkload {
                rest: rest.clone(),
                scope: STORAGE_SCOPE,
            }))),
        };
        AzureDriver {
            inner: Arc::new(Inner {
                rest,
                auth,
                account: settings.account.clone(),
                container: settings.container.clone(),
                container_url: format!(
                    "{}/{}",
                    settings.service_url,
                    encode(&settings.container, false)
                ),
                root: settings.root.clone(),
                chunk_size: settings.chunk_size as usize,
                redirect: settings.redirect,
            }),
        }
    }
}

#[async_trait]
impl Authorize for Auth {
    async fn authorize(&self, request: &mut Request<Full<Bytes>>) -> io::Result<()> {
        let headers = request.headers_mut();
        headers.insert("x-ms-version", HeaderValue::from_static(API_VERSION));
        let date = httpdate::fmt_http_date(SystemTime::now());
        headers.insert(
            "x-ms-date",
            HeaderValue::from_str(&date).map_err(io::Error::other)?,
        );
        let value = match self {
            Auth::SharedKey { account, key } => {
                let signature = hmac::sign(key, string_to_sign(request, account).as_bytes());
                format!("SharedKey {account}:{}", BASE64.encode(signature.as_ref()))
            }
            Auth::Workload(token) => format!("Bearer {}", token.get().await?),
        };
        request.headers_mut().insert(
            http::header::AUTHORIZATION,
            HeaderValue::from_str(&value).map_err(io::Error::other)?,
        );
        Ok(())
    }
}

/// The string Azure's SharedKey scheme signs for `request`.
fn string_to_sign(request: &Request<Full<Bytes>>, account: &str) -> String {
    let headers = request.headers();
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    };
    let length = match header("content-length") {
        "0" => "",
        other => other,
    };
    let mut out = format!(
        "{}\n{}\n{}\n{}\n{}\n{}\n\n{}\n{}\n{}\n{}\n{}\n",
        request.method(),
        header("content-encoding"),
        header("content-language"),
        length,
        header("content-md5"),
        header("content-type"),
        header("if-modified-since"),
        header("if-match"),
        header("if-none-match"),
        header("if-unmodified-since"),
        header("range"),
    );
    let mut ms: Vec<(String, &str)> = headers
        .iter()
        .filter(|(name, _)| name.as_str().starts_with("x-ms-"))
        .map(|(name, value)| {
            (
                name.as_str().to_owned(),
                value.to_str().unwrap_or("").trim(),
            )
        })
        .collect();
    ms.sort();
    for (name, value) in ms {
        out.push_str(&format!("{name}:{value}\n"));
    }
    out.push_str(&format!("/{account}{}", request.uri().path()));
    let mut params: Vec<(String, String)> = request
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(name).to_lowercase(), decode(value))
        })
        .collect();
    params.sort();
    for (name, value) in params {
        out.push_str(&format!("\n{name}:{value}"));
    }
    out
}

/// Percent-decodes a query component (`+` is a space).
fn decode(text: &str) -> String {
    percent_encoding::percent_decode_str(&text.replace('+', " "))
        .decode_utf8_lossy()
        .into_owned()
}

/// The block id of part `number`: the same length for every block of a
/// blob, as Azure requires.
fn block_id(number: u32) -> String {
    BASE64.encode(format!("berth-block-{number:010}"))
}

impl Inner {
    fn key(&self, path: &str) -> String {
        rest::key(&self.root, path)
    }

    fn blob_url(&self, key: &str) -> String {
        format!("{}/{}", self.container_url, encode(key, true))
    }

    async fn send(&self, call: Call) -> Result<Response<Incoming>> {
        self.rest
            .send(&call, &self.auth)
            .await
            .map_err(|e| StorageError::Io {
                path: String::new(),
                source: io::Error::other(format!("container {}: {e}", self.container)),
            })
    }

    /// Sends `call` about `path`; any status but 2xx is an error (404 on a
    /// blob: `NotFound`).
    async fn expect_ok(&self, path: &str, call: Call) -> Result<Response<Incoming>> {
        let response = self.send(call).await.map_err(|e| with_path(e, path))?;
        if response.status().is_success() {
            return Ok(response);
        }
        Err(self.failure(path, response).await)
    }

    /// The error for an unsuccessful answer about `path`.
    async fn failure(&self, path: &str, response: Response<Incoming>) -> StorageError {
        let status = response.status();
        let code = response
            .headers()
            .get("x-ms-error-code")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        if status == StatusCode::NOT_FOUND && code != "ContainerNotFound" {
            return StorageError::NotFound(path.to_owned());
        }
        let body = rest::read_small(response).await.unwrap_or_default();
        let message = xml_records(&String::from_utf8_lossy(&body), "Error")
            .into_iter()
            .find_map(|mut r| r.remove("Message"))
            .map(|m| m.lines().next().unwrap_or("").to_owned())
            .unwrap_or_default();
        StorageError::Io {
            path: path.to_owned(),
            source: io::Error::other(format!(
                "container {}: {status} {code} {message}",
                self.container
            )),
        }
    }

    /// Size and modification time of the blob `key`, if it exists.
    async fn properties(&self, key: &str) -> Result<Option<(FileInfo, Option<String>)>> {
        let response = self
            .send(Call::new(Method::HEAD, self.blob_url(key)))
            .await
            .map_err(|e| with_path(e, key))?;
        let status = response.status();
        if status == StatusCode::NOT_FOUND
            && response
                .headers()
                .get("x-ms-error-code")
                .map(|v| v.as_bytes())
                != Some(b"ContainerNotFound")
        {
            return Ok(None);
        }
        if !status.is_success() {
            return Err(self.failure(key, response).await);
        }
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let info = FileInfo {
            size: header("content-length")
                .and_then(|l| l.parse().ok())
                .unwrap_or(0),
            modified: header("last-modified")
                .and_then(|d| httpdate::parse_http_date(&d).ok())
                .unwrap_or(SystemTime::UNIX_EPOCH),
            is_dir: false,
        };
        Ok(Some((info, header("x-ms-copy-status"))))
    }

    /// One page of the blobs whose names start with `prefix`, split at `/`
    /// when `delimited`: (names, directory prefixes, next marker).
    async fn list_page(
        &self,
        prefix: &str,
        delimited: bool,
        marker: Option<&str>,
        max: Option<u32>,
    ) -> Result<(Vec<String>, Vec<String>, Option<String>)> {
        let mut url = format!(
            "{}?restype=container&comp=list&prefix={}",
            self.container_url,
            encode(prefix, false)
        );
        if delimited {
            url.push_str("&delimiter=%2F");
        }
        if let Some(marker) = marker {
            url.push_str(&format!("&marker={}", encode(marker, false)));
        }
        if let Some(max) = max {
            url.push_str(&format!("&maxresults={max}"));
        }
        let response = self.expect_ok(prefix, Call::new(Method::GET, url)).await?;
        let body = rest::read_small(response)
            .await
            .map_err(|e| io_error(prefix, e))?;
        let text = String::from_utf8_lossy(&body);
        let names = xml_records(&text, "Blob")
            .into_iter()
            .filter_map(|mut r| r.remove("Name"))
            .collect();
        let dirs = xml_records(&text, "BlobPrefix")
            .into_iter()
            .filter_map(|mut r| r.remove("Name"))
            .collect();
        let next = xml_records(&text, "EnumerationResults")
            .into_iter()
            .find_map(|mut r| r.remove("NextMarker"))
            .filter(|m| !m.is_empty());
        Ok((names, dirs, next))
    }

    /// Every blob at or below `key`.
    async fn keys_below(&self, key: &str) -> Result<Vec<String>> {
        let mut keys = Vec::new();
        let mut marker = None;
        loop {
            let (names, _, next) = self.list_page(key, false, marker.as_deref(), None).await?;
            let below = rest::dir_prefix(key);
            keys.extend(
                names
                    .into_iter()
                    .filter(|n| *n == key || n.starts_with(&below)),
            );
            match next {
                Some(next) => marker = Some(next),
                None => return Ok(keys),
            }
        }
    }

    /// The committed blocks of `key` as staging state; nothing when the
    /// blob does not exist.
    async fn committed(&self, path: &str, key: &str) -> Result<Staged> {
        let url = format!(
            "{}?comp=blocklist&blocklisttype=committed",
            self.blob_url(key)
        );
        let response = match self.expect_ok(path, Call::new(Method::GET, url)).await {
            Ok(response) => response,
            Err(e) if e.is_not_found() => return Ok(Staged::default()),
            Err(e) => return Err(e),
        };
        let body = rest::read_small(response)
            .await
            .map_err(|e| io_error(path, e))?;
        let blocks = xml_records(&String::from_utf8_lossy(&body), "Block");
        let mut staged = Staged::default();
        for (number, block) in blocks.iter().enumerate() {
            let number = number as u32;
            if block.get("Name").map(String::as_str) != Some(block_id(number).as_str()) {
                return Err(io_error(
                    path,
                    "the blob was not written by staged blocks in order; it cannot be appended to",
                ));
            }
            staged.merged += block.get("Size").and_then(|s| s.parse().ok()).unwrap_or(0);
            staged.next_number = number + 1;
        }
        Ok(staged)
    }

    /// Deletes the blob `key`; a missing one is no error.
    async fn delete_blob(&self, key: &str) -> Result<()> {
        match self
            .expect_ok(key, Call::new(Method::DELETE, self.blob_url(key)))
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// A service SAS URL reading the blob `key` for [`SAS_TTL`].
    fn sas_url(&self, key: &str) -> Option<String> {
        let Auth::SharedKey { key: secret, .. } = &self.auth else {
            return None;
        };
        let expiry = humantime::format_rfc3339_seconds(SystemTime::now() + SAS_TTL).to_string();
        let resource = format!("/blob/{}/{}/{key}", self.account, self.container);
        // Service SAS fields of versions 2020-12-06 and later, in order:
        // sp, st, se, resource, si, sip, spr, sv, sr, snapshot, ses, and the
        // five response header overrides.
        let to_sign = format!("r\n\n{expiry}\n{resource}\n\n\n\n{API_VERSION}\nb\n\n\n\n\n\n\n");
        let signature = BASE64.encode(hmac::sign(secret, to_sign.as_bytes()).as_ref());
        Some(format!(
            "{}?sv={API_VERSION}&sr=b&sp=r&se={}&sig={}",
            self.blob_url(key),
            encode(&expiry, false),
            encode(&signature, false)
        ))
    }
}

fn io_error(path: &str, e: impl std::fmt::Display) -> StorageError {
    StorageError::Io {
        path: path.to_owned(),
        source: io::Error::other(e.to_string()),
    }
}

/// `e`, naming `path` when it names none.
fn with_path(e: StorageError, path: &str) -> StorageError {
    match e {
        StorageError::Io { path: p, source } if p.is_empty() => StorageError::Io {
            path: path.to_owned(),
            source,
        },
        other => other,
    }
}

#[async_trait]
impl PartStore for Inner {
    async fn stage(&self, key: &str, part: &Part, body: Bytes) -> Result<()> {
        let url = format!(
            "{}?comp=block&blockid={}",
            self.blob_url(key),
            encode(&block_id(part.number), false)
        );
        self.expect_ok(key, Call::new(Method::PUT, url).body(body))
            .await
            .map(|_| ())
    }

    /// Commits every block: an uncommitted block expires within a week,
    /// and only committed ones tell the next writer the blob's size.
    async fn merge(&self, key: &str, staged: &Staged, complete: bool) -> Result<()> {
        if staged.parts.is_empty() && (!complete || staged.next_number > 0) {
            return Ok(());
        }
        let mut xml = String::from("<?xml version=\"1.0\" encoding=\"utf-8\"?><BlockList>");
        for number in 0..staged.next_number {
            xml.push_str(&format!("<Committed>{}</Committed>", block_id(number)));
        }
        for part in &staged.parts {
            xml.push_str(&format!("<Latest>{}</Latest>", block_id(part.number)));
        }
        xml.push_str("</BlockList>");
        let url = format!("{}?comp=blocklist", self.blob_url(key));
        self.expect_ok(key, Call::new(Method::PUT, url).body(Bytes::from(xml)))
            .await
            .map(|_| ())
    }
}

#[async_trait]
impl StorageDriver for AzureDriver {
    fn name(&self) -> &'static str {
        "azure"
    }

    async fn get_content(&self, path: &str, limit: u64) -> Result<Bytes> {
        let s = &self.inner;
        let response = s
            .expect_ok(path, Call::new(Method::GET, s.blob_url(&s.key(path))))
            .await?;
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
        let call = Call::new(Method::PUT, s.blob_url(&s.key(path)))
            .header(http::header::CONTENT_TYPE, "application/octet-stream")
            .header(http::HeaderName::from_static("x-ms-blob-type"), "BlockBlob")
            .body(content);
        s.expect_ok(path, call).await.map(|_| ())
    }

    async fn reader(&self, path: &str, offset: u64, len: Option<u64>) -> Result<ByteStream> {
        let s = &self.inner;
        if len == Some(0) {
            return Ok(Box::pin(futures_util::stream::empty()));
        }
        let mut call = Call::new(Method::GET, s.blob_url(&s.key(path)));
        match (offset, len) {
            (0, None) => {}
            (a, None) => {
                call = call.header(
                    http::HeaderName::from_static("x-ms-range"),
                    &format!("bytes={a}-"),
                )
            }
            (a, Some(n)) => {
                call = call.header(
                    http::HeaderName::from_static("x-ms-range"),
                    &format!("bytes={a}-{}", a + n - 1),
                )
            }
        }
        let response = s.expect_ok(path, call).await?;
        Ok(rest::stream(response))
    }

    async fn writer(&self, path: &str) -> Result<Box<dyn FileWriter>> {
        let s = &self.inner;
        let key = s.key(path);
        let staged = s.committed(path, &key).await?;
        Ok(Box::new(StagedWriter::new(
            self.inner.clone(),
            key,
            staged,
            s.chunk_size,
        )))
    }

    async fn stat(&self, path: &str) -> Result<FileInfo> {
        let s = &self.inner;
        let key = s.key(path);
        if let Some((info, _)) = s.properties(&key).await? {
            return Ok(info);
        }
        let (names, dirs, _) = s
            .list_page(&rest::dir_prefix(&key), false, None, Some(1))
            .await?;
        if names.is_empty() && dirs.is_empty() {
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
        let mut marker = None;
        loop {
            let (names, dirs, next) = s.list_page(&prefix, true, marker.as_deref(), None).await?;
            children.extend(
                dirs.iter()
                    .chain(&names)
                    .filter_map(|n| n.strip_prefix(&prefix))
                    .map(|n| n.trim_end_matches('/').to_owned())
                    .filter(|n| !n.is_empty()),
            );
            match next {
                Some(next) => marker = Some(next),
                None => break,
            }
        }
        if children.is_empty() {
            return Err(StorageError::NotFound(path.to_owned()));
        }
        Ok(children)
    }

    /// A server-side copy, waited for, then the source's delete: the
    /// destination is replaced whole.
    async fn rename(&self, from: &str, to: &str) -> Result<()> {
        let s = &self.inner;
        let (from_key, to_key) = (s.key(from), s.key(to));
        let call = Call::new(Method::PUT, s.blob_url(&to_key)).header(
            http::HeaderName::from_static("x-ms-copy-source"),
            &s.blob_url(&from_key),
        );
        let response = s.send(call).await.map_err(|e| with_path(e, from))?;
        if !response.status().is_success() {
            return Err(s.failure(from, response).await);
        }
        let mut status = response
            .headers()
            .get("x-ms-copy-status")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("success")
            .to_owned();
        let mut polls = 0;
        while status == "pending" {
            polls += 1;
            if polls > COPY_POLL.1 {
                return Err(io_error(to, "the copy is still pending after a minute"));
            }
            tokio::time::sleep(COPY_POLL.0).await;
            status = match s.properties(&to_key).await? {
                Some((_, copy)) => copy.unwrap_or_else(|| "success".to_owned()),
                None => "pending".to_owned(),
            };
        }
        if status != "success" {
            return Err(io_error(to, format!("copy from {from} ended {status}")));
        }
        s.delete_blob(&from_key).await
    }

    async fn delete(&self, path: &str) -> Result<()> {
        let s = &self.inner;
        let keys = s.keys_below(&s.key(path)).await?;
        if keys.is_empty() {
            return Err(StorageError::NotFound(path.to_owned()));
        }
        rest::for_each_key(keys, |k| async move { s.delete_blob(&k).await }).await
    }

    async fn check(&self) -> Result<()> {
        let s = &self.inner;
        let url = format!("{}?restype=container", s.container_url);
        let response = s.send(Call::new(Method::HEAD, url)).await?;
        let reason = match response.status() {
            status if status.is_success() => return Ok(()),
            StatusCode::NOT_FOUND => "does not exist".to_owned(),
            StatusCode::FORBIDDEN | StatusCode::UNAUTHORIZED => {
                "access denied (check the account name and key)".to_owned()
            }
            status => format!("answered {status}"),
        };
        Err(io_error("", format!("container {}: {reason}", s.container)))
    }

    fn redirects(&self) -> bool {
        self.inner.redirect
    }

    async fn redirect_url(&self, path: &str, _head: bool) -> Result<Option<String>> {
        let s = &self.inner;
        if !s.redirect {
            return Ok(None);
        }
        Ok(s.sas_url(&s.key(path)))
    }
}

/// The child elements' text of every `<record>` element in `xml`, by name.
fn xml_records(xml: &str, record: &str) -> Vec<std::collections::BTreeMap<String, String>> {
    use xmlparser::{ElementEnd, Token, Tokenizer};
    let mut records = Vec::new();
    let mut stack: Vec<String> = Vec::new();
    let mut current: Option<std::collections::BTreeMap<String, String>> = None;
    for token in Tokenizer::from(xml) {
        let Ok(token) = token else { break };
        match token {
            Token::ElementStart { local, .. } => {
                stack.push(local.as_str().to_owned());
                if local.as_str() == record {
                    current = Some(Default::default());
                }
            }
            Token::ElementEnd {
                end: ElementEnd::Close(..) | ElementEnd::Empty,
                ..
            } => {
                let closed = stack.pop();
                if closed.as_deref() == Some(record) {
                    records.extend(current.take());
                }
            }
            Token::Text { text } | Token::Cdata { text, .. } => {
                let (Some(record_map), [.., parent, field]) = (current.as_mut(), stack.as_slice())
                else {
                    continue;
                };
                if parent == record {
                    record_map
                        .entry(field.clone())
                        .or_default()
                        .push_str(&unescape(text.as_str()));
                }
            }
            _ => {}
        }
    }
    records
}

/// Replaces XML's predefined and numeric entities.
fn unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find('&') {
        out.push_str(&rest[..start]);
        let tail = &rest[start..];
        let Some(end) = tail.find(';') else {
            out.push_str(tail);
            return out;
        };
        let entity = &tail[1..end];
        let decoded = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ => entity
                .strip_prefix("#x")
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                .or_else(|| entity.strip_prefix('#').and_then(|d| d.parse().ok()))
                .and_then(char::from_u32),
        };
        match decoded {
            Some(c) => out.push(c),
            None => out.push_str(&tail[..=end]),
        }
        rest = &tail[end + 1..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_listing_records() {
        let xml = "<?xml version=\"1.0\"?><EnumerationResults><Blobs><Blob><Name>a&amp;b/c</Name></Blob><BlobPrefix><Name>d/</Name></BlobPrefix></Blobs><NextMarker>m1</NextMarker></EnumerationResults>";
        let blobs = xml_records(xml, "Blob");
        assert_eq!(blobs.len(), 1);
        assert_eq!(blobs[0]["Name"], "a&b/c");
        assert_eq!(xml_records(xml, "BlobPrefix")[0]["Name"], "d/");
        assert_eq!(
            xml_records(xml, "EnumerationResults")[0]["NextMarker"],
            "m1"
        );
        assert_eq!(unescape("&#x41;&#66;&bogus;"), "AB&bogus;");
    }

    #[test]
    fn block_ids_have_one_length() {
        assert_eq!(block_id(0).len(), block_id(u32::MAX).len());
    }

    #[test]
    fn shared_key_canonical_form() {
        let mut request = Request::builder()
            .method("GET")
            .uri("http://127.0.0.1:10000/acct/c?restype=container&comp=list&prefix=a%2Fb")
            .body(Full::new(Bytes::new()))
            .unwrap();
        request
            .headers_mut()
            .insert("x-ms-version", HeaderValue::from_static("v"));
        request
            .headers_mut()
            .insert("x-ms-date", HeaderValue::from_static("d"));
        assert_eq!(
            string_to_sign(&request, "acct"),
            "GET\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:d\nx-ms-version:v\n/acct/acct/c\ncomp:list\nprefix:a/b\nrestype:container"
        );
    }
}
