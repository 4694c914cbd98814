//! What every pod of a Registry shares, the DaemonSet's registry pods and
//! the CronJob's GC pods alike: identity, security context, placement, the
//! config, TLS, htpasswd, trusted CA and storage volumes, and the registry
//! container's image, environment and mounts. Both run berth-registry
//! against the same config file and storage, so they are built here once.

use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapVolumeSource, Container, EnvVar, EnvVarSource, HostPathVolumeSource,
    KeyToPath, PersistentVolumeClaimVolumeSource, PodSecurityContext, PodSpec, SeccompProfile,
    SecretKeySelector, SecretVolumeSource, SecurityContext, Volume, VolumeMount,
};

use super::{
    AUTH_DIR, CONFIG_DIR, DATA_DIR, GCS_DIR, IMAGE_CA_FILE, MIRRORS_DIR, TLS_DIR, TRUSTED_CA_DIR,
    object_name,
};
use crate::crd::{AZURE_ACCOUNT_KEY, Registry, S3_ACCESS_KEY, S3_SECRET_KEY, TRUSTED_CA_KEY};

/// The user and group the registry runs as (the image's nonroot user).
pub const RUN_AS: i64 = 65532;

/// A pod spec running `containers` with the Registry's shared parts, `image`
/// being the registry image; the config volume is the ConfigMap `config_map`.
pub fn pod_spec(
    registry: &Registry,
    image: &str,
    config_map: &str,
    containers: Vec<Container>,
) -> PodSpec {
    PodSpec {
        service_account_name: Some(object_name(registry)),
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
        init_containers: prepare_storage(registry, image),
        containers,
        volumes: Some(volumes(registry, config_map)),
        ..placed_on_nodes(registry)
    }
}

/// The parts of a pod spec every pod of a Registry shares, whatever it
/// runs: on the nodes the Registry selects (node selector, tolerations,
/// affinity, priority class), without an API token or service links
/// (which would inject REGISTRY_* variables, read as config overrides).
pub fn placed_on_nodes(registry: &Registry) -> PodSpec {
    let spec = &registry.spec;
    PodSpec {
        automount_service_account_token: Some(false),
        enable_service_links: Some(false),
        node_selector: (!spec.node_selector.is_empty()).then(|| spec.node_selector.clone()),
        tolerations: (!spec.tolerations.is_empty()).then(|| spec.tolerations.clone()),
        affinity: spec.affinity.clone(),
        priority_class_name: spec.priority_class_name.clone(),
        ..PodSpec::default()
    }
}

/// A berth-registry container named `name` running `args`: the Registry's
/// image, storage credentials, trusted CAs, resources, restricted security
/// context and mounts.
pub fn registry_container(
    registry: &Registry,
    image: &str,
    name: &str,
    args: Vec<String>,
) -> Container {
    let spec = &registry.spec;
    Container {
        name: name.to_owned(),
        image: Some(image.to_owned()),
        image_pull_policy: Some(spec.image_pull_policy.as_str().to_owned()),
        args: Some(args),
        env: environment(registry),
        resources: spec.resources.clone(),
        security_context: Some(restricted_security_context()),
        volume_mounts: Some(volume_mounts(registry)),
        ..Container::default()
    }
}

/// For hostPath storage, the init container that gives the directory to the
/// registry's user (see [`prepare_host_path`]).
fn prepare_storage(registry: &Registry, image: &str) -> Option<Vec<Container>> {
    registry.spec.node_local_storage().then(|| {
        vec![prepare_host_path(
            registry,
            image,
            "prepare-storage",
            "data",
            DATA_DIR,
        )]
    })
}

