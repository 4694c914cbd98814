//! The gcs driver against fake-gcs-server: every scenario of
//! [`berth_tests::object_store`], and a key file that is not a key (fake-gcs-server checks no credentials,
//! so a valid key with no rights cannot be tried here).

use berth_tests::object_store::Gcs;
use berth_tests::object_store::{self as scenario, Emulator};

#[test]
fn conformance_on_gcs_with_redirect() {
    scenario::conformance::<Gcs>(true);
}

#[test]
fn conformance_on_gcs_without_redirect() {
    scenario::conformance::<Gcs>(false);
}

#[test]
fn skopeo_round_trips_through_gcs_with_a_200_mib_layer() {
    scenario::skopeo_round_trips::<Gcs>();
}

#[test]
fn two_instances_on_one_bucket_share_a_chunked_upload() {
    scenario::two_instances::<Gcs>();
}

#[test]
fn fake_gcs_stopped_mid_push_then_restarted() {
    scenario::stopped_mid_push::<Gcs>();
}

#[test]
fn a_missing_bucket_makes_readyz_fail_naming_it() {
    scenario::missing_place::<Gcs>();
}

#[test]
fn a_key_file_that_is_no_key_stops_the_start_naming_the_key() {
    let store = Gcs::start();
    let dir = tempfile::tempdir().unwrap();
    let keyfile = dir.path().join("key.json");
    std::fs::write(
        &keyfile,
        r#"{"client_email":"a@b","private_key":"not a key"}"#,
    )
    .unwrap();
    let bucket = store.create("credentials-bucket").with_keyfile(&keyfile);
    let config = dir.path().join("config.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nstorage:\n  gcs:\n{}",
            indent(&bucket.section())
        ),
    )
    .unwrap();
    let out = berth_tests::registry::config_check(&config);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "config check accepted a bad key file"
    );
    assert!(
        stderr.contains("storage.gcs.keyfile"),
        "the error does not name the key:\n{stderr}"
    );
}

fn indent(yaml: &str) -> String {
    yaml.lines().map(|l| format!("    {l}\n")).collect()
}

#[test]
fn gcs_throughput_measurement() {
    scenario::throughput::<Gcs>();
}
