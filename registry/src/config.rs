//! The configuration file: a compatible subset of CNCF Distribution's
//! `config.yml`, plus `REGISTRY_SECTION_KEY` environment overrides.
//!
//! Parsing is strict: an unknown key, a value of the wrong type, or a value
//! out of range is an error that names the key (and the environment variable
//! when one set it), so a typo never silently falls back to a default.

use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use serde::Deserialize;
use serde_norway::Value;

use crate::gc::schedule::Schedule;
use crate::networks::Network;
use crate::server::connection::ConnectionLimits;

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

/// Prefix of environment variables that override config keys.
const ENV_PREFIX: &str = "REGISTRY_";

/// The variable that names the configuration file, as in Distribution; it
/// has the overrides' prefix but is not one.
pub const CONFIGURATION_PATH_ENV: &str = "REGISTRY_CONFIGURATION_PATH";

/// A configuration error, naming the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The YAML is malformed.
    #[error("{path}: {message}")]
    Syntax {
        /// The file.
        path: String,
        /// The parser's message.
        message: String,
    },
    /// A key is unknown or its value invalid.
    #[error("{key}: {message}")]
    Invalid {
        /// The dotted key, e.g. `storage.filesystem.rootdirectory`.
        key: String,
        /// What is wrong.
        message: String,
    },
}

fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_owned(),
        message: message.into(),
    }
}

/// The whole configuration.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Config format version; Distribution's is `0.1`.
    pub version: Option<Value>,
    /// Logging.
    #[serde(default)]
    pub log: Log,
    /// HTTP listener.
    #[serde(default)]
    pub http: Http,
    /// Storage backend and its maintenance.
    #[serde(default)]
    pub storage: Storage,
    /// Health checks (Distribution's `health` section).
    #[serde(default)]
    pub health: Health,
    /// Authentication.
    #[serde(default)]
    pub auth: Auth,
    /// Webhook notifications.
    #[serde(default)]
    pub notifications: Notifications,
    /// Berth's own settings.
    #[serde(default)]
    pub berth: Berth,
    /// Distribution's pull-through cache of one upstream, for requests without `ns`.
    pub proxy: Option<Proxy>,
}

/// `log`: level, format, fields and access log.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Log {
    /// `error`, `warn`, `info` (default), `debug` or `trace`.
    #[serde(default = "default_level")]
    pub level: String,
    /// `text` (default) or `json`.
    #[serde(default = "default_formatter")]
    pub formatter: String,
    /// Static fields added to every log line.
    #[serde(default)]
    pub fields: BTreeMap<String, Value>,
    /// Access log settings.
    #[serde(default)]
    pub accesslog: AccessLog,
}

impl Default for Log {
    fn default() -> Self {
        Log {
            level: default_level(),
            formatter: default_formatter(),
            fields: BTreeMap::new(),
            accesslog: AccessLog::default(),
        }
    }
}

fn default_level() -> String {
    "info".to_owned()
}

fn default_formatter() -> String {
    "text".to_owned()
}

/// `log.accesslog`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessLog {
    /// Turns the per-request access log off.
    #[serde(default)]
    pub disabled: bool,
}

/// `http`: where and how to listen.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Http {
    /// Listen address, `host:port` or `:port` (all interfaces). Default `:5000`.
    pub addr: Option<String>,
    /// Network; only `tcp` is supported.
    pub net: Option<String>,
    /// Externally visible host; accepted for compatibility (Berth answers relative URLs).
    pub host: Option<String>,
    /// Upload state secret; accepted for compatibility (upload state lives in storage).
    pub secret: Option<String>,
    /// Accepted for compatibility; Berth always answers relative URLs.
    pub relativeurls: Option<bool>,
    /// How long to let in-flight requests finish on shutdown (default 30s).
    pub draintimeout: Option<String>,
    /// Extra headers added to every response.
    #[serde(default)]
    pub headers: BTreeMap<String, Vec<String>>,
    /// TLS, enabled when set.
    pub tls: Option<Tls>,
    /// HTTP/2 settings.
    #[serde(default)]
    pub http2: Http2,
    /// A second listener for `/metrics` (Distribution's debug server).
    pub debug: Option<Debug>,
}

/// `http.debug`: where `/metrics` is also served.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Debug {
    /// Listen address of the debug server.
    pub addr: Option<String>,
    /// Prometheus settings.
    #[serde(default)]
    pub prometheus: Prometheus,
}

/// `http.debug.prometheus`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Prometheus {
    /// Serve metrics on the debug server (default true).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Path of the metrics endpoint (default `/metrics`).
    #[serde(default = "default_metrics_path")]
    pub path: String,
}

impl Default for Prometheus {
    fn default() -> Self {
        Prometheus {
            enabled: true,
            path: default_metrics_path(),
        }
    }
}

fn default_metrics_path() -> String {
    "/metrics".to_owned()
}

/// `auth`: who may use the registry.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Auth {
    /// Basic authentication against an htpasswd file of bcrypt entries.
    pub htpasswd: Option<Htpasswd>,
}

/// `auth.htpasswd`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Htpasswd {
    /// Realm named in the `WWW-Authenticate` challenge.
    #[serde(default = "default_realm")]
    pub realm: String,
    /// The htpasswd file; re-read when it changes.
    pub path: PathBuf,
}

fn default_realm() -> String {
    "basic-realm".to_owned()
}

/// `notifications`: webhook endpoints.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Notifications {
    /// The endpoints events are sent to.
    #[serde(default)]
    pub endpoints: Vec<Endpoint>,
}

