//! Single-flight fills: one copy of a blob from a slow source into a local
//! spool file, read by every client that asks for it while it is written.
//!
//! A node instance that lacks a blob fetches it from elsewhere (an upstream
//! registry, a bucket). When eight pods on the node start at once, eight
//! requests miss the same blob in the same second; fetching it eight times
//! wastes the upstream's bandwidth and rate limits, and making seven wait for
//! the first to finish makes them wait for a whole layer before their first
//! byte. Here the first request starts one fill and every request joins it:
//! the fill writes the source's bytes to a spool file on local disk, and each
//! client streams that file from its start, following the fill as it grows.
//! Nothing is held in memory beyond one chunk per reader.
//!
//! A fill answers its clients only once the source has started answering
//! (its size is known), so a source that cannot be reached fails every
//! waiting request before any byte of a response is sent: a container
//! runtime then moves on to its next host at once. A source that fails later
//! (a truncated body, a wrong digest) ends every reader's stream with an
//! error, which aborts their responses; the bytes are verified against the
//! digest before the fill's `commit` makes them visible anywhere, so a bad
//! source never enters a cache. Each reader's last chunk waits for that
//! check, so a client that counts bytes (`Content-Length`) never receives a
//! whole body of bad ones.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::future::Future;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use futures_util::{StreamExt, stream};
use tokio::sync::{mpsc, watch};

use crate::digest::{Digest, Hasher};
use crate::storage::ByteStream;
use crate::storage::read_buffers::{CHUNK, ReadBuffers};

/// Most arrived pieces of a source written to the spool file at once.
const BATCH: usize = 32;

/// Most pieces of a source received ahead of the spool writer (a piece is a
/// few KiB to a few hundred).
const PIECES: usize = 64;

/// What a source gives a fill: the blob's size and its bytes.
pub struct Source {
    /// The size the source announced; a body of another length fails the fill.
    pub size: u64,
    /// The blob's bytes.
    pub body: ByteStream,
}

/// A boxed future, as the commit step returns.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// The step that makes a verified spool file visible: it gets the spool's
/// path and size, and may move or copy it. The fill stays joinable (from the
/// spool) until it returns, so no request starts a second fetch meanwhile.
pub type Commit = Box<dyn FnOnce(PathBuf, u64) -> BoxFuture<io::Result<()>> + Send>;

/// Where a fill stands, as its readers see it.
#[derive(Debug, Clone)]
enum Progress {
    /// The source is being opened.
    Opening,
    /// `written` of `size` bytes are in the spool file.
    Writing { size: u64, written: u64 },
    /// Every byte is written and matches the digest.
    Verified { size: u64 },
    /// The fill failed: the kind of the error (a source's `NotFound` stays
    /// one for every reader) and a message saying why.
    Failed(io::ErrorKind, Arc<str>),
}

/// One blob being fetched.
struct Fill {
    /// The spool file, opened before the fill is announced.
    file: Arc<File>,
    /// The fill's progress, watched by its readers.
    progress: watch::Receiver<Progress>,
}

/// The fills of one spool directory.
pub struct Fills {
    /// Where spool files are written.
    dir: PathBuf,
    /// Fills running now, by digest.
    running: Mutex<HashMap<Digest, Arc<Fill>>>,
    /// Distinguishes spool files of successive fills of one digest.
    serial: AtomicU64,
    /// The buffers readers read the spool files into.
    buffers: Arc<ReadBuffers>,
}

/// A blob streamed from a fill.
pub struct FillRead {
    /// The blob's size.
    pub size: u64,
    /// Its bytes, from the first; an error when the fill fails.
    pub body: ByteStream,
    /// Whether this request started the fill (a miss) or joined one.
    pub started: bool,
}

