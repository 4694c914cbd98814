//! Bad input gets the OCI spec's error code and status, and writes nothing:
//! the storage root is compared before and after every group of requests.

use std::fs;
use std::process::Output;

use berth_tests::curl;
use berth_tests::http::{Client, assert_error, assert_status, raw_request, whole_request};
use berth_tests::images::random_bytes;
use berth_tests::oci::{
    self, Descriptor, OCI_CONFIG, OCI_LAYER_GZIP, OCI_MANIFEST, image_manifest, push_blob,
    put_manifest, sha256_digest, sha512_digest, start_upload, upload_id, with_query,
};
use berth_tests::registry::{BerthRegistry, RegistryOptions, config_check, render_config};
use berth_tests::storage::{Snapshot, blob_data_path, repository_dir};

const REPO: &str = "bad/input";
const OCTETS: (&str, &str) = ("Content-Type", "application/octet-stream");

/// A registry whose repository `REPO` exists (it holds one blob).
fn registry_with_repo(delete_enabled: bool) -> (BerthRegistry, Client) {
    let registry = BerthRegistry::start(RegistryOptions::new().delete_enabled(delete_enabled));
    let client = registry.client();
    push_blob(&client, REPO, b"seed blob so that the repository exists");
    assert!(
        Snapshot::committed(registry.root()).paths().count() > 0,
        "the seed blob left nothing on disk under {}",
        registry.root().display()
    );
    (registry, client)
}

/// A valid manifest referencing blobs that were never pushed.
fn manifest_of_missing_blobs() -> Vec<u8> {
    let config = Descriptor::of(OCI_CONFIG, &random_bytes(64));
    let layer = Descriptor::of(OCI_LAYER_GZIP, &random_bytes(64));
    image_manifest(&config, &[layer])
}

/// A request: method, target, headers and body.
type Request<'a> = (&'a str, String, Vec<(&'a str, &'a str)>, &'a [u8]);

#[test]
fn invalid_repository_names() {
    let registry = BerthRegistry::start(RegistryOptions::new());
    let root = registry.root();
    let before = Snapshot::full(root);
    let addr = registry.addr();
    let too_long = format!("{}/{}", "a".repeat(128), "b".repeat(127)); // 256 characters
    let names = [
        "Upper/case",
        "a/../b",
        "..",
        "a/%2e%2e/b",
        "a/%2E%2E/b",
        "a%2f..%2fb",
        "a//b",
        "-a/b",
        too_long.as_str(),
    ];
    let digest = sha256_digest(b"x");
    let manifest = manifest_of_missing_blobs();
    for name in names {
        let cases: [Request; 6] = [
            ("POST", format!("/v2/{name}/blobs/uploads/"), vec![], b""),
            (
                "POST",
                format!("/v2/{name}/blobs/uploads/?digest={digest}"),
                vec![OCTETS],
                b"x",
            ),
            (
                "PUT",
                format!("/v2/{name}/manifests/latest"),
                vec![("Content-Type", OCI_MANIFEST)],
                &manifest,
            ),
            ("GET", format!("/v2/{name}/manifests/latest"), vec![], b""),
            ("GET", format!("/v2/{name}/blobs/{digest}"), vec![], b""),
            ("GET", format!("/v2/{name}/tags/list"), vec![], b""),
        ];
        for (method, target, headers, body) in cases {
            let reply = raw_request(&addr, method, &target, &headers, body);
            assert_error(&reply, 400, "NAME_INVALID", &format!("{method} {target}"));
        }
    }
    before.assert_unchanged(
        &Snapshot::full(root),
        "requests with invalid repository names",
    );
}

#[test]
fn malformed_digests() {
    let (registry, client) = registry_with_repo(false);
    let root = registry.root();
    let before = Snapshot::committed(root);
    let body = b"content whose upload names a malformed digest";
    let bad = [
        "sha256:xyz".to_owned(),
        format!("sha256:{}", "a".repeat(63)),
        format!("sha256:{}", "a".repeat(65)),
        format!("sha256:{}", "A".repeat(64)),
        "sha256:".to_owned(),
        format!("md5:{}", "a".repeat(32)),
        format!("nope:{}", "a".repeat(64)),
    ];
    for digest in &bad {
        let blob = format!("/v2/{REPO}/blobs/{digest}");
        assert_error(
            &client.get(&blob),
            400,
            "DIGEST_INVALID",
            &format!("GET {blob}"),
        );
        assert_status(&client.head(&blob), 400, &format!("HEAD {blob}"));

        let post = format!("/v2/{REPO}/blobs/uploads/?digest={digest}");
        let reply = client.post(&post, &[OCTETS], body);
        assert_error(&reply, 400, "DIGEST_INVALID", &format!("POST {post}"));

        let location = start_upload(&client, REPO);
        let put = with_query(&location, "digest", digest);
        let reply = client.put(&put, &[OCTETS], body);
        assert_error(&reply, 400, "DIGEST_INVALID", &format!("PUT {put}"));
    }
    assert_status(
        &client.head(&format!("/v2/{REPO}/blobs/{}", sha256_digest(body))),
        404,
        "HEAD the content uploaded under malformed digests",
    );
    before.assert_unchanged(&Snapshot::committed(root), "uploads with malformed digests");
}