/// `notifications.endpoints[]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    /// A name for logs and metrics.
    pub name: String,
    /// URL events are POSTed to.
    pub url: String,
    /// Skip this endpoint.
    #[serde(default)]
    pub disabled: bool,
    /// Headers added to each delivery.
    #[serde(default)]
    pub headers: BTreeMap<String, Vec<String>>,
    /// Time allowed for one delivery (default 5s).
    pub timeout: Option<String>,
    /// Consecutive failures after which the retry delay starts doubling (default 10).
    pub threshold: Option<u32>,
    /// Delay before retrying a failed delivery (default 1s).
    pub backoff: Option<String>,
    /// Media types whose events are not sent (Distribution's older key).
    #[serde(default)]
    pub ignoredmediatypes: Vec<String>,
    /// Events not sent.
    #[serde(default)]
    pub ignore: Ignore,
}

/// `notifications.endpoints[].ignore`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ignore {
    /// Media types whose events are not sent.
    #[serde(default)]
    pub mediatypes: Vec<String>,
    /// Actions (`push`, `pull`, `mount`, `delete`) whose events are not sent.
    #[serde(default)]
    pub actions: Vec<String>,
}

/// `http.tls`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    /// PEM certificate chain file.
    pub certificate: Option<PathBuf>,
    /// PEM private key file.
    pub key: Option<PathBuf>,
    /// Lowest TLS version: `tls1.2` (default) or `tls1.3`.
    pub minimumtls: Option<String>,
    /// PEM files of CAs whose client certificates are required (mutual TLS).
    #[serde(default)]
    pub clientcas: Vec<PathBuf>,
}

/// `http.http2`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Http2 {
    /// Serve HTTP/1.1 only.
    #[serde(default)]
    pub disabled: bool,
}

/// `storage`: exactly one driver, plus delete, maintenance and cache settings.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Storage {
    /// The filesystem driver.
    pub filesystem: Option<Filesystem>,
    /// The S3 driver.
    pub s3: Option<S3>,
    /// The Azure Blob Storage driver.
    pub azure: Option<Azure>,
    /// The Google Cloud Storage driver.
    pub gcs: Option<Gcs>,
    /// Redirects of blob downloads to the backend (S3 pre-signed URLs,
    /// Azure SAS URLs, GCS signed URLs).
    #[serde(default)]
    pub redirect: Redirect,
    /// Deletes.
    #[serde(default)]
    pub delete: Enabled,
    /// Upload purging and read-only mode.
    #[serde(default)]
    pub maintenance: Maintenance,
    /// Distribution's descriptor cache; accepted and not needed (Berth reads links directly).
    pub cache: Option<BTreeMap<String, Value>>,
}

/// `storage.filesystem`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filesystem {
    /// Root directory of the layout (default `/var/lib/registry`).
    #[serde(default = "default_rootdirectory")]
    pub rootdirectory: PathBuf,
    /// Distribution's thread limit; accepted for compatibility.
    pub maxthreads: Option<u64>,
}

fn default_rootdirectory() -> PathBuf {
    PathBuf::from("/var/lib/registry")
}

/// `storage.s3`: a bucket of AWS S3 or an S3-compatible server.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3 {
    /// The bucket.
    #[serde(deserialize_with = "scalar_string")]
    pub bucket: String,
    /// The region (default: the AWS environment's, else `us-east-1`).
    #[serde(default, deserialize_with = "optional_scalar_string")]
    pub region: Option<String>,
    /// Endpoint of an S3-compatible server, `host:port` or a URL.
    #[serde(default, deserialize_with = "optional_scalar_string")]
    pub regionendpoint: Option<String>,
    /// Address buckets by path (`endpoint/bucket/key`), as most S3-compatible servers need.
    #[serde(default)]
    pub forcepathstyle: bool,
    /// Access key; without it the standard AWS credential chain is used.
    #[serde(default, deserialize_with = "optional_scalar_string")]
    pub accesskey: Option<String>,
    /// Secret key, with `accesskey`.
    #[serde(default, deserialize_with = "optional_scalar_string")]
    pub secretkey: Option<String>,
    /// Prefix of every key in the bucket.
    #[serde(default, deserialize_with = "optional_scalar_string")]
    pub rootdirectory: Option<String>,
    /// Use https for an endpoint given without a scheme (default true).
    #[serde(default = "yes")]
    pub secure: bool,
    /// Skipping TLS verification is not supported; must be false.
    #[serde(default)]
    pub skipverify: bool,
    /// Signature v4 (the only one supported); must be true.
    #[serde(default = "yes")]
    pub v4auth: bool,
    /// Multipart part size in bytes (default 10 MiB, at least 5 MiB).
    pub chunksize: Option<u64>,
    /// Server-side encryption of stored objects.
    #[serde(default)]
    pub encrypt: bool,
    /// KMS key id for server-side encryption (with `encrypt`).
    #[serde(default, deserialize_with = "optional_scalar_string")]
    pub keyid: Option<String>,
    /// Storage class of stored objects (default `STANDARD`).
    #[serde(default, deserialize_with = "optional_scalar_string")]
    pub storageclass: Option<String>,
}

/// `storage.azure`: a container of an Azure storage account (or Azurite).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Azure {
    /// The storage account.
    #[serde(deserialize_with = "scalar_string")]
    pub accountname: String,
    /// The account's shared key (base64). Without it, Berth uses Azure
    /// workload identity (`AZURE_CLIENT_ID`, `AZURE_TENANT_ID`,
    /// `AZURE_FEDERATED_TOKEN_FILE`) and cannot sign redirect URLs.
    #[serde(default, deserialize_with = "optional_scalar_string")]
    pub accountkey: Option<String>,
    /// The container.
    #[serde(deserialize_with = "scalar_string")]
    pub container: String,
    /// Domain of the service (default `core.windows.net`): the service is
    /// `https://<accountname>.blob.<realm>`.
    #[serde(default, deserialize_with = "optional_scalar_string")]
    pub realm: Option<String>,
    /// The service URL (Distribution v3), overriding `realm`; for Azurite
    /// `http://127.0.0.1:10000/<accountname>`.
    #[serde(default, deserialize_with = "optional_scalar_string")]
    pub serviceurl: Option<String>,
    /// Prefix of every blob name in the container.
    #[serde(default, deserialize_with = "optional_scalar_string")]
    pub rootdirectory: Option<String>,
    /// Distribution v3's credentials section: `type: shared_key` (with
    /// `accountkey`) or `default_credentials` (workload identity).
    pub credentials: Option<AzureCredentials>,
    /// Distribution v3's copy polling settings; accepted for compatibility.
    pub copy_status_poll_max_retry: Option<u64>,
    /// Accepted for compatibility (see `copy_status_poll_max_retry`).
    pub copy_status_poll_delay: Option<String>,
}