impl Fills {
    /// Fills spooling in `dir`, created if missing. Spool files left by a
    /// process that died mid-fill are deleted: they were never committed.
    pub fn new(dir: impl Into<PathBuf>) -> io::Result<Fills> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir)?;
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                std::fs::remove_file(entry.path())?;
            }
        }
        Ok(Fills {
            dir,
            running: Mutex::new(HashMap::new()),
            serial: AtomicU64::new(0),
            buffers: Arc::new(ReadBuffers::default()),
        })
    }

    /// The directory spool files are written in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether a fill of `digest` is running.
    pub fn is_running(&self, digest: &Digest) -> bool {
        self.lock().contains_key(digest)
    }

    /// Streams the blob `digest`: joins the fill of it that is running, or
    /// starts one with `open` (which runs only then) and `commit` (run once
    /// the bytes are verified). Returns once the source has answered, or
    /// with the source's error before any byte.
    pub async fn read<O, F>(
        self: &Arc<Self>,
        digest: &Digest,
        open: O,
        commit: Commit,
    ) -> io::Result<FillRead>
    where
        O: FnOnce() -> F,
        F: Future<Output = io::Result<Source>> + Send + 'static,
    {
        let (fill, started) = {
            let mut running = self.lock();
            match running.get(digest) {
                Some(fill) => (fill.clone(), false),
                None => {
                    let path = self.dir.join(format!(
                        "{}-{}.{}",
                        digest.algorithm().name(),
                        digest.hex(),
                        self.serial.fetch_add(1, Ordering::Relaxed)
                    ));
                    let file = OpenOptions::new()
                        .read(true)
                        .write(true)
                        .create_new(true)
                        .open(&path)?;
                    let file = Arc::new(file);
                    let (progress, watcher) = watch::channel(Progress::Opening);
                    let fill = Arc::new(Fill {
                        file: file.clone(),
                        progress: watcher,
                    });
                    running.insert(digest.clone(), fill.clone());
                    let run = Run {
                        fills: self.clone(),
                        digest: digest.clone(),
                        path,
                        file,
                        progress,
                    };
                    tokio::spawn(run.run(open(), commit));
                    (fill, true)
                }
            }
        };
        let mut progress = fill.progress.clone();
        let size = match &*progress
            .wait_for(|p| !matches!(p, Progress::Opening))
            .await
            .map_err(|_| io::Error::other("the fill ended without a result"))?
        {
            Progress::Writing { size, .. } | Progress::Verified { size } => *size,
            Progress::Failed(kind, why) => return Err(io::Error::new(*kind, why.to_string())),
            Progress::Opening => return Err(io::Error::other("the fill did not start")),
        };
        Ok(FillRead {
            size,
            body: follow(fill.file.clone(), self.buffers.clone(), progress, size),
            started,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Digest, Arc<Fill>>> {
        self.running.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Streams the spool `file` from its start, never past what the fill has
/// written, until `size` bytes are read and verified.
fn follow(
    file: Arc<File>,
    buffers: Arc<ReadBuffers>,
    progress: watch::Receiver<Progress>,
    size: u64,
) -> ByteStream {
    let chunks = stream::try_unfold((0u64, progress), move |(at, mut progress)| {
        let (file, buffers) = (file.clone(), buffers.clone());
        async move {
            if at == size {
                // Every byte is sent; the stream ends cleanly only once the
                // digest matched, so a client never takes bad bytes as whole.
                verified(&mut progress).await?;
                return Ok(None);
            }
            let available = {
                let state = progress
                    .wait_for(|p| match p {
                        Progress::Writing { written, .. } => *written > at,
                        _ => true,
                    })
                    .await
                    .map_err(|_| io::Error::other("the fill ended without a result"))?;
                match &*state {
                    Progress::Writing { written, .. } => *written,
                    Progress::Verified { size } => *size,
                    Progress::Failed(kind, why) => {
                        return Err(io::Error::new(*kind, why.to_string()));
                    }
                    Progress::Opening => at,
                }
            };
            let want = (available - at).min(CHUNK as u64) as usize;
            let chunk = tokio::task::spawn_blocking(move || buffers.read(&file, at, want))
                .await
                .map_err(io::Error::other)??;
            if at + want as u64 == size {
                // The last chunk waits for the digest: a client that counts
                // bytes (Content-Length) must not get a whole body of bad ones.
                verified(&mut progress).await?;
            }
            Ok(Some((chunk, (at + want as u64, progress))))
        }
    });
    Box::pin(chunks)
}

/// Waits until the fill is verified; its error when it failed instead.
async fn verified(progress: &mut watch::Receiver<Progress>) -> io::Result<()> {
    let done = progress
        .wait_for(|p| matches!(p, Progress::Verified { .. } | Progress::Failed(..)))
        .await
        .map_err(|_| io::Error::other("the fill ended without a result"))?;
    match &*done {
        Progress::Failed(kind, why) => Err(io::Error::new(*kind, why.to_string())),
        _ => Ok(()),
    }
}

/// The task that copies one source into its spool file.
struct Run {
    fills: Arc<Fills>,
    digest: Digest,
    path: PathBuf,
    file: Arc<File>,
    progress: watch::Sender<Progress>,
}

impl Run {
    async fn run(self, open: impl Future<Output = io::Result<Source>>, commit: Commit) {
        match self.copy(open).await {
            Ok(size) => {
                // Readers finish as soon as the digest matched; the spool is
                // made durable only for the commit, which may keep the file.
                self.progress.send_replace(Progress::Verified { size });
                let file = self.file.clone();
                let synced = tokio::task::spawn_blocking(move || file.sync_data())
                    .await
                    .map_err(io::Error::other)
                    .and_then(|r| r);
                let kept = match synced {
                    Ok(()) => commit(self.path.clone(), size).await,
                    Err(e) => Err(e),
                };
                if let Err(e) = kept {
                    tracing::warn!(digest = %self.digest, error = %e, "could not keep a fetched blob");
                }
            }
            Err(e) => {
                tracing::warn!(digest = %self.digest, error = %e, "fetching a blob failed");
                self.progress
                    .send_replace(Progress::Failed(e.kind(), Arc::from(e.to_string())));
            }
        }
        // Readers keep the open file; the name goes (a commit may have moved it).
        self.fills.lock().remove(&self.digest);
        if let Err(e) = std::fs::remove_file(&self.path)
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(path = %self.path.display(), error = %e, "could not remove a spool file");
        }
    }

    /// Writes the source into the spool file, returning its verified size.
    ///
    /// Receiving, hashing and writing overlap: this task takes the source's
    /// pieces off the connection and hands them over a bounded channel to a
    /// blocking thread, which hashes and writes them. Done in turn on one
    /// thread, hashing alone kept the connection idle for a third of a fill.
    async fn copy(&self, open: impl Future<Output = io::Result<Source>>) -> io::Result<u64> {
        let Source { size, body } = open.await?;
        self.progress
            .send_replace(Progress::Writing { size, written: 0 });
        let (pieces, arrived) = mpsc::channel(PIECES);
        let spool = Spool {
            file: self.file.clone(),
            size,
            progress: self.progress.clone(),
            hasher: Hasher::new(self.digest.algorithm()),
        };
        let writer = tokio::task::spawn_blocking(move || spool.write(arrived));
        let received = receive(body, pieces).await;
        // The writer ends once the pieces stop; it is awaited even when the
        // source failed, so no progress is reported after this returns.
        let written = writer.await.map_err(io::Error::other)?;
        received?;
        let (written, actual) = written?;
        if written != size {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("the source ended after {written} of {size} bytes"),
            ));
        }
        if actual != self.digest {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "the source's bytes have digest {actual}, not {}",
                    self.digest
                ),
            ));
        }
        Ok(size)
    }
}