#[test]
fn digest_mismatch_on_upload_completion() {
    let (registry, client) = registry_with_repo(false);
    let root = registry.root();
    let before = Snapshot::committed(root);
    let body = random_bytes(256 * 1024);
    let wrong = sha256_digest(b"something else entirely");
    let wrong512 = sha512_digest(b"something else entirely");

    // Monolithic PUT to a session.
    for digest in [&wrong, &wrong512] {
        let location = start_upload(&client, REPO);
        let reply = client.put(&with_query(&location, "digest", digest), &[OCTETS], &body);
        assert_error(
            &reply,
            400,
            "DIGEST_INVALID",
            &format!("monolithic PUT as {digest}"),
        );
    }
    // Monolithic POST with the digest.
    let post = format!("/v2/{REPO}/blobs/uploads/?digest={wrong}");
    let reply = client.post(&post, &[OCTETS], &body);
    assert_error(&reply, 400, "DIGEST_INVALID", &format!("POST {post}"));
    // Chunked: PATCH the content, then close with the wrong digest.
    let location = start_upload(&client, REPO);
    let range = format!("0-{}", body.len() - 1);
    let reply = client.patch(&location, &[OCTETS, ("Content-Range", &range)], &body);
    assert_status(&reply, 202, "PATCH a chunk");
    let location = reply.header("location").unwrap_or(&location).to_owned();
    let reply = client.put(&with_query(&location, "digest", &wrong), &[], b"");
    assert_error(
        &reply,
        400,
        "DIGEST_INVALID",
        "closing PUT with the wrong digest",
    );

    for digest in [sha256_digest(&body), wrong.clone(), wrong512.clone()] {
        let reply = client.head(&format!("/v2/{REPO}/blobs/{digest}"));
        assert_status(
            &reply,
            404,
            &format!("HEAD {digest} after mismatched uploads"),
        );
        assert!(
            !blob_data_path(root, &digest).exists(),
            "{digest} was stored"
        );
    }
    before.assert_unchanged(
        &Snapshot::committed(root),
        "uploads with mismatched digests",
    );
}

