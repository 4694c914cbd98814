//! Garbage collection that is safe while every instance keeps serving.
//!
//! [`mark`] finds what must stay: every manifest that is tagged (or, without
//! `--delete-untagged`, every manifest), what those reference (index
//! children, configs, layers), their referrers, and untagged manifests
//! touched within the grace period. [`sweep`] then deletes, in an order that
//! never leaves a kept manifest pointing at deleted content: untagged
//! manifests first, then unreferenced blobs not touched within the grace
//! period (re-reading each blob's touch right before deleting it), then the
//! repository links of swept blobs, stale uploads and empty directories.
//! Killed at any point, a collection leaves a registry that serves every
//! kept image, and the next run finishes the job.

mod mark;
mod sweep;

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use crate::digest::Digest;
use crate::error::RegistryError;
use crate::service::Registry;

/// How a collection runs.
#[derive(Debug, Clone)]
pub struct GcOptions {
    /// Report what would be deleted, delete nothing.
    pub dry_run: bool,
    /// Also delete manifests no tag reaches (and their blobs).
    pub delete_untagged: bool,
    /// Content touched more recently than this is kept.
    pub grace_period: Duration,
    /// Upload sessions started longer ago than this are purged.
    pub upload_ttl: Duration,
}

/// What a collection did, printed as one JSON object; the operator reads
/// the same type.
pub use berth_config::GcReport as Report;

/// The report of the last collection this server ran itself, as JSON, for
/// `GET /berth/gc/last`.
#[derive(Debug, Default)]
pub struct LastReport(Mutex<Option<String>>);

impl LastReport {
    /// Keeps `json` as the last report.
    pub fn set(&self, json: String) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(json);
    }

    /// The last report, if a collection ran.
    pub fn get(&self) -> Option<String> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Why a collection stopped.
#[derive(Debug, thiserror::Error)]
pub enum GcError {
    /// Storage failed; the registry is consistent, run again.
    #[error("garbage collection failed: {0}")]
    Storage(RegistryError),
}

// Not `#[from]`: that would make the error its source too, and a report of
// the chain would name the storage failure twice.
impl From<RegistryError> for GcError {
    fn from(e: RegistryError) -> Self {
        GcError::Storage(e)
    }
}

/// Whether content last touched or written at `times` counts as in use:
/// within the grace period before the collection started.
///
/// Measuring from the start, not from the moment of the check, is what
/// makes the collection safe however long it runs: a manifest pushed after
/// the mark phase read its repository references content its client was
/// told is present, and that answer left a touch at most a quarter of the
/// grace period old (servers refresh touches that often). So content is
/// spared, however late the sweep reaches it, when the client pushes its
/// manifest within three quarters of the grace period of being told.
pub(crate) fn is_fresh(
    times: impl IntoIterator<Item = Option<SystemTime>>,
    grace: Duration,
    started: SystemTime,
) -> bool {
    times
        .into_iter()
        .flatten()
        .any(|t| started.duration_since(t).map_or(true, |age| age < grace))
}

/// Runs one collection.
pub async fn collect(registry: &Registry, options: &GcOptions) -> Result<Report, GcError> {
    let started = Instant::now();
    let start_time = SystemTime::now();
    let mut report = Report {
        dry_run: options.dry_run,
        ..Report::default()
    };
    let marked = mark::mark(registry, options, start_time, &mut report).await?;
    sweep::sweep(registry, options, &marked, start_time, &mut report).await?;
    report.duration_seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// A digest with where it came from, for log lines.
fn describe(digest: &Digest, size: u64) -> String {
    format!("{digest} ({size} bytes)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn freshness() {
        let now = SystemTime::now();
        let hour = Duration::from_secs(3600);
        assert!(is_fresh([Some(now - Duration::from_secs(60))], hour, now));
        assert!(!is_fresh([Some(now - 2 * hour)], hour, now));
        assert!(is_fresh([Some(now - 2 * hour), Some(now)], hour, now));
        assert!(!is_fresh([None, None], hour, now));
        // A clock behind another instance's: a touch from the future is fresh.
        assert!(is_fresh([Some(now + hour)], hour, now));
    }
}
