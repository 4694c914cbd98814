//! The ConfigMap holding berth-registry's config file.
//!
//! The file is CNCF Distribution's `config.yml` format, limited to the keys
//! berth-registry accepts (it rejects unknown ones). Secrets never appear in
//! it: TLS and htpasswd (and a GCS key file) are mounted files it points to,
//! S3 and Azure keys arrive as `REGISTRY_STORAGE_*` environment variables.
//!
//! Each version of the file is its own immutable ConfigMap, named by a hash
//! of its content. The pod template names the current one, so a new config
//! rolls the pods, and a pod of the old template that restarts during the
//! rollout still reads the config it was made for (a ConfigMap updated in
//! place would hand it the new one). Reconcile deletes a version once no pod
//! and no Job uses it.

use std::collections::BTreeMap;
use std::str::FromStr;

use berth_config::{
    Azure, Berth, Config, Filesystem, Gcs, Htpasswd, LogFormatter, Mirror, NodeCache, S3, Storage,
    Tls,
};
use k8s_openapi::api::core::v1::ConfigMap;

use super::pod::mirror_credentials_dir;
use super::{
    AUTH_DIR, CONFIG_KEY, CONTAINER_PORT, DATA_DIR, GCS_DIR, NODE_CACHE_DIR, TLS_DIR,
    component_labels, hash_of, metadata, object_name,
};
use crate::crd::{
    ExposureMode, GCS_KEY_FILE, HTPASSWD_KEY, Registry, TLS_CERT_KEY, TLS_KEY_KEY,
    UnauthenticatedWrites,
};

/// The component label of config ConfigMaps.
pub const CONFIG_COMPONENT: &str = "config";

/// The immutable ConfigMap holding the config file under [`CONFIG_KEY`],
/// named `<registry>-config-<hash of the file>`.
pub fn config_map(registry: &Registry) -> ConfigMap {
    let file = config_file(registry);
    let hash = hash_of(&[file.as_bytes()]);
    let name = format!("{}-config-{}", object_name(registry), &hash[..10]);
    let mut meta = metadata(registry, name);
    meta.labels = Some(component_labels(registry, CONFIG_COMPONENT));
    ConfigMap {
        metadata: meta,
        data: Some(BTreeMap::from([(CONFIG_KEY.to_owned(), file)])),
        immutable: Some(true),
        ..ConfigMap::default()
    }
}

/// The address ranges of a pod's loopback interface, IPv4 and IPv6.
const LOOPBACK: [&str; 2] = ["127.0.0.0/8", "::1/128"];

/// The port the registry listens on inside its pod.
pub fn listen_port(registry: &Registry) -> i32 {
    match registry.spec.exposure.mode {
        ExposureMode::HostPort => CONTAINER_PORT,
        ExposureMode::HostNetwork => registry.spec.exposure.port,
    }
}

/// berth-registry's config file for this Registry, as YAML.
pub fn config_file(registry: &Registry) -> String {
    render(&config(registry))
}

/// berth-registry's configuration for this Registry.
fn config(registry: &Registry) -> Config {
    let spec = &registry.spec;
    let mut config = Config::versioned();
    config.log.level = spec.log_level;
    config.log.formatter = LogFormatter::Json;
    config.http.addr = Some(format!(":{}", listen_port(registry)));
    if spec.tls.is_some() {
        config.http.tls = Some(Tls {
            certificate: Some(format!("{TLS_DIR}/{TLS_CERT_KEY}").into()),
            key: Some(format!("{TLS_DIR}/{TLS_KEY_KEY}").into()),
            ..Tls::default()
        });
    }
    config.storage = storage(registry);
    if spec.auth.is_some() {
        config.auth.htpasswd = Some(Htpasswd {
            realm: "berth".to_owned(),
            path: format!("{AUTH_DIR}/{HTPASSWD_KEY}").into(),
        });
    }
    config.berth = berth(registry);
    config
}

