//! Pull-through: serving images of upstream registries from a cache in the
//! storage driver.
//!
//! A request names its upstream with the `ns` query parameter that
//! containerd adds to mirror requests (`berth.mirrors`, with `_default` for
//! any host not listed), or, without `ns`, goes to `proxy.remoteurl`.
//! Each upstream host has its own cache: a [`Prefixed`] view of the driver
//! at `/berth/mirrors/<host>/` (`_proxy` for `proxy.remoteurl`) holding
//! Distribution's usual layout, read and written by an ordinary
//! [`Registry`]. The registry's own tree, catalog and garbage collection
//! never look there; [`collect`] empties a cache of what went unused.
//!
//! Manifests by digest and blobs never change, so once cached they are
//! served from the cache. A tag is asked upstream again once it is older
//! than the mirror's `tagttl`; while the upstream cannot answer, the cached
//! tag is served. A missing blob is fetched once however many clients want
//! it ([`Fills`]): each streams the spool file while it is written, and the
//! verified file is copied into the cache. When nothing is cached and the
//! upstream cannot answer, the request fails before any byte of a response
//! with 503 `UNAVAILABLE`, so a container runtime moves on to its next host.

pub mod collect;
pub mod upstream;

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{StreamExt, stream};
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderValue, Method, StatusCode};

use crate::config::{self, DEFAULT_MIRROR, UpstreamSettings};
use crate::digest::{Algorithm, Digest};
use crate::error::{Code, RegistryError, Result};
use crate::fill::{Commit, Fills, Source};
use crate::manifest;
use crate::metrics::{Metrics, MirrorLabels};
use crate::names::{Reference, RepoName, Tag};
use crate::service::{BlobRange, BlobRead, ManifestRead, Options, Registry};
use crate::storage::rest::{read_limited, stream as body_stream};
use crate::storage::{ByteStream, Prefixed, StorageDriver};
use upstream::Upstream;

/// Where caches live in the driver: one directory per upstream host.
pub const MIRRORS_DIR: &str = "/berth/mirrors";
/// The cache of `proxy.remoteurl`.
pub const PROXY_CACHE: &str = "_proxy";

/// How long an upstream body may send nothing (a blob) or take (a manifest).
const UPSTREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Caches kept in memory before they are all forgotten.
const MAX_CACHES: usize = 1024;

/// The directory of the cache named `name`.
pub fn cache_dir(name: &str) -> String {
    format!("{MIRRORS_DIR}/{name}")
}

/// The registry service of the cache named `name` over `storage`.
pub fn cache_registry(storage: &Arc<dyn StorageDriver>, name: &str, options: Options) -> Registry {
    let view: Arc<dyn StorageDriver> = Arc::new(Prefixed::new(storage.clone(), cache_dir(name)));
    Registry::new(view, options)
}

/// Every configured upstream and its cache.
pub struct PullThrough {
    storage: Arc<dyn StorageDriver>,
    settings: config::PullThrough,
    options: Options,
    caches: Mutex<HashMap<String, Arc<Cache>>>,
    fills: Arc<Fills>,
    metrics: Arc<Metrics>,
}

