//! The `s3` driver: keys in a bucket of AWS S3 or an S3-compatible server,
//! with the same paths as the filesystem driver below `rootdirectory`.
//!
//! S3 has no append, so a file written in pieces (an upload's data) is an
//! open multipart upload on its key: each piece adds parts of `chunksize`,
//! and closing a writer uploads what is left as a (possibly small) part.
//! Because S3 only allows a small part last, appending after one first
//! completes the upload and starts a new one that begins with a server-side
//! copy of what is there (or, under 5 MiB, its bytes) — CNCF Distribution's
//! scheme. All of that state lives in the bucket, so any instance can
//! continue any upload. Objects appear whole (`PutObject`,
//! `CompleteMultipartUpload`), so readers never see a partial file.
//!
//! Over HTTPS (AWS itself, or an endpoint given as `https://`) the bytes
//! Berth writes go as `UNSIGNED-PAYLOAD`: TLS already protects them, and
//! the SigV4 signature of a payload costs a second sha256 of every byte
//! pushed, beside the digest Berth checks itself. Over plain HTTP the
//! payload's signature is the only check that the bytes arrive intact, so
//! there they are signed.

use std::io;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
    StalledStreamProtectionConfig,
};
use aws_sdk_s3::error::{DisplayErrorContext, SdkError};
use aws_sdk_s3::operation::get_object::GetObjectOutput;
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream as S3Body;
use aws_sdk_s3::types::{
    CompletedMultipartUpload, CompletedPart, Delete, ObjectIdentifier, ServerSideEncryption,
    StorageClass,
};
use bytes::{Bytes, BytesMut};

use super::{ByteStream, FileInfo, FileWriter, Result, StorageDriver, StorageError};
use crate::config::{S3_MIN_CHUNK, S3Encryption, S3Settings};

/// Largest object `CopyObject` copies in one request.
const MAX_SINGLE_COPY: u64 = 5 * 1024 * 1024 * 1024;
/// Part size of multipart copies of larger objects.
const COPY_PART: u64 = 1024 * 1024 * 1024;
/// Lifetime of pre-signed redirect URLs.
const PRESIGNED_TTL: Duration = Duration::from_secs(20 * 60);
/// Attempts per request, throttling and 5xx answers included.
const MAX_ATTEMPTS: u32 = 5;

/// Whether requests to `endpoint` (AWS's own when `None`) go over TLS.
fn over_tls(endpoint: Option<&str>) -> bool {
    endpoint.is_none_or(|e| e.starts_with("https://"))
}

/// A bucket, seen as a tree of paths.
#[derive(Clone)]
pub struct S3Driver {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    bucket: String,
    /// Key prefix without slashes at either end; empty for the bucket root.
    root: String,
    /// Whether written bytes are hashed into the request's signature: only
    /// where no TLS protects them.
    sign_payload: bool,
    chunk_size: usize,
    redirect: bool,
    encryption: Option<(ServerSideEncryption, Option<String>)>,
    storage_class: Option<StorageClass>,
}

/// The HTTP status of a failed request, when the server answered.
fn status_of<E, R: HasStatus>(err: &SdkError<E, R>) -> Option<u16> {
    err.raw_response().map(HasStatus::status_code)
}

/// Access to a raw response's status code.
trait HasStatus {
    fn status_code(&self) -> u16;
}

impl HasStatus for aws_sdk_s3::config::http::HttpResponse {
    fn status_code(&self) -> u16 {
        self.status().as_u16()
    }
}