/// `storage.azure.credentials` (Distribution v3).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AzureCredentials {
    /// `shared_key` or `default_credentials`; `client_secret` is not supported.
    #[serde(rename = "type", deserialize_with = "scalar_string")]
    pub kind: String,
    /// Accepted for compatibility with `client_secret`, which is refused.
    #[serde(default, deserialize_with = "optional_scalar_string")]
    pub clientid: Option<String>,
    /// As `clientid`.
    #[serde(default, deserialize_with = "optional_scalar_string")]
    pub tenantid: Option<String>,
    /// As `clientid`.
    #[serde(default, deserialize_with = "optional_scalar_string")]
    pub secret: Option<String>,
}

/// `storage.gcs`: a Google Cloud Storage bucket (or fake-gcs-server).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gcs {
    /// The bucket.
    #[serde(deserialize_with = "scalar_string")]
    pub bucket: String,
    /// A service account's JSON key file. Without it (and without
    /// `credentials`), Berth takes tokens from the metadata server (GKE
    /// workload identity) and cannot sign redirect URLs.
    pub keyfile: Option<PathBuf>,
    /// The service account key inline, as the fields of the JSON key file.
    pub credentials: Option<BTreeMap<String, Value>>,
    /// Prefix of every object name in the bucket.
    #[serde(default, deserialize_with = "optional_scalar_string")]
    pub rootdirectory: Option<String>,
    /// Size of the parts an upload is sent in (default 16 MiB, a multiple of 256 KiB).
    pub chunksize: Option<u64>,
    /// Berth's own: the JSON API endpoint, for fake-gcs-server or a proxy
    /// (default `https://storage.googleapis.com`); requests go without
    /// credentials when no key is given.
    #[serde(default, deserialize_with = "optional_scalar_string")]
    pub endpoint: Option<String>,
    /// Accepted for compatibility with Distribution.
    #[serde(default, deserialize_with = "optional_scalar_string")]
    pub useragent: Option<String>,
    /// Accepted for compatibility with Distribution.
    pub maxconcurrency: Option<u64>,
}

/// `storage.redirect`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Redirect {
    /// Serve blob bytes through the registry instead of redirecting clients to the backend.
    #[serde(default)]
    pub disable: bool,
}

/// Reads a string that YAML (or an environment override) may have typed as
/// a number or boolean: a numeric access key is still a string.
fn scalar_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    match Value::deserialize(d)? {
        Value::String(s) => Ok(s),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        other => Err(serde::de::Error::custom(format!(
            "expected a string, got {other:?}"
        ))),
    }
}

fn optional_scalar_string<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<String>, D::Error> {
    scalar_string(d).map(Some)
}

/// A section with a single `enabled` switch.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Enabled {
    /// Whether the feature is on.
    #[serde(default)]
    pub enabled: bool,
}

/// `storage.maintenance`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Maintenance {
    /// Removal of abandoned upload sessions.
    #[serde(default)]
    pub uploadpurging: UploadPurging,
    /// Refuse writes while serving reads.
    #[serde(default)]
    pub readonly: Enabled,
}

/// `storage.maintenance.uploadpurging`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UploadPurging {
    /// Whether to purge (default true).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Age past which an upload is purged (default 168h).
    #[serde(default = "default_purge_age")]
    pub age: String,
    /// How often to look (default 24h).
    #[serde(default = "default_purge_interval")]
    pub interval: String,
    /// Only log what would be purged.
    #[serde(default)]
    pub dryrun: bool,
}

impl Default for UploadPurging {
    fn default() -> Self {
        UploadPurging {
            enabled: true,
            age: default_purge_age(),
            interval: default_purge_interval(),
            dryrun: false,
        }
    }
}

fn yes() -> bool {
    true
}

fn default_purge_age() -> String {
    "168h".to_owned()
}

fn default_purge_interval() -> String {
    "24h".to_owned()
}

/// `health`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Health {
    /// Storage checks behind `/readyz`.
    #[serde(default)]
    pub storagedriver: StorageHealth,
}

/// `health.storagedriver`: whether `/readyz` checks storage.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageHealth {
    /// Check storage on `/readyz` (default true).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Accepted for compatibility: Berth checks on each `/readyz` request.
    pub interval: Option<String>,
    /// Accepted for compatibility.
    pub threshold: Option<u64>,
}

impl Default for StorageHealth {
    fn default() -> Self {
        StorageHealth {
            enabled: true,
            interval: None,
            threshold: None,
        }
    }
}

