//! Layout interoperability with CNCF Distribution v3 on the azure and gcs
//! drivers: both servers run at once over the same container or bucket and
//! root directory. What one pushes, the other serves intact (skopeo pulls
//! it back with every digest), lists in its tags and catalog, and adds tags
//! to.
//!
//! Distribution v3's gcs driver resumes every chunked upload through a
//! resumable session it opens at www.googleapis.com, whatever the emulator
//! setting, so it cannot push layers to fake-gcs-server. On gcs,
//! Distribution's writes are covered where it needs no upload: the tag it
//! adds to what Berth pushed (its manifest links and tag files), which Berth
//! then serves.

use std::path::Path;

use berth_tests::azurite::Azurite;
use berth_tests::distribution::Distribution;
use berth_tests::http::Client;
use berth_tests::images::{OciLayout, assert_same_image, multi_arch_layout, single_image_layout};
use berth_tests::object_store::{Emulator, Gcs};
use berth_tests::oci;
use berth_tests::registry::BerthRegistry;
use berth_tests::skopeo::{Skopeo, docker_ref};

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;

/// Push a three-layer image (twice tagged) and a two-platform index through
/// `writer`, pull them back through `reader`, compare, check the reader's
/// tags and catalog, and let the reader add a tag the writer serves.
fn push_then_pull(writer: &str, reader: &str, reader_client: &Client, work: &Path) {
    let skopeo = Skopeo::new();
    let (single, _) =
        single_image_layout(&work.join("single"), "v1", &[16 * KIB, 6 * MIB, 100 * KIB]);
    let (multi, _) = multi_arch_layout(&work.join("multi"), "latest", &[8 * KIB, MIB]);
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
    assert_eq!(
        oci::catalog(reader_client),
        ["interop/app", "interop/multi"]
    );
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

/// One direction on emulator `E`.
fn interop<E: Emulator>(berth_writes: bool) {
    let store = E::start();
    let place = store.create("interop");
    let work = tempfile::tempdir().unwrap();
    let section = E::section(&place);
    let distribution = Distribution::start_v3(
        &format!("storage.{}", E::DRIVER),
        &section,
        &store.distribution_env(),
    );
    let berth = BerthRegistry::start(E::options(&place, false));
    if berth_writes {
        push_then_pull(
            &berth.addr(),
            &distribution.addr(),
            &distribution.client(),
            work.path(),
        );
    } else {
        push_then_pull(
            &distribution.addr(),
            &berth.addr(),
            &berth.client(),
            work.path(),
        );
    }
    let checked = store.assert_blobs_intact(&place);
    assert!(checked >= 8, "only {checked} blobs in the store");
}

#[test]
fn what_berth_pushes_to_azure_distribution_v3_serves() {
    interop::<Azurite>(true);
}

#[test]
fn what_distribution_v3_pushes_to_azure_berth_serves() {
    interop::<Azurite>(false);
}

#[test]
fn what_berth_pushes_to_gcs_distribution_v3_serves_and_tags() {
    interop::<Gcs>(true);
}
