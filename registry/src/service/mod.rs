//! Registry semantics over a storage driver: repositories, blobs, uploads,
//! manifests, tags and referrers.
//!
//! The service speaks in names, tags and digests and returns OCI errors; it
//! never sees HTTP. Each concern is a submodule adding methods to [`Registry`].

mod blobs;
mod catalog;
mod inventory;
mod manifest_cache;
mod manifests;
mod mirror;
mod referrers;
mod touch;
mod uploads;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::digest::Digest;
use crate::error::{Code, RegistryError, Result};
use crate::nodecache::NodeCache;
use crate::storage::StorageDriver;

pub use blobs::{BlobRange, BlobRead};
pub use catalog::Page;
pub use inventory::StoredBlob;
pub(crate) use manifests::manifest_too_large;
pub use manifests::{ManifestRead, PushedManifest};
pub use uploads::{UploadCompletion, UploadStatus};

/// Longest link file read (a digest string is far shorter).
const LINK_MAX_BYTES: u64 = 1024;

/// Behaviour switches from the config file.
#[derive(Debug, Clone)]
pub struct Options {
    /// Whether DELETE of manifests, tags and blobs is allowed.
    pub delete_enabled: bool,
    /// Whether every write is refused (maintenance mode).
    pub read_only: bool,
    /// Largest manifest accepted, in bytes.
    pub manifest_max_bytes: u64,
    /// Garbage collection's grace period; touches are refreshed every quarter of it.
    pub gc_grace_period: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            delete_enabled: false,
            read_only: false,
            manifest_max_bytes: 4 * 1024 * 1024,
            gc_grace_period: Duration::from_secs(3600),
        }
    }
}

/// The registry: storage plus the rules of the OCI Distribution API.
pub struct Registry {
    storage: Arc<dyn StorageDriver>,
    options: Options,
    uploads: uploads::Sessions,
    touches: touch::Touches,
    manifest_cache: manifest_cache::ManifestCache,
    node_cache: Option<Arc<NodeCache>>,
}

impl Registry {
    /// A registry over `storage`.
    pub fn new(storage: Arc<dyn StorageDriver>, options: Options) -> Self {
        let touches = touch::Touches::new(options.gc_grace_period / 4);
        Registry {
            storage,
            options,
            uploads: uploads::Sessions::default(),
            touches,
            manifest_cache: manifest_cache::ManifestCache::new(0),
            node_cache: None,
        }
    }

    /// This registry keeping up to `max_bytes` of manifests in memory by
    /// digest (see `manifest_cache`); without it, none are kept.
    pub fn with_manifest_cache(mut self, max_bytes: u64) -> Self {
        self.manifest_cache = manifest_cache::ManifestCache::new(max_bytes);
        self
    }

    /// This registry serving blob GETs through `cache`, on the node's disk.
    pub fn with_node_cache(mut self, cache: Arc<NodeCache>) -> Self {
        self.node_cache = Some(cache);
        self
    }

    /// The storage driver (for health checks and maintenance).
    pub fn storage(&self) -> &Arc<dyn StorageDriver> {
        &self.storage
    }

    /// Whether blob downloads may be redirected to the backend.
    pub fn redirects(&self) -> bool {
        self.storage.redirects()
    }

    /// The options in force.
    pub fn options(&self) -> &Options {
        &self.options
    }

    fn ensure_writable(&self) -> Result<()> {
        if self.options.read_only {
            return Err(RegistryError::new(
                Code::Unsupported,
                "registry is in read-only mode",
            ));
        }
        Ok(())
    }

    fn ensure_delete_enabled(&self) -> Result<()> {
        self.ensure_writable()?;
        if !self.options.delete_enabled {
            return Err(RegistryError::new(
                Code::Unsupported,
                "deletes are disabled (storage.delete.enabled)",
            ));
        }
        Ok(())
    }

    /// Reads a link file; `None` when it does not exist or holds no valid digest.
    pub(crate) async fn read_link(&self, path: &str) -> Result<Option<Digest>> {
        match self.storage.get_content(path, LINK_MAX_BYTES).await {
            Ok(content) => Ok(std::str::from_utf8(&content)
                .ok()
                .and_then(|s| s.trim().parse().ok())),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    pub(crate) async fn write_link(&self, path: &str, digest: &Digest) -> Result<()> {
        Ok(self
            .storage
            .put_content(path, Bytes::from(digest.to_string()))
            .await?)
    }

    /// Whether `path` exists.
    pub(crate) async fn exists(&self, path: &str) -> Result<bool> {
        match self.storage.stat(path).await {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes `path`, treating "already gone" as success.
    pub(crate) async fn delete_if_exists(&self, path: &str) -> Result<()> {
        match self.storage.delete(path).await {
            Err(e) if !e.is_not_found() => Err(e.into()),
            _ => Ok(()),
        }
    }
}