/// `berth`: settings Distribution does not have.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Berth {
    /// Largest manifest accepted on push, in bytes (default 4 MiB).
    #[serde(default = "default_manifest_max_bytes")]
    pub manifestmaxbytes: u64,
    /// Bytes of manifests kept in memory by digest, for GETs (default 16 MiB; 0 turns it off).
    #[serde(default = "default_manifest_cache_bytes")]
    pub manifestcachebytes: u64,
    /// With `auth`, let clients without credentials pull (GET and HEAD).
    #[serde(default)]
    pub anonymouspull: bool,
    /// Without `auth`, accept pushes and deletes only from clients in these
    /// address ranges (CIDR); unset accepts them from anywhere.
    pub writenetworks: Option<Vec<String>>,
    /// Events queued per notification endpoint before the oldest are dropped (default 10000).
    #[serde(default = "default_queue_size")]
    pub notificationqueuesize: usize,
    /// Garbage collection spares content touched within this period (default 1h).
    #[serde(default = "default_grace_period")]
    pub gcgraceperiod: String,
    /// Run garbage collection inside the server at the times of this cron
    /// schedule (off by default; for node-local storage that no separate
    /// job can reach).
    pub gcschedule: Option<String>,
    /// Run garbage collection inside the server this often, counted from its
    /// start; the older form of `gcschedule`, which it excludes.
    pub gcinterval: Option<String>,
    /// In-server collections also delete untagged manifests.
    #[serde(default)]
    pub gcdeleteuntagged: bool,
    /// In-server collections only report what they would delete.
    #[serde(default)]
    pub gcdryrun: bool,
    /// Client connections open at once; more are closed as they arrive (default 1000).
    #[serde(default = "default_max_connections")]
    pub maxconnections: u32,
    /// A connection with no request in flight is closed after this long (default 30s).
    #[serde(default = "default_idle_timeout")]
    pub idletimeout: String,
    /// A connection whose client moves no byte while a request waits on it
    /// is closed after this long (default 60s).
    #[serde(default = "default_stall_timeout")]
    pub stalltimeout: String,
    /// Upstream registries served by pull-through, chosen by the `ns` query parameter.
    #[serde(default)]
    pub mirrors: Vec<Mirror>,
    /// A local directory where upstream blobs are spooled while they are
    /// fetched (default: `berth-spool-<port>` in the system's temporary directory).
    pub spooldir: Option<PathBuf>,
    /// A cache of blobs on this node's disk in front of a remote driver.
    pub nodecache: Option<NodeCache>,
}

/// `berth.nodecache`: blobs served by this node kept on its local disk, so
/// that pulls on the node stop going to the bucket.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeCache {
    /// The cache directory (created if missing when the server opens the cache).
    pub path: PathBuf,
    /// The most bytes the cache holds.
    pub maxbytes: u64,
    /// Percent of `maxbytes` above which eviction starts (default 90).
    #[serde(default = "default_high_watermark")]
    pub highwatermark: u64,
    /// Percent of `maxbytes` eviction brings the cache down to (default 80).
    #[serde(default = "default_low_watermark")]
    pub lowwatermark: u64,
}

fn default_high_watermark() -> u64 {
    90
}

fn default_low_watermark() -> u64 {
    80
}

/// The node cache's settings, checked: watermarks in bytes.
#[derive(Debug, Clone)]
pub struct NodeCacheSettings {
    /// The cache directory, created when the cache is opened.
    pub path: PathBuf,
    /// The bound, `berth.nodecache.maxbytes`.
    pub max_bytes: u64,
    /// Eviction starts when the cache holds more than this.
    pub high_bytes: u64,
    /// Eviction stops once the cache holds no more than this.
    pub low_bytes: u64,
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

fn default_grace_period() -> String {
    "1h".to_owned()
}

impl Default for Berth {
    fn default() -> Self {
        Berth {
            manifestmaxbytes: default_manifest_max_bytes(),
            manifestcachebytes: default_manifest_cache_bytes(),
            anonymouspull: false,
            writenetworks: None,
            notificationqueuesize: default_queue_size(),
            gcgraceperiod: default_grace_period(),
            gcschedule: None,
            gcinterval: None,
            gcdeleteuntagged: false,
            gcdryrun: false,
            maxconnections: default_max_connections(),
            idletimeout: default_idle_timeout(),
            stalltimeout: default_stall_timeout(),
            nodecache: None,
            mirrors: Vec::new(),
            spooldir: None,
        }
    }
}

fn default_max_connections() -> u32 {
    ConnectionLimits::default().max_connections
}

fn default_idle_timeout() -> String {
    humantime::format_duration(ConnectionLimits::default().idle_timeout).to_string()
}

fn default_stall_timeout() -> String {
    humantime::format_duration(ConnectionLimits::default().stall_timeout).to_string()
}

fn default_queue_size() -> usize {
    10_000
}

fn default_manifest_max_bytes() -> u64 {
    4 * 1024 * 1024
}

fn default_manifest_cache_bytes() -> u64 {
    16 * 1024 * 1024
}

/// Settings resolved and checked, ready to run with.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The parsed file.
    pub config: Config,
    /// Address to listen on.
    pub addr: SocketAddr,
    /// The storage backend.
    pub storage: StorageSettings,
    /// Shutdown drain timeout.
    pub drain_timeout: Duration,
    /// Upload purge age and interval, when purging is on.
    pub purge: Option<(Duration, Duration)>,
    /// Address of the separate metrics listener, if any.
    pub debug_addr: Option<SocketAddr>,
    /// Notification endpoints, checked.
    pub endpoints: Vec<EndpointSettings>,
    /// Headers added to every response (`http.headers`), checked.
    pub headers: http::HeaderMap,
    /// Garbage collection's grace period (`berth.gcgraceperiod`).
    pub gc_grace_period: Duration,
    /// When the server collects garbage itself (`berth.gcschedule` or `berth.gcinterval`).
    pub gc_schedule: Option<Schedule>,
    /// Limits on client connections (`berth.maxconnections`, `idletimeout`, `stalltimeout`).
    pub connection_limits: ConnectionLimits,
    /// Where clients without credentials may push and delete from
    /// (`berth.writenetworks`); `None` is anywhere.
    pub write_networks: Option<Vec<Network>>,
    /// The node-local blob cache (`berth.nodecache`), when configured.
    pub node_cache: Option<NodeCacheSettings>,
    /// Pull-through upstreams (`proxy`, `berth.mirrors`), checked.
    pub pull_through: PullThrough,
}

/// The storage backend, checked.
#[derive(Debug, Clone)]
pub enum StorageSettings {
    /// A directory.
    Filesystem {
        /// Root of the layout.
        root: PathBuf,
    },
    /// A bucket (boxed: its settings are much larger than a path).
    S3(Box<S3Settings>),
    /// An Azure container.
    Azure(Box<AzureSettings>),
    /// A Google Cloud Storage bucket.
    Gcs(Box<GcsSettings>),
}

