//! Crash safety: berth-registry is killed with SIGKILL while three large
//! uploads stream into it (a chunked PATCH, a monolithic PUT and a
//! monolithic `POST ?digest=`). After a restart on the same storage root no
//! partial blob is served, every stored blob hashes to its path, and the
//! same image pushes and pulls back intact.

use std::io::{self, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use berth_tests::http::{assert_error, assert_status, open_request};
use berth_tests::images::{OciLayout, assert_same_image, single_image_layout};
use berth_tests::oci::{location_path, start_upload, with_query};
use berth_tests::registry::{BerthRegistry, RegistryOptions};
use berth_tests::skopeo::{Skopeo, docker_ref};
use berth_tests::storage::{blob_data_path, verify_blobs};

const MIB: usize = 1024 * 1024;
const REPO: &str = "crash/app";
/// The size of the chunk the chunked upload completes before the crash.
const FIRST_CHUNK: usize = 4 * MIB;

/// A request whose body a thread streams: the first half at once, then a
/// trickle, never the last byte, until it is told to stop or the
/// connection dies.
struct Streamer {
    label: &'static str,
    sent: Arc<AtomicU64>,
    thread: JoinHandle<io::Result<()>>,
}

struct Shared {
    stop: Arc<AtomicBool>,
    ready: mpsc::Sender<&'static str>,
}

fn stream(
    shared: &Shared,
    label: &'static str,
    addr: String,
    method: &'static str,
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
) -> Streamer {
    let sent = Arc::new(AtomicU64::new(0));
    let stop = shared.stop.clone();
    let ready = shared.ready.clone();
    let counter = sent.clone();
    let thread = thread::spawn(move || {
        let headers: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let mut conn: TcpStream =
            open_request(&addr, method, &target, &headers, Some(body.len() as u64))?;
        let half = body.len() / 2;
        for chunk in body[..half].chunks(64 * 1024) {
            conn.write_all(chunk)?;
            counter.fetch_add(chunk.len() as u64, Ordering::SeqCst);
        }
        let _ = ready.send(label);
        let mut pos = half;
        let last = body.len() - 1;
        while !stop.load(Ordering::SeqCst) && pos < last {
            let end = (pos + 16 * 1024).min(last);
            conn.write_all(&body[pos..end])?;
            counter.fetch_add((end - pos) as u64, Ordering::SeqCst);
            pos = end;
            thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    });
    Streamer {
        label,
        sent,
        thread,
    }
}

/// Total bytes in files under any `_uploads` directory below `root`.
fn upload_bytes(root: &Path) -> u64 {
    fn walk(dir: &Path, inside: bool, total: &mut u64) {
        let Ok(read) = std::fs::read_dir(dir) else {
            return;
        };
        for item in read.flatten() {
            let path = item.path();
            let inside = inside || item.file_name() == "_uploads";
            match item.file_type() {
                Ok(t) if t.is_dir() => walk(&path, inside, total),
                Ok(t) if t.is_file() && inside => {
                    *total += item.metadata().map(|m| m.len()).unwrap_or(0)
                }
                _ => {}
            }
        }
    }
    let mut total = 0;
    walk(root, false, &mut total);
    total
}

#[test]
fn sigkill_during_large_uploads_leaves_no_partial_blob() {
    let mut registry = BerthRegistry::start(RegistryOptions::new());
    let work = tempfile::tempdir().unwrap();
    let (layout, manifest) = single_image_layout(
        &work.path().join("src"),
        "v1",
        &[16 * MIB, 12 * MIB, 8 * MIB],
    );
    let layers: Vec<String> = {
        let value: serde_json::Value =
            serde_json::from_slice(&layout.read_blob(&manifest.digest)).unwrap();
        value["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["digest"].as_str().unwrap().to_owned())
            .collect()
    };
    let client = registry.client();
    let addr = registry.addr();

    let (ready_tx, ready_rx) = mpsc::channel();
    let shared = Shared {
        stop: Arc::new(AtomicBool::new(false)),
        ready: ready_tx,
    };
    let octets = (
        "Content-Type".to_owned(),
        "application/octet-stream".to_owned(),
    );

    // A chunked upload: a first chunk that completes, then a second PATCH
    // with the rest of the blob, streaming when the server dies.
    let chunked_body = layout.read_blob(&layers[0]);
    let first = FIRST_CHUNK.min(chunked_body.len() / 2);
    let location = start_upload(&client, REPO);
    let reply = client.patch(
        &location,
        &[
            ("Content-Type", "application/octet-stream"),
            ("Content-Range", &format!("0-{}", first - 1)),
        ],
        &chunked_body[..first],
    );
    assert_status(&reply, 202, "PATCH the first chunk");
    let chunked_location = reply.header("location").unwrap_or(&location).to_owned();
    let chunked = stream(
        &shared,
        "chunked PATCH",
        addr.clone(),
        "PATCH",
        location_path(&chunked_location),
        vec![
            octets.clone(),
            (
                "Content-Range".to_owned(),
                format!("{first}-{}", chunked_body.len() - 1),
            ),
        ],
        chunked_body[first..].to_vec(),
    );
    // A monolithic PUT to an open session.
    let put_location = start_upload(&client, REPO);
    let put = stream(
        &shared,
        "monolithic PUT",
        addr.clone(),
        "PUT",
        location_path(&with_query(&put_location, "digest", &layers[1])),
        vec![octets.clone()],
        layout.read_blob(&layers[1]),
    );
    // A monolithic POST with the digest.
    let post = stream(
        &shared,
        "monolithic POST ?digest=",
        addr.clone(),
        "POST",
        format!("/v2/{REPO}/blobs/uploads/?digest={}", layers[2]),
        vec![octets],
        layout.read_blob(&layers[2]),
    );
    let streamers = [chunked, put, post];

    for _ in &streamers {
        if ready_rx.recv_timeout(Duration::from_secs(120)).is_err() {
            let states: Vec<String> = streamers
                .iter()
                .map(|s| format!("{}: {} bytes sent", s.label, s.sent.load(Ordering::SeqCst)))
                .collect();
            panic!(
                "uploads did not get half their bodies through: {states:?}\n--- registry log ---\n{}",
                registry.log()
            );
        }
    }
    // Give the server a moment to have written some of what it received;
    // the kill happens regardless.
    for _ in 0..100 {
        if upload_bytes(registry.root()) > 0 {
            break;
        }
        thread::sleep(Duration::from_millis(50));
    }
    let on_disk = upload_bytes(registry.root());
    registry.kill();
    println!("crash: killed the server with {on_disk} bytes in upload sessions on disk");
    shared.stop.store(true, Ordering::SeqCst);
    let chunked_sent = first as u64 + streamers[0].sent.load(Ordering::SeqCst);
    for s in streamers {
        // A write error is expected: the server died mid-body.
        let _ = s.thread.join().expect("streaming thread panicked");
    }

    registry.restart();
    let client = registry.client();
    assert_status(&client.get("/readyz"), 200, "GET /readyz after the restart");

    // Nothing half-uploaded is visible.
    for digest in &layers {
        let head = client.head(&format!("/v2/{REPO}/blobs/{digest}"));
        assert_status(&head, 404, &format!("HEAD interrupted blob {digest}"));
        let get = client.get(&format!("/v2/{REPO}/blobs/{digest}"));
        assert_error(
            &get,
            404,
            "BLOB_UNKNOWN",
            &format!("GET interrupted blob {digest}"),
        );
        assert!(
            !blob_data_path(registry.root(), digest).exists(),
            "interrupted blob {digest} is stored"
        );
    }
    let (checked, bad) = verify_blobs(registry.root());
    assert!(
        bad.is_empty(),
        "after the crash, stored blobs do not match their path ({checked} checked): {bad:#?}"
    );

    // The interrupted chunked session is either gone or resumable from an
    // offset no further than what was sent; resumed, it yields the blob.
    let status = client.get(&chunked_location);
    match status.status {
        404 => {
            assert_error(
                &status,
                404,
                "BLOB_UPLOAD_UNKNOWN",
                "status of the interrupted session",
            );
            println!("crash: the interrupted chunked session is gone after the restart");
        }
        204 => {
            let range = status
                .header("range")
                .unwrap_or_else(|| panic!("upload status without Range:\n{}", status.describe()));
            let end: u64 = range
                .split_once('-')
                .and_then(|(_, end)| end.parse().ok())
                .unwrap_or_else(|| panic!("bad Range {range:?}"));
            let offset = end + 1;
            println!(
                "crash: the interrupted chunked session resumes at {offset} of {chunked_sent} bytes sent"
            );
            assert!(
                offset <= chunked_sent,
                "the session claims {offset} bytes but only {chunked_sent} were sent"
            );
            let location = status
                .header("location")
                .unwrap_or(&chunked_location)
                .to_owned();
            let rest = &chunked_body[offset as usize..];
            let reply = client.patch(
                &location,
                &[
                    ("Content-Type", "application/octet-stream"),
                    (
                        "Content-Range",
                        &format!("{offset}-{}", chunked_body.len() - 1),
                    ),
                ],
                rest,
            );
            assert_status(&reply, 202, "PATCH the rest of the interrupted session");
            let location = reply.header("location").unwrap_or(&location).to_owned();
            let reply = client.put(&with_query(&location, "digest", &layers[0]), &[], b"");
            assert_status(&reply, 201, "complete the resumed session");
            let get = client.get(&format!("/v2/{REPO}/blobs/{}", layers[0]));
            assert_status(&get, 200, "GET the resumed blob");
            assert!(
                get.body == chunked_body,
                "the resumed blob differs from what was sent"
            );
        }
        _ => panic!(
            "unexpected status of the interrupted session:\n{}",
            status.describe()
        ),
    }

    // A real client pushes the same image and pulls it back intact.
    let skopeo = Skopeo::new();
    let remote = docker_ref(&registry.addr(), REPO, "v1");
    skopeo.copy(&layout.reference("v1"), &remote);
    let dst = work.path().join("dst");
    skopeo.copy(&remote, &format!("oci:{}:v1", dst.display()));
    assert_same_image(&layout, &OciLayout::open(&dst), "v1");
    for digest in &layers {
        let head = client.head(&format!("/v2/{REPO}/blobs/{digest}"));
        assert_status(&head, 200, &format!("HEAD pushed blob {digest}"));
    }
    let (_, bad) = verify_blobs(registry.root());
    assert!(
        bad.is_empty(),
        "stored blobs that do not match their path: {bad:#?}"
    );
}