impl PullThrough {
    /// Pull-through over `storage` (the registry's whole driver) with
    /// `options` of the registry, spooling in `settings.spool_dir`.
    pub fn new(
        storage: Arc<dyn StorageDriver>,
        settings: config::PullThrough,
        options: &Options,
        metrics: Arc<Metrics>,
    ) -> io::Result<PullThrough> {
        let fills = Arc::new(Fills::new(&settings.spool_dir).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("berth.spooldir {}: {e}", settings.spool_dir.display()),
            )
        })?);
        let options = Options {
            delete_enabled: false,
            read_only: false,
            manifest_max_bytes: options.manifest_max_bytes,
            // Touches mark use; collection spares what was used within the ttl.
            gc_grace_period: settings.ttl,
        };
        Ok(PullThrough {
            storage,
            settings,
            options,
            caches: Mutex::new(HashMap::new()),
            fills,
            metrics,
        })
    }

    /// The cache a request with `ns` goes to, or `None` for the registry's
    /// own content: `ns` names a mirror, or `_default` takes any other
    /// registry host; without `ns`, `proxy.remoteurl` when set.
    pub fn route(&self, ns: Option<&str>) -> Option<Arc<Cache>> {
        let (name, entry) = match ns {
            Some(ns) if ns == DEFAULT_MIRROR || !config::is_registry_host(ns) => return None,
            Some(ns) if self.settings.mirrors.contains_key(ns) => (ns, ns),
            Some(ns) if self.settings.mirrors.contains_key(DEFAULT_MIRROR) => (ns, DEFAULT_MIRROR),
            Some(_) => return None,
            None if self.settings.proxy.is_some() => (PROXY_CACHE, PROXY_CACHE),
            None => return None,
        };
        let settings = match entry {
            PROXY_CACHE => self.settings.proxy.as_ref()?,
            entry => self.settings.mirrors.get(entry)?,
        };
        let mut caches = self.caches.lock().unwrap_or_else(PoisonError::into_inner);
        if !caches.contains_key(name) && caches.len() >= MAX_CACHES {
            // `_default` takes any host a client names: forget them all
            // rather than grow without bound (a cache keeps tokens and tag
            // times only; its content stays in storage).
            caches.clear();
        }
        Some(
            caches
                .entry(name.to_owned())
                .or_insert_with(|| Arc::new(self.cache(name, entry, settings)))
                .clone(),
        )
    }

    /// The cache of `name`, configured by the mirror entry `entry`.
    fn cache(&self, name: &str, entry: &str, settings: &UpstreamSettings) -> Cache {
        let url = settings
            .url
            .clone()
            .unwrap_or_else(|| config::default_upstream_url(name));
        Cache {
            name: name.to_owned(),
            label: entry.to_owned(),
            registry: cache_registry(&self.storage, name, self.options.clone()),
            upstream: Arc::new(Upstream::new(url, settings.credentials.clone())),
            tag_ttl: settings.tag_ttl,
            resolved: Mutex::new(HashMap::new()),
            fills: self.fills.clone(),
            metrics: self.metrics.clone(),
        }
    }
}

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
    name: String,
    /// The mirror entry that configures it, as metrics label it (clients
    /// cannot add series through `_default`).
    label: String,
    registry: Registry,
    upstream: Arc<Upstream>,
    tag_ttl: Duration,
    /// When each `repo:tag` was last resolved upstream.
    resolved: Mutex<HashMap<String, Instant>>,
    fills: Arc<Fills>,
    metrics: Arc<Metrics>,
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
                    if let Err(e) = self
                        .registry
                        .cache_manifest(repo, &m.digest, Some(tag), m.content.clone())
                        .await
                    {
                        tracing::warn!(mirror = %self.name, %repo, %tag, error = %e, "could not refresh a cached tag");
                    }
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
                if let Err(e) = self
                    .registry
                    .cache_manifest(repo, &digest, tag, content.clone())
                    .await
                {
                    tracing::warn!(mirror = %self.name, %repo, %digest, error = %e, "could not cache a manifest");
                }
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
        // Another repository's image may have brought the blob (a shared
        // base layer): once the upstream confirms that this repository has
        // it too, it is linked and served from the cache, not fetched again.
        if self.registry.holds_blob(digest).await? {
            self.head_upstream(repo, digest).await?;
            self.registry.link_blob(repo, digest).await?;
            self.hit("blob");
            return self.registry.blob_get(repo, digest, range).await;
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
    use crate::config::UpstreamCredentials;
    use crate::storage::FilesystemDriver;
    use futures_util::TryStreamExt;

    fn upstream(url: Option<&str>) -> UpstreamSettings {
        UpstreamSettings {
            url: url.map(str::to_owned),
            credentials: UpstreamCredentials::None,
            tag_ttl: Duration::from_secs(60),
        }
    }

    fn pull_through(mirrors: &[&str], proxy: bool, dir: &std::path::Path) -> PullThrough {
        let settings = config::PullThrough {
            proxy: proxy.then(|| upstream(Some("http://127.0.0.1:9"))),
            mirrors: mirrors
                .iter()
                .map(|h| (h.to_string(), upstream(None)))
                .collect(),
            ttl: Duration::from_secs(3600),
            spool_dir: dir.join("spool"),
        };
        let storage: Arc<dyn StorageDriver> = Arc::new(FilesystemDriver::new(dir));
        PullThrough::new(
            storage,
            settings,
            &Options::default(),
            Arc::new(Metrics::new()),
        )
        .unwrap()
    }

    fn routed(p: &PullThrough, ns: Option<&str>) -> Option<(String, String, String)> {
        p.route(ns)
            .map(|c| (c.name.clone(), c.label.clone(), c.upstream.url().to_owned()))
    }

    #[test]
    fn requests_route_by_ns_then_default_then_proxy() {
        let dir = tempfile::tempdir().unwrap();
        let p = pull_through(&["docker.io", "ghcr.io"], false, dir.path());
        let route = |ns| routed(&p, ns);
        assert_eq!(
            route(Some("docker.io")),
            Some((
                "docker.io".into(),
                "docker.io".into(),
                "https://registry-1.docker.io".into()
            ))
        );
        assert_eq!(route(Some("quay.io")), None, "no _default: own content");
        assert_eq!(route(None), None, "no proxy: own content");
        let p = pull_through(&["docker.io", DEFAULT_MIRROR], true, dir.path());
        let route = |ns| routed(&p, ns);
        assert_eq!(
            route(Some("quay.io:5000")),
            Some((
                "quay.io:5000".into(),
                DEFAULT_MIRROR.into(),
                "https://quay.io:5000".into()
            ))
        );
        assert_eq!(
            route(None),
            Some((
                PROXY_CACHE.into(),
                PROXY_CACHE.into(),
                "http://127.0.0.1:9".into()
            ))
        );
        // Names that are no registry host never reach a cache directory.
        for bad in ["_default", "../x", "a/b", ""] {
            assert_eq!(route(Some(bad)), None, "{bad}");
        }
        // The same cache answers every request for a host.
        assert!(Arc::ptr_eq(
            &p.route(Some("docker.io")).unwrap(),
            &p.route(Some("docker.io")).unwrap()
        ));
    }

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
