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

pub mod cache;
pub mod collect;
pub mod upstream;

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex, PoisonError};

use crate::config::{self, DEFAULT_MIRROR, UpstreamSettings};
use crate::fill::Fills;
use crate::metrics::Metrics;
use crate::service::{Options, Registry};
use crate::storage::{Prefixed, StorageDriver};
pub use cache::Cache;
use upstream::Upstream;

/// Where caches live in the driver: one directory per upstream host.
pub const MIRRORS_DIR: &str = "/berth/mirrors";
/// The cache of `proxy.remoteurl`.
pub const PROXY_CACHE: &str = "_proxy";

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
            // In maintenance mode nothing is cached: upstream answers pass through.
            read_only: options.read_only,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::UpstreamCredentials;
    use crate::storage::FilesystemDriver;
    use std::time::Duration;

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
}
