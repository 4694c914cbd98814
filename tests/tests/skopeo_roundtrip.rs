//! skopeo, a real client, copies images from an OCI layout into
//! berth-registry and back into another layout, with every manifest and
//! blob digest preserved.

use berth_tests::http::assert_status;
use berth_tests::images::{
    OciLayout, assert_same_image, assert_same_layout, multi_arch_layout, single_image_layout,
};
use berth_tests::oci::{self, OCI_INDEX, OCI_MANIFEST, sha256_digest};
use berth_tests::registry::{BerthRegistry, RegistryOptions};
use berth_tests::skopeo::{Skopeo, docker_ref};
use berth_tests::storage::verify_blobs;

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;

#[test]
fn multi_layer_image_round_trips() {
    let registry = BerthRegistry::start(RegistryOptions::new());
    let work = tempfile::tempdir().unwrap();
    let skopeo = Skopeo::new();
    let repo = "roundtrip/app";
    let (src, manifest) = single_image_layout(
        &work.path().join("src"),
        "v1",
        &[4 * KIB, 300 * KIB, 3 * MIB, 20 * MIB],
    );

    let remote = docker_ref(&registry.addr(), repo, "v1");
    skopeo.copy(&src.reference("v1"), &remote);
    // A second tag on the same content: every blob is already there.
    skopeo.copy(
        &src.reference("v1"),
        &docker_ref(&registry.addr(), repo, "v2"),
    );

    // The manifest is served byte for byte, by tag and by digest.
    let raw = skopeo.inspect_raw(&remote);
    assert_eq!(
        sha256_digest(&raw),
        manifest.digest,
        "manifest served by tag"
    );
    let client = registry.client();
    for reference in ["v1", "v2", manifest.digest.as_str()] {
        let reply = oci::get_manifest(&client, repo, reference);
        assert_status(&reply, 200, &format!("GET manifest {reference}"));
        assert_eq!(
            sha256_digest(&reply.body),
            manifest.digest,
            "manifest {reference}"
        );
        assert_eq!(
            reply.header("docker-content-digest"),
            Some(manifest.digest.as_str())
        );
        assert_eq!(reply.header("content-type"), Some(OCI_MANIFEST));
    }
    assert_eq!(oci::list_tags(&client, repo), ["v1", "v2"]);

    // Pull back, by tag and by digest.
    let dst = work.path().join("dst");
    skopeo.copy(&remote, &format!("oci:{}:v1", dst.display()));
    skopeo.copy(
        &docker_ref(&registry.addr(), repo, &manifest.digest),
        &format!("oci:{}:by-digest", dst.display()),
    );
    let dst = OciLayout::open(&dst);
    assert_same_image(&src, &dst, "v1");
    assert_eq!(dst.tagged("by-digest").digest, manifest.digest);
    assert_eq!(src.reachable().blobs.len(), 5, "config and four layers");

    let (checked, bad) = verify_blobs(registry.root());
    assert!(
        bad.is_empty(),
        "stored blobs that do not match their path: {bad:#?}"
    );
    assert!(checked >= 6, "only {checked} blobs stored");
}

#[test]
fn multi_arch_index_round_trips() {
    let registry = BerthRegistry::start(RegistryOptions::new());
    let work = tempfile::tempdir().unwrap();
    let skopeo = Skopeo::new();
    let repo = "roundtrip/multi";
    let (src, index) =
        multi_arch_layout(&work.path().join("src"), "latest", &[8 * KIB, MIB, 2 * MIB]);

    let remote = docker_ref(&registry.addr(), repo, "latest");
    skopeo.copy(&src.reference("latest"), &remote);

    let raw = skopeo.inspect_raw(&remote);
    assert_eq!(sha256_digest(&raw), index.digest, "index served by tag");
    let client = registry.client();
    let reply = oci::get_manifest(&client, repo, "latest");
    assert_status(&reply, 200, "GET index by tag");
    assert_eq!(reply.header("content-type"), Some(OCI_INDEX));
    assert_eq!(
        reply.header("docker-content-digest"),
        Some(index.digest.as_str())
    );
    // Every platform's manifest is there by digest.
    let reachable = src.reachable_from(&index);
    assert_eq!(
        reachable.manifests.len(),
        3,
        "index and two image manifests"
    );
    for digest in &reachable.manifests {
        let reply = oci::get_manifest(&client, repo, digest);
        assert_status(&reply, 200, &format!("GET manifest {digest}"));
        assert_eq!(&sha256_digest(&reply.body), digest);
    }
    for digest in &reachable.blobs {
        let reply = client.head(&format!("/v2/{repo}/blobs/{digest}"));
        assert_status(&reply, 200, &format!("HEAD blob {digest}"));
        let size = std::fs::metadata(src.blob_path(digest))
            .unwrap()
            .len()
            .to_string();
        assert_eq!(
            reply.header("content-length"),
            Some(size.as_str()),
            "size of {digest}"
        );
    }

    let dst = work.path().join("dst");
    skopeo.copy(&remote, &format!("oci:{}:latest", dst.display()));
    assert_same_layout(&src, &OciLayout::open(&dst));

    let (_, bad) = verify_blobs(registry.root());
    assert!(
        bad.is_empty(),
        "stored blobs that do not match their path: {bad:#?}"
    );
}
