//! Background maintenance: purging abandoned upload sessions, as
//! Distribution's `storage.maintenance.uploadpurging` does, and, when
//! `berth.gcschedule` (or `berth.gcinterval`) is set, garbage collection
//! inside the server.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;

use crate::config::schedule::Schedule;
use crate::gc::{GcOptions, LastReport, Report};
use crate::layout;
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

/// Collects garbage at the times `schedule` names, forever, recording each
/// run in the metrics and keeping its report, with `finishedAt`, in `last`
/// and in storage ([`layout::GC_REPORT`]); a failed run leaves
/// `finishedAt` and `error` (with zero counts) in `last`. A run that
/// outlasts the next scheduled time makes the next run wait for the time
/// after it, as a CronJob that forbids concurrent runs would.
pub async fn collect_garbage_forever(
    registry: Arc<Registry>,
    options: GcOptions,
    schedule: Schedule,
    metrics: Arc<Metrics>,
    last: Arc<LastReport>,
    cache_ttl: Duration,
) {
    loop {
        let Some(wait) = schedule.wait(SystemTime::now()) else {
            tracing::warn!(
                ?schedule,
                "the garbage collection schedule names no time to come: no collection runs"
            );
            return;
        };
        tokio::time::sleep(wait).await;
        let outcome =
            crate::proxy::collect::collect_with_caches(&registry, &options, cache_ttl).await;
        let finished_at = chrono::DateTime::<chrono::Utc>::from(SystemTime::now())
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        match outcome {
            Ok(report) => {
                let deleted = if report.dry_run {
                    (0, 0)
                } else {
                    (report.blobs_deleted as u64, report.bytes_freed)
                };
                metrics.gc_run(true, deleted.0, deleted.1);
                let report = Report {
                    finished_at: Some(finished_at),
                    ..report
                };
                let json = serde_json::to_string(&report).unwrap_or_default();
                tracing::info!(report = %json, "garbage collection finished");
                let stored = registry
                    .storage()
                    .put_content(layout::GC_REPORT, Bytes::from(json.clone()))
                    .await;
                if let Err(e) = stored {
                    tracing::warn!(error = %e, "could not store the garbage collection report");
                }
                last.set(json);
            }
            Err(e) => {
                metrics.gc_run(false, 0, 0);
                tracing::warn!(error = %e, "garbage collection failed");
                let report = Report::failed(finished_at, e.to_string());
                last.set(serde_json::to_string(&report).unwrap_or_default());
            }
        }
    }
}