/// An init container `name` that gives the hostPath volume `volume`,
/// mounted at `dir`, to the registry's user: kubelet creates a missing
/// hostPath as root, mode 0755, and `fsGroup` does not apply to hostPath.
/// It runs as root with only `CAP_CHOWN`, and does nothing once the
/// directory is the registry's.
pub fn prepare_host_path(
    registry: &Registry,
    image: &str,
    name: &str,
    volume: &str,
    dir: &str,
) -> Container {
    let owner = format!("{RUN_AS}:{RUN_AS}");
    let args = vec![
        "prepare-storage".to_owned(),
        format!("--owner={owner}"),
        dir.to_owned(),
    ];
    Container {
        volume_mounts: Some(vec![mount(volume, dir, false)]),
        ..root_container(registry, image, name, args, &["CHOWN"])
    }
}

/// A berth-registry container `name` running `args` as root for a task on
/// the node's files, with no capabilities but `add`, a read-only root
/// filesystem and no privilege escalation.
pub fn root_container(
    registry: &Registry,
    image: &str,
    name: &str,
    args: Vec<String>,
    add: &[&str],
) -> Container {
    Container {
        name: name.to_owned(),
        image: Some(image.to_owned()),
        image_pull_policy: Some(registry.spec.image_pull_policy.as_str().to_owned()),
        args: Some(args),
        security_context: Some(SecurityContext {
            run_as_user: Some(0),
            run_as_group: Some(0),
            run_as_non_root: Some(false),
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".to_owned()]),
                add: (!add.is_empty()).then(|| add.iter().map(|c| (*c).to_owned()).collect()),
            }),
            ..SecurityContext::default()
        }),
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

/// The registry container's environment: [`storage_env`] and [`trust_env`].
fn environment(registry: &Registry) -> Option<Vec<EnvVar>> {
    let mut env = storage_env(registry).unwrap_or_default();
    env.extend(trust_env(registry));
    (!env.is_empty()).then_some(env)
}

/// With `trustedCA`, what makes every HTTPS client of the registry trust
/// both the image's public roots and the mounted `ca.crt`: rustls loads
/// the files of `SSL_CERT_FILE` and the directories of `SSL_CERT_DIR`
/// instead of the system's store once either is set, so both are given.
fn trust_env(registry: &Registry) -> Vec<EnvVar> {
    if registry.spec.trusted_ca.is_none() {
        return Vec::new();
    }
    let var = |name: &str, value: &str| EnvVar {
        name: name.to_owned(),
        value: Some(value.to_owned()),
        ..EnvVar::default()
    };
    vec![
        var("SSL_CERT_FILE", IMAGE_CA_FILE),
        var("SSL_CERT_DIR", TRUSTED_CA_DIR),
    ]
}

/// The storage keys the registry reads from the credentials Secret, as
/// environment variables: `REGISTRY_STORAGE_S3_ACCESSKEY`/`SECRETKEY`, or
/// `REGISTRY_STORAGE_AZURE_ACCOUNTKEY`.
fn storage_env(registry: &Registry) -> Option<Vec<EnvVar>> {
    let storage = &registry.spec.storage;
    let (secret, vars): (&String, &[(&str, &str)]) = match (&storage.s3, &storage.azure) {
        (Some(s3), _) => (
            s3.credentials_secret.as_ref()?,
            &[
                ("REGISTRY_STORAGE_S3_ACCESSKEY", S3_ACCESS_KEY),
                ("REGISTRY_STORAGE_S3_SECRETKEY", S3_SECRET_KEY),
            ],
        ),
        (None, Some(azure)) => (
            azure.credentials_secret.as_ref()?,
            &[("REGISTRY_STORAGE_AZURE_ACCOUNTKEY", AZURE_ACCOUNT_KEY)],
        ),
        (None, None) => return None,
    };
    let from_secret = |(var, key): &(&str, &str)| EnvVar {
        name: (*var).to_owned(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.clone(),
                key: (*key).to_owned(),
                optional: Some(false),
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    };
    Some(vars.iter().map(from_secret).collect())
}

/// The GCS credentials Secret, when the Registry mounts one.
fn gcs_secret(registry: &Registry) -> Option<&str> {
    registry
        .spec
        .storage
        .gcs
        .as_ref()?
        .credentials_secret
        .as_deref()
}

/// A volume mount of `name` at `path`.
pub fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.to_owned(),
        mount_path: path.to_owned(),
        read_only: Some(read_only),
        ..VolumeMount::default()
    }
}

