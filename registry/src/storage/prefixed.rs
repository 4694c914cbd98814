//! A view of a driver below a directory: every path is moved under a
//! prefix. Pull-through caches keep Distribution's usual layout in such a
//! view (`/berth/mirrors/<host>/docker/registry/v2/...`), so the registry
//! service stores and serves upstream content with its own code, while the
//! registry's own tree, its catalog and its garbage collection never see it.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use super::{ByteStream, FileInfo, FileWriter, Result, StorageDriver};

/// A driver whose paths all lie below `prefix` of another.
pub struct Prefixed {
    inner: Arc<dyn StorageDriver>,
    prefix: String,
}

impl Prefixed {
    /// The view of `inner` below `prefix` (an absolute path without a
    /// trailing slash, built from validated components).
    pub fn new(inner: Arc<dyn StorageDriver>, prefix: impl Into<String>) -> Self {
        Prefixed {
            inner,
            prefix: prefix.into(),
        }
    }

    fn path(&self, path: &str) -> String {
        format!("{}{path}", self.prefix)
    }
}

#[async_trait]
impl StorageDriver for Prefixed {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    async fn get_content(&self, path: &str, limit: u64) -> Result<Bytes> {
        self.inner.get_content(&self.path(path), limit).await
    }

    async fn put_content(&self, path: &str, content: Bytes) -> Result<()> {
        self.inner.put_content(&self.path(path), content).await
    }

    async fn reader(&self, path: &str, offset: u64, len: Option<u64>) -> Result<ByteStream> {
        self.inner.reader(&self.path(path), offset, len).await
    }

    async fn open(&self, path: &str) -> Result<(u64, ByteStream)> {
        self.inner.open(&self.path(path)).await
    }

    async fn writer(&self, path: &str) -> Result<Box<dyn FileWriter>> {
        self.inner.writer(&self.path(path)).await
    }

    async fn stat(&self, path: &str) -> Result<FileInfo> {
        self.inner.stat(&self.path(path)).await
    }

    async fn list(&self, path: &str) -> Result<Vec<String>> {
        self.inner.list(&self.path(path)).await
    }

    async fn rename(&self, from: &str, to: &str) -> Result<()> {
        self.inner.rename(&self.path(from), &self.path(to)).await
    }

    async fn delete(&self, path: &str) -> Result<()> {
        self.inner.delete(&self.path(path)).await
    }

    async fn prune_empty_dirs(&self, path: &str) -> Result<()> {
        self.inner.prune_empty_dirs(&self.path(path)).await
    }

    async fn check(&self) -> Result<()> {
        self.inner.check().await
    }

    fn redirects(&self) -> bool {
        self.inner.redirects()
    }

    async fn redirect_url(&self, path: &str, head: bool) -> Result<Option<String>> {
        self.inner.redirect_url(&self.path(path), head).await
    }
}
