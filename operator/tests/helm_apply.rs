//! The chart, rendered by helm, and the manifests of `examples/` apply to the
//! real kube-apiserver of `support` (server-side, strict field validation).

mod support;

use std::collections::BTreeSet;
use std::fs;

use berth_operator::crd::Registry;
use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;
use support::ControlPlane;
use support::helm::*;

/// Tests that apply objects into the examples' namespace take turns, so
/// one does not change a Registry another is watching.
static EXAMPLES_NAMESPACE_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

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
