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
//! Registry, push, pull, rotate, change, break, uninstall. Later tests
//! build on what earlier ones set up, so run the binary whole; arguments
//! that do not start with `-` select tests by substring, as libtest's do.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use berth_tests::certs::{CertifiedKey, TestCa};
use berth_tests::containerd::snapshot;
use berth_tests::images::{OciLayout, image_on_top};
use berth_tests::minio::{self, Minio};
use berth_tests::node::{MachineState, NODE_IP, Node, images_dir, undo_earlier_run};
use berth_tests::proxy::TcpProxy;
use berth_tests::readme;
use berth_tests::registry::{BerthRegistry, RegistryOptions};
use berth_tests::skopeo::{Skopeo, docker_ref};
use serde_json::Value;

/// What the tests share: the node, and an S3 server on the node's address
/// (pods reach it through their network's gateway).
struct Cluster {
    node: Node,
    minio: Minio,
}

/// A test: its name and its body.
type Test = (&'static str, fn(&Cluster));

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
        "s3_registry_serves_pods_and_its_gc_job_reports_to_status",
        s3_registry_serves_pods_and_its_gc_job_reports_to_status,
    ),
    (
        "private_ca_bucket_and_rotated_secrets_are_served_by_the_same_pod",
        private_ca_bucket_and_rotated_secrets_are_served_by_the_same_pod,
    ),
    (
        "a_spec_change_rolls_the_pod_onto_a_new_config",
        a_spec_change_rolls_the_pod_onto_a_new_config,
    ),
    (
        "a_killed_registry_restarts_and_still_serves",
        a_killed_registry_restarts_and_still_serves,
    ),
    (
        "in_server_gc_reports_each_node_in_status",
        in_server_gc_reports_each_node_in_status,
    ),
    (
        "a_deleted_operator_pod_hands_over_the_lease",
        a_deleted_operator_pod_hands_over_the_lease,
    ),
    (
        "containerd_pulls_through_the_nodes_registry_and_deletion_restores_its_hosts_dir",
        containerd_pulls_through_the_nodes_registry_and_deletion_restores_its_hosts_dir,
    ),
    (
        "a_deleted_registry_leaves_the_nodes_content",
        a_deleted_registry_leaves_the_nodes_content,
    ),
    (
        "pod_security_rejection_is_named_in_status",
        pod_security_rejection_is_named_in_status,
    ),
    (
        "uninstall_leaves_no_lease_held",
        uninstall_leaves_no_lease_held,
    ),
    (
        "the_operator_runs_outside_the_cluster",
        the_operator_runs_outside_the_cluster,
    ),
];

/// Host ports of the tests' Registries (the README's own uses 5000).
const SHARED_PORT: u16 = 5002;
const SECURE_PORT: u16 = 5003;
const HOSTS_PORT: u16 = 5004;
/// The bucket the S3 Registries share (each below its own root directory).
const BUCKET: &str = "node-images";

/// The chart's release and namespace, as the README installs it.
const RELEASE: &str = "berth";
const RELEASE_NAMESPACE: &str = "berth-system";

/// Set in the environment of the run that `a_crashed_run_leaves_a_node`
/// starts: it starts the node and aborts.
const CRASH_ENV: &str = "BERTH_NODE_TEST_CRASH";

fn main() -> ExitCode {
    if std::env::var_os(CRASH_ENV).is_some() {
        let _node = Node::start();
        std::process::abort();
    }
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
    if let Err(error) = undo_earlier_run() {
        eprintln!("{error}");
        return ExitCode::FAILURE;
    }
    let machine_before = MachineState::now();
    let mut results = Results::default();
    // The node's own start must undo what a crashed run left.
    let crashed = a_crashed_run_leaves_a_node();
    let node = match Node::start() {
        Ok(node) => node,
        Err(error) => {
            eprintln!("the test node did not start: {error}");
            return ExitCode::FAILURE;
        }
    };
    results.record("a_crashed_run_is_undone_by_the_next", crashed);
    let minio = Minio::start_on(NODE_IP);
    minio.create_bucket(BUCKET);
    let cluster = Cluster { node, minio };
    for (name, test) in &selected {
        let started = Instant::now();
        let result = catch_unwind(AssertUnwindSafe(|| test(&cluster)));
        eprintln!("[node] {name}: {:.1} s", started.elapsed().as_secs_f64());
        results.record(name, result.map_err(|_| "panicked".to_owned()));
    }
    let Cluster { node, minio } = cluster;
    drop(minio);
    let problems = node.stop();
    let machine_after = MachineState::now();
    let restored = if !problems.is_empty() {
        Err(format!("teardown: {}", problems.join("; ")))
    } else if machine_after != machine_before {
        Err(format!(
            "before: {machine_before:?}\nafter: {machine_after:?}"
        ))
    } else {
        Ok(())
    };
    results.record("the_machine_is_as_before_the_run", restored);
    results.summary(TESTS.len() - selected.len())
}

