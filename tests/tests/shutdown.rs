//! Graceful shutdown: on SIGTERM the registry stops accepting connections
//! at once, lets a chunked upload that is streaming its PATCH finish with
//! 202 (within `http.draintimeout`), and then exits with status 0. The
//! chunk it finished is in storage: a restart completes the upload.

use std::io::Write;
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use berth_tests::http::{Client, assert_status, open_request, read_reply};
use berth_tests::images::random_bytes;
use berth_tests::metrics;
use berth_tests::oci::{location_path, sha256_digest, start_upload, with_query};
use berth_tests::registry::{BerthRegistry, RegistryOptions};

const MIB: usize = 1024 * 1024;

/// Poll `/metrics` (up to 30 s) until an upload request is being received.
fn wait_for_upload_in_flight(client: &Client) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while metrics::scrape(client).sum("berth_uploads_in_flight", &[]) < 1.0 {
        assert!(Instant::now() < deadline, "no upload in flight within 30 s");
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sigterm_drains_an_in_flight_patch_and_exits_cleanly() {
    let mut registry =
        BerthRegistry::start(RegistryOptions::new().section("http", "draintimeout: 20s"));
    let client = registry.client();
    let addr = registry.addr();
    let repo = "shutdown/app";
    let content = random_bytes(8 * MIB + 7);
    let location = location_path(&start_upload(&client, repo));

    // A PATCH whose body streams: the first MiB now, the rest after SIGTERM.
    let range = format!("0-{}", content.len() - 1);
    let mut patch = open_request(
        &addr,
        "PATCH",
        &location,
        &[
            ("Content-Type", "application/octet-stream"),
            ("Content-Range", &range),
        ],
        Some(content.len() as u64),
    )
    .expect("open the PATCH");
    patch
        .write_all(&content[..MIB])
        .expect("send the first MiB");
    wait_for_upload_in_flight(&client);

    registry.signal("TERM");
    // New connections are refused promptly (an upper bound, not a timing).
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match TcpStream::connect(&addr) {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => break,
            Err(e) => panic!("connecting after SIGTERM: {e}"),
            Ok(_) => {
                assert!(
                    Instant::now() < deadline,
                    "the registry still accepts connections 5 s after SIGTERM"
                );
                thread::sleep(Duration::from_millis(20));
            }
        }
    }
    assert!(
        registry.is_running(),
        "the registry exited with a request in flight"
    );

    // The in-flight PATCH still completes, in pieces.
    for chunk in content[MIB..].chunks(256 * 1024) {
        patch
            .write_all(chunk)
            .expect("stream the rest of the PATCH");
        thread::sleep(Duration::from_millis(5));
    }
    let reply = read_reply(&mut patch, "PATCH").expect("the PATCH's response");
    assert_status(&reply, 202, "the PATCH in flight at SIGTERM");
    assert_eq!(
        reply.header("range"),
        Some(range.as_str()),
        "the PATCH's range"
    );

    let status = registry
        .wait_exit(Duration::from_secs(30))
        .unwrap_or_else(|| panic!("the registry did not exit within 30 s:\n{}", registry.log()));
    assert!(
        status.success(),
        "the registry exited with {status}:\n{}",
        registry.log()
    );

    // What the drained PATCH wrote is there: a restart completes the upload.
    registry.restart();
    let upload = client.get(&location);
    assert_status(&upload, 204, "the upload's status after the restart");
    assert_eq!(upload.header("range"), Some(range.as_str()));
    let digest = sha256_digest(&content);
    let reply = client.put(&with_query(&location, "digest", &digest), &[], b"");
    assert_status(&reply, 201, "complete the upload after the restart");
    let blob = client.get(&format!("/v2/{repo}/blobs/{digest}"));
    assert_status(&blob, 200, "GET the blob");
    assert!(blob.body == content, "the blob differs");
}