impl S3Driver {
    /// A driver for the bucket `settings` name. Makes no request: an
    /// unreachable server or a missing bucket shows in [`check`](StorageDriver::check).
    pub async fn new(settings: &S3Settings) -> S3Driver {
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
            ))
            .build_https();
        let mut loader = aws_config::defaults(BehaviorVersion::latest()).http_client(http);
        if let Some(region) = &settings.region {
            loader = loader.region(Region::new(region.clone()));
        }
        if let Some(keys) = &settings.keys {
            loader = loader.credentials_provider(Credentials::new(
                &keys.access,
                keys.secret.expose(),
                None,
                None,
                "berth-config",
            ));
        }
        let shared = loader.load().await;
        let mut builder = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(settings.force_path_style)
            .retry_config(RetryConfig::standard().with_max_attempts(MAX_ATTEMPTS))
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(5))
                    .build(),
            )
            // Downloads go at the client's pace; a slow client is not a stalled server.
            .stalled_stream_protection(StalledStreamProtectionConfig::disabled())
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
        if shared.region().is_none() {
            builder = builder.region(Region::new("us-east-1"));
        }
        if let Some(endpoint) = &settings.endpoint {
            builder = builder.endpoint_url(endpoint);
        }
        let encryption = settings.encryption.as_ref().map(|e| match e {
            S3Encryption::Kms(key) => (ServerSideEncryption::AwsKms, Some(key.clone())),
            S3Encryption::Aes256 => (ServerSideEncryption::Aes256, None),
        });
        S3Driver {
            inner: Arc::new(Inner {
                client: Client::from_conf(builder.build()),
                bucket: settings.bucket.clone(),
                root: settings.root.clone(),
                sign_payload: !over_tls(settings.endpoint.as_deref()),
                chunk_size: settings.chunk_size as usize,
                redirect: settings.redirect,
                encryption,
                storage_class: settings.storage_class.as_deref().map(StorageClass::from),
            }),
        }
    }
}

impl Inner {
    /// The object key of a driver path.
    fn key(&self, path: &str) -> String {
        let path = path.trim_start_matches('/');
        if self.root.is_empty() {
            path.to_owned()
        } else {
            format!("{}/{path}", self.root)
        }
    }

    /// A storage error for a failed request on `path`; 404 is `NotFound`.
    fn error<E, R>(&self, path: &str, err: SdkError<E, R>) -> StorageError
    where
        E: std::error::Error + Send + Sync + 'static,
        R: std::fmt::Debug + HasStatus,
    {
        if status_of(&err) == Some(404) {
            return StorageError::NotFound(path.to_owned());
        }
        let message = format!("bucket {}: {}", self.bucket, DisplayErrorContext(&err));
        StorageError::Io {
            path: path.to_owned(),
            source: io::Error::other(message),
        }
    }

    fn copy_source(&self, key: &str) -> String {
        format!("{}/{key}", self.bucket)
    }

    async fn put(&self, key: &str, body: Bytes) -> Result<()> {
        let mut request = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .body(S3Body::from(body));
        if let Some((sse, kms)) = &self.encryption {
            request = request
                .server_side_encryption(sse.clone())
                .set_ssekms_key_id(kms.clone());
        }
        if let Some(class) = &self.storage_class {
            request = request.storage_class(class.clone());
        }
        let sent = if self.sign_payload {
            request.send().await
        } else {
            request.customize().disable_payload_signing().send().await
        };
        sent.map(|_| ()).map_err(|e| self.error(key, e))
    }

