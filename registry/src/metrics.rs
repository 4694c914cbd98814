//! Prometheus metrics, served as text on `/metrics`.
//!
//! One [`Metrics`] value is shared by the API middleware, the instrumented
//! storage driver and the notification queues; each records what it sees.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of an HTTP request count.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The API route (`manifest`, `blob`, `upload`, ...), never the raw path.
    pub route: &'static str,
    /// The HTTP method, as [`method_label`] names it.
    pub method: &'static str,
    /// The status code.
    pub status: String,
}

/// Labels of per-route figures.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// The API route.
    pub route: &'static str,
    /// The HTTP method, as [`method_label`] names it.
    pub method: &'static str,
}

/// The `method` label of a request: the method's name when HTTP defines it,
/// `OTHER` for any method a client invents, so that clients cannot add
/// series to the metrics at will.
pub fn method_label(method: &http::Method) -> &'static str {
    use http::Method;
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::PUT => "PUT",
        Method::POST => "POST",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "OTHER",
    }
}

/// Labels of a storage operation count.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StorageLabels {
    /// The driver (`filesystem`, `s3`).
    pub driver: &'static str,
    /// The operation (`stat`, `get_content`, ...).
    pub op: &'static str,
    /// `ok`, `not_found` or `error`.
    pub outcome: &'static str,
}

/// Labels of a storage operation's latency.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StorageOpLabels {
    /// The driver.
    pub driver: &'static str,
    /// The operation.
    pub op: &'static str,
}

/// Labels of notification figures.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    /// The endpoint's configured name.
    pub endpoint: String,
}

/// Labels of garbage collection runs.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GcLabels {
    /// `success` or `failure`.
    pub outcome: &'static str,
}

/// Labels of a listener's connections.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerLabels {
    /// `main` (`http.addr`) or `debug` (`http.debug.addr`).
    pub listener: &'static str,
}

/// Labels of connections the server closed.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CloseLabels {
    /// `main` or `debug`.
    pub listener: &'static str,
    /// `shed` (over `berth.maxconnections`), `idle` or `stalled`.
    pub reason: &'static str,
}

/// Labels of notification event outcomes.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeliveryLabels {
    /// The endpoint's configured name.
    pub endpoint: String,
    /// `delivered`, `failed` (one attempt) or `dropped` (queue full).
    pub outcome: &'static str,
}

fn latency_histogram() -> Histogram {
    // 0.5 ms to ~33 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 17))
}

