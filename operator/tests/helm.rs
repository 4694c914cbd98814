//! The Helm chart (`charts/berth`) and the manifests of `examples/`, with
//! helm (built by `make tools`, scripts/helm-tools.sh) and the real
//! kube-apiserver of `support`:
//!
//! - helm lints the chart and renders it for the default values and for
//!   every example values file; invalid values fail with the schema's message;
//! - every rendered object is applied (server-side, strict field validation);
//! - the chart's RBAC is exactly `berth_operator::rbac::RBAC`;
//! - the README's install runs: `helm install`, the operator Deployment's
//!   two replicas run as processes with nothing but a token of the chart's
//!   ServiceAccount, and the example Registries are reconciled to Ready.

mod support;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use berth_operator::crd::Registry;
use berth_operator::rbac::{self, Names, RBAC, Scope};
use berth_tests::process::ServerProcess;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret, Service, ServiceAccount};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams,
    ValidationDirective,
};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::discovery::{self, Scope as ApiScope};
use kube::{Api, Client, Config, Resource};
use serde::Deserialize;
use serde_json::{Value, json};
use support::eventually_within;
use support::{ControlPlane, http_get};

/// The README's install command (charts/berth/README.md), which
/// `readme_install_runs_the_operator_with_only_the_charts_permissions` runs.
const INSTALL: &str = "helm install berth charts/berth --namespace berth-system --create-namespace";
const RELEASE: &str = "berth";
const RELEASE_NAMESPACE: &str = "berth-system";
/// The namespace of the example Registries (written into examples/*.yaml).
const EXAMPLES_NAMESPACE: &str = "registry";
/// The field manager of the applies made by these tests.
const MANAGER: &str = "berth-chart-tests";

/// Tests that apply objects into the examples' namespace take turns, so
/// one does not change a Registry another is watching.
static EXAMPLES_NAMESPACE_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .expect("repository root")
}

fn chart() -> PathBuf {
    repo().join("charts/berth")
}

/// Every values file under examples/ (the chart renders each).
fn example_values() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(repo().join("examples"))
        .expect("examples/")
        .map(|e| e.expect("entry").path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            name.starts_with("values") && name.ends_with(".yaml")
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no examples/values*.yaml");
    files
}

/// Every manifest under examples/ that is not a values file.
fn example_manifests() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(repo().join("examples"))
        .expect("examples/")
        .map(|e| e.expect("entry").path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            !name.starts_with("values") && name.ends_with(".yaml")
        })
        .collect();
    files.sort();
    files
}

/// helm from `.tools/bin`, with its cache and config in a throwaway directory.
fn helm(args: &[&str], kubeconfig: Option<&Path>) -> Output {
    let bin = repo().join(".tools/bin/helm");
    assert!(
        bin.exists(),
        "{} is missing: run `make tools` (scripts/helm-tools.sh builds helm)",
        bin.display()
    );
    let home = tempfile::tempdir().expect("helm home");
    let mut command = Command::new(&bin);
    command
        .args(args)
        .current_dir(repo())
        .env("HELM_CACHE_HOME", home.path().join("cache"))
        .env("HELM_CONFIG_HOME", home.path().join("config"))
        .env("HELM_DATA_HOME", home.path().join("data"))
        .env(
            "KUBECONFIG",
            kubeconfig.map_or_else(|| home.path().join("no-kubeconfig"), Path::to_path_buf),
        )
        .stdin(Stdio::null());
    command.output().expect("run helm")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `helm template` of the chart: every object, CRDs included.
fn render(release: &str, namespace: &str, args: &[&str], kube_version: Option<&str>) -> Vec<Value> {
    let mut all = vec![
        "template",
        release,
        "charts/berth",
        "--namespace",
        namespace,
        "--include-crds",
    ];
    if let Some(version) = kube_version {
        all.extend(["--kube-version", version]);
    }
    all.extend(args);
    let out = helm(&all, None);
    assert!(
        out.status.success(),
        "helm {all:?} failed:\n{}",
        text(&out.stderr)
    );
    let stderr = text(&out.stderr);
    assert!(stderr.trim().is_empty(), "helm {all:?} warns:\n{stderr}");
    documents(&text(&out.stdout))
}

/// The documents of a multi-document YAML stream (empty ones left out).
fn documents(yaml: &str) -> Vec<Value> {
    serde_norway::Deserializer::from_str(yaml)
        .map(|doc| Value::deserialize(doc).expect("a YAML document"))
        .filter(|v| !v.is_null())
        .collect()
}

fn kind(object: &Value) -> &str {
    object["kind"].as_str().unwrap_or_default()
}

fn name(object: &Value) -> &str {
    object["metadata"]["name"].as_str().unwrap_or_default()
}

fn find<'a>(objects: &'a [Value], kind_: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| kind(o) == kind_).collect()
}

