//! The operator against a real kube-apiserver and etcd (see `support`).
//! Each test works in its own namespace, with its own controller watching it.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use berth_operator::crd::Registry;
use berth_operator::resources::SECRETS_HASH_ANNOTATION;
use berth_tests::metrics::Exposition;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service, ServiceAccount};
use kube::api::{ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use support::{ControlPlane, Operator, event_with_reason, eventually, eventually_within};

fn registry(name: &str, spec: serde_json::Value) -> Registry {
    serde_json::from_value(json!({
        "apiVersion": "berth.dev/v1alpha1", "kind": "Registry",
        "metadata": {"name": name}, "spec": spec,
    }))
    .expect("a Registry")
}

/// An Opaque Secret of text values.
async fn create_secret(client: &Client, namespace: &str, name: &str, data: &[(&str, &str)]) {
    let data: Vec<(&str, &[u8])> = data.iter().map(|(k, v)| (*k, v.as_bytes())).collect();
    support::apply_secret(client, namespace, name, "Opaque", &data).await;
}

/// The Registry's condition `type_` as (status, reason, message), once it has one.
async fn condition(
    api: &Api<Registry>,
    name: &str,
    type_: &str,
) -> Option<(String, String, String)> {
    let registry = api.get(name).await.ok()?;
    let c = registry
        .status?
        .conditions
        .into_iter()
        .find(|c| c.type_ == type_)?;
    Some((c.status, c.reason, c.message))
}

/// Creates the Registry `name` with `spec` in `namespace`, waits until it is
/// blocked (`Ready=False` with `reason`), checks that nothing was applied
/// for it, and returns the condition's message.
async fn create_blocked(
    client: &Client,
    namespace: &str,
    name: &str,
    spec: serde_json::Value,
    reason: &str,
) -> String {
    let registries: Api<Registry> = Api::namespaced(client.clone(), namespace);
    registries
        .create(&PostParams::default(), &registry(name, spec))
        .await
        .expect("create Registry");
    let (status, message) = ready_with_reason(&registries, name, reason).await;
    assert_eq!(status, "False", "{message}");
    let daemon_sets: Api<DaemonSet> = Api::namespaced(client.clone(), namespace);
    assert!(
        daemon_sets.get_opt(name).await.expect("get").is_none(),
        "nothing is applied while {name} is blocked"
    );
    message
}

/// Waits until the Registry `name` has a `Ready` condition with `reason`,
/// and returns its status and message.
async fn ready_with_reason(api: &Api<Registry>, name: &str, reason: &str) -> (String, String) {
    let (status, _, message) = eventually(reason, || async {
        condition(api, name, "Ready")
            .await
            .filter(|(_, found, _)| found == reason)
    })
    .await;
    (status, message)
}

/// What the DaemonSet's pod template names: its config ConfigMap and the
/// hash of the Secrets read at start.
async fn pod_template(api: &Api<DaemonSet>, name: &str) -> Option<(String, String)> {
    let template = api.get(name).await.ok()?.spec?.template;
    let hash = template
        .metadata?
        .annotations?
        .get(SECRETS_HASH_ANNOTATION)?
        .clone();
    let volumes = template.spec?.volumes?;
    let config = volumes
        .iter()
        .find_map(|v| v.config_map.as_ref())?
        .name
        .clone();
    Some((config, hash))
}

#[tokio::test]
async fn crd_is_accepted_and_invalid_registries_are_rejected() {
    let plane = ControlPlane::shared().await;
    let client = plane.client().await;
    let ns = plane.namespace("crd").await;
    let api: Api<Registry> = Api::namespaced(client.clone(), &ns);

    let created = api
        .create(
            &PostParams::default(),
            &registry("minimal", json!({"storage": {"s3": {"bucket": "images"}}})),
        )
        .await
        .expect("a minimal Registry is valid");
    assert_eq!(
        created.spec.exposure.port, 5000,
        "the API server applies the schema's defaults"
    );
    assert_eq!(
        created.spec.storage.s3.as_ref().map(|s| s.region.as_str()),
        Some("us-east-1")
    );

    let invalid = [
        (
            json!({"storage": {"s3": {"bucket": "images"}, "filesystem": {"hostPath": "/data"}}}),
            "exactly one of storage.filesystem, storage.s3, storage.azure or storage.gcs must be set",
        ),
        (
            json!({"storage": {"azure": {"accountName": "acct", "container": "images"},
                               "gcs": {"bucket": "images"}}}),
            "exactly one of storage.filesystem, storage.s3, storage.azure or storage.gcs must be set",
        ),
        (
            json!({"storage": {}}),
            "exactly one of storage.filesystem, storage.s3, storage.azure or storage.gcs must be set",
        ),
        (
            json!({"storage": {"filesystem": {"hostPath": "/data", "persistentVolumeClaim": "pvc"}}}),
            "exactly one of storage.filesystem.hostPath or storage.filesystem.persistentVolumeClaim",
        ),
        (
            json!({"storage": {"s3": {"bucket": "images"}}, "gc": {"schedule": "every night"}}),
            "must be a cron schedule of five fields",
        ),
        (
            json!({"storage": {"s3": {"bucket": "images"}}, "exposure": {"port": 70000}}),
            "spec.exposure.port in body should be less than or equal to 65535",
        ),
        (
            json!({"storage": {"s3": {"bucket": "images"}}, "exposure": {"mode": "NodePort"}}),
            "supported values: \"HostPort\", \"HostNetwork\"",
        ),
        (
            json!({"storage": {"filesystem": {"hostPath": "relative"}}}),
            "spec.storage.filesystem.hostPath in body should match",
        ),
        (
            json!({"storage": {"s3": {"bucket": "images"}}, "gc": {"gracePeriod": "forever"}}),
            "spec.gc.gracePeriod in body should match",
        ),
        (
            json!({"storage": {"s3": {"bucket": "images"}}, "mirrors": [{"host": "https://docker.io"}]}),
            "spec.mirrors[0].host in body should match",
        ),
        (
            json!({"storage": {"s3": {"bucket": "images"}}, "mirrors": [{"host": "ghcr.io/owner"}]}),
            "spec.mirrors[0].host in body should match",
        ),
        (
            json!({"storage": {"s3": {"bucket": "images"}}, "mirrors": [{"host": "-bad.example"}]}),
            "spec.mirrors[0].host in body should match",
        ),
        (
            json!({"storage": {"s3": {"bucket": "images"}},
                   "mirrors": [{"host": "docker.io"}, {"host": "docker.io", "url": "https://mirror.example"}]}),
            "spec.mirrors[1]: Duplicate value",
        ),
        (
            json!({"storage": {"s3": {"bucket": "images"}}, "mirrors": [{"host": "quay.io", "url": "ftp://quay.io"}]}),
            "spec.mirrors[0].url in body should match",
        ),
        (
            json!({"storage": {"s3": {"bucket": "images"}}, "containerd": {"hostsDir": "certs.d"}}),
            "spec.containerd.hostsDir in body should match",
        ),
        (
            json!({"storage": {"s3": {"bucket": "images"}}, "containerd": {"registryName": "http://berth.local"}}),
            "spec.containerd.registryName in body should match",
        ),
        (
            json!({"storage": {"filesystem": {"hostPath": "/data"}}, "nodeCache": {"size": "1Gi"}}),
            "nodeCache needs remote storage",
        ),
    ];
    // Invalid objects go through the untyped API: they do not fit the Rust types either.
    let untyped: Api<DynamicObject> =
        Api::namespaced_with(client, &ns, &ApiResource::erase::<Registry>(&()));
    for (i, (spec, message)) in invalid.into_iter().enumerate() {
        let object: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "berth.dev/v1alpha1", "kind": "Registry", "metadata": {"name": format!("bad-{i}")}, "spec": spec,
        }))
        .expect("an object");
        let result = untyped.create(&PostParams::default(), &object).await;
        match result {
            Err(kube::Error::Api(e)) => {
                assert_eq!(e.code, 422, "{spec}: {e:?}");
                assert!(
                    e.message.contains(message),
                    "{spec}: expected {message:?} in {:?}",
                    e.message
                );
            }
            other => panic!("{spec} was not rejected: {other:?}"),
        }
    }
}

