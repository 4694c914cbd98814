//! The writer of the azure and gcs drivers: bytes appended to an object are
//! staged in the backend as numbered parts (Azure uncommitted blocks, GCS
//! part objects) of `chunksize`, and merged into the object by the backend
//! (Azure `Put Block List`, GCS `compose`). Nothing but the part being
//! filled is held in memory, and everything a writer knows — which parts
//! exist and how large the object is — is read back from the backend when
//! a writer opens, so any instance can continue any upload.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};

use super::{FileWriter, Result};

/// One staged part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// Position among the object's parts, from 0.
    pub number: u32,
    /// Offset of the part's first byte in the object.
    pub offset: u64,
    /// Size in bytes.
    pub size: u64,
}

/// What exists of an object being written: its merged bytes and the parts
/// staged after them, in order.
#[derive(Debug, Clone, Default)]
pub struct Staged {
    /// Size of what is already merged into the object.
    pub merged: u64,
    /// The first part number the object's merged content does not use.
    pub next_number: u32,
    /// Parts staged and not yet merged, in order.
    pub parts: Vec<Part>,
}

impl Staged {
    /// The object's size once every part is merged.
    pub fn size(&self) -> u64 {
        self.merged + self.parts.iter().map(|p| p.size).sum::<u64>()
    }
}

/// A backend's parts and merges, for one object at a time.
#[async_trait]
pub trait PartStore: Send + Sync + 'static {
    /// Stores `body` as `part` of the object at `key`.
    async fn stage(&self, key: &str, part: &Part, body: Bytes) -> Result<()>;

    /// Makes what is staged durable; with `complete`, also merges it into
    /// the object at `key` (created, empty, when nothing was written).
    async fn merge(&self, key: &str, staged: &Staged, complete: bool) -> Result<()>;
}

/// Appends to one object through a [`PartStore`].
pub struct StagedWriter<S: PartStore> {
    store: Arc<S>,
    key: String,
    staged: Staged,
    buffer: BytesMut,
    part_size: usize,
}

impl<S: PartStore> StagedWriter<S> {
    /// A writer continuing `staged` at `key`, in parts of `part_size` bytes.
    pub fn new(store: Arc<S>, key: String, staged: Staged, part_size: usize) -> StagedWriter<S> {
        StagedWriter {
            store,
            key,
            staged,
            buffer: BytesMut::new(),
            part_size,
        }
    }

    /// Stages the first `len` buffered bytes as the next part.
    async fn stage(&mut self, len: usize) -> Result<()> {
        let number = self
            .staged
            .parts
            .last()
            .map_or(self.staged.next_number, |p| p.number + 1);
        let body = self.buffer.split_to(len).freeze();
        let part = Part {
            number,
            offset: self.staged.size(),
            size: body.len() as u64,
        };
        self.store.stage(&self.key, &part, body).await?;
        self.staged.parts.push(part);
        Ok(())
    }

    /// Stages whatever is buffered, then merges.
    async fn finish(mut self: Box<Self>, complete: bool) -> Result<()> {
        if !self.buffer.is_empty() {
            let len = self.buffer.len();
            self.stage(len).await?;
        }
        self.store.merge(&self.key, &self.staged, complete).await
    }
}

#[async_trait]
impl<S: PartStore> FileWriter for StagedWriter<S> {
    async fn write(&mut self, chunk: Bytes) -> Result<()> {
        self.buffer.extend_from_slice(&chunk);
        while self.buffer.len() >= self.part_size {
            self.stage(self.part_size).await?;
        }
        Ok(())
    }

    fn size(&self) -> u64 {
        self.staged.size() + self.buffer.len() as u64
    }

    async fn close(self: Box<Self>) -> Result<()> {
        self.finish(false).await
    }

    async fn commit(self: Box<Self>) -> Result<()> {
        self.finish(true).await
    }
}