fn one<'a>(objects: &'a [Value], kind_: &str) -> &'a Value {
    let found = find(objects, kind_);
    assert_eq!(found.len(), 1, "expected one {kind_}, got {}", found.len());
    found[0]
}

/// Applies `objects` server-side with strict field validation (an unknown
/// field is an error, not silently dropped): CRDs first (waiting until they
/// are served), then Namespaces, then the rest in order.
async fn apply(client: &Client, objects: &[Value]) {
    let rank = |o: &&Value| match kind(o) {
        "CustomResourceDefinition" => 0,
        "Namespace" => 1,
        _ => 2,
    };
    let mut ordered: Vec<&Value> = objects.iter().collect();
    ordered.sort_by_key(rank);
    for object in ordered {
        apply_one(client, object).await;
        if kind(object) == "CustomResourceDefinition" {
            established(client, name(object)).await;
        }
    }
}

async fn apply_one(client: &Client, object: &Value) -> DynamicObject {
    let api_version = object["apiVersion"].as_str().expect("apiVersion");
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let gvk = GroupVersionKind::gvk(group, version, kind(object));
    // A CRD applied a moment ago may take a little while to be discovered.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (resource, capabilities) = loop {
        match discovery::pinned_kind(client, &gvk).await {
            Ok(found) => break found,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(error) => panic!("{api_version} {} is not served: {error}", kind(object)),
        }
    };
    let api: Api<DynamicObject> = match capabilities.scope {
        ApiScope::Namespaced => {
            let namespace = object["metadata"]["namespace"]
                .as_str()
                .unwrap_or_else(|| panic!("{} {} has no namespace", kind(object), name(object)));
            Api::namespaced_with(client.clone(), namespace, &resource)
        }
        ApiScope::Cluster => Api::all_with(client.clone(), &resource),
    };
    let params = PatchParams::apply(MANAGER)
        .force()
        .validation(ValidationDirective::Strict);
    api.patch(name(object), &params, &Patch::Apply(object))
        .await
        .unwrap_or_else(|e| {
            panic!(
                "the API server refused {} {}: {e}\n{}",
                kind(object),
                name(object),
                serde_norway::to_string(object).unwrap_or_default()
            )
        })
}

async fn established(client: &Client, crd: &str) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    eventually_within(
        &format!("CRD {crd} established"),
        Duration::from_secs(30),
        || async {
            let conditions = api.get(crd).await.ok()?.status?.conditions?;
            conditions
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
                .then_some(())
        },
    )
    .await;
}

async fn server_version(client: &Client) -> String {
    client
        .apiserver_version()
        .await
        .expect("/version")
        .git_version
}

async fn create_namespace(client: &Client, namespace: &str) {
    apply(
        client,
        &[json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})],
    )
    .await;
}

