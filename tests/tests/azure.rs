//! The azure driver against Azurite: every scenario of
//! [`berth_tests::object_store`], and wrong account keys.

use berth_tests::azurite::Azurite;
use berth_tests::object_store::{self as scenario, Emulator};

#[test]
fn conformance_on_azure_with_redirect() {
    scenario::conformance::<Azurite>(true);
}

#[test]
fn conformance_on_azure_without_redirect() {
    scenario::conformance::<Azurite>(false);
}

#[test]
fn skopeo_round_trips_through_azure_with_a_200_mib_layer() {
    scenario::skopeo_round_trips::<Azurite>();
}

#[test]
fn two_instances_on_one_container_share_a_chunked_upload() {
    scenario::two_instances::<Azurite>();
}

#[test]
fn azurite_stopped_mid_push_then_restarted() {
    scenario::stopped_mid_push::<Azurite>();
}

#[test]
fn a_missing_container_makes_readyz_fail_naming_it() {
    scenario::missing_place::<Azurite>();
}

#[test]
fn a_wrong_account_key_makes_readyz_fail_naming_the_container() {
    let store = Azurite::start();
    // A valid key, but not the account's.
    let wrong = store
        .create("credentials-container")
        .with_account_key("bm90LXRoZS1hY2NvdW50LWtleS1ub3QtdGhlLWFjY291bnQta2V5");
    scenario::refused_names_the_place(&store, &wrong, "credentials-container");
}

#[test]
fn azure_throughput_measurement() {
    scenario::throughput::<Azurite>();
}