#[test]
fn invalid_manifests() {
    let (registry, client) = registry_with_repo(false);
    let root = registry.root();
    let config_bytes =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let layer_bytes = random_bytes(1024);
    let config = Descriptor::of(OCI_CONFIG, config_bytes);
    let layer = Descriptor::of(OCI_LAYER_GZIP, &layer_bytes);
    push_blob(&client, REPO, config_bytes);
    push_blob(&client, REPO, &layer_bytes);
    let before = Snapshot::full(root);

    let check_not_stored = |tag: &str, body: &[u8], what: &str| {
        let reply = oci::get_manifest(&client, REPO, tag);
        assert_error(
            &reply,
            404,
            "MANIFEST_UNKNOWN",
            &format!("GET tag {tag} after {what}"),
        );
        let digest = sha256_digest(body);
        let reply = oci::get_manifest(&client, REPO, &digest);
        assert_error(
            &reply,
            404,
            "MANIFEST_UNKNOWN",
            &format!("GET {digest} after {what}"),
        );
    };

    // Not JSON.
    let body = br#"{"schemaVersion": 2, "mediaType": "#;
    let reply = put_manifest(&client, REPO, "malformed", OCI_MANIFEST, body);
    assert_error(
        &reply,
        400,
        "MANIFEST_INVALID",
        "PUT malformed manifest JSON",
    );
    check_not_stored("malformed", body, "malformed JSON");

    // A schema version that is not 2.
    let mut value: serde_json::Value =
        serde_json::from_slice(&image_manifest(&config, std::slice::from_ref(&layer))).unwrap();
    value["schemaVersion"] = 3.into();
    let body = serde_json::to_vec(&value).unwrap();
    let reply = put_manifest(&client, REPO, "schema3", OCI_MANIFEST, &body);
    assert_error(
        &reply,
        400,
        "MANIFEST_INVALID",
        "PUT manifest with schemaVersion 3",
    );
    check_not_stored("schema3", &body, "schemaVersion 3");

    // References to blobs the repository does not have.
    let body = manifest_of_missing_blobs();
    let reply = put_manifest(&client, REPO, "missing", OCI_MANIFEST, &body);
    assert_error(
        &reply,
        400,
        "MANIFEST_BLOB_UNKNOWN",
        "PUT manifest of missing blobs",
    );
    check_not_stored("missing", &body, "a manifest of missing blobs");

    // 5 MiB, over the 4 MiB limit (otherwise valid), from a plain client
    // that writes the whole body before it reads: it gets the answer, which
    // the server gives before it has read the body (the length says enough).
    let mut value: serde_json::Value =
        serde_json::from_slice(&image_manifest(&config, &[layer])).unwrap();
    value["annotations"] = serde_json::json!({"padding": "x".repeat(5 * 1024 * 1024)});
    let body = serde_json::to_vec(&value).unwrap();
    let target = format!("/v2/{REPO}/manifests/oversized");
    let headers = [("Content-Type", OCI_MANIFEST)];
    for attempt in 1..=3 {
        let reply = whole_request(&registry.addr(), "PUT", &target, &headers, &body)
            .unwrap_or_else(|e| panic!("PUT oversized manifest, attempt {attempt}: {e}"));
        assert_error(&reply, 413, "MANIFEST_INVALID", "PUT oversized manifest");
    }
    // curl, which asks to continue before it sends a body this large.
    let file = registry.dir().join("oversized.json");
    fs::write(&file, &body).unwrap();
    let transfer = curl::run(
        &[
            "-X".into(),
            "PUT".into(),
            "-H".into(),
            format!("Content-Type: {OCI_MANIFEST}"),
            "--data-binary".into(),
            format!("@{}", file.display()),
            format!("{}{target}", registry.url()),
        ],
        None,
    );
    assert_eq!(transfer.status, 413, "{}", transfer.describe());
    assert!(
        transfer.text().contains("MANIFEST_INVALID"),
        "{}",
        transfer.describe()
    );
    check_not_stored("oversized", &body, "an oversized manifest");

    before.assert_unchanged(&Snapshot::full(root), "invalid manifest PUTs");
}

#[test]
fn out_of_order_chunks() {
    let (registry, client) = registry_with_repo(false);
    let root = registry.root();
    let before = Snapshot::committed(root);
    let content = random_bytes(30);

    // A first chunk that does not start at 0.
    let location = start_upload(&client, REPO);
    let reply = client.patch(
        &location,
        &[OCTETS, ("Content-Range", "1-10")],
        &content[1..11],
    );
    assert_error(&reply, 416, "RANGE_INVALID", "first PATCH at offset 1");

    // After a good chunk of 10 bytes, chunks that skip ahead or overlap.
    let location = start_upload(&client, REPO);
    let reply = client.patch(
        &location,
        &[OCTETS, ("Content-Range", "0-9")],
        &content[..10],
    );
    assert_status(&reply, 202, "PATCH 0-9");
    assert_eq!(
        reply.header("range"),
        Some("0-9"),
        "Range after the first chunk"
    );
    let location = reply.header("location").unwrap_or(&location).to_owned();
    for (range, bytes) in [("20-29", &content[20..30]), ("5-14", &content[5..15])] {
        let reply = client.patch(&location, &[OCTETS, ("Content-Range", range)], bytes);
        assert_error(
            &reply,
            416,
            "RANGE_INVALID",
            &format!("PATCH {range} after 0-9"),
        );
    }
    let status = client.get(&location);
    assert_status(&status, 204, "upload status after rejected chunks");
    assert_eq!(
        status.header("range"),
        Some("0-9"),
        "rejected chunks changed the upload"
    );
    before.assert_unchanged(&Snapshot::committed(root), "out-of-order chunks");

    // The session still works: the right next chunk, then completion.
    let reply = client.patch(
        &location,
        &[OCTETS, ("Content-Range", "10-29")],
        &content[10..],
    );
    assert_status(&reply, 202, "PATCH 10-29");
    let location = reply.header("location").unwrap_or(&location).to_owned();
    let digest = sha256_digest(&content);
    let reply = client.put(&with_query(&location, "digest", &digest), &[], b"");
    assert_status(&reply, 201, "complete the upload");
    let reply = client.get(&format!("/v2/{REPO}/blobs/{digest}"));
    assert_status(&reply, 200, "GET the completed blob");
    assert_eq!(reply.body, content);
}