/// The Azure driver's settings, checked.
#[derive(Debug, Clone)]
pub struct AzureSettings {
    /// The account.
    pub account: String,
    /// The shared key, decoded; `None` means workload identity.
    pub key: Option<Vec<u8>>,
    /// The container.
    pub container: String,
    /// The service URL without a trailing slash, e.g.
    /// `https://account.blob.core.windows.net`.
    pub service_url: String,
    /// Blob name prefix without slashes at either end.
    pub root: String,
    /// Block size of uploads.
    pub chunk_size: u64,
    /// Whether blob GET/HEAD redirect to SAS URLs (needs the shared key).
    pub redirect: bool,
}

/// The GCS driver's settings, checked.
#[derive(Debug, Clone)]
pub struct GcsSettings {
    /// The bucket.
    pub bucket: String,
    /// The service account key, when one is configured.
    pub key: Option<crate::storage::gcs::ServiceAccountKey>,
    /// The JSON API endpoint without a trailing slash.
    pub endpoint: String,
    /// Object name prefix without slashes at either end.
    pub root: String,
    /// Part size of uploads.
    pub chunk_size: u64,
    /// Whether blob GET/HEAD redirect to signed URLs (needs the key).
    pub redirect: bool,
}

/// Size of the blocks Azure uploads are staged in.
pub const AZURE_CHUNK: u64 = 8 * 1024 * 1024;

/// Google Cloud Storage's JSON API.
pub const GCS_ENDPOINT: &str = "https://storage.googleapis.com";

/// GCS upload parts are multiples of this size (Distribution's rule for `chunksize`).
pub const GCS_CHUNK_UNIT: u64 = 256 * 1024;

/// The S3 driver's settings, checked.
#[derive(Debug, Clone)]
pub struct S3Settings {
    /// The configuration section.
    pub config: S3,
    /// Endpoint URL with its scheme, for S3-compatible servers.
    pub endpoint: Option<String>,
    /// Multipart part size.
    pub chunk_size: u64,
    /// Whether blob GET/HEAD redirect to pre-signed URLs.
    pub redirect: bool,
}

/// Smallest multipart part S3 accepts (but for the last).
pub const S3_MIN_CHUNK: u64 = 5 * 1024 * 1024;

