//! A driver wrapper that records every operation's outcome and latency in
//! the metrics, whatever the backend.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;

use super::{ByteStream, FileInfo, FileWriter, Result, StorageDriver};
use crate::metrics::Metrics;

/// Wraps a driver with metrics.
pub struct Instrumented {
    inner: Arc<dyn StorageDriver>,
    metrics: Arc<Metrics>,
}

impl Instrumented {
    /// Instruments `inner`, recording into `metrics`.
    pub fn new(inner: Arc<dyn StorageDriver>, metrics: Arc<Metrics>) -> Self {
        Instrumented { inner, metrics }
    }

    fn record<T>(&self, op: &'static str, started: Instant, result: &Result<T>) {
        let outcome = match result {
            Ok(_) => "ok",
            Err(e) if e.is_not_found() => "not_found",
            Err(_) => "error",
        };
        self.metrics
            .storage_op(self.inner.name(), op, outcome, started.elapsed());
    }
}

/// Times one call on the inner driver and records it under `op`.
macro_rules! timed {
    ($self:ident, $op:literal, $call:expr) => {{
        let started = Instant::now();
        let result = $call.await;
        $self.record($op, started, &result);
        result
    }};
}

#[async_trait]
impl StorageDriver for Instrumented {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    async fn get_content(&self, path: &str, limit: u64) -> Result<Bytes> {
        timed!(self, "get_content", self.inner.get_content(path, limit))
    }

    async fn put_content(&self, path: &str, content: Bytes) -> Result<()> {
        timed!(self, "put_content", self.inner.put_content(path, content))
    }

    async fn reader(&self, path: &str, offset: u64, len: Option<u64>) -> Result<ByteStream> {
        timed!(self, "reader", self.inner.reader(path, offset, len))
    }

    async fn open(&self, path: &str) -> Result<(u64, ByteStream)> {
        timed!(self, "open", self.inner.open(path))
    }

    async fn writer(&self, path: &str) -> Result<Box<dyn FileWriter>> {
        timed!(self, "writer", self.inner.writer(path))
    }

    async fn stat(&self, path: &str) -> Result<FileInfo> {
        timed!(self, "stat", self.inner.stat(path))
    }

    async fn list(&self, path: &str) -> Result<Vec<String>> {
        timed!(self, "list", self.inner.list(path))
    }

    async fn rename(&self, from: &str, to: &str) -> Result<()> {
        timed!(self, "rename", self.inner.rename(from, to))
    }

    async fn delete(&self, path: &str) -> Result<()> {
        timed!(self, "delete", self.inner.delete(path))
    }

    async fn prune_empty_dirs(&self, path: &str) -> Result<()> {
        timed!(self, "prune_empty_dirs", self.inner.prune_empty_dirs(path))
    }

    async fn check(&self) -> Result<()> {
        timed!(self, "check", self.inner.check())
    }

    fn redirects(&self) -> bool {
        self.inner.redirects()
    }

    async fn redirect_url(&self, path: &str, head: bool) -> Result<Option<String>> {
        timed!(self, "redirect_url", self.inner.redirect_url(path, head))
    }
}
