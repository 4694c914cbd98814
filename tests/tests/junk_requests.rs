//! Requests that name nothing leave nothing behind: 100,000 GETs and 20,000
//! PATCHes of upload ids that were never started keep the server's resident
//! memory flat, and invented methods and paths add no series to `/metrics`.
//! Both print their figures.

use std::thread;

use berth_tests::http::{Client, assert_error, raw_request};
use berth_tests::metrics;
use berth_tests::process::rss_kib;
use berth_tests::registry::{BerthRegistry, RegistryOptions};

const REPO: &str = "junk/app";

/// An id in the form Berth hands out, that no session has.
fn random_upload_id() -> String {
    let hex = format!("{:032x}", rand::random::<u128>());
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// `gets` GETs and `patches` PATCHes of random upload ids, spread over
/// four keep-alive clients; each must answer 404 BLOB_UPLOAD_UNKNOWN.
fn unknown_upload_requests(client: &Client, gets: usize, patches: usize) {
    const CLIENTS: usize = 4;
    thread::scope(|scope| {
        for _ in 0..CLIENTS {
            let client = client.clone();
            scope.spawn(move || {
                for i in 0..(gets + patches) / CLIENTS {
                    let target = format!("/v2/{REPO}/blobs/uploads/{}", random_upload_id());
                    let reply = if i < gets / CLIENTS {
                        client.get(&target)
                    } else {
                        client.patch(
                            &target,
                            &[("Content-Type", "application/octet-stream")],
                            b"0123456789",
                        )
                    };
                    assert_error(&reply, 404, "BLOB_UPLOAD_UNKNOWN", &target);
                }
            });
        }
    });
}

#[test]
fn unknown_upload_ids_leave_resident_memory_flat() {
    let registry = BerthRegistry::start(RegistryOptions::new());
    let client = registry.client();
    let pid = registry.pid().expect("the server runs");
    // Let the allocator and the blocking pool reach their working size.
    unknown_upload_requests(&client, 2_000, 2_000);
    let before = rss_kib(pid).expect("the server's VmRSS");
    unknown_upload_requests(&client, 100_000, 20_000);
    let after = rss_kib(pid).expect("the server's VmRSS");
    println!(
        "RSS before 100,000 GETs and 20,000 PATCHes of unknown upload ids: {before} KiB; after: {after} KiB ({:+} KiB)",
        after as i64 - before as i64
    );
    assert!(
        after < before + 4 * 1024,
        "resident memory grew from {before} KiB to {after} KiB"
    );
}

/// Number of sample lines (series) in `/metrics`.
fn series(client: &Client) -> usize {
    metrics::scrape(client).samples.len()
}

#[test]
fn invented_methods_and_paths_add_no_metric_series() {
    let registry = BerthRegistry::start(RegistryOptions::new());
    let client = registry.client();
    let addr = registry.addr();
    let targets = |i: usize| {
        [
            "/v2/".to_owned(),
            format!("/v2/{REPO}/manifests/latest"),
            format!("/nowhere/{i}"),
            format!("/v2/{REPO}/nothing/{i}"),
            format!("/v2/{i}/blobs/uploads/{}", random_upload_id()),
        ]
    };
    // One of each kind first, and a scrape (scrapes are counted too): the
    // series they add are the only ones allowed.
    for target in targets(0) {
        raw_request(&addr, "BREW0", &target, &[], b"");
        client.get(&target);
    }
    series(&client);
    let before = series(&client);
    for i in 1..=2_000 {
        let method = format!("BREW{i}");
        let target = &targets(i)[i % 5];
        raw_request(&addr, &method, target, &[], b"");
        client.get(target);
    }
    let after = series(&client);
    println!(
        "metric series before 2,000 requests with invented methods and 2,000 to unknown paths: {before}; after: {after}"
    );
    assert_eq!(before, after, "requests added metric series");
}
