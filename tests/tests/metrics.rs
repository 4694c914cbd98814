//! Prometheus metrics: `/metrics` is well-formed text exposition (every
//! line parses, every family has HELP and TYPE, `# EOF` last), and its
//! counters move with the requests made: requests by route, method and
//! status, bytes received and sent, storage operations by driver (the
//! filesystem and s3). `http.debug.addr` serves the same on a second port.

use berth_tests::http::{Client, assert_status};
use berth_tests::images::random_bytes;
use berth_tests::metrics::{self, Exposition};
use berth_tests::minio::Minio;
use berth_tests::oci;
use berth_tests::process::free_port;
use berth_tests::registry::{BerthRegistry, RegistryOptions};

const MIB: usize = 1024 * 1024;

/// `after - before` of the sum of `name` over samples with `labels`.
fn delta(before: &Exposition, after: &Exposition, name: &str, labels: &[(&str, &str)]) -> f64 {
    after.sum(name, labels) - before.sum(name, labels)
}

/// Every declared family has help text, and the families the README
/// promises are there (a family shows once it has a sample).
fn assert_families(scrape: &Exposition) {
    for family in scrape.types.keys() {
        assert!(
            scrape.help.contains_key(family),
            "family {family} has no HELP line"
        );
    }
    for (family, kind) in [
        ("berth_http_requests", "counter"),
        ("berth_http_request_duration_seconds", "histogram"),
        ("berth_http_received_bytes", "counter"),
        ("berth_http_sent_bytes", "counter"),
        ("berth_uploads_in_flight", "gauge"),
        ("berth_storage_operations", "counter"),
        ("berth_storage_operation_duration_seconds", "histogram"),
    ] {
        assert_eq!(
            scrape.types.get(family).map(String::as_str),
            Some(kind),
            "family {family}"
        );
    }
}

/// Push a 3 MiB blob, pull it, and ask for a missing manifest; assert what
/// that moved.
fn exercise(client: &Client, driver: &str) {
    let before = metrics::scrape(client);
    let blob = random_bytes(3 * MIB + 11);
    let digest = oci::push_blob(client, "metrics/app", &blob);
    let reply = client.get(&format!("/v2/metrics/app/blobs/{digest}"));
    assert_status(&reply, 200, "GET the blob");
    let missing = oci::get_manifest(client, "metrics/app", "nope");
    assert_status(&missing, 404, "GET a missing manifest");
    let after = metrics::scrape(client);
    assert_families(&after);

    let requests = "berth_http_requests_total";
    for (labels, what) in [
        (
            &[("route", "upload"), ("method", "POST"), ("status", "202")],
            "upload POST 202",
        ),
        (
            &[("route", "upload"), ("method", "PUT"), ("status", "201")],
            "upload PUT 201",
        ),
        (
            &[("route", "blob"), ("method", "GET"), ("status", "200")],
            "blob GET 200",
        ),
        (
            &[("route", "manifest"), ("method", "GET"), ("status", "404")],
            "manifest GET 404",
        ),
    ] {
        assert_eq!(
            delta(&before, &after, requests, labels),
            1.0,
            "{requests} for {what}"
        );
    }
    let size = blob.len() as f64;
    let received = delta(&before, &after, "berth_http_received_bytes_total", &[]);
    let sent = delta(&before, &after, "berth_http_sent_bytes_total", &[]);
    assert!(
        received >= size,
        "received bytes grew by {received}, less than the {size} pushed"
    );
    assert!(
        sent >= size,
        "sent bytes grew by {sent}, less than the {size} pulled"
    );
    let ops = delta(
        &before,
        &after,
        "berth_storage_operations_total",
        &[("driver", driver), ("outcome", "ok")],
    );
    assert!(
        ops >= 3.0,
        "only {ops} successful {driver} storage operations counted"
    );
    assert!(
        delta(
            &before,
            &after,
            "berth_storage_operation_duration_seconds_count",
            &[("driver", driver)]
        ) >= 3.0,
        "storage latencies not recorded for {driver}"
    );
    assert!(
        delta(
            &before,
            &after,
            "berth_http_request_duration_seconds_count",
            &[("route", "blob")]
        ) >= 1.0,
        "request latency not recorded for the blob route"
    );
    assert_eq!(
        after.sum("berth_uploads_in_flight", &[]),
        0.0,
        "uploads in flight at rest"
    );
    println!("metrics ({driver}): received +{received}, sent +{sent}, {ops} storage operations");
}

#[test]
fn metrics_parse_and_move_on_the_filesystem() {
    let registry = BerthRegistry::start(RegistryOptions::new());
    exercise(&registry.client(), "filesystem");
}

#[test]
fn metrics_parse_and_move_on_s3() {
    let minio = Minio::start();
    let bucket = minio.create_bucket("metrics");
    let registry = BerthRegistry::start(RegistryOptions::new().s3(&bucket, false));
    exercise(&registry.client(), "s3");
}

#[test]
fn the_debug_listener_serves_metrics_on_a_second_port() {
    let debug_port = free_port();
    let registry = BerthRegistry::start(RegistryOptions::new().section(
        "http.debug",
        &format!("addr: 127.0.0.1:{debug_port}\nprometheus:\n  enabled: true\n  path: /metrics"),
    ));
    let client = registry.client();
    oci::push_blob(&client, "debug/app", b"counted");
    let debug = Client::new(&format!("http://127.0.0.1:{debug_port}"));
    let scrape = metrics::scrape(&debug);
    assert_families(&scrape);
    assert_eq!(
        scrape.sum(
            "berth_http_requests_total",
            &[("route", "upload"), ("method", "PUT"), ("status", "201")]
        ),
        1.0,
        "the debug listener shows the main listener's requests"
    );
    let reply = debug.get("/v2/");
    assert_eq!(
        reply.status,
        404,
        "the debug listener serves the API:\n{}",
        reply.describe()
    );
}
