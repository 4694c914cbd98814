//! The chart's RBAC is exactly `berth_operator::rbac::RBAC`, and that names
//! the resources the operator's code uses.

mod support;

use std::collections::BTreeSet;

use berth_operator::crd::Registry;
use berth_operator::rbac::{self, Names, RBAC, Scope};
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service, ServiceAccount};
use k8s_openapi::api::events::v1::Event;
use kube::Resource;
use serde_json::Value;
use support::helm::*;

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
