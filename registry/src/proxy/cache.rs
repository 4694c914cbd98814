//! The cache of one upstream: what is served from storage, what is asked
//! upstream, and how upstream answers are checked before they are kept.

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{StreamExt, stream};
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderValue, Method, StatusCode};

use super::upstream::Upstream;
use crate::digest::{Algorithm, Digest};
use crate::error::{Code, RegistryError, Result};
use crate::fill::{Commit, Fills, Source};
use crate::manifest;
use crate::metrics::{Metrics, MirrorLabels};
use crate::names::{Reference, RepoName, Tag};
use crate::service::{BlobRange, BlobRead, ManifestRead, Registry};
use crate::storage::ByteStream;
use crate::storage::rest::{read_limited, stream as body_stream};

/// How long an upstream body may send nothing (a blob) or take (a manifest).
const UPSTREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a manifest could not be fetched.
enum Fetch {
    /// The upstream does not have it.
    NotFound,
    /// No usable answer; the text says why.
    Failed(String),
}

/// The cache of one upstream.
pub struct Cache {
    /// The upstream host: the directory of the cache.
    pub(super) name: String,
    /// The mirror entry that configures it, as metrics label it (clients
    /// cannot add series through `_default`).
    pub(super) label: String,
    pub(super) registry: Registry,
    pub(super) upstream: Arc<Upstream>,
    pub(super) tag_ttl: Duration,
    /// When each `repo:tag` was last resolved upstream.
    pub(super) resolved: Mutex<HashMap<String, Instant>>,
    pub(super) fills: Arc<Fills>,
    pub(super) metrics: Arc<Metrics>,
}

/// The header in which registries name a manifest's digest.
const DOCKER_CONTENT_DIGEST: http::HeaderName =
    http::HeaderName::from_static("docker-content-digest");

fn unknown_upstream(repo: &RepoName, reference: &Reference) -> RegistryError {
    RegistryError::new(
        Code::ManifestUnknown,
        format!("manifest {reference} is unknown to {repo} upstream"),
    )
}

fn unavailable(what: &str, why: &str) -> RegistryError {
    RegistryError::new(
        Code::Unavailable,
        format!("{what} is not cached and the upstream cannot give it: {why}"),
    )
}

impl Cache {
    fn labels(&self, kind: &'static str) -> MirrorLabels {
        MirrorLabels {
            mirror: self.label.clone(),
            kind,
        }
    }

    fn hit(&self, kind: &'static str) {
        self.metrics
            .proxy_hits
            .get_or_create(&self.labels(kind))
            .inc();
    }

    fn miss(&self, kind: &'static str) {
        self.metrics
            .proxy_misses
            .get_or_create(&self.labels(kind))
            .inc();
    }

    fn upstream_request(&self, kind: &'static str) {
        self.metrics
            .proxy_upstream_requests
            .get_or_create(&self.labels(kind))
            .inc();
    }

    fn tag_key(repo: &RepoName, tag: &Tag) -> String {
        format!("{repo}:{tag}")
    }

