//! Basic authentication with an htpasswd file of bcrypt entries: skopeo
//! needs credentials to push and pull; the challenge names the realm; an
//! unknown user and a wrong password look alike (body, status and cost);
//! the file replaced on disk takes effect without a restart; no password
//! reaches the log; `berth.anonymouspull` opens reads only.

use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use berth_tests::htpasswd;
use berth_tests::http::{Client, Reply, assert_error, assert_status, basic_auth};
use berth_tests::images::{OciLayout, assert_same_image, single_image_layout};
use berth_tests::oci;
use berth_tests::registry::{BerthRegistry, RegistryOptions};
use berth_tests::skopeo::{Skopeo, docker_ref};
use berth_tests::yaml::quoted;
use tempfile::TempDir;

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;
const REALM: &str = "berth-test-realm";
const PASSWORD: &str = "correct-horse-battery";

/// A registry with `auth.htpasswd` over a file (in the returned directory)
/// holding `alice` and `bob`, plus the `berth` section `berth` when given.
fn registry_with_auth(berth: Option<&str>) -> (BerthRegistry, TempDir) {
    registry_with_auth_cost(berth, htpasswd::HTPASSWD_COST)
}

/// [`registry_with_auth`] with bcrypt entries of cost `cost`.
fn registry_with_auth_cost(berth: Option<&str>, cost: u32) -> (BerthRegistry, TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("htpasswd");
    htpasswd::write_with_cost(
        &file,
        &[("alice", PASSWORD), ("bob", "bobs-own-password")],
        cost,
    );
    let mut options = RegistryOptions::new().delete_enabled(true).section(
        "auth.htpasswd",
        &format!("realm: {}\npath: {}", quoted(REALM), quoted(file.display())),
    );
    if let Some(berth) = berth {
        options = options.section("berth", berth);
    }
    (BerthRegistry::start(options), dir)
}

/// Assert a 401 `UNAUTHORIZED` with the Basic challenge for the realm.
fn assert_challenge(reply: &Reply, what: &str) {
    assert_error(reply, 401, "UNAUTHORIZED", what);
    assert_eq!(
        reply.header("www-authenticate"),
        Some(format!("Basic realm=\"{REALM}\"").as_str()),
        "{what}: the challenge"
    );
}

fn assert_no_secrets_logged(registry: &BerthRegistry, secrets: &[&str]) {
    let log = registry.log();
    for secret in secrets {
        assert!(!log.contains(secret), "the server log contains {secret:?}");
    }
}

#[test]
fn skopeo_needs_credentials() {
    let (registry, _file) = registry_with_auth(None);
    let work = tempfile::tempdir().unwrap();
    let (layout, manifest) =
        single_image_layout(&work.path().join("src"), "v1", &[8 * KIB, 2 * MIB]);
    let skopeo = Skopeo::new();
    let target = docker_ref(&registry.addr(), "auth/app", "v1");
    let creds = format!("alice:{PASSWORD}");

    // Without credentials: skopeo fails, and the server challenged it.
    let err = skopeo
        .try_copy(&layout.reference("v1"), &target)
        .expect_err("a push without credentials succeeded");
    let said = err.to_string().to_lowercase();
    assert!(
        said.contains("401")
            || said.contains("unauthorized")
            || said.contains("authentication required"),
        "skopeo's error does not say it was unauthorized:\n{err}"
    );
    let client = registry.client();
    assert_challenge(&client.get("/v2/"), "GET /v2/ without credentials");
    assert_challenge(
        &client.post("/v2/auth/app/blobs/uploads/", &[], b""),
        "POST an upload without credentials",
    );

    // With credentials: push and pull.
    skopeo
        .try_copy_with(&layout.reference("v1"), &target, &["--dest-creds", &creds])
        .unwrap_or_else(|e| panic!("{e}"));
    let pulled = work.path().join("pulled");
    skopeo
        .try_copy_with(
            &target,
            &format!("oci:{}:v1", pulled.display()),
            &["--src-creds", &creds],
        )
        .unwrap_or_else(|e| panic!("{e}"));
    assert_same_image(&layout, &OciLayout::open(&pulled), "v1");

    // Reads need credentials too.
    let err = skopeo
        .try_copy(&target, &format!("oci:{}:anon", pulled.display()))
        .expect_err("a pull without credentials succeeded");
    assert!(
        err.stderr.to_lowercase().contains("unauthorized") || err.stderr.contains("401"),
        "{err}"
    );
    assert_challenge(
        &oci::get_manifest(&client, "auth/app", &manifest.digest),
        "GET a manifest without credentials",
    );
    let alice = client.clone().with_basic_auth("alice", PASSWORD);
    assert_status(
        &oci::get_manifest(&alice, "auth/app", &manifest.digest),
        200,
        "GET a manifest as alice",
    );

    let token = basic_auth("alice", PASSWORD);
    let token = token.trim_start_matches("Basic ");
    assert_no_secrets_logged(&registry, &[PASSWORD, token, "bobs-own-password"]);
}