    async fn head(&self, key: &str) -> Result<Option<FileInfo>> {
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(out) => Ok(Some(FileInfo {
                size: out.content_length().unwrap_or(0).max(0) as u64,
                modified: out
                    .last_modified()
                    .and_then(|t| SystemTime::try_from(*t).ok())
                    .unwrap_or(SystemTime::UNIX_EPOCH),
                is_dir: false,
            })),
            Err(e) if status_of(&e) == Some(404) => Ok(None),
            Err(e) => Err(self.error(key, e)),
        }
    }

    /// The newest open multipart upload on exactly `key`.
    async fn open_upload(&self, key: &str) -> Result<Option<String>> {
        let newest = self
            .uploads_below(key)
            .await?
            .into_iter()
            .filter(|u| u.key == key)
            .max_by_key(|u| u.started);
        Ok(newest.map(|u| u.id))
    }

    /// Every open multipart upload whose key starts with `prefix`, page by
    /// page (ListMultipartUploads has no paginator in the SDK; a page holds
    /// at most [`UPLOADS_PER_PAGE`]).
    async fn uploads_below(&self, prefix: &str) -> Result<Vec<OpenUpload>> {
        let mut uploads = Vec::new();
        let (mut key_marker, mut id_marker) = (None::<String>, None::<String>);
        loop {
            let out = self
                .client
                .list_multipart_uploads()
                .bucket(&self.bucket)
                .prefix(prefix)
                .max_uploads(UPLOADS_PER_PAGE)
                .set_key_marker(key_marker.take())
                .set_upload_id_marker(id_marker.take())
                .send()
                .await
                .map_err(|e| self.error(prefix, e))?;
            uploads.extend(out.uploads().iter().filter_map(|u| {
                Some(OpenUpload {
                    key: u.key()?.to_owned(),
                    id: u.upload_id()?.to_owned(),
                    started: u
                        .initiated()
                        .and_then(|t| SystemTime::try_from(*t).ok())
                        .unwrap_or(SystemTime::UNIX_EPOCH),
                })
            }));
            match (out.is_truncated(), out.next_key_marker()) {
                (Some(true), Some(next)) => {
                    key_marker = Some(next.to_owned());
                    id_marker = out.next_upload_id_marker().map(str::to_owned);
                }
                _ => return Ok(uploads),
            }
        }
    }

    /// The parts of an open multipart upload, in order: (number, etag, size).
    async fn parts(&self, key: &str, upload_id: &str) -> Result<Vec<Part>> {
        let mut pages = self
            .client
            .list_parts()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .into_paginator()
            .send();
        let mut parts = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.error(key, e))?;
            parts.extend(page.parts().iter().filter_map(|p| {
                Some(Part {
                    number: p.part_number()?,
                    etag: p.e_tag()?.to_owned(),
                    size: p.size().unwrap_or(0).max(0) as u64,
                })
            }));
        }
        parts.sort_by_key(|p| p.number);
        Ok(parts)
    }

    async fn create_upload(&self, key: &str) -> Result<String> {
        let mut request = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key);
        if let Some((sse, kms)) = &self.encryption {
            request = request
                .server_side_encryption(sse.clone())
                .set_ssekms_key_id(kms.clone());
        }
        if let Some(class) = &self.storage_class {
            request = request.storage_class(class.clone());
        }
        let out = request.send().await.map_err(|e| self.error(key, e))?;
        out.upload_id()
            .map(str::to_owned)
            .ok_or_else(|| StorageError::Io {
                path: key.to_owned(),
                source: io::Error::other("CreateMultipartUpload returned no upload id"),
            })
    }

    async fn complete_upload(&self, key: &str, upload_id: &str, parts: &[Part]) -> Result<()> {
        let completed = parts
            .iter()
            .map(|p| {
                CompletedPart::builder()
                    .part_number(p.number)
                    .e_tag(&p.etag)
                    .build()
            })
            .collect();
        self.client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(completed))
                    .build(),
            )
            .send()
            .await
            .map(|_| ())
            .map_err(|e| self.error(key, e))
    }

    async fn abort_upload(&self, key: &str, upload_id: &str) -> Result<()> {
        match self
            .client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if status_of(&e) == Some(404) => Ok(()),
            Err(e) => Err(self.error(key, e)),
        }
    }

    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        number: i32,
        body: Bytes,
    ) -> Result<Part> {
        let size = body.len() as u64;
        let request = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .part_number(number)
            .body(S3Body::from(body));
        let sent = if self.sign_payload {
            request.send().await
        } else {
            request.customize().disable_payload_signing().send().await
        };
        let out = sent.map_err(|e| self.error(key, e))?;
        let etag = out.e_tag().unwrap_or_default().to_owned();
        Ok(Part { number, etag, size })
    }

    /// Copies `from` to `to` inside the bucket, with multipart copy past 5 GiB.
    async fn copy(&self, from: &str, to: &str, size: u64) -> Result<()> {
        if size <= MAX_SINGLE_COPY {
            let mut request = self
                .client
                .copy_object()
                .bucket(&self.bucket)
                .key(to)
                .copy_source(self.copy_source(from));
            if let Some((sse, kms)) = &self.encryption {
                request = request
                    .server_side_encryption(sse.clone())
                    .set_ssekms_key_id(kms.clone());
            }
            if let Some(class) = &self.storage_class {
                request = request.storage_class(class.clone());
            }
            return request
                .send()
                .await
                .map(|_| ())
                .map_err(|e| self.error(from, e));
        }
        let upload_id = self.create_upload(to).await?;
        let mut parts = Vec::new();
        let mut offset = 0;
        while offset < size {
            let end = (offset + COPY_PART).min(size) - 1;
            let number = parts.len() as i32 + 1;
            let out = self
                .client
                .upload_part_copy()
                .bucket(&self.bucket)
                .key(to)
                .upload_id(&upload_id)
                .part_number(number)
                .copy_source(self.copy_source(from))
                .copy_source_range(format!("bytes={offset}-{end}"))
                .send()
                .await;
            let out = match out {
                Ok(out) => out,
                Err(e) => {
                    let _ = self.abort_upload(to, &upload_id).await;
                    return Err(self.error(from, e));
                }
            };
            let etag = out
                .copy_part_result()
                .and_then(|r| r.e_tag())
                .unwrap_or_default()
                .to_owned();
            parts.push(Part {
                number,
                etag,
                size: end + 1 - offset,
            });
            offset = end + 1;
        }
        self.complete_upload(to, &upload_id, &parts).await
    }

    /// Every key at or below `key` (as a file, or as a directory).
    async fn keys_below(&self, key: &str) -> Result<Vec<String>> {
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(key)
            .into_paginator()
            .send();
        let mut keys = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.error(key, e))?;
            keys.extend(
                page.contents()
                    .iter()
                    .filter_map(|o| o.key())
                    .filter(|k| *k == key || k.starts_with(&format!("{key}/")))
                    .map(str::to_owned),
            );
        }
        Ok(keys)
    }
}

