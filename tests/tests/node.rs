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

use std::time::Duration;

use berth_tests::images::OciLayout;
use berth_tests::node::{Node, images_dir};
use berth_tests::readme;
use serde_json::Value;

/// A test: its name and its body.
type Test = (&'static str, fn(&Node));

/// The tests, in the order they run.
const TESTS: &[Test] = &[
    ("the_node_runs_a_pod", the_node_runs_a_pod),
    (
        "readme_install_runs_the_operator_in_the_cluster",
        readme_install_runs_the_operator_in_the_cluster,
    ),
    (
        "readme_deploy_runs_a_pod_pulled_from_the_nodes_registry",
        readme_deploy_runs_a_pod_pulled_from_the_nodes_registry,
    ),
    (
        "uninstall_leaves_no_lease_held",
        uninstall_leaves_no_lease_held,
    ),
];

/// The chart's release and namespace, as the README installs it.
const RELEASE: &str = "berth";
const RELEASE_NAMESPACE: &str = "berth-system";

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
    let ran = selected.len();
    println!("running {ran} tests on the node");
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
    let outcome = if failed.is_empty() && problems.is_empty() {
        "ok"
    } else {
        "FAILED"
    };
    println!(
        "\ntest result: {outcome}. {} passed; {} failed; {} filtered out",
        ran - failed.len(),
        failed.len(),
        TESTS.len() - ran
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

/// The README's `helm install` with the chart's defaults: the operator
/// image (built by `make images`, under the name the chart names) runs in
/// two pods, one of which takes the Lease.
fn readme_install_runs_the_operator_in_the_cluster(node: &Node) {
    node.run(readme::HELM_INSTALL);
    node.wait(
        "the operator's Deployment to be available",
        Duration::from_secs(120),
        || {
            let deployment = node.get(&["-n", RELEASE_NAMESPACE, "deployment", RELEASE])?;
            (deployment["status"]["availableReplicas"] == 2).then_some(())
        },
    );
    let holder = lease_holder(node).expect("the Lease has a holder");
    let pods = operator_pods(node);
    assert!(
        pods.iter().any(|pod| holder.starts_with(pod.as_str())),
        "the Lease holder {holder} is none of the operator pods {pods:?}"
    );
}

/// The README's deploy steps as written: the filesystem example Registry
/// becomes Ready from the real DaemonSet status; an image pushed through a
/// port-forward to its Service is pulled by the node's runtime from the
/// node's registry for a Pod that runs and prints.
fn readme_deploy_runs_a_pod_pulled_from_the_nodes_registry(node: &Node) {
    let started = std::time::Instant::now();
    node.run(readme::APPLY_FILESYSTEM_EXAMPLE);
    node.run(readme::WAIT_READY);
    eprintln!(
        "[node] Registry registry/local Ready {:.1} s after kubectl apply",
        started.elapsed().as_secs_f64()
    );
    let registries = node.run(readme::GET_REGISTRIES);
    assert!(registries.contains("local"), "{registries}");
    let registry = node
        .get(&["-n", "registry", "registry", "local"])
        .expect("registry/local");
    assert_eq!(
        registry["status"]["readyNodes"], 1,
        "{}",
        registry["status"]
    );
    assert_eq!(
        registry["status"]["desiredNodes"], 1,
        "{}",
        registry["status"]
    );

    // `my-layout`: the busybox test image, tagged `latest`.
    let work = tempfile::tempdir().expect("temporary directory");
    let layout = copy_layout(
        &images_dir().join("busybox"),
        &work.path().join("my-layout"),
    );
    layout.tag(&layout.tagged("1"), "latest");
    node.run_in(work.path(), readme::PORT_FORWARD);
    node.wait(
        "the port-forward to listen",
        Duration::from_secs(30),
        || {
            std::net::TcpStream::connect("127.0.0.1:5001")
                .ok()
                .map(|_| ())
        },
    );
    node.run_in(work.path(), readme::FIRST_PUSH);
    let pulled = std::time::Instant::now();
    node.run_in(work.path(), readme::RUN_POD);
    node.run_in(work.path(), readme::WAIT_POD);
    eprintln!(
        "[node] pod hello pulled from the node's registry and ran in {:.1} s",
        pulled.elapsed().as_secs_f64()
    );
    let logs = node.run_in(work.path(), readme::POD_LOGS);
    assert_eq!(logs.trim(), "pulled from the node");
    let pod = node.get(&["pod", "hello"]).expect("pod hello");
    let image_id = pod["status"]["containerStatuses"][0]["imageID"]
        .as_str()
        .unwrap_or_default();
    assert!(
        image_id.starts_with("localhost:5000/team/app@sha256:"),
        "the pod's image came from the node's registry: {image_id}"
    );
    node.stop_process("kubectl");
    node.kubectl(&["delete", "pod", "hello", "--wait=false"]);
}

/// `helm uninstall` removes the operator, and no Lease stays held by a
/// replica that is gone.
fn uninstall_leaves_no_lease_held(node: &Node) {
    node.run(&format!(
        "helm uninstall {RELEASE} --namespace {RELEASE_NAMESPACE} --wait"
    ));
    node.wait("the operator pods to go", Duration::from_secs(120), || {
        operator_pods(node).is_empty().then_some(())
    });
    if let Some(holder) = lease_holder(node) {
        panic!("the Lease is still held by {holder} after helm uninstall");
    }
}

/// The holder of the operator's Lease, when it has one.
fn lease_holder(node: &Node) -> Option<String> {
    let lease = node.get(&["-n", RELEASE_NAMESPACE, "lease", RELEASE])?;
    lease["spec"]["holderIdentity"]
        .as_str()
        .filter(|h| !h.is_empty())
        .map(str::to_owned)
}

/// The names of the operator's pods.
fn operator_pods(node: &Node) -> Vec<String> {
    let pods = node
        .get(&[
            "-n",
            RELEASE_NAMESPACE,
            "pods",
            "-l",
            "app.kubernetes.io/name=berth",
        ])
        .unwrap_or(Value::Null);
    pods["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_owned))
        .collect()
}

/// A copy of the OCI layout `from` at `to`.
fn copy_layout(from: &std::path::Path, to: &std::path::Path) -> OciLayout {
    let status = std::process::Command::new("cp")
        .arg("-r")
        .arg(from)
        .arg(to)
        .status()
        .expect("cp");
    assert!(
        status.success(),
        "cp -r {} {}",
        from.display(),
        to.display()
    );
    OciLayout::open(to)
}
