//! TLS: certificates made by a test CA. A certificate and key swapped on
//! disk are served to new connections within seconds, without a restart,
//! while a slow download started on the old certificate finishes intact;
//! with `http.tls.clientcas` a client needs a certificate from one of
//! those CAs to finish the handshake.

use std::fs;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use berth_tests::certs::TestCa;
use berth_tests::curl::{self, Transfer};
use berth_tests::http::{Client, REQUEST_TIMEOUT, agent_with_tls, assert_status};
use berth_tests::images::random_bytes;
use berth_tests::oci::{self, sha256_digest};
use berth_tests::registry::{BerthRegistry, RegistryOptions};

const MIB: usize = 1024 * 1024;

/// `curl https://...` trusting only `ca` and pinned to the public key `pin`
/// (`sha256//...`), writing the body to `output` when given.
fn pinned_get(url: &str, ca: &Path, pin: &str, extra: &[&str], output: Option<&Path>) -> Transfer {
    let mut args: Vec<String> = vec![
        "--cacert".into(),
        ca.display().to_string(),
        "--pinnedpubkey".into(),
        pin.into(),
    ];
    args.extend(extra.iter().map(|a| a.to_string()));
    args.push(url.into());
    curl::run(&args, output)
}

#[test]
fn a_swapped_certificate_reaches_new_connections_while_old_ones_finish() {
    let ca = TestCa::new("berth-tests CA");
    let first = ca.server_cert("first");
    let second = ca.server_cert("second");
    let dir = tempfile::tempdir().unwrap();
    let ca_file = ca.write_cert(&dir.path().join("ca.pem"));
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    first.write(&cert, &key);
    let registry = BerthRegistry::start(RegistryOptions::new().tls(&cert, &key, ca.cert_pem()));
    let client = registry.client();
    let healthz = format!("{}/healthz", registry.url());
    let reply = pinned_get(&healthz, &ca_file, &first.pin, &[], None);
    assert_eq!(
        reply.status,
        200,
        "the first certificate: {}",
        reply.describe()
    );

    // A large blob, downloaded slowly over a connection made on the first
    // certificate (the pin proves which one the handshake saw).
    let blob = random_bytes(32 * MIB);
    let digest = oci::push_blob(&client, "tls/app", &blob);
    let download = dir.path().join("download.bin");
    let slow = {
        let url = format!("{}/v2/tls/app/blobs/{digest}", registry.url());
        let (ca_file, pin, download) = (ca_file.clone(), first.pin.clone(), download.clone());
        thread::spawn(move || {
            pinned_get(
                &url,
                &ca_file,
                &pin,
                &["--limit-rate", "4M"],
                Some(&download),
            )
        })
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while fs::metadata(&download).map(|m| m.len()).unwrap_or(0) == 0 {
        assert!(Instant::now() < deadline, "the slow download did not start");
        assert!(
            !slow.is_finished(),
            "the slow download ended before it started"
        );
        thread::sleep(Duration::from_millis(20));
    }

    // Swap the pair on disk (certificate first, then key, as a Secret
    // update may land them), then wait for new connections to get it.
    second.write(&cert, &key);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let reply = pinned_get(&healthz, &ca_file, &second.pin, &[], None);
        if reply.ok() && reply.status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "new connections did not get the new certificate within 10 s: {}",
            reply.describe()
        );
        thread::sleep(Duration::from_millis(100));
    }
    assert!(
        !slow.is_finished(),
        "the slow download finished before the swap took effect; it proves nothing"
    );
    let old = pinned_get(&healthz, &ca_file, &first.pin, &[], None);
    assert!(
        !old.ok(),
        "a new connection still got the first certificate: {}",
        old.describe()
    );
    // The ureq client, trusting the CA, works on the new certificate too.
    assert_status(&client.get("/v2/"), 200, "GET /v2/ after the swap");

    let transfer = slow.join().unwrap();
    assert!(
        transfer.ok(),
        "the slow download failed: {}",
        transfer.describe()
    );
    assert_eq!(transfer.status, 200, "{}", transfer.describe());
    let bytes = fs::read(&download).unwrap();
    assert_eq!(bytes.len(), blob.len(), "the slow download's length");
    assert_eq!(sha256_digest(&bytes), digest, "the slow download's content");
}

#[test]
fn mutual_tls_requires_a_client_certificate_from_the_configured_ca() {
    let server_ca = TestCa::new("berth-tests server CA");
    let client_ca = TestCa::new("berth-tests client CA");
    let stranger_ca = TestCa::new("berth-tests untrusted CA");
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    server_ca.server_cert("server").write(&cert, &key);
    let client_ca_file = client_ca.write_cert(&dir.path().join("client-ca.pem"));
    let registry = BerthRegistry::start(
        RegistryOptions::new()
            .tls(&cert, &key, server_ca.cert_pem())
            .client_cas(&[client_ca_file]),
    );
    let ca_pem = server_ca.cert_pem().as_bytes();
    let with_identity = |identity: Option<(&[u8], &[u8])>| {
        Client::with_agent(
            &registry.url(),
            agent_with_tls(REQUEST_TIMEOUT, ca_pem, identity),
        )
    };

    // No client certificate: the handshake fails, nothing is served.
    let err = with_identity(None)
        .try_request("GET", "/v2/", &[], None)
        .expect_err("a client without a certificate got an answer");
    println!("without a client certificate: {err}");

    // A certificate from a CA the server does not trust: refused too.
    let stranger = stranger_ca.client_cert("stranger");
    let err = with_identity(Some((
        stranger.cert_pem.as_bytes(),
        stranger.key_pem.as_bytes(),
    )))
    .try_request("GET", "/v2/", &[], None)
    .expect_err("a client with an untrusted certificate got an answer");
    println!("with an untrusted client certificate: {err}");

    // A certificate from the configured CA: served.
    let alice = client_ca.client_cert("alice");
    let client = with_identity(Some((alice.cert_pem.as_bytes(), alice.key_pem.as_bytes())));
    assert_status(
        &client.get("/v2/"),
        200,
        "GET /v2/ with a client certificate",
    );
    let digest = oci::push_blob(&client, "mtls/app", b"over mutual TLS");
    let reply = client.get(&format!("/v2/mtls/app/blobs/{digest}"));
    assert_status(&reply, 200, "GET the blob over mutual TLS");
    assert_eq!(reply.body, b"over mutual TLS");
}