/// Open multipart uploads asked for per page: S3's default and maximum,
/// stated because some servers (MinIO) default to more.
const UPLOADS_PER_PAGE: i32 = 1000;

/// An open multipart upload.
#[derive(Debug)]
struct OpenUpload {
    key: String,
    id: String,
    started: SystemTime,
}

/// A part of a multipart upload.
#[derive(Debug, Clone)]
struct Part {
    number: i32,
    etag: String,
    size: u64,
}

fn part_number(parts: &[Part]) -> i32 {
    parts.last().map_or(1, |p| p.number + 1)
}

#[async_trait]
impl StorageDriver for S3Driver {
    fn name(&self) -> &'static str {
        "s3"
    }

    async fn get_content(&self, path: &str, limit: u64) -> Result<Bytes> {
        self.inner.get_bytes(path, limit).await
    }

    async fn put_content(&self, path: &str, content: Bytes) -> Result<()> {
        self.inner.put(&self.inner.key(path), content).await
    }

    async fn reader(&self, path: &str, offset: u64, len: Option<u64>) -> Result<ByteStream> {
        if len == Some(0) {
            return Ok(Box::pin(futures_util::stream::empty()));
        }
        let range = match (offset, len) {
            (0, None) => None,
            (a, None) => Some(format!("bytes={a}-")),
            (a, Some(n)) => Some(format!("bytes={a}-{}", a + n - 1)),
        };
        let out = self.inner.get(path, range).await?;
        Ok(chunks(out.body))
    }

    async fn open(&self, path: &str) -> Result<(u64, ByteStream)> {
        // One GET: its Content-Length is the object's size.
        let out = self.inner.get(path, None).await?;
        let size = out
            .content_length()
            .and_then(|n| u64::try_from(n).ok())
            .ok_or_else(|| StorageError::Io {
                path: path.to_owned(),
                source: io::Error::other("the object's GET answered without a Content-Length"),
            })?;
        Ok((size, chunks(out.body)))
    }

    async fn writer(&self, path: &str) -> Result<Box<dyn FileWriter>> {
        let s = &self.inner;
        let key = s.key(path);
        let state = match s.open_upload(&key).await? {
            Some(upload_id) => {
                let parts = s.parts(&key, &upload_id).await?;
                WriterState {
                    upload_id: Some(upload_id),
                    parts,
                    object: 0,
                }
            }
            None => WriterState {
                upload_id: None,
                parts: Vec::new(),
                object: s.head(&key).await?.map_or(0, |i| i.size),
            },
        };
        Ok(Box::new(S3Writer {
            driver: self.inner.clone(),
            key,
            path: path.to_owned(),
            state,
            buffer: BytesMut::new(),
        }))
    }

    async fn stat(&self, path: &str) -> Result<FileInfo> {
        let s = &self.inner;
        let key = s.key(path);
        if let Some(info) = s.head(&key).await? {
            return Ok(info);
        }
        // A directory: any key below it.
        let prefix = if key.is_empty() {
            String::new()
        } else {
            format!("{key}/")
        };
        let out = s
            .client
            .list_objects_v2()
            .bucket(&s.bucket)
            .prefix(prefix)
            .max_keys(1)
            .send()
            .await
            .map_err(|e| s.error(path, e))?;
        if out.key_count().unwrap_or(0) > 0 {
            return Ok(FileInfo {
                size: 0,
                modified: SystemTime::UNIX_EPOCH,
                is_dir: true,
            });
        }
        Err(StorageError::NotFound(path.to_owned()))
    }

    async fn list(&self, path: &str) -> Result<Vec<String>> {
        let s = &self.inner;
        let key = s.key(path);
        let prefix = if key.is_empty() {
            String::new()
        } else {
            format!("{key}/")
        };
        let mut pages = s
            .client
            .list_objects_v2()
            .bucket(&s.bucket)
            .prefix(&prefix)
            .delimiter("/")
            .into_paginator()
            .send();
        let mut names = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| s.error(path, e))?;
            for dir in page.common_prefixes().iter().filter_map(|p| p.prefix()) {
                names.push(dir[prefix.len()..].trim_end_matches('/').to_owned());
            }
            for file in page.contents().iter().filter_map(|o| o.key()) {
                names.push(file[prefix.len()..].to_owned());
            }
        }
        names.retain(|n| !n.is_empty());
        if names.is_empty() {
            return Err(StorageError::NotFound(path.to_owned()));
        }
        Ok(names)
    }

    async fn rename(&self, from: &str, to: &str) -> Result<()> {
        let s = &self.inner;
        let (from_key, to_key) = (s.key(from), s.key(to));
        let info = s
            .head(&from_key)
            .await?
            .ok_or_else(|| StorageError::NotFound(from.to_owned()))?;
        s.copy(&from_key, &to_key, info.size).await?;
        s.client
            .delete_object()
            .bucket(&s.bucket)
            .key(&from_key)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| s.error(from, e))
    }

    async fn delete(&self, path: &str) -> Result<()> {
        let s = &self.inner;
        let key = s.key(path);
        let keys = s.keys_below(&key).await?;
        // Open multipart uploads below the path (an upload's unfinished data).
        let mut aborted = 0;
        for u in s.uploads_below(&key).await? {
            if u.key == key || u.key.starts_with(&format!("{key}/")) {
                s.abort_upload(&u.key, &u.id).await?;
                aborted += 1;
            }
        }
        if keys.is_empty() && aborted == 0 {
            return Err(StorageError::NotFound(path.to_owned()));
        }
        for batch in keys.chunks(1000) {
            let objects = batch
                .iter()
                .filter_map(|k| ObjectIdentifier::builder().key(k).build().ok())
                .collect::<Vec<_>>();
            let delete = Delete::builder()
                .set_objects(Some(objects))
                .quiet(true)
                .build()
                .map_err(|e| StorageError::Io {
                    path: path.to_owned(),
                    source: io::Error::other(e),
                })?;
            let out = s
                .client
                .delete_objects()
                .bucket(&s.bucket)
                .delete(delete)
                .send()
                .await
                .map_err(|e| s.error(path, e))?;
            if let Some(failed) = out.errors().first() {
                return Err(StorageError::Io {
                    path: path.to_owned(),
                    source: io::Error::other(format!(
                        "bucket {}: deleting {}: {}",
                        s.bucket,
                        failed.key().unwrap_or_default(),
                        failed.message().unwrap_or_default()
                    )),
                });
            }
        }
        Ok(())
    }

    async fn check(&self) -> Result<()> {
        let s = &self.inner;
        s.client
            .head_bucket()
            .bucket(&s.bucket)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| {
                let reason = match status_of(&e) {
                    Some(404) => "does not exist".to_owned(),
                    Some(403) => "access denied (check the credentials)".to_owned(),
                    _ => DisplayErrorContext(&e).to_string(),
                };
                StorageError::Io {
                    path: String::new(),
                    source: io::Error::other(format!("bucket {}: {reason}", s.bucket)),
                }
            })
    }

    fn redirects(&self) -> bool {
        self.inner.redirect
    }

    async fn redirect_url(&self, path: &str, head: bool) -> Result<Option<String>> {
        let s = &self.inner;
        if !s.redirect {
            return Ok(None);
        }
        let presigning =
            PresigningConfig::expires_in(PRESIGNED_TTL).map_err(|e| StorageError::Io {
                path: path.to_owned(),
                source: io::Error::other(e),
            })?;
        let key = s.key(path);
        let failed = |e: String| StorageError::Io {
            path: path.to_owned(),
            source: io::Error::other(e),
        };
        let presigned = if head {
            s.client
                .head_object()
                .bucket(&s.bucket)
                .key(key)
                .presigned(presigning)
                .await
                .map_err(|e| failed(e.to_string()))
        } else {
            s.client
                .get_object()
                .bucket(&s.bucket)
                .key(key)
                .presigned(presigning)
                .await
                .map_err(|e| failed(e.to_string()))
        };
        Ok(Some(presigned?.uri().to_owned()))
    }
}