#[tokio::test]
async fn registry_becomes_its_owned_objects() {
    let plane = ControlPlane::shared().await;
    let client = plane.client().await;
    let ns = plane.namespace("objects").await;
    let _operator = Operator::start(client.clone(), &ns);
    create_secret(
        &client,
        &ns,
        "tls",
        &[("tls.crt", "CERT"), ("tls.key", "KEY")],
    )
    .await;
    create_secret(&client, &ns, "users", &[("htpasswd", "alice:$2y$05$x")]).await;
    create_secret(
        &client,
        &ns,
        "s3",
        &[
            ("accessKey", "AKIA-SECRET-ID"),
            ("secretKey", "very-secret"),
        ],
    )
    .await;

    let registries: Api<Registry> = Api::namespaced(client.clone(), &ns);
    let spec = json!({
        "storage": {"s3": {"bucket": "images", "endpoint": "http://127.0.0.1:9000", "forcePathStyle": true, "credentialsSecret": "s3"}},
        "tls": {"secretName": "tls"},
        "auth": {"htpasswd": {"secretName": "users"}},
        "gc": {"schedule": "0 3 * * *"},
    });
    let created = registries
        .create(&PostParams::default(), &registry("cache", spec))
        .await
        .expect("create Registry");
    let uid = created.uid().expect("uid");

    let daemon_sets: Api<DaemonSet> = Api::namespaced(client.clone(), &ns);
    let ds = eventually("DaemonSet", || async {
        daemon_sets.get_opt("cache").await.ok().flatten()
    })
    .await;
    let (config_name, _) = pod_template(&daemon_sets, "cache")
        .await
        .expect("the pod template names its config");
    assert!(config_name.starts_with("cache-config-"), "{config_name}");
    let config_map = Api::<ConfigMap>::namespaced(client.clone(), &ns)
        .get(&config_name)
        .await
        .expect("ConfigMap");
    let service = Api::<Service>::namespaced(client.clone(), &ns)
        .get("cache")
        .await
        .expect("Service");
    let account = Api::<ServiceAccount>::namespaced(client.clone(), &ns)
        .get("cache")
        .await
        .expect("ServiceAccount");
    let cron_job = Api::<CronJob>::namespaced(client.clone(), &ns)
        .get("cache-gc")
        .await
        .expect("CronJob");

    let metas = [
        &ds.metadata,
        &config_map.metadata,
        &service.metadata,
        &account.metadata,
        &cron_job.metadata,
    ];
    for meta in metas {
        let labels = meta.labels.clone().unwrap_or_default();
        assert_eq!(
            labels.get("app.kubernetes.io/instance").map(String::as_str),
            Some("cache")
        );
        assert_eq!(
            labels
                .get("app.kubernetes.io/managed-by")
                .map(String::as_str),
            Some("berth-operator")
        );
        let owners = meta.owner_references.clone().unwrap_or_default();
        assert!(
            owners
                .iter()
                .any(|o| o.uid == uid && o.controller == Some(true) && o.kind == "Registry"),
            "{:?} is not owned by the Registry: {owners:?}",
            meta.name
        );
        let managers: Vec<_> = meta
            .managed_fields
            .iter()
            .flatten()
            .filter_map(|m| m.manager.as_deref())
            .collect();
        assert!(
            managers.contains(&"berth-operator"),
            "{:?} managers {managers:?}",
            meta.name
        );
    }

    let config = &config_map.data.as_ref().expect("data")["config.yml"];
    assert!(
        config.contains("bucket: images") && config.contains("/etc/berth/tls/tls.crt"),
        "{config}"
    );
    assert!(
        !config.contains("AKIA") && !config.contains("very-secret"),
        "S3 keys leaked into the ConfigMap: {config}"
    );
    assert_eq!(
        service
            .spec
            .as_ref()
            .and_then(|s| s.internal_traffic_policy.as_deref()),
        Some("Local")
    );
    assert_eq!(
        cron_job
            .spec
            .as_ref()
            .and_then(|s| s.concurrency_policy.as_deref()),
        Some("Forbid")
    );
    let pod = ds
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .expect("pod spec");
    assert_eq!(pod.enable_service_links, Some(false));
    let env = pod.containers[0].env.as_ref().expect("env");
    assert!(
        env.iter()
            .all(|e| e.value.is_none() && e.value_from.is_some()),
        "S3 keys only as secretKeyRef: {env:?}"
    );

    // No DaemonSet controller runs, so the rollout never starts.
    let (status, reason, _) = eventually("Ready condition", || async {
        condition(&registries, "cache", "Ready").await
    })
    .await;
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "RolloutPending")
    );
    let got = registries.get("cache").await.expect("Registry");
    let status = got.status.expect("status");
    assert_eq!(status.observed_generation, got.metadata.generation);
    assert_eq!(status.gc_mode.as_deref(), Some("CronJob"));
    assert_eq!(
        status.endpoint.as_deref(),
        Some(format!("https://cache.{ns}.svc:5000").as_str())
    );

    // Dropping the schedule deletes the CronJob.
    let patch = json!({"spec": {"gc": {"schedule": null}}});
    registries
        .patch("cache", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("patch");
    let cron_jobs: Api<CronJob> = Api::namespaced(client.clone(), &ns);
    eventually("CronJob deleted", || async {
        cron_jobs
            .get_opt("cache-gc")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn missing_secret_blocks_until_it_appears() {
    let plane = ControlPlane::shared().await;
    let client = plane.client().await;
    let ns = plane.namespace("secret").await;
    let _operator = Operator::start(client.clone(), &ns);
    let registries: Api<Registry> = Api::namespaced(client.clone(), &ns);
    let spec = json!({"storage": {"filesystem": {"hostPath": "/var/lib/berth"}}, "tls": {"secretName": "later-tls"}});
    let message = create_blocked(&client, &ns, "blocked", spec, "SecretNotFound").await;
    assert!(
        message.contains(&format!("Secret {ns}/later-tls"))
            && message.contains("spec.tls.secretName"),
        "{message}"
    );
    let daemon_sets: Api<DaemonSet> = Api::namespaced(client.clone(), &ns);
    event_with_reason(&client, &ns, "SecretNotFound").await;

    // The Secret watch reconciles as soon as it exists: well within the 30 s retry.
    let started = std::time::Instant::now();
    create_secret(
        &client,
        &ns,
        "later-tls",
        &[("tls.crt", "CERT"), ("tls.key", "KEY")],
    )
    .await;
    eventually("DaemonSet after the Secret appears", || async {
        daemon_sets.get_opt("blocked").await.ok().flatten()
    })
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    eventually("Ready no longer blocked", || async {
        condition(&registries, "blocked", "Ready")
            .await
            .filter(|(_, reason, _)| reason != "SecretNotFound")
    })
    .await;
}

#[tokio::test]
async fn a_trusted_ca_without_a_certificate_blocks_until_it_holds_one() {
    let plane = ControlPlane::shared().await;
    let client = plane.client().await;
    let ns = plane.namespace("trusted").await;
    let _operator = Operator::start(client.clone(), &ns);
    // A private key where the certificate should be: the registry would
    // skip it and fail every handshake with the endpoint.
    let key = rcgen::KeyPair::generate().expect("key");
    create_secret(
        &client,
        &ns,
        "internal-ca",
        &[("ca.crt", &key.serialize_pem())],
    )
    .await;
    let spec = json!({"storage": {"s3": {"bucket": "images", "endpoint": "https://s3.internal"}},
        "trustedCA": {"secretName": "internal-ca"}});
    let message = create_blocked(&client, &ns, "private", spec, "SecretKeyInvalid").await;
    assert!(
        message.contains(&format!("Secret {ns}/internal-ca"))
            && message.contains("spec.trustedCA.secretName")
            && message.contains("\"ca.crt\" holds no PEM certificate"),
        "{message}"
    );
    let daemon_sets: Api<DaemonSet> = Api::namespaced(client.clone(), &ns);

    let ca = berth_tests::certs::TestCa::new("internal");
    create_secret(&client, &ns, "internal-ca", &[("ca.crt", ca.cert_pem())]).await;
    eventually("DaemonSet once the Secret holds a certificate", || async {
        daemon_sets.get_opt("private").await.ok().flatten()
    })
    .await;
}

#[tokio::test]
async fn status_follows_the_daemon_set() {
    let plane = ControlPlane::shared().await;
    let client = plane.client().await;
    let ns = plane.namespace("status").await;
    let _operator = Operator::start(client.clone(), &ns);
    let registries: Api<Registry> = Api::namespaced(client.clone(), &ns);
    let spec = json!({"storage": {"filesystem": {"hostPath": "/var/lib/berth"}}});
    registries
        .create(&PostParams::default(), &registry("counted", spec))
        .await
        .expect("create Registry");
    let daemon_sets: Api<DaemonSet> = Api::namespaced(client.clone(), &ns);
    let ds = eventually("DaemonSet", || async {
        daemon_sets.get_opt("counted").await.ok().flatten()
    })
    .await;
    let generation = ds.metadata.generation.expect("generation");

    // Play the DaemonSet controller: two nodes, one ready.
    let report = |ready: i32| {
        json!({"status": {"observedGeneration": generation, "desiredNumberScheduled": 2, "currentNumberScheduled": 2,
            "numberMisscheduled": 0, "numberReady": ready, "updatedNumberScheduled": 2, "numberAvailable": ready}})
    };
    daemon_sets
        .patch_status(
            "counted",
            &PatchParams::default(),
            &Patch::Merge(&report(1)),
        )
        .await
        .expect("patch status");
    let (_, message) = ready_with_reason(&registries, "counted", "NodesNotReady").await;
    assert_eq!(message, "1 of 2 nodes ready, 2 of 2 updated");

    daemon_sets
        .patch_status(
            "counted",
            &PatchParams::default(),
            &Patch::Merge(&report(2)),
        )
        .await
        .expect("patch status");
    eventually("Ready", || async {
        condition(&registries, "counted", "Ready")
            .await
            .filter(|(s, _, _)| s == "True")
    })
    .await;
    let status = registries
        .get("counted")
        .await
        .expect("get")
        .status
        .expect("status");
    assert_eq!(
        (
            status.desired_nodes,
            status.ready_nodes,
            status.updated_nodes
        ),
        (2, 2, 2)
    );
    assert_eq!(status.nodes.as_deref(), Some("2/2"));
    let degraded = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Degraded")
        .expect("Degraded");
    assert_eq!(
        (degraded.status.as_str(), degraded.reason.as_str()),
        ("True", "NodeLocalStorage")
    );
    assert!(
        degraded.message.contains("hostPath storage on 2 nodes"),
        "{}",
        degraded.message
    );

    // A settled status is not rewritten: the resourceVersion stays put.
    let before = registries
        .get("counted")
        .await
        .expect("get")
        .resource_version();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        registries
            .get("counted")
            .await
            .expect("get")
            .resource_version(),
        before,
        "status writes loop"
    );
}

/// Plays the kubelet for a registry pod of the Registry `registry` on
/// `node`: creates the pod and reports its `containerd-hosts` init
/// container as `state` (with `last_state`).
async fn hosts_pod(
    client: &Client,
    ns: &str,
    registry: &str,
    node: &str,
    state: serde_json::Value,
    last_state: serde_json::Value,
) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let name = format!("{registry}-{node}");
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {
            "app.kubernetes.io/instance": registry, "app.kubernetes.io/component": "registry"}},
        "spec": {"nodeName": node, "serviceAccountName": registry, "automountServiceAccountToken": false,
                 "containers": [{"name": "registry", "image": "berth"}]},
    }))
    .expect("a Pod");
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("create Pod");
    let status = json!({"status": {"initContainerStatuses": [{
        "name": "containerd-hosts", "image": "berth", "imageID": "", "ready": false,
        "restartCount": 1, "state": state, "lastState": last_state}]}});
    pods.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("patch Pod status");
}

