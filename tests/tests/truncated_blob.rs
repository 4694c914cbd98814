//! A blob file truncated in place while a slow GET streams it ends that one
//! response as a broken transfer, over plain HTTP and over TLS, and never
//! the process: the server keeps answering, and serves the other blobs.

use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use berth_tests::certs::TestCa;
use berth_tests::curl::{self, Transfer};
use berth_tests::http::assert_status;
use berth_tests::images::random_bytes;
use berth_tests::oci::{self, sha256_digest};
use berth_tests::registry::{BerthRegistry, RegistryOptions};
use berth_tests::storage::blob_data_path;

const MIB: usize = 1024 * 1024;
const REPO: &str = "truncate/app";

/// Starts a slow curl GET of `url` into `output`, truncates `file` to 1 MiB
/// once the first bytes arrived, and returns what curl did.
fn truncate_under_a_slow_get(url: &str, extra: &[String], output: &Path, file: &Path) -> Transfer {
    let mut args: Vec<String> = extra.to_vec();
    args.extend(["--limit-rate".into(), "2M".into(), url.into()]);
    let download = {
        let output = output.to_path_buf();
        thread::spawn(move || curl::run(&args, Some(&output)))
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while fs::metadata(output).map(|m| m.len()).unwrap_or(0) < MIB as u64 {
        assert!(Instant::now() < deadline, "the slow GET did not start");
        assert!(
            !download.is_finished(),
            "the slow GET ended before the truncation"
        );
        thread::sleep(Duration::from_millis(20));
    }
    OpenOptions::new()
        .write(true)
        .open(file)
        .and_then(|f| f.set_len(MIB as u64))
        .expect("truncate the blob file in place");
    download.join().expect("the curl thread")
}

fn check(registry: &mut BerthRegistry, extra: &[String]) {
    let client = registry.client();
    let blob = random_bytes(64 * MIB);
    let digest = oci::push_blob(&client, REPO, &blob);
    let other = random_bytes(3 * MIB);
    let other_digest = oci::push_blob(&client, REPO, &other);
    let file: PathBuf = blob_data_path(registry.root(), &digest);
    let output = registry.dir().join("download.bin");
    let url = format!("{}/v2/{REPO}/blobs/{digest}", registry.url());

    let transfer = truncate_under_a_slow_get(&url, extra, &output, &file);
    let received = fs::metadata(&output).map(|m| m.len()).unwrap_or(0);
    println!(
        "{}: GET of a 64 MiB blob truncated to 1 MiB under it: curl exit {}, {received} bytes received; {}",
        registry.url(),
        transfer.exit,
        transfer.stderr.trim()
    );
    assert!(
        !transfer.ok(),
        "curl reported a complete transfer of a truncated blob: {}",
        transfer.describe()
    );
    assert!(received < blob.len() as u64);
    assert!(
        registry.is_running(),
        "the server died:\n{}",
        registry.log()
    );
    assert_status(
        &client.get("/healthz"),
        200,
        "GET /healthz after the truncation",
    );
    let reply = client.get(&format!("/v2/{REPO}/blobs/{other_digest}"));
    assert_status(&reply, 200, "GET another blob after the truncation");
    assert_eq!(sha256_digest(&reply.body), other_digest);
}

#[test]
fn a_truncated_blob_ends_its_plain_http_response_only() {
    let mut registry = BerthRegistry::start(RegistryOptions::new());
    check(&mut registry, &[]);
}

#[test]
fn a_truncated_blob_ends_its_tls_response_only() {
    let ca = TestCa::new("berth-tests CA");
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    ca.server_cert("truncate").write(&cert, &key);
    let ca_file = ca.write_cert(&dir.path().join("ca.pem"));
    let mut registry = BerthRegistry::start(RegistryOptions::new().tls(&cert, &key, ca.cert_pem()));
    check(
        &mut registry,
        &["--cacert".into(), ca_file.display().to_string()],
    );
}
