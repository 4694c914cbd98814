//! The cache's bookkeeping: which blobs it holds, their sizes, when each was
//! last used, which are being read, and which to evict.
//!
//! Pure state with no file access, so the eviction rules are tested alone;
//! the caller deletes the files of the entries this hands back as evicted.

use std::collections::HashMap;
use std::time::SystemTime;

use crate::digest::Digest;

/// One cached blob.
#[derive(Debug, Clone)]
struct Entry {
    /// Distinguishes this entry from a later one of the same digest.
    id: u64,
    size: u64,
    last_used: SystemTime,
    /// Streams reading the entry now; a pinned entry is never evicted.
    pins: u32,
    /// Whether its bytes were checked against the digest since this process started.
    verified: bool,
}

/// A pinned entry, as [`Index::pin`] hands it out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Pinned {
    /// The entry's id, for [`Index::unpin`] and [`Index::verified`].
    pub id: u64,
    /// The blob's size.
    pub size: u64,
    /// Whether its bytes were checked since this process started.
    pub verified: bool,
}

/// The entries of one cache and the bytes they and running fills take.
#[derive(Debug)]
pub(super) struct Index {
    entries: HashMap<Digest, Entry>,
    /// Bytes of every entry.
    stored: u64,
    /// Bytes set aside for fills under way (their spool files).
    reserved: u64,
    /// Eviction starts above this many bytes.
    high: u64,
    /// Eviction stops at or below this many bytes.
    low: u64,
    next_id: u64,
}

impl Index {
    /// An empty index evicting from `high` bytes down to `low`.
    pub fn new(high: u64, low: u64) -> Index {
        Index {
            entries: HashMap::new(),
            stored: 0,
            reserved: 0,
            high,
            low,
            next_id: 0,
        }
    }

    /// Bytes of every entry.
    pub fn stored(&self) -> u64 {
        self.stored
    }

    /// Whether a blob of `size` bytes may enter the cache at all.
    pub fn admits(&self, size: u64) -> bool {
        size <= self.high
    }

    /// Records an entry (found on disk, or just filled) and evicts what
    /// goes over the high watermark. Returns the evicted entries.
    pub fn insert(
        &mut self,
        digest: Digest,
        size: u64,
        last_used: SystemTime,
        verified: bool,
    ) -> Vec<(Digest, u64)> {
        self.next_id += 1;
        let entry = Entry {
            id: self.next_id,
            size,
            last_used,
            pins: 0,
            verified,
        };
        if let Some(old) = self.entries.insert(digest, entry) {
            self.stored -= old.size;
        }
        self.stored += size;
        self.evict()
    }

    /// Pins the entry of `digest` for a read and marks it used `now`.
    pub fn pin(&mut self, digest: &Digest, now: SystemTime) -> Option<Pinned> {
        let entry = self.entries.get_mut(digest)?;
        entry.pins += 1;
        entry.last_used = entry.last_used.max(now);
        Some(Pinned {
            id: entry.id,
            size: entry.size,
            verified: entry.verified,
        })
    }

    /// Ends one read of the entry `id` of `digest` (if it is still there).
    pub fn unpin(&mut self, digest: &Digest, id: u64) {
        if let Some(entry) = self.entries.get_mut(digest).filter(|e| e.id == id) {
            entry.pins = entry.pins.saturating_sub(1);
        }
    }

    /// Marks the entry `id` of `digest` as checked against its digest.
    pub fn verified(&mut self, digest: &Digest, id: u64) {
        if let Some(entry) = self.entries.get_mut(digest).filter(|e| e.id == id) {
            entry.verified = true;
        }
    }

    /// Drops the entry `id` of `digest` (found corrupt); whether it was there.
    pub fn remove(&mut self, digest: &Digest, id: u64) -> bool {
        if self.entries.get(digest).is_some_and(|e| e.id == id) {
            if let Some(entry) = self.entries.remove(digest) {
                self.stored -= entry.size;
            }
            return true;
        }
        false
    }

    /// Sets `size` bytes aside for a fill's spool file, evicting to make
    /// room. Returns the evicted entries.
    pub fn reserve(&mut self, size: u64) -> Vec<(Digest, u64)> {
        self.reserved += size;
        self.evict()
    }

    /// Gives back bytes set aside by [`reserve`](Self::reserve).
    pub fn release(&mut self, size: u64) {
        self.reserved = self.reserved.saturating_sub(size);
    }