/// A Registry that configures containerd holds a finalizer; written nodes
/// are counted and a failed writer named. Deleted, it waits until its
/// registry DaemonSet is gone, then until every pod of the cleanup
/// DaemonSet is Ready. There is no kubelet and no DaemonSet controller
/// here: the test reports pod and DaemonSet status as they would.
#[tokio::test]
async fn a_deleted_containerd_registry_cleans_its_nodes_before_it_goes() {
    let plane = ControlPlane::shared().await;
    let controller_manager = plane.start_controller_manager().await;
    let client = plane.client().await;
    let ns = plane.namespace("hosts").await;
    let _operator = Operator::start(client.clone(), &ns);
    let registries: Api<Registry> = Api::namespaced(client.clone(), &ns);
    let daemon_sets: Api<DaemonSet> = Api::namespaced(client.clone(), &ns);
    let spec = json!({
        "storage": {"s3": {"bucket": "images"}},
        "mirrors": [{"host": "docker.io"}, {"host": "_default"}],
        "containerd": {"registryName": "berth.local"},
        "nodeCache": {"size": "2Gi"},
    });
    registries
        .create(&PostParams::default(), &registry("hosts", spec))
        .await
        .expect("a Registry with mirrors, containerd and a node cache is valid");

    let ds = eventually("the registry DaemonSet", || async {
        daemon_sets.get_opt("hosts").await.ok().flatten()
    })
    .await;
    let held = registries.get("hosts").await.expect("get");
    assert!(
        held.finalizers()
            .contains(&"berth.dev/containerd-hosts".to_owned()),
        "the finalizer is there before any pod could write: {:?}",
        held.finalizers()
    );
    assert_eq!(
        held.annotations()
            .get("berth.dev/containerd-hosts-dir")
            .map(String::as_str),
        Some("/etc/containerd/certs.d")
    );
    let pod = ds.spec.as_ref().and_then(|s| s.template.spec.as_ref());
    let init: Vec<String> = pod
        .and_then(|p| p.init_containers.as_ref())
        .into_iter()
        .flatten()
        .map(|c| c.name.clone())
        .collect();
    assert_eq!(init, ["prepare-node-cache", "containerd-hosts"]);

    // Two nodes: one written, one whose writer fails.
    let generation = ds.metadata.generation.expect("generation");
    let report = json!({"status": {"observedGeneration": generation, "desiredNumberScheduled": 2,
        "currentNumberScheduled": 2, "numberMisscheduled": 0, "numberReady": 1,
        "updatedNumberScheduled": 2, "numberAvailable": 1}});
    daemon_sets
        .patch_status("hosts", &PatchParams::default(), &Patch::Merge(&report))
        .await
        .expect("patch DaemonSet status");
    hosts_pod(
        &client,
        &ns,
        "hosts",
        "node-a",
        json!({"terminated": {"exitCode": 0, "reason": "Completed"}}),
        json!({}),
    )
    .await;
    hosts_pod(
        &client,
        &ns,
        "hosts",
        "node-b",
        json!({"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 10s"}}),
        json!({"terminated": {"exitCode": 1, "reason": "Error",
            "message": "/host/containerd-hosts/docker.io/hosts.toml: written by other/registry
"}}),
    )
    .await;
    let (_, message) = ready_with_reason(&registries, "hosts", "NodeConfigurationFailed").await;
    assert!(
        message.starts_with("node node-b: pod hosts-node-b: containerd-hosts exited with code 1: /host/containerd-hosts/docker.io/hosts.toml: written by other/registry"),
        "{message}"
    );
    let configured = eventually("configuredNodes", || async {
        registries.get("hosts").await.ok()?.status?.configured_nodes
    })
    .await;
    assert_eq!(configured, 1);

    registries
        .delete("hosts", &DeleteParams::default())
        .await
        .expect("delete");
    let cleanup = eventually("the cleanup DaemonSet", || async {
        daemon_sets
            .get_opt("hosts-containerd-cleanup")
            .await
            .ok()
            .flatten()
    })
    .await;
    assert!(
        matches!(daemon_sets.get_opt("hosts").await, Ok(None)),
        "the cleanup starts only once the registry DaemonSet is gone"
    );
    assert_eq!(cleanup.metadata.owner_references, None);
    let pod = cleanup
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.clone())
        .expect("a pod template");
    let hold = pod.containers[0].args.clone().unwrap_or_default();
    assert_eq!(
        hold,
        [
            "containerd-hosts",
            "remove",
            "--hosts-dir",
            "/host/containerd-hosts",
            "--owner",
            &format!("{ns}/hosts"),
            "--hold"
        ]
    );
    let (status, _) = ready_with_reason(&registries, "hosts", "CleaningNodes").await;
    assert_eq!(status, "False");

    // One of two nodes clean: the Registry stays.
    let generation = cleanup.metadata.generation.expect("generation");
    let report = |ready: i32| {
        json!({"status": {"observedGeneration": generation, "desiredNumberScheduled": 2,
            "currentNumberScheduled": 2, "numberMisscheduled": 0, "numberReady": ready,
            "updatedNumberScheduled": 2, "numberAvailable": ready}})
    };
    daemon_sets
        .patch_status(
            "hosts-containerd-cleanup",
            &PatchParams::default(),
            &Patch::Merge(&report(1)),
        )
        .await
        .expect("patch DaemonSet status");
    let (_, _, message) = eventually("progress", || async {
        condition(&registries, "hosts", "Ready")
            .await
            .filter(|(_, _, m)| m.contains("1 of 2 nodes clean"))
    })
    .await;
    assert!(message.contains("hosts-containerd-cleanup"), "{message}");
    assert!(
        registries.get_opt("hosts").await.expect("get").is_some(),
        "a node is not clean yet"
    );

    daemon_sets
        .patch_status(
            "hosts-containerd-cleanup",
            &PatchParams::default(),
            &Patch::Merge(&report(2)),
        )
        .await
        .expect("patch DaemonSet status");
    eventually_within("the Registry is gone", Duration::from_secs(60), || async {
        matches!(registries.get_opt("hosts").await, Ok(None)).then_some(())
    })
    .await;
    event_with_reason(&client, &ns, "NodesCleaned").await;
    eventually_within(
        "the cleanup DaemonSet is gone",
        Duration::from_secs(60),
        || async {
            matches!(
                daemon_sets.get_opt("hosts-containerd-cleanup").await,
                Ok(None)
            )
            .then_some(())
        },
    )
    .await;
    drop(controller_manager);
}

/// A namespace being deleted takes no new object, so the cleanup
/// DaemonSet cannot run there: the Registry lets go (saying so in the
/// operator's log) rather than hold its namespace forever.
#[tokio::test]
async fn a_containerd_registry_does_not_hold_up_its_namespaces_deletion() {
    let plane = ControlPlane::shared().await;
    let controller_manager = plane.start_controller_manager().await;
    let client = plane.client().await;
    let ns = plane.namespace("hostsns").await;
    let _operator = Operator::start(client.clone(), &ns);
    let registries: Api<Registry> = Api::namespaced(client.clone(), &ns);
    let spec = json!({"storage": {"s3": {"bucket": "images"}}, "containerd": {}});
    registries
        .create(&PostParams::default(), &registry("held", spec))
        .await
        .expect("create Registry");
    eventually("the finalizer", || async {
        let registry = registries.get("held").await.ok()?;
        (!registry.finalizers().is_empty()).then_some(())
    })
    .await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .delete(&ns, &DeleteParams::default())
        .await
        .expect("delete the namespace");
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while !matches!(namespaces.get_opt(&ns).await, Ok(None)) {
        assert!(
            std::time::Instant::now() < deadline,
            "the namespace is still there\n{}",
            controller_manager.logs()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Reports the DaemonSet `name` as the DaemonSet controller would once
/// its current template runs on `ready` of `desired` nodes; returns the
/// generation reported.
async fn report_daemon_set(api: &Api<DaemonSet>, name: &str, desired: i32, ready: i32) -> i64 {
    let generation = api
        .get(name)
        .await
        .expect("get DaemonSet")
        .metadata
        .generation
        .expect("generation");
    let report = json!({"status": {"observedGeneration": generation, "desiredNumberScheduled": desired,
        "currentNumberScheduled": desired, "numberMisscheduled": 0, "numberReady": ready,
        "updatedNumberScheduled": desired, "numberAvailable": ready}});
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&report))
        .await
        .expect("patch DaemonSet status");
    generation
}

/// Removing `spec.containerd` from a live Registry cleans its nodes once
/// the rollout has replaced the pods that wrote, then releases the
/// finalizer; the Registry stays. (No DaemonSet controller here: the test
/// reports DaemonSet status as it would.)
#[tokio::test]
async fn removing_containerd_from_a_live_registry_cleans_its_nodes() {
    let plane = ControlPlane::shared().await;
    let client = plane.client().await;
    let ns = plane.namespace("unhosts").await;
    let _operator = Operator::start(client.clone(), &ns);
    let registries: Api<Registry> = Api::namespaced(client.clone(), &ns);
    let daemon_sets: Api<DaemonSet> = Api::namespaced(client.clone(), &ns);
    let spec = json!({"storage": {"s3": {"bucket": "images"}}, "containerd": {"hostsDir": "/etc/k8s/certs.d"}});
    registries
        .create(&PostParams::default(), &registry("live", spec))
        .await
        .expect("create Registry");
    let written = eventually("the registry DaemonSet", || async {
        daemon_sets.get_opt("live").await.ok().flatten()
    })
    .await;
    report_daemon_set(&daemon_sets, "live", 1, 1).await;
    ready_with_reason(&registries, "live", "AllNodesReady").await;

    registries
        .patch(
            "live",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"containerd": null}})),
        )
        .await
        .expect("remove spec.containerd");
    let rolled = eventually("a template without the hosts writer", || async {
        let ds = daemon_sets.get("live").await.ok()?;
        (ds.metadata.generation != written.metadata.generation).then_some(ds)
    })
    .await;
    let init = rolled
        .spec
        .and_then(|s| s.template.spec)
        .and_then(|p| p.init_containers);
    assert_eq!(init, None);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        matches!(
            daemon_sets.get_opt("live-containerd-cleanup").await,
            Ok(None)
        ),
        "no cleanup while a pod of the writing template may still start"
    );
    report_daemon_set(&daemon_sets, "live", 1, 1).await;
    let cleanup = eventually("the cleanup DaemonSet", || async {
        daemon_sets
            .get_opt("live-containerd-cleanup")
            .await
            .ok()
            .flatten()
    })
    .await;
    let volume = cleanup
        .spec
        .and_then(|s| s.template.spec)
        .and_then(|p| p.volumes)
        .and_then(|v| v.into_iter().next())
        .and_then(|v| v.host_path)
        .map(|h| h.path);
    assert_eq!(
        volume.as_deref(),
        Some("/etc/k8s/certs.d"),
        "the recorded directory is cleaned"
    );
    report_daemon_set(&daemon_sets, "live-containerd-cleanup", 1, 1).await;
    let released = eventually("the finalizer released", || async {
        let registry = registries.get("live").await.ok()?;
        registry.finalizers().is_empty().then_some(registry)
    })
    .await;
    assert!(
        !released
            .annotations()
            .contains_key("berth.dev/containerd-hosts-dir")
    );
    eventually("the cleanup DaemonSet is gone", || async {
        matches!(
            daemon_sets.get_opt("live-containerd-cleanup").await,
            Ok(None)
        )
        .then_some(())
    })
    .await;
}

