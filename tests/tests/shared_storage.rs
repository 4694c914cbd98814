//! Many instances, one backend: two berth-registry processes over the same
//! filesystem root. An upload session started on one continues on the
//! other, concurrent pushes of the same content through both succeed
//! and leave it intact, and a manifest deleted through one is gone from the
//! other at once, although the other keeps manifests in memory.

use std::thread;

use berth_tests::http::{assert_error, assert_status};
use berth_tests::images::{OciLayout, assert_same_image, random_bytes, single_image_layout};
use berth_tests::oci::{
    Descriptor, OCI_CONFIG, OCI_LAYER_GZIP, OCI_MANIFEST, get_manifest, image_manifest,
    location_path, push_blob, put_manifest, sha256_digest, start_upload, with_query,
};
use berth_tests::registry::{BerthRegistry, RegistryOptions};
use berth_tests::skopeo::{Skopeo, docker_ref};
use berth_tests::storage::verify_blobs;

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;

#[test]
fn an_upload_session_moves_between_instances() {
    let root = tempfile::tempdir().unwrap();
    let a = BerthRegistry::start(RegistryOptions::new().root(root.path()));
    let b = BerthRegistry::start(RegistryOptions::new().root(root.path()));
    let (a, b) = (a.client(), b.client());
    let repo = "shared/upload";
    let content = random_bytes(3 * MIB + 123);
    let cuts = [0, MIB, 2 * MIB + 7, content.len()];

    // POST on A; then the chunks alternate B, A, B, always at the path the
    // previous answer gave (a relative or absolute Location).
    let mut location = location_path(&start_upload(&a, repo));
    for (i, window) in cuts.windows(2).enumerate() {
        let client = if i % 2 == 0 { &b } else { &a };
        let (start, end) = (window[0], window[1]);
        let range = format!("{start}-{}", end - 1);
        let reply = client.patch(
            &location,
            &[
                ("Content-Type", "application/octet-stream"),
                ("Content-Range", &range),
            ],
            &content[start..end],
        );
        assert_status(&reply, 202, &format!("PATCH {range} on instance {}", i % 2));
        location = location_path(reply.header("location").unwrap_or(&location));
    }
    let status = a.get(&location);
    assert_status(&status, 204, "upload status on A");
    assert_eq!(
        status.header("range"),
        Some(format!("0-{}", content.len() - 1).as_str()),
        "A sees every chunk"
    );
    let digest = sha256_digest(&content);
    let reply = b.put(&with_query(&location, "digest", &digest), &[], b"");
    assert_status(&reply, 201, "complete the upload on B");
    for (name, client) in [("A", &a), ("B", &b)] {
        let reply = client.get(&format!("/v2/{repo}/blobs/{digest}"));
        assert_status(&reply, 200, &format!("GET the blob from {name}"));
        assert!(reply.body == content, "the blob from {name} differs");
    }
}

#[test]
fn concurrent_pushes_through_two_instances() {
    let root = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let a = BerthRegistry::start(RegistryOptions::new().root(root.path()));
    let b = BerthRegistry::start(RegistryOptions::new().root(root.path()));
    let (layout, manifest) = single_image_layout(
        &work.path().join("src"),
        "v1",
        &[64 * KIB, 4 * MIB, 6 * MIB],
    );
    let repo = "shared/push";

    // The same image, at once, through both instances, into one repository.
    let source = layout.reference("v1");
    thread::scope(|scope| {
        for (registry, tag) in [(&a, "from-a"), (&b, "from-b")] {
            let source = source.clone();
            scope.spawn(move || {
                Skopeo::new().copy(&source, &docker_ref(&registry.addr(), repo, tag));
            });
        }
    });

    // Each instance serves what the other pushed.
    let skopeo = Skopeo::new();
    let pulled = work.path().join("pulled");
    skopeo.copy(
        &docker_ref(&a.addr(), repo, "from-b"),
        &format!("oci:{}:v1", pulled.display()),
    );
    skopeo.copy(
        &docker_ref(&b.addr(), repo, "from-a"),
        &format!("oci:{}:from-a", pulled.display()),
    );
    let pulled = OciLayout::open(&pulled);
    assert_same_image(&layout, &pulled, "v1");
    assert_eq!(pulled.tagged("from-a").digest, manifest.digest);

    let (_, bad) = verify_blobs(root.path());
    assert!(
        bad.is_empty(),
        "stored blobs that do not match their path: {bad:#?}"
    );
}

#[test]
fn a_manifest_deleted_through_one_instance_is_gone_from_the_other_at_once() {
    let root = tempfile::tempdir().unwrap();
    let options = RegistryOptions::new()
        .root(root.path())
        .delete_enabled(true);
    let a = BerthRegistry::start(options.clone());
    let b = BerthRegistry::start(options);
    let (a, b) = (a.client(), b.client());
    let repo = "shared/delete";
    let config = br#"{"architecture":"amd64","os":"linux"}"#;
    let layer = random_bytes(64 * KIB);
    push_blob(&a, repo, config);
    push_blob(&a, repo, &layer);
    let manifest = image_manifest(
        &Descriptor::of(OCI_CONFIG, config),
        &[Descriptor::of(OCI_LAYER_GZIP, &layer)],
    );
    let digest = sha256_digest(&manifest);
    let reply = put_manifest(&a, repo, "v1", OCI_MANIFEST, &manifest);
    assert_status(&reply, 201, "PUT the manifest through A");

    // B serves it, by digest and by tag, and so holds its bytes in memory.
    for reference in [digest.as_str(), "v1"] {
        let reply = get_manifest(&b, repo, reference);
        assert_status(&reply, 200, &format!("GET {reference} through B"));
        assert_eq!(reply.body, manifest);
    }

    // Deleted through A: B answers MANIFEST_UNKNOWN from then on.
    let reply = a.delete(&format!("/v2/{repo}/manifests/{digest}"));
    assert_status(&reply, 202, "DELETE the manifest through A");
    for reference in [digest.as_str(), "v1"] {
        let what = format!("GET {reference} through B after the delete");
        assert_error(
            &get_manifest(&b, repo, reference),
            404,
            "MANIFEST_UNKNOWN",
            &what,
        );
    }
}
