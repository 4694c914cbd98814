//! The checks that turn a [`Config`] into [`Settings`]: values in range,
//! durations and addresses parsed, exactly one storage driver, defaults
//! resolved. Each refusal names the key at fault. Reading the file and the
//! environment overrides happen here too, so the registry and the operator
//! check a file the same way. Nothing is created: the checks only read
//! (files the configuration names must exist and be readable).

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::time::Duration;

use base64::Engine;
use serde_norway::Value;

use crate::duration::GoDuration;
use crate::env::apply_env;
use crate::error::{ConfigError, invalid};
use crate::network::Network;
use crate::schedule::Schedule;
use crate::schema::{Azure, Config, Gcs, Log, NodeCache, S3, Tls};
use crate::secret::Secret;
use crate::service_account::ServiceAccountKey;
use crate::settings::{
    AZURE_CHUNK, AzureSettings, ConnectionLimits, DebugListener, EndpointSettings, GCS_CHUNK_UNIT,
    GCS_ENDPOINT, GcsSettings, HtpasswdSettings, LogSettings, NodeCacheSettings, S3_MIN_CHUNK,
    S3Encryption, S3Keys, S3Settings, Settings, StorageSettings, TlsSettings, UploadPurge,
};

/// The configuration `berth-registry` serves with when given no file.
const DEVELOPMENT: &str = "\
version: 0.1
http:
  addr: 127.0.0.1:5000
storage:
  filesystem:
    rootdirectory: ./data
  delete:
    enabled: true
";