/// A spec change gives the pods a new config ConfigMap, and rotating the
/// S3 keys (environment variables) a new Secrets hash: both roll the pods.
/// Rotating a mounted Secret (htpasswd) changes neither: the registry
/// reloads the file itself.
#[tokio::test]
async fn spec_change_and_s3_key_rotation_roll_the_pods_but_mounted_secrets_do_not() {
    let plane = ControlPlane::shared().await;
    let client = plane.client().await;
    let ns = plane.namespace("roll").await;
    let _operator = Operator::start(client.clone(), &ns);
    create_secret(&client, &ns, "users", &[("htpasswd", "alice:one")]).await;
    create_secret(
        &client,
        &ns,
        "keys",
        &[("accessKey", "a1"), ("secretKey", "s1")],
    )
    .await;
    let registries: Api<Registry> = Api::namespaced(client.clone(), &ns);
    let spec = json!({"storage": {"s3": {"bucket": "images", "credentialsSecret": "keys"}},
                      "auth": {"htpasswd": {"secretName": "users"}}});
    registries
        .create(&PostParams::default(), &registry("rolling", spec))
        .await
        .expect("create Registry");
    let daemon_sets: Api<DaemonSet> = Api::namespaced(client.clone(), &ns);
    let (first_config, first_hash) =
        eventually("pod template", || pod_template(&daemon_sets, "rolling")).await;

    let patch = json!({"spec": {"logLevel": "debug"}});
    registries
        .patch("rolling", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("patch");
    let (second_config, second_hash) = eventually("a new config after a spec change", || async {
        pod_template(&daemon_sets, "rolling")
            .await
            .filter(|(config, _)| *config != first_config)
    })
    .await;
    assert_eq!(second_hash, first_hash, "the Secrets did not change");
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let current = config_maps
        .get(&second_config)
        .await
        .expect("the new ConfigMap");
    assert_eq!(current.immutable, Some(true));
    assert!(current.data.expect("data")["config.yml"].contains("level: debug"));

    create_secret(&client, &ns, "users", &[("htpasswd", "alice:two")]).await;
    create_secret(
        &client,
        &ns,
        "keys",
        &[("accessKey", "a2"), ("secretKey", "s2")],
    )
    .await;
    let (third_config, _) = eventually("a new Secrets hash after rotating the S3 keys", || async {
        pod_template(&daemon_sets, "rolling")
            .await
            .filter(|(_, hash)| *hash != second_hash)
    })
    .await;
    assert_eq!(third_config, second_config, "the config did not change");
}

/// The image the operator processes are told through `BERTH_REGISTRY_IMAGE`.
const ENV_IMAGE: &str = "registry.example/berth-registry:from-env";

/// `/healthz` and `/metrics` of an operator process serving them on `port`:
/// the metrics parsed (strictly, as OpenMetrics text), once both answer 200.
/// `/healthz` must say `ok`.
async fn scrape(port: u16) -> Option<Exposition> {
    tokio::task::block_in_place(|| {
        let http = berth_tests::http::Client::with_agent(
            &format!("http://127.0.0.1:{port}"),
            berth_tests::http::agent_with_timeout(Duration::from_secs(5)),
        );
        let health = http.try_request("GET", "/healthz", &[], None).ok()?;
        let metrics = http.try_request("GET", "/metrics", &[], None).ok()?;
        if (health.status, metrics.status) != (200, 200) {
            return None;
        }
        assert_eq!(health.text(), "ok", "/healthz");
        let content_type = metrics.header("content-type").unwrap_or_default();
        assert!(
            content_type.starts_with("application/openmetrics-text"),
            "{content_type}"
        );
        let text = metrics.text();
        let parsed = berth_tests::metrics::parse(&text)
            .unwrap_or_else(|e| panic!("/metrics does not parse: {e}\n{text}"));
        Some(parsed)
    })
}

/// Successful reconciles so far.
fn reconciles_ok(metrics: &Exposition) -> f64 {
    metrics.sum("berth_operator_reconciles_total", &[("outcome", "ok")])
}

/// Every reconcile, whatever its outcome, is also timed.
fn assert_every_reconcile_timed(metrics: &Exposition) {
    let counted = metrics.sum("berth_operator_reconciles_total", &[]);
    let timed = metrics.sum("berth_operator_reconcile_duration_seconds_count", &[]);
    assert_eq!(counted, timed, "reconciles counted and timed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_operators_elect_one_leader_and_fail_over() {
    let plane = ControlPlane::shared().await;
    let client = plane.client().await;
    let ns = plane.namespace("leader").await;
    let spawn = |identity: &str, port: u16| {
        std::process::Command::new(env!("CARGO_BIN_EXE_berth-operator"))
            .args([
                "--namespace",
                &ns,
                "--lease-namespace",
                &ns,
                "--identity",
                identity,
            ])
            .args([
                "--lease-duration",
                "4s",
                "--renew-deadline",
                "3s",
                "--renew-interval",
                "1s",
            ])
            .arg(format!("--metrics-addr=127.0.0.1:{port}"))
            .env("KUBECONFIG", &plane.kubeconfig)
            .env("BERTH_REGISTRY_IMAGE", ENV_IMAGE)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start berth-operator")
    };
    let ports = BTreeMap::from([("one", support::free_port()), ("two", support::free_port())]);
    let port = |identity: &str| ports[identity];
    let mut operators: Vec<_> = ports
        .iter()
        .map(|(identity, port)| (*identity, Killed(spawn(identity, *port))))
        .collect();
    for port in ports.values() {
        eventually("/healthz and /metrics", || scrape(*port)).await;
    }
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
    let holder = || async {
        leases
            .get_opt("berth-operator")
            .await
            .ok()??
            .spec?
            .holder_identity
            .filter(|h| !h.is_empty())
    };
    let leader = eventually("a leader", holder).await;
    let (leader, follower) = if leader == "one" {
        ("one", "two")
    } else {
        ("two", "one")
    };
    let leading = |identity: &'static str, gauge: f64| async move {
        let metrics = scrape(port(identity)).await?;
        (metrics.sum("berth_operator_leader", &[]) == gauge).then_some(metrics)
    };
    eventually("the leader's gauge", || leading(leader, 1.0)).await;

    let registries: Api<Registry> = Api::namespaced(client.clone(), &ns);
    let reconciled = |name: &'static str| {
        let registries = registries.clone();
        async move { registries.get(name).await.ok()?.status.map(|_| ()) }
    };
    let spec = json!({"storage": {"s3": {"bucket": "images"}}});
    registries
        .create(&PostParams::default(), &registry("first", spec.clone()))
        .await
        .expect("create");
    eventually("the leader reconciles", || reconciled("first")).await;
    let daemon_sets: Api<DaemonSet> = Api::namespaced(client.clone(), &ns);
    let ds = daemon_sets.get("first").await.expect("DaemonSet");
    let image = ds
        .spec
        .and_then(|s| s.template.spec)
        .and_then(|p| p.containers.first().and_then(|c| c.image.clone()));
    assert_eq!(image.as_deref(), Some(ENV_IMAGE), "BERTH_REGISTRY_IMAGE");

    // The leader's counters move with its reconciles; the follower's stay at zero.
    let before = eventually("a counted reconcile", || async {
        let metrics = scrape(port(leader)).await?;
        let ok = reconciles_ok(&metrics);
        (ok >= 1.0).then_some(ok)
    })
    .await;
    registries
        .patch(
            "first",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"logLevel": "debug"}})),
        )
        .await
        .expect("patch");
    let metrics = eventually("the counter moves", || async {
        Some(scrape(port(leader)).await?).filter(|m| reconciles_ok(m) > before)
    })
    .await;
    assert_every_reconcile_timed(&metrics);
    let idle = eventually("the follower's gauge", || leading(follower, 0.0)).await;
    assert_eq!(
        idle.sum("berth_operator_reconciles_total", &[]),
        0.0,
        "a follower does not reconcile"
    );

    // Kill the leader without letting it release the Lease.
    operators.retain(|(identity, _)| *identity != leader);
    let new_leader = eventually("the other replica takes over", || async {
        holder().await.filter(|h| h != leader)
    })
    .await;
    assert_eq!(new_leader, follower);
    eventually("the new leader's gauge", || leading(follower, 1.0)).await;
    registries
        .create(&PostParams::default(), &registry("second", spec))
        .await
        .expect("create");
    eventually("the new leader reconciles", || reconciled("second")).await;
    let metrics = eventually("the new leader counts", || async {
        Some(scrape(port(follower)).await?).filter(|m| reconciles_ok(m) >= 1.0)
    })
    .await;
    assert_every_reconcile_timed(&metrics);
}

