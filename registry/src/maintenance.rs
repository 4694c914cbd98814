//! Background maintenance: purging abandoned upload sessions, as
//! Distribution's `storage.maintenance.uploadpurging` does, and, when
//! `berth.gcinterval` is set, garbage collection inside the server.

use std::sync::Arc;
use std::time::Duration;

use crate::gc::{self, GcOptions};
use crate::metrics::Metrics;
use crate::service::Registry;

/// Delay before the first purge, so that a crash-looping instance does not
/// walk the whole tree on every start.
const FIRST_PURGE_DELAY: Duration = Duration::from_secs(60);

/// Purges uploads older than `age` every `interval`, forever.
pub async fn purge_uploads_forever(
    registry: Arc<Registry>,
    age: Duration,
    interval: Duration,
    dry_run: bool,
) {
    tokio::time::sleep(FIRST_PURGE_DELAY.min(interval)).await;
    loop {
        match registry.purge_uploads(age, dry_run).await {
            Ok(purged) => tracing::info!(purged, dry_run, "upload purge finished"),
            Err(e) => tracing::warn!(error = %e, "upload purge failed"),
        }
        tokio::time::sleep(interval).await;
    }
}

/// Collects garbage every `interval`, forever, recording each run in the metrics.
pub async fn collect_garbage_forever(
    registry: Arc<Registry>,
    options: GcOptions,
    interval: Duration,
    metrics: Arc<Metrics>,
) {
    loop {
        tokio::time::sleep(interval).await;
        match gc::collect(&registry, &options).await {
            Ok(report) => {
                metrics.gc_run(true, report.blobs_deleted as u64, report.bytes_freed);
                tracing::info!(report = %serde_json::to_string(&report).unwrap_or_default(), "garbage collection finished");
            }
            Err(e) => {
                metrics.gc_run(false, 0, 0);
                tracing::warn!(error = %e, "garbage collection failed");
            }
        }
    }
}
