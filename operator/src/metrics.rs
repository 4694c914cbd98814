//! Prometheus metrics and the `/metrics` and `/healthz` endpoints.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of the reconcile counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    outcome: &'static str,
}

/// Labels of the failure counter: [`crate::reconcile::Error::metric_label`].
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Failure {
    error: &'static str,
}

/// The operator's metrics; cheap to clone (the values are shared).
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    reconciles: Family<Outcome, Counter>,
    failures: Family<Failure, Counter>,
    duration: Histogram,
    leader: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("berth_operator");
        let reconciles = Family::<Outcome, Counter>::default();
        registry.register(
            "reconciles",
            "Reconciles of Registries, by outcome (ok or error)",
            reconciles.clone(),
        );
        let failures = Family::<Failure, Counter>::default();
        registry.register(
            "reconcile_failures",
            "Failed reconciles of Registries, by kind of error",
            failures.clone(),
        );
        let duration = Histogram::new(exponential_buckets(0.01, 2.0, 12));
        registry.register(
            "reconcile_duration_seconds",
            "Time one reconcile took",
            duration.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this process holds the leader lease",
            leader.clone(),
        );
        Metrics {
            registry: Arc::new(registry),
            reconciles,
            failures,
            duration,
            leader,
        }
    }
}

impl Metrics {
    /// Counts one reconcile, failed with the error labelled `failure` if
    /// any.
    pub fn reconciled(&self, failure: Option<&'static str>, took: Duration) {
        self.reconciles
            .get_or_create(&Outcome {
                outcome: if failure.is_none() { "ok" } else { "error" },
            })
            .inc();
        if let Some(error) = failure {
            self.failures.get_or_create(&Failure { error }).inc();
        }
        self.duration.observe(took.as_secs_f64());
    }

    /// Records whether this process leads.
    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    /// The metrics in Prometheus' text format.
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

/// Serves `/metrics` and `/healthz` on `addr` until `shutdown` completes.
pub async fn serve(
    addr: SocketAddr,
    metrics: Metrics,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/metrics",
            get(move || {
                let body = metrics.render();
                async move {
                    (
                        StatusCode::OK,
                        [(
                            header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        body,
                    )
                        .into_response()
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind(addr).await?;
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_reconciles() {
        let metrics = Metrics::default();
        metrics.reconciled(None, Duration::from_millis(20));
        metrics.reconciled(Some("api_error"), Duration::from_millis(20));
        metrics.set_leader(true);
        let text = metrics.render();
        assert!(
            text.contains(r#"berth_operator_reconciles_total{outcome="ok"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"berth_operator_reconciles_total{outcome="error"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"berth_operator_reconcile_failures_total{error="api_error"} 1"#),
            "{text}"
        );
        assert!(
            text.contains("berth_operator_reconcile_duration_seconds_count 2"),
            "{text}"
        );
        assert!(text.contains("berth_operator_leader 1"), "{text}");
    }
}
