//! The node cache: blobs a node instance served, kept on the node's disk in
//! front of a remote storage driver (S3, Azure, GCS).
//!
//! Every node of a cluster runs an instance over one bucket; without this,
//! every pull on every node reads every layer from the bucket. The cache
//! works by digest in the service layer (drivers never learn what a blob
//! is): a blob GET is answered from local disk when the blob is cached,
//! else it is fetched once through a single-flight [`fill`](crate::fill),
//! streamed to every waiting client while it is written, and kept once its
//! bytes match the digest. Manifests and tags are never cached, so a push
//! through any node is visible on every node at once.
//!
//! Bounded by least recent use with high and low watermarks: room for a
//! fill is made before it starts, so the directory stays within its bound
//! even while fills run; an entry being read is never evicted. Entries
//! survive a restart (the index is rebuilt from the files). Each entry is
//! checked against its digest before it is first served by a process (a
//! fill checked it as it wrote it; one found at start is hashed whole
//! before its first byte goes out), so a file damaged on disk while the
//! process was down is dropped and fetched again, and no client gets it.

mod disk;
mod index;

use std::fs::File;
use std::future::Future;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

use futures_util::{StreamExt, stream};

use crate::config::NodeCacheSettings;
use crate::digest::Digest;
use crate::fill::{Commit, Fills, Source};
use crate::metrics::Metrics;
use crate::storage::ByteStream;
use crate::storage::read_buffers::{self, ReadBuffers};
use disk::Disk;
use index::Index;

/// A node's blob cache.
pub struct NodeCache {
    shared: Arc<Shared>,
}

/// What the cache's handles and running fills share.
struct Shared {
    disk: Disk,
    index: Mutex<Index>,
    fills: Arc<Fills>,
    metrics: Arc<Metrics>,
    buffers: Arc<ReadBuffers>,
}

impl NodeCache {
    /// Opens the cache `settings` describe: creates its directory if
    /// missing (loading the configuration creates nothing), deletes spool
    /// files of fills a previous process left unfinished and rebuilds the
    /// index from the entries on disk (evicting down to the watermarks,
    /// should the bound have shrunk).
    pub fn open(settings: &NodeCacheSettings, metrics: Arc<Metrics>) -> io::Result<NodeCache> {
        std::fs::create_dir_all(&settings.path)?;
        let disk = Disk::new(&settings.path);
        let fills = Arc::new(Fills::new(disk.spool())?);
        let found = disk.scan()?;
        let shared = Arc::new(Shared {
            disk,
            index: Mutex::new(Index::new(settings.high_bytes, settings.low_bytes)),
            fills,
            metrics,
            buffers: Arc::new(ReadBuffers::default()),
        });
        let count = found.len();
        let evicted = shared.change(|index| {
            let mut evicted = Vec::new();
            for entry in found {
                evicted.extend(index.insert(entry.digest, entry.size, entry.last_used, false));
            }
            evicted
        });
        tracing::info!(
            path = %settings.path.display(),
            entries = count - evicted,
            bytes = shared.lock().stored(),
            "node cache opened"
        );
        Ok(NodeCache { shared })
    }

    /// Whether a blob of `size` bytes may be cached (it fits under the
    /// high watermark); larger ones are served straight from storage.
    pub fn admits(&self, size: u64) -> bool {
        self.shared.lock().admits(size)
    }

    /// The cached blob `digest`, pinned until the returned handle and every
    /// stream read from it are dropped; `None` (a miss) when it is not
    /// cached, or its file turned out damaged (the entry is then dropped).
    pub async fn get(&self, digest: &Digest) -> Option<CachedBlob> {
        let pinned = self.shared.lock().pin(digest, SystemTime::now());
        let Some(pinned) = pinned else {
            self.shared.metrics.nodecache_misses.inc();
            return None;
        };
        let pin = Arc::new(Pin {
            shared: self.shared.clone(),
            digest: digest.clone(),
            id: pinned.id,
        });
        let shared = self.shared.clone();
        let checked = digest.clone();
        let opened = tokio::task::spawn_blocking(move || {
            shared.disk.open(&checked, pinned.size, !pinned.verified)
        })
        .await;
        match opened {
            Ok(Ok(file)) => {
                if !pinned.verified {
                    self.shared.lock().verified(digest, pinned.id);
                }
                self.shared.metrics.nodecache_hits.inc();
                Some(CachedBlob {
                    size: pinned.size,
                    file: Arc::new(file),
                    pin,
                })
            }
            Ok(Err(e)) => {
                tracing::warn!(%digest, error = %e, "dropping a damaged node cache entry");
                self.shared.metrics.nodecache_corrupt.inc();
                self.shared.drop_entry(digest, pinned.id);
                self.shared.metrics.nodecache_misses.inc();
                None
            }
            Err(e) => {
                tracing::warn!(%digest, error = %e, "checking a node cache entry failed");
                self.shared.metrics.nodecache_misses.inc();
                None
            }
        }
    }