/// A child process killed (SIGKILL) when dropped.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn operator_survives_an_apiserver_restart() {
    let mut plane = ControlPlane::start().await;
    let client = plane.client().await;
    let ns = plane.namespace("restart").await;
    let _operator = Operator::start(client.clone(), &ns);
    let registries: Api<Registry> = Api::namespaced(client.clone(), &ns);
    let spec = json!({"storage": {"s3": {"bucket": "images"}}});
    registries
        .create(&PostParams::default(), &registry("before", spec.clone()))
        .await
        .expect("create");
    let daemon_sets: Api<DaemonSet> = Api::namespaced(client.clone(), &ns);
    eventually("DaemonSet before", || async {
        daemon_sets.get_opt("before").await.ok().flatten()
    })
    .await;

    plane.stop_apiserver();
    tokio::time::sleep(Duration::from_secs(3)).await;
    plane.restart_apiserver().await;

    registries
        .create(&PostParams::default(), &registry("after", spec))
        .await
        .expect("create after restart");
    eventually("DaemonSet after the restart", || async {
        daemon_sets.get_opt("after").await.ok().flatten()
    })
    .await;
}

/// The objects a Registry named `name` owns that still exist: kind/name and uid.
async fn owned_objects(client: &Client, namespace: &str, name: &str) -> Vec<(String, String)> {
    async fn exists<K>(client: &Client, namespace: &str, name: &str) -> Option<(String, String)>
    where
        K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        let api: Api<K> = Api::namespaced(client.clone(), namespace);
        let id = format!("{}/{name}", K::kind(&()));
        // An error counts as present: only a clean 404 is gone.
        match api.get_opt(name).await {
            Ok(None) => None,
            Ok(Some(object)) => Some((id, object.uid().unwrap_or_default())),
            Err(error) => Some((id, format!("unknown: {error}"))),
        }
    }
    let gc = format!("{name}-gc");
    // Config ConfigMaps are named by their content; find them by label.
    let configs = Api::<ConfigMap>::namespaced(client.clone(), namespace)
        .list(
            &kube::api::ListParams::default().labels(&format!("app.kubernetes.io/instance={name}")),
        )
        .await
        .map(|list| list.items)
        .unwrap_or_default();
    let mut found: Vec<(String, String)> = [
        exists::<DaemonSet>(client, namespace, name).await,
        exists::<Service>(client, namespace, name).await,
        exists::<ServiceAccount>(client, namespace, name).await,
        exists::<CronJob>(client, namespace, &gc).await,
    ]
    .into_iter()
    .flatten()
    .collect();
    found.extend(configs.iter().map(|map| {
        (
            format!("ConfigMap/{}", map.name_any()),
            map.uid().unwrap_or_default(),
        )
    }));
    found
}

