//! Pure builders: a `Registry` (plus what the cluster told us) in, the
//! desired owned objects out. Nothing here does I/O, so every builder is
//! unit-tested without a cluster.

mod configmap;
mod containerd;
mod cronjob;
mod daemonset;
mod pod;
mod service;
mod serviceaccount;

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt};

pub use configmap::{
    CONFIG_COMPONENT, collects_in_server, config_file, config_map, is_cron_schedule, listen_port,
};
pub use containerd::{
    CLEANUP_COMPONENT, HOSTS_INIT_CONTAINER, cleanup_daemon_set, cleanup_name, owner,
};
pub use cronjob::{cron_job, cron_job_name, runs_cron_job};
pub use daemonset::daemon_set;
pub use service::{endpoint, service};
pub use serviceaccount::service_account;

use crate::crd::Registry;

/// The field manager of every server-side apply the operator makes.
pub const MANAGER: &str = "berth-operator";
/// Pod-template annotation holding the hash of the Secrets the registry
/// reads only at start (S3 keys, as environment variables): changing one
/// must restart the pods. Mounted Secrets (TLS, htpasswd) are not in it: the
/// registry reloads those files itself, without a restart.
pub const SECRETS_HASH_ANNOTATION: &str = "berth.dev/secrets-hash";
/// Label telling registry pods from garbage-collection pods.
pub const COMPONENT_LABEL: &str = "app.kubernetes.io/component";
/// Label naming the Registry an object belongs to.
pub const INSTANCE_LABEL: &str = "app.kubernetes.io/instance";

/// Where the config file is mounted in every container.
pub const CONFIG_DIR: &str = "/etc/berth";
/// The config file's key in the ConfigMap (and its name in `CONFIG_DIR`).
pub const CONFIG_KEY: &str = "config.yml";
/// Where the TLS Secret is mounted.
pub const TLS_DIR: &str = "/etc/berth/tls";
/// Where the htpasswd Secret is mounted.
pub const AUTH_DIR: &str = "/etc/berth/auth";
/// Where filesystem storage is mounted.
pub const DATA_DIR: &str = "/var/lib/registry";
/// Where the `trustedCA` Secret's `ca.crt` is mounted (`SSL_CERT_DIR`).
pub const TRUSTED_CA_DIR: &str = "/etc/berth/trusted-ca";
/// The public CA bundle in the registry image (`SSL_CERT_FILE` beside
/// `TRUSTED_CA_DIR`), as scripts/images/rootfs.sh installs it.
pub const IMAGE_CA_FILE: &str = "/etc/ssl/certs/ca-certificates.crt";
/// Where a GCS service account key file is mounted.
pub const GCS_DIR: &str = "/etc/berth/gcs";
/// Where the Secret of `spec.mirrors[i]` is mounted: `<MIRRORS_DIR>/<i>`.
pub const MIRRORS_DIR: &str = "/etc/berth/mirrors";
/// Where the node cache's hostPath is mounted in the registry container.
pub const NODE_CACHE_DIR: &str = "/var/cache/berth";
/// Where the node's containerd hosts directory is mounted.
pub const HOSTS_DIR: &str = "/host/containerd-hosts";
/// The port the registry listens on inside its pod with hostPort exposure.
pub const CONTAINER_PORT: i32 = 5000;

/// Everything the operator applies for one Registry.
#[derive(Debug, Clone)]
pub struct Desired {
    /// The registry's config file, in a ConfigMap named by its content.
    pub config_map: ConfigMap,
    /// The identity of registry and GC pods.
    pub service_account: ServiceAccount,
    /// One registry pod per selected node.
    pub daemon_set: DaemonSet,
    /// In-cluster access, node-local.
    pub service: Service,
    /// Scheduled garbage collection, when the storage is shared and a schedule is set.
    pub cron_job: Option<CronJob>,
}

/// Builds every owned object. `default_image` is the operator's
/// `--registry-image`, run unless `spec.image` names another;
/// `secrets_hash` digests the Secrets read at start (see
/// [`SECRETS_HASH_ANNOTATION`]).
pub fn build(registry: &Registry, default_image: &str, secrets_hash: &str) -> Desired {
    let image = registry.spec.image_or(default_image);
    let config_map = config_map(registry);
    let config_name = config_map.metadata.name.clone().unwrap_or_default();
    Desired {
        service_account: service_account(registry),
        daemon_set: daemon_set(registry, image, &config_name, secrets_hash),
        service: service(registry),
        cron_job: cron_job(registry, image, &config_name),
        config_map,
    }
}

/// Name shared by the ServiceAccount, DaemonSet and Service.
pub fn object_name(registry: &Registry) -> String {
    registry.name_any()
}

/// The labels every owned object carries.
pub fn labels(registry: &Registry) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "app.kubernetes.io/name".to_owned(),
            "berth-registry".to_owned(),
        ),
        (INSTANCE_LABEL.to_owned(), registry.name_any()),
        (
            "app.kubernetes.io/managed-by".to_owned(),
            MANAGER.to_owned(),
        ),
    ])
}

/// `labels` plus the component, as pod selectors use them.
pub fn component_labels(registry: &Registry, component: &str) -> BTreeMap<String, String> {
    let mut labels = labels(registry);
    labels.insert(COMPONENT_LABEL.to_owned(), component.to_owned());
    labels
}

