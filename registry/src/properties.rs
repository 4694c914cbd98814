//! Running property tests: a bounded number of generated cases per property,
//! so that `cargo test` stays fast, no regression files written into the
//! source tree, and each property's case count printed with the result.
//!
//! Every parser of client or file input (names, references, routes, range
//! headers, manifests, the configuration) has properties: it never panics,
//! whatever the input, and every error it returns carries the OCI error
//! code (or, for the configuration, the key) that the spec gives the case.

use proptest::strategy::Strategy;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

/// Cases for cheap parsers of short text.
pub const MANY: u32 = 2_000;

/// Cases for parsers of larger documents (manifests, configurations).
pub const SOME: u32 = 400;

/// Checks `property` on `cases` values of `strategy`; panics with the
/// smallest failing value proptest finds, and prints the case count.
pub fn check<S: Strategy>(
    name: &str,
    cases: u32,
    strategy: S,
    property: impl Fn(S::Value) -> Result<(), TestCaseError>,
) {
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    match runner.run(&strategy, property) {
        Ok(()) => println!("property {name}: {cases} cases passed"),
        Err(e) => panic!("property {name}: {e}"),
    }
}