/// Where a writer stands: an open multipart upload and its parts, or a
/// completed object of `object` bytes (or nothing yet).
struct WriterState {
    upload_id: Option<String>,
    parts: Vec<Part>,
    object: u64,
}

/// Appends to an object through multipart uploads.
struct S3Writer {
    driver: Arc<Inner>,
    key: String,
    path: String,
    state: WriterState,
    buffer: BytesMut,
}

impl S3Writer {
    fn written(&self) -> u64 {
        self.state.object + self.state.parts.iter().map(|p| p.size).sum::<u64>()
    }

    /// Makes the state appendable: an open multipart upload whose parts are
    /// all at least 5 MiB (so more may follow), with what exists already
    /// copied in, or buffered when too small to be a part.
    async fn prepare_append(&mut self) -> Result<()> {
        let d = self.driver.clone();
        let last_small = self
            .state
            .parts
            .last()
            .is_some_and(|p| p.size < S3_MIN_CHUNK);
        if let (true, Some(upload_id)) = (last_small, self.state.upload_id.clone()) {
            d.complete_upload(&self.key, &upload_id, &self.state.parts)
                .await?;
            self.state = WriterState {
                upload_id: None,
                parts: Vec::new(),
                object: self.written(),
            };
        }
        if self.state.upload_id.is_some() || self.state.object == 0 {
            return Ok(());
        }
        let upload_id = d.create_upload(&self.key).await?;
        let size = self.state.object;
        if size >= S3_MIN_CHUNK {
            let out = d
                .client
                .upload_part_copy()
                .bucket(&d.bucket)
                .key(&self.key)
                .upload_id(&upload_id)
                .part_number(1)
                .copy_source(d.copy_source(&self.key))
                .send()
                .await
                .map_err(|e| d.error(&self.path, e))?;
            let etag = out
                .copy_part_result()
                .and_then(|r| r.e_tag())
                .unwrap_or_default()
                .to_owned();
            self.state.parts = vec![Part {
                number: 1,
                etag,
                size,
            }];
        } else {
            let mut existing = BytesMut::from(&d.get_bytes(&self.path, u64::MAX).await?[..]);
            existing.extend_from_slice(&self.buffer);
            self.buffer = existing;
            self.state.parts = Vec::new();
        }
        self.state.upload_id = Some(upload_id);
        self.state.object = 0;
        Ok(())
    }