impl Config {
    /// The settings used when no file is given: 127.0.0.1:5000, filesystem
    /// storage in `./data`, deletes allowed. They go through the same parsing,
    /// `REGISTRY_*` overrides and checks as a file.
    pub fn development(
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Settings, ConfigError> {
        Config::parse(DEVELOPMENT, "the built-in development configuration", env)
    }

    /// Reads `path`, applies `REGISTRY_*` overrides from `env`, and checks the result.
    pub fn load(
        path: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Settings, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(&text, &path.display().to_string(), env)
    }

    /// Parses config text (named `origin` in errors) with environment overrides.
    pub fn parse(
        text: &str,
        origin: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Settings, ConfigError> {
        let mut tree: Value = serde_norway::from_str(text).map_err(|e| ConfigError::Syntax {
            path: origin.to_owned(),
            message: e.to_string(),
        })?;
        if tree.is_null() {
            tree = Value::Mapping(Default::default());
        }
        let overrides = apply_env(&mut tree, env)?;
        let config: Config = serde_path_to_error::deserialize(tree).map_err(|e| {
            let key = e.path().to_string();
            let var = overrides
                .iter()
                .find(|(k, _)| key.starts_with(k.as_str()) || k.starts_with(&key))
                .map(|(_, v)| v.clone());
            let message = e.into_inner().to_string();
            match var {
                Some(var) => invalid(&key, format!("{message} (set by {var})")),
                None => invalid(&key, message),
            }
        })?;
        config.settle()
    }

    /// Checks values and resolves defaults.
    pub fn settle(self) -> Result<Settings, ConfigError> {
        match &self.version {
            None => {
                return Err(invalid(
                    "version",
                    "missing; Distribution's format is version 0.1",
                ));
            }
            Some(Value::String(s)) if s == "0.1" => {}
            Some(Value::Number(n)) if n.as_f64() == Some(0.1) => {}
            Some(other) => {
                return Err(invalid(
                    "version",
                    format!("unsupported version {other:?}; expected 0.1"),
                ));
            }
        }
        if let Some(net) = self.http.net.as_deref().filter(|n| *n != "tcp") {
            return Err(invalid(
                "http.net",
                format!("{net:?} is not supported; only tcp"),
            ));
        }
        let addr = parse_addr("http.addr", self.http.addr.as_deref().unwrap_or(":5000"))?;
        let debug = match &self.http.debug {
            Some(debug) if debug.prometheus.enabled => match &debug.addr {
                Some(a) => Some(DebugListener {
                    addr: parse_addr("http.debug.addr", a)?,
                    metrics_path: debug.prometheus.path.clone(),
                }),
                None => None,
            },
            _ => None,
        };
        let htpasswd = match &self.auth.htpasswd {
            Some(h) => {
                readable("auth.htpasswd.path", Some(&h.path))?;
                Some(HtpasswdSettings {
                    path: h.path.clone(),
                    realm: h.realm.clone(),
                })
            }
            None => None,
        };
        let endpoints = self.endpoints()?;
        let headers = self.http.headers.map().clone();
        let drain_timeout = match &self.http.draintimeout {
            Some(d) => d.0,
            None => Duration::from_secs(30),
        };
        let tls = self.http.tls.as_ref().map(tls_settings).transpose()?;
        let storage = self.storage_settings()?;
        let purging = &self.storage.maintenance.uploadpurging;
        let purge = if purging.enabled {
            Some(UploadPurge {
                age: purging.age.0,
                interval: positive_duration(
                    "storage.maintenance.uploadpurging.interval",
                    purging.interval,
                )?,
                dry_run: purging.dryrun,
            })
        } else {
            None
        };
        if self.berth.manifestmaxbytes == 0 {
            return Err(invalid(
                "berth.manifestmaxbytes",
                "must be greater than zero",
            ));
        }
        if self.berth.notificationqueuesize == 0 {
            return Err(invalid(
                "berth.notificationqueuesize",
                "must be greater than zero",
            ));
        }
        let gc_grace_period = self.berth.gcgraceperiod.0;
        let gc_schedule = self.gc_schedule()?;
        let connection_limits = self.connection_limits()?;
        let write_networks = self
            .berth
            .writenetworks
            .as_ref()
            .map(|ranges| {
                ranges
                    .iter()
                    .map(|r| Network::parse(r).map_err(|e| invalid("berth.writenetworks", e)))
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?;
        let node_cache = self
            .berth
            .nodecache
            .as_ref()
            .map(|c| c.settle(&storage))
            .transpose()?;
        let pull_through = self.pull_through(addr.port())?;
        Ok(Settings {
            addr,
            tls,
            http2: !self.http.http2.disabled,
            storage,
            delete_enabled: self.storage.delete.enabled,
            read_only: self.storage.maintenance.readonly.enabled,
            drain_timeout,
            purge,
            debug,
            log: log_settings(&self.log),
            htpasswd,
            anonymous_pull: self.berth.anonymouspull,
            check_storage: self.health.storagedriver.enabled,
            manifest_max_bytes: self.berth.manifestmaxbytes,
            manifest_cache_bytes: self.berth.manifestcachebytes,
            endpoints,
            notification_queue_size: self.berth.notificationqueuesize,
            headers,
            gc_grace_period,
            gc_schedule,
            gc_dry_run: self.berth.gcdryrun,
            gc_delete_untagged: self.berth.gcdeleteuntagged,
            connection_limits,
            write_networks,
            node_cache,
            pull_through,
        })
    }

    /// `berth.gcschedule` or `berth.gcinterval`, checked; never both.
    fn gc_schedule(&self) -> Result<Option<Schedule>, ConfigError> {
        match (&self.berth.gcschedule, &self.berth.gcinterval) {
            (Some(_), Some(_)) => Err(invalid(
                "berth.gcschedule",
                "set either berth.gcschedule or berth.gcinterval, not both (berth.gcinterval is the older form)",
            )),
            (Some(cron), None) => Schedule::cron(cron)
                .map(Some)
                .map_err(|e| invalid("berth.gcschedule", e)),
            (None, Some(interval)) => Ok(Some(Schedule::Every(positive_duration(
                "berth.gcinterval",
                *interval,
            )?))),
            (None, None) => Ok(None),
        }
    }

    /// `berth.maxconnections`, `berth.idletimeout` and `berth.stalltimeout`, checked.
    fn connection_limits(&self) -> Result<ConnectionLimits, ConfigError> {
        if self.berth.maxconnections == 0 {
            return Err(invalid("berth.maxconnections", "must be greater than zero"));
        }
        Ok(ConnectionLimits {
            max_connections: self.berth.maxconnections,
            idle_timeout: positive_duration("berth.idletimeout", self.berth.idletimeout)?,
            stall_timeout: positive_duration("berth.stalltimeout", self.berth.stalltimeout)?,
        })
    }

    /// The one configured storage driver, checked.
    fn storage_settings(&self) -> Result<StorageSettings, ConfigError> {
        let storage = &self.storage;
        let redirect = !storage.redirect.disable;
        match (
            &storage.filesystem,
            &storage.s3,
            &storage.azure,
            &storage.gcs,
        ) {
            (Some(fs), None, None, None) => {
                if fs.rootdirectory.as_os_str().is_empty() {
                    return Err(invalid(
                        "storage.filesystem.rootdirectory",
                        "must not be empty",
                    ));
                }
                Ok(StorageSettings::Filesystem {
                    root: fs.rootdirectory.clone(),
                })
            }
            (None, Some(s3), None, None) => {
                s3_settings(s3, redirect).map(|s| StorageSettings::S3(Box::new(s)))
            }
            (None, None, Some(azure), None) => {
                azure_settings(azure, redirect).map(|s| StorageSettings::Azure(Box::new(s)))
            }
            (None, None, None, Some(gcs)) => {
                gcs_settings(gcs, redirect).map(|s| StorageSettings::Gcs(Box::new(s)))
            }
            (None, None, None, None) => Err(invalid(
                "storage",
                "no storage driver configured (supported: filesystem, s3, azure, gcs)",
            )),
            _ => Err(invalid(
                "storage",
                "configure exactly one driver: filesystem, s3, azure or gcs",
            )),
        }
    }

    /// The enabled notification endpoints, with durations parsed.
    fn endpoints(&self) -> Result<Vec<EndpointSettings>, ConfigError> {
        let mut out = Vec::new();
        for (i, e) in self.notifications.endpoints.iter().enumerate() {
            let key = |field: &str| format!("notifications.endpoints[{i}].{field}");
            if e.name.is_empty() {
                return Err(invalid(&key("name"), "must not be empty"));
            }
            let uri: http::Uri = e
                .url
                .parse()
                .map_err(|err| invalid(&key("url"), format!("{:?}: {err}", e.url)))?;
            if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
                return Err(invalid(
                    &key("url"),
                    format!("{:?} is not an http(s) URL", e.url),
                ));
            }
            let headers = e.headers.map().clone();
            for action in &e.ignore.actions {
                if !["push", "pull", "mount", "delete"].contains(&action.as_str()) {
                    return Err(invalid(
                        &key("ignore.actions"),
                        format!("{action:?} is not one of push, pull, mount, delete"),
                    ));
                }
            }
            if e.disabled {
                continue;
            }
            let timeout = match &e.timeout {
                Some(t) => t.0,
                None => Duration::from_secs(5),
            };
            let backoff = match &e.backoff {
                Some(b) => b.0,
                None => Duration::from_secs(1),
            };
            if timeout.is_zero() {
                return Err(invalid(&key("timeout"), "must be greater than zero"));
            }
            out.push(EndpointSettings {
                name: e.name.clone(),
                url: e.url.clone(),
                ignored_actions: e.ignore.actions.clone(),
                ignored_media_types: e
                    .ignore
                    .mediatypes
                    .iter()
                    .chain(&e.ignoredmediatypes)
                    .cloned()
                    .collect(),
                timeout,
                threshold: e.threshold.unwrap_or(10),
                backoff,
                headers,
            });
        }
        Ok(out)
    }
}

/// `http.tls`, checked: the certificate, key and client CA files must be readable.
fn tls_settings(tls: &Tls) -> Result<TlsSettings, ConfigError> {
    let certificate = readable("http.tls.certificate", tls.certificate.as_deref())?.to_path_buf();
    let key = readable("http.tls.key", tls.key.as_deref())?.to_path_buf();
    for (i, ca) in tls.clientcas.iter().enumerate() {
        readable(&format!("http.tls.clientcas[{i}]"), Some(ca))?;
    }
    Ok(TlsSettings {
        certificate,
        key,
        minimum_version: tls.minimumtls.unwrap_or_default(),
        client_cas: tls.clientcas.clone(),
    })
}

/// `log`, resolved: the fields' values rendered as text once, here.
fn log_settings(log: &Log) -> LogSettings {
    let fields = log
        .fields
        .iter()
        .map(|(k, v)| {
            let value = match v {
                Value::String(s) => s.clone(),
                other => serde_norway::to_string(other)
                    .unwrap_or_default()
                    .trim()
                    .to_owned(),
            };
            (k.clone(), value)
        })
        .collect();
    LogSettings {
        level: log.level,
        formatter: log.formatter,
        fields,
        access_log: !log.accesslog.disabled,
    }
}

/// `storage.s3`, checked.
fn s3_settings(s3: &S3, redirect: bool) -> Result<S3Settings, ConfigError> {
    if s3.bucket.is_empty() {
        return Err(invalid("storage.s3.bucket", "must not be empty"));
    }
    if s3.skipverify {
        return Err(invalid(
            "storage.s3.skipverify",
            "skipping TLS verification is not supported",
        ));
    }
    if !s3.v4auth {
        return Err(invalid(
            "storage.s3.v4auth",
            "only signature v4 is supported",
        ));
    }
    if s3.accesskey.is_some() != s3.secretkey.is_some() {
        return Err(invalid(
            "storage.s3.secretkey",
            "accesskey and secretkey go together",
        ));
    }
    let chunk_size = s3.chunksize.unwrap_or(10 * 1024 * 1024);
    if chunk_size < S3_MIN_CHUNK {
        return Err(invalid(
            "storage.s3.chunksize",
            format!("must be at least {S3_MIN_CHUNK} bytes"),
        ));
    }
    let endpoint = match s3.regionendpoint.as_deref().filter(|e| !e.is_empty()) {
        Some(e) if e.contains("://") => Some(http_url("storage.s3.regionendpoint", e)?),
        Some(e) => Some(format!(
            "{}://{}",
            if s3.secure { "https" } else { "http" },
            e.trim_end_matches('/')
        )),
        None => None,
    };
    let keys = match (&s3.accesskey, &s3.secretkey) {
        (Some(access), Some(secret)) => Some(S3Keys {
            access: access.clone(),
            secret: Secret::new(secret.clone()),
        }),
        _ => None,
    };
    Ok(S3Settings {
        bucket: s3.bucket.clone(),
        region: s3.region.clone(),
        keys,
        force_path_style: s3.forcepathstyle,
        root: trimmed_root(s3.rootdirectory.as_deref()),
        encryption: s3.encrypt.then(|| match &s3.keyid {
            Some(key) => S3Encryption::Kms(key.clone()),
            None => S3Encryption::Aes256,
        }),
        storage_class: s3.storageclass.clone(),
        endpoint,
        chunk_size,
        redirect,
    })
}

/// `storage.azure`, checked.
fn azure_settings(azure: &Azure, redirect: bool) -> Result<AzureSettings, ConfigError> {
    if azure.accountname.is_empty() {
        return Err(invalid("storage.azure.accountname", "must not be empty"));
    }
    if azure.container.is_empty() {
        return Err(invalid("storage.azure.container", "must not be empty"));
    }
    let key = match azure.accountkey.as_deref().filter(|k| !k.is_empty()) {
        Some(k) => Some(Secret::new(
            base64::engine::general_purpose::STANDARD
                .decode(k.trim())
                .map_err(|e| invalid("storage.azure.accountkey", format!("not base64: {e}")))?,
        )),
        None => None,
    };
    match azure.credentials.as_ref().map(|c| c.kind.as_str()) {
        None => {}
        Some("shared_key") if key.is_none() => {
            return Err(invalid(
                "storage.azure.accountkey",
                "credentials.type shared_key needs the account key",
            ));
        }
        Some("shared_key" | "default_credentials") => {}
        Some(other) => {
            return Err(invalid(
                "storage.azure.credentials.type",
                format!("{other:?} is not supported; use shared_key or default_credentials"),
            ));
        }
    }
    let service_url = match azure.serviceurl.as_deref().filter(|u| !u.is_empty()) {
        Some(url) => http_url("storage.azure.serviceurl", url)?,
        None => format!(
            "https://{}.blob.{}",
            azure.accountname,
            azure.realm.as_deref().unwrap_or("core.windows.net")
        ),
    };
    Ok(AzureSettings {
        account: azure.accountname.clone(),
        redirect: redirect && key.is_some(),
        key,
        container: azure.container.clone(),
        service_url,
        root: trimmed_root(azure.rootdirectory.as_deref()),
        chunk_size: AZURE_CHUNK,
    })
}

/// `storage.gcs`, checked; the key file is read and its key parsed here,
/// so a bad one stops the start naming the key.
fn gcs_settings(gcs: &Gcs, redirect: bool) -> Result<GcsSettings, ConfigError> {
    if gcs.bucket.is_empty() {
        return Err(invalid("storage.gcs.bucket", "must not be empty"));
    }
    let chunk_size = gcs.chunksize.unwrap_or(16 * 1024 * 1024);
    if chunk_size < GCS_CHUNK_UNIT || !chunk_size.is_multiple_of(GCS_CHUNK_UNIT) {
        return Err(invalid(
            "storage.gcs.chunksize",
            format!("must be a positive multiple of {GCS_CHUNK_UNIT} bytes"),
        ));
    }
    let key = match (&gcs.keyfile, &gcs.credentials) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                "storage.gcs.credentials",
                "give keyfile or credentials, not both",
            ));
        }
        (Some(file), None) => {
            let json = std::fs::read(file)
                .map_err(|e| invalid("storage.gcs.keyfile", format!("{}: {e}", file.display())))?;
            Some(
                ServiceAccountKey::from_json(&json).map_err(|e| {
                    invalid("storage.gcs.keyfile", format!("{}: {e}", file.display()))
                })?,
            )
        }
        (None, Some(fields)) => {
            let json = serde_json::to_vec(fields)
                .map_err(|e| invalid("storage.gcs.credentials", e.to_string()))?;
            Some(
                ServiceAccountKey::from_json(&json)
                    .map_err(|e| invalid("storage.gcs.credentials", e))?,
            )
        }
        (None, None) => None,
    };
    let endpoint = match gcs.endpoint.as_deref().filter(|e| !e.is_empty()) {
        Some(e) => http_url("storage.gcs.endpoint", e)?,
        None => GCS_ENDPOINT.to_owned(),
    };
    Ok(GcsSettings {
        bucket: gcs.bucket.clone(),
        redirect: redirect && key.is_some(),
        key,
        endpoint,
        root: trimmed_root(gcs.rootdirectory.as_deref()),
        chunk_size,
    })
}