#[test]
fn unknown_upload_sessions() {
    let (registry, client) = registry_with_repo(false);
    let root = registry.root();
    // A real session of REPO, to be addressed through another repository.
    let real = upload_id(&start_upload(&client, REPO));
    push_blob(&client, "other/repo", b"another repository");
    let before = Snapshot::full(root);
    let body = b"chunk for a session that does not exist";
    let digest = sha256_digest(body);

    let sessions = [
        format!("/v2/{REPO}/blobs/uploads/6f1c4ea0-0b1b-4d4b-9a51-1c0f2e6b5a11"),
        format!("/v2/other/repo/blobs/uploads/{real}"),
    ];
    for session in &sessions {
        let what = |m: &str| format!("{m} {session}");
        assert_error(
            &client.get(session),
            404,
            "BLOB_UPLOAD_UNKNOWN",
            &what("GET"),
        );
        let reply = client.patch(session, &[OCTETS, ("Content-Range", "0-38")], body);
        assert_error(&reply, 404, "BLOB_UPLOAD_UNKNOWN", &what("PATCH"));
        let reply = client.put(&with_query(session, "digest", &digest), &[OCTETS], body);
        assert_error(&reply, 404, "BLOB_UPLOAD_UNKNOWN", &what("PUT"));
        assert_error(
            &client.delete(session),
            404,
            "BLOB_UPLOAD_UNKNOWN",
            &what("DELETE"),
        );
    }
    // Session ids that try to leave the uploads directory.
    for id in [
        "..%2F..%2F_layers",
        "%2e%2e",
        "..",
        "a%2F..%2F..%2F..%2Fblobs",
    ] {
        let session = format!("/v2/{REPO}/blobs/uploads/{id}");
        let put = with_query(&session, "digest", &digest);
        for (method, target, b) in [
            ("GET", session.as_str(), &b""[..]),
            ("PATCH", session.as_str(), &body[..]),
            ("PUT", put.as_str(), &body[..]),
            ("DELETE", session.as_str(), &b""[..]),
        ] {
            let reply = raw_request(&registry.addr(), method, target, &[OCTETS], b);
            assert!(
                reply.status == 400 || reply.status == 404,
                "{method} {target}: expected 400 or 404, got:\n{}",
                reply.describe()
            );
        }
    }
    before.assert_unchanged(&Snapshot::full(root), "requests to unknown upload sessions");
}

#[test]
fn unknown_repositories_and_content() {
    let registry = BerthRegistry::start(RegistryOptions::new());
    let client = registry.client();
    let root = registry.root();
    let elsewhere = push_blob(&client, "exists/repo", b"a blob of another repository");
    let before = Snapshot::full(root);
    let absent = sha256_digest(b"never pushed anywhere");

    let missing = "missing/repo";
    for reference in ["latest", absent.as_str()] {
        let target = format!("/v2/{missing}/manifests/{reference}");
        let reply = oci::get_manifest(&client, missing, reference);
        assert_error(&reply, 404, "MANIFEST_UNKNOWN", &format!("GET {target}"));
        assert_status(&client.head(&target), 404, &format!("HEAD {target}"));
    }
    for digest in [&elsewhere, &absent] {
        let target = format!("/v2/{missing}/blobs/{digest}");
        assert_error(
            &client.get(&target),
            404,
            "BLOB_UNKNOWN",
            &format!("GET {target}"),
        );
        assert_status(&client.head(&target), 404, &format!("HEAD {target}"));
    }
    let target = format!("/v2/{missing}/tags/list");
    assert_error(
        &client.get(&target),
        404,
        "NAME_UNKNOWN",
        &format!("GET {target}"),
    );

    // A repository that exists, asked for content it does not have.
    let reply = oci::get_manifest(&client, "exists/repo", "latest");
    assert_error(&reply, 404, "MANIFEST_UNKNOWN", "GET an unknown tag");
    let target = format!("/v2/exists/repo/blobs/{absent}");
    assert_error(
        &client.get(&target),
        404,
        "BLOB_UNKNOWN",
        &format!("GET {target}"),
    );

    assert!(
        !repository_dir(root, missing).exists(),
        "a repository directory was created"
    );
    before.assert_unchanged(&Snapshot::full(root), "requests for unknown content");
}