#[tokio::test]
async fn deleting_a_registry_deletes_what_it_owns() {
    let plane = ControlPlane::shared().await;
    let controller_manager = plane.start_controller_manager().await;
    let client = plane.client().await;
    let ns = plane.namespace("delete").await;
    let _operator = Operator::start(client.clone(), &ns);
    let registries: Api<Registry> = Api::namespaced(client.clone(), &ns);
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let unrelated: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "unrelated"}})).expect("a ConfigMap");
    config_maps
        .create(&PostParams::default(), &unrelated)
        .await
        .expect("create ConfigMap");

    // One Registry is deleted in the background (the default), the other in
    // the foreground: it stays, marked as deleting, until its dependents are
    // gone, and the operator must not re-create them meanwhile.
    let spec = json!({"storage": {"s3": {"bucket": "images"}}, "gc": {"schedule": "0 3 * * *"}});
    let names = ["background", "foreground"];
    for name in names {
        registries
            .create(&PostParams::default(), &registry(name, spec.clone()))
            .await
            .expect("create Registry");
    }
    let mut created = std::collections::BTreeSet::new();
    for name in names {
        let objects = eventually("every owned object", || async {
            Some(owned_objects(&client, &ns, name).await).filter(|o| o.len() == 5)
        })
        .await;
        created.extend(objects.into_iter().map(|(_, uid)| uid));
        eventually("status", || async {
            registries.get(name).await.ok()?.status.map(|_| ())
        })
        .await;
    }

    registries
        .delete("background", &DeleteParams::default())
        .await
        .expect("delete in the background");
    registries
        .delete("foreground", &DeleteParams::foreground())
        .await
        .expect("delete in the foreground");

    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let mut left = Vec::new();
        for name in names {
            for (object, uid) in owned_objects(&client, &ns, name).await {
                assert!(
                    created.contains(&uid),
                    "{object} was created again while its Registry was being deleted"
                );
                left.push(object);
            }
            if !matches!(registries.get_opt(name).await, Ok(None)) {
                left.push(format!("Registry/{name}"));
            }
        }
        if left.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still there after deleting the Registries: {left:?}\n{}",
            controller_manager.logs()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        config_maps
            .get_opt("unrelated")
            .await
            .expect("get")
            .is_some(),
        "an object the Registries did not own is kept"
    );

    // Nothing of the operator's holds up a namespace's deletion.
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .delete(&ns, &DeleteParams::default())
        .await
        .expect("delete the namespace");
    eventually_within(
        "the namespace is gone",
        Duration::from_secs(120),
        || async { matches!(namespaces.get_opt(&ns).await, Ok(None)).then_some(()) },
    )
    .await;
}