/// Mounts of the config, TLS, htpasswd and trusted CA files, storage and a
/// scratch `/tmp`.
fn volume_mounts(registry: &Registry) -> Vec<VolumeMount> {
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
    if spec.trusted_ca.is_some() {
        mounts.push(mount("trusted-ca", TRUSTED_CA_DIR, true));
    }
    if spec.storage.filesystem.is_some() {
        mounts.push(mount("data", DATA_DIR, false));
    }
    if gcs_secret(registry).is_some() {
        mounts.push(mount("gcs-key", GCS_DIR, true));
    }
    for (index, _) in mirror_secrets(registry) {
        mounts.push(mount(
            &format!("mirror-{index}"),
            &mirror_credentials_dir(index),
            true,
        ));
    }
    mounts
}

/// The mirrors that log in upstream, by their index in `spec.mirrors`,
/// with their Secret's name.
fn mirror_secrets(registry: &Registry) -> impl Iterator<Item = (usize, &str)> {
    let mirrors = registry.spec.mirrors.iter().enumerate();
    mirrors.filter_map(|(index, mirror)| Some((index, mirror.credentials_secret.as_deref()?)))
}

/// Where the Secret of `spec.mirrors[index]` is mounted.
pub fn mirror_credentials_dir(index: usize) -> String {
    format!("{MIRRORS_DIR}/{index}")
}

