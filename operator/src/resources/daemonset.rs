//! The DaemonSet: one berth-registry pod per selected node.

use k8s_openapi::api::apps::v1::{
    DaemonSet, DaemonSetSpec, DaemonSetUpdateStrategy, RollingUpdateDaemonSet,
};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapVolumeSource, Container, ContainerPort, EnvVar, EnvVarSource,
    HTTPGetAction, HostPathVolumeSource, PersistentVolumeClaimVolumeSource, PodSecurityContext,
    PodSpec, PodTemplateSpec, Probe, SeccompProfile, SecretKeySelector, SecretVolumeSource,
    SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::configmap::listen_port;
use super::{
    AUTH_DIR, CONFIG_DIR, CONFIG_HASH_ANNOTATION, CONFIG_KEY, DATA_DIR, TLS_DIR, component_labels,
    metadata, object_name,
};
use crate::crd::{ExposureMode, Registry, S3_ACCESS_KEY, S3_SECRET_KEY};

/// The user and group the registry runs as.
pub const RUN_AS: i64 = 65532;

/// The DaemonSet running `image`, its pod template annotated with `config_hash`.
pub fn daemon_set(registry: &Registry, image: &str, config_hash: &str) -> DaemonSet {
    let spec = &registry.spec;
    let selector = component_labels(registry, "registry");
    let mut annotations = spec.pod_annotations.clone();
    annotations.insert(CONFIG_HASH_ANNOTATION.to_owned(), config_hash.to_owned());
    let host_network = spec.exposure.mode == ExposureMode::HostNetwork;

    // A surge pod could never bind the node's port, so replace in place.
    let rolling_update = RollingUpdateDaemonSet {
        max_surge: Some(IntOrString::Int(0)),
        max_unavailable: Some(IntOrString::Int(1)),
    };

    DaemonSet {
        metadata: metadata(registry, object_name(registry)),
        spec: Some(DaemonSetSpec {
            selector: LabelSelector {
                match_labels: Some(selector.clone()),
                ..LabelSelector::default()
            },
            update_strategy: Some(DaemonSetUpdateStrategy {
                type_: Some("RollingUpdate".to_owned()),
                rolling_update: Some(rolling_update),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(selector),
                    annotations: Some(annotations),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    service_account_name: Some(object_name(registry)),
                    automount_service_account_token: Some(false),
                    // Service links would inject REGISTRY_* variables, which
                    // the registry reads as config overrides.
                    enable_service_links: Some(false),
                    host_network: host_network.then_some(true),
                    dns_policy: host_network.then(|| "ClusterFirstWithHostNet".to_owned()),
                    node_selector: (!spec.node_selector.is_empty())
                        .then(|| spec.node_selector.clone()),
                    tolerations: (!spec.tolerations.is_empty()).then(|| spec.tolerations.clone()),
                    affinity: spec.affinity.clone(),
                    priority_class_name: spec.priority_class_name.clone(),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(RUN_AS),
                        run_as_group: Some(RUN_AS),
                        fs_group: Some(RUN_AS),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".to_owned(),
                            ..Default::default()
                        }),
                        ..PodSecurityContext::default()
                    }),
                    containers: vec![container(registry, image)],
                    volumes: Some(volumes(registry)),
                    ..PodSpec::default()
                }),
            },
            ..DaemonSetSpec::default()
        }),
        ..DaemonSet::default()
    }
}

fn container(registry: &Registry, image: &str) -> Container {
    let spec = &registry.spec;
    let port = listen_port(registry);
    let scheme = if spec.tls.is_some() { "HTTPS" } else { "HTTP" };
    let probe = |path: &str, period| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::String("registry".to_owned()),
            scheme: Some(scheme.to_owned()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(3),
        ..Probe::default()
    };
    Container {
        name: "registry".to_owned(),
        image: Some(image.to_owned()),
        image_pull_policy: Some(spec.image_pull_policy.as_str().to_owned()),
        args: Some(vec![
            "serve".to_owned(),
            "--config".to_owned(),
            format!("{CONFIG_DIR}/{CONFIG_KEY}"),
        ]),
        ports: Some(vec![ContainerPort {
            name: Some("registry".to_owned()),
            container_port: port,
            host_port: Some(spec.exposure.port),
            protocol: Some("TCP".to_owned()),
            ..ContainerPort::default()
        }]),
        env: s3_env(registry),
        liveness_probe: Some(probe("/healthz", 10)),
        readiness_probe: Some(probe("/readyz", 5)),
        resources: spec.resources.clone(),
        security_context: Some(restricted_security_context()),
        volume_mounts: Some(volume_mounts(registry)),
        ..Container::default()
    }
}