    /// Uploads `len` buffered bytes as the next part.
    async fn flush_part(&mut self, len: usize) -> Result<()> {
        let d = self.driver.clone();
        let upload_id = match &self.state.upload_id {
            Some(id) => id.clone(),
            None => {
                let id = d.create_upload(&self.key).await?;
                self.state.upload_id = Some(id.clone());
                id
            }
        };
        let body = self.buffer.split_to(len).freeze();
        let part = d
            .upload_part(&self.key, &upload_id, part_number(&self.state.parts), body)
            .await?;
        self.state.parts.push(part);
        Ok(())
    }
}

impl Inner {
    /// GETs the object of `path` (a `range` of it: `bytes=a-b`).
    async fn get(&self, path: &str, range: Option<String>) -> Result<GetObjectOutput> {
        self.client
            .get_object()
            .bucket(&self.bucket)
            .key(self.key(path))
            .set_range(range)
            .send()
            .await
            .map_err(|e| self.error(path, e))
    }

    /// The whole object of `path`, read into memory; `TooLarge` past `limit` bytes.
    async fn get_bytes(&self, path: &str, limit: u64) -> Result<Bytes> {
        let out = self.get(path, None).await?;
        if out.content_length().unwrap_or(0).max(0) as u64 > limit {
            return Err(StorageError::TooLarge {
                path: path.to_owned(),
                limit,
            });
        }
        let body = out.body.collect().await.map_err(|e| StorageError::Io {
            path: path.to_owned(),
            source: io::Error::other(e),
        })?;
        Ok(body.into_bytes())
    }
}

