//! Read-only maintenance mode (`storage.maintenance.readonly.enabled`):
//! every write answers 405 `UNSUPPORTED` and changes nothing in storage,
//! while pulls, listings and the catalog go on.

use berth_tests::http::{Reply, assert_error, assert_status};
use berth_tests::images::{OciLayout, assert_same_image, single_image_layout};
use berth_tests::oci::{self, OCI_MANIFEST, sha256_digest};
use berth_tests::registry::{BerthRegistry, RegistryOptions};
use berth_tests::skopeo::{Skopeo, docker_ref};
use berth_tests::storage::Snapshot;

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;

fn assert_unsupported(reply: &Reply, what: &str) {
    assert_error(reply, 405, "UNSUPPORTED", what);
}

#[test]
fn read_only_mode_refuses_writes_and_serves_reads() {
    let root = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let (layout, manifest) =
        single_image_layout(&work.path().join("src"), "v1", &[8 * KIB, 2 * MIB]);
    let skopeo = Skopeo::new();
    let repo = "readonly/app";
    let blob_digest;
    {
        let writable = BerthRegistry::start(
            RegistryOptions::new()
                .root(root.path())
                .delete_enabled(true),
        );
        skopeo.copy(
            &layout.reference("v1"),
            &docker_ref(&writable.addr(), repo, "v1"),
        );
        blob_digest = oci::push_blob(&writable.client(), repo, b"a blob to delete");
    }
    let registry = BerthRegistry::start(
        RegistryOptions::new()
            .root(root.path())
            .delete_enabled(true)
            .section("storage.maintenance", "readonly:\n  enabled: true"),
    );
    let client = registry.client();
    let before = Snapshot::full(root.path());

    // Writes: every kind is refused.
    assert_unsupported(
        &client.post(&format!("/v2/{repo}/blobs/uploads/"), &[], b""),
        "POST an upload",
    );
    let bytes = b"monolithic";
    assert_unsupported(
        &client.post(
            &format!("/v2/{repo}/blobs/uploads/?digest={}", sha256_digest(bytes)),
            &[("Content-Type", "application/octet-stream")],
            bytes,
        ),
        "POST a monolithic upload",
    );
    assert_unsupported(
        &client.post(
            &format!("/v2/other/app/blobs/uploads/?mount={blob_digest}&from={repo}"),
            &[],
            b"",
        ),
        "POST a cross-repository mount",
    );
    let manifest_bytes = layout.read_blob(&manifest.digest);
    assert_unsupported(
        &oci::put_manifest(&client, repo, "v2", OCI_MANIFEST, &manifest_bytes),
        "PUT a manifest",
    );
    assert_unsupported(
        &client.delete(&format!("/v2/{repo}/manifests/{}", manifest.digest)),
        "DELETE a manifest",
    );
    assert_unsupported(
        &client.delete(&format!("/v2/{repo}/manifests/v1")),
        "DELETE a tag",
    );
    assert_unsupported(
        &client.delete(&format!("/v2/{repo}/blobs/{blob_digest}")),
        "DELETE a blob",
    );
    let err = skopeo
        .try_copy(
            &layout.reference("v1"),
            &docker_ref(&registry.addr(), repo, "v3"),
        )
        .expect_err("skopeo pushed into a read-only registry");
    assert!(
        err.stderr.contains("405") || err.stderr.to_lowercase().contains("unsupported"),
        "skopeo's error does not show the 405: {err}"
    );
    before.assert_unchanged(&Snapshot::full(root.path()), "writes in read-only mode");

    // Reads go on.
    let pulled = work.path().join("pulled");
    skopeo.copy(
        &docker_ref(&registry.addr(), repo, "v1"),
        &format!("oci:{}:v1", pulled.display()),
    );
    assert_same_image(&layout, &OciLayout::open(&pulled), "v1");
    let reply = client.get(&format!("/v2/{repo}/blobs/{blob_digest}"));
    assert_status(&reply, 200, "GET a blob");
    assert_eq!(reply.body, b"a blob to delete");
    assert_status(
        &client.head(&format!("/v2/{repo}/manifests/{}", manifest.digest)),
        200,
        "HEAD a manifest",
    );
    assert_eq!(oci::list_tags(&client, repo), ["v1"]);
    assert_eq!(oci::catalog(&client), [repo]);
    before.assert_unchanged(&Snapshot::full(root.path()), "reads in read-only mode");
}
