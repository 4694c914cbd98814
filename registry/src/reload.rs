//! Following files that change on disk (a rotated Kubernetes Secret):
//! a poll loop shared by the TLS certificate and the htpasswd file.

use std::time::Duration;

/// Every `interval`, runs `reload` on a blocking thread until the task is
/// dropped. `reload` answers whether it loaded something new; failures keep
/// what was loaded before, and are logged.
pub async fn follow<E, F>(what: &'static str, interval: Duration, reload: F)
where
    E: std::fmt::Display + Send + 'static,
    F: Fn() -> Result<bool, E> + Clone + Send + 'static,
{
    loop {
        tokio::time::sleep(interval).await;
        match tokio::task::spawn_blocking(reload.clone()).await {
            Ok(Ok(true)) => tracing::info!(what, "reloaded"),
            Ok(Ok(false)) => {}
            Ok(Err(e)) => {
                tracing::warn!(what, error = %e, "reload failed; keeping the previous one")
            }
            Err(e) => tracing::warn!(what, error = %e, "reload task failed"),
        }
    }
}