/// The Ready condition of a Registry read without its Rust type, as
/// (status, reason, message).
async fn raw_ready(api: &Api<DynamicObject>, name: &str) -> Option<(String, String, String)> {
    let object = api.get(name).await.ok()?;
    let conditions = object.data["status"]["conditions"].as_array()?.clone();
    let ready = conditions.iter().find(|c| c["type"] == "Ready")?;
    let field = |key: &str| ready[key].as_str().unwrap_or_default().to_owned();
    Some((field("status"), field("reason"), field("message")))
}

#[tokio::test]
async fn an_undecodable_registry_does_not_stop_the_others() {
    let plane = ControlPlane::shared().await;
    let client = plane.client().await;
    let ns = plane.namespace("undecodable").await;
    let untyped: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), &ns, &ApiResource::erase::<Registry>(&()));
    let registries: Api<Registry> = Api::namespaced(client.clone(), &ns);

    // The schema has no bounds for a preference's weight (k8s-openapi's
    // int32 format is not enforced), so the API server stores a weight the
    // Rust type (i32) cannot hold.
    let weight = |weight: i64| {
        json!({"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": weight, "preference": {"matchExpressions": [
                {"key": "disk", "operator": "In", "values": ["ssd"]}]}}]}})
    };
    let broken: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "berth.dev/v1alpha1", "kind": "Registry", "metadata": {"name": "broken"},
        "spec": {"storage": {"s3": {"bucket": "images"}}, "affinity": weight(1 << 32)},
    }))
    .expect("an object");
    untyped
        .create(&PostParams::default(), &broken)
        .await
        .expect("the schema lets the weight through");
    assert!(
        matches!(
            registries.get("broken").await,
            Err(kube::Error::SerdeError(_))
        ),
        "the Registry does not decode"
    );
    // A status the operator's type cannot hold, written by someone else.
    let spec = json!({"storage": {"s3": {"bucket": "images"}}});
    registries
        .create(&PostParams::default(), &registry("scribbled", spec.clone()))
        .await
        .expect("create");
    untyped
        .patch_status(
            "scribbled",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"desiredNodes": 1_i64 << 32}})),
        )
        .await
        .expect("the schema lets the count through");
    assert!(registries.get("scribbled").await.is_err());

    let _operator = Operator::start(client.clone(), &ns);
    registries
        .create(&PostParams::default(), &registry("healthy", spec))
        .await
        .expect("create");
    let daemon_sets: Api<DaemonSet> = Api::namespaced(client.clone(), &ns);
    eventually("the decodable Registry is reconciled", || async {
        daemon_sets.get_opt("healthy").await.ok().flatten()
    })
    .await;

    // The undecodable one says why, in its status and an Event.
    let (status, _, message) = eventually("Ready=False on the broken Registry", || async {
        raw_ready(&untyped, "broken")
            .await
            .filter(|(_, reason, _)| reason == "Undecodable")
    })
    .await;
    assert_eq!(status, "False");
    assert!(message.contains("i32"), "{message}");
    event_with_reason(&client, &ns, "Undecodable").await;
    assert!(daemon_sets.get_opt("broken").await.expect("get").is_none());

    // The operator owns the status: writing its own repairs the scribbled one.
    eventually("the scribbled Registry is reconciled", || async {
        daemon_sets.get_opt("scribbled").await.ok().flatten()
    })
    .await;
    eventually("its status decodes", || async {
        registries.get("scribbled").await.ok()?.status
    })
    .await;

    // Once fixed, the broken one is reconciled like any other.
    untyped
        .patch(
            "broken",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"affinity": weight(50)}})),
        )
        .await
        .expect("fix the weight");
    eventually("the fixed Registry is reconciled", || async {
        daemon_sets.get_opt("broken").await.ok().flatten()
    })
    .await;
    eventually("Ready no longer Undecodable", || async {
        raw_ready(&untyped, "broken")
            .await
            .filter(|(_, reason, _)| reason != "Undecodable")
    })
    .await;
}

