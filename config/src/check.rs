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
            secret: secret.clone(),
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
    let key = match azure
        .accountkey
        .as_ref()
        .map(|k| k.expose().as_str())
        .filter(|k| !k.is_empty())
    {
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
mod tests;