    /// Streams the blob `digest` of `size` bytes through a fill: joins the
    /// one running, or starts one reading `open` (the driver's stream of
    /// the blob), after making room for it. The entry is kept once the
    /// bytes match the digest. Fails before any byte when the source
    /// cannot be opened.
    pub async fn fill<O, F>(&self, digest: &Digest, size: u64, open: O) -> io::Result<ByteStream>
    where
        O: FnOnce() -> F,
        F: Future<Output = io::Result<ByteStream>> + Send + 'static,
    {
        let shared = self.shared.clone();
        let source = open();
        let start = move || async move {
            let reservation = Reservation::new(shared, size);
            let body = source.await?;
            // The reservation lasts as long as the fill reads the source;
            // the committed entry then takes its place.
            let body = body.map(move |chunk| {
                let _ = &reservation;
                chunk
            });
            Ok(Source {
                size,
                body: Box::pin(body),
            })
        };
        let read = self
            .shared
            .fills
            .read(digest, start, self.shared.commit(digest.clone()))
            .await?;
        Ok(read.body)
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The step that keeps a verified spool file as the entry of `digest`.
    fn commit(self: &Arc<Self>, digest: Digest) -> Commit {
        let shared = self.clone();
        Box::new(move |spool, size| {
            Box::pin(async move {
                let kept = shared.clone();
                let name = digest.clone();
                tokio::task::spawn_blocking(move || kept.disk.keep(&spool, &name))
                    .await
                    .map_err(io::Error::other)??;
                shared.change(|index| index.insert(digest, size, SystemTime::now(), true));
                Ok(())
            })
        })
    }

    /// Applies `change` to the index and deletes the files of the entries
    /// it evicted, under the index's lock, so that no entry of the same
    /// digest can be committed in between and lose its file. Returns how
    /// many were evicted.
    fn change(&self, change: impl FnOnce(&mut Index) -> Vec<(Digest, u64)>) -> usize {
        let mut index = self.lock();
        let evicted = change(&mut index);
        for (digest, _) in &evicted {
            if let Err(e) = self.disk.remove(digest) {
                tracing::warn!(%digest, error = %e, "could not delete an evicted node cache entry");
            }
        }
        self.metrics
            .nodecache_evictions
            .inc_by(evicted.len() as u64);
        self.show_bytes(&index);
        evicted.len()
    }

    /// Sets the bytes gauge from `index`.
    fn show_bytes(&self, index: &Index) {
        self.metrics
            .nodecache_bytes
            .set(i64::try_from(index.stored()).unwrap_or(i64::MAX));
    }

    /// Drops the entry `id` of `digest` (found damaged) and deletes its file.
    fn drop_entry(&self, digest: &Digest, id: u64) {
        let mut index = self.lock();
        if index.remove(digest, id)
            && let Err(e) = self.disk.remove(digest)
        {
            tracing::warn!(%digest, error = %e, "could not delete a damaged node cache entry");
        }
        self.show_bytes(&index);
    }
}

/// Room set aside in the cache for one fill, given back when dropped.
struct Reservation {
    shared: Arc<Shared>,
    size: u64,
}

impl Reservation {
    /// Reserves `size` bytes, evicting what must go to make room.
    fn new(shared: Arc<Shared>, size: u64) -> Reservation {
        shared.change(|index| index.reserve(size));
        Reservation { shared, size }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.shared.lock().release(self.size);
    }
}

/// Keeps an entry from eviction while it is read.
struct Pin {
    shared: Arc<Shared>,
    digest: Digest,
    id: u64,
}

impl Drop for Pin {
    fn drop(&mut self) {
        self.shared.lock().unpin(&self.digest, self.id);
    }
}

/// A cached blob, open and pinned.
pub struct CachedBlob {
    size: u64,
    file: Arc<File>,
    pin: Arc<Pin>,
}

impl CachedBlob {
    /// The blob's size.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Streams `len` bytes (or to the end) from `offset` with positioned
    /// reads; the entry stays pinned until the stream is dropped.
    pub fn read(self, offset: u64, len: Option<u64>) -> ByteStream {
        let end = len.map_or(self.size, |len| offset.saturating_add(len).min(self.size));
        let buffers = self.pin.shared.buffers.clone();
        let CachedBlob { file, pin, .. } = self;
        let chunks = stream::try_unfold(offset, move |at| {
            let (file, buffers) = (file.clone(), buffers.clone());
            let _ = &pin;
            async move {
                let want = end.saturating_sub(at).min(read_buffers::CHUNK as u64) as usize;
                if want == 0 {
                    return Ok(None);
                }
                let chunk = tokio::task::spawn_blocking(move || buffers.read(&file, at, want))
                    .await
                    .map_err(io::Error::other)??;
                Ok(Some((chunk, at + want as u64)))
            }
        });
        Box::pin(chunks)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Algorithm;
    use bytes::Bytes;
    use futures_util::TryStreamExt;
    use std::time::Duration;

    fn blob(n: u8, len: usize) -> (Bytes, Digest) {
        let bytes = Bytes::from(vec![n; len]);
        let digest = Digest::of(Algorithm::Sha256, &bytes);
        (bytes, digest)
    }

    fn settings(dir: &std::path::Path, max: u64) -> NodeCacheSettings {
        NodeCacheSettings {
            path: dir.to_owned(),
            max_bytes: max,
            high_bytes: max * 9 / 10,
            low_bytes: max * 8 / 10,
        }
    }

    /// Fills `bytes` through `cache` and waits until the entry is kept.
    async fn fill(cache: &NodeCache, bytes: &Bytes, digest: &Digest) {
        let source = bytes.clone();
        let body = cache
            .fill(digest, bytes.len() as u64, move || async move {
                let body: ByteStream = Box::pin(stream::iter([Ok(source)]));
                Ok(body)
            })
            .await
            .unwrap();
        let read: Vec<Bytes> = body.try_collect().await.unwrap();
        assert_eq!(read.concat(), bytes.to_vec());
        for _ in 0..200 {
            if !cache.shared.fills.is_running(digest) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("the fill did not finish");
    }

    #[tokio::test]
    async fn an_entry_being_read_survives_eviction_and_entries_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let cache = NodeCache::open(&settings(dir.path(), 100), Arc::new(Metrics::new())).unwrap();
        let (a, da) = blob(1, 40);
        let (b, db) = blob(2, 40);
        let (c, dc) = blob(3, 40);
        fill(&cache, &a, &da).await;
        let reading = cache.get(&da).await.unwrap();
        // b and c do not fit beside a: a is the least recently used, but pinned.
        fill(&cache, &b, &db).await;
        fill(&cache, &c, &dc).await;
        assert!(cache.shared.disk.path(&da).is_file());
        assert!(
            !cache.shared.disk.path(&db).exists(),
            "b was evicted instead"
        );
        let body: Vec<Bytes> = reading.read(0, None).try_collect().await.unwrap();
        assert_eq!(body.concat(), a.to_vec());
        let part: Vec<Bytes> = cache
            .get(&dc)
            .await
            .unwrap()
            .read(5, Some(10))
            .try_collect()
            .await
            .unwrap();
        assert_eq!(part.concat(), c[5..15].to_vec());
        drop(cache);

        // A new process finds both entries; a damaged one is dropped when
        // first served.
        let mut damaged = std::fs::read(dir.path().join("blobs/sha256").join(dc.hex())).unwrap();
        damaged[0] ^= 1;
        std::fs::write(dir.path().join("blobs/sha256").join(dc.hex()), damaged).unwrap();
        let metrics = Arc::new(Metrics::new());
        let cache = NodeCache::open(&settings(dir.path(), 100), metrics.clone()).unwrap();
        assert_eq!(metrics.nodecache_bytes.get(), 80);
        assert!(cache.get(&da).await.is_some());
        assert!(cache.get(&dc).await.is_none());
        assert!(!cache.shared.disk.path(&dc).exists());
        assert_eq!(metrics.nodecache_corrupt.get(), 1);
        assert_eq!(metrics.nodecache_bytes.get(), 40);
        assert_eq!(
            (metrics.nodecache_hits.get(), metrics.nodecache_misses.get()),
            (1, 1)
        );
    }

    #[tokio::test]
    async fn opening_creates_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/cache");
        NodeCache::open(&settings(&path, 100), Arc::new(Metrics::new())).unwrap();
        assert!(path.is_dir());
        std::fs::write(dir.path().join("file"), b"").unwrap();
        let blocked = settings(&dir.path().join("file/cache"), 100);
        assert!(NodeCache::open(&blocked, Arc::new(Metrics::new())).is_err());
    }
}