/// Outcomes of the tests, printed as libtest prints them.
#[derive(Default)]
struct Results {
    passed: usize,
    failed: Vec<String>,
}

impl Results {
    fn record(&mut self, name: &str, result: Result<(), String>) {
        match result {
            Ok(()) => {
                println!("test {name} ... ok");
                self.passed += 1;
            }
            Err(why) => {
                println!("test {name} ... FAILED\n{why}");
                self.failed.push(name.to_owned());
            }
        }
    }

    fn summary(self, filtered: usize) -> ExitCode {
        let outcome = if self.failed.is_empty() {
            "ok"
        } else {
            "FAILED"
        };
        println!(
            "\ntest result: {outcome}. {} passed; {} failed; {filtered} filtered out",
            self.passed,
            self.failed.len()
        );
        if self.failed.is_empty() {
            ExitCode::SUCCESS
        } else {
            println!("failures: {}", self.failed.join(", "));
            ExitCode::FAILURE
        }
    }
}

/// Runs this binary as a run that starts the node and crashes, and checks
/// that it left a node behind (processes, cgroups, data, its ledger) for
/// the next start to undo.
fn a_crashed_run_leaves_a_node() -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let status = std::process::Command::new(exe)
        .env(CRASH_ENV, "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .map_err(|e| e.to_string())?;
    if status.success() {
        return Err(format!("the crashing run exited {status}"));
    }
    let left = MachineState::now();
    if left.ledger && left.cgroups && left.data_dir {
        Ok(())
    } else {
        Err(format!("the crashed run left no node behind: {left:?}"))
    }
}

