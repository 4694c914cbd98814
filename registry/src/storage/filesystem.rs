//! The `filesystem` driver: a directory tree on a local (or shared) filesystem.
//!
//! Whole-file writes go to a temporary file under `<root>/.berth/tmp` and are
//! renamed into place, so a crash never leaves a half-written file where a
//! reader looks. Temporary files live outside `docker/`, the only tree CNCF
//! Distribution walks.

use std::io::{self, SeekFrom};
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;
use tokio::fs;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt, BufWriter};
use tokio_util::io::ReaderStream;

use super::{ByteStream, FileInfo, FileWriter, Result, StorageDriver, StorageError};

/// Read buffer size for streamed reads.
const READ_CHUNK: usize = 256 * 1024;
/// Write buffer size for appends.
const WRITE_BUFFER: usize = 1024 * 1024;
/// Where temporary files live, relative to the root.
const TMP_DIR: &str = ".berth/tmp";

/// A driver rooted at a directory.
#[derive(Debug, Clone)]
pub struct FilesystemDriver {
    root: PathBuf,
}

impl FilesystemDriver {
    /// A driver storing everything below `root` (created on first write).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        FilesystemDriver { root: root.into() }
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn full(&self, path: &str) -> PathBuf {
        self.root.join(path.trim_start_matches('/'))
    }

    async fn temp_file(&self) -> Result<PathBuf> {
        let dir = self.root.join(TMP_DIR);
        fs::create_dir_all(&dir).await.map_err(|e| io_error(&dir, e))?;
        Ok(dir.join(format!("{:032x}", rand::random::<u128>())))
    }
}

fn io_error(path: &Path, source: io::Error) -> StorageError {
    if source.kind() == io::ErrorKind::NotFound {
        StorageError::NotFound(path.display().to_string())
    } else {
        StorageError::Io { path: path.display().to_string(), source }
    }
}

/// Renames `from` to `to`, creating `to`'s directory; retried once when
/// garbage collection pruned that directory in between.
async fn rename_into_place(from: &Path, to: &Path) -> Result<()> {
    for attempt in 0..2 {
        create_parent(to).await?;
        match fs::rename(from, to).await {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound && attempt == 0 && fs::metadata(from).await.is_ok() => continue,
            Err(e) => return Err(io_error(from, e)),
        }
    }
    Ok(())
}

async fn create_parent(path: &Path) -> Result<()> {
    match path.parent() {
        Some(parent) => fs::create_dir_all(parent).await.map_err(|e| io_error(parent, e)),
        None => Ok(()),
    }
}

#[async_trait]
impl StorageDriver for FilesystemDriver {
    fn name(&self) -> &'static str {
        "filesystem"
    }

    async fn get_content(&self, path: &str, limit: u64) -> Result<Bytes> {
        let full = self.full(path);
        let file = fs::File::open(&full).await.map_err(|e| io_error(&full, e))?;
        let mut content = Vec::new();
        // Read one byte past the limit to tell "exactly at" from "over".
        file.take(limit.saturating_add(1)).read_to_end(&mut content).await.map_err(|e| io_error(&full, e))?;
        if content.len() as u64 > limit {
            return Err(StorageError::TooLarge { path: path.to_owned(), limit });
        }
        Ok(content.into())
    }

    async fn put_content(&self, path: &str, content: Bytes) -> Result<()> {
        let full = self.full(path);
        let tmp = self.temp_file().await?;
        let result = async {
            let mut file = fs::File::create(&tmp).await.map_err(|e| io_error(&tmp, e))?;
            file.write_all(&content).await.map_err(|e| io_error(&tmp, e))?;
            file.sync_all().await.map_err(|e| io_error(&tmp, e))?;
            rename_into_place(&tmp, &full).await
        }
        .await;
        if result.is_err() {
            let _ = fs::remove_file(&tmp).await;
        }
        result
    }

    async fn reader(&self, path: &str, offset: u64, len: Option<u64>) -> Result<ByteStream> {
        let full = self.full(path);
        let mut file = fs::File::open(&full).await.map_err(|e| io_error(&full, e))?;
        if offset > 0 {
            file.seek(SeekFrom::Start(offset)).await.map_err(|e| io_error(&full, e))?;
        }
        let stream: ByteStream = match len {
            Some(len) => Box::pin(ReaderStream::with_capacity(file.take(len), READ_CHUNK)),
            None => Box::pin(ReaderStream::with_capacity(file, READ_CHUNK)),
        };
        Ok(stream)
    }

    async fn writer(&self, path: &str) -> Result<Box<dyn FileWriter>> {
        let full = self.full(path);
        create_parent(&full).await?;
        let file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&full)
            .await
            .map_err(|e| io_error(&full, e))?;
        let size = file.metadata().await.map_err(|e| io_error(&full, e))?.len();
        Ok(Box::new(FsWriter { file: BufWriter::with_capacity(WRITE_BUFFER, file), size, path: full }))
    }

    async fn stat(&self, path: &str) -> Result<FileInfo> {
        let full = self.full(path);
        let meta = fs::metadata(&full).await.map_err(|e| io_error(&full, e))?;
        Ok(FileInfo {
            size: if meta.is_dir() { 0 } else { meta.len() },
            modified: meta.modified().map_err(|e| io_error(&full, e))?,
            is_dir: meta.is_dir(),
        })
    }

    async fn list(&self, path: &str) -> Result<Vec<String>> {
        let full = self.full(path);
        let mut entries = fs::read_dir(&full).await.map_err(|e| io_error(&full, e))?;
        let mut names = Vec::new();
        while let Some(entry) = entries.next_entry().await.map_err(|e| io_error(&full, e))? {
            if let Some(name) = entry.file_name().to_str() {
                names.push(name.to_owned());
            }
        }
        Ok(names)
    }

    async fn rename(&self, from: &str, to: &str) -> Result<()> {
        rename_into_place(&self.full(from), &self.full(to)).await
    }

    async fn delete(&self, path: &str) -> Result<()> {
        let full = self.full(path);
        let meta = fs::symlink_metadata(&full).await.map_err(|e| io_error(&full, e))?;
        if meta.is_dir() {
            fs::remove_dir_all(&full).await.map_err(|e| io_error(&full, e))
        } else {
            fs::remove_file(&full).await.map_err(|e| io_error(&full, e))
        }
    }

    async fn prune_empty_dirs(&self, path: &str) -> Result<()> {
        let full = self.full(path);
        tokio::task::spawn_blocking(move || prune(&full))
            .await
            .map_err(|e| StorageError::Io { path: path.to_owned(), source: io::Error::other(e) })?
    }

    async fn check(&self) -> Result<()> {
        // Writable and readable: the same probe a write path would need.
        let probe = self.temp_file().await?;
        fs::write(&probe, b"ok").await.map_err(|e| io_error(&probe, e))?;
        fs::remove_file(&probe).await.map_err(|e| io_error(&probe, e))
    }
}

