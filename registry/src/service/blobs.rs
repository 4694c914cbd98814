//! Blob reads, deletes and cross-repository mounts.
//!
//! A blob is served through a repository only when that repository links it
//! (as a layer or as a manifest revision), so repositories cannot read each
//! other's content by guessing digests.

use std::io;

use crate::digest::Digest;
use crate::error::{Code, RegistryError, Result};
use crate::layout;
use crate::names::RepoName;
use crate::nodecache::NodeCache;
use crate::storage::{ByteStream, StorageError};

use super::Registry;

/// A byte range requested with an HTTP `Range` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobRange {
    /// `bytes=a-b`: from `a` to `b` inclusive (clamped to the end).
    Between(u64, u64),
    /// `bytes=a-`: from `a` to the end.
    From(u64),
    /// `bytes=-n`: the last `n` bytes.
    Suffix(u64),
}

impl BlobRange {
    /// The inclusive byte positions this range selects in a blob of `size`
    /// bytes, or `None` when it selects nothing.
    pub fn resolve(self, size: u64) -> Option<(u64, u64)> {
        let last = size.checked_sub(1)?;
        match self {
            BlobRange::Between(a, b) if a <= b && a <= last => Some((a, b.min(last))),
            BlobRange::From(a) if a <= last => Some((a, last)),
            BlobRange::Suffix(n) if n > 0 => Some((size.saturating_sub(n), last)),
            _ => None,
        }
    }
}

/// The positions `range` selects in a blob of `size` bytes, or
/// RANGE_INVALID when it selects none.
fn satisfiable(range: Option<BlobRange>, size: u64) -> Result<Option<(u64, u64)>> {
    range
        .map(|r| {
            r.resolve(size).ok_or_else(|| {
                RegistryError::new(
                    Code::RangeInvalid,
                    format!("range not satisfiable for a blob of {size} bytes"),
                )
            })
        })
        .transpose()
}

/// The offset and length of a read of the inclusive `range`.
fn span(range: Option<(u64, u64)>) -> (u64, Option<u64>) {
    match range {
        Some((a, b)) => (a, Some(b - a + 1)),
        None => (0, None),
    }
}

fn unknown(repo: &RepoName, digest: &Digest) -> RegistryError {
    RegistryError::new(
        Code::BlobUnknown,
        format!("blob {digest} is unknown to {repo}"),
    )
}

/// A blob being read.
pub struct BlobRead {
    /// Total size of the blob.
    pub size: u64,
    /// The inclusive range served, for a partial read.
    pub range: Option<(u64, u64)>,
    /// The bytes.
    pub body: ByteStream,
}

impl Registry {
    /// Whether `repo` links the blob `digest`, as a layer or as a manifest.
    pub(super) async fn is_linked(&self, repo: &RepoName, digest: &Digest) -> Result<bool> {
        if self
            .read_link(&layout::layer_link(repo, digest))
            .await?
            .as_ref()
            == Some(digest)
        {
            return Ok(true);
        }
        Ok(self
            .read_link(&layout::revision_link(repo, digest))
            .await?
            .as_ref()
            == Some(digest))
    }

    /// BLOB_UNKNOWN unless `repo` links the blob `digest`.
    async fn ensure_linked(&self, repo: &RepoName, digest: &Digest) -> Result<()> {
        if self.is_linked(repo, digest).await? {
            Ok(())
        } else {
            Err(unknown(repo, digest))
        }
    }