/// `storage`: the driver, and deletes on only where something collects
/// garbage (deleting through the API is how content becomes garbage).
fn storage(registry: &Registry) -> Storage {
    let spec = &registry.spec;
    let mut storage = Storage::default();
    storage.delete.enabled = spec.gc.is_some();
    storage.maintenance.readonly.enabled = spec.read_only;
    if let Some(s3) = &spec.storage.s3 {
        storage.s3 = Some(S3 {
            regionendpoint: s3.endpoint.clone(),
            rootdirectory: s3.root_directory.clone(),
            forcepathstyle: s3.force_path_style,
            ..S3::new(&s3.bucket, &s3.region)
        });
        storage.redirect.disable = !s3.redirect;
    } else if let Some(azure) = &spec.storage.azure {
        storage.azure = Some(Azure {
            serviceurl: azure.service_url.clone(),
            rootdirectory: azure.root_directory.clone(),
            ..Azure::new(&azure.account_name, &azure.container)
        });
        storage.redirect.disable = !azure.redirect;
    } else if let Some(gcs) = &spec.storage.gcs {
        storage.gcs = Some(Gcs {
            rootdirectory: gcs.root_directory.clone(),
            keyfile: gcs
                .credentials_secret
                .as_ref()
                .map(|_| format!("{GCS_DIR}/{GCS_KEY_FILE}").into()),
            ..Gcs::new(&gcs.bucket)
        });
        storage.redirect.disable = !gcs.redirect;
    } else {
        storage.filesystem = Some(Filesystem::new(DATA_DIR));
    }
    storage
}

/// `berth`: who may write without credentials, garbage collection,
/// mirrors and the node cache.
fn berth(registry: &Registry) -> Berth {
    let spec = &registry.spec;
    let mut berth = Berth::default();
    if spec.auth.is_none() && spec.unauthenticated_writes == UnauthenticatedWrites::Loopback {
        berth.writenetworks = Some(LOOPBACK.map(str::to_owned).to_vec());
    }
    if let Some(gc) = &spec.gc {
        // The CRD's pattern admits only Go durations; should another slip
        // through, the registry's default (1h) stays, never a shorter one.
        berth.gcgraceperiod = gc.grace_period.parse().unwrap_or(berth.gcgraceperiod);
        // Node-local content cannot be reached by one CronJob: every pod
        // collects its own, at the schedule's times.
        if collects_in_server(registry) {
            berth.gcschedule = gc.schedule.clone();
            berth.gcdeleteuntagged = gc.delete_untagged;
            berth.gcdryrun = gc.dry_run;
        }
    }
    berth.mirrors = mirrors(registry);
    berth.nodecache = spec.node_cache.as_ref().map(|cache| NodeCache {
        path: NODE_CACHE_DIR.into(),
        // The operator blocks a size that is no whole number of bytes
        // before it renders anything.
        maxbytes: cache.max_bytes().unwrap_or_default(),
        highwatermark: NODE_CACHE_HIGH_WATERMARK,
        lowwatermark: NODE_CACHE_LOW_WATERMARK,
    });
    berth
}

/// Percent of the node cache's size above which it evicts.
const NODE_CACHE_HIGH_WATERMARK: u64 = 90;
/// Percent of the node cache's size eviction stops below.
const NODE_CACHE_LOW_WATERMARK: u64 = 80;

/// `berth.mirrors`: one entry per `spec.mirrors` item, its credentials the
/// mounted Secret's directory (never the Secret's content).
fn mirrors(registry: &Registry) -> Vec<Mirror> {
    registry
        .spec
        .mirrors
        .iter()
        .enumerate()
        .map(|(index, mirror)| Mirror {
            host: mirror.host.clone(),
            remoteurl: mirror.url.clone(),
            credentialsdir: mirror
                .credentials_secret
                .as_ref()
                .map(|_| mirror_credentials_dir(index).into()),
            tagttl: mirror.tag_ttl.as_deref().and_then(|ttl| ttl.parse().ok()),
        })
        .collect()
}

fn render(config: &Config) -> String {
    serde_norway::to_string(config).expect("a configuration serializes to YAML")
}