/// Removes empty directories bottom-up with `rmdir`, which refuses a
/// directory that a concurrent writer has just put something in.
fn prune(dir: &Path) -> Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound || e.kind() == io::ErrorKind::NotADirectory => return Ok(()),
        Err(e) => return Err(io_error(dir, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| io_error(dir, e))?;
        if entry.file_type().map_err(|e| io_error(dir, e))?.is_dir() {
            prune(&entry.path())?;
        }
    }
    match std::fs::remove_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if matches!(e.kind(), io::ErrorKind::DirectoryNotEmpty | io::ErrorKind::NotFound) => Ok(()),
        Err(e) => Err(io_error(dir, e)),
    }
}

/// Appends to one file through a large buffer; `commit` flushes and fsyncs.
struct FsWriter {
    file: BufWriter<fs::File>,
    size: u64,
    path: PathBuf,
}

#[async_trait]
impl FileWriter for FsWriter {
    async fn write(&mut self, chunk: Bytes) -> Result<()> {
        self.file.write_all(&chunk).await.map_err(|e| io_error(&self.path, e))?;
        self.size += chunk.len() as u64;
        Ok(())
    }

    fn size(&self) -> u64 {
        self.size
    }

    async fn close(mut self: Box<Self>) -> Result<()> {
        self.file.flush().await.map_err(|e| io_error(&self.path, e))?;
        self.file.get_ref().sync_data().await.map_err(|e| io_error(&self.path, e))
    }

    async fn commit(self: Box<Self>) -> Result<()> {
        // A file is complete as soon as it is durable.
        self.close().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::TryStreamExt;

    #[tokio::test]
    async fn put_get_list_rename_delete() {
        let dir = tempfile::tempdir().unwrap();
        let d = FilesystemDriver::new(dir.path());
        d.put_content("/a/b/c", Bytes::from_static(b"hello")).await.unwrap();
        assert_eq!(d.get_content("/a/b/c", 5).await.unwrap(), "hello");
        assert!(matches!(d.get_content("/a/b/c", 4).await, Err(StorageError::TooLarge { .. })));
        assert_eq!(d.list("/a/b").await.unwrap(), vec!["c"]);
        let mut w = d.writer("/a/up").await.unwrap();
        w.write(Bytes::from_static(b"012")).await.unwrap();
        w.write(Bytes::from_static(b"345")).await.unwrap();
        assert_eq!(w.size(), 6);
        w.commit().await.unwrap();
        let part: Vec<Bytes> = d.reader("/a/up", 2, Some(3)).await.unwrap().try_collect().await.unwrap();
        assert_eq!(part.concat(), b"234");
        d.rename("/a/up", "/x/y/z").await.unwrap();
        assert_eq!(d.stat("/x/y/z").await.unwrap().size, 6);
        d.delete("/x").await.unwrap();
        assert!(d.stat("/x/y/z").await.unwrap_err().is_not_found());
        d.check().await.unwrap();
    }
}