    /// When more than the high watermark is taken, removes the least
    /// recently used unpinned entries until no more than the low watermark
    /// is (or only pinned entries are left).
    fn evict(&mut self) -> Vec<(Digest, u64)> {
        if self.stored + self.reserved <= self.high {
            return Vec::new();
        }
        let mut candidates: Vec<(SystemTime, Digest)> = self
            .entries
            .iter()
            .filter(|(_, e)| e.pins == 0)
            .map(|(d, e)| (e.last_used, d.clone()))
            .collect();
        candidates.sort();
        let mut evicted = Vec::new();
        for (_, digest) in candidates {
            if self.stored + self.reserved <= self.low {
                break;
            }
            if let Some(entry) = self.entries.remove(&digest) {
                self.stored -= entry.size;
                evicted.push((digest, entry.size));
            }
        }
        evicted
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Algorithm;
    use std::time::Duration;

    fn digest(n: u8) -> Digest {
        Digest::of(Algorithm::Sha256, &[n])
    }

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn evicts_least_recently_used_from_high_to_low() {
        let mut index = Index::new(90, 80);
        for n in 0..9 {
            assert!(
                index
                    .insert(digest(n), 10, at(u64::from(n)), true)
                    .is_empty()
            );
        }
        assert_eq!(index.stored(), 90);
        // Using the oldest entry makes it the newest.
        assert!(index.pin(&digest(0), at(100)).is_some());
        let id = index.pin(&digest(0), at(100)).map(|p| p.id).unwrap();
        index.unpin(&digest(0), id);
        index.unpin(&digest(0), id);
        let evicted = index.insert(digest(9), 10, at(101), true);
        let names: Vec<Digest> = evicted.iter().map(|(d, _)| d.clone()).collect();
        assert_eq!(names, vec![digest(1), digest(2)]);
        assert_eq!(index.stored(), 80);
    }

    #[test]
    fn pinned_entries_are_never_evicted() {
        let mut index = Index::new(30, 20);
        index.insert(digest(0), 10, at(0), true);
        index.insert(digest(1), 10, at(1), true);
        index.insert(digest(2), 10, at(2), true);
        let pinned = index.pin(&digest(0), at(0)).unwrap();
        assert_eq!(pinned.size, 10);
        let evicted = index.insert(digest(3), 10, at(3), true);
        assert_eq!(evicted, vec![(digest(1), 10), (digest(2), 10)]);
        // Only pinned entries and the newest left: over high, nothing more to evict but the newest.
        let evicted = index.reserve(25);
        assert_eq!(evicted, vec![(digest(3), 10)]);
        assert_eq!(index.stored(), 10, "the pinned entry stays");
        index.release(25);
        index.unpin(&digest(0), pinned.id);
        assert_eq!(index.reserve(40), vec![(digest(0), 10)]);
    }

    #[test]
    fn reservations_make_room_before_a_fill() {
        let mut index = Index::new(90, 80);
        for n in 0..8 {
            index.insert(digest(n), 10, at(u64::from(n)), true);
        }
        assert!(
            index.reserve(5).is_empty(),
            "85 is under the high watermark"
        );
        index.release(5);
        let evicted = index.reserve(25);
        assert_eq!(
            evicted.len(),
            3,
            "80 + 25 must come down to 80: {evicted:?}"
        );
        assert_eq!(index.stored(), 50);
        index.release(25);
        assert!(index.insert(digest(50), 25, at(50), true).is_empty());
        assert_eq!(index.stored(), 75);
        assert!(index.admits(90) && !index.admits(91));
    }

    #[test]
    fn stale_ids_do_not_touch_a_newer_entry() {
        let mut index = Index::new(100, 50);
        index.insert(digest(0), 10, at(0), false);
        let old = index.pin(&digest(0), at(1)).unwrap();
        assert!(!old.verified);
        assert!(index.remove(&digest(0), old.id));
        index.insert(digest(0), 10, at(2), false);
        index.unpin(&digest(0), old.id);
        index.verified(&digest(0), old.id);
        assert!(!index.remove(&digest(0), old.id));
        let new = index.pin(&digest(0), at(3)).unwrap();
        assert!(!new.verified);
        index.verified(&digest(0), new.id);
        assert!(index.pin(&digest(0), at(4)).unwrap().verified);
        assert_eq!(index.stored(), 10);
    }
}