/// Every metric the registry exports.
pub struct Metrics {
    registry: Registry,
    /// HTTP requests by route, method and status.
    pub requests: Family<RequestLabels, Counter>,
    /// HTTP request latency (to the response head) by route and method.
    pub request_duration: Family<RouteLabels, Histogram, fn() -> Histogram>,
    /// Request body bytes received.
    pub bytes_received: Family<RouteLabels, Counter>,
    /// Response body bytes sent.
    pub bytes_sent: Family<RouteLabels, Counter>,
    /// Upload requests being received right now.
    pub uploads_in_flight: Gauge,
    /// Client connections open right now, by listener.
    pub connections: Family<ListenerLabels, Gauge>,
    /// Client connections the server closed, by listener and reason.
    pub connections_closed: Family<CloseLabels, Counter>,
    /// Storage operations by driver, op and outcome.
    pub storage_operations: Family<StorageLabels, Counter>,
    /// Storage operation latency.
    pub storage_duration: Family<StorageOpLabels, Histogram, fn() -> Histogram>,
    /// Notification events by endpoint and outcome.
    pub notification_events: Family<DeliveryLabels, Counter>,
    /// Events waiting per endpoint.
    pub notification_queue_depth: Family<EndpointLabels, Gauge>,
    /// Garbage collection runs inside this server, by outcome.
    pub gc_runs: Family<GcLabels, Counter>,
    /// Blobs deleted by those runs.
    pub gc_deleted_blobs: Counter,
    /// Bytes freed by those runs.
    pub gc_freed_bytes: Counter,
    /// Blob GETs the node cache answered from local disk.
    pub nodecache_hits: Counter,
    /// Blob GETs the node cache did not hold.
    pub nodecache_misses: Counter,
    /// Entries the node cache evicted to stay within its bound.
    pub nodecache_evictions: Counter,
    /// Entries found damaged on disk (dropped and fetched again).
    pub nodecache_corrupt: Counter,
    /// Bytes the node cache's entries hold.
    pub nodecache_bytes: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("berth");
        let m = Metrics {
            requests: Family::default(),
            request_duration: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            bytes_received: Family::default(),
            bytes_sent: Family::default(),
            uploads_in_flight: Gauge::default(),
            connections: Family::default(),
            connections_closed: Family::default(),
            storage_operations: Family::default(),
            storage_duration: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            notification_events: Family::default(),
            notification_queue_depth: Family::default(),
            gc_runs: Family::default(),
            gc_deleted_blobs: Counter::default(),
            gc_freed_bytes: Counter::default(),
            nodecache_hits: Counter::default(),
            nodecache_misses: Counter::default(),
            nodecache_evictions: Counter::default(),
            nodecache_corrupt: Counter::default(),
            nodecache_bytes: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register(
            "http_requests",
            "HTTP requests by route, method and status",
            m.requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "Time to the response head",
            m.request_duration.clone(),
        );
        registry.register(
            "http_received_bytes",
            "Request body bytes received",
            m.bytes_received.clone(),
        );
        registry.register(
            "http_sent_bytes",
            "Response body bytes sent",
            m.bytes_sent.clone(),
        );
        registry.register(
            "uploads_in_flight",
            "Upload requests being received",
            m.uploads_in_flight.clone(),
        );
        registry.register(
            "http_connections",
            "Client connections open, by listener",
            m.connections.clone(),
        );
        registry.register(
            "http_connections_closed",
            "Client connections the server closed, by listener and reason: shed over the limit, idle, or stalled",
            m.connections_closed.clone(),
        );
        registry.register(
            "storage_operations",
            "Storage operations by driver, op and outcome",
            m.storage_operations.clone(),
        );
        registry.register(
            "storage_operation_duration_seconds",
            "Storage operation latency",
            m.storage_duration.clone(),
        );
        registry.register(
            "notification_events",
            "Notification events by endpoint and outcome",
            m.notification_events.clone(),
        );
        registry.register(
            "notification_queue_depth",
            "Notification events waiting",
            m.notification_queue_depth.clone(),
        );
        registry.register(
            "gc_runs",
            "Garbage collection runs in this server, by outcome",
            m.gc_runs.clone(),
        );
        registry.register(
            "gc_deleted_blobs",
            "Blobs deleted by garbage collection in this server",
            m.gc_deleted_blobs.clone(),
        );
        registry.register(
            "gc_freed_bytes",
            "Bytes freed by garbage collection in this server",
            m.gc_freed_bytes.clone(),
        );
        registry.register(
            "nodecache_hits",
            "Blob GETs the node cache answered from local disk",
            m.nodecache_hits.clone(),
        );
        registry.register(
            "nodecache_misses",
            "Blob GETs the node cache did not hold",
            m.nodecache_misses.clone(),
        );
        registry.register(
            "nodecache_evictions",
            "Entries the node cache evicted to stay within its bound",
            m.nodecache_evictions.clone(),
        );
        registry.register(
            "nodecache_corrupt",
            "Node cache entries found damaged on disk, dropped and fetched again",
            m.nodecache_corrupt.clone(),
        );
        registry.register(
            "nodecache_bytes",
            "Bytes the node cache's entries hold",
            m.nodecache_bytes.clone(),
        );
        Metrics { registry, ..m }
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// Records one garbage collection run.
    pub fn gc_run(&self, success: bool, deleted_blobs: u64, freed_bytes: u64) {
        let outcome = if success { "success" } else { "failure" };
        self.gc_runs.get_or_create(&GcLabels { outcome }).inc();
        self.gc_deleted_blobs.inc_by(deleted_blobs);
        self.gc_freed_bytes.inc_by(freed_bytes);
    }

    /// Records a connection of `listener` the server closed, for `reason`.
    pub fn connection_closed(&self, listener: &'static str, reason: &'static str) {
        self.connections_closed
            .get_or_create(&CloseLabels { listener, reason })
            .inc();
    }

    /// Records one storage operation.
    pub fn storage_op(
        &self,
        driver: &'static str,
        op: &'static str,
        outcome: &'static str,
        took: Duration,
    ) {
        self.storage_operations
            .get_or_create(&StorageLabels {
                driver,
                op,
                outcome,
            })
            .inc();
        self.storage_duration
            .get_or_create(&StorageOpLabels { driver, op })
            .observe(took.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_prometheus_text() {
        let m = Metrics::new();
        m.requests
            .get_or_create(&RequestLabels {
                route: "blob",
                method: "GET",
                status: "200".into(),
            })
            .inc();
        m.storage_op("filesystem", "stat", "ok", Duration::from_millis(2));
        let text = m.encode();
        assert!(
            text.contains(r#"berth_http_requests_total{route="blob",method="GET",status="200"} 1"#),
            "{text}"
        );
        assert!(
            text.contains("berth_storage_operation_duration_seconds_bucket"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn invented_methods_share_one_label() {
        for (method, label) in [
            ("GET", "GET"),
            ("PATCH", "PATCH"),
            ("BREW", "OTHER"),
            ("X1", "OTHER"),
        ] {
            let method = http::Method::from_bytes(method.as_bytes()).unwrap();
            assert_eq!(method_label(&method), label);
        }
    }
}
