//! The report of a garbage collection.
//!
//! `berth-registry gc` prints it as its last line (which becomes the GC
//! pod's termination message), and a server that collects on its own
//! answers the last one at `GET /berth/gc/last`. The operator reads both
//! into the Registry's status, so both sides use this one type.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What a collection did, as one JSON object with camelCase keys. A failed
/// in-server run reports only [`finished_at`](GcReport::finished_at) and
/// [`error`](GcReport::error); every other field then takes its default.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct GcReport {
    /// Whether nothing was deleted on purpose.
    pub dry_run: bool,
    /// Repositories examined.
    pub repositories: usize,
    /// Manifests kept.
    pub manifests_marked: usize,
    /// Blobs (manifests included) kept.
    pub blobs_marked: usize,
    /// Untagged manifests deleted (or that would be).
    pub manifests_deleted: usize,
    /// Blobs deleted (or that would be).
    pub blobs_deleted: usize,
    /// Bytes those blobs held.
    pub bytes_freed: u64,
    /// Blobs spared because they were touched within the grace period.
    pub blobs_spared_by_grace: usize,
    /// Untagged manifests spared because they were pushed or touched again
    /// since the mark phase.
    pub manifests_spared_by_grace: usize,
    /// Upload sessions purged.
    pub uploads_purged: usize,
    /// Repositories left empty and removed.
    pub repositories_deleted: usize,
    /// Wall time of the collection.
    pub duration_seconds: f64,
    /// Tags of a pull-through cache deleted because no client used them.
    #[serde(skip_serializing_if = "is_zero")]
    pub tags_expired: usize,
    /// The collections of pull-through caches, by cache.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub mirror_caches: BTreeMap<String, GcReport>,
    /// When an in-server run finished (RFC 3339, UTC); absent from the
    /// report `berth-registry gc` prints.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// Why an in-server run failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl GcReport {
    /// The report of an in-server run that failed at `finished_at`.
    pub fn failed(finished_at: String, error: String) -> GcReport {
        GcReport {
            finished_at: Some(finished_at),
            error: Some(error),
            ..GcReport::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_reads_back_as_written() {
        let mut report = GcReport {
            blobs_deleted: 3,
            bytes_freed: 1024,
            finished_at: Some("2026-01-01T00:00:00Z".to_owned()),
            ..GcReport::default()
        };
        report
            .mirror_caches
            .insert("docker.io".to_owned(), GcReport::default());
        let json = serde_json::to_string(&report).unwrap();
        assert!(json.contains("\"blobsDeleted\":3"), "{json}");
        assert!(!json.contains("error"), "{json}");
        assert_eq!(serde_json::from_str::<GcReport>(&json).unwrap(), report);
    }

    #[test]
    fn a_failed_run_reads_with_defaults() {
        let json = r#"{"finishedAt":"2026-01-01T00:00:00Z","error":"boom"}"#;
        let report: GcReport = serde_json::from_str(json).unwrap();
        assert_eq!(
            report,
            GcReport::failed("2026-01-01T00:00:00Z".to_owned(), "boom".to_owned())
        );
    }
}