/// Passes the source's pieces to the spool writer until the source ends,
/// fails, or the writer stops taking them (it failed: its error says why).
async fn receive(mut body: ByteStream, pieces: mpsc::Sender<Bytes>) -> io::Result<()> {
    while let Some(piece) = body.next().await {
        if pieces.send(piece?).await.is_err() {
            break;
        }
    }
    Ok(())
}

/// The blocking side of a fill: hashes and writes the pieces it is handed.
struct Spool {
    file: Arc<File>,
    /// The size the source announced.
    size: u64,
    progress: watch::Sender<Progress>,
    hasher: Hasher,
}

impl Spool {
    /// Hashes and writes every piece that arrives, reporting progress after
    /// each batch; returns how many bytes were written and their digest.
    fn write(mut self, mut arrived: mpsc::Receiver<Bytes>) -> io::Result<(u64, Digest)> {
        let mut written = 0u64;
        let mut batch = Vec::with_capacity(BATCH);
        // The pieces that have already arrived go to the spool in one batch,
        // which also wakes the readers once instead of once per piece.
        while arrived.blocking_recv_many(&mut batch, BATCH) > 0 {
            let len: u64 = batch.iter().map(|piece| piece.len() as u64).sum();
            if written + len > self.size {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "the source sent more than the {} bytes it announced",
                        self.size
                    ),
                ));
            }
            for piece in batch.drain(..) {
                self.hasher.update(&piece);
                self.file.write_all_at(&piece, written)?;
                written += piece.len() as u64;
            }
            self.progress.send_replace(Progress::Writing {
                size: self.size,
                written,
            });
        }
        Ok((written, self.hasher.finish()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Algorithm;
    use futures_util::TryStreamExt;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    fn blob(len: usize) -> (Bytes, Digest) {
        let bytes: Bytes = (0..len).map(|i| (i % 251) as u8).collect::<Vec<_>>().into();
        let digest = Digest::of(Algorithm::Sha256, &bytes);
        (bytes, digest)
    }

    /// A source that sends `bytes` in small pieces with pauses, announcing `size`.
    fn slow_source(bytes: Bytes, size: u64) -> io::Result<Source> {
        let pieces: Vec<io::Result<Bytes>> = bytes
            .chunks(4096)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        let body = stream::iter(pieces).then(|piece| async move {
            tokio::time::sleep(Duration::from_millis(1)).await;
            piece
        });
        Ok(Source {
            size,
            body: Box::pin(body),
        })
    }

    fn keep(into: PathBuf) -> Commit {
        Box::new(move |spool, _size| Box::pin(async move { std::fs::rename(spool, into) }))
    }

    #[tokio::test]
    async fn concurrent_readers_share_one_fetch_and_get_every_byte() {
        let dir = tempfile::tempdir().unwrap();
        let fills = Arc::new(Fills::new(dir.path().join("spool")).unwrap());
        let (bytes, digest) = blob(300_000);
        let opened = Arc::new(AtomicUsize::new(0));
        let kept = dir.path().join("kept");
        let mut readers = Vec::new();
        for _ in 0..8 {
            let (fills, digest, bytes, opened, kept) = (
                fills.clone(),
                digest.clone(),
                bytes.clone(),
                opened.clone(),
                kept.clone(),
            );
            readers.push(tokio::spawn(async move {
                let read = fills
                    .read(
                        &digest,
                        move || {
                            opened.fetch_add(1, Ordering::SeqCst);
                            let size = bytes.len() as u64;
                            async move { slow_source(bytes, size) }
                        },
                        keep(kept),
                    )
                    .await
                    .unwrap();
                let body: Vec<Bytes> = read.body.try_collect().await.unwrap();
                (read.size, body.concat(), read.started)
            }));
        }
        let mut starters = 0;
        for reader in readers {
            let (size, body, started) = reader.await.unwrap();
            assert_eq!(size, bytes.len() as u64);
            assert_eq!(body, bytes);
            starters += usize::from(started);
        }
        assert_eq!(opened.load(Ordering::SeqCst), 1);
        assert_eq!(starters, 1);
        // The commit ran and the spool directory is empty again.
        for _ in 0..100 {
            if !fills.is_running(&digest) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(std::fs::read(&kept).unwrap(), bytes);
        assert_eq!(std::fs::read_dir(fills.dir()).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn a_source_that_cannot_open_fails_before_any_byte() {
        let dir = tempfile::tempdir().unwrap();
        let fills = Arc::new(Fills::new(dir.path()).unwrap());
        let (_, digest) = blob(10);
        let result = fills
            .read(
                &digest,
                || async { Err(io::Error::other("upstream unreachable")) },
                keep(dir.path().join("never")),
            )
            .await;
        let Err(err) = result else {
            panic!("a source that cannot open gave a body")
        };
        assert!(err.to_string().contains("unreachable"));
        // The kind of the source's error reaches the reader.
        let result = fills
            .read(
                &digest,
                || async { Err(io::Error::new(io::ErrorKind::NotFound, "no such blob")) },
                keep(dir.path().join("never")),
            )
            .await;
        assert_eq!(
            result.err().map(|e| e.kind()),
            Some(io::ErrorKind::NotFound)
        );
        assert!(!dir.path().join("never").exists());
    }

    #[tokio::test]
    async fn wrong_digest_and_short_bodies_end_the_stream_with_an_error_and_commit_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let fills = Arc::new(Fills::new(dir.path().join("spool")).unwrap());
        let (bytes, _) = blob(50_000);
        let (_, other) = blob(50_001);
        let kept = dir.path().join("kept");
        // Right length, wrong content.
        let read = fills
            .read(
                &other,
                || {
                    let size = bytes.len() as u64;
                    let bytes = bytes.clone();
                    async move { slow_source(bytes, size) }
                },
                keep(kept.clone()),
            )
            .await
            .unwrap();
        let err = read.body.try_collect::<Vec<_>>().await.unwrap_err();
        assert!(err.to_string().contains("digest"), "{err}");
        // Truncated: announces more than it sends.
        let (bytes, digest) = blob(50_000);
        let read = fills
            .read(
                &digest,
                || async move { slow_source(bytes, 60_000) },
                keep(kept.clone()),
            )
            .await
            .unwrap();
        let err = read.body.try_collect::<Vec<_>>().await.unwrap_err();
        assert!(err.to_string().contains("ended after"), "{err}");
        assert!(!kept.exists());
    }

    #[test]
    fn leftover_spool_files_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("sha256-abc.0"), b"partial").unwrap();
        let fills = Fills::new(dir.path()).unwrap();
        assert_eq!(std::fs::read_dir(fills.dir()).unwrap().count(), 0);
    }
}