/// A stand-in for the Prometheus operator's ServiceMonitor CRD, with the
/// types of the fields the chart sets, so a rendered ServiceMonitor goes
/// through the API server (and its strict field validation) like the rest.
const SERVICE_MONITOR_CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: servicemonitors.monitoring.coreos.com
spec:
  group: monitoring.coreos.com
  names: {kind: ServiceMonitor, listKind: ServiceMonitorList, plural: servicemonitors, singular: servicemonitor}
  scope: Namespaced
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        required: [spec]
        properties:
          spec:
            type: object
            required: [selector]
            properties:
              jobLabel: {type: string}
              selector:
                type: object
                properties:
                  matchLabels: {type: object, additionalProperties: {type: string}}
                  matchExpressions:
                    type: array
                    items:
                      type: object
                      required: [key, operator]
                      properties:
                        key: {type: string}
                        operator: {type: string}
                        values: {type: array, items: {type: string}}
              namespaceSelector:
                type: object
                properties:
                  any: {type: boolean}
                  matchNames: {type: array, items: {type: string}}
              endpoints:
                type: array
                items:
                  type: object
                  properties:
                    port: {type: string}
                    path: {type: string}
                    scheme: {type: string}
                    interval: {type: string, pattern: '^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$'}
                    scrapeTimeout: {type: string, pattern: '^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$'}
"#;

// ---------------------------------------------------------------------------
// helm alone

#[test]
fn chart_lints_and_renders_for_default_and_example_values() {
    let meta: Value = serde_norway::from_str(
        &fs::read_to_string(chart().join("Chart.yaml")).expect("Chart.yaml"),
    )
    .expect("Chart.yaml parses");
    assert_eq!(
        meta["appVersion"],
        env!("CARGO_PKG_VERSION"),
        "Chart.yaml appVersion is the version of the binaries (the default image tags)"
    );
    let mut cases: Vec<(String, Vec<String>)> = vec![("default values".to_owned(), vec![])];
    for file in example_values() {
        cases.push((
            file.display().to_string(),
            vec!["-f".to_owned(), file.display().to_string()],
        ));
    }
    for (what, args) in &cases {
        let mut lint = vec![
            "lint",
            "charts/berth",
            "--strict",
            "--namespace",
            RELEASE_NAMESPACE,
        ];
        lint.extend(args.iter().map(String::as_str));
        let out = helm(&lint, None);
        let report = format!("{}{}", text(&out.stdout), text(&out.stderr));
        assert!(out.status.success(), "helm lint with {what}:\n{report}");
        assert!(
            !report.contains("[WARNING]") && !report.contains("[ERROR]"),
            "helm lint with {what}:\n{report}"
        );

        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let objects = render(RELEASE, RELEASE_NAMESPACE, &args, None);
        let kinds: BTreeSet<&str> = objects.iter().map(kind).collect();
        for expected in [
            "CustomResourceDefinition",
            "ServiceAccount",
            "Role",
            "RoleBinding",
            "Deployment",
            "PodDisruptionBudget",
            "Service",
        ] {
            assert!(
                kinds.contains(expected),
                "{what}: no {expected} in {kinds:?}"
            );
        }

        let deployment = one(&objects, "Deployment");
        let pod = &deployment["spec"]["template"]["spec"];
        let container = &pod["containers"][0];
        assert_eq!(deployment["spec"]["replicas"], 2, "{what}: two replicas");
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{what}");
        assert_eq!(
            container["securityContext"]["readOnlyRootFilesystem"], true,
            "{what}"
        );
        assert_eq!(
            container["securityContext"]["allowPrivilegeEscalation"], false,
            "{what}"
        );
        assert_eq!(
            container["securityContext"]["capabilities"]["drop"],
            json!(["ALL"])
        );
        assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
        assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/healthz");
        assert!(
            container["resources"]["requests"].is_object(),
            "{what}: resources"
        );
        let env = container["env"].as_array().expect("env");
        assert!(
            env.iter().any(|e| e["name"] == "BERTH_REGISTRY_IMAGE"
                && e["value"]
                    .as_str()
                    .is_some_and(|v| v.contains("berth-registry"))),
            "{what}: the registry image comes from the values: {env:?}"
        );
        let pdb = one(&objects, "PodDisruptionBudget");
        assert_eq!(
            pdb["spec"]["selector"]["matchLabels"],
            deployment["spec"]["selector"]["matchLabels"]
        );
        let service = find(&objects, "Service")
            .into_iter()
            .find(|s| name(s).ends_with("-metrics"))
            .expect("metrics Service");
        assert_eq!(service["spec"]["ports"][0]["targetPort"], "metrics");
        assert_eq!(
            service["spec"]["selector"],
            deployment["spec"]["selector"]["matchLabels"]
        );
        if let Some(monitor) = find(&objects, "ServiceMonitor").first() {
            assert_eq!(monitor["spec"]["endpoints"][0]["port"], "metrics");
            let labels = service["metadata"]["labels"].as_object().expect("labels");
            for (key, value) in monitor["spec"]["selector"]["matchLabels"]
                .as_object()
                .expect("matchLabels")
            {
                assert_eq!(
                    labels.get(key),
                    Some(value),
                    "the ServiceMonitor selects the Service"
                );
            }
        }
    }
}

