//! Layout interoperability with CNCF Distribution 2.8 on S3: both servers
//! run at once over the same MinIO bucket and root directory. What one
//! pushes, the other serves intact (skopeo pulls it back with every digest),
//! lists in its tags and catalog, and adds tags to.

use std::path::Path;

use berth_tests::distribution::Distribution;
use berth_tests::http::Client;
use berth_tests::images::{OciLayout, assert_same_image, multi_arch_layout, single_image_layout};
use berth_tests::minio::{Minio, S3Bucket};
use berth_tests::oci;
use berth_tests::registry::{BerthRegistry, RegistryOptions};
use berth_tests::skopeo::{Skopeo, docker_ref};

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;

/// Two layouts in `work`: a three-layer image tagged `v1` and a
/// two-platform index tagged `latest`.
fn layouts(work: &Path) -> (OciLayout, OciLayout) {
    let (single, _) =
        single_image_layout(&work.join("single"), "v1", &[16 * KIB, 6 * MIB, 512 * KIB]);
    let (multi, _) = multi_arch_layout(&work.join("multi"), "latest", &[8 * KIB, MIB]);
    (single, multi)
}

/// Push both layouts through the server at `writer`, then pull them back
/// through the server at `reader` and compare; tag lists and catalog as
/// the reader sees them must match.
fn push_then_pull(writer: &str, reader: &str, reader_client: &Client, work: &Path) {
    let skopeo = Skopeo::new();
    let (single, multi) = layouts(work);
    skopeo.copy(
        &single.reference("v1"),
        &docker_ref(writer, "interop/app", "v1"),
    );
    skopeo.copy(
        &single.reference("v1"),
        &docker_ref(writer, "interop/app", "v2"),
    );
    skopeo.copy(
        &multi.reference("latest"),
        &docker_ref(writer, "interop/multi", "latest"),
    );

    let pulled = work.join("pulled");
    skopeo.copy(
        &docker_ref(reader, "interop/app", "v2"),
        &format!("oci:{}:v1", pulled.display()),
    );
    skopeo.copy(
        &docker_ref(reader, "interop/multi", "latest"),
        &format!("oci:{}:latest", pulled.display()),
    );
    let pulled = OciLayout::open(&pulled);
    assert_same_image(&single, &pulled, "v1");
    assert_same_image(&multi, &pulled, "latest");
    assert_eq!(oci::list_tags(reader_client, "interop/app"), ["v1", "v2"]);
    assert_eq!(oci::list_tags(reader_client, "interop/multi"), ["latest"]);
    assert_eq!(
        oci::catalog(reader_client),
        ["interop/app", "interop/multi"]
    );

    // The reader adds a tag to a repository the writer created.
    skopeo.copy(
        &single.reference("v1"),
        &docker_ref(reader, "interop/app", "v3"),
    );
    let back = work.join("back");
    skopeo.copy(
        &docker_ref(writer, "interop/app", "v3"),
        &format!("oci:{}:v1", back.display()),
    );
    assert_same_image(&single, &OciLayout::open(&back), "v1");
}

fn bucket(minio: &Minio) -> S3Bucket {
    minio
        .create_bucket("interop")
        .with_root_directory("/shared")
}

fn assert_intact(minio: &Minio, bucket: &S3Bucket) {
    let (checked, bad) = minio.verify_blobs(bucket);
    assert!(
        bad.is_empty(),
        "blobs that do not match their key: {bad:#?}"
    );
    assert!(checked >= 8, "only {checked} blobs in the bucket");
}

#[test]
fn what_berth_pushes_to_s3_distribution_serves() {
    let minio = Minio::start();
    let bucket = bucket(&minio);
    let work = tempfile::tempdir().unwrap();
    let berth = BerthRegistry::start(RegistryOptions::new().s3(&bucket, true));
    let distribution = Distribution::start_s3(&bucket, false);
    push_then_pull(
        &berth.addr(),
        &distribution.addr(),
        &distribution.client(),
        work.path(),
    );
    assert_eq!(
        oci::list_tags(&berth.client(), "interop/app"),
        ["v1", "v2", "v3"]
    );
    assert_intact(&minio, &bucket);
}

#[test]
fn what_distribution_pushes_to_s3_berth_serves() {
    let minio = Minio::start();
    let bucket = bucket(&minio);
    let work = tempfile::tempdir().unwrap();
    let distribution = Distribution::start_s3(&bucket, true);
    let berth = BerthRegistry::start(RegistryOptions::new().s3(&bucket, false));
    push_then_pull(
        &distribution.addr(),
        &berth.addr(),
        &berth.client(),
        work.path(),
    );
    assert_eq!(
        oci::list_tags(&distribution.client(), "interop/app"),
        ["v1", "v2", "v3"]
    );
    assert_intact(&minio, &bucket);
}
