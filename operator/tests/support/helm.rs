//! The Helm chart's test helpers: helm itself, rendering, and applying what
//! it renders to the API server of [`super::ControlPlane`].

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DynamicObject, GroupVersionKind, Patch, PatchParams, ValidationDirective};
use kube::discovery::{self, Scope as ApiScope};
use kube::{Api, Client};
use serde::Deserialize;
use serde_json::{Value, json};

use super::eventually_within;

/// The release name of the README's install.
pub const RELEASE: &str = "berth";
/// The namespace of the README's install.
pub const RELEASE_NAMESPACE: &str = "berth-system";
/// The namespace of the example Registries (written into examples/*.yaml).
pub const EXAMPLES_NAMESPACE: &str = "registry";
/// The field manager of the applies made by these tests.
pub const MANAGER: &str = "berth-chart-tests";

/// The checkout's root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .expect("repository root")
}

/// The chart, `charts/berth`.
pub fn chart() -> PathBuf {
    repo().join("charts/berth")
}

/// Every values file under examples/ (the chart renders each).
pub fn example_values() -> Vec<PathBuf> {
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
pub fn example_manifests() -> Vec<PathBuf> {
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
pub fn helm(args: &[&str], kubeconfig: Option<&Path>) -> Output {
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

/// Command output as text (lossy UTF-8).
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `helm template` of the chart: every object, CRDs included.
pub fn render(
    release: &str,
    namespace: &str,
    args: &[&str],
    kube_version: Option<&str>,
) -> Vec<Value> {
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
pub fn documents(yaml: &str) -> Vec<Value> {
    serde_norway::Deserializer::from_str(yaml)
        .map(|doc| Value::deserialize(doc).expect("a YAML document"))
        .filter(|v| !v.is_null())
        .collect()
}

/// A rendered object's `kind`.
pub fn kind(object: &Value) -> &str {
    object["kind"].as_str().unwrap_or_default()
}

/// A rendered object's `metadata.name`.
pub fn name(object: &Value) -> &str {
    object["metadata"]["name"].as_str().unwrap_or_default()
}

/// The rendered objects of `kind_`.
pub fn find<'a>(objects: &'a [Value], kind_: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| kind(o) == kind_).collect()
}

/// The one rendered object of `kind_`; panics unless there is exactly one.
pub fn one<'a>(objects: &'a [Value], kind_: &str) -> &'a Value {
    let found = find(objects, kind_);
    assert_eq!(found.len(), 1, "expected one {kind_}, got {}", found.len());
    found[0]
}

/// Applies `objects` server-side with strict field validation (an unknown
/// field is an error, not silently dropped): CRDs first (waiting until they
/// are served), then Namespaces, then the rest in order.
pub async fn apply(client: &Client, objects: &[Value]) {
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

/// Applies one object (server-side, strict field validation); what the server stored.
pub async fn apply_one(client: &Client, object: &Value) -> DynamicObject {
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

/// Waits until the CRD `crd` is established.
pub async fn established(client: &Client, crd: &str) {
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

/// The API server's version (`gitVersion`), for `helm --kube-version`.
pub async fn server_version(client: &Client) -> String {
    client
        .apiserver_version()
        .await
        .expect("/version")
        .git_version
}

/// Creates (applies) the namespace.
pub async fn create_namespace(client: &Client, namespace: &str) {
    apply(
        client,
        &[json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})],
    )
    .await;
}

/// The value of `--flag=value` in the operator container's args.
pub fn flag(deployment: &Value, flag: &str) -> Option<String> {
    let prefix = format!("{flag}=");
    deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()?
        .iter()
        .filter_map(Value::as_str)
        .find_map(|a| a.strip_prefix(&prefix).map(str::to_owned))
}

/// The value of the environment variable `var` of the operator container.
pub fn env_value(deployment: &Value, var: &str) -> Option<String> {
    deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == var)?["value"]
        .as_str()
        .map(str::to_owned)
}