/// The chunks of an object's body, as they arrive: no copy into another buffer.
fn chunks(body: S3Body) -> ByteStream {
    Box::pin(futures_util::stream::try_unfold(
        body,
        |mut body| async move {
            Ok(body
                .try_next()
                .await
                .map_err(io::Error::other)?
                .map(|chunk| (chunk, body)))
        },
    ))
}

#[async_trait]
impl FileWriter for S3Writer {
    async fn write(&mut self, chunk: Bytes) -> Result<()> {
        if self.buffer.is_empty()
            && (self.state.object > 0
                || self
                    .state
                    .parts
                    .last()
                    .is_some_and(|p| p.size < S3_MIN_CHUNK))
        {
            self.prepare_append().await?;
        }
        self.buffer.extend_from_slice(&chunk);
        while self.buffer.len() >= self.driver.chunk_size {
            self.flush_part(self.driver.chunk_size).await?;
        }
        Ok(())
    }

    fn size(&self) -> u64 {
        self.written() + self.buffer.len() as u64
    }

    async fn close(mut self: Box<Self>) -> Result<()> {
        if !self.buffer.is_empty() {
            let len = self.buffer.len();
            self.flush_part(len).await?;
        }
        Ok(())
    }

    async fn commit(mut self: Box<Self>) -> Result<()> {
        let d = self.driver.clone();
        match self.state.upload_id.clone() {
            // Never went multipart and nothing existed: one PUT of what there is.
            None if self.state.object == 0 => d.put(&self.key, self.buffer.split().freeze()).await,
            // A complete object and nothing appended (appending opens an upload).
            None => Ok(()),
            Some(upload_id) => {
                if !self.buffer.is_empty() {
                    let len = self.buffer.len();
                    self.flush_part(len).await?;
                }
                if self.state.parts.is_empty() {
                    d.abort_upload(&self.key, &upload_id).await?;
                    return d.put(&self.key, Bytes::new()).await;
                }
                d.complete_upload(&self.key, &upload_id, &self.state.parts)
                    .await
            }
        }
    }
}