    fn is_fresh(&self, repo: &RepoName, tag: &Tag) -> bool {
        self.resolved
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&Self::tag_key(repo, tag))
            .is_some_and(|at| at.elapsed() < self.tag_ttl)
    }

    fn mark_resolved(&self, repo: &RepoName, tag: &Tag) {
        self.resolved
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(Self::tag_key(repo, tag), Instant::now());
    }

    /// A manifest: from the cache when it holds it (a tag: resolved within
    /// `tagttl`, or the upstream cannot answer), else fetched with the
    /// client's `accept`, verified and cached.
    pub async fn manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
        accept: Option<&HeaderValue>,
    ) -> Result<ManifestRead> {
        let cached = match self.registry.manifest_get(repo, reference).await {
            Ok(m) => Some(m),
            Err(e) if e.code == Code::ManifestUnknown => None,
            Err(e) => return Err(e),
        };
        let tag = match reference {
            Reference::Tag(tag) => Some(tag),
            Reference::Digest(_) => None,
        };
        if let Some(m) = &cached
            && tag.is_none_or(|t| self.is_fresh(repo, t))
        {
            self.hit("manifest");
            return Ok(m.clone());
        }
        if let (Some(m), Some(tag)) = (&cached, tag) {
            // A stale tag: a HEAD tells whether it still names the cached
            // manifest (registries do not count HEADs against pull limits).
            match self.upstream_digest(repo, tag, accept).await {
                Ok(Some(digest)) if digest == m.digest => {
                    // Rewriting the tag's links records the use for collection.
                    self.keep_manifest(repo, &m.digest, Some(tag), m.content.clone())
                        .await;
                    self.mark_resolved(repo, tag);
                    self.hit("manifest");
                    return Ok(m.clone());
                }
                Ok(_) => {}
                Err(Fetch::NotFound) => return Err(unknown_upstream(repo, reference)),
                Err(Fetch::Failed(why)) => {
                    tracing::warn!(mirror = %self.name, %repo, %tag, error = %why, "upstream failed; serving the cached tag");
                    return Ok(m.clone());
                }
            }
        }
        self.miss("manifest");
        match self.fetch_manifest(repo, reference, accept).await {
            Ok((digest, content)) => {
                self.keep_manifest(repo, &digest, tag, content.clone())
                    .await;
                if let Some(tag) = tag {
                    self.mark_resolved(repo, tag);
                }
                Ok(ManifestRead {
                    media_type: manifest::served_media_type(&content),
                    digest,
                    content,
                })
            }
            Err(Fetch::NotFound) => Err(unknown_upstream(repo, reference)),
            Err(Fetch::Failed(why)) => match cached {
                Some(m) => {
                    tracing::warn!(mirror = %self.name, %repo, %reference, error = %why, "upstream failed; serving the cached tag");
                    Ok(m)
                }
                None => Err(unavailable(&format!("manifest {reference}"), &why)),
            },
        }
    }

    /// Keeps a verified manifest (and `tag`), unless the registry is in
    /// read-only maintenance; a failure is logged, the client served anyway.
    async fn keep_manifest(
        &self,
        repo: &RepoName,
        digest: &Digest,
        tag: Option<&Tag>,
        content: Bytes,
    ) {
        if self.registry.options().read_only {
            return;
        }
        if let Err(e) = self
            .registry
            .cache_manifest(repo, digest, tag, content)
            .await
        {
            tracing::warn!(mirror = %self.name, %repo, %digest, error = %e, "could not cache a manifest");
        }
    }

    /// The digest the upstream gives for `tag` (a HEAD), if it says.
    async fn upstream_digest(
        &self,
        repo: &RepoName,
        tag: &Tag,
        accept: Option<&HeaderValue>,
    ) -> Result<Option<Digest>, Fetch> {
        self.upstream_request("manifest");
        let response = self
            .upstream
            .send(
                Method::HEAD,
                repo.as_str(),
                &format!("manifests/{tag}"),
                accept,
            )
            .await
            .map_err(|e| Fetch::Failed(e.to_string()))?;
        match response.status() {
            StatusCode::OK => Ok(response
                .headers()
                .get(DOCKER_CONTENT_DIGEST)
                .and_then(|v| v.to_str().ok()?.parse().ok())),
            StatusCode::NOT_FOUND => Err(Fetch::NotFound),
            status => Err(Fetch::Failed(format!("the upstream answered {status}"))),
        }
    }

    /// Fetches and verifies a manifest: its digest (the reference's, the
    /// `Docker-Content-Digest` header's), its size, and that it parses.
    async fn fetch_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
        accept: Option<&HeaderValue>,
    ) -> Result<(Digest, Bytes), Fetch> {
        self.upstream_request("manifest");
        let response = self
            .upstream
            .send(
                Method::GET,
                repo.as_str(),
                &format!("manifests/{reference}"),
                accept,
            )
            .await
            .map_err(|e| Fetch::Failed(e.to_string()))?;
        match response.status() {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND => return Err(Fetch::NotFound),
            status => return Err(Fetch::Failed(format!("the upstream answered {status}"))),
        }
        let text = |name| {
            response
                .headers()
                .get(name)
                .and_then(|v: &HeaderValue| v.to_str().ok())
                .map(str::to_owned)
        };
        let announced = match text(DOCKER_CONTENT_DIGEST) {
            Some(d) => Some(d.parse::<Digest>().map_err(|e| {
                Fetch::Failed(format!("the upstream's Docker-Content-Digest {d:?}: {e}"))
            })?),
            None => None,
        };
        let content_type = text(CONTENT_TYPE);
        let limit = self.registry.options().manifest_max_bytes;
        let too_large = || {
            Fetch::Failed(format!(
                "the manifest is larger than berth.manifestmaxbytes ({limit} bytes)"
            ))
        };
        if text(CONTENT_LENGTH)
            .and_then(|l| l.parse::<u64>().ok())
            .is_some_and(|l| l > limit)
        {
            return Err(too_large());
        }
        let content = tokio::time::timeout(UPSTREAM_IDLE_TIMEOUT, read_limited(response, limit))
            .await
            .map_err(|_| {
                Fetch::Failed("the upstream's manifest body did not arrive in time".into())
            })?
            .map_err(|e| Fetch::Failed(e.to_string()))?
            .ok_or_else(too_large)?;
        let algorithm = match (reference, &announced) {
            (Reference::Digest(d), _) => d.algorithm(),
            (Reference::Tag(_), Some(d)) => d.algorithm(),
            (Reference::Tag(_), None) => Algorithm::Sha256,
        };
        let digest = Digest::of(algorithm, &content);
        for expected in [
            match reference {
                Reference::Digest(d) => Some(d),
                Reference::Tag(_) => None,
            },
            announced.as_ref(),
        ]
        .into_iter()
        .flatten()
        {
            if Digest::of(expected.algorithm(), &content) != *expected {
                return Err(Fetch::Failed(format!(
                    "the upstream's manifest has digest {digest}, not {expected}"
                )));
            }
        }
        manifest::parse(content_type.as_deref(), &content)
            .map_err(|e| Fetch::Failed(format!("the upstream's manifest is invalid: {e}")))?;
        Ok((digest, content))
    }

    /// The size of a blob: cached, or as the upstream answers a HEAD
    /// (nothing is fetched).
    pub async fn blob_size(&self, repo: &RepoName, digest: &Digest) -> Result<u64> {
        match self.registry.blob_size(repo, digest).await {
            Ok(size) => {
                self.hit("blob");
                return Ok(size);
            }
            Err(e) if e.code == Code::BlobUnknown => {}
            Err(e) => return Err(e),
        }
        self.miss("blob");
        self.head_upstream(repo, digest).await
    }

    /// The size of a blob as the upstream answers a HEAD of it in `repo`.
    async fn head_upstream(&self, repo: &RepoName, digest: &Digest) -> Result<u64> {
        self.upstream_request("blob");
        let what = format!("blob {digest}");
        let response = self
            .upstream
            .send(
                Method::HEAD,
                repo.as_str(),
                &format!("blobs/{digest}"),
                None,
            )
            .await
            .map_err(|e| unavailable(&what, &e.to_string()))?;
        match response.status() {
            StatusCode::OK => response
                .headers()
                .get(CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok()?.parse().ok())
                .ok_or_else(|| unavailable(&what, "the upstream's answer has no Content-Length")),
            StatusCode::NOT_FOUND => Err(RegistryError::new(
                Code::BlobUnknown,
                format!("blob {digest} is unknown to {repo} upstream"),
            )),
            status => Err(unavailable(
                &what,
                &format!("the upstream answered {status}"),
            )),
        }
    }

    /// A blob (or a range of it): from the cache, or from the one fill of
    /// it, which fetches it upstream once and caches it when verified.
    pub async fn blob(
        self: &Arc<Self>,
        repo: &RepoName,
        digest: &Digest,
        range: Option<BlobRange>,
    ) -> Result<BlobRead> {
        match self.registry.blob_get(repo, digest, range).await {
            Ok(blob) => {
                self.hit("blob");
                return Ok(blob);
            }
            Err(e) if e.code == Code::BlobUnknown => {}
            Err(e) => return Err(e),
        }
        // A running fill is joined below. Without one, a fill may have been
        // committed since the look above (its data in place before its
        // link): look again. Then another repository's image may have
        // brought the blob (a shared base layer): once the upstream confirms
        // that this repository has it too, it is linked and served from the
        // cache, not fetched again.
        if !self.fills.is_running(digest) {
            if let Ok(blob) = self.registry.blob_get(repo, digest, range).await {
                self.hit("blob");
                return Ok(blob);
            }
            if !self.registry.options().read_only && self.registry.holds_blob(digest).await? {
                self.head_upstream(repo, digest).await?;
                self.registry.link_blob(repo, digest).await?;
                self.hit("blob");
                return self.registry.blob_get(repo, digest, range).await;
            }
        }
        self.miss("blob");
        let open = {
            let cache = self.clone();
            let (repo, digest) = (repo.clone(), digest.clone());
            move || async move { cache.open_blob(&repo, &digest).await }
        };
        let commit: Commit = {
            let cache = self.clone();
            let (repo, digest) = (repo.clone(), digest.clone());
            Box::new(move |spool, _size| {
                Box::pin(async move {
                    if cache.registry.options().read_only {
                        return Ok(());
                    }
                    cache
                        .registry
                        .cache_blob(&repo, &digest, &spool)
                        .await
                        .map_err(io::Error::other)
                })
            })
        };
        let read = self
            .fills
            .read(digest, open, commit)
            .await
            .map_err(|e| match e.kind() {
                io::ErrorKind::NotFound => RegistryError::new(
                    Code::BlobUnknown,
                    format!("blob {digest} is unknown to {repo} upstream"),
                ),
                _ => unavailable(&format!("blob {digest}"), &e.to_string()),
            })?;
        let Some(range) = range else {
            return Ok(BlobRead {
                size: read.size,
                range: None,
                body: read.body,
            });
        };
        let (first, last) = range.resolve(read.size).ok_or_else(|| {
            RegistryError::new(
                Code::RangeInvalid,
                format!("range not satisfiable for a blob of {} bytes", read.size),
            )
        })?;
        Ok(BlobRead {
            size: read.size,
            range: Some((first, last)),
            body: slice(read.body, first, last - first + 1),
        })
    }

    /// Starts the upstream GET of a blob for a fill.
    async fn open_blob(&self, repo: &RepoName, digest: &Digest) -> io::Result<Source> {
        // The fill this request missed may have been committed between its
        // look at the cache and this start: then the cache is the source.
        if let Ok(blob) = self.registry.blob_get(repo, digest, None).await {
            return Ok(Source {
                size: blob.size,
                body: blob.body,
            });
        }
        self.upstream_request("blob");
        let response = self
            .upstream
            .send(Method::GET, repo.as_str(), &format!("blobs/{digest}"), None)
            .await
            .map_err(io::Error::other)?;
        match response.status() {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND => {
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    "the upstream does not have it",
                ));
            }
            status => return Err(io::Error::other(format!("the upstream answered {status}"))),
        }
        let size = response
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse().ok())
            .ok_or_else(|| io::Error::other("the upstream's answer has no Content-Length"))?;
        Ok(Source {
            size,
            body: idle_timeout(body_stream(response), UPSTREAM_IDLE_TIMEOUT),
        })
    }
}

