//! Collecting pull-through caches: content no client used for `proxy.ttl`
//! goes, and the registry's own content is never looked at.
//!
//! Each cache is collected as a registry of its own: first its tags not
//! resolved or pulled within the ttl are deleted, then the usual collection
//! runs with untagged manifests deleted and the ttl as grace period, so a
//! manifest or blob survives when a kept tag reaches it or a client was
//! served it within the ttl (every cache hit records a touch).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::{MIRRORS_DIR, cache_registry};
use crate::gc::{self, GcError, GcOptions, Report};
use crate::service::{Options, Registry};
use crate::storage::StorageDriver;

/// Collects every cache under [`MIRRORS_DIR`] of `storage`: content unused
/// for `ttl` is deleted (`dry_run`: only counted). Returns a report per cache.
pub async fn collect_caches(
    storage: &Arc<dyn StorageDriver>,
    ttl: Duration,
    dry_run: bool,
) -> Result<BTreeMap<String, Report>, GcError> {
    let names = match storage.list(MIRRORS_DIR).await {
        Ok(names) => names,
        Err(e) if e.is_not_found() => Vec::new(),
        Err(e) => return Err(GcError::Storage(e.into())),
    };
    let options = GcOptions {
        dry_run,
        delete_untagged: true,
        grace_period: ttl,
        upload_ttl: ttl,
    };
    let mut reports = BTreeMap::new();
    for name in names {
        let registry = cache_registry(
            storage,
            &name,
            Options {
                gc_grace_period: ttl,
                ..Options::default()
            },
        );
        let expired = registry
            .expire_cached_tags(ttl, SystemTime::now(), dry_run)
            .await?;
        let mut report = gc::collect(&registry, &options).await?;
        report.tags_expired = expired;
        reports.insert(name, report);
    }
    Ok(reports)
}

/// A collection of the registry's own content, then of every cache (unused
/// for `cache_ttl`), reported together: the caches under `mirrorCaches`.
pub async fn collect_with_caches(
    registry: &Registry,
    options: &GcOptions,
    cache_ttl: Duration,
) -> Result<Report, GcError> {
    let mut report = gc::collect(registry, options).await?;
    report.mirror_caches = collect_caches(registry.storage(), cache_ttl, options.dry_run).await?;
    Ok(report)
}
