//! Background maintenance: purging abandoned upload sessions, as
//! Distribution's `storage.maintenance.uploadpurging` does.

use std::sync::Arc;
use std::time::Duration;

use crate::service::Registry;

/// Delay before the first purge, so that a crash-looping instance does not
/// walk the whole tree on every start.
const FIRST_PURGE_DELAY: Duration = Duration::from_secs(60);

/// Purges uploads older than `age` every `interval`, forever.
pub async fn purge_uploads_forever(registry: Arc<Registry>, age: Duration, interval: Duration, dry_run: bool) {
    tokio::time::sleep(FIRST_PURGE_DELAY.min(interval)).await;
    loop {
        match registry.purge_uploads(age, dry_run).await {
            Ok(purged) => tracing::info!(purged, dry_run, "upload purge finished"),
            Err(e) => tracing::warn!(error = %e, "upload purge failed"),
        }
        tokio::time::sleep(interval).await;
    }
}