/// A leader cut off from the API server (a proxy between them stops
/// passing bytes: calls hang, nothing fails fast) stops leading, and exits,
/// before the other replica takes the Lease over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_from_the_api_server_stops_before_another_starts() {
    let plane = ControlPlane::shared().await;
    let client = plane.client().await;
    let ns = plane.namespace("partition").await;
    let proxy = berth_tests::proxy::TcpProxy::start(plane.apiserver_port());
    let spawn = |identity: &str, kubeconfig: &std::path::Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_berth-operator"))
            .args([
                "--namespace",
                &ns,
                "--lease-namespace",
                &ns,
                "--identity",
                identity,
            ])
            .args([
                "--lease-duration",
                "6s",
                "--renew-deadline",
                "4s",
                "--renew-interval",
                "1s",
            ])
            .arg(format!("--metrics-addr=127.0.0.1:{}", support::free_port()))
            .env("KUBECONFIG", kubeconfig)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start berth-operator")
    };
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
    let holder = || async {
        leases
            .get_opt("berth-operator")
            .await
            .ok()??
            .spec?
            .holder_identity
            .filter(|h| !h.is_empty())
    };
    let mut cut_off = Killed(spawn("cut-off", &plane.kubeconfig_through(proxy.port())));
    let first = eventually("the first leader", holder).await;
    assert_eq!(first, "cut-off");
    let _other = Killed(spawn("other", &plane.kubeconfig));
    tokio::time::sleep(Duration::from_secs(2)).await;

    proxy.cut();
    let cut = std::time::Instant::now();
    let mut stopped = None;
    let taken_over = loop {
        if stopped.is_none() && matches!(cut_off.0.try_wait(), Ok(Some(_))) {
            stopped = Some(cut.elapsed());
        }
        if holder().await.as_deref() == Some("other") {
            break cut.elapsed();
        }
        assert!(
            cut.elapsed() < Duration::from_secs(60),
            "no takeover within a minute"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let stopped = stopped.expect("the cut-off leader stopped before the takeover");
    println!(
        "partition: the cut-off leader exited {:.1} s after the cut, the other took over at {:.1} s",
        stopped.as_secs_f64(),
        taken_over.as_secs_f64()
    );
    assert!(stopped < taken_over);
}

/// A Registry whose objects' names are taken by objects it does not own
/// (here the namespace's `default` ServiceAccount) gets `Conflict` naming
/// the object, and nothing is applied or changed; one whose DaemonSet the
/// API server refuses gets `ApplyRejected` with the API server's message.
#[tokio::test]
async fn taken_names_and_refused_objects_reach_status_and_nothing_is_taken_over() {
    let plane = ControlPlane::shared().await;
    let client = plane.client().await;
    let ns = plane.namespace("conflict").await;
    let _operator = Operator::start(client.clone(), &ns);
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns);
    let account: ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": "default", "labels": {"mine": "yes"}}}))
            .expect("a ServiceAccount");
    // The namespace controller may not run here: make sure it exists.
    let before = match accounts.create(&PostParams::default(), &account).await {
        Ok(created) => created,
        Err(_) => accounts
            .get("default")
            .await
            .expect("the default ServiceAccount"),
    };
    let registries: Api<Registry> = Api::namespaced(client.clone(), &ns);
    let spec = json!({"storage": {"s3": {"bucket": "images"}}});
    registries
        .create(&PostParams::default(), &registry("default", spec.clone()))
        .await
        .expect("create Registry");
    let (status, message) = ready_with_reason(&registries, "default", "Conflict").await;
    assert_eq!(status, "False");
    assert!(
        message.contains(&format!("ServiceAccount {ns}/default")),
        "{message}"
    );
    let after = accounts.get("default").await.expect("the ServiceAccount");
    assert_eq!(
        after.metadata.resource_version, before.metadata.resource_version,
        "left unchanged"
    );
    assert!(
        after
            .metadata
            .owner_references
            .unwrap_or_default()
            .is_empty()
    );
    let daemon_sets: Api<DaemonSet> = Api::namespaced(client.clone(), &ns);
    assert!(
        daemon_sets.get_opt("default").await.expect("get").is_none(),
        "nothing applied"
    );

    let invalid =
        json!({"storage": {"s3": {"bucket": "images"}}, "nodeSelector": {"not a label!": "x"}});
    registries
        .create(&PostParams::default(), &registry("refused", invalid))
        .await
        .expect("create Registry");
    let (status, message) = ready_with_reason(&registries, "refused", "ApplyRejected").await;
    assert_eq!(status, "False");
    assert!(
        message.contains("DaemonSet") && message.contains("nodeSelector"),
        "{message}"
    );
}