#[test]
fn default_registry_and_service_monitor_render_when_enabled() {
    let objects = render(RELEASE, RELEASE_NAMESPACE, &[], None);
    assert!(
        find(&objects, "Registry").is_empty(),
        "no Registry by default"
    );
    assert!(
        find(&objects, "ServiceMonitor").is_empty(),
        "no ServiceMonitor by default"
    );

    let objects = render(
        RELEASE,
        RELEASE_NAMESPACE,
        &[
            "--set",
            "defaultRegistry.enabled=true,metrics.serviceMonitor.enabled=true",
            "--set",
            "defaultRegistry.spec.storage.filesystem.hostPath=/var/lib/berth-registry",
        ],
        None,
    );
    let registry = one(&objects, "Registry");
    assert_eq!(registry["metadata"]["namespace"], RELEASE_NAMESPACE);
    assert_eq!(
        registry["spec"]["storage"]["filesystem"]["hostPath"],
        "/var/lib/berth-registry"
    );
    one(&objects, "ServiceMonitor");
}

#[test]
fn invalid_values_fail_with_the_schemas_message() {
    const SCHEMA: &str = "values don't meet the specifications of the schema(s)";
    let cases: &[(&[&str], &[&str])] = &[
        (
            &["--set", "replicaCount=0"],
            &[SCHEMA, "at '/replicaCount': minimum: got 0, want 1"],
        ),
        (
            &["--set", "replicas=2"],
            &[SCHEMA, "additional properties 'replicas' not allowed"],
        ),
        (
            &["--set", "image.pullPolicy=Sometimes"],
            &[
                SCHEMA,
                "at '/image/pullPolicy': value must be one of 'Always', 'IfNotPresent', 'Never'",
            ],
        ),
        (
            &["--set", "registryImage.digest=latest"],
            &[
                SCHEMA,
                "at '/registryImage/digest': 'latest' does not match pattern",
            ],
        ),
        (
            &["--set", "leaderElection.leaseDuration=15"],
            &[
                SCHEMA,
                "at '/leaderElection/leaseDuration': got number, want string",
            ],
        ),
        (
            &["--set-string", "leaderElection.renewInterval=5 seconds"],
            &[
                SCHEMA,
                "at '/leaderElection/renewInterval': '5 seconds' does not match pattern",
            ],
        ),
        (
            &["--set", "logFormat=xml"],
            &[
                SCHEMA,
                "at '/logFormat': value must be one of 'json', 'text'",
            ],
        ),
        (
            &["--set", "metrics.port=70000"],
            &[
                SCHEMA,
                "at '/metrics/port': maximum: got 70,000, want 65,535",
            ],
        ),
        (
            &["--set", "podDisruptionBudget.maxUnavailable=0"],
            &[
                SCHEMA,
                "at '/podDisruptionBudget/maxUnavailable'",
                "minimum: got 0, want 1",
            ],
        ),
        (
            &["--set", "watchNamespace=Not_A_Namespace"],
            &[SCHEMA, "at '/watchNamespace'"],
        ),
        (
            &["--set", &format!("defaultRegistry.name={}", "r".repeat(50))],
            &[
                SCHEMA,
                "at '/defaultRegistry/name': maxLength: got 50, want 49",
            ],
        ),
        (
            &[
                "--set-json",
                r#"defaultRegistry={"enabled":true,"spec":{"storage":{"s3":{"bucket":"b"},"filesystem":{"hostPath":"/x"}}}}"#,
            ],
            &[
                SCHEMA,
                "at '/defaultRegistry/spec/storage': maxProperties: got 2, want 1",
            ],
        ),
        (
            &["--set", "defaultRegistry.enabled=true"],
            &[
                SCHEMA,
                "at '/defaultRegistry/spec': missing property 'storage'",
            ],
        ),
        // Rules between values, which the templates check.
        (
            &["--set", "leaderElection.renewDeadline=20s"],
            &[
                "leaderElection.renewDeadline (20s) must be shorter than leaderElection.leaseDuration (15s)",
            ],
        ),
        (
            &["--set", "leaderElection.renewInterval=10s"],
            &[
                "leaderElection.renewInterval (10s) must be shorter than leaderElection.renewDeadline (10s)",
            ],
        ),
        (
            &[
                "--set",
                "defaultRegistry.enabled=true,watchNamespace=elsewhere",
                "--set",
                "defaultRegistry.spec.storage.s3.bucket=images",
            ],
            &[
                "defaultRegistry.namespace (berth-system) is not watched: the operator watches only watchNamespace (elsewhere)",
            ],
        ),
        (
            &[
                "--set",
                "metrics.serviceMonitor.enabled=true,metrics.serviceMonitor.scrapeTimeout=1m",
            ],
            &[
                "metrics.serviceMonitor.scrapeTimeout (1m) must not be longer than metrics.serviceMonitor.interval (30s)",
            ],
        ),
        (
            &[
                "--set",
                "metrics.serviceMonitor.enabled=true,metrics.service.enabled=false",
            ],
            &["metrics.serviceMonitor.enabled needs metrics.service.enabled"],
        ),
        (
            &["--set", "serviceAccount.create=false"],
            &["serviceAccount.name is required when serviceAccount.create is false"],
        ),
    ];
    for (args, messages) in cases {
        let mut all = vec![
            "template",
            RELEASE,
            "charts/berth",
            "--namespace",
            RELEASE_NAMESPACE,
        ];
        all.extend(*args);
        let out = helm(&all, None);
        let stderr = text(&out.stderr);
        assert!(!out.status.success(), "{args:?} was accepted");
        for message in *messages {
            assert!(
                stderr.contains(message),
                "{args:?}: expected {message:?} in:\n{stderr}"
            );
        }
    }
}

