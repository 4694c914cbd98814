//! Berth on a real node: kubelet and containerd run the Registry's pods from
//! the images `make images` built, and pods pull their images from the
//! berth-registry beside them. Everything is asserted from outside, through
//! kubectl, helm, skopeo and the registry's own HTTP API, as a user would;
//! no status is patched by hand.
//!
//! This binary has its own `main` (`harness = false`): the node must be
//! started before any thread exists (it moves the process into namespaces
//! of its own), it is shared by every test, and the tests run one after
//! another, in the order a user would go: install the chart, apply a
//! Registry, push, pull, rotate, change, break, uninstall. Arguments that
//! do not start with `-` select tests by substring, as libtest's do.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::process::ExitCode;
use std::time::Instant;

use berth_tests::node::Node;

/// A test: its name and its body.
type Test = (&'static str, fn(&Node));

/// The tests, in the order they run.
const TESTS: &[Test] = &[("the_node_runs_a_pod", the_node_runs_a_pod)];

fn main() -> ExitCode {
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let selected: Vec<&Test> = TESTS
        .iter()
        .filter(|(name, _)| filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str())))
        .collect();
    if selected.is_empty() {
        println!("running 0 tests (none matches {filters:?})");
        return ExitCode::SUCCESS;
    }
    let node = match Node::start() {
        Ok(node) => node,
        Err(error) => {
            eprintln!("the test node did not start: {error}");
            return ExitCode::FAILURE;
        }
    };
    println!("running {} tests on the node", selected.len());
    let mut failed = Vec::new();
    for (name, test) in selected {
        let started = Instant::now();
        let result = catch_unwind(AssertUnwindSafe(|| test(&node)));
        let outcome = if result.is_ok() { "ok" } else { "FAILED" };
        println!(
            "test {name} ... {outcome} ({:.1} s)",
            started.elapsed().as_secs_f64()
        );
        if result.is_err() {
            failed.push(*name);
        }
    }
    let problems = node.stop();
    for problem in &problems {
        eprintln!("teardown: {problem}");
    }
    let total = TESTS.len();
    println!(
        "\ntest result: {}. {} passed; {} failed; {} filtered out",
        if failed.is_empty() && problems.is_empty() {
            "ok"
        } else {
            "FAILED"
        },
        total - failed.len() - (total - TESTS.len()),
        failed.len(),
        0
    );
    if failed.is_empty() && problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// A busybox pod on the pod network runs and prints.
fn the_node_runs_a_pod(node: &Node) {
    node.kubectl(&[
        "run",
        "hello",
        "--image=berth.test/busybox:1",
        "--image-pull-policy=Never",
        "--restart=Never",
        "--",
        "echo",
        "hello from the node",
    ]);
    node.wait(
        "pod hello to succeed",
        std::time::Duration::from_secs(60),
        || {
            let pod = node.get(&["pod", "hello"])?;
            (pod["status"]["phase"] == "Succeeded").then_some(())
        },
    );
    let logs = node.kubectl(&["logs", "hello"]);
    assert_eq!(logs.trim(), "hello from the node");
    node.kubectl(&["delete", "pod", "hello", "--wait=false"]);
}