/// A notification endpoint with its durations parsed.
#[derive(Debug, Clone)]
pub struct EndpointSettings {
    /// The endpoint's configuration.
    pub config: Endpoint,
    /// Time allowed per delivery.
    pub timeout: Duration,
    /// Consecutive failures before the retry delay doubles.
    pub threshold: u32,
    /// Delay before a retry.
    pub backoff: Duration,
    /// Headers sent with each delivery.
    pub headers: http::HeaderMap,
}

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
        if !["error", "warn", "info", "debug", "trace"].contains(&self.log.level.as_str()) {
            return Err(invalid(
                "log.level",
                format!(
                    "{:?} is not one of error, warn, info, debug, trace",
                    self.log.level
                ),
            ));
        }
        if !["text", "json"].contains(&self.log.formatter.as_str()) {
            return Err(invalid(
                "log.formatter",
                format!("{:?} is not one of text, json", self.log.formatter),
            ));
        }
        if let Some(net) = self.http.net.as_deref().filter(|n| *n != "tcp") {
            return Err(invalid(
                "http.net",
                format!("{net:?} is not supported; only tcp"),
            ));
        }
        let addr = parse_addr("http.addr", self.http.addr.as_deref().unwrap_or(":5000"))?;
        let debug_addr = match &self.http.debug {
            Some(debug) if debug.prometheus.enabled => match &debug.addr {
                Some(a) => Some(parse_addr("http.debug.addr", a)?),
                None => None,
            },
            _ => None,
        };
        if let Some(h) = &self.auth.htpasswd {
            check_readable("auth.htpasswd.path", Some(&h.path))?;
        }
        let endpoints = self.endpoints()?;
        let headers = header_map("http.headers", &self.http.headers)?;
        let drain_timeout = match &self.http.draintimeout {
            Some(d) => parse_duration("http.draintimeout", d)?,
            None => Duration::from_secs(30),
        };
        if let Some(tls) = &self.http.tls {
            check_readable("http.tls.certificate", tls.certificate.as_deref())?;
            check_readable("http.tls.key", tls.key.as_deref())?;
            if let Some(v) = tls
                .minimumtls
                .as_deref()
                .filter(|v| !["tls1.2", "tls1.3"].contains(v))
            {
                return Err(invalid(
                    "http.tls.minimumtls",
                    format!("{v:?} is not one of tls1.2, tls1.3"),
                ));
            }
            for (i, ca) in tls.clientcas.iter().enumerate() {
                check_readable(&format!("http.tls.clientcas[{i}]"), Some(ca))?;
            }
        }
        let storage = self.storage_settings()?;
        let purging = &self.storage.maintenance.uploadpurging;
        let purge = if purging.enabled {
            let age = parse_duration("storage.maintenance.uploadpurging.age", &purging.age)?;
            let interval = positive_duration(
                "storage.maintenance.uploadpurging.interval",
                &purging.interval,
            )?;
            Some((age, interval))
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
        let gc_grace_period = parse_duration("berth.gcgraceperiod", &self.berth.gcgraceperiod)?;
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
            pull_through,
            config: self,
            addr,
            storage,
            drain_timeout,
            purge,
            debug_addr,
            endpoints,
            headers,
            gc_grace_period,
            gc_schedule,
            connection_limits,
            write_networks,
            node_cache,
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
                interval,
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
            idle_timeout: positive_duration("berth.idletimeout", &self.berth.idletimeout)?,
            stall_timeout: positive_duration("berth.stalltimeout", &self.berth.stalltimeout)?,
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
            let headers = header_map(&key("headers"), &e.headers)?;
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
                Some(t) => parse_duration(&key("timeout"), t)?,
                None => Duration::from_secs(5),
            };
            let backoff = match &e.backoff {
                Some(b) => parse_duration(&key("backoff"), b)?,
                None => Duration::from_secs(1),
            };
            if timeout.is_zero() {
                return Err(invalid(&key("timeout"), "must be greater than zero"));
            }
            out.push(EndpointSettings {
                config: e.clone(),
                timeout,
                threshold: e.threshold.unwrap_or(10),
                backoff,
                headers,
            });
        }
        Ok(out)
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
    Ok(S3Settings {
        config: s3.clone(),
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
        Some(k) => Some(
            base64::engine::general_purpose::STANDARD
                .decode(k.trim())
                .map_err(|e| invalid("storage.azure.accountkey", format!("not base64: {e}")))?,
        ),
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
    use crate::storage::gcs::ServiceAccountKey;
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
fn http_url(key: &str, url: &str) -> Result<String, ConfigError> {
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

/// Parses Go-style durations such as `10s`, `1h30m`, `168h`.
pub fn parse_duration(key: &str, text: &str) -> Result<Duration, ConfigError> {
    humantime::parse_duration(text)
        .map_err(|e| invalid(key, format!("{text:?} is not a duration: {e}")))
}

/// A map of header names to lists of values (`http.headers`, an endpoint's
/// `headers`) as an HTTP header map; `key` names it in errors.
fn header_map(
    key: &str,
    headers: &BTreeMap<String, Vec<String>>,
) -> Result<http::HeaderMap, ConfigError> {
    let mut map = http::HeaderMap::new();
    for (name, values) in headers {
        let key = format!("{key}.{name}");
        let name = http::HeaderName::try_from(name.as_str())
            .map_err(|e| invalid(&key, format!("not a header name: {e}")))?;
        for value in values {
            let value = http::HeaderValue::try_from(value.as_str())
                .map_err(|e| invalid(&key, format!("{value:?} is not a header value: {e}")))?;
            map.append(name.clone(), value);
        }
    }
    Ok(map)
}

/// [`parse_duration`], refusing zero.
fn positive_duration(key: &str, text: &str) -> Result<Duration, ConfigError> {
    let duration = parse_duration(key, text)?;
    if duration.is_zero() {
        return Err(invalid(key, "must be greater than zero"));
    }
    Ok(duration)
}

fn check_readable(key: &str, path: Option<&Path>) -> Result<(), ConfigError> {
    let path = path.ok_or_else(|| invalid(key, "missing"))?;
    std::fs::metadata(path)
        .map(|_| ())
        .map_err(|e| invalid(key, format!("{}: {e}", path.display())))
}

/// Applies `REGISTRY_A_B_C=value` as `a.b.c: value` (all but
/// [`CONFIGURATION_PATH_ENV`]), returning each overridden dotted key with
/// the variable that set it.
fn apply_env(
    tree: &mut Value,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Vec<(String, String)>, ConfigError> {
    let mut applied = Vec::new();
    let mut vars: Vec<(String, String)> = env
        .into_iter()
        .filter(|(k, _)| k.starts_with(ENV_PREFIX) && k != CONFIGURATION_PATH_ENV)
        .collect();
    vars.sort();
    for (var, raw) in vars {
        let keys: Vec<String> = var[ENV_PREFIX.len()..]
            .split('_')
            .map(str::to_lowercase)
            .collect();
        if keys.iter().any(String::is_empty) {
            return Err(invalid(&var, "malformed override variable"));
        }
        let value: Value = serde_norway::from_str(&raw).unwrap_or(Value::String(raw.clone()));
        let value = if value.is_null() {
            Value::String(raw)
        } else {
            value
        };
        let mut node = &mut *tree;
        for (i, key) in keys.iter().enumerate() {
            let map = match node {
                Value::Mapping(m) => m,
                _ => {
                    return Err(invalid(
                        &keys[..i].join("."),
                        format!("cannot set {var}: not a section"),
                    ));
                }
            };
            let entry = map.entry(Value::String(key.clone())).or_insert(Value::Null);
            if i + 1 < keys.len() && entry.is_null() {
                *entry = Value::Mapping(Default::default());
            }
            node = entry;
        }
        *node = value;
        applied.push((keys.join("."), var));
    }
    Ok(applied)
}

/// `proxy`: Distribution's pull-through cache of one upstream.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Proxy {
    /// The upstream registry's URL.
    pub remoteurl: String,
    /// User name for the upstream.
    pub username: Option<String>,
    /// Password for the upstream.
    pub password: Option<String>,
    /// Cached content unused this long may be collected (default 168h).
    pub ttl: Option<String>,
}

/// One entry of `berth.mirrors`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mirror {
    /// The registry host (`host[:port]`) as image names spell it, or `_default`.
    pub host: String,
    /// The upstream URL (default `https://<host>`).
    pub remoteurl: Option<String>,
    /// A directory holding files `username` and `password`, read when used.
    pub credentialsdir: Option<PathBuf>,
    /// A cached tag is re-resolved upstream after this long (default 1m).
    pub tagttl: Option<String>,
}

/// The host `berth.mirrors` uses for "any ns not listed".
pub const DEFAULT_MIRROR: &str = "_default";

/// Distribution's default `proxy.ttl`.
const DEFAULT_PROXY_TTL: Duration = Duration::from_secs(168 * 3600);

/// Default `tagttl` of a mirror.
const DEFAULT_TAG_TTL: Duration = Duration::from_secs(60);

/// How a pull-through upstream authenticates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamCredentials {
    /// Anonymously.
    None,
    /// With a fixed user name and password (`proxy.username`, `proxy.password`).
    Fixed {
        /// The user name.
        username: String,
        /// The password.
        password: String,
    },
    /// With the files `username` and `password` of a directory, read when used.
    Dir(PathBuf),
}

/// One upstream, checked.
#[derive(Debug, Clone)]
pub struct UpstreamSettings {
    /// The upstream URL without a trailing slash; `None` for `_default`,
    /// where the request's `ns` decides (`https://<ns>`).
    pub url: Option<String>,
    /// How to authenticate.
    pub credentials: UpstreamCredentials,
    /// How long a resolved tag is served without asking the upstream again.
    pub tag_ttl: Duration,
}

/// Everything pull-through needs from the configuration.
#[derive(Debug, Clone, Default)]
pub struct PullThrough {
    /// `proxy`: the upstream of requests without `ns`.
    pub proxy: Option<UpstreamSettings>,
    /// `berth.mirrors` by host (`_default` included).
    pub mirrors: BTreeMap<String, UpstreamSettings>,
    /// Cached content unused this long may be collected (`proxy.ttl`).
    pub ttl: Duration,
    /// Where fetched blobs are spooled (`berth.spooldir`).
    pub spool_dir: PathBuf,
}

impl PullThrough {
    /// Whether any upstream is configured.
    pub fn enabled(&self) -> bool {
        self.proxy.is_some() || !self.mirrors.is_empty()
    }
}

/// Whether `host` is a registry host as image names spell it: DNS labels
/// (letters, digits, `-`, `.`), an optional `:port`.
pub fn is_registry_host(host: &str) -> bool {
    let (name, port) = match host.rsplit_once(':') {
        Some((name, port)) => (name, Some(port)),
        None => (host, None),
    };
    let name_ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    let port_ok = port.is_none_or(|p| {
        !p.is_empty()
            && p.bytes().all(|b| b.is_ascii_digit())
            && p.parse::<u16>().is_ok_and(|p| p > 0)
    });
    name_ok && port_ok
}

impl Config {
    /// `proxy`, `berth.mirrors` and `berth.spooldir`, checked.
    fn pull_through(&self, port: u16) -> Result<PullThrough, ConfigError> {
        let ttl = match self.proxy.as_ref().and_then(|p| p.ttl.as_deref()) {
            Some(ttl) => positive_duration("proxy.ttl", ttl)?,
            None => DEFAULT_PROXY_TTL,
        };
        let proxy = match &self.proxy {
            None => None,
            Some(p) => {
                let credentials = match (&p.username, &p.password) {
                    (None, None) => UpstreamCredentials::None,
                    (Some(username), Some(password)) => UpstreamCredentials::Fixed {
                        username: username.clone(),
                        password: password.clone(),
                    },
                    _ => {
                        return Err(invalid(
                            "proxy.username",
                            "set both proxy.username and proxy.password, or neither",
                        ));
                    }
                };
                Some(UpstreamSettings {
                    url: Some(http_url("proxy.remoteurl", &p.remoteurl)?),
                    credentials,
                    tag_ttl: DEFAULT_TAG_TTL,
                })
            }
        };
        let mut mirrors = BTreeMap::new();
        for (i, m) in self.berth.mirrors.iter().enumerate() {
            let key = |field: &str| format!("berth.mirrors[{i}].{field}");
            if m.host != DEFAULT_MIRROR && !is_registry_host(&m.host) {
                return Err(invalid(
                    &key("host"),
                    format!(
                        "{:?} is not a registry host[:port] nor {DEFAULT_MIRROR}",
                        m.host
                    ),
                ));
            }
            let url = match (&m.remoteurl, m.host.as_str()) {
                (Some(url), _) => Some(http_url(&key("remoteurl"), url)?),
                (None, DEFAULT_MIRROR) => None,
                (None, host) => Some(default_upstream_url(host)),
            };
            let credentials = match &m.credentialsdir {
                Some(dir) => {
                    if !dir.is_dir() {
                        return Err(invalid(
                            &key("credentialsdir"),
                            format!("{} is not a directory", dir.display()),
                        ));
                    }
                    UpstreamCredentials::Dir(dir.clone())
                }
                None => UpstreamCredentials::None,
            };
            let tag_ttl = match &m.tagttl {
                Some(t) => parse_duration(&key("tagttl"), t)?,
                None => DEFAULT_TAG_TTL,
            };
            let settings = UpstreamSettings {
                url,
                credentials,
                tag_ttl,
            };
            if mirrors.insert(m.host.clone(), settings).is_some() {
                return Err(invalid(
                    &key("host"),
                    format!("{} is listed more than once", m.host),
                ));
            }
        }
        let spool_dir = self
            .berth
            .spooldir
            .clone()
            .unwrap_or_else(|| std::env::temp_dir().join(format!("berth-spool-{port}")));
        if spool_dir.as_os_str().is_empty() {
            return Err(invalid("berth.spooldir", "must not be empty"));
        }
        Ok(PullThrough {
            proxy,
            mirrors,
            ttl,
            spool_dir,
        })
    }
}

/// The upstream URL of a registry host: `https://<host>`, but Docker Hub's
/// registry for `docker.io`.
pub fn default_upstream_url(host: &str) -> String {
    match host {
        "docker.io" | "index.docker.io" => "https://registry-1.docker.io".to_owned(),
        host => format!("https://{host}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::properties::{self, SOME};
    use proptest::prelude::*;

    const BASIC: &str = "version: 0.1\nhttp:\n  addr: 127.0.0.1:5001\nstorage:\n  filesystem:\n    rootdirectory: /tmp/r\n  delete:\n    enabled: true\n";

    fn parse(text: &str, env: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        Config::parse(
            text,
            "test.yml",
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
    }

    /// The error `text` with overrides `env` is refused with.
    fn error(text: &str, env: &[(&str, &str)]) -> String {
        match parse(text, env) {
            Ok(_) => panic!("accepted:\n{text}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn development_settings_pass_the_checks_a_file_must_pass() {
        let s = Config::development([]).unwrap();
        assert_eq!(s.addr, "127.0.0.1:5000".parse().unwrap());
        assert!(
            matches!(&s.storage, StorageSettings::Filesystem { root } if root == Path::new("./data"))
        );
        assert!(s.config.storage.delete.enabled);
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
        assert!(s.config.storage.delete.enabled);
        assert_eq!(
            s.purge,
            Some((
                Duration::from_secs(168 * 3600),
                Duration::from_secs(24 * 3600)
            ))
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
    fn environment_overrides() {
        let s = parse(
            BASIC,
            &[
                ("REGISTRY_HTTP_ADDR", "127.0.0.1:6000"),
                ("REGISTRY_STORAGE_DELETE_ENABLED", "false"),
                ("REGISTRY_STORAGE_MAINTENANCE_READONLY_ENABLED", "true"),
                ("UNRELATED", "x"),
            ],
        )
        .unwrap();
        assert_eq!(s.addr.port(), 6000);
        assert!(!s.config.storage.delete.enabled);
        assert!(s.config.storage.maintenance.readonly.enabled);
        let err = error(BASIC, &[("REGISTRY_HTTP_ADR", "x")]);
        assert!(err.contains("REGISTRY_HTTP_ADR"), "{err}");
        // The variable naming the file is not an override.
        parse(
            BASIC,
            &[(CONFIGURATION_PATH_ENV, "/etc/registry/config.yml")],
        )
        .unwrap();
    }

    #[test]
    fn pull_through_settings_are_checked_and_resolved() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "{BASIC}proxy:\n  remoteurl: https://registry-1.docker.io/\n  ttl: 24h\nberth:\n  spooldir: /var/spool/berth\n  mirrors:\n    - host: docker.io\n    - host: registry.example.com:5000\n      remoteurl: http://127.0.0.1:5001\n      credentialsdir: {}\n      tagttl: 30s\n    - host: _default\n",
            dir.path().display()
        );
        let s = parse(&text, &[]).unwrap();
        let p = &s.pull_through;
        assert_eq!(p.ttl, Duration::from_secs(24 * 3600));
        assert_eq!(p.spool_dir, PathBuf::from("/var/spool/berth"));
        let proxy = p.proxy.as_ref().unwrap();
        assert_eq!(proxy.url.as_deref(), Some("https://registry-1.docker.io"));
        assert_eq!(proxy.credentials, UpstreamCredentials::None);
        assert_eq!(
            p.mirrors["docker.io"].url.as_deref(),
            Some("https://registry-1.docker.io")
        );
        assert_eq!(p.mirrors["docker.io"].tag_ttl, Duration::from_secs(60));
        let local = &p.mirrors["registry.example.com:5000"];
        assert_eq!(local.url.as_deref(), Some("http://127.0.0.1:5001"));
        assert_eq!(local.tag_ttl, Duration::from_secs(30));
        assert_eq!(
            local.credentials,
            UpstreamCredentials::Dir(dir.path().to_owned())
        );
        assert_eq!(p.mirrors["_default"].url, None);
        // Without the keys: nothing is mirrored; the spool is per port.
        let s = parse(BASIC, &[]).unwrap();
        assert!(!s.pull_through.enabled());
        assert!(
            s.pull_through
                .spool_dir
                .ends_with(format!("berth-spool-{}", s.addr.port()))
        );
        for (from, to, key) in [
            (
                "https://registry-1.docker.io/",
                "ftp://x",
                "proxy.remoteurl",
            ),
            ("ttl: 24h", "ttl: soon", "proxy.ttl"),
            ("ttl: 24h", "username: alice", "proxy.username"),
            (
                "http://127.0.0.1:5001",
                "127.0.0.1:5001",
                "berth.mirrors[1].remoteurl",
            ),
            ("tagttl: 30s", "tagttl: 30", "berth.mirrors[1].tagttl"),
            (
                "host: docker.io",
                "host: registry.example.com:5000",
                "berth.mirrors[1].host",
            ),
            ("host: docker.io", "host: _default", "berth.mirrors[2].host"),
            (
                "host: docker.io",
                "host: docker.io/library",
                "berth.mirrors[0].host",
            ),
            (
                "host: docker.io",
                "host: \"docker.io:0\"",
                "berth.mirrors[0].host",
            ),
            (
                "credentialsdir: /",
                "credentialsdir: /nonexistent/",
                "berth.mirrors[1].credentialsdir",
            ),
        ] {
            assert!(text.contains(from), "{from}");
            let err = error(&text.replacen(from, to, 1), &[]);
            assert!(err.starts_with(key), "{to}: {err}");
        }
    }

    #[test]
    fn registry_hosts() {
        for good in [
            "docker.io",
            "ghcr.io",
            "localhost:5000",
            "10.0.0.1:5000",
            "a-b.c",
        ] {
            assert!(is_registry_host(good), "{good}");
        }
        for bad in [
            "",
            "_default",
            "a/b",
            "-a.io",
            "a..io",
            "a.io:",
            "a.io:99999",
            "a.io:x",
            "../x",
        ] {
            assert!(!is_registry_host(bad), "{bad}");
        }
    }

    #[test]
    fn response_headers_are_checked() {
        let text = BASIC.replace(
            "http:\n",
            "http:\n  headers:\n    X-Content-Type-Options: [nosniff]\n",
        );
        let s = parse(&text, &[]).unwrap();
        assert_eq!(s.headers["x-content-type-options"], "nosniff");
        let err = error(&text.replace("X-Content-Type-Options", "Bad Name"), &[]);
        assert!(err.starts_with("http.headers.Bad Name"), "{err}");
        let err = error(&text.replace("[nosniff]", "[\"a\\nb\"]"), &[]);
        assert!(
            err.starts_with("http.headers.X-Content-Type-Options"),
            "{err}"
        );
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
        assert_eq!(s3.config.accesskey.as_deref(), Some("12345"));
        assert_eq!(s3.config.secretkey.as_deref(), Some("true"));
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
        assert!(s.config.berth.gcdryrun);
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
        properties::check(
            "any text is a configuration, or an error naming its key",
            SOME,
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
        properties::check(
            "any value at any key is taken, or refused naming the key",
            SOME,
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
