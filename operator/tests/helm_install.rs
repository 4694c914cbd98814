//! The README's install runs: `helm install`, the operator Deployment's two
//! replicas run as processes with nothing but a token of the chart's
//! ServiceAccount, and the example Registries are reconciled to Ready.

mod support;

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use berth_operator::crd::Registry;
use berth_tests::process::ServerProcess;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::api::events::v1::Event;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use serde_json::{Value, json};
use support::eventually_within;
use support::helm::*;
use support::{ControlPlane, http_get};

/// The README's install command (charts/berth/README.md), which
/// `readme_install_runs_the_operator_with_only_the_charts_permissions` runs.
const INSTALL: &str = "helm install berth charts/berth --namespace berth-system --create-namespace";

/// One operator replica running as a process.
struct Replica {
    /// Port of its /metrics and /healthz.
    port: u16,
    /// Its identity in the Lease.
    identity: String,
    process: ServerProcess,
}

/// A kubeconfig that authenticates with nothing but `token`.
fn token_kubeconfig(admin: &Path, token: &str, namespace: &str, path: &Path) {
    let admin = Kubeconfig::read_from(admin).expect("admin kubeconfig");
    let cluster = admin.clusters[0].cluster.as_ref().expect("cluster");
    let server = cluster.server.as_deref().expect("server");
    let ca = cluster
        .certificate_authority_data
        .as_deref()
        .expect("CA data");
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: envtest\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\nusers:\n- name: operator\n  user:\n    token: {token}\ncontexts:\n- name: operator\n  context:\n    cluster: envtest\n    user: operator\n    namespace: {namespace}\ncurrent-context: operator\n"
    );
    fs::write(path, text).expect("write kubeconfig");
}

async fn client_of(kubeconfig: &Path) -> Client {
    let kubeconfig = Kubeconfig::read_from(kubeconfig).expect("kubeconfig");
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("config");
    Client::try_from(config).expect("client")
}

/// Plays the DaemonSet controller for one node: the current generation is
/// observed and its one pod is updated and ready.
async fn roll_out(client: &Client, namespace: &str, name: &str) {
    let api: Api<DaemonSet> = Api::namespaced(client.clone(), namespace);
    let ds = eventually_within(
        &format!("DaemonSet {namespace}/{name}"),
        Duration::from_secs(60),
        || async { api.get_opt(name).await.ok().flatten() },
    )
    .await;
    let status = json!({"status": {
        "observedGeneration": ds.metadata.generation, "desiredNumberScheduled": 1,
        "currentNumberScheduled": 1, "numberMisscheduled": 0, "numberReady": 1,
        "updatedNumberScheduled": 1, "numberAvailable": 1,
    }});
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("patch DaemonSet status");
}

async fn ready(client: &Client, namespace: &str, name: &str) -> Option<Registry> {
    let api: Api<Registry> = Api::namespaced(client.clone(), namespace);
    let registry = api.get(name).await.ok()?;
    let status = registry.status.as_ref()?;
    let ready = status
        .conditions
        .iter()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    (ready && status.observed_generation == registry.metadata.generation).then_some(registry)
}