/// Every key in values.yaml has a comment on the line above it (or on its own line).
#[test]
fn values_yaml_is_documented_line_by_line() {
    let values = fs::read_to_string(chart().join("values.yaml")).expect("values.yaml");
    let mut previous = "";
    for (number, line) in values.lines().enumerate() {
        let trimmed = line.trim_start();
        let is_key = trimmed.split_once(':').is_some_and(|(key, _)| {
            !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric())
        });
        if is_key && !trimmed.starts_with('#') {
            assert!(
                previous.trim_start().starts_with('#') || line.contains(" # "),
                "values.yaml line {}: {line:?} has no comment",
                number + 1
            );
        }
        if !line.trim().is_empty() {
            previous = line;
        }
    }
}

/// `helm install` and `kubectl apply -f crds/` install the same CRD.
#[test]
fn chart_crd_is_the_generated_crd() {
    let generated =
        fs::read_to_string(repo().join("crds/registry.yaml")).expect("crds/registry.yaml");
    let in_chart = fs::read_to_string(chart().join("crds/registry.yaml"))
        .expect("charts/berth/crds/registry.yaml");
    assert!(
        in_chart == generated,
        "charts/berth/crds/registry.yaml differs from crds/registry.yaml: run `make crds`"
    );
    let objects = render(RELEASE, RELEASE_NAMESPACE, &[], None);
    let rendered = one(&objects, "CustomResourceDefinition");
    let expected: Value = serde_norway::from_str(&generated).expect("CRD YAML");
    assert_eq!(rendered, &expected);
}

// ---------------------------------------------------------------------------
// RBAC: exactly what the operator declares

