//! What writes and removes containerd's `hosts.toml` files on the nodes
//! (`spec.containerd`), by running `berth-registry containerd-hosts`:
//!
//! - `apply`, as an init container of every registry pod: the files point
//!   the node's containerd at the registry pod on that node, and an apply
//!   also removes what the Registry wrote earlier for hosts no longer named,
//!   so a dropped mirror is cleaned as the pods roll;
//! - `remove`, as the pod of a cleanup DaemonSet on the same nodes, once
//!   the Registry (or its `spec.containerd`) is gone and its own pods with
//!   it: nothing else could still reach the nodes' disks.
//!
//! Both run as root (the hosts directory is root's) with every capability
//! dropped: root owns the directory, so writing into it needs none.

use k8s_openapi::api::apps::v1::{DaemonSet, DaemonSetSpec, DaemonSetUpdateStrategy};
use k8s_openapi::api::core::v1::{
    Container, EnvVar, EnvVarSource, HostPathVolumeSource, ObjectFieldSelector, PodSecurityContext,
    PodSpec, PodTemplateSpec, SeccompProfile, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use kube::ResourceExt;

use super::pod::{mount, placed_on_nodes, root_container};
use super::{HOSTS_DIR, component_labels, labels};
use crate::crd::Registry;

/// The name of the init container that writes the hosts files.
pub const HOSTS_INIT_CONTAINER: &str = "containerd-hosts";
/// The component label of the cleanup DaemonSet and its pods.
pub const CLEANUP_COMPONENT: &str = "containerd-cleanup";
/// The volume holding the node's hosts directory.
const HOSTS_VOLUME: &str = "containerd-hosts";

/// The owner the hosts writer records for this Registry's files:
/// `<namespace>/<name>`.
pub fn owner(registry: &Registry) -> String {
    format!(
        "{}/{}",
        registry.namespace().unwrap_or_default(),
        registry.name_any()
    )
}

/// The init container running `containerd-hosts apply` with the
/// Registry's mirrors and name, pointing at `<scheme>://<node IP>:<exposure
/// port>`, and the hostPath volume it writes; `None` without
/// `spec.containerd`.
pub fn hosts_init_container(registry: &Registry, image: &str) -> Option<(Container, Volume)> {
    let containerd = registry.spec.containerd.as_ref()?;
    let scheme = if registry.spec.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let mut args = vec![
        "containerd-hosts".to_owned(),
        "apply".to_owned(),
        "--hosts-dir".to_owned(),
        HOSTS_DIR.to_owned(),
        "--endpoint".to_owned(),
        // The kubelet expands $(HOST_IP) from the container's environment.
        format!("{scheme}://$(HOST_IP):{}", registry.spec.exposure.port),
        "--owner".to_owned(),
        owner(registry),
    ];
    for mirror in &registry.spec.mirrors {
        args.push("--mirror".to_owned());
        args.push(match &mirror.url {
            Some(url) => format!("{}={url}", mirror.host),
            None => mirror.host.clone(),
        });
    }
    if let Some(name) = &containerd.registry_name {
        args.push("--own-name".to_owned());
        args.push(name.clone());
    }
    let host_ip = EnvVar {
        name: "HOST_IP".to_owned(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: "status.hostIP".to_owned(),
                ..ObjectFieldSelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    };
    let container = Container {
        env: Some(vec![host_ip]),
        ..hosts_container(registry, image, HOSTS_INIT_CONTAINER, args)
    };
    Some((container, hosts_volume(&containerd.hosts_dir)))
}

/// A berth-registry container `name` running `args` as root with no
/// capabilities, the node's hosts directory mounted at [`HOSTS_DIR`].
fn hosts_container(registry: &Registry, image: &str, name: &str, args: Vec<String>) -> Container {
    Container {
        termination_message_policy: Some("FallbackToLogsOnError".to_owned()),
        volume_mounts: Some(vec![mount(HOSTS_VOLUME, HOSTS_DIR, false)]),
        ..root_container(registry, image, name, args, &[])
    }
}

/// The node's hosts directory `hosts_dir` (created if missing).
fn hosts_volume(hosts_dir: &str) -> Volume {
    Volume {
        name: HOSTS_VOLUME.to_owned(),
        host_path: Some(HostPathVolumeSource {
            path: hosts_dir.to_owned(),
            type_: Some("DirectoryOrCreate".to_owned()),
        }),
        ..Volume::default()
    }
}

/// The name of the cleanup DaemonSet: `<registry>-containerd-cleanup`.
pub fn cleanup_name(registry: &Registry) -> String {
    format!("{}-{CLEANUP_COMPONENT}", registry.name_any())
}

/// The DaemonSet that removes what the Registry wrote into `hosts_dir` on
/// every node it selects: an init container removes, and the pod then
/// holds (`remove --hold`, which finds nothing more to remove), so a Ready
/// pod is a clean node. It has no owner reference: the Registry it cleans
/// up after is being deleted, and the garbage collector would delete it
/// along; the operator deletes it once every pod is Ready.
pub fn cleanup_daemon_set(registry: &Registry, image: &str, hosts_dir: &str) -> DaemonSet {
    let selector = component_labels(registry, CLEANUP_COMPONENT);
    let remove = |hold: bool| {
        let mut args = vec![
            "containerd-hosts".to_owned(),
            "remove".to_owned(),
            "--hosts-dir".to_owned(),
            HOSTS_DIR.to_owned(),
            "--owner".to_owned(),
            owner(registry),
        ];
        if hold {
            args.push("--hold".to_owned());
        }
        args
    };
    let pod = PodSpec {
        security_context: Some(PodSecurityContext {
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".to_owned(),
                ..Default::default()
            }),
            ..PodSecurityContext::default()
        }),
        // `remove --hold` only waits for SIGTERM.
        termination_grace_period_seconds: Some(5),
        init_containers: Some(vec![hosts_container(
            registry,
            image,
            "remove",
            remove(false),
        )]),
        containers: vec![hosts_container(registry, image, "hold", remove(true))],
        volumes: Some(vec![hosts_volume(hosts_dir)]),
        ..placed_on_nodes(registry)
    };
    DaemonSet {
        metadata: ObjectMeta {
            name: Some(cleanup_name(registry)),
            namespace: registry.namespace(),
            labels: Some(labels(registry)),
            ..ObjectMeta::default()
        },
        spec: Some(DaemonSetSpec {
            selector: LabelSelector {
                match_labels: Some(selector.clone()),
                ..LabelSelector::default()
            },
            update_strategy: Some(DaemonSetUpdateStrategy {
                type_: Some("RollingUpdate".to_owned()),
                ..DaemonSetUpdateStrategy::default()
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(selector),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod),
            },
            ..DaemonSetSpec::default()
        }),
        ..DaemonSet::default()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::fixtures::*;
    use super::*;

    fn node_registry() -> Registry {
        registry(json!({
            "storage": {"s3": {"bucket": "images"}},
            "exposure": {"port": 5002},
            "mirrors": [
                {"host": "docker.io"},
                {"host": "registry.example.com:5000", "url": "http://10.0.0.9:5000"},
                {"host": "_default"},
            ],
            "containerd": {"hostsDir": "/etc/containerd/certs.d", "registryName": "berth.local"},
            "nodeSelector": {"pool": "a"},
            "tolerations": [{"operator": "Exists"}],
        }))
    }

    #[test]
    fn the_init_container_applies_every_mirror_and_the_own_name() {
        let (init, volume) = hosts_init_container(&node_registry(), IMAGE).unwrap();
        assert_eq!(init.name, "containerd-hosts");
        assert_eq!(
            init.args.as_ref().unwrap(),
            &[
                "containerd-hosts",
                "apply",
                "--hosts-dir",
                "/host/containerd-hosts",
                "--endpoint",
                "http://$(HOST_IP):5002",
                "--owner",
                "infra/cache",
                "--mirror",
                "docker.io",
                "--mirror",
                "registry.example.com:5000=http://10.0.0.9:5000",
                "--mirror",
                "_default",
                "--own-name",
                "berth.local",
            ]
        );
        let env = &init.env.as_ref().unwrap()[0];
        assert_eq!(env.name, "HOST_IP");
        let field = env.value_from.as_ref().unwrap().field_ref.as_ref().unwrap();
        assert_eq!(field.field_path, "status.hostIP");
        let security = init.security_context.as_ref().unwrap();
        assert_eq!(
            (security.run_as_user, security.run_as_non_root),
            (Some(0), Some(false))
        );
        assert_eq!(security.read_only_root_filesystem, Some(true));
        assert_eq!(security.allow_privilege_escalation, Some(false));
        let capabilities = security.capabilities.as_ref().unwrap();
        assert_eq!(capabilities.drop.as_deref(), Some(&["ALL".to_owned()][..]));
        assert_eq!(
            capabilities.add, None,
            "root owns the directory: no capability"
        );
        let mount = &init.volume_mounts.as_ref().unwrap()[0];
        assert_eq!(
            (
                mount.name.as_str(),
                mount.mount_path.as_str(),
                mount.read_only
            ),
            ("containerd-hosts", "/host/containerd-hosts", Some(false))
        );
        let host_path = volume.host_path.unwrap();
        assert_eq!(
            (host_path.path.as_str(), host_path.type_.as_deref()),
            ("/etc/containerd/certs.d", Some("DirectoryOrCreate"))
        );

        let tls = registry(json!({
            "storage": {"s3": {"bucket": "images"}}, "tls": {"secretName": "t"}, "containerd": {}}));
        let (init, _) = hosts_init_container(&tls, IMAGE).unwrap();
        let args = init.args.unwrap();
        assert_eq!(args[5], "https://$(HOST_IP):5000");
        assert_eq!(args.len(), 8, "no mirror, no own name: {args:?}");
        assert!(hosts_init_container(&s3_registry(), IMAGE).is_none());
    }

    #[test]
    fn the_cleanup_daemon_set_removes_on_the_same_nodes_and_belongs_to_no_one() {
        let registry = node_registry();
        let ds = cleanup_daemon_set(&registry, IMAGE, "/etc/containerd/certs.d");
        assert_eq!(
            ds.metadata.name.as_deref(),
            Some("cache-containerd-cleanup")
        );
        assert_eq!(ds.metadata.namespace.as_deref(), Some("infra"));
        assert_eq!(ds.metadata.owner_references, None);
        let spec = ds.spec.unwrap();
        assert_eq!(
            spec.selector.match_labels.as_ref().unwrap()["app.kubernetes.io/component"],
            "containerd-cleanup"
        );
        let pod = spec.template.spec.unwrap();
        assert_eq!(pod.node_selector, Some(registry.spec.node_selector.clone()));
        assert_eq!(pod.tolerations, Some(registry.spec.tolerations.clone()));
        assert_eq!(pod.automount_service_account_token, Some(false));
        assert_eq!(pod.service_account_name, None);
        let remove = &pod.init_containers.as_ref().unwrap()[0];
        let expected = [
            "containerd-hosts",
            "remove",
            "--hosts-dir",
            "/host/containerd-hosts",
            "--owner",
            "infra/cache",
        ];
        assert_eq!(remove.args.as_ref().unwrap(), &expected);
        let hold = &pod.containers[0];
        assert_eq!(hold.args.as_ref().unwrap()[..6], expected);
        assert_eq!(hold.args.as_ref().unwrap()[6], "--hold");
        assert_eq!(hold.image.as_deref(), Some(IMAGE));
        assert_eq!(
            pod.security_context.unwrap().seccomp_profile.unwrap().type_,
            "RuntimeDefault"
        );
        let volume = &pod.volumes.unwrap()[0];
        assert_eq!(
            volume.host_path.as_ref().unwrap().path,
            "/etc/containerd/certs.d"
        );
    }
}
