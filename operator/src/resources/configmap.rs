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

use k8s_openapi::api::core::v1::ConfigMap;
use serde_json::{Value, json};

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
    let spec = &registry.spec;
    let mut http = json!({ "addr": format!(":{}", listen_port(registry)) });
    if spec.tls.is_some() {
        http["tls"] = json!({ "certificate": format!("{TLS_DIR}/{TLS_CERT_KEY}"), "key": format!("{TLS_DIR}/{TLS_KEY_KEY}") });
    }

    // Deleting through the API is how content becomes garbage: on only
    // where something collects it.
    let mut storage = json!({
        "delete": { "enabled": spec.gc.is_some() },
        "maintenance": { "readonly": { "enabled": spec.read_only } },
    });
    if let Some(s3) = &spec.storage.s3 {
        let mut section = json!({ "bucket": s3.bucket, "region": s3.region, "forcepathstyle": s3.force_path_style });
        if let Some(endpoint) = &s3.endpoint {
            section["regionendpoint"] = json!(endpoint);
        }
        if let Some(root) = &s3.root_directory {
            section["rootdirectory"] = json!(root);
        }
        storage["s3"] = section;
        storage["redirect"] = json!({ "disable": !s3.redirect });
    } else if let Some(azure) = &spec.storage.azure {
        let mut section =
            json!({ "accountname": azure.account_name, "container": azure.container });
        if let Some(url) = &azure.service_url {
            section["serviceurl"] = json!(url);
        }
        if let Some(root) = &azure.root_directory {
            section["rootdirectory"] = json!(root);
        }
        storage["azure"] = section;
        storage["redirect"] = json!({ "disable": !azure.redirect });
    } else if let Some(gcs) = &spec.storage.gcs {
        let mut section = json!({ "bucket": gcs.bucket });
        if let Some(root) = &gcs.root_directory {
            section["rootdirectory"] = json!(root);
        }
        if gcs.credentials_secret.is_some() {
            section["keyfile"] = json!(format!("{GCS_DIR}/{GCS_KEY_FILE}"));
        }
        storage["gcs"] = section;
        storage["redirect"] = json!({ "disable": !gcs.redirect });
    } else {
        storage["filesystem"] = json!({ "rootdirectory": DATA_DIR });
    }

    let mut config = json!({
        "version": 0.1,
        "log": { "level": spec.log_level.as_str(), "formatter": "json" },
        "http": http,
        "storage": storage,
        "health": { "storagedriver": { "enabled": true } },
    });
    if spec.auth.is_some() {
        config["auth"] = json!({ "htpasswd": { "realm": "berth", "path": format!("{AUTH_DIR}/{HTPASSWD_KEY}") } });
    }
    let mut berth = json!({});
    if spec.auth.is_none() && spec.unauthenticated_writes == UnauthenticatedWrites::Loopback {
        berth["writenetworks"] = json!(LOOPBACK);
    }
    if let Some(gc) = &spec.gc {
        berth["gcgraceperiod"] = json!(gc.grace_period);
        // Node-local content cannot be reached by one CronJob: every pod
        // collects its own, at the schedule's times.
        if collects_in_server(registry) {
            berth["gcschedule"] = json!(gc.schedule);
            berth["gcdeleteuntagged"] = json!(gc.delete_untagged);
            berth["gcdryrun"] = json!(gc.dry_run);
        }
    }
    if !spec.mirrors.is_empty() {
        berth["mirrors"] = mirrors(registry);
    }
    if let Some(cache) = &spec.node_cache {
        berth["nodecache"] = json!({
            "path": NODE_CACHE_DIR,
            // The operator blocks a size that is no whole number of bytes
            // before it renders anything.
            "maxbytes": cache.max_bytes().unwrap_or_default(),
            "highwatermark": NODE_CACHE_HIGH_WATERMARK,
            "lowwatermark": NODE_CACHE_LOW_WATERMARK,
        });
    }
    if berth.as_object().is_some_and(|b| !b.is_empty()) {
        config["berth"] = berth;
    }
    render(&config)
}

/// Percent of the node cache's size above which it evicts.
const NODE_CACHE_HIGH_WATERMARK: u8 = 90;
/// Percent of the node cache's size eviction stops below.
const NODE_CACHE_LOW_WATERMARK: u8 = 80;

/// `berth.mirrors`: one entry per `spec.mirrors` item, its credentials the
/// mounted Secret's directory (never the Secret's content).
fn mirrors(registry: &Registry) -> Value {
    let entries = registry
        .spec
        .mirrors
        .iter()
        .enumerate()
        .map(|(index, mirror)| {
            let mut entry = json!({ "host": mirror.host });
            if let Some(url) = &mirror.url {
                entry["remoteurl"] = json!(url);
            }
            if mirror.credentials_secret.is_some() {
                entry["credentialsdir"] = json!(mirror_credentials_dir(index));
            }
            if let Some(ttl) = &mirror.tag_ttl {
                entry["tagttl"] = json!(ttl);
            }
            entry
        });
    Value::Array(entries.collect())
}