/// An http(s) URL given under `key`, without a trailing slash.
pub(crate) fn http_url(key: &str, url: &str) -> Result<String, ConfigError> {
    let uri = url
        .parse::<http::Uri>()
        .map_err(|err| invalid(key, format!("{url:?}: {err}")))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
        return Err(invalid(key, format!("{url:?} is not an http(s) URL")));
    }
    Ok(url.trim_end_matches('/').to_owned())
}

/// A `rootdirectory` as a key prefix: no slashes at either end.
fn trimmed_root(root: Option<&str>) -> String {
    root.unwrap_or("").trim_matches('/').to_owned()
}

/// Parses Go-style listen addresses: `host:port`, `[v6]:port`, `:port`.
fn parse_addr(key: &str, addr: &str) -> Result<SocketAddr, ConfigError> {
    let full = if addr.starts_with(':') {
        format!("0.0.0.0{addr}")
    } else {
        addr.to_owned()
    };
    full.to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| invalid(key, format!("{addr:?} is not a host:port address")))
}

/// A duration given under `key`, refusing zero.
pub(crate) fn positive_duration(key: &str, duration: GoDuration) -> Result<Duration, ConfigError> {
    if duration.0.is_zero() {
        return Err(invalid(key, "must be greater than zero"));
    }
    Ok(duration.0)
}