/// Every resource in `RBAC` is one the code's types name, as kube derives
/// them, and no permission is declared twice.
#[test]
fn declared_rbac_names_the_resources_the_code_uses() {
    fn resource<K: Resource<DynamicType = ()>>() -> (String, String) {
        (K::group(&()).into_owned(), K::plural(&()).into_owned())
    }
    let used: BTreeSet<(String, String)> = [
        resource::<Registry>(),
        ("berth.dev".to_owned(), "registries/status".to_owned()),
        resource::<ConfigMap>(),
        resource::<ServiceAccount>(),
        resource::<Service>(),
        resource::<DaemonSet>(),
        resource::<CronJob>(),
        resource::<Job>(),
        resource::<Secret>(),
        resource::<Pod>(),
        ("".to_owned(), "pods/proxy".to_owned()),
        resource::<Event>(),
        resource::<Lease>(),
    ]
    .into_iter()
    .collect();
    let declared: BTreeSet<(String, String)> = RBAC
        .iter()
        .map(|r| (r.group.to_owned(), r.resource.to_owned()))
        .collect();
    assert_eq!(declared, used);

    const KNOWN: &[&str] = &[
        "create", "delete", "get", "list", "patch", "update", "watch",
    ];
    for rule in RBAC {
        assert!(
            rule.verbs.windows(2).all(|w| w[0] < w[1]),
            "{rule:?}: verbs unsorted or repeated"
        );
        assert!(
            rule.verbs.iter().all(|v| KNOWN.contains(v)),
            "{rule:?}: unknown verb"
        );
    }
    let permissions = rbac::permissions();
    let unique: BTreeSet<_> = permissions.iter().collect();
    assert_eq!(
        unique.len(),
        permissions.len(),
        "a permission is declared twice"
    );
}

/// One permission: where (a namespace, or `*` for cluster-wide), API group,
/// resource, verb, and the object name it is restricted to.
type Grant = (String, String, String, String, Option<String>);

/// What the rendered chart grants the operator's ServiceAccount: the rules
/// of every role that a rendered binding binds to it.
fn granted(objects: &[Value], account: &str, account_namespace: &str) -> BTreeSet<Grant> {
    let mut grants = BTreeSet::new();
    for binding in objects
        .iter()
        .filter(|o| matches!(kind(o), "ClusterRoleBinding" | "RoleBinding"))
    {
        let binds_operator = binding["subjects"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|s| {
                s["kind"] == "ServiceAccount"
                    && s["name"] == account
                    && s["namespace"] == account_namespace
            });
        if !binds_operator {
            continue;
        }
        let role_kind = binding["roleRef"]["kind"].as_str().expect("roleRef.kind");
        let role_name = binding["roleRef"]["name"].as_str().expect("roleRef.name");
        let binding_namespace = binding["metadata"]["namespace"].as_str();
        let role = objects
            .iter()
            .find(|o| {
                kind(o) == role_kind
                    && name(o) == role_name
                    && (role_kind == "ClusterRole"
                        || o["metadata"]["namespace"].as_str() == binding_namespace)
            })
            .unwrap_or_else(|| {
                panic!(
                    "{} {} binds a {role_kind} {role_name} the chart does not render",
                    kind(binding),
                    name(binding)
                )
            });
        let scope = match (kind(binding), binding_namespace) {
            ("ClusterRoleBinding", _) => "*".to_owned(),
            (_, Some(namespace)) => namespace.to_owned(),
            _ => panic!("RoleBinding {} has no namespace", name(binding)),
        };
        for rule in role["rules"].as_array().expect("rules") {
            let list = |key: &str| -> Vec<String> {
                rule[key]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|v| v.as_str().expect("a string").to_owned())
                    .collect()
            };
            assert!(
                rule.get("nonResourceURLs").is_none(),
                "non-resource URL granted: {rule}"
            );
            let names: Vec<Option<String>> = match list("resourceNames") {
                names if names.is_empty() => vec![None],
                names => names.into_iter().map(Some).collect(),
            };
            for group in list("apiGroups") {
                for resource in list("resources") {
                    for verb in list("verbs") {
                        for restricted in &names {
                            assert!(
                                group != "*" && resource != "*" && verb != "*",
                                "wildcard granted: {rule}"
                            );
                            grants.insert((
                                scope.clone(),
                                group.clone(),
                                resource.clone(),
                                verb.clone(),
                                restricted.clone(),
                            ));
                        }
                    }
                }
            }
        }
    }
    grants
}

