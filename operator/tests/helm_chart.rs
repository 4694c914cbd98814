//! The Helm chart (`charts/berth`) with helm alone (built by `make tools`,
//! scripts/helm-tools.sh): it lints and renders for the default values and
//! for every example values file, invalid values fail with the schema's
//! message, values.yaml is documented, and its CRD is the generated one.

mod support;

use std::collections::BTreeSet;
use std::fs;

use serde_json::{Value, json};
use support::helm::*;

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
