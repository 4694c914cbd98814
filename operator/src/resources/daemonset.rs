//! The DaemonSet: one berth-registry pod per selected node.

use k8s_openapi::api::apps::v1::{
    DaemonSet, DaemonSetSpec, DaemonSetUpdateStrategy, RollingUpdateDaemonSet,
};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, HTTPGetAction, HostPathVolumeSource, PodSpec, PodTemplateSpec, Probe,
    Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use kube::ResourceExt;

use super::configmap::listen_port;
use super::containerd::hosts_init_container;
use super::pod::{mount, pod_spec, prepare_host_path, registry_container};
use super::{
    CONFIG_DIR, CONFIG_KEY, NODE_CACHE_DIR, SECRETS_HASH_ANNOTATION, component_labels, metadata,
    object_name,
};
use crate::crd::{ExposureMode, Registry};

/// The DaemonSet running `image` with the config of the ConfigMap
/// `config_map`, its pod template annotated with `secrets_hash`.
pub fn daemon_set(
    registry: &Registry,
    image: &str,
    config_map: &str,
    secrets_hash: &str,
) -> DaemonSet {
    let spec = &registry.spec;
    let selector = component_labels(registry, "registry");
    let mut annotations = spec.pod_annotations.clone();
    annotations.insert(SECRETS_HASH_ANNOTATION.to_owned(), secrets_hash.to_owned());
    let host_network = spec.exposure.mode == ExposureMode::HostNetwork;

    // A surge pod could never bind the node's port, so replace in place.
    let rolling_update = RollingUpdateDaemonSet {
        max_surge: Some(IntOrString::Int(0)),
        max_unavailable: Some(IntOrString::Int(1)),
    };
    let mut pod = pod_spec(
        registry,
        image,
        config_map,
        vec![serving_container(registry, image)],
    );
    add_node_parts(registry, image, &mut pod);

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
                    host_network: host_network.then_some(true),
                    dns_policy: host_network.then(|| "ClusterFirstWithHostNet".to_owned()),
                    ..pod
                }),
            },
            ..DaemonSetSpec::default()
        }),
        ..DaemonSet::default()
    }
}

/// What only the registry pods have, as they run on the node itself: the
/// node cache's hostPath (prepared for the registry's user as filesystem
/// storage is) and the init container writing containerd's hosts files.
/// GC pods have neither: they reach storage, never a node's disk.
fn add_node_parts(registry: &Registry, image: &str, pod: &mut PodSpec) {
    let mut init = pod.init_containers.take().unwrap_or_default();
    let volumes = pod.volumes.get_or_insert_with(Vec::new);
    if let Some(path) = node_cache_host_path(registry) {
        init.push(prepare_host_path(
            registry,
            image,
            "prepare-node-cache",
            NODE_CACHE_VOLUME,
            NODE_CACHE_DIR,
        ));
        volumes.push(Volume {
            name: NODE_CACHE_VOLUME.to_owned(),
            host_path: Some(HostPathVolumeSource {
                path,
                type_: Some("DirectoryOrCreate".to_owned()),
            }),
            ..Volume::default()
        });
        for container in &mut pod.containers {
            let mounts = container.volume_mounts.get_or_insert_with(Vec::new);
            mounts.push(mount(NODE_CACHE_VOLUME, NODE_CACHE_DIR, false));
        }
    }
    if let Some((container, volume)) = hosts_init_container(registry, image) {
        init.push(container);
        volumes.push(volume);
    }
    pod.init_containers = (!init.is_empty()).then_some(init);
}

/// The volume of the node cache.
const NODE_CACHE_VOLUME: &str = "node-cache";

/// The node directory of this Registry's node cache:
/// `<spec.nodeCache.path>/<namespace>/<name>`, so that Registries sharing
/// a root never share a cache.
fn node_cache_host_path(registry: &Registry) -> Option<String> {
    let cache = registry.spec.node_cache.as_ref()?;
    Some(format!(
        "{}/{}/{}",
        cache.path.trim_end_matches('/'),
        registry.namespace().unwrap_or_default(),
        registry.name_any()
    ))
}

/// `berth-registry serve`, with its port on the node and its probes.
fn serving_container(registry: &Registry, image: &str) -> Container {
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
    let args = vec![
        "serve".to_owned(),
        "--config".to_owned(),
        format!("{CONFIG_DIR}/{CONFIG_KEY}"),
    ];
    Container {
        ports: Some(vec![ContainerPort {
            name: Some("registry".to_owned()),
            container_port: port,
            host_port: Some(spec.exposure.port),
            protocol: Some("TCP".to_owned()),
            ..ContainerPort::default()
        }]),
        liveness_probe: Some(probe("/healthz", 10)),
        readiness_probe: Some(probe("/readyz", 5)),
        ..registry_container(registry, image, "registry", args)
    }
}

#[cfg(test)]
mod tests {
    use super::super::DATA_DIR;
    use super::super::fixtures::*;
    use super::*;

    fn pod(ds: &DaemonSet) -> (&PodSpec, &Container) {
        let pod = ds.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        (pod, &pod.containers[0])
    }

    #[test]
    fn s3_registry_pod() {
        let ds = daemon_set(&s3_registry(), IMAGE, "cache-config-0123456789", "abc");
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
                .unwrap()[SECRETS_HASH_ANNOTATION],
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
    fn node_cache_and_hosts_writer_run_before_the_registry() {
        let registry = registry(serde_json::json!({
            "storage": {"s3": {"bucket": "images"}},
            "mirrors": [{"host": "ghcr.io", "credentialsSecret": "ghcr"}],
            "containerd": {"registryName": "berth.local"},
            "nodeCache": {"size": "10Gi", "path": "/var/lib/berth/cache/"},
        }));
        let ds = daemon_set(&registry, IMAGE, "cache-config-0123456789", "abc");
        let (pod, container) = pod(&ds);
        let init: Vec<_> = pod
            .init_containers
            .as_ref()
            .unwrap()
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(init, ["prepare-node-cache", "containerd-hosts"]);
        let prepare = &pod.init_containers.as_ref().unwrap()[0];
        assert_eq!(
            prepare.args.as_ref().unwrap(),
            &["prepare-storage", "--owner=65532:65532", "/var/cache/berth"]
        );
        let volume = |name: &str| {
            pod.volumes
                .as_ref()
                .unwrap()
                .iter()
                .find(|v| v.name == name)
                .unwrap()
                .clone()
        };
        assert_eq!(
            volume("node-cache").host_path.unwrap().path,
            "/var/lib/berth/cache/infra/cache"
        );
        assert_eq!(
            volume("mirror-0").secret.unwrap().secret_name.as_deref(),
            Some("ghcr")
        );
        let mounts: Vec<_> = container
            .volume_mounts
            .as_ref()
            .unwrap()
            .iter()
            .map(|m| (m.mount_path.as_str(), m.read_only))
            .collect();
        assert!(
            mounts.contains(&("/var/cache/berth", Some(false))),
            "{mounts:?}"
        );
        assert!(
            mounts.contains(&("/etc/berth/mirrors/0", Some(true))),
            "{mounts:?}"
        );
        assert!(
            !mounts.contains(&("/host/containerd-hosts", Some(false))),
            "only the init container reaches the hosts directory"
        );
    }

    #[test]
    fn host_network_registry_pod() {
        let ds = daemon_set(
            &host_path_registry(),
            IMAGE,
            "cache-config-0123456789",
            "abc",
        );
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
