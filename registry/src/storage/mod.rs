//! Storage drivers: a small async interface over bytes at paths.
//!
//! Drivers know nothing about manifests, repositories or digests; the
//! [`layout`](crate::layout) module decides which path holds what, and the
//! service layer decides when to read and write. Paths are `/`-separated,
//! absolute within the driver's root (`/docker/registry/v2/...`), and are
//! always built from validated components.

pub mod azure;
pub mod filesystem;
pub mod gcs;
pub mod instrumented;
pub mod ownership;
pub mod prefixed;
pub(crate) mod read_buffers;
pub(crate) mod rest;
pub mod s3;
mod staged;
mod token;

use std::io;
use std::pin::Pin;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::Stream;

pub use azure::AzureDriver;
pub use filesystem::FilesystemDriver;
pub use gcs::GcsDriver;
pub use instrumented::Instrumented;
pub use prefixed::Prefixed;
pub use s3::S3Driver;

/// A stream of bytes read from storage.
pub type ByteStream = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>;

/// What a driver reports about a path.
#[derive(Debug, Clone)]
pub struct FileInfo {
    /// Size in bytes (0 for directories).
    pub size: u64,
    /// Last modification time.
    pub modified: SystemTime,
    /// Whether the path is a directory (a prefix, on object stores).
    pub is_dir: bool,
}

/// A storage failure.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// Nothing exists at the path.
    #[error("path not found: {0}")]
    NotFound(String),
    /// The content is larger than the caller allows.
    #[error("{path} is larger than {limit} bytes")]
    TooLarge {
        /// The path read.
        path: String,
        /// The caller's limit.
        limit: u64,
    },
    /// Any other I/O failure.
    #[error("{path}: {source}")]
    Io {
        /// The path involved.
        path: String,
        /// The underlying error.
        source: io::Error,
    },
}

impl StorageError {
    /// Whether this error means "the path does not exist".
    pub fn is_not_found(&self) -> bool {
        matches!(self, StorageError::NotFound(_))
    }
}

/// Results of driver operations.
pub type Result<T, E = StorageError> = std::result::Result<T, E>;

/// The operations every storage backend provides.
#[async_trait]
pub trait StorageDriver: Send + Sync + 'static {
    /// The driver's name, as in the config file (`filesystem`, `s3`, `azure`, `gcs`).
    fn name(&self) -> &'static str;

    /// Reads a small file whole, failing with `TooLarge` past `limit` bytes.
    async fn get_content(&self, path: &str, limit: u64) -> Result<Bytes>;

    /// Writes a small file whole; readers see the old or the new content, never a mix.
    async fn put_content(&self, path: &str, content: Bytes) -> Result<()>;

    /// Streams `len` bytes (or to the end) of the file at `path` from `offset`.
    async fn reader(&self, path: &str, offset: u64, len: Option<u64>) -> Result<ByteStream>;

    /// Streams the whole file at `path`, with its size. By default a
    /// [`stat`](Self::stat) and then a [`reader`](Self::reader); a backend
    /// whose read answers with the size (an object store's GET) does it in
    /// one request.
    async fn open(&self, path: &str) -> Result<(u64, ByteStream)> {
        let info = self.stat(path).await?;
        if info.is_dir {
            return Err(StorageError::NotFound(path.to_owned()));
        }
        Ok((info.size, self.reader(path, 0, None).await?))
    }

    /// Opens a writer that appends to the file at `path` (created if missing).
    /// Its [`size`](FileWriter::size) is the size of a file still being
    /// appended to, which `stat` need not know on every backend.
    async fn writer(&self, path: &str) -> Result<Box<dyn FileWriter>>;

    /// Size, modification time and kind of `path`.
    async fn stat(&self, path: &str) -> Result<FileInfo>;

    /// Names of the direct children of the directory `path`.
    async fn list(&self, path: &str) -> Result<Vec<String>>;

    /// Moves a file, replacing `to` atomically if it exists.
    async fn rename(&self, from: &str, to: &str) -> Result<()>;

    /// Deletes a file or a whole directory tree.
    async fn delete(&self, path: &str) -> Result<()>;

    /// Removes the empty directories at and below `path`, never a file and
    /// never a directory that is (or becomes) non-empty. Backends without
    /// directories have nothing to do.
    async fn prune_empty_dirs(&self, _path: &str) -> Result<()> {
        Ok(())
    }

    /// Checks that the backend is reachable and usable (for `/readyz`).
    async fn check(&self) -> Result<()>;

    /// Whether [`redirect_url`](Self::redirect_url) may give URLs.
    fn redirects(&self) -> bool {
        false
    }

    /// A URL from which a client can fetch (`head`: HEAD) the file directly,
    /// when the backend offers them and they are enabled.
    async fn redirect_url(&self, _path: &str, _head: bool) -> Result<Option<String>> {
        Ok(None)
    }
}

/// An append-only writer to one file.
#[async_trait]
pub trait FileWriter: Send {
    /// Appends bytes.
    async fn write(&mut self, chunk: Bytes) -> Result<()>;

    /// The file's size including everything written so far.
    fn size(&self) -> u64;

    /// Makes everything written durable; the file may be appended to later
    /// (by this or another instance).
    async fn close(self: Box<Self>) -> Result<()>;

    /// Makes everything written durable and the file complete: readable as a
    /// whole, and ready to be renamed.
    async fn commit(self: Box<Self>) -> Result<()>;
}