/// Non-root, read-only root filesystem, no capabilities, no escalation.
pub fn restricted_security_context() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".to_owned()]),
            ..Capabilities::default()
        }),
        ..SecurityContext::default()
    }
}

/// `REGISTRY_STORAGE_S3_ACCESSKEY`/`SECRETKEY` from the credentials Secret.
pub fn s3_env(registry: &Registry) -> Option<Vec<EnvVar>> {
    let secret = registry
        .spec
        .storage
        .s3
        .as_ref()?
        .credentials_secret
        .as_ref()?;
    let from_secret = |var: &str, key: &str| EnvVar {
        name: var.to_owned(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.clone(),
                key: key.to_owned(),
                optional: Some(false),
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    };
    Some(vec![
        from_secret("REGISTRY_STORAGE_S3_ACCESSKEY", S3_ACCESS_KEY),
        from_secret("REGISTRY_STORAGE_S3_SECRETKEY", S3_SECRET_KEY),
    ])
}

/// Mounts of the config, TLS and htpasswd files, storage and a scratch `/tmp`.
pub fn volume_mounts(registry: &Registry) -> Vec<VolumeMount> {
    let mount = |name: &str, path: &str, read_only: bool| VolumeMount {
        name: name.to_owned(),
        mount_path: path.to_owned(),
        read_only: Some(read_only),
        ..VolumeMount::default()
    };
    let spec = &registry.spec;
    let mut mounts = vec![
        mount("config", CONFIG_DIR, true),
        mount("tmp", "/tmp", false),
    ];
    if spec.tls.is_some() {
        mounts.push(mount("tls", TLS_DIR, true));
    }
    if spec.auth.is_some() {
        mounts.push(mount("auth", AUTH_DIR, true));
    }
    if spec.storage.filesystem.is_some() {
        mounts.push(mount("data", DATA_DIR, false));
    }
    mounts
}

/// The volumes behind [`volume_mounts`].
pub fn volumes(registry: &Registry) -> Vec<Volume> {
    let spec = &registry.spec;
    let secret = |name: &str, secret_name: &str| Volume {
        name: name.to_owned(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret_name.to_owned()),
            ..SecretVolumeSource::default()
        }),
        ..Volume::default()
    };
    let mut volumes = vec![
        Volume {
            name: "config".to_owned(),
            config_map: Some(ConfigMapVolumeSource {
                name: object_name(registry),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        },
        Volume {
            name: "tmp".to_owned(),
            empty_dir: Some(Default::default()),
            ..Volume::default()
        },
    ];
    if let Some(tls) = &spec.tls {
        volumes.push(secret("tls", &tls.secret_name));
    }
    if let Some(auth) = &spec.auth {
        volumes.push(secret("auth", &auth.htpasswd.secret_name));
    }
    if let Some(fs) = &spec.storage.filesystem {
        let data = match (&fs.host_path, &fs.persistent_volume_claim) {
            (Some(path), _) => Volume {
                host_path: Some(HostPathVolumeSource {
                    path: path.clone(),
                    type_: Some("DirectoryOrCreate".to_owned()),
                }),
                ..Volume::default()
            },
            (None, claim) => Volume {
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                    claim_name: claim.clone().unwrap_or_default(),
                    read_only: Some(false),
                }),
                ..Volume::default()
            },
        };
        volumes.push(Volume {
            name: "data".to_owned(),
            ..data
        });
    }
    volumes
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::*;

    fn pod(ds: &DaemonSet) -> (&PodSpec, &Container) {
        let pod = ds.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        (pod, &pod.containers[0])
    }

    #[test]
    fn s3_registry_pod() {
        let ds = daemon_set(&s3_registry(), IMAGE, "abc");
        let spec = ds.spec.as_ref().unwrap();
        let rolling = spec
            .update_strategy
            .as_ref()
            .unwrap()
            .rolling_update
            .as_ref()
            .unwrap();
        assert_eq!(rolling.max_surge, Some(IntOrString::Int(0)));
        assert_eq!(
            spec.selector.match_labels.as_ref().unwrap()["app.kubernetes.io/component"],
            "registry"
        );
        assert_eq!(
            spec.template
                .metadata
                .as_ref()
                .unwrap()
                .annotations
                .as_ref()
                .unwrap()[CONFIG_HASH_ANNOTATION],
            "abc"
        );

        let (pod, container) = pod(&ds);
        assert_eq!(pod.enable_service_links, Some(false));
        assert_eq!(pod.host_network, None);
        assert_eq!(pod.service_account_name.as_deref(), Some("cache"));
        assert_eq!(
            container.args.as_ref().unwrap(),
            &["serve", "--config", "/etc/berth/config.yml"]
        );
        assert_eq!(container.image.as_deref(), Some(IMAGE));
        assert_eq!(container.image_pull_policy.as_deref(), Some("IfNotPresent"));
        let port = &container.ports.as_ref().unwrap()[0];
        assert_eq!((port.container_port, port.host_port), (5000, Some(5000)));

        let probe = container
            .readiness_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap();
        assert_eq!(
            (probe.path.as_deref(), probe.scheme.as_deref()),
            (Some("/readyz"), Some("HTTPS"))
        );
        let live = container
            .liveness_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap();
        assert_eq!(live.path.as_deref(), Some("/healthz"));

        let security = container.security_context.as_ref().unwrap();
        assert_eq!(security.read_only_root_filesystem, Some(true));
        assert_eq!(security.allow_privilege_escalation, Some(false));
        assert_eq!(
            security
                .capabilities
                .as_ref()
                .unwrap()
                .drop
                .as_ref()
                .unwrap(),
            &["ALL"]
        );
        assert_eq!(
            pod.security_context.as_ref().unwrap().run_as_non_root,
            Some(true)
        );

        let env = container.env.as_ref().unwrap();
        let names: Vec<_> = env.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "REGISTRY_STORAGE_S3_ACCESSKEY",
                "REGISTRY_STORAGE_S3_SECRETKEY"
            ]
        );
        let key_ref = env[1]
            .value_from
            .as_ref()
            .unwrap()
            .secret_key_ref
            .as_ref()
            .unwrap();
        assert_eq!(
            (key_ref.name.as_str(), key_ref.key.as_str()),
            ("s3-keys", "secretKey")
        );

        let volumes: Vec<_> = pod
            .volumes
            .as_ref()
            .unwrap()
            .iter()
            .map(|v| v.name.as_str())
            .collect();
        assert_eq!(volumes, ["config", "tmp", "tls", "auth"]);
        let tls = &pod.volumes.as_ref().unwrap()[2];
        assert_eq!(
            tls.secret.as_ref().unwrap().secret_name.as_deref(),
            Some("cache-tls")
        );
        let mounts: Vec<_> = container
            .volume_mounts
            .as_ref()
            .unwrap()
            .iter()
            .map(|m| m.mount_path.as_str())
            .collect();
        assert_eq!(
            mounts,
            ["/etc/berth", "/tmp", "/etc/berth/tls", "/etc/berth/auth"]
        );
    }

    #[test]
    fn host_network_registry_pod() {
        let ds = daemon_set(&host_path_registry(), IMAGE, "abc");
        let (pod, container) = pod(&ds);
        assert_eq!(pod.host_network, Some(true));
        assert_eq!(pod.dns_policy.as_deref(), Some("ClusterFirstWithHostNet"));
        let port = &container.ports.as_ref().unwrap()[0];
        assert_eq!((port.container_port, port.host_port), (5443, Some(5443)));
        assert_eq!(container.env, None);
        let data = pod
            .volumes
            .as_ref()
            .unwrap()
            .iter()
            .find(|v| v.name == "data")
            .unwrap();
        assert_eq!(data.host_path.as_ref().unwrap().path, "/var/lib/berth");
        assert!(
            container
                .volume_mounts
                .as_ref()
                .unwrap()
                .iter()
                .any(|m| m.mount_path == DATA_DIR)
        );
    }
}