/// The median of `samples`.
fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

#[test]
fn unknown_user_and_wrong_password_look_alike() {
    // A cost high enough that the bcrypt check, not the machine's noise,
    // is most of a request's time.
    let (registry, _file) = registry_with_auth_cost(None, 8);
    let base = registry.client();
    let unknown = base.clone().with_basic_auth("mallory", PASSWORD);
    let wrong = base.clone().with_basic_auth("alice", "not-her-password");
    let target = "/v2/auth/app/tags/list";

    let (a, b) = (unknown.get(target), wrong.get(target));
    assert_challenge(&a, "unknown user");
    assert_challenge(&b, "wrong password");
    assert_eq!(
        a.body,
        b.body,
        "bodies differ:\n{}\n---\n{}",
        a.describe(),
        b.describe()
    );
    let headers = |r: &Reply| {
        let mut h: Vec<(String, String)> = r
            .headers
            .iter()
            .filter(|(k, _)| !matches!(k.as_str(), "date" | "x-request-id"))
            .cloned()
            .collect();
        h.sort();
        h
    };
    assert_eq!(headers(&a), headers(&b), "headers differ");

    // Both cost one bcrypt check: the medians of interleaved requests are
    // of the same order (a property, with a generous bound, not a speed).
    let (mut t_unknown, mut t_wrong) = (Vec::new(), Vec::new());
    for _ in 0..15 {
        for (client, samples) in [(&unknown, &mut t_unknown), (&wrong, &mut t_wrong)] {
            let started = Instant::now();
            let reply = client.get(target);
            samples.push(started.elapsed());
            assert_eq!(reply.status, 401);
        }
    }
    let (mu, mw) = (median(t_unknown), median(t_wrong));
    let ratio = mu.as_secs_f64() / mw.as_secs_f64();
    println!(
        "auth timing: unknown user median {mu:?}, wrong password median {mw:?}, ratio {ratio:.2}"
    );
    assert!(
        (0.5..=2.0).contains(&ratio),
        "an unknown user costs {mu:?} (median) but a wrong password {mw:?}: ratio {ratio:.2}"
    );
}

