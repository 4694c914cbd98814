//! The sweep phase: deleting what the mark phase did not keep, in an order
//! that keeps the registry consistent if the collection stops at any point.

use std::collections::HashSet;
use std::time::SystemTime;

use super::mark::Marked;
use super::{GcError, GcOptions, Report, describe, is_fresh};
use crate::service::Registry;

/// Sweeps untagged manifests, then blobs, then links, uploads and empty repositories.
pub(super) async fn sweep(
    registry: &Registry,
    options: &GcOptions,
    marked: &Marked,
    started: SystemTime,
    report: &mut Report,
) -> Result<(), GcError> {
    // Manifests first: a manifest must never outlive the blobs it references.
    let mut spared = HashSet::new();
    for (repo, digest, subject) in &marked.untagged {
        // A client may have pushed the same manifest again since the mark
        // phase (rewriting its revision link) or been told it is present:
        // re-read both right before deleting, as for blobs.
        let times = [
            registry.last_touch(digest).await?,
            registry.revision_linked_at(repo, digest).await?,
        ];
        if is_fresh(times, options.grace_period, started) {
            report.manifests_spared_by_grace += 1;
            // What a spared manifest references stays too.
            spared.insert(digest.clone());
            if let Some(m) = registry.stored_manifest(digest).await? {
                spared.extend(
                    m.config
                        .iter()
                        .chain(&m.layers)
                        .chain(&m.manifests)
                        .map(|d| d.digest.clone()),
                );
            }
            continue;
        }
        tracing::info!(%repo, %digest, dry_run = options.dry_run, "deleting untagged manifest");
        if !options.dry_run {
            registry
                .unlink_revision(repo, digest, subject.as_ref())
                .await?;
        }
        report.manifests_deleted += 1;
    }

    let mut swept = HashSet::new();
    for digest in registry.blob_digests().await? {
        if marked.blobs.contains(&digest) || spared.contains(&digest) {
            continue;
        }
        let Some(blob) = registry.stored_blob(&digest).await? else {
            continue;
        };
        // Read the touch as late as possible: a client told "present" after
        // this read can only be one whose manifest push re-checks and fails.
        let touched = registry.last_touch(&digest).await?;
        if is_fresh(
            [touched, Some(blob.modified)],
            options.grace_period,
            started,
        ) {
            report.blobs_spared_by_grace += 1;
            continue;
        }
        tracing::info!(blob = %describe(&digest, blob.size), dry_run = options.dry_run, "deleting blob");
        if !options.dry_run {
            registry.delete_blob(&digest).await?;
        }
        report.blobs_deleted += 1;
        report.bytes_freed += blob.size;
        swept.insert(digest);
    }

    if !options.dry_run {
        for repo in &marked.repositories {
            for digest in registry.layer_links(repo).await? {
                if swept.contains(&digest) {
                    registry.unlink_layer(repo, &digest).await?;
                }
            }
        }
    }

    report.uploads_purged = registry
        .purge_uploads(options.upload_ttl, options.dry_run)
        .await?;

    if !options.dry_run {
        for repo in &marked.repositories {
            if registry.prune_repository(repo).await? {
                tracing::info!(%repo, "removed empty repository");
                report.repositories_deleted += 1;
            }
        }
    }
    Ok(())
}
