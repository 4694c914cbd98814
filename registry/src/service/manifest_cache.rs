//! A bounded in-memory cache of manifest bytes, by digest.
//!
//! The bytes behind a digest never change, so once read they can be kept:
//! a manifest GET then costs one storage read (the repository's revision
//! link) instead of two, which matters most on an object store, where each
//! read is a round trip. Only bytes are kept, never whether a repository
//! has a manifest: that link, and every tag, is read from storage on each
//! GET, so a delete or a tag move by any instance sharing the storage is
//! seen at once. Bytes enter only when they hash to their digest, so a
//! damaged or half-written object is never kept.
//!
//! Bounded by bytes, least recently used first; a bound of 0 turns it off.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, PoisonError};

use bytes::Bytes;

use crate::digest::Digest;

/// Bytes counted per entry beyond its content: the key, the media type and
/// the bookkeeping, so that many tiny manifests still respect the bound.
const ENTRY_OVERHEAD: u64 = 256;

/// A manifest's bytes and the media type it is served with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct CachedManifest {
    /// The exact bytes pushed.
    pub(super) content: Bytes,
    /// The media type to serve them with.
    pub(super) media_type: String,
}

impl CachedManifest {
    fn cost(&self) -> u64 {
        self.content.len() as u64 + self.media_type.len() as u64 + ENTRY_OVERHEAD
    }
}

/// Manifests by digest, at most `max_bytes` of them, least recently used evicted first.
pub(super) struct ManifestCache {
    max_bytes: u64,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<Digest, (CachedManifest, u64)>,
    /// Last use (a counter) to digest: the first is the least recently used.
    by_use: BTreeMap<u64, Digest>,
    clock: u64,
    bytes: u64,
}

impl ManifestCache {
    /// A cache holding at most `max_bytes` (0: nothing is ever kept).
    pub(super) fn new(max_bytes: u64) -> Self {
        ManifestCache {
            max_bytes,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The manifest with `digest`, if kept; marks it as just used.
    pub(super) fn get(&self, digest: &Digest) -> Option<CachedManifest> {
        if self.max_bytes == 0 {
            return None;
        }
        let mut inner = self.lock();
        let Inner {
            entries,
            by_use,
            clock,
            ..
        } = &mut *inner;
        let (manifest, used) = entries.get_mut(digest)?;
        by_use.remove(used);
        *clock += 1;
        *used = *clock;
        by_use.insert(*clock, digest.clone());
        Some(manifest.clone())
    }

    /// Keeps `manifest` as the bytes of `digest`, unless its content does
    /// not hash to `digest` or it is larger than the whole bound; evicts the
    /// least recently used entries to make room.
    pub(super) fn insert(&self, digest: &Digest, manifest: CachedManifest) {
        let cost = manifest.cost();
        if cost > self.max_bytes || Digest::of(digest.algorithm(), &manifest.content) != *digest {
            return;
        }
        let mut inner = self.lock();
        inner.remove(digest);
        while inner.bytes + cost > self.max_bytes {
            let Some((_, oldest)) = inner.by_use.pop_first() else {
                break;
            };
            if let Some((evicted, _)) = inner.entries.remove(&oldest) {
                inner.bytes -= evicted.cost();
            }
        }
        inner.clock += 1;
        let used = inner.clock;
        inner.by_use.insert(used, digest.clone());
        inner.entries.insert(digest.clone(), (manifest, used));
        inner.bytes += cost;
    }

    /// Drops the manifest with `digest`, if kept.
    pub(super) fn remove(&self, digest: &Digest) {
        if self.max_bytes > 0 {
            self.lock().remove(digest);
        }
    }

    /// Bytes counted against the bound now.
    #[cfg(test)]
    fn bytes(&self) -> u64 {
        self.lock().bytes
    }
}

impl Inner {
    fn remove(&mut self, digest: &Digest) {
        if let Some((manifest, used)) = self.entries.remove(digest) {
            self.by_use.remove(&used);
            self.bytes -= manifest.cost();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Algorithm;

    fn manifest(body: &str) -> (Digest, CachedManifest) {
        let content = Bytes::from(body.to_owned());
        (
            Digest::of(Algorithm::Sha256, &content),
            CachedManifest {
                content,
                media_type: "application/vnd.oci.image.manifest.v1+json".to_owned(),
            },
        )
    }

    #[test]
    fn keeps_what_fits_and_evicts_the_least_recently_used() {
        let (a, ma) = manifest("a");
        let (b, mb) = manifest("b");
        let (c, mc) = manifest("c");
        // Room for two entries, not three.
        let cache = ManifestCache::new(ma.cost() * 2 + 1);
        cache.insert(&a, ma.clone());
        cache.insert(&b, mb.clone());
        assert_eq!(cache.get(&a), Some(ma.clone())); // a is now the more recent
        cache.insert(&c, mc.clone());
        assert_eq!(cache.get(&b), None);
        assert_eq!(cache.get(&a), Some(ma.clone()));
        assert_eq!(cache.get(&c), Some(mc.clone()));
        assert_eq!(cache.bytes(), ma.cost() + mc.cost());
    }

    #[test]
    fn re_inserting_counts_an_entry_once() {
        let (a, ma) = manifest("a");
        let cache = ManifestCache::new(1 << 20);
        cache.insert(&a, ma.clone());
        cache.insert(&a, ma.clone());
        assert_eq!(cache.bytes(), ma.cost());
    }

    #[test]
    fn removed_entries_are_gone_and_uncounted() {
        let (a, ma) = manifest("a");
        let cache = ManifestCache::new(1 << 20);
        cache.insert(&a, ma);
        cache.remove(&a);
        assert_eq!(cache.get(&a), None);
        assert_eq!(cache.bytes(), 0);
    }

    #[test]
    fn refuses_bytes_that_do_not_match_their_digest() {
        let (a, _) = manifest("a");
        let (_, mb) = manifest("b");
        let cache = ManifestCache::new(1 << 20);
        cache.insert(&a, mb);
        assert_eq!(cache.get(&a), None);
        assert_eq!(cache.bytes(), 0);
    }

    #[test]
    fn refuses_entries_larger_than_the_bound_and_a_zero_bound_keeps_nothing() {
        let (a, ma) = manifest("a");
        let small = ManifestCache::new(ma.cost() - 1);
        small.insert(&a, ma.clone());
        assert_eq!(small.get(&a), None);
        let off = ManifestCache::new(0);
        off.insert(&a, ma);
        assert_eq!(off.get(&a), None);
        assert_eq!(off.bytes(), 0);
    }
}