/// Poll (up to `timeout`) until `client` gets `status` on `target`.
fn wait_for_status(client: &Client, target: &str, status: u16, timeout: Duration) -> Reply {
    let deadline = Instant::now() + timeout;
    loop {
        let reply = client.get(target);
        if reply.status == status || Instant::now() >= deadline {
            return reply;
        }
        thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_replaced_htpasswd_file_takes_effect_without_restart() {
    let (mut registry, dir) = registry_with_auth(None);
    let file = dir.path().join("htpasswd");
    let client = registry.client();
    let old = client.clone().with_basic_auth("alice", PASSWORD);
    let new = client.clone().with_basic_auth("alice", "rotated-password");
    // The old password works, and is remembered as verified.
    for _ in 0..2 {
        assert_status(&old.get("/v2/"), 200, "GET /v2/ with the old password");
    }
    assert_challenge(&new.get("/v2/"), "the new password before the change");
    let pid = registry.pid();

    rotate(&file);
    let reply = wait_for_status(&new, "/v2/", 200, Duration::from_secs(10));
    assert_status(&reply, 200, "GET /v2/ with the new password within 10 s");
    assert_challenge(&old.get("/v2/"), "the old password after the change");
    assert!(registry.is_running(), "the registry exited");
    assert_eq!(registry.pid(), pid, "the same process serves");
    assert_no_secrets_logged(&registry, &[PASSWORD, "rotated-password"]);
}

fn rotate(file: &Path) {
    htpasswd::write(file, &[("alice", "rotated-password")]);
}

#[test]
fn anonymous_pull_opens_reads_but_not_writes() {
    let (registry, _file) = registry_with_auth(Some("anonymouspull: true"));
    let work = tempfile::tempdir().unwrap();
    let (layout, manifest) = single_image_layout(&work.path().join("src"), "v1", &[8 * KIB, MIB]);
    let skopeo = Skopeo::new();
    let target = docker_ref(&registry.addr(), "anon/app", "v1");
    let creds = format!("alice:{PASSWORD}");
    assert!(
        skopeo.try_copy(&layout.reference("v1"), &target).is_err(),
        "a push without credentials succeeded with anonymous pull on"
    );
    skopeo
        .try_copy_with(&layout.reference("v1"), &target, &["--dest-creds", &creds])
        .unwrap_or_else(|e| panic!("{e}"));

    let anonymous = registry.client();
    let reply = oci::get_manifest(&anonymous, "anon/app", "v1");
    assert_status(&reply, 200, "anonymous GET of a manifest");
    assert_eq!(oci::sha256_digest(&reply.body), manifest.digest);
    let head = anonymous.request(
        "HEAD",
        "/v2/anon/app/manifests/v1",
        &[("Accept", oci::ACCEPT_MANIFESTS)],
        None,
    );
    assert_status(&head, 200, "anonymous HEAD of a manifest");
    for digest in layout.reachable_from(&manifest).blobs {
        let reply = anonymous.get(&format!("/v2/anon/app/blobs/{digest}"));
        assert_status(&reply, 200, &format!("anonymous GET of blob {digest}"));
        assert!(reply.body == layout.read_blob(&digest));
        assert_status(
            &anonymous.head(&format!("/v2/anon/app/blobs/{digest}")),
            200,
            "anonymous HEAD of a blob",
        );
    }
    // A client without credentials that was challenged on `/v2/` sends
    // empty Basic credentials (containers/image sends `Basic Og==`, that
    // is `:`); they are no credentials, so reads go through.
    let empty = anonymous.clone().with_header("Authorization", "Basic Og==");
    let reply = oci::get_manifest(&empty, "anon/app", "v1");
    assert_status(
        &reply,
        200,
        "GET a manifest with empty Basic credentials (`Authorization: Basic Og==`, \
         as skopeo sends without credentials) and berth.anonymouspull on",
    );
    // skopeo pulls without credentials.
    let pulled = work.path().join("pulled");
    skopeo.copy(&target, &format!("oci:{}:v1", pulled.display()));
    assert_same_image(&layout, &OciLayout::open(&pulled), "v1");

    // Writes still need credentials.
    assert_challenge(
        &anonymous.post("/v2/anon/app/blobs/uploads/", &[], b""),
        "anonymous POST of an upload",
    );
    assert_challenge(
        &oci::put_manifest(&anonymous, "anon/app", "v2", oci::OCI_MANIFEST, &reply.body),
        "anonymous PUT of a manifest",
    );
    assert_challenge(
        &anonymous.delete(&format!("/v2/anon/app/manifests/{}", manifest.digest)),
        "anonymous DELETE of a manifest",
    );
}
