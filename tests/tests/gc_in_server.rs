//! Garbage collection inside the server (`berth.gcschedule`): it runs at the
//! schedule's times, honours `berth.gcdryrun`, writes its report under the
//! storage root's `.berth/` and answers it at `GET /berth/gc/last` (404
//! before the first run; like `/metrics`, without credentials even when auth
//! is on, since it holds counts only).

use std::fs;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use berth_tests::htpasswd;
use berth_tests::http::{Client, assert_status};
use berth_tests::images::random_bytes;
use berth_tests::oci;
use berth_tests::registry::{BerthRegistry, RegistryOptions};
use berth_tests::storage::blob_data_path;

/// A schedule's first run can be a minute away, plus the run itself.
const FIRST_RUN: Duration = Duration::from_secs(150);

#[test]
fn a_scheduled_dry_run_reports_without_deleting() {
    let dir = tempfile::tempdir().unwrap();
    let passwords = dir.path().join("htpasswd");
    htpasswd::write(&passwords, &[("ops", "secret")]);
    let registry = BerthRegistry::start(
        RegistryOptions::new()
            .section(
                "berth",
                "gcschedule: \"* * * * *\"\ngcdryrun: true\ngcgraceperiod: 1s",
            )
            .section(
                "auth.htpasswd",
                &format!("realm: test\npath: {}", passwords.display()),
            ),
    );
    let anonymous = registry.client();
    let ops = registry.client().with_basic_auth("ops", "secret");
    assert_status(
        &anonymous.get("/berth/gc/last"),
        404,
        "GET /berth/gc/last before the first run, without credentials",
    );
    assert_status(
        &anonymous.get("/berth/anything"),
        401,
        "another /berth route without credentials",
    );

    // A blob no manifest references: garbage once the grace period is over.
    let garbage = random_bytes(1024 * 1024 + 7);
    let digest = oci::push_blob(&ops, "gc/app", &garbage);
    let data = blob_data_path(registry.root(), &digest);
    assert!(data.is_file());

    let report = wait_for_report(&anonymous);
    println!("in-server collection report: {report}");
    assert_eq!(report["dryRun"], true, "{report}");
    let finished = report["finishedAt"].as_str().unwrap_or_default();
    assert!(
        finished.len() == 20 && finished.ends_with('Z'),
        "finishedAt is RFC 3339 in UTC: {report}"
    );
    assert!(
        report["blobsDeleted"].as_u64() >= Some(1),
        "the dry run found no garbage: {report}"
    );
    assert!(data.is_file(), "a dry run deleted {digest}");

    let stored = registry.root().join(".berth/gc/last.json");
    let file: serde_json::Value =
        serde_json::from_slice(&fs::read(&stored).expect("the stored report")).unwrap();
    let modified = fs::metadata(&stored).unwrap().modified().unwrap();
    let started = modified - Duration::from_secs_f64(report_seconds(&file));
    let since_epoch = started
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let from_whole_minute = (since_epoch + 30.0) % 60.0 - 30.0;
    println!(
        "the stored report is {}; its collection started {from_whole_minute:+.3} s from a whole minute (by the file's time)",
        stored.display()
    );
    assert_eq!(file["dryRun"], true);
    assert_eq!(
        file["blobsDeleted"], report["blobsDeleted"],
        "the stored report and the served one differ"
    );
}

fn report_seconds(report: &serde_json::Value) -> f64 {
    report["durationSeconds"].as_f64().unwrap_or(0.0)
}

/// Polls `GET /berth/gc/last` until a run has reported.
fn wait_for_report(client: &Client) -> serde_json::Value {
    let deadline = Instant::now() + FIRST_RUN;
    loop {
        let reply = client.get("/berth/gc/last");
        if reply.status == 200 {
            assert_eq!(reply.header("content-type"), Some("application/json"));
            return reply.json();
        }
        assert_status(&reply, 404, "GET /berth/gc/last before the first run");
        assert!(
            Instant::now() < deadline,
            "no in-server collection within {FIRST_RUN:?} of a schedule of every minute"
        );
        thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn an_interval_still_collects_and_deletes() {
    let registry = BerthRegistry::start(
        RegistryOptions::new().section("berth", "gcinterval: 2s\ngcgraceperiod: 1s"),
    );
    let client = registry.client();
    let digest = oci::push_blob(&client, "gc/app", &random_bytes(4096));
    let data = blob_data_path(registry.root(), &digest);
    // Runs every 2 s; wait for one that found the blob past its grace.
    let deadline = Instant::now() + FIRST_RUN;
    let report = loop {
        let reply = client.get("/berth/gc/last");
        if reply.status == 200 && reply.json()["blobsDeleted"].as_u64() >= Some(1) {
            break reply.json();
        }
        assert!(
            Instant::now() < deadline,
            "no collection deleted the garbage blob within {FIRST_RUN:?}: {}",
            reply.describe()
        );
        thread::sleep(Duration::from_millis(200));
    };
    println!("in-server collection report (berth.gcinterval): {report}");
    assert_eq!(report["dryRun"], false);
    assert!(
        !data.exists(),
        "{digest} survived a collection that reported it deleted"
    );
}
