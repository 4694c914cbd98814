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
    /// Opens the cache `settings` describe: deletes spool files of fills a
    /// previous process left unfinished and rebuilds the index from the
    /// entries on disk (evicting down to the watermarks, should the bound
    /// have shrunk).
    pub fn open(settings: &NodeCacheSettings, metrics: Arc<Metrics>) -> io::Result<NodeCache> {
        let disk = Disk::new(&settings.path);
        let fills = Arc::new(Fills::new(disk.spool())?);
        let mut index = Index::new(settings.high_bytes, settings.low_bytes);
        let mut evicted = Vec::new();
        let found = disk.scan()?;
        let count = found.len();
        for entry in found {
            evicted.extend(index.insert(entry.digest, entry.size, entry.last_used, false));
        }
        let shared = Arc::new(Shared {
            disk,
            index: Mutex::new(index),
            fills,
            metrics,
            buffers: Arc::new(ReadBuffers::default()),
        });
        shared.evicted(&evicted);
        tracing::info!(
            path = %settings.path.display(),
            entries = count - evicted.len(),
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
                let evicted = shared.lock().insert(digest, size, SystemTime::now(), true);
                shared.evicted(&evicted);
                Ok(())
            })
        })
    }

    /// Deletes the files of entries the index evicted and counts them.
    /// Runs right after the index dropped them, so that a new entry of the
    /// same digest cannot be committed in between and lose its file.
    fn evicted(&self, evicted: &[(Digest, u64)]) {
        for (digest, _) in evicted {
            if let Err(e) = self.disk.remove(digest) {
                tracing::warn!(%digest, error = %e, "could not delete an evicted node cache entry");
            }
        }
        self.metrics
            .nodecache_evictions
            .inc_by(evicted.len() as u64);
        self.update_gauge();
    }

    /// Drops the entry `id` of `digest` and deletes its file.
    fn drop_entry(&self, digest: &Digest, id: u64) {
        if self.lock().remove(digest, id)
            && let Err(e) = self.disk.remove(digest)
        {
            tracing::warn!(%digest, error = %e, "could not delete a damaged node cache entry");
        }
        self.update_gauge();
    }

    fn update_gauge(&self) {
        let stored = self.lock().stored();
        self.metrics
            .nodecache_bytes
            .set(i64::try_from(stored).unwrap_or(i64::MAX));
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
        let evicted = shared.lock().reserve(size);
        shared.evicted(&evicted);
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