fn render(config: &Value) -> String {
    serde_norway::to_string(config).expect("a JSON value serializes to YAML")
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
    use super::super::fixtures::*;
    use super::*;

    fn parsed(registry: &Registry) -> Value {
        serde_norway::from_str(&config_file(registry)).unwrap()
    }

    #[test]
    fn azure_and_gcs_config_name_no_secret_and_point_at_the_key_file() {
        let azure = parsed(&registry(json!({"storage": {"azure": {
            "accountName": "acct", "container": "images", "rootDirectory": "/r",
            "credentialsSecret": "azure-key", "redirect": true}}})));
        assert_eq!(
            azure["storage"]["azure"],
            json!({"accountname": "acct", "container": "images", "rootdirectory": "/r"})
        );
        assert_eq!(azure["storage"]["redirect"], json!({"disable": false}));
        let gcs = parsed(&registry(json!({"storage": {"gcs": {
            "bucket": "images", "credentialsSecret": "gcs-key"}}})));
        assert_eq!(
            gcs["storage"]["gcs"],
            json!({"bucket": "images", "keyfile": "/etc/berth/gcs/key.json"})
        );
        assert_eq!(gcs["storage"]["redirect"], json!({"disable": true}));
        let ambient = parsed(&registry(json!({"storage": {"gcs": {"bucket": "images"}}})));
        assert_eq!(ambient["storage"]["gcs"], json!({"bucket": "images"}));
    }

    #[test]
    fn s3_config_has_no_keys_and_points_at_mounted_files() {
        let config = parsed(&s3_registry());
        assert_eq!(
            config,
            json!({
                "version": 0.1,
                "log": {"level": "info", "formatter": "json"},
                "http": {"addr": ":5000", "tls": {"certificate": "/etc/berth/tls/tls.crt", "key": "/etc/berth/tls/tls.key"}},
                "storage": {
                    "s3": {"bucket": "images", "region": "us-east-1", "regionendpoint": "http://minio:9000", "forcepathstyle": true},
                    "redirect": {"disable": true},
                    "delete": {"enabled": true},
                    "maintenance": {"readonly": {"enabled": false}},
                },
                "health": {"storagedriver": {"enabled": true}},
                "auth": {"htpasswd": {"realm": "berth", "path": "/etc/berth/auth/htpasswd"}},
                "berth": {"gcgraceperiod": "1h"},
            })
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
        debug.spec.log_level = crate::crd::LogLevel::Debug;
        assert_ne!(
            config_map(&debug).metadata.name.unwrap(),
            name,
            "a new config is a new ConfigMap"
        );
    }

    #[test]
    fn host_path_config_collects_in_the_server() {
        let config = parsed(&host_path_registry());
        assert_eq!(config["http"]["addr"], ":5443");
        assert_eq!(
            config["storage"]["filesystem"]["rootdirectory"],
            "/var/lib/registry"
        );
        assert_eq!(config["berth"]["gcschedule"], "@hourly");
        assert_eq!(config["berth"]["gcdeleteuntagged"], false);
        assert_eq!(config["berth"]["gcdryrun"], false);
        assert!(config.get("auth").is_none());
    }

    #[test]
    fn writes_without_auth_come_over_loopback_unless_opened() {
        let spec = json!({"storage": {"filesystem": {}}});
        let closed = parsed(&registry(spec.clone()));
        assert_eq!(
            closed["berth"]["writenetworks"],
            json!(["127.0.0.0/8", "::1/128"])
        );
        assert_eq!(
            closed["storage"]["delete"]["enabled"], false,
            "no GC, no deletes"
        );
        let mut open = spec;
        open["unauthenticatedWrites"] = json!("Anywhere");
        open["gc"] = json!({"schedule": "@daily"});
        let open = parsed(&registry(open));
        assert!(open["berth"].get("writenetworks").is_none());
        assert_eq!(open["storage"]["delete"]["enabled"], true);
        let with_auth = parsed(&s3_registry());
        assert!(with_auth["berth"].get("writenetworks").is_none());
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
            config["berth"]["mirrors"],
            json!([
                {"host": "docker.io", "tagttl": "30s"},
                {"host": "registry.example.com:5000", "remoteurl": "https://r.example.com",
                 "credentialsdir": "/etc/berth/mirrors/1"},
            ])
        );
        assert_eq!(
            config["berth"]["nodecache"],
            json!({"path": "/var/cache/berth", "maxbytes": 10_737_418_240u64,
                   "highwatermark": 90, "lowwatermark": 80})
        );
        assert!(!config_file(&s3_registry()).contains("mirrors"));
        assert!(!config_file(&s3_registry()).contains("nodecache"));
    }

    #[test]
    fn schedules_are_recognised() {
        for schedule in ["@daily", "@hourly", "*/15 * * * *", "0 3 * * 0"] {
            assert!(is_cron_schedule(schedule), "{schedule}");
        }
        assert!(!is_cron_schedule("not a schedule"));
    }
}