/// A busybox pod on the pod network runs and prints.
fn the_node_runs_a_pod(cluster: &Cluster) {
    let node = &cluster.node;
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
fn readme_install_runs_the_operator_in_the_cluster(cluster: &Cluster) {
    let node = &cluster.node;
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
fn readme_deploy_runs_a_pod_pulled_from_the_nodes_registry(cluster: &Cluster) {
    let node = &cluster.node;
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
    // The same push straight to the node's address is refused: without
    // `auth`, a default Registry takes writes only over the pod's loopback,
    // which is where the port-forward arrives.
    let direct = node
        .command("skopeo")
        .current_dir(work.path())
        .args([
            "copy",
            "--dest-tls-verify=false",
            "oci:my-layout:latest",
            &format!("docker://{NODE_IP}:5000/team/app:direct"),
        ])
        .output()
        .expect("run skopeo");
    let refusal = String::from_utf8_lossy(&direct.stderr);
    assert!(
        !direct.status.success() && refusal.contains("denied"),
        "a push to {NODE_IP}:5000 without credentials: {refusal}"
    );
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
fn uninstall_leaves_no_lease_held(cluster: &Cluster) {
    let node = &cluster.node;
    node.run(readme::HELM_UNINSTALL);
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

/// The namespace `name` (allowed privileged pods: hostPort) with the
/// Secret of MinIO's keys.
fn s3_namespace(name: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Namespace
metadata:
  name: {name}
  labels:
    pod-security.kubernetes.io/enforce: privileged
---
apiVersion: v1
kind: Secret
metadata:
  name: registry-s3
  namespace: {name}
stringData:
  accessKey: {access}
  secretKey: {secret}
"#,
        access = minio::ACCESS_KEY,
        secret = minio::SECRET_KEY,
    )
}

/// A Registry `name` in the namespace of the same name, on S3 (the MinIO
/// at `endpoint`, below its own root directory, blob downloads redirected
/// to MinIO), on host port `port`, with a GC schedule, and with TLS,
/// htpasswd and the `registry-ca` Secret's CA trusted when `secure`.
fn s3_registry(endpoint: &str, name: &str, port: u16, secure: bool) -> String {
    let security = if secure {
        "  tls:\n    secretName: registry-tls\n  auth:\n    htpasswd:\n      secretName: registry-htpasswd\n  trustedCA:\n    secretName: registry-ca\n"
    } else {
        // Pushed to straight through the node's port.
        "  unauthenticatedWrites: Anywhere\n"
    };
    format!(
        r#"apiVersion: berth.dev/v1alpha1
kind: Registry
metadata:
  name: {name}
  namespace: {name}
spec:
  storage:
    s3:
      bucket: {BUCKET}
      region: {region}
      endpoint: {endpoint}
      forcePathStyle: true
      rootDirectory: {name}
      credentialsSecret: registry-s3
      redirect: true
  exposure:
    mode: HostPort
    port: {port}
  gc:
    schedule: "0 3 * * *"
    deleteUntagged: true
{security}"#,
        region = minio::REGION,
    )
}

/// Waits until the Registry `namespace/name` is Ready at its current
/// generation, and returns it.
fn wait_ready(node: &Node, namespace: &str, name: &str) -> Value {
    node.wait(
        &format!("Registry {namespace}/{name} to be Ready"),
        Duration::from_secs(120),
        || {
            let registry = node.get(&["-n", namespace, "registry", name])?;
            let status = &registry["status"];
            let ready = status["conditions"]
                .as_array()?
                .iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True");
            (ready && status["observedGeneration"] == registry["metadata"]["generation"])
                .then_some(registry)
        },
    )
}

/// The one registry pod of `namespace`: its name, UID and restart count.
fn registry_pod(node: &Node, namespace: &str) -> Option<(String, String, u64)> {
    let pods = node.get(&[
        "-n",
        namespace,
        "pods",
        "-l",
        "app.kubernetes.io/component=registry",
    ])?;
    let items = pods["items"].as_array()?;
    let [pod] = items.as_slice() else {
        return None;
    };
    let ready = pod["status"]["conditions"]
        .as_array()?
        .iter()
        .any(|c| c["type"] == "Ready" && c["status"] == "True");
    if !ready || pod["metadata"]["deletionTimestamp"].is_string() {
        return None;
    }
    Some((
        pod["metadata"]["name"].as_str()?.to_owned(),
        pod["metadata"]["uid"].as_str()?.to_owned(),
        pod["status"]["containerStatuses"][0]["restartCount"].as_u64()?,
    ))
}

/// Pushes the busybox test image to `registry` (`127.0.0.1:PORT/REPO:TAG`)
/// with skopeo, with `creds` when given.
fn push_busybox(node: &Node, reference: &str, creds: Option<&str>) {
    let layout = images_dir().join("busybox");
    let mut line = "skopeo copy --dest-tls-verify=false".to_owned();
    if let Some(creds) = creds {
        line.push_str(&format!(" --dest-creds {creds}"));
    }
    line.push_str(&format!(" oci:{}:1 docker://{reference}", layout.display()));
    node.run(&line);
}

/// Runs a pod `name` in `namespace` with `image` (always pulled) printing
/// `message`, and asserts that it printed it.
fn run_pod(node: &Node, namespace: &str, name: &str, image: &str, message: &str) {
    node.kubectl(&[
        "-n",
        namespace,
        "run",
        name,
        &format!("--image={image}"),
        "--image-pull-policy=Always",
        "--restart=Never",
        "--",
        "echo",
        message,
    ]);
    node.wait(
        &format!("pod {namespace}/{name} to succeed"),
        Duration::from_secs(120),
        || {
            let pod = node.get(&["-n", namespace, "pod", name])?;
            (pod["status"]["phase"] == "Succeeded").then_some(())
        },
    );
    let logs = node.kubectl(&["-n", namespace, "logs", name]);
    assert_eq!(logs.trim(), message);
    node.kubectl(&["-n", namespace, "delete", "pod", name, "--wait=false"]);
}

/// A Registry on S3: pods pull what was pushed through the node's
/// instance; a GC Job made from its CronJob runs as a real pod and its
/// report reaches `status.lastGC`.
fn s3_registry_serves_pods_and_its_gc_job_reports_to_status(cluster: &Cluster) {
    let node = &cluster.node;
    node.apply(&s3_namespace("shared"));
    node.apply(&s3_registry(
        &cluster.minio.endpoint(),
        "shared",
        SHARED_PORT,
        false,
    ));
    let registry = wait_ready(node, "shared", "shared");
    assert_eq!(registry["status"]["storage"], "S3");
    assert_eq!(registry["status"]["gcMode"], "CronJob");
    push_busybox(node, &format!("127.0.0.1:{SHARED_PORT}/team/tools:1"), None);
    run_pod(
        node,
        "shared",
        "from-s3",
        &format!("localhost:{SHARED_PORT}/team/tools:1"),
        "pulled through S3",
    );
    let (blobs, bad) = cluster
        .minio
        .verify_blobs(&cluster.minio.bucket(BUCKET).with_root_directory("shared"));
    assert!(
        blobs >= 2 && bad.is_empty(),
        "{blobs} blobs in the bucket, wrong: {bad:?}"
    );

    node.kubectl(&[
        "-n",
        "shared",
        "create",
        "job",
        "--from=cronjob/shared-gc",
        "gc-now",
    ]);
    let last_gc = node.wait("status.lastGC", Duration::from_secs(120), || {
        let registry = node.get(&["-n", "shared", "registry", "shared"])?;
        let last = registry["status"]["lastGC"].clone();
        last.is_object().then_some(last)
    });
    assert_eq!(last_gc["outcome"], "Succeeded", "{last_gc}");
}

/// A certificate for the registry at 127.0.0.1, its Secret's YAML.
fn tls_secret(node: &Node, dir: &Path, pair: &CertifiedKey) -> String {
    let (cert, key) = (dir.join("tls.crt"), dir.join("tls.key"));
    pair.write(&cert, &key);
    node.kubectl(&[
        "-n",
        "secure",
        "create",
        "secret",
        "tls",
        "registry-tls",
        &format!("--cert={}", cert.display()),
        &format!("--key={}", key.display()),
        "--dry-run=client",
        "-o",
        "yaml",
    ])
}

/// The YAML of the Secret `name` in the namespace `secure` whose key `key`
/// holds the file `file`.
fn file_secret(node: &Node, name: &str, key: &str, file: &Path) -> String {
    node.kubectl(&[
        "-n",
        "secure",
        "create",
        "secret",
        "generic",
        name,
        &format!("--from-file={key}={}", file.display()),
        "--dry-run=client",
        "-o",
        "yaml",
    ])
}

/// An htpasswd Secret's YAML for `user:password`.
fn htpasswd_secret(node: &Node, dir: &Path, user: &str, password: &str) -> String {
    let file = dir.join("htpasswd");
    berth_tests::htpasswd::write(&file, &[(user, password)]);
    file_secret(node, "registry-htpasswd", "htpasswd", &file)
}

/// The HTTP status of `GET /v2/` over TLS on `port`, trusting only `ca` and
/// only a server key whose pin is `pin`, as `user:password`; 0 when TLS
/// fails (another certificate is served).
fn v2_status(ca: &Path, pin: &str, port: u16, user: &str, password: &str) -> u16 {
    let transfer = berth_tests::curl::run(
        &[
            "--cacert".into(),
            ca.display().to_string(),
            "--pinnedpubkey".into(),
            pin.into(),
            "-u".into(),
            format!("{user}:{password}"),
            format!("https://127.0.0.1:{port}/v2/"),
        ],
        None,
    );
    if transfer.ok() { transfer.status } else { 0 }
}

/// A Registry on a bucket behind a private CA (`trustedCA`) becomes Ready;
/// then its TLS and htpasswd Secrets are rotated: the same pod (same UID,
/// no restart) serves the new certificate and accepts the new password
/// within the kubelet's Secret sync, and refuses the old password.
fn private_ca_bucket_and_rotated_secrets_are_served_by_the_same_pod(cluster: &Cluster) {
    let node = &cluster.node;
    let work = tempfile::tempdir().expect("temporary directory");
    let ca = TestCa::new("berth-node-registry-ca");
    let ca_file = ca.write_cert(&work.path().join("ca.crt"));
    let (first, second) = (ca.server_cert("registry"), ca.server_cert("registry"));
    node.apply(&s3_namespace("secure"));
    node.apply(&tls_secret(node, work.path(), &first));
    node.apply(&htpasswd_secret(
        node,
        work.path(),
        "alice",
        "first-password",
    ));
    // Its bucket is behind a private CA, which only `trustedCA` makes the
    // pod trust: the Registry is Ready only once `/readyz` reached it.
    let private = Minio::start_tls_on(NODE_IP, &ca);
    private.create_bucket(BUCKET);
    node.apply(&file_secret(node, "registry-ca", "ca.crt", &ca_file));
    node.apply(&s3_registry(
        &private.endpoint(),
        "secure",
        SECURE_PORT,
        true,
    ));
    wait_ready(node, "secure", "secure");
    assert_eq!(
        v2_status(&ca_file, &first.pin, SECURE_PORT, "alice", "first-password"),
        200
    );
    let before = registry_pod(node, "secure").expect("the registry pod");

    let rotated = Instant::now();
    node.apply(&tls_secret(node, work.path(), &second));
    node.apply(&htpasswd_secret(
        node,
        work.path(),
        "alice",
        "second-password",
    ));
    node.wait(
        "the new certificate and password",
        Duration::from_secs(120),
        || {
            (v2_status(
                &ca_file,
                &second.pin,
                SECURE_PORT,
                "alice",
                "second-password",
            ) == 200)
                .then_some(())
        },
    );
    eprintln!(
        "[node] rotated certificate and password served {:.1} s after the Secrets changed",
        rotated.elapsed().as_secs_f64()
    );
    assert_eq!(
        v2_status(
            &ca_file,
            &second.pin,
            SECURE_PORT,
            "alice",
            "first-password"
        ),
        401
    );
    assert_eq!(
        v2_status(
            &ca_file,
            &first.pin,
            SECURE_PORT,
            "alice",
            "second-password"
        ),
        0
    );
    let after = registry_pod(node, "secure").expect("the registry pod");
    assert_eq!(
        after, before,
        "the same pod, not restarted, serves the rotated Secrets"
    );
}

/// The config ConfigMaps of the Registry in `namespace`.
fn config_maps(node: &Node, namespace: &str) -> Vec<String> {
    let maps = node
        .get(&[
            "-n",
            namespace,
            "configmaps",
            "-l",
            "app.kubernetes.io/component=config",
        ])
        .unwrap_or(Value::Null);
    maps["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["metadata"]["name"].as_str().map(str::to_owned))
        .collect()
}

/// The config ConfigMap a pod mounts.
fn mounted_config(node: &Node, namespace: &str, pod: &str) -> String {
    let pod = node.get(&["-n", namespace, "pod", pod]).expect("the pod");
    pod["spec"]["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .find_map(|v| v["configMap"]["name"].as_str().map(str::to_owned))
        .expect("a config volume")
}

/// A spec change rolls the pod: the new pod is Ready and mounts a new
/// config ConfigMap holding the change; once a second change has rolled
/// out too, the first config is gone and only the current one and the one
/// before remain.
fn a_spec_change_rolls_the_pod_onto_a_new_config(cluster: &Cluster) {
    let node = &cluster.node;
    let (first_pod, _, _) = registry_pod(node, "shared").expect("the registry pod");
    let first_config = mounted_config(node, "shared", &first_pod);
    let mut previous = first_pod;
    for level in ["debug", "warn"] {
        node.kubectl(&[
            "-n",
            "shared",
            "patch",
            "registry",
            "shared",
            "--type=merge",
            "-p",
            &format!(r#"{{"spec":{{"logLevel":"{level}"}}}}"#),
        ]);
        wait_ready(node, "shared", "shared");
        let pod = node.wait("a new registry pod", Duration::from_secs(120), || {
            registry_pod(node, "shared").filter(|(name, _, _)| *name != previous)
        });
        let config = mounted_config(node, "shared", &pod.0);
        let map = node
            .get(&["-n", "shared", "configmap", &config])
            .expect("the mounted ConfigMap");
        assert_eq!(map["immutable"], true);
        let file = map["data"]["config.yml"].as_str().unwrap_or_default();
        assert!(file.contains(&format!("level: {level}")), "{file}");
        previous = pod.0;
    }
    let remaining = node.wait(
        "the first config to be deleted",
        Duration::from_secs(60),
        || {
            let maps = config_maps(node, "shared");
            (!maps.contains(&first_config)).then_some(maps)
        },
    );
    assert_eq!(
        remaining.len(),
        2,
        "the current config and the one before: {remaining:?}"
    );
}

/// A hostPath Registry collects in each pod at the schedule's times; with
/// `dryRun` nothing is deleted, and each node's last collection reaches
/// `status.nodeGC` (the operator asks the pods through the API server).
fn in_server_gc_reports_each_node_in_status(cluster: &Cluster) {
    let node = &cluster.node;
    let patch = r#"{"spec":{"gc":{"schedule":"* * * * *","dryRun":true}}}"#;
    node.kubectl(&[
        "-n",
        "registry",
        "patch",
        "registry",
        "local",
        "--type=merge",
        "-p",
        patch,
    ]);
    let patched = std::time::Instant::now();
    let registry = wait_ready(node, "registry", "local");
    assert_eq!(registry["status"]["gcMode"], "InServer");
    let (pod, _, _) = registry_pod(node, "registry").expect("the registry pod");
    let config = mounted_config(node, "registry", &pod);
    let map = node
        .get(&["-n", "registry", "configmap", &config])
        .expect("the mounted ConfigMap");
    let file = map["data"]["config.yml"].as_str().unwrap_or_default();
    assert!(
        file.contains("gcschedule")
            && file.contains("* * * * *")
            && file.contains("gcdryrun: true"),
        "{file}"
    );
    let result = node.wait(
        "the node's collection in status.nodeGC",
        Duration::from_secs(180),
        || {
            let registry = node.get(&["-n", "registry", "registry", "local"])?;
            let results = registry["status"]["nodeGC"].as_array()?.clone();
            let result = results.first()?.clone();
            (result["node"] == "localhost").then_some(result)
        },
    );
    eprintln!(
        "[node] in-server collection in status {:.1} s after the schedule was set: {result}",
        patched.elapsed().as_secs_f64()
    );
    assert_eq!(result["outcome"], "Succeeded", "{result}");
    assert!(result["time"].as_str().is_some(), "{result}");
    // A dry run deleted nothing: the image pushed earlier still runs.
    run_pod(
        node,
        "registry",
        "after-gc",
        "localhost:5000/team/app:latest",
        "still here",
    );
}

/// Killing the registry process on the node (by its PID) makes kubelet
/// restart it, and the image pushed before still pulls.
fn a_killed_registry_restarts_and_still_serves(cluster: &Cluster) {
    let node = &cluster.node;
    let (name, uid, restarts) = registry_pod(node, "registry").expect("the registry pod");
    let containers = node.run(
        "crictl --runtime-endpoint unix:///run/containerd/containerd.sock ps --name registry --label io.kubernetes.pod.namespace=registry -q",
    );
    let container = containers
        .lines()
        .next()
        .expect("the registry container")
        .trim()
        .to_owned();
    let inspect: Value = serde_json::from_str(&node.run(&format!(
        "crictl --runtime-endpoint unix:///run/containerd/containerd.sock inspect {container}"
    )))
    .expect("crictl inspect prints JSON");
    let pid = inspect["info"]["pid"]
        .as_i64()
        .expect("the container's pid");
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    assert_eq!(
        comm.trim(),
        "berth-registry",
        "pid {pid} is the registry process"
    );
    // SAFETY: kill only sends a signal.
    unsafe {
        libc::kill(pid as i32, libc::SIGKILL);
    }
    let after = node.wait(
        "kubelet to restart the registry",
        Duration::from_secs(120),
        || registry_pod(node, "registry").filter(|(_, _, r)| *r > restarts),
    );
    assert_eq!(
        (after.0, after.1),
        (name, uid),
        "the same pod, its container restarted"
    );
    run_pod(
        node,
        "default",
        "after-restart",
        "localhost:5000/team/app:latest",
        "pulled after a restart",
    );
}

/// Deleting the operator pod that holds the Lease: the other replica takes
/// the Lease over and reconciles.
fn a_deleted_operator_pod_hands_over_the_lease(cluster: &Cluster) {
    let node = &cluster.node;
    let holder = lease_holder(node).expect("a Lease holder");
    let leader = operator_pods(node)
        .into_iter()
        .find(|pod| holder.starts_with(pod.as_str()))
        .expect("the leader is an operator pod");
    let started = Instant::now();
    node.kubectl(&[
        "-n",
        RELEASE_NAMESPACE,
        "delete",
        "pod",
        &leader,
        "--wait=false",
    ]);
    let next = node.wait(
        "another replica to take the Lease",
        Duration::from_secs(60),
        || lease_holder(node).filter(|h| !h.starts_with(leader.as_str())),
    );
    eprintln!(
        "[node] the Lease passed from {holder} to {next} in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    node.kubectl(&[
        "-n",
        "shared",
        "patch",
        "registry",
        "shared",
        "--type=merge",
        "-p",
        r#"{"spec":{"logLevel":"info"}}"#,
    ]);
    wait_ready(node, "shared", "shared");
}

/// A Registry with `spec.containerd` (the test node's hosts directory,
/// the name `berth.local`) and a mirror: its init container writes the
/// hosts files next to another tool's, a pod whose image is
/// `berth.local/...` starts from what was pushed to the Registry, and
/// deleting the Registry leaves the hosts directory exactly as it was.
fn containerd_pulls_through_the_nodes_registry_and_deletion_restores_its_hosts_dir(
    cluster: &Cluster,
) {
    use std::os::unix::fs::PermissionsExt;
    let node = &cluster.node;
    let hosts_dir = node.dir().join("containerd/certs.d");
    // Another tool's configuration for the mirrored host, and one for a
    // host Berth does not touch.
    for (host, mode) in [("docker.io", 0o600), ("other.example", 0o644)] {
        let dir = hosts_dir.join(host);
        std::fs::create_dir_all(&dir).expect("create host dir");
        let file = dir.join("hosts.toml");
        std::fs::write(
            &file,
            format!("server = \"https://{host}\"\n# written by another tool\n"),
        )
        .expect("write hosts.toml");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }
    let before = snapshot(&hosts_dir);
    // An "upstream" public registry: a berth-registry process on loopback,
    // shown on the node's bridge address, holding busybox with a layer of
    // its own on top (the node holds busybox's layers from other pods, and
    // containerd fetches only what it lacks).
    let mut upstream = BerthRegistry::start(RegistryOptions::new());
    let upstream_port = upstream.addr().rsplit(':').next().map(str::to_owned);
    let upstream_port: u16 = upstream_port
        .and_then(|p| p.parse().ok())
        .expect("the upstream's port");
    let on_bridge = TcpProxy::start_on(NODE_IP, upstream_port);
    let work = tempfile::tempdir().expect("temporary directory");
    let (on_top, _) = image_on_top(
        &OciLayout::open(&images_dir().join("busybox")),
        "1",
        &work.path().join("on-top"),
        64 * 1024,
    );
    Skopeo::new().copy(
        &on_top.reference("1"),
        &docker_ref(&upstream.addr(), "library/busybox", "1"),
    );

    node.apply(&s3_namespace("hosts"));
    let mut registry = s3_registry(&cluster.minio.endpoint(), "hosts", HOSTS_PORT, false);
    let cache_root = node.dir().join("nodecache");
    registry.push_str(&format!(
        "  mirrors:\n  - host: docker.io\n  - host: upstream.test\n    url: http://{NODE_IP}:{}\n    tagTTL: 1s\n  containerd:\n    hostsDir: {}\n    registryName: berth.local\n  nodeCache:\n    size: 64Mi\n    path: {}\n",
        on_bridge.port(),
        hosts_dir.display(),
        cache_root.display()
    ));
    node.apply(&registry);
    let ready = node.wait(
        "the hosts files written and the Registry Ready",
        Duration::from_secs(180),
        || {
            let registry = node.get(&["-n", "hosts", "registry", "hosts"])?;
            let status = &registry["status"];
            let ready = status["conditions"]
                .as_array()?
                .iter()
                .find(|c| c["type"] == "Ready")?;
            assert_ne!(
                ready["reason"], "NodeConfigurationFailed",
                "the hosts writer failed: {}",
                ready["message"]
            );
            (ready["status"] == "True" && status["configuredNodes"] == 1).then_some(registry)
        },
    );
    assert_eq!(
        ready["metadata"]["finalizers"],
        serde_json::json!(["berth.dev/containerd-hosts"])
    );
    // The node cache's directory, per Registry, given to the registry's user.
    let cache =
        std::fs::metadata(cache_root.join("hosts/hosts")).expect("the node cache directory");
    assert_eq!(
        std::os::unix::fs::MetadataExt::uid(&cache),
        65532,
        "prepared for the registry's user"
    );
    for host in ["docker.io", "upstream.test", "berth.local"] {
        let written = std::fs::read_to_string(hosts_dir.join(host).join("hosts.toml"))
            .unwrap_or_else(|e| panic!("{host}/hosts.toml: {e}"));
        assert!(
            written.contains(&format!("http://{NODE_IP}:{HOSTS_PORT}"))
                && written.contains("capabilities = [\"pull\", \"resolve\"]"),
            "{host}/hosts.toml points at the node's registry:\n{written}"
        );
    }
    assert_eq!(
        std::fs::read_to_string(hosts_dir.join("other.example/hosts.toml")).ok(),
        Some("server = \"https://other.example\"\n# written by another tool\n".to_owned()),
        "another tool's host is left alone"
    );

    push_busybox(node, &format!("127.0.0.1:{HOSTS_PORT}/team/tools:1"), None);
    run_pod(
        node,
        "hosts",
        "by-name",
        "berth.local/team/tools:1",
        "pulled by the Registry's name",
    );

    // The mirrored upstream: a pod pulls busybox through the node's
    // registry; then the upstream goes away, the node forgets the image,
    // and a second pod still starts, from the node registry's cache.
    let mirrored = "upstream.test/library/busybox:1";
    run_pod(
        node,
        "hosts",
        "mirrored",
        mirrored,
        "pulled through the mirror",
    );
    upstream.kill();
    node.kubectl(&[
        "-n",
        "hosts",
        "delete",
        "pod",
        "mirrored",
        "--ignore-not-found",
        "--wait=true",
    ]);
    node.run(&format!(
        "crictl --runtime-endpoint unix:///run/containerd/containerd.sock rmi {mirrored}"
    ));
    std::thread::sleep(Duration::from_millis(1500)); // past the tag's TTL
    let started = Instant::now();
    run_pod(
        node,
        "hosts",
        "upstream-gone",
        mirrored,
        "pulled with the upstream stopped",
    );
    println!(
        "a pod of {mirrored} started {:.1?} after it was asked for, with the upstream stopped",
        started.elapsed()
    );

    node.kubectl(&[
        "-n",
        "hosts",
        "delete",
        "registry",
        "hosts",
        "--wait=true",
        "--timeout=180s",
    ]);
    assert_eq!(
        snapshot(&hosts_dir),
        before,
        "the hosts directory is as it was before the Registry"
    );
    let left = node
        .get(&["-n", "hosts", "daemonsets"])
        .expect("daemonsets");
    assert_eq!(left["items"], serde_json::json!([]), "no DaemonSet is left");
    for host in ["docker.io", "other.example"] {
        std::fs::remove_dir_all(hosts_dir.join(host)).expect("remove the other tool's files");
    }
    node.kubectl(&["delete", "namespace", "hosts", "--wait=false"]);
}

/// Deleting a Registry removes its pods and leaves what they stored on the
/// node's disk (the hostPath), as the README says.
fn a_deleted_registry_leaves_the_nodes_content(cluster: &Cluster) {
    let node = &cluster.node;
    node.kubectl(&[
        "-n",
        "registry",
        "delete",
        "registry",
        "local",
        "--wait=true",
    ]);
    node.wait("the registry pod to go", Duration::from_secs(120), || {
        let pods = node.get(&[
            "-n",
            "registry",
            "pods",
            "-l",
            "app.kubernetes.io/component=registry",
        ])?;
        pods["items"].as_array()?.is_empty().then_some(())
    });
    let content = node
        .dir()
        .join("host/var/lib/berth-registry/docker/registry/v2/repositories/team/app/_manifests/tags/latest");
    assert!(content.is_dir(), "{} is kept", content.display());
}

/// In a namespace that enforces the baseline Pod Security level, the
/// DaemonSet cannot create the registry pod (hostPath, hostPort), and the
/// Registry's status says so.
fn pod_security_rejection_is_named_in_status(cluster: &Cluster) {
    let node = &cluster.node;
    node.apply(
        r#"apiVersion: v1
kind: Namespace
metadata:
  name: baseline
  labels:
    pod-security.kubernetes.io/enforce: baseline
---
apiVersion: berth.dev/v1alpha1
kind: Registry
metadata:
  name: strict
  namespace: baseline
spec:
  storage:
    filesystem:
      hostPath: /var/lib/berth-registry
"#,
    );
    let ready = node.wait("the rejection in status", Duration::from_secs(120), || {
        let registry = node.get(&["-n", "baseline", "registry", "strict"])?;
        registry["status"]["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["type"] == "Ready" && c["reason"] == "PodsRejected")
            .cloned()
    });
    assert_eq!(ready["status"], "False");
    let message = ready["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("PodSecurity") && message.contains("baseline"),
        "{message}"
    );
    node.kubectl(&["delete", "namespace", "baseline", "--wait=false"]);
}

/// The README's operator outside the cluster: the CRD applied with
/// kubectl, the operator run with cargo and nothing but the kubeconfig; it
/// takes its own Lease and reconciles the Registries left after the chart
/// was uninstalled.
fn the_operator_runs_outside_the_cluster(cluster: &Cluster) {
    let node = &cluster.node;
    node.run(readme::APPLY_CRD);
    node.run(&format!("{} &", readme::RUN_OPERATOR));
    node.wait(
        "the operator to take its Lease",
        Duration::from_secs(600),
        || {
            let lease = node.get(&["-n", "default", "lease", "berth-operator"])?;
            lease["spec"]["holderIdentity"].as_str().map(|_| ())
        },
    );
    node.kubectl(&[
        "-n",
        "shared",
        "patch",
        "registry",
        "shared",
        "--type=merge",
        "-p",
        r#"{"spec":{"logLevel":"debug"}}"#,
    ]);
    wait_ready(node, "shared", "shared");
    node.stop_process("cargo");
}