/// The volumes behind [`volume_mounts`]; the config is the ConfigMap `config_map`.
fn volumes(registry: &Registry, config_map: &str) -> Vec<Volume> {
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
                name: config_map.to_owned(),
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
    if let Some(trusted) = &spec.trusted_ca {
        // Only `ca.crt`: every file of `SSL_CERT_DIR` is read as PEM.
        let mut volume = secret("trusted-ca", &trusted.secret_name);
        if let Some(source) = volume.secret.as_mut() {
            source.items = Some(vec![KeyToPath {
                key: TRUSTED_CA_KEY.to_owned(),
                path: TRUSTED_CA_KEY.to_owned(),
                mode: None,
            }]);
        }
        volumes.push(volume);
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
    if let Some(name) = gcs_secret(registry) {
        volumes.push(secret("gcs-key", name));
    }
    for (index, name) in mirror_secrets(registry) {
        volumes.push(secret(&format!("mirror-{index}"), name));
    }
    volumes
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::*;

    #[test]
    fn host_path_storage_is_prepared_by_a_root_init_container_with_chown_only() {
        let registry = host_path_registry();
        let container = registry_container(&registry, IMAGE, "registry", vec![]);
        let pod = pod_spec(&registry, IMAGE, "cache-config-0", vec![container]);
        let init = &pod.init_containers.as_ref().expect("an init container")[0];
        assert_eq!(init.image.as_deref(), Some(IMAGE));
        assert_eq!(
            init.args.as_ref().unwrap(),
            &[
                "prepare-storage",
                "--owner=65532:65532",
                "/var/lib/registry"
            ]
        );
        let security = init.security_context.as_ref().unwrap();
        assert_eq!(security.run_as_user, Some(0));
        assert_eq!(security.allow_privilege_escalation, Some(false));
        let capabilities = security.capabilities.as_ref().unwrap();
        assert_eq!(capabilities.add.as_deref(), Some(&["CHOWN".to_owned()][..]));
        assert_eq!(capabilities.drop.as_deref(), Some(&["ALL".to_owned()][..]));
        let mounts: Vec<_> = init
            .volume_mounts
            .as_ref()
            .unwrap()
            .iter()
            .map(|m| m.name.as_str())
            .collect();
        assert_eq!(mounts, ["data"]);

        let shared = pod_spec(&s3_registry(), IMAGE, "cache-config-0", vec![]);
        assert_eq!(
            shared.init_containers, None,
            "S3 storage needs no preparation"
        );
    }

    #[test]
    fn azure_key_is_env_from_its_secret_and_gcs_key_a_mounted_file() {
        let azure = registry(serde_json::json!({"storage": {"azure": {
            "accountName": "acct", "container": "images", "credentialsSecret": "azure-key"}}}));
        let env = storage_env(&azure).unwrap();
        assert_eq!(env.len(), 1);
        assert_eq!(env[0].name, "REGISTRY_STORAGE_AZURE_ACCOUNTKEY");
        let source = env[0]
            .value_from
            .as_ref()
            .unwrap()
            .secret_key_ref
            .as_ref()
            .unwrap();
        assert_eq!(
            (source.name.as_str(), source.key.as_str()),
            ("azure-key", "accountKey")
        );

        let gcs = registry(serde_json::json!({"storage": {"gcs": {
            "bucket": "images", "credentialsSecret": "gcs-key"}}}));
        assert!(storage_env(&gcs).is_none());
        assert!(
            volume_mounts(&gcs)
                .iter()
                .any(|m| m.name == "gcs-key" && m.mount_path == GCS_DIR)
        );
        assert!(volumes(&gcs, "c").iter().any(|v| v.name == "gcs-key"
            && v.secret.as_ref().and_then(|s| s.secret_name.as_deref()) == Some("gcs-key")));
        let ambient = registry(serde_json::json!({"storage": {"gcs": {"bucket": "images"}}}));
        assert!(!volume_mounts(&ambient).iter().any(|m| m.name == "gcs-key"));
    }

    #[test]
    fn trusted_ca_is_mounted_and_trusted_beside_the_images_roots() {
        let registry = registry(serde_json::json!({
            "storage": {"s3": {"bucket": "images", "endpoint": "https://s3.internal",
                "credentialsSecret": "s3-keys"}},
            "trustedCA": {"secretName": "internal-ca"}}));
        let container = registry_container(&registry, IMAGE, "registry", vec![]);
        let env: Vec<_> = container.env.as_ref().unwrap().iter().collect();
        let value = |name: &str| {
            env.iter()
                .find(|v| v.name == name)
                .and_then(|v| v.value.as_deref())
        };
        assert_eq!(
            value("SSL_CERT_FILE"),
            Some("/etc/ssl/certs/ca-certificates.crt")
        );
        assert_eq!(value("SSL_CERT_DIR"), Some("/etc/berth/trusted-ca"));
        assert_eq!(env.len(), 4, "the S3 keys stay: {env:?}");
        assert!(
            volume_mounts(&registry)
                .iter()
                .any(|m| m.name == "trusted-ca" && m.mount_path == TRUSTED_CA_DIR)
        );
        let volumes = volumes(&registry, "c");
        let source = volumes
            .iter()
            .find(|v| v.name == "trusted-ca")
            .and_then(|v| v.secret.as_ref())
            .unwrap();
        assert_eq!(source.secret_name.as_deref(), Some("internal-ca"));
        let items = source.items.as_ref().unwrap();
        assert_eq!(
            (items.len(), items[0].key.as_str(), items[0].path.as_str()),
            (1, "ca.crt", "ca.crt")
        );

        let public = s3_registry();
        let container = registry_container(&public, IMAGE, "registry", vec![]);
        let names: Vec<_> = container.env.iter().flatten().map(|v| &v.name).collect();
        assert!(
            !names.iter().any(|n| n.starts_with("SSL_")),
            "without trustedCA the system's store is used: {names:?}"
        );
    }

    #[test]
    fn every_pod_has_the_seccomp_profile_and_the_named_config() {
        let pod = pod_spec(&s3_registry(), IMAGE, "cache-config-abc", vec![]);
        let security = pod.security_context.as_ref().unwrap();
        assert_eq!(
            security.seccomp_profile.as_ref().unwrap().type_,
            "RuntimeDefault"
        );
        let config = &pod.volumes.as_ref().unwrap()[0];
        assert_eq!(config.config_map.as_ref().unwrap().name, "cache-config-abc");
    }
}