/// What `RBAC` says the operator needs, placed as the chart must place it.
fn declared(
    watch_namespace: Option<&str>,
    lease_namespace: &str,
    lease_name: &str,
) -> BTreeSet<Grant> {
    rbac::permissions()
        .into_iter()
        .map(|(scope, group, resource, verb, names)| {
            let place = match scope {
                Scope::Watched => watch_namespace.unwrap_or("*").to_owned(),
                Scope::LeaseNamespace => lease_namespace.to_owned(),
            };
            let restricted = match names {
                Names::Any => None,
                Names::Lease => Some(lease_name.to_owned()),
            };
            (
                place,
                group.to_owned(),
                resource.to_owned(),
                verb.to_owned(),
                restricted,
            )
        })
        .collect()
}

/// The value of `--flag=value` in the operator container's args.
fn flag(deployment: &Value, flag: &str) -> Option<String> {
    let prefix = format!("{flag}=");
    deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()?
        .iter()
        .filter_map(Value::as_str)
        .find_map(|a| a.strip_prefix(&prefix).map(str::to_owned))
}

fn env_value(deployment: &Value, var: &str) -> Option<String> {
    deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == var)?["value"]
        .as_str()
        .map(str::to_owned)
}

#[test]
fn chart_grants_exactly_the_rbac_the_operator_declares() {
    let cases: &[(&str, &[&str], Option<&str>)] = &[
        ("default values", &[], None),
        (
            "watchNamespace",
            &["--set", "watchNamespace=apps"],
            Some("apps"),
        ),
        (
            "watchNamespace = release namespace",
            &["--set", "watchNamespace=berth-system"],
            Some("berth-system"),
        ),
        (
            "fullnameOverride and an existing ServiceAccount",
            &[
                "--set",
                "fullnameOverride=registry-operator,serviceAccount.create=false,serviceAccount.name=ops",
            ],
            None,
        ),
    ];
    for (what, args, watch_namespace) in cases {
        let objects = render(RELEASE, RELEASE_NAMESPACE, args, None);
        let deployment = one(&objects, "Deployment");
        let pod = &deployment["spec"]["template"]["spec"];
        let account = pod["serviceAccountName"]
            .as_str()
            .expect("serviceAccountName");
        let lease = flag(deployment, "--lease-name").expect("--lease-name");
        assert_eq!(
            env_value(deployment, "BERTH_WATCH_NAMESPACE").as_deref(),
            *watch_namespace,
            "{what}: the operator watches what RBAC allows"
        );
        let granted = granted(&objects, account, RELEASE_NAMESPACE);
        let declared = declared(*watch_namespace, RELEASE_NAMESPACE, &lease);
        let missing: Vec<_> = declared.difference(&granted).collect();
        let extra: Vec<_> = granted.difference(&declared).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "{what}: the chart's RBAC differs from operator/src/rbac.rs\n  missing: {missing:?}\n  not declared: {extra:?}"
        );
    }
    // The roles for people are bound to nobody by the chart.
    let objects = render(
        RELEASE,
        RELEASE_NAMESPACE,
        &["--set", "rbac.aggregateToDefaultRoles=true"],
        None,
    );
    let aggregated: Vec<&str> = find(&objects, "ClusterRole")
        .into_iter()
        .filter(|r| {
            r["metadata"]["labels"].as_object().is_some_and(|l| {
                l.keys()
                    .any(|k| k.starts_with("rbac.authorization.k8s.io/aggregate-to-"))
            })
        })
        .map(name)
        .collect();
    assert_eq!(aggregated.len(), 2, "{aggregated:?}");
    let bound: Vec<&str> = objects
        .iter()
        .filter(|o| matches!(kind(o), "ClusterRoleBinding" | "RoleBinding"))
        .filter_map(|b| b["roleRef"]["name"].as_str())
        .collect();
    assert!(aggregated.iter().all(|r| !bound.contains(r)), "{bound:?}");
    assert_eq!(
        granted(&objects, RELEASE, RELEASE_NAMESPACE),
        declared(None, RELEASE_NAMESPACE, RELEASE)
    );

    // Without RBAC the chart grants nothing (the user does).
    let objects = render(
        RELEASE,
        RELEASE_NAMESPACE,
        &["--set", "rbac.create=false"],
        None,
    );
    assert!(granted(&objects, RELEASE, RELEASE_NAMESPACE).is_empty());
}