/// The README's install, run against kube-apiserver: `helm install` (with a
/// registry image of the test's own, to see the value reach the DaemonSet),
/// the Deployment's replicas as processes authenticated by a token of the
/// chart's ServiceAccount only, the example Registries applied as the README
/// says, and reconciled to Ready. Every API call the operator makes is
/// allowed (no 403 in its logs, every step completes), including a failover
/// to the second replica, deleting a CronJob, and counting a repeated Event.
#[tokio::test]
async fn readme_install_runs_the_operator_with_only_the_charts_permissions() {
    let readme = fs::read_to_string(chart().join("README.md")).expect("charts/berth/README.md");
    let apply_commands: Vec<String> = example_manifests()
        .iter()
        .map(|f| {
            format!(
                "kubectl apply -f examples/{}",
                f.file_name().unwrap().to_string_lossy()
            )
        })
        .collect();
    for command in std::iter::once(INSTALL.to_owned()).chain(apply_commands) {
        assert!(
            readme.contains(&command),
            "the README's install section lacks {command:?}"
        );
    }

    let plane = ControlPlane::shared().await;
    let admin = plane.client().await;
    let work = tempfile::tempdir().expect("temp dir");

    // helm install, as the README says.
    const REGISTRY_IMAGE: &str = "registry.test/berth/berth-registry";
    let mut install: Vec<&str> = INSTALL.split_whitespace().skip(1).collect();
    let set_image = format!("registryImage.repository={REGISTRY_IMAGE}");
    install.extend(["--set", &set_image]);
    let out = helm(&install, Some(&plane.kubeconfig));
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "{INSTALL} failed:\n{stdout}\n{}",
        text(&out.stderr)
    );
    for step in [
        "kubectl apply -f examples/registry-filesystem.yaml",
        "kubectl -n registry wait registry/local --for=condition=Ready",
        "skopeo copy --dest-tls-verify=false oci:my-layout:latest docker://127.0.0.1:5001/team/app:latest",
        "kubectl run hello --image=localhost:5000/team/app:latest --restart=Never -- echo pulled from the node",
    ] {
        assert!(stdout.contains(step), "NOTES lack {step:?}:\n{stdout}");
    }

    // The installed Deployment: what each replica runs.
    let deployments: Api<Deployment> = Api::namespaced(admin.clone(), RELEASE_NAMESPACE);
    let deployment = deployments
        .get(RELEASE)
        .await
        .expect("the chart's Deployment");
    let deployment = serde_json::to_value(&deployment).expect("JSON");
    let pod = &deployment["spec"]["template"]["spec"];
    let replicas = deployment["spec"]["replicas"].as_u64().expect("replicas");
    assert_eq!(replicas, 2);
    let account = pod["serviceAccountName"]
        .as_str()
        .expect("serviceAccountName");
    let container = &pod["containers"][0];
    let registry_image =
        env_value(&deployment, "BERTH_REGISTRY_IMAGE").expect("BERTH_REGISTRY_IMAGE");
    assert_eq!(
        registry_image,
        format!("{REGISTRY_IMAGE}:v{}", env!("CARGO_PKG_VERSION"))
    );

    // A token of the chart's ServiceAccount, as the kubelet would mount it.
    let accounts: Api<ServiceAccount> = Api::namespaced(admin.clone(), RELEASE_NAMESPACE);
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: vec![],
            expiration_seconds: Some(3600),
            ..TokenRequestSpec::default()
        },
        ..TokenRequest::default()
    };
    let token = accounts
        .create_token_request(account, &PostParams::default(), &request)
        .await
        .expect("TokenRequest")
        .status
        .expect("token")
        .token;
    let kubeconfig = work.path().join("operator.kubeconfig");
    token_kubeconfig(&plane.kubeconfig, &token, RELEASE_NAMESPACE, &kubeconfig);
    let operator_client = client_of(&kubeconfig).await;
    match Api::<Namespace>::all(operator_client.clone())
        .list(&ListParams::default())
        .await
    {
        Err(kube::Error::Api(e)) if e.code == 403 => {}
        other => panic!(
            "the token must carry the chart's permissions only, yet listing namespaces gave {other:?}"
        ),
    }

    // The replicas: the container's args and env, out of cluster.
    let mut replicas_running: Vec<Replica> = Vec::new();
    for replica in 0..replicas {
        let port = support::free_port();
        let mut command = Command::new(env!("CARGO_BIN_EXE_berth-operator"));
        command.env_clear();
        for arg in container["args"].as_array().expect("args") {
            let arg = arg.as_str().expect("an arg");
            if arg.starts_with("--metrics-addr=") {
                command.arg(format!("--metrics-addr=127.0.0.1:{port}"));
            } else {
                command.arg(arg);
            }
        }
        for var in container["env"].as_array().expect("env") {
            let name = var["name"].as_str().expect("name");
            let value = match (&var["value"], &var["valueFrom"]["fieldRef"]["fieldPath"]) {
                (Value::String(value), _) => value.clone(),
                (_, Value::String(path)) if path == "metadata.namespace" => {
                    RELEASE_NAMESPACE.to_owned()
                }
                _ => panic!("the test cannot provide env {var}"),
            };
            command.env(name, value);
        }
        // In a pod, HOSTNAME is the pod's name; the identity adds the pid.
        let hostname = format!("{RELEASE}-{replica}");
        let log = work.path().join(format!("{hostname}.log"));
        command
            .env("KUBECONFIG", &kubeconfig)
            .env("HOSTNAME", &hostname);
        let process = ServerProcess::spawn(command, &log);
        let pid = process.id().expect("berth-operator runs");
        replicas_running.push(Replica {
            port,
            identity: format!("{hostname}-{pid}"),
            process,
        });
    }
    for replica in &replicas_running {
        eventually_within("/healthz", Duration::from_secs(30), || async {
            http_get(replica.port, "/healthz")
        })
        .await;
    }

    // One replica leads through the chart's Lease.
    let lease_name = flag(&deployment, "--lease-name").expect("--lease-name");
    let leases: Api<Lease> = Api::namespaced(admin.clone(), RELEASE_NAMESPACE);
    let holder = || async {
        leases
            .get_opt(&lease_name)
            .await
            .ok()??
            .spec?
            .holder_identity
            .filter(|h| !h.is_empty())
    };
    let leader = eventually_within("a leader", Duration::from_secs(60), holder).await;
    let identities: Vec<String> = replicas_running
        .iter()
        .map(|r| r.identity.clone())
        .collect();
    let index_of = |identity: &str| identities.iter().position(|i| i == identity);
    let leader_index = index_of(&leader).unwrap_or_else(|| panic!("unknown leader {leader}"));

    // The Registries of the README, applied as they are.
    for file in example_manifests() {
        apply(
            &admin,
            &documents(&fs::read_to_string(&file).expect("example")),
        )
        .await;
    }
    // A Registry whose DaemonSet the API server refuses (a node selector
    // that is no label).
    let broken_namespace = plane.namespace("broken").await;
    apply(
        &admin,
        &[json!({
            "apiVersion": "berth.dev/v1alpha1", "kind": "Registry",
            "metadata": {"name": "broken", "namespace": broken_namespace},
            "spec": {"storage": {"filesystem": {"hostPath": "/var/lib/berth"}}, "nodeSelector": {"not a label!": "x"}},
        })],
    )
    .await;

    let registries: Vec<(&str, &str)> = vec![
        (EXAMPLES_NAMESPACE, "local"),
        (EXAMPLES_NAMESPACE, "shared"),
    ];
    for (namespace, name) in &registries {
        let registry = eventually_within(
            &format!("Registry {namespace}/{name} Ready"),
            Duration::from_secs(90),
            || async {
                roll_out(&admin, namespace, name).await;
                ready(&admin, namespace, name).await
            },
        )
        .await;
        let status = registry.status.expect("status");
        assert_eq!(status.nodes.as_deref(), Some("1/1"));
    }
    let cron_jobs: Api<CronJob> = Api::namespaced(admin.clone(), EXAMPLES_NAMESPACE);
    assert!(
        cron_jobs.get_opt("shared-gc").await.expect("get").is_some(),
        "the S3 Registry's GC CronJob"
    );

    // The refused DaemonSet reaches the broken Registry's status, and the
    // same Event published again is counted (the recorder patches it):
    // broken, mended, broken again.
    let broken: Api<Registry> = Api::namespaced(admin.clone(), &broken_namespace);
    let reason = |wanted: &'static str| {
        let broken = broken.clone();
        async move {
            let status = broken.get("broken").await.ok()?.status?;
            let ready = status.conditions.iter().find(|c| c.type_ == "Ready")?;
            (ready.reason == wanted).then_some(())
        }
    };
    eventually_within("ApplyRejected in status", Duration::from_secs(90), || {
        reason("ApplyRejected")
    })
    .await;
    for (selector, wanted) in [
        (json!(null), "RolloutPending"),
        (json!({"not a label!": "x"}), "ApplyRejected"),
    ] {
        let patch = json!({"spec": {"nodeSelector": selector}});
        broken
            .patch("broken", &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("patch the Registry");
        eventually_within(wanted, Duration::from_secs(90), || reason(wanted)).await;
    }
    let events: Api<Event> = Api::namespaced(admin.clone(), &broken_namespace);
    eventually_within(
        "an ApplyRejected Event counted twice",
        Duration::from_secs(90),
        || async {
            let list = events.list(&ListParams::default()).await.ok()?;
            list.items
                .iter()
                .any(|e| {
                    e.reason.as_deref() == Some("ApplyRejected")
                        && e.series.as_ref().is_some_and(|s| s.count >= 2)
                })
                .then_some(())
        },
    )
    .await;

    // The leader stops (SIGTERM releases the Lease); the other replica takes over.
    let metrics = http_get(replicas_running[leader_index].port, "/metrics").expect("/metrics");
    assert!(metrics.contains("berth_operator_leader 1"), "{metrics}");
    replicas_running[leader_index].process.signal("TERM");
    let new_leader = eventually_within(
        "the other replica leads",
        Duration::from_secs(60),
        || async { holder().await.filter(|h| *h != leader) },
    )
    .await;
    assert_eq!(
        index_of(&new_leader),
        Some(1 - leader_index),
        "{new_leader}"
    );
    let stopped = &mut replicas_running[leader_index].process;
    let status = eventually_within("the old leader to exit", Duration::from_secs(30), || {
        let exited = stopped.wait_exit(Duration::ZERO);
        async move { exited }
    })
    .await;
    assert!(status.success(), "the old leader exited with {status}");
    assert!(
        !stopped.log().contains("cannot release the lease"),
        "{}",
        stopped.log()
    );

    // The new leader deletes the GC CronJob once the schedule is gone.
    let api: Api<Registry> = Api::namespaced(admin.clone(), EXAMPLES_NAMESPACE);
    api.patch(
        "shared",
        &PatchParams::default(),
        &Patch::Merge(&json!({"spec": {"gc": {"schedule": null}}})),
    )
    .await
    .expect("unschedule GC");
    eventually_within(
        "the GC CronJob deleted",
        Duration::from_secs(60),
        || async {
            cron_jobs
                .get_opt("shared-gc")
                .await
                .ok()?
                .is_none()
                .then_some(())
        },
    )
    .await;

    for replica in &replicas_running {
        let log = replica.process.log();
        assert!(
            !log.to_lowercase().contains("forbidden"),
            "the operator was refused an API call:\n{log}"
        );
    }

    // The registry image is the chart's value, through BERTH_REGISTRY_IMAGE.
    let daemon_sets: Api<DaemonSet> = Api::namespaced(admin.clone(), EXAMPLES_NAMESPACE);
    let ds = daemon_sets.get("local").await.expect("DaemonSet");
    let image = ds
        .spec
        .and_then(|s| s.template.spec)
        .and_then(|p| p.containers[0].image.clone());
    assert_eq!(
        image.as_deref(),
        Some(registry_image.as_str()),
        "a Registry without spec.image runs the chart's registryImage"
    );
}