/// The path given under `key`, refused when missing or unreadable.
fn readable<'a>(key: &str, path: Option<&'a Path>) -> Result<&'a Path, ConfigError> {
    let path = path.ok_or_else(|| invalid(key, "missing"))?;
    std::fs::metadata(path)
        .map(|_| path)
        .map_err(|e| invalid(key, format!("{}: {e}", path.display())))
}

impl NodeCache {
    /// Checks the section against the storage driver it would sit in
    /// front of.
    fn settle(&self, storage: &StorageSettings) -> Result<NodeCacheSettings, ConfigError> {
        if matches!(storage, StorageSettings::Filesystem { .. }) {
            return Err(invalid(
                "berth.nodecache",
                "needs a remote storage driver (s3, azure, gcs): the filesystem driver's blobs are on local disk already",
            ));
        }
        if self.maxbytes == 0 {
            return Err(invalid(
                "berth.nodecache.maxbytes",
                "must be greater than zero",
            ));
        }
        if self.highwatermark == 0 || self.highwatermark > 100 {
            return Err(invalid(
                "berth.nodecache.highwatermark",
                format!("{} is not a percentage in 1..=100", self.highwatermark),
            ));
        }
        if self.lowwatermark == 0 || self.lowwatermark >= self.highwatermark {
            return Err(invalid(
                "berth.nodecache.lowwatermark",
                format!(
                    "{} must be above 0 and below highwatermark ({})",
                    self.lowwatermark, self.highwatermark
                ),
            ));
        }
        let percent = |p: u64| (u128::from(self.maxbytes) * u128::from(p) / 100) as u64;
        Ok(NodeCacheSettings {
            path: self.path.clone(),
            max_bytes: self.maxbytes,
            high_bytes: percent(self.highwatermark),
            low_bytes: percent(self.lowwatermark),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use proptest::prelude::*;
    use proptest::test_runner::{Config as Cases, TestCaseError, TestRunner};
    use serde_norway::Value;

    use crate::schedule::Schedule;
    use crate::test_support::{BASIC, error, parse};
    use crate::*;

    /// Cases per property: enough to find what breaks a parser, few enough
    /// that `cargo test` stays fast.
    const SOME: u32 = 400;

    /// Checks `property` on `SOME` values of `strategy`, as the registry's
    /// property tests do (no regression files, the case count printed).
    fn check_property<S: Strategy>(
        name: &str,
        strategy: S,
        property: impl Fn(S::Value) -> Result<(), TestCaseError>,
    ) {
        let mut runner = TestRunner::new(Cases {
            cases: SOME,
            failure_persistence: None,
            ..Cases::default()
        });
        match runner.run(&strategy, property) {
            Ok(()) => println!("property {name}: {SOME} cases passed"),
            Err(e) => panic!("property {name}: {e}"),
        }
    }

    #[test]
    fn development_settings_pass_the_checks_a_file_must_pass() {
        let s = Config::development([]).unwrap();
        assert_eq!(s.addr, "127.0.0.1:5000".parse().unwrap());
        assert!(
            matches!(&s.storage, StorageSettings::Filesystem { root } if root == Path::new("./data"))
        );
        assert!(s.delete_enabled);
        let moved =
            Config::development([("REGISTRY_HTTP_ADDR".to_owned(), "127.0.0.1:5050".to_owned())])
                .unwrap();
        assert_eq!(moved.addr, "127.0.0.1:5050".parse().unwrap());
    }

    #[test]
    fn reads_distribution_config() {
        let s = parse(BASIC, &[]).unwrap();
        assert_eq!(s.addr, "127.0.0.1:5001".parse().unwrap());
        assert!(
            matches!(&s.storage, StorageSettings::Filesystem { root } if root == Path::new("/tmp/r"))
        );
        assert!(s.delete_enabled);
        assert_eq!(
            s.purge,
            Some(UploadPurge {
                age: Duration::from_secs(168 * 3600),
                interval: Duration::from_secs(24 * 3600),
                dry_run: false,
            })
        );
    }

    #[test]
    fn accepts_debian_default_config_sections() {
        let text = "version: 0.1\nlog:\n  fields:\n    service: registry\nstorage:\n  cache:\n    blobdescriptor: inmemory\n  filesystem:\n    rootdirectory: /var/lib/docker-registry\n  delete:\n    enabled: true\nhttp:\n  addr: :5000\n  headers:\n    X-Content-Type-Options: [nosniff]\nhealth:\n  storagedriver:\n    enabled: true\n    interval: 10s\n    threshold: 3\n";
        let s = parse(text, &[]).unwrap();
        assert_eq!(s.addr, "0.0.0.0:5000".parse().unwrap());
    }

    #[test]
    fn unknown_key_is_named() {
        let err = error(&BASIC.replace("rootdirectory", "rootdir"), &[]);
        assert!(
            err.contains("storage.filesystem") && err.contains("rootdir"),
            "{err}"
        );
        let err = error(&format!("{BASIC}bogus: 1\n"), &[]);
        assert!(err.contains("bogus"), "{err}");
    }

    #[test]
    fn invalid_values_are_named() {
        let err = error(&BASIC.replace("enabled: true", "enabled: maybe"), &[]);
        assert!(err.starts_with("storage.delete.enabled"), "{err}");
        let err = error(&BASIC.replace("127.0.0.1:5001", "nowhere"), &[]);
        assert!(err.starts_with("http.addr"), "{err}");
        let err = error(&BASIC.replace("version: 0.1", "version: 2"), &[]);
        assert!(err.starts_with("version"), "{err}");
    }

    #[test]
    fn notifications_and_auth() {
        let dir = tempfile::tempdir().unwrap();
        let htpasswd = dir.path().join("htpasswd");
        std::fs::write(&htpasswd, "").unwrap();
        let text = format!(
            "{BASIC}auth:\n  htpasswd:\n    realm: r\n    path: {}\nnotifications:\n  endpoints:\n    - name: ci\n      url: http://127.0.0.1:9/hook\n      timeout: 500ms\n      threshold: 3\n      backoff: 1s\n      ignore:\n        actions: [pull]\n",
            htpasswd.display()
        );
        let s = parse(&text, &[]).unwrap();
        assert_eq!(s.endpoints.len(), 1);
        assert_eq!(s.endpoints[0].timeout, Duration::from_millis(500));
        let err = error(&text.replace("[pull]", "[fetch]"), &[]);
        assert!(
            err.starts_with("notifications.endpoints[0].ignore.actions"),
            "{err}"
        );
        let err = error(&text.replace("http://127.0.0.1:9/hook", "ftp://x"), &[]);
        assert!(err.starts_with("notifications.endpoints[0].url"), "{err}");
        let err = error(
            &text.replace(&htpasswd.display().to_string(), "/nonexistent/htpasswd"),
            &[],
        );
        assert!(err.starts_with("auth.htpasswd.path"), "{err}");
    }

    #[test]
    fn the_checks_resolve_what_the_registry_reads() {
        let s = parse(BASIC, &[]).unwrap();
        assert!(s.tls.is_none() && s.htpasswd.is_none() && s.debug.is_none());
        assert!(s.http2 && !s.read_only && s.check_storage && !s.anonymous_pull);
        assert_eq!(s.manifest_max_bytes, 4 * 1024 * 1024);
        assert_eq!(s.manifest_cache_bytes, 16 * 1024 * 1024);
        assert_eq!(s.notification_queue_size, 10000);
        assert!(!s.gc_dry_run && !s.gc_delete_untagged);
        assert_eq!(
            s.log,
            LogSettings {
                level: LogLevel::Info,
                formatter: LogFormatter::Text,
                fields: Vec::new(),
                access_log: true,
            }
        );

        let dir = tempfile::tempdir().unwrap();
        let (cert, key, ca, users) = (
            dir.path().join("cert.pem"),
            dir.path().join("key.pem"),
            dir.path().join("ca.pem"),
            dir.path().join("htpasswd"),
        );
        for file in [&cert, &key, &ca, &users] {
            std::fs::write(file, "").unwrap();
        }
        let text = format!(
            "{BASIC}log:\n  level: debug\n  formatter: json\n  fields: {{service: registry, replicas: 3}}\n  accesslog: {{disabled: true}}\nauth:\n  htpasswd: {{path: {users}}}\nhealth:\n  storagedriver: {{enabled: false}}\nberth:\n  anonymouspull: true\n  manifestcachebytes: 0\n  notificationqueuesize: 7\n  gcdeleteuntagged: true\n",
            users = users.display(),
        )
        .replace(
            "http:\n",
            &format!(
                "http:\n  tls: {{certificate: {}, key: {}, minimumtls: tls1.3, clientcas: [{}]}}\n  http2: {{disabled: true}}\n  debug: {{addr: 127.0.0.1:5009, prometheus: {{path: /m}}}}\n",
                cert.display(),
                key.display(),
                ca.display()
            ),
        );
        let s = parse(&text, &[]).unwrap();
        assert_eq!(
            s.tls,
            Some(TlsSettings {
                certificate: cert.clone(),
                key: key.clone(),
                minimum_version: TlsVersion::Tls13,
                client_cas: vec![ca.clone()],
            })
        );
        assert!(!s.http2 && !s.check_storage && s.anonymous_pull);
        assert_eq!(
            s.debug,
            Some(DebugListener {
                addr: "127.0.0.1:5009".parse().unwrap(),
                metrics_path: "/m".to_owned(),
            })
        );
        assert_eq!(
            s.htpasswd,
            Some(HtpasswdSettings {
                path: users.clone(),
                realm: "basic-realm".to_owned(),
            })
        );
        assert_eq!(
            s.log,
            LogSettings {
                level: LogLevel::Debug,
                formatter: LogFormatter::Json,
                fields: vec![
                    ("replicas".to_owned(), "3".to_owned()),
                    ("service".to_owned(), "registry".to_owned()),
                ],
                access_log: false,
            }
        );
        assert_eq!(s.manifest_cache_bytes, 0);
        assert_eq!(s.notification_queue_size, 7);
        assert!(s.gc_delete_untagged);
        let err = error(
            &text.replace(&key.display().to_string(), "/nonexistent/key"),
            &[],
        );
        assert!(err.starts_with("http.tls.key"), "{err}");
    }

    #[test]
    fn s3_settings() {
        let text = "version: 0.1\nstorage:\n  s3:\n    bucket: b\n    region: us-east-1\n    regionendpoint: 127.0.0.1:9000\n    secure: false\n    forcepathstyle: true\n  redirect:\n    disable: true\n";
        let s = parse(
            text,
            &[
                ("REGISTRY_STORAGE_S3_ACCESSKEY", "12345"),
                ("REGISTRY_STORAGE_S3_SECRETKEY", "true"),
            ],
        )
        .unwrap();
        let StorageSettings::S3(s3) = &s.storage else {
            panic!("not s3")
        };
        assert_eq!(s3.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert_eq!(
            s3.keys,
            Some(S3Keys {
                access: "12345".to_owned(),
                secret: Secret::new("true".to_owned())
            })
        );
        assert!(
            !format!("{s3:?}").contains("true\""),
            "the secret is not logged"
        );
        assert_eq!(s3.chunk_size, 10 * 1024 * 1024);
        assert!(!s3.redirect);
        let err = error(&text.replace("secure: false", "chunksize: 1000"), &[]);
        assert!(err.starts_with("storage.s3.chunksize"), "{err}");
        let both = format!("{text}  filesystem:\n    rootdirectory: /x\n");
        assert!(error(&both, &[]).starts_with("storage:"));
    }

    #[test]
    fn node_cache_needs_a_remote_driver_and_ordered_watermarks() {
        let dir = tempfile::tempdir().unwrap();
        let s3 = "version: 0.1\nstorage:\n  s3:\n    bucket: b\n    region: us-east-1\n    regionendpoint: http://127.0.0.1:9000\n";
        let path = dir.path().join("cache");
        let section = |extra: &str| {
            format!(
                "berth:\n  nodecache:\n    path: {}\n    maxbytes: 1000\n{extra}",
                path.display()
            )
        };
        let s = parse(&format!("{s3}{}", section("")), &[]).unwrap();
        let cache = s.node_cache.unwrap();
        assert_eq!(
            (cache.max_bytes, cache.high_bytes, cache.low_bytes),
            (1000, 900, 800)
        );
        assert!(!path.exists(), "checking the config creates nothing");
        assert!(parse(s3, &[]).unwrap().node_cache.is_none());
        let err = error(&format!("{BASIC}{}", section("")), &[]);
        assert!(err.starts_with("berth.nodecache:"), "{err}");
        for (bad, key) in [
            ("    highwatermark: 101\n", "berth.nodecache.highwatermark"),
            ("    lowwatermark: 0\n", "berth.nodecache.lowwatermark"),
            ("    lowwatermark: 90\n", "berth.nodecache.lowwatermark"),
            (
                "    highwatermark: 50\n    lowwatermark: 60\n",
                "berth.nodecache.lowwatermark",
            ),
            ("    size: 3\n", "berth.nodecache"),
        ] {
            let err = error(&format!("{s3}{}", section(bad)), &[]);
            assert!(err.starts_with(key), "{bad}: {err}");
        }
        let zero = format!(
            "{s3}{}",
            section("").replace("maxbytes: 1000", "maxbytes: 0")
        );
        assert!(error(&zero, &[]).starts_with("berth.nodecache.maxbytes"));
    }

    #[test]
    fn connection_limits() {
        let s = parse(BASIC, &[]).unwrap();
        assert_eq!(s.connection_limits, ConnectionLimits::default());
        let s = parse(
            &format!("{BASIC}berth:\n  maxconnections: 5\n  idletimeout: 2s\n  stalltimeout: 1m\n"),
            &[],
        )
        .unwrap();
        assert_eq!(
            s.connection_limits,
            ConnectionLimits {
                max_connections: 5,
                idle_timeout: Duration::from_secs(2),
                stall_timeout: Duration::from_secs(60),
            }
        );
        for (bad, key) in [
            ("maxconnections: 0", "berth.maxconnections"),
            ("idletimeout: 0s", "berth.idletimeout"),
            ("stalltimeout: soon", "berth.stalltimeout"),
        ] {
            let err = error(&format!("{BASIC}berth:\n  {bad}\n"), &[]);
            assert!(err.starts_with(key), "{err}");
        }
    }

    #[test]
    fn write_networks_are_checked_ranges() {
        assert!(parse(BASIC, &[]).unwrap().write_networks.is_none());
        let s = parse(
            &format!("{BASIC}berth:\n  writenetworks: [127.0.0.0/8, \"::1\"]\n"),
            &[],
        )
        .unwrap();
        let ranges: Vec<String> = s
            .write_networks
            .unwrap()
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(ranges, ["127.0.0.0/8", "::1/128"]);
        let err = error(
            &format!("{BASIC}berth:\n  writenetworks: [10.0.0.0/40]\n"),
            &[],
        );
        assert!(err.starts_with("berth.writenetworks"), "{err}");
    }

    #[test]
    fn gc_schedule_or_interval() {
        let s = parse(BASIC, &[]).unwrap();
        assert!(s.gc_schedule.is_none());
        let s = parse(
            &format!("{BASIC}berth:\n  gcschedule: \"@daily\"\n  gcdryrun: true\n"),
            &[],
        )
        .unwrap();
        assert!(matches!(s.gc_schedule, Some(Schedule::Cron(_))));
        assert!(s.gc_dry_run);
        let s = parse(&format!("{BASIC}berth:\n  gcinterval: 6h\n"), &[]).unwrap();
        assert!(
            matches!(s.gc_schedule, Some(Schedule::Every(d)) if d == Duration::from_secs(6 * 3600))
        );
        let err = error(
            &format!("{BASIC}berth:\n  gcschedule: \"0 3 * * *\"\n  gcinterval: 6h\n"),
            &[],
        );
        assert!(
            err.starts_with("berth.gcschedule") && err.contains("not both"),
            "{err}"
        );
        let err = error(
            &format!("{BASIC}berth:\n  gcschedule: \"@every 5m\"\n"),
            &[],
        );
        assert!(err.starts_with("berth.gcschedule"), "{err}");
        let err = error(BASIC, &[("REGISTRY_BERTH_GCSCHEDULE", "61 * * * *")]);
        assert!(err.starts_with("berth.gcschedule"), "{err}");
    }

    #[test]
    fn requires_a_driver() {
        let err = error("version: 0.1\n", &[]);
        assert!(err.starts_with("storage"), "{err}");
    }

    /// Every key of the file, dotted (`http.addr` and `http.debug.addr`
    /// aside: a host name there is looked up, which a test must not do).
    const KEYS: &[&str] = &[
        "version",
        "log",
        "log.level",
        "log.formatter",
        "log.fields",
        "log.fields.service",
        "log.accesslog",
        "log.accesslog.disabled",
        "http",
        "http.net",
        "http.host",
        "http.secret",
        "http.relativeurls",
        "http.draintimeout",
        "http.headers",
        "http.headers.X-A",
        "http.tls",
        "http.tls.certificate",
        "http.tls.key",
        "http.tls.minimumtls",
        "http.tls.clientcas",
        "http.http2",
        "http.http2.disabled",
        "http.debug",
        "http.debug.prometheus",
        "http.debug.prometheus.enabled",
        "http.debug.prometheus.path",
        "storage",
        "storage.filesystem",
        "storage.filesystem.rootdirectory",
        "storage.filesystem.maxthreads",
        "storage.s3",
        "storage.s3.bucket",
        "storage.s3.region",
        "storage.s3.regionendpoint",
        "storage.s3.forcepathstyle",
        "storage.s3.accesskey",
        "storage.s3.secretkey",
        "storage.s3.secure",
        "storage.s3.skipverify",
        "storage.s3.v4auth",
        "storage.s3.chunksize",
        "storage.s3.rootdirectory",
        "storage.azure",
        "storage.azure.accountname",
        "storage.azure.accountkey",
        "storage.azure.container",
        "storage.azure.serviceurl",
        "storage.azure.credentials",
        "storage.gcs",
        "storage.gcs.bucket",
        "storage.gcs.keyfile",
        "storage.gcs.chunksize",
        "storage.gcs.endpoint",
        "storage.gcs.maxconcurrency",
        "storage.redirect.disable",
        "storage.delete.enabled",
        "storage.maintenance.uploadpurging.enabled",
        "storage.maintenance.uploadpurging.age",
        "storage.maintenance.uploadpurging.interval",
        "storage.maintenance.uploadpurging.dryrun",
        "storage.maintenance.readonly.enabled",
        "storage.cache",
        "health.storagedriver.enabled",
        "health.storagedriver.interval",
        "auth.htpasswd",
        "auth.htpasswd.realm",
        "auth.htpasswd.path",
        "notifications.endpoints",
        "berth.manifestmaxbytes",
        "berth.anonymouspull",
        "berth.writenetworks",
        "berth.notificationqueuesize",
        "berth.gcgraceperiod",
        "berth.gcschedule",
        "berth.gcinterval",
        "berth.gcdeleteuntagged",
        "berth.gcdryrun",
        "berth.maxconnections",
        "berth.idletimeout",
        "berth.stalltimeout",
        "bogus",
        "http.bogus",
    ];

    /// Values of every type, and text that nearly parses.
    fn values() -> impl Strategy<Value = Value> {
        let scalar = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            prop::sample::select(vec![
                "0.1",
                "0s",
                "1h",
                "-1s",
                "30",
                "tls1.3",
                "json",
                "@daily",
                "* * * * *",
                "61 * * * *",
                "http://x",
                "/nonexistent",
                "",
                "text",
                "https",
            ])
            .prop_map(Value::from),
            any::<String>().prop_map(Value::from),
        ];
        scalar.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Sequence),
                prop::collection::btree_map("[a-z]{1,8}", inner, 0..4).prop_map(|m| {
                    Value::Mapping(m.into_iter().map(|(k, v)| (Value::from(k), v)).collect())
                }),
            ]
        })
    }

    /// Sets the dotted `key` of `tree` to `value`, making sections as needed.
    fn set(tree: &mut Value, key: &str, value: Value) {
        let mut node = tree;
        for part in key.split('.') {
            if !node.is_mapping() {
                *node = Value::Mapping(Default::default());
            }
            let Value::Mapping(map) = node else {
                return;
            };
            node = map.entry(Value::from(part)).or_insert(Value::Null);
        }
        *node = value;
    }

    #[test]
    fn property_any_text_is_a_configuration_or_a_named_error() {
        check_property(
            "any text is a configuration, or an error naming its key",
            prop_oneof!["[a-z:. \n0-9-]{0,80}", any::<String>()],
            |text| {
                match parse(&text, &[]) {
                    Ok(_) | Err(ConfigError::Syntax { .. }) => {}
                    Err(ConfigError::Invalid { key, message }) => {
                        prop_assert!(!key.is_empty() && !message.is_empty());
                    }
                    Err(e) => prop_assert!(false, "neither syntax nor a key: {}", e),
                }
                Ok(())
            },
        );
    }

    #[test]
    fn property_any_value_at_any_key_is_taken_or_named() {
        let edits = prop::collection::vec((prop::sample::select(KEYS), values()), 1..4);
        let overrides = prop::collection::vec(
            (
                prop::sample::select(KEYS),
                prop_oneof!["[a-z0-9:@* .-]{0,12}", any::<String>()],
            ),
            0..2,
        );
        check_property(
            "any value at any key is taken, or refused naming the key",
            (edits, overrides),
            |(edits, overrides)| {
                let mut tree: Value = serde_norway::from_str(BASIC).unwrap();
                for (key, value) in &edits {
                    set(&mut tree, key, value.clone());
                }
                let text = serde_norway::to_string(&tree).unwrap();
                let env: Vec<(String, String)> = overrides
                    .iter()
                    .map(|(key, value)| {
                        let var = format!("REGISTRY_{}", key.replace('.', "_").to_uppercase());
                        (var, value.clone())
                    })
                    .collect();
                match Config::parse(&text, "test.yml", env) {
                    Ok(_) => {}
                    Err(ConfigError::Invalid { key, message }) => {
                        prop_assert!(!key.is_empty() && !message.is_empty());
                    }
                    Err(e) => prop_assert!(false, "not an invalid key: {}", e),
                }
                Ok(())
            },
        );
    }
}