/// Metadata of an owned object: name, namespace, labels and the controller
/// owner reference that makes deleting the Registry delete it.
pub fn metadata(registry: &Registry, name: String) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: registry.namespace(),
        labels: Some(labels(registry)),
        owner_references: owner_reference(registry).map(|o| vec![o]),
        ..ObjectMeta::default()
    }
}

fn owner_reference(registry: &Registry) -> Option<OwnerReference> {
    registry.controller_owner_ref(&())
}

/// A hex SHA-256 over the given parts, each length-prefixed.
pub fn hash_of(parts: &[&[u8]]) -> String {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part);
    }
    hex::encode(hasher.finalize())
}

#[cfg(test)]
pub(crate) mod fixtures {
    use crate::crd::Registry;

    /// The operator's `--registry-image` in these tests.
    pub const IMAGE: &str = "registry.example/berth-registry:test";

    /// A Registry as the API server returns it (defaults applied, uid set).
    pub fn registry(spec: serde_json::Value) -> Registry {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "berth.dev/v1alpha1",
            "kind": "Registry",
            "metadata": {"name": "cache", "namespace": "infra", "uid": "0d1e2f", "generation": 3},
            "spec": spec,
        }))
        .expect("valid Registry")
    }

    /// A Registry on S3 with TLS and htpasswd.
    pub fn s3_registry() -> Registry {
        registry(serde_json::json!({
            "storage": {"s3": {"bucket": "images", "endpoint": "http://minio:9000", "forcePathStyle": true,
                               "credentialsSecret": "s3-keys"}},
            "tls": {"secretName": "cache-tls"},
            "auth": {"htpasswd": {"secretName": "cache-users"}},
            "gc": {"schedule": "0 3 * * *", "deleteUntagged": true},
        }))
    }

    /// A Registry on each node's disk.
    pub fn host_path_registry() -> Registry {
        registry(serde_json::json!({
            "storage": {"filesystem": {"hostPath": "/var/lib/berth"}},
            "exposure": {"mode": "HostNetwork", "port": 5443},
            "gc": {"schedule": "@hourly"},
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::*;
    use super::*;

    #[test]
    fn every_object_is_labelled_and_owned() {
        let desired = build(&s3_registry(), IMAGE, "");
        let metas = [
            &desired.config_map.metadata,
            &desired.service_account.metadata,
            &desired.daemon_set.metadata,
            &desired.service.metadata,
            &desired
                .cron_job
                .as_ref()
                .expect("a schedule on S3 gives a CronJob")
                .metadata,
        ];
        for meta in metas {
            let labels = meta.labels.as_ref().unwrap();
            assert_eq!(labels["app.kubernetes.io/name"], "berth-registry");
            assert_eq!(labels["app.kubernetes.io/instance"], "cache");
            assert_eq!(labels["app.kubernetes.io/managed-by"], "berth-operator");
            assert_eq!(meta.namespace.as_deref(), Some("infra"));
            let owner = &meta.owner_references.as_ref().unwrap()[0];
            assert_eq!(
                (owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()),
                ("Registry", "cache", "0d1e2f")
            );
            assert_eq!(owner.controller, Some(true));
        }
    }

    #[test]
    fn secrets_hash_and_config_change_the_pod_template() {
        let registry = s3_registry();
        let hash = |secrets: &str| {
            let ds = build(&registry, IMAGE, secrets).daemon_set;
            ds.spec
                .unwrap()
                .template
                .metadata
                .unwrap()
                .annotations
                .unwrap()[SECRETS_HASH_ANNOTATION]
                .clone()
        };
        assert_eq!(hash("a"), hash("a"));
        assert_ne!(hash("a"), hash("b"));
        let config = |registry: &Registry| {
            let ds = build(registry, IMAGE, "").daemon_set;
            let pod = ds.spec.unwrap().template.spec.unwrap();
            pod.volumes.unwrap()[0].config_map.clone().unwrap().name
        };
        let mut changed = s3_registry();
        changed.spec.read_only = true;
        assert_ne!(config(&registry), config(&changed));
    }

    #[test]
    fn the_default_image_applies_unless_the_spec_names_one() {
        let images = |registry: &Registry| {
            let desired = build(registry, IMAGE, "");
            let pod = |spec: Option<&k8s_openapi::api::core::v1::PodSpec>| {
                spec.and_then(|p| p.containers[0].image.clone())
            };
            let ds = desired.daemon_set.spec.as_ref().unwrap();
            let cron = desired.cron_job.as_ref().unwrap().spec.as_ref().unwrap();
            let job = cron.job_template.spec.as_ref().unwrap();
            (
                pod(ds.template.spec.as_ref()),
                pod(job.template.spec.as_ref()),
            )
        };
        let default = Some(IMAGE.to_owned());
        assert_eq!(images(&s3_registry()), (default.clone(), default));

        let mut own = s3_registry();
        own.spec.image = Some("mirror.example/berth:1".to_owned());
        let mine = Some("mirror.example/berth:1".to_owned());
        assert_eq!(images(&own), (mine.clone(), mine));

        own.spec.image = Some(String::new());
        assert_eq!(images(&own).0.as_deref(), Some(IMAGE));
    }
}