    /// The size of a stored blob, or `None` when its data is absent.
    pub(super) async fn stored_blob_size(&self, digest: &Digest) -> Result<Option<u64>> {
        match self.storage.stat(&layout::blob_data(digest)).await {
            Ok(info) if !info.is_dir => Ok(Some(info.size)),
            Ok(_) => Ok(None),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The size of a blob that `repo` links, or BLOB_UNKNOWN. Records a
    /// touch: the client now believes the blob is present.
    pub async fn blob_size(&self, repo: &RepoName, digest: &Digest) -> Result<u64> {
        self.ensure_linked(repo, digest).await?;
        let size = self
            .stored_blob_size(digest)
            .await?
            .ok_or_else(|| unknown(repo, digest))?;
        self.touch(digest).await;
        Ok(size)
    }

    /// A URL to fetch a blob that `repo` links directly from the backend
    /// (`head`: for a HEAD request), when the backend redirects. With a
    /// node cache, GETs are never redirected: the node serves them.
    pub async fn blob_redirect(
        &self,
        repo: &RepoName,
        digest: &Digest,
        head: bool,
    ) -> Result<Option<String>> {
        if !head && self.node_cache.is_some() {
            return Ok(None);
        }
        self.blob_size(repo, digest).await?;
        Ok(self
            .storage
            .redirect_url(&layout::blob_data(digest), head)
            .await?)
    }

    /// Streams a blob (or the requested range of it) that `repo` links,
    /// through the node cache when there is one.
    pub async fn blob_get(
        &self,
        repo: &RepoName,
        digest: &Digest,
        range: Option<BlobRange>,
    ) -> Result<BlobRead> {
        if let Some(cache) = &self.node_cache {
            return self.cached_blob_get(cache, repo, digest, range).await;
        }
        if range.is_some() {
            let size = self.blob_size(repo, digest).await?;
            return self.stored_blob_get(digest, size, range).await;
        }
        // A whole blob: its data opened with its size, one request on an
        // object store instead of a stat and a GET.
        self.ensure_linked(repo, digest).await?;
        let (size, body) = match self.storage.open(&layout::blob_data(digest)).await {
            Ok(opened) => opened,
            Err(e) if e.is_not_found() => return Err(unknown(repo, digest)),
            Err(e) => return Err(e.into()),
        };
        self.touch(digest).await;
        Ok(BlobRead {
            size,
            range: None,
            body,
        })
    }

    /// Streams a blob of `size` bytes (or a range of it) from storage.
    async fn stored_blob_get(
        &self,
        digest: &Digest,
        size: u64,
        range: Option<BlobRange>,
    ) -> Result<BlobRead> {
        let range = satisfiable(range, size)?;
        let (offset, len) = span(range);
        let body = self
            .storage
            .reader(&layout::blob_data(digest), offset, len)
            .await
            .map_err(|e| {
                if e.is_not_found() {
                    RegistryError::new(Code::BlobUnknown, format!("blob {digest} vanished"))
                } else {
                    e.into()
                }
            })?;
        Ok(BlobRead { size, range, body })
    }

    /// [`blob_get`](Self::blob_get) through the node cache: a cached blob
    /// (or range) from local disk; an uncached whole blob through a fill
    /// that keeps it; an uncached range, or a blob too large for the cache,
    /// straight from storage.
    async fn cached_blob_get(
        &self,
        cache: &NodeCache,
        repo: &RepoName,
        digest: &Digest,
        range: Option<BlobRange>,
    ) -> Result<BlobRead> {
        self.ensure_linked(repo, digest).await?;
        if let Some(blob) = cache.get(digest).await {
            self.touch(digest).await;
            let size = blob.size();
            let range = satisfiable(range, size)?;
            let (offset, len) = span(range);
            return Ok(BlobRead {
                size,
                range,
                body: blob.read(offset, len),
            });
        }
        let size = self
            .stored_blob_size(digest)
            .await?
            .ok_or_else(|| unknown(repo, digest))?;
        self.touch(digest).await;
        if range.is_some() || !cache.admits(size) {
            return self.stored_blob_get(digest, size, range).await;
        }
        let storage = self.storage.clone();
        let path = layout::blob_data(digest);
        let body = cache
            .fill(digest, size, move || async move {
                storage
                    .reader(&path, 0, None)
                    .await
                    .map_err(io::Error::other)
            })
            .await
            .map_err(|e| {
                RegistryError::from(StorageError::Io {
                    path: layout::blob_data(digest),
                    source: e,
                })
            })?;
        Ok(BlobRead {
            size,
            range: None,
            body,
        })
    }

    /// Unlinks a blob from `repo` (the data stays for other repositories
    /// until garbage collection).
    pub async fn blob_delete(&self, repo: &RepoName, digest: &Digest) -> Result<()> {
        self.ensure_delete_enabled()?;
        if self
            .read_link(&layout::layer_link(repo, digest))
            .await?
            .as_ref()
            != Some(digest)
        {
            return Err(RegistryError::new(
                Code::BlobUnknown,
                format!("blob {digest} is unknown to {repo}"),
            ));
        }
        self.delete_if_exists(&layout::layer_link_dir(repo, digest))
            .await
    }

    /// Links into `repo` a blob that `from` links, returning its size;
    /// `None` means the client should upload the blob instead.
    pub async fn blob_mount(
        &self,
        repo: &RepoName,
        from: &RepoName,
        digest: &Digest,
    ) -> Result<Option<u64>> {
        self.ensure_writable()?;
        if !self.is_linked(from, digest).await? {
            return Ok(None);
        }
        self.touch(digest).await;
        let Some(size) = self.stored_blob_size(digest).await? else {
            return Ok(None);
        };
        self.write_link(&layout::layer_link(repo, digest), digest)
            .await?;
        Ok(Some(size))
    }
}

#[cfg(test)]
mod tests {
    use super::BlobRange::{self, *};
    use crate::properties::{self, MANY};
    use proptest::prelude::*;

    #[test]
    fn ranges() {
        assert_eq!(Between(0, 9).resolve(5), Some((0, 4)));
        assert_eq!(Between(2, 3).resolve(5), Some((2, 3)));
        assert_eq!(Between(5, 9).resolve(5), None);
        assert_eq!(Between(3, 2).resolve(5), None);
        assert_eq!(From(4).resolve(5), Some((4, 4)));
        assert_eq!(Suffix(2).resolve(5), Some((3, 4)));
        assert_eq!(Suffix(9).resolve(5), Some((0, 4)));
        assert_eq!(Suffix(0).resolve(5), None);
        assert_eq!(From(0).resolve(0), None);
    }

    #[test]
    fn property_resolved_ranges_lie_within_the_blob() {
        let range = prop_oneof![
            (any::<u64>(), any::<u64>()).prop_map(|(a, b)| Between(a, b)),
            (0u64..100, 0u64..100).prop_map(|(a, b)| Between(a, b)),
            any::<u64>().prop_map(From),
            any::<u64>().prop_map(Suffix),
        ];
        let size = prop_oneof![0u64..100, any::<u64>()];
        properties::check(
            "resolved ranges lie within the blob",
            MANY,
            (range, size),
            |(range, size): (BlobRange, u64)| {
                if let Some((first, last)) = range.resolve(size) {
                    prop_assert!(first <= last && last < size, "{:?} of {}", range, size);
                }
                Ok(())
            },
        );
    }
}