// ---------------------------------------------------------------------------
// The API server

/// The chart, rendered for the default values and for every example values
/// file, applies to kube-apiserver: the CRD, the RBAC, the Deployment, the
/// PodDisruptionBudget, the Services, the ServiceMonitor, the Registry.
#[tokio::test]
async fn rendered_chart_applies_for_default_and_example_values() {
    let plane = ControlPlane::shared().await;
    let client = plane.client().await;
    let version = server_version(&client).await;
    apply(&client, &documents(SERVICE_MONITOR_CRD)).await;
    let _examples = EXAMPLES_NAMESPACE_LOCK.lock().await;
    let mut cases = vec![
        (String::from("berth-defaults"), Vec::<String>::new()),
        (
            // Every optional object at once.
            String::from("berth-optional"),
            [
                "--set",
                "rbac.aggregateToDefaultRoles=true,metrics.serviceMonitor.enabled=true",
                "--set",
                "defaultRegistry.enabled=true,defaultRegistry.spec.storage.s3.bucket=images",
            ]
            .map(str::to_owned)
            .to_vec(),
        ),
    ];
    for (i, file) in example_values().iter().enumerate() {
        cases.push((
            format!("berth-example-{i}"),
            vec!["-f".to_owned(), file.display().to_string()],
        ));
    }
    for (release, args) in cases {
        // A release of its own (cluster-scoped names differ) in a namespace of its own.
        let namespace = plane.namespace(&format!("chart-{release}")).await;
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let objects = render(&release, &namespace, &args, Some(&version));
        for object in &objects {
            if let Some(other) = object["metadata"]["namespace"].as_str()
                && other != namespace
            {
                create_namespace(&client, other).await;
            }
        }
        apply(&client, &objects).await;
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), &namespace);
        let deployment = deployments
            .get(&release)
            .await
            .expect("the Deployment is there");
        assert_eq!(deployment.spec.and_then(|s| s.replicas), Some(2));
    }
}

/// `kubectl apply -f examples/<file>` works for every example as it is.
#[tokio::test]
async fn examples_apply_cleanly() {
    let plane = ControlPlane::shared().await;
    let client = plane.client().await;
    let _examples = EXAMPLES_NAMESPACE_LOCK.lock().await;
    let files = example_manifests();
    assert!(files.len() >= 2, "examples: {files:?}");
    let mut storages = BTreeSet::new();
    for file in files {
        let objects = documents(&fs::read_to_string(&file).expect("example"));
        assert!(!objects.is_empty(), "{} is empty", file.display());
        apply(&client, &objects).await;
        for registry in find(&objects, "Registry") {
            let namespace = registry["metadata"]["namespace"]
                .as_str()
                .expect("namespace");
            assert_eq!(namespace, EXAMPLES_NAMESPACE, "{}", file.display());
            let api: Api<Registry> = Api::namespaced(client.clone(), namespace);
            let stored = api
                .get(name(registry))
                .await
                .expect("the Registry is stored");
            storages.insert(stored.spec.storage_kind().to_owned());
        }
    }
    assert!(
        storages.len() >= 2,
        "an example for each storage: {storages:?}"
    );
}

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
    let _examples = EXAMPLES_NAMESPACE_LOCK.lock().await;
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
