//! Touches: when a client was last told that some content is present.
//!
//! Garbage collection runs while clients push. A client that learns a blob
//! exists (HEAD, upload completion, mount) pushes a manifest referencing it
//! later; the collector must not delete the blob in between. So each such
//! answer records a touch, and the collector spares content touched within
//! its grace period. A touch is a small write under `_berth/touches/`, so
//! each instance skips it when it wrote one for the same digest less than a
//! quarter of the grace period ago: pulls must not turn into writes.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::digest::Digest;
use crate::error::Result;
use crate::layout;

use super::Registry;

/// Entries kept in the recent-touch cache before it is pruned.
const CACHE_PRUNE_AT: usize = 100_000;

/// Digests this instance touched recently.
pub(super) struct Touches {
    interval: Duration,
    recent: Mutex<HashMap<Digest, Instant>>,
}

impl Touches {
    /// Touches refreshed at most every `interval`.
    pub(super) fn new(interval: Duration) -> Self {
        Touches {
            interval,
            recent: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `digest` needs a touch written now; records it if so.
    fn due(&self, digest: &Digest) -> bool {
        let now = Instant::now();
        let mut recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
        if recent
            .get(digest)
            .is_some_and(|t| now.duration_since(*t) < self.interval)
        {
            return false;
        }
        if recent.len() >= CACHE_PRUNE_AT {
            recent.retain(|_, t| now.duration_since(*t) < self.interval);
        }
        recent.insert(digest.clone(), now);
        true
    }

    fn forget(&self, digest: &Digest) {
        self.recent
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(digest);
    }
}

impl Registry {
    /// Records that a client was told `digest` is present. Best effort: a
    /// failed touch is logged, and the manifest push that would need the
    /// content re-checks that it exists.
    pub(crate) async fn touch(&self, digest: &Digest) {
        if self.options.read_only || !self.touches.due(digest) {
            return;
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let text = format!("{}.{:03}", now.as_secs(), now.subsec_millis());
        if let Err(e) = self
            .storage
            .put_content(&layout::touch(digest), Bytes::from(text))
            .await
        {
            self.touches.forget(digest);
            tracing::warn!(%digest, error = %e, "could not record a touch");
        }
    }

    /// When `digest` was last touched, if a touch is recorded.
    pub(crate) async fn last_touch(&self, digest: &Digest) -> Result<Option<SystemTime>> {
        match self.storage.get_content(&layout::touch(digest), 64).await {
            Ok(text) => Ok(std::str::from_utf8(&text).ok().and_then(touch_time)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

/// The time a touch record holds: seconds since the epoch with milliseconds
/// (`1733145600.123`), or whole seconds as earlier versions wrote them.
/// Whole seconds would make a touch look up to a second older than it is,
/// which a short grace period cannot absorb.
fn touch_time(text: &str) -> Option<SystemTime> {
    let (secs, millis) = match text.trim().split_once('.') {
        Some((secs, millis)) if millis.len() == 3 => (secs, millis.parse::<u64>().ok()?),
        Some(_) => return None,
        None => (text.trim(), 0),
    };
    let secs = secs.parse::<u64>().ok()?;
    Some(UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(millis))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn touch_records_keep_milliseconds_and_read_whole_seconds() {
        let at = |ms: u64| Some(UNIX_EPOCH + Duration::from_millis(ms));
        assert_eq!(touch_time("1733145600.123"), at(1_733_145_600_123));
        assert_eq!(touch_time("1733145600\n"), at(1_733_145_600_000));
        for junk in ["", "x", "1.5", "1.1234", "-1.000", "1.abc"] {
            assert_eq!(touch_time(junk), None, "{junk:?}");
        }
    }

    #[test]
    fn touches_are_rate_limited() {
        let t = Touches::new(Duration::from_secs(60));
        let d = Digest::of(crate::digest::Algorithm::Sha256, b"x");
        assert!(t.due(&d));
        assert!(!t.due(&d));
        t.forget(&d);
        assert!(t.due(&d));
        let zero = Touches::new(Duration::ZERO);
        assert!(zero.due(&d) && zero.due(&d));
    }
}