#[test]
fn delete_disabled_is_unsupported() {
    let (registry, client) = registry_with_repo(false);
    let root = registry.root();
    let config_bytes =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let layer_bytes = random_bytes(2048);
    let config = Descriptor::of(OCI_CONFIG, config_bytes);
    let layer = Descriptor::of(OCI_LAYER_GZIP, &layer_bytes);
    push_blob(&client, REPO, config_bytes);
    push_blob(&client, REPO, &layer_bytes);
    let manifest = image_manifest(&config, std::slice::from_ref(&layer));
    let digest = sha256_digest(&manifest);
    assert_status(
        &put_manifest(&client, REPO, "v1", OCI_MANIFEST, &manifest),
        201,
        "PUT manifest",
    );
    let before = Snapshot::full(root);

    for target in [
        format!("/v2/{REPO}/manifests/{digest}"),
        format!("/v2/{REPO}/manifests/v1"),
        format!("/v2/{REPO}/blobs/{}", layer.digest),
    ] {
        let reply = client.delete(&target);
        assert_error(&reply, 405, "UNSUPPORTED", &format!("DELETE {target}"));
    }
    let reply = oci::get_manifest(&client, REPO, "v1");
    assert_status(&reply, 200, "GET the manifest after refused deletes");
    assert_eq!(reply.body, manifest);
    let reply = client.get(&format!("/v2/{REPO}/blobs/{}", layer.digest));
    assert_status(&reply, 200, "GET the layer after refused deletes");
    before.assert_unchanged(&Snapshot::full(root), "DELETEs with deletion disabled");
}

fn combined(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn config_check_names_unknown_keys() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    fs::create_dir_all(&root).unwrap();
    let valid = render_config("127.0.0.1:5000", &root, true);
    let file = dir.path().join("valid.yml");
    fs::write(&file, &valid).unwrap();
    let output = config_check(&file);
    assert!(
        output.status.success(),
        "a valid config failed the check:\n{}",
        combined(&output)
    );

    let typos = [
        ("rootdir", valid.replace("rootdirectory:", "rootdir:")),
        ("adress", valid.replace("addr:", "adress:")),
        ("storgae", format!("{valid}storgae:\n  foo: bar\n")),
    ];
    for (key, text) in typos {
        let file = dir.path().join(format!("{key}.yml"));
        fs::write(&file, &text).unwrap();
        let output = config_check(&file);
        let said = combined(&output);
        assert!(
            !output.status.success(),
            "config with unknown key {key} passed:\n{text}"
        );
        assert!(said.contains(key), "the error does not name {key}:\n{said}");
    }
}

#[test]
fn invalid_manifest_references() {
    let (registry, client) = registry_with_repo(false);
    let root = registry.root();
    let config_bytes =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let config = Descriptor::of(OCI_CONFIG, config_bytes);
    push_blob(&client, REPO, config_bytes);
    let manifest = image_manifest(&config, &[]);
    let before = Snapshot::full(root);
    let addr = registry.addr();

    // A digest reference the body does not hash to.
    let wrong = sha256_digest(b"not the manifest");
    let reply = put_manifest(&client, REPO, &wrong, OCI_MANIFEST, &manifest);
    assert_error(
        &reply,
        400,
        "DIGEST_INVALID",
        "PUT manifest under another digest",
    );

    // Tags outside `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`, and malformed digests.
    let too_long = "t".repeat(129);
    let references = [
        "..",
        ".hidden",
        "-dash",
        "a%2Fb",
        "%2e%2e",
        too_long.as_str(),
        "sha256:xyz",
    ];
    for reference in references {
        let target = format!("/v2/{REPO}/manifests/{reference}");
        let reply = raw_request(
            &addr,
            "PUT",
            &target,
            &[("Content-Type", OCI_MANIFEST)],
            &manifest,
        );
        assert_status(&reply, 400, &format!("PUT {target}"));
        let codes = reply.error_codes();
        assert!(
            codes.iter().any(|c| [
                "TAG_INVALID",
                "MANIFEST_INVALID",
                "DIGEST_INVALID",
                "NAME_INVALID"
            ]
            .contains(&c.as_str())),
            "PUT {target}: unexpected codes {codes:?}:\n{}",
            reply.describe()
        );
        let reply = raw_request(&addr, "GET", &target, &[], b"");
        assert!(
            reply.status == 400 || reply.status == 404,
            "GET {target}: expected 400 or 404, got:\n{}",
            reply.describe()
        );
    }
    before.assert_unchanged(&Snapshot::full(root), "PUTs under invalid references");
}