/// `body`, failing once no byte arrived for `limit`: a fill whose upstream
/// stalls must end, or every later request for the blob would join it.
fn idle_timeout(body: ByteStream, limit: Duration) -> ByteStream {
    Box::pin(stream::try_unfold(body, move |mut body| async move {
        match tokio::time::timeout(limit, body.next()).await {
            Ok(Some(chunk)) => Ok(Some((chunk?, body))),
            Ok(None) => Ok(None),
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the upstream sent nothing for {}s", limit.as_secs()),
            )),
        }
    }))
}

/// `len` bytes of `body` from `from`.
fn slice(body: ByteStream, from: u64, len: u64) -> ByteStream {
    Box::pin(stream::try_unfold(
        (body, from, len),
        |(mut body, mut skip, left)| async move {
            if left == 0 {
                return Ok(None);
            }
            loop {
                let Some(chunk) = body.next().await.transpose()? else {
                    return Ok(None);
                };
                let n = chunk.len() as u64;
                if skip >= n {
                    skip -= n;
                    continue;
                }
                let take = (n - skip).min(left);
                let piece = chunk.slice(skip as usize..(skip + take) as usize);
                return Ok(Some((piece, (body, 0, left - take))));
            }
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::TryStreamExt;

    #[tokio::test]
    async fn slices_take_the_range_across_chunks() {
        let chunks: Vec<io::Result<Bytes>> = vec![
            Ok(Bytes::from_static(b"0123")),
            Ok(Bytes::from_static(b"4567")),
            Ok(Bytes::from_static(b"89")),
        ];
        let body: ByteStream = Box::pin(stream::iter(chunks));
        let parts: Vec<Bytes> = slice(body, 3, 6).try_collect().await.unwrap();
        assert_eq!(parts.concat(), b"345678");
    }

    #[tokio::test]
    async fn a_stalled_body_times_out() {
        let body: ByteStream =
            Box::pin(stream::iter([Ok(Bytes::from_static(b"a"))]).chain(stream::pending()));
        let mut body = idle_timeout(body, Duration::from_millis(50));
        assert_eq!(body.next().await.unwrap().unwrap(), "a");
        let err = body.next().await.unwrap().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }
}