/// Whether each registry pod collects its own node's garbage (hostPath
/// storage and a schedule that is not suspended), as `berth.gcschedule`.
pub fn collects_in_server(registry: &Registry) -> bool {
    let spec = &registry.spec;
    spec.node_local_storage()
        && spec
            .gc
            .as_ref()
            .is_some_and(|gc| !gc.suspend && gc.schedule.as_deref().is_some_and(is_cron_schedule))
}

/// Whether `schedule` is a cron schedule, as both a CronJob and
/// berth-registry's `berth.gcschedule` take it (the CRD's rule has already
/// limited it to five fields or a macro).
pub fn is_cron_schedule(schedule: &str) -> bool {
    croner::Cron::from_str(schedule).is_ok()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use berth_config::GoDuration;
    use serde_json::json;

    use super::super::fixtures::*;
    use super::*;

    /// The rendered file, read back as berth-registry reads it.
    fn parsed(registry: &Registry) -> Config {
        serde_norway::from_str(&config_file(registry)).unwrap()
    }

    #[test]
    fn azure_and_gcs_config_name_no_secret_and_point_at_the_key_file() {
        let azure = parsed(&registry(json!({"storage": {"azure": {
            "accountName": "acct", "container": "images", "rootDirectory": "/r",
            "credentialsSecret": "azure-key", "redirect": true}}})));
        assert_eq!(
            azure.storage.azure,
            Some(Azure {
                rootdirectory: Some("/r".to_owned()),
                ..Azure::new("acct", "images")
            })
        );
        assert!(!azure.storage.redirect.disable);
        let gcs = parsed(&registry(json!({"storage": {"gcs": {
            "bucket": "images", "credentialsSecret": "gcs-key"}}})));
        assert_eq!(
            gcs.storage.gcs,
            Some(Gcs {
                keyfile: Some("/etc/berth/gcs/key.json".into()),
                ..Gcs::new("images")
            })
        );
        assert!(gcs.storage.redirect.disable);
        let ambient = parsed(&registry(json!({"storage": {"gcs": {"bucket": "images"}}})));
        assert_eq!(ambient.storage.gcs, Some(Gcs::new("images")));
    }

    #[test]
    fn s3_config_has_no_keys_and_points_at_mounted_files() {
        let expected = "\
version: 0.1
log: {level: info, formatter: json}
http:
  addr: ':5000'
  tls: {certificate: /etc/berth/tls/tls.crt, key: /etc/berth/tls/tls.key}
storage:
  s3: {bucket: images, region: us-east-1, regionendpoint: 'http://minio:9000', forcepathstyle: true}
  redirect: {disable: true}
  delete: {enabled: true}
  maintenance: {readonly: {enabled: false}}
health: {storagedriver: {enabled: true}}
auth: {htpasswd: {realm: berth, path: /etc/berth/auth/htpasswd}}
berth: {gcgraceperiod: 1h}
";
        let expected: Config = serde_norway::from_str(expected).unwrap();
        assert_eq!(parsed(&s3_registry()), expected);
        let file = config_file(&s3_registry());
        assert!(
            !file.contains("accesskey") && !file.contains("secretkey"),
            "{file}"
        );
        let map = config_map(&s3_registry());
        let name = map.metadata.name.clone().unwrap();
        assert!(
            name.starts_with("cache-config-") && name.len() == "cache-config-".len() + 10,
            "{name}"
        );
        assert_eq!(map.immutable, Some(true));
        assert!(map.data.unwrap().contains_key("config.yml"));
        let mut debug = s3_registry();
        debug.spec.log_level = berth_config::LogLevel::Debug;
        assert_ne!(
            config_map(&debug).metadata.name.unwrap(),
            name,
            "a new config is a new ConfigMap"
        );
    }

    #[test]
    fn host_path_config_collects_in_the_server() {
        let config = parsed(&host_path_registry());
        assert_eq!(config.http.addr.as_deref(), Some(":5443"));
        assert_eq!(
            config.storage.filesystem.map(|fs| fs.rootdirectory),
            Some("/var/lib/registry".into())
        );
        assert_eq!(config.berth.gcschedule.as_deref(), Some("@hourly"));
        assert!(!config.berth.gcdeleteuntagged);
        assert!(!config.berth.gcdryrun);
        assert!(config.auth.htpasswd.is_none());
    }

    #[test]
    fn writes_without_auth_come_over_loopback_unless_opened() {
        let spec = json!({"storage": {"filesystem": {}}});
        let closed = parsed(&registry(spec.clone()));
        assert_eq!(
            closed.berth.writenetworks,
            Some(vec!["127.0.0.0/8".to_owned(), "::1/128".to_owned()])
        );
        assert!(!closed.storage.delete.enabled, "no GC, no deletes");
        let mut open = spec;
        open["unauthenticatedWrites"] = json!("Anywhere");
        open["gc"] = json!({"schedule": "@daily"});
        let open = parsed(&registry(open));
        assert!(open.berth.writenetworks.is_none());
        assert!(open.storage.delete.enabled);
        let with_auth = parsed(&s3_registry());
        assert!(with_auth.berth.writenetworks.is_none());
    }

    #[test]
    fn mirrors_and_node_cache_render_without_secrets() {
        let config = parsed(&registry(json!({
            "storage": {"s3": {"bucket": "images"}},
            "mirrors": [
                {"host": "docker.io", "tagTTL": "30s"},
                {"host": "registry.example.com:5000", "url": "https://r.example.com",
                 "credentialsSecret": "example-login"},
            ],
            "nodeCache": {"size": "10Gi", "path": "/var/lib/berth/cache"},
        })));
        assert_eq!(
            config.berth.mirrors,
            [
                Mirror {
                    host: "docker.io".to_owned(),
                    remoteurl: None,
                    credentialsdir: None,
                    tagttl: Some(GoDuration(Duration::from_secs(30))),
                },
                Mirror {
                    host: "registry.example.com:5000".to_owned(),
                    remoteurl: Some("https://r.example.com".to_owned()),
                    credentialsdir: Some("/etc/berth/mirrors/1".into()),
                    tagttl: None,
                },
            ]
        );
        assert_eq!(
            config.berth.nodecache,
            Some(NodeCache {
                path: "/var/cache/berth".into(),
                maxbytes: 10_737_418_240,
                highwatermark: 90,
                lowwatermark: 80,
            })
        );
        assert!(!config_file(&s3_registry()).contains("mirrors"));
        assert!(!config_file(&s3_registry()).contains("nodecache"));
    }

    /// Every file the operator renders passes the checks berth-registry
    /// runs on start, but those that read files the pod mounts (the TLS
    /// certificate and key, the htpasswd file, a GCS key file, a mirror's
    /// credentials directory), which are left out here.
    #[test]
    fn every_rendered_config_passes_the_registrys_checks() {
        let registries = [
            s3_registry(),
            host_path_registry(),
            registry(json!({"storage": {"filesystem": {}}})),
            registry(json!({"storage": {"filesystem": {}},
                "unauthenticatedWrites": "Anywhere", "gc": {"schedule": "@daily"}})),
            registry(json!({"storage": {"azure": {
                "accountName": "acct", "container": "images", "rootDirectory": "/r",
                "credentialsSecret": "azure-key", "redirect": true}}})),
            registry(json!({"storage": {"gcs": {"bucket": "images"}}})),
            registry(json!({
                "storage": {"s3": {"bucket": "images"}},
                "mirrors": [
                    {"host": "docker.io", "tagTTL": "30s"},
                    {"host": "registry.example.com:5000", "url": "https://r.example.com"},
                ],
                "nodeCache": {"size": "10Gi"},
            })),
        ];
        for registry in &registries {
            let mut config = config(registry);
            config.http.tls = None;
            config.auth.htpasswd = None;
            let text = serde_norway::to_string(&config).unwrap();
            if let Err(e) = Config::parse(&text, "rendered", []) {
                panic!("{e}\n{text}");
            }
        }
    }

    #[test]
    fn schedules_are_recognised() {
        for schedule in ["@daily", "@hourly", "*/15 * * * *", "0 3 * * 0"] {
            assert!(is_cron_schedule(schedule), "{schedule}");
        }
        assert!(!is_cron_schedule("not a schedule"));
    }
}
