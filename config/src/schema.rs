//! The configuration file's types: a compatible subset of CNCF
//! Distribution's `config.yml`, plus Berth's own `berth:` section.
//!
//! The types read a file and write one. Every section refuses unknown keys,
//! so a typo never silently falls back to a default; key names and defaults
//! are Distribution's. Fields left at their defaults are not written, so a
//! rendered file holds only what its author set.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_norway::Value;

use crate::choices::{LogFormatter, LogLevel, TlsVersion};
use crate::duration::GoDuration;
use crate::headers::Headers;
use crate::secret::Secret;

/// The whole configuration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Config format version; Distribution's is `0.1`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<Value>,
    /// Logging.
    #[serde(default, skip_serializing_if = "is_default")]
    pub log: Log,
    /// HTTP listener.
    #[serde(default, skip_serializing_if = "is_default")]
    pub http: Http,
    /// Storage backend and its maintenance.
    #[serde(default, skip_serializing_if = "is_default")]
    pub storage: Storage,
    /// Health checks (Distribution's `health` section).
    #[serde(default, skip_serializing_if = "is_default")]
    pub health: Health,
    /// Authentication.
    #[serde(default, skip_serializing_if = "is_default")]
    pub auth: Auth,
    /// Webhook notifications.
    #[serde(default, skip_serializing_if = "is_default")]
    pub notifications: Notifications,
    /// Berth's own settings.
    #[serde(default, skip_serializing_if = "is_default")]
    pub berth: Berth,
    /// Distribution's pull-through cache of one upstream, for requests without `ns`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy: Option<Proxy>,
}

/// `log`: level, format, fields and access log.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Log {
    /// `error`, `warn`, `info` (default), `debug` or `trace`.
    #[serde(default, skip_serializing_if = "is_default")]
    pub level: LogLevel,
    /// `text` (default) or `json`.
    #[serde(default, skip_serializing_if = "is_default")]
    pub formatter: LogFormatter,
    /// Static fields added to every log line.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub fields: BTreeMap<String, Value>,
    /// Access log settings.
    #[serde(default, skip_serializing_if = "is_default")]
    pub accesslog: AccessLog,
}

/// `log.accesslog`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessLog {
    /// Turns the per-request access log off.
    #[serde(default, skip_serializing_if = "is_false")]
    pub disabled: bool,
}

/// `http`: where and how to listen.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Http {
    /// Listen address, `host:port` or `:port` (all interfaces). Default `:5000`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub addr: Option<String>,
    /// Network; only `tcp` is supported.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub net: Option<String>,
    /// Externally visible host; accepted for compatibility (Berth answers relative URLs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Upload state secret; accepted for compatibility (upload state lives in storage).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<Secret<String>>,
    /// Accepted for compatibility; Berth always answers relative URLs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub relativeurls: Option<bool>,
    /// How long to let in-flight requests finish on shutdown (default 30s).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub draintimeout: Option<GoDuration>,
    /// Extra headers added to every response.
    #[serde(default, skip_serializing_if = "Headers::is_empty")]
    pub headers: Headers,
    /// TLS, enabled when set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<Tls>,
    /// HTTP/2 settings.
    #[serde(default, skip_serializing_if = "is_default")]
    pub http2: Http2,
    /// A second listener for `/metrics` (Distribution's debug server).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub debug: Option<Debug>,
}

/// `http.debug`: where `/metrics` is also served.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Debug {
    /// Listen address of the debug server.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub addr: Option<String>,
    /// Prometheus settings.
    #[serde(default, skip_serializing_if = "is_default")]
    pub prometheus: Prometheus,
}

/// `http.debug.prometheus`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Prometheus {
    /// Serve metrics on the debug server (default true).
    #[serde(default = "yes", skip_serializing_if = "is_yes")]
    pub enabled: bool,
    /// Path of the metrics endpoint (default `/metrics`).
    #[serde(
        default = "default_metrics_path",
        skip_serializing_if = "is_default_metrics_path"
    )]
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
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Auth {
    /// Basic authentication against an htpasswd file of bcrypt entries.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub htpasswd: Option<Htpasswd>,
}

/// `auth.htpasswd`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Htpasswd {
    /// Realm named in the `WWW-Authenticate` challenge.
    #[serde(default = "default_realm", skip_serializing_if = "is_default_realm")]
    pub realm: String,
    /// The htpasswd file; re-read when it changes.
    pub path: PathBuf,
}

fn default_realm() -> String {
    "basic-realm".to_owned()
}

/// `notifications`: webhook endpoints.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Notifications {
    /// The endpoints events are sent to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<Endpoint>,
}

/// `notifications.endpoints[]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    /// A name for logs and metrics.
    pub name: String,
    /// URL events are POSTed to.
    pub url: String,
    /// Skip this endpoint.
    #[serde(default, skip_serializing_if = "is_false")]
    pub disabled: bool,
    /// Headers added to each delivery.
    #[serde(default, skip_serializing_if = "Headers::is_empty")]
    pub headers: Headers,
    /// Time allowed for one delivery (default 5s).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<GoDuration>,
    /// Consecutive failures after which the retry delay starts doubling (default 10).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threshold: Option<u32>,
    /// Delay before retrying a failed delivery (default 1s).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backoff: Option<GoDuration>,
    /// Media types whose events are not sent (Distribution's older key).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ignoredmediatypes: Vec<String>,
    /// Events not sent.
    #[serde(default, skip_serializing_if = "is_default")]
    pub ignore: Ignore,
}

/// `notifications.endpoints[].ignore`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ignore {
    /// Media types whose events are not sent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mediatypes: Vec<String>,
    /// Actions (`push`, `pull`, `mount`, `delete`) whose events are not sent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<String>,
}

/// `http.tls`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    /// PEM certificate chain file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certificate: Option<PathBuf>,
    /// PEM private key file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
    /// Lowest TLS version: `tls1.2` (default) or `tls1.3`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub minimumtls: Option<TlsVersion>,
    /// PEM files of CAs whose client certificates are required (mutual TLS).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub clientcas: Vec<PathBuf>,
}

/// `http.http2`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Http2 {
    /// Serve HTTP/1.1 only.
    #[serde(default, skip_serializing_if = "is_false")]
    pub disabled: bool,
}

/// `storage`: exactly one driver, plus delete, maintenance and cache settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Storage {
    /// The filesystem driver.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filesystem: Option<Filesystem>,
    /// The S3 driver.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3>,
    /// The Azure Blob Storage driver.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub azure: Option<Azure>,
    /// The Google Cloud Storage driver.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gcs: Option<Gcs>,
    /// Redirects of blob downloads to the backend (S3 pre-signed URLs,
    /// Azure SAS URLs, GCS signed URLs).
    #[serde(default, skip_serializing_if = "is_default")]
    pub redirect: Redirect,
    /// Deletes.
    #[serde(default, skip_serializing_if = "is_default")]
    pub delete: Enabled,
    /// Upload purging and read-only mode.
    #[serde(default, skip_serializing_if = "is_default")]
    pub maintenance: Maintenance,
    /// Distribution's descriptor cache; accepted and not needed (Berth reads links directly).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache: Option<BTreeMap<String, Value>>,
}

/// `storage.filesystem`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filesystem {
    /// Root directory of the layout (default `/var/lib/registry`). Always
    /// written, even at its default: where content lives is what a reader
    /// of the file (or a tool that relocates it) must never have to infer.
    #[serde(default = "default_rootdirectory")]
    pub rootdirectory: PathBuf,
    /// Distribution's thread limit; accepted for compatibility.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub maxthreads: Option<u64>,
}

fn default_rootdirectory() -> PathBuf {
    PathBuf::from("/var/lib/registry")
}

/// `storage.s3`: a bucket of AWS S3 or an S3-compatible server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3 {
    /// The bucket.
    #[serde(deserialize_with = "scalar_string")]
    pub bucket: String,
    /// The region (default: the AWS environment's, else `us-east-1`).
    #[serde(
        default,
        deserialize_with = "optional_scalar_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub region: Option<String>,
    /// Endpoint of an S3-compatible server, `host:port` or a URL.
    #[serde(
        default,
        deserialize_with = "optional_scalar_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub regionendpoint: Option<String>,
    /// Address buckets by path (`endpoint/bucket/key`), as most S3-compatible servers need.
    #[serde(default, skip_serializing_if = "is_false")]
    pub forcepathstyle: bool,
    /// Access key; without it the standard AWS credential chain is used.
    #[serde(
        default,
        deserialize_with = "optional_scalar_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub accesskey: Option<String>,
    /// Secret key, with `accesskey`.
    #[serde(
        default,
        deserialize_with = "optional_scalar_secret",
        skip_serializing_if = "Option::is_none"
    )]
    pub secretkey: Option<Secret<String>>,
    /// Prefix of every key in the bucket.
    #[serde(
        default,
        deserialize_with = "optional_scalar_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub rootdirectory: Option<String>,
    /// Use https for an endpoint given without a scheme (default true).
    #[serde(default = "yes", skip_serializing_if = "is_yes")]
    pub secure: bool,
    /// Skipping TLS verification is not supported; must be false.
    #[serde(default, skip_serializing_if = "is_false")]
    pub skipverify: bool,
    /// Signature v4 (the only one supported); must be true.
    #[serde(default = "yes", skip_serializing_if = "is_yes")]
    pub v4auth: bool,
    /// Multipart part size in bytes (default 10 MiB, at least 5 MiB).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chunksize: Option<u64>,
    /// Server-side encryption of stored objects.
    #[serde(default, skip_serializing_if = "is_false")]
    pub encrypt: bool,
    /// KMS key id for server-side encryption (with `encrypt`).
    #[serde(
        default,
        deserialize_with = "optional_scalar_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub keyid: Option<String>,
    /// Storage class of stored objects (default `STANDARD`).
    #[serde(
        default,
        deserialize_with = "optional_scalar_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub storageclass: Option<String>,
}

/// `storage.azure`: a container of an Azure storage account (or Azurite).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Azure {
    /// The storage account.
    #[serde(deserialize_with = "scalar_string")]
    pub accountname: String,
    /// The account's shared key (base64). Without it, Berth uses Azure
    /// workload identity (`AZURE_CLIENT_ID`, `AZURE_TENANT_ID`,
    /// `AZURE_FEDERATED_TOKEN_FILE`) and cannot sign redirect URLs.
    #[serde(
        default,
        deserialize_with = "optional_scalar_secret",
        skip_serializing_if = "Option::is_none"
    )]
    pub accountkey: Option<Secret<String>>,
    /// The container.
    #[serde(deserialize_with = "scalar_string")]
    pub container: String,
    /// Domain of the service (default `core.windows.net`): the service is
    /// `https://<accountname>.blob.<realm>`.
    #[serde(
        default,
        deserialize_with = "optional_scalar_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub realm: Option<String>,
    /// The service URL (Distribution v3), overriding `realm`; for Azurite
    /// `http://127.0.0.1:10000/<accountname>`.
    #[serde(
        default,
        deserialize_with = "optional_scalar_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub serviceurl: Option<String>,
    /// Prefix of every blob name in the container.
    #[serde(
        default,
        deserialize_with = "optional_scalar_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub rootdirectory: Option<String>,
    /// Distribution v3's credentials section: `type: shared_key` (with
    /// `accountkey`) or `default_credentials` (workload identity).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credentials: Option<AzureCredentials>,
    /// Distribution v3's copy polling settings; accepted for compatibility.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub copy_status_poll_max_retry: Option<u64>,
    /// Accepted for compatibility (see `copy_status_poll_max_retry`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub copy_status_poll_delay: Option<GoDuration>,
}

/// `storage.azure.credentials` (Distribution v3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AzureCredentials {
    /// `shared_key` or `default_credentials`; `client_secret` is not supported.
    #[serde(rename = "type", deserialize_with = "scalar_string")]
    pub kind: String,
    /// Accepted for compatibility with `client_secret`, which is refused.
    #[serde(
        default,
        deserialize_with = "optional_scalar_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub clientid: Option<String>,
    /// As `clientid`.
    #[serde(
        default,
        deserialize_with = "optional_scalar_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub tenantid: Option<String>,
    /// As `clientid`.
    #[serde(
        default,
        deserialize_with = "optional_scalar_secret",
        skip_serializing_if = "Option::is_none"
    )]
    pub secret: Option<Secret<String>>,
}

/// `storage.gcs`: a Google Cloud Storage bucket (or fake-gcs-server).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gcs {
    /// The bucket.
    #[serde(deserialize_with = "scalar_string")]
    pub bucket: String,
    /// A service account's JSON key file. Without it (and without
    /// `credentials`), Berth takes tokens from the metadata server (GKE
    /// workload identity) and cannot sign redirect URLs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keyfile: Option<PathBuf>,
    /// The service account key inline, as the fields of the JSON key file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credentials: Option<Secret<BTreeMap<String, Value>>>,
    /// Prefix of every object name in the bucket.
    #[serde(
        default,
        deserialize_with = "optional_scalar_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub rootdirectory: Option<String>,
    /// Size of the parts an upload is sent in (default 16 MiB, a multiple of 256 KiB).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chunksize: Option<u64>,
    /// Berth's own: the JSON API endpoint, for fake-gcs-server or a proxy
    /// (default `https://storage.googleapis.com`); requests go without
    /// credentials when no key is given.
    #[serde(
        default,
        deserialize_with = "optional_scalar_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub endpoint: Option<String>,
    /// Accepted for compatibility with Distribution.
    #[serde(
        default,
        deserialize_with = "optional_scalar_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub useragent: Option<String>,
    /// Accepted for compatibility with Distribution.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub maxconcurrency: Option<u64>,
}

/// `storage.redirect`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Redirect {
    /// Serve blob bytes through the registry instead of redirecting clients to the backend.
    #[serde(default, skip_serializing_if = "is_false")]
    pub disable: bool,
}

/// A scalar as the string Go's YAML decoder makes of it; anything else back.
fn scalar(value: Value) -> Result<String, Value> {
    match value {
        Value::String(s) => Ok(s),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        other => Err(other),
    }
}

/// Reads a string that YAML (or an environment override) may have typed as
/// a number or boolean: a numeric access key is still a string.
fn scalar_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    scalar(Value::deserialize(d)?)
        .map_err(|other| serde::de::Error::custom(format!("expected a string, got {other:?}")))
}

fn optional_scalar_string<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<String>, D::Error> {
    scalar_string(d).map(Some)
}

/// Reads a secret as [`scalar_string`] reads a string.
fn optional_scalar_secret<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Secret<String>>, D::Error> {
    // The error does not show what was given: it may be the secret.
    scalar(Value::deserialize(d)?)
        .map(|s| Some(Secret::new(s)))
        .map_err(|_| serde::de::Error::custom("expected a string"))
}

/// A section with a single `enabled` switch.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Enabled {
    /// Whether the feature is on.
    #[serde(default, skip_serializing_if = "is_false")]
    pub enabled: bool,
}

/// `storage.maintenance`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Maintenance {
    /// Removal of abandoned upload sessions.
    #[serde(default, skip_serializing_if = "is_default")]
    pub uploadpurging: UploadPurging,
    /// Refuse writes while serving reads.
    #[serde(default, skip_serializing_if = "is_default")]
    pub readonly: Enabled,
}

/// `storage.maintenance.uploadpurging`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UploadPurging {
    /// Whether to purge (default true).
    #[serde(default = "yes", skip_serializing_if = "is_yes")]
    pub enabled: bool,
    /// Age past which an upload is purged (default 168h).
    #[serde(
        default = "default_purge_age",
        skip_serializing_if = "is_default_purge_age"
    )]
    pub age: GoDuration,
    /// How often to look (default 24h).
    #[serde(
        default = "default_purge_interval",
        skip_serializing_if = "is_default_purge_interval"
    )]
    pub interval: GoDuration,
    /// Only log what would be purged.
    #[serde(default, skip_serializing_if = "is_false")]
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

fn default_purge_age() -> GoDuration {
    GoDuration(Duration::from_secs(168 * 3600))
}

fn default_purge_interval() -> GoDuration {
    GoDuration(Duration::from_secs(24 * 3600))
}

/// `health`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Health {
    /// Storage checks behind `/readyz`.
    #[serde(default, skip_serializing_if = "is_default")]
    pub storagedriver: StorageHealth,
}

/// `health.storagedriver`: whether `/readyz` checks storage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageHealth {
    /// Check storage on `/readyz` (default true).
    #[serde(default = "yes", skip_serializing_if = "is_yes")]
    pub enabled: bool,
    /// Accepted for compatibility: Berth checks on each `/readyz` request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval: Option<GoDuration>,
    /// Accepted for compatibility.
    #[serde(skip_serializing_if = "Option::is_none")]
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Berth {
    /// Largest manifest accepted on push, in bytes (default 4 MiB).
    #[serde(
        default = "default_manifest_max_bytes",
        skip_serializing_if = "is_default_manifest_max_bytes"
    )]
    pub manifestmaxbytes: u64,
    /// Bytes of manifests kept in memory by digest, for GETs (default 16 MiB; 0 turns it off).
    #[serde(
        default = "default_manifest_cache_bytes",
        skip_serializing_if = "is_default_manifest_cache_bytes"
    )]
    pub manifestcachebytes: u64,
    /// With `auth`, let clients without credentials pull (GET and HEAD).
    #[serde(default, skip_serializing_if = "is_false")]
    pub anonymouspull: bool,
    /// Without `auth`, accept pushes and deletes only from clients in these
    /// address ranges (CIDR); unset accepts them from anywhere.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub writenetworks: Option<Vec<String>>,
    /// Events queued per notification endpoint before the oldest are dropped (default 10000).
    #[serde(
        default = "default_queue_size",
        skip_serializing_if = "is_default_queue_size"
    )]
    pub notificationqueuesize: usize,
    /// Garbage collection spares content touched within this period (default 1h).
    #[serde(
        default = "default_grace_period",
        skip_serializing_if = "is_default_grace_period"
    )]
    pub gcgraceperiod: GoDuration,
    /// Run garbage collection inside the server at the times of this cron
    /// schedule (off by default; for node-local storage that no separate
    /// job can reach).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gcschedule: Option<String>,
    /// Run garbage collection inside the server this often, counted from its
    /// start; the older form of `gcschedule`, which it excludes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gcinterval: Option<GoDuration>,
    /// In-server collections also delete untagged manifests.
    #[serde(default, skip_serializing_if = "is_false")]
    pub gcdeleteuntagged: bool,
    /// In-server collections only report what they would delete.
    #[serde(default, skip_serializing_if = "is_false")]
    pub gcdryrun: bool,
    /// Client connections open at once; more are closed as they arrive (default 1000).
    #[serde(
        default = "default_max_connections",
        skip_serializing_if = "is_default_max_connections"
    )]
    pub maxconnections: u32,
    /// A connection with no request in flight is closed after this long (default 30s).
    #[serde(
        default = "default_idle_timeout",
        skip_serializing_if = "is_default_idle_timeout"
    )]
    pub idletimeout: GoDuration,
    /// A connection whose client moves no byte while a request waits on it
    /// is closed after this long (default 60s).
    #[serde(
        default = "default_stall_timeout",
        skip_serializing_if = "is_default_stall_timeout"
    )]
    pub stalltimeout: GoDuration,
    /// Upstream registries served by pull-through, chosen by the `ns` query parameter.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mirrors: Vec<Mirror>,
    /// A local directory where upstream blobs are spooled while they are
    /// fetched (default: `berth-spool-<port>` in the system's temporary directory).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spooldir: Option<PathBuf>,
    /// A cache of blobs on this node's disk in front of a remote driver.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nodecache: Option<NodeCache>,
}

/// `berth.nodecache`: blobs served by this node kept on its local disk, so
/// that pulls on the node stop going to the bucket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeCache {
    /// The cache directory (created if missing when the server opens the cache).
    pub path: PathBuf,
    /// The most bytes the cache holds.
    pub maxbytes: u64,
    /// Percent of `maxbytes` above which eviction starts (default 90).
    #[serde(
        default = "default_high_watermark",
        skip_serializing_if = "is_default_high_watermark"
    )]
    pub highwatermark: u64,
    /// Percent of `maxbytes` eviction brings the cache down to (default 80).
    #[serde(
        default = "default_low_watermark",
        skip_serializing_if = "is_default_low_watermark"
    )]
    pub lowwatermark: u64,
}

fn default_high_watermark() -> u64 {
    90
}

fn default_low_watermark() -> u64 {
    80
}

fn default_grace_period() -> GoDuration {
    GoDuration(Duration::from_secs(3600))
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
    crate::settings::ConnectionLimits::default().max_connections
}

fn default_idle_timeout() -> GoDuration {
    GoDuration(crate::settings::ConnectionLimits::default().idle_timeout)
}

fn default_stall_timeout() -> GoDuration {
    GoDuration(crate::settings::ConnectionLimits::default().stall_timeout)
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

/// `proxy`: Distribution's pull-through cache of one upstream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Proxy {
    /// The upstream registry's URL.
    pub remoteurl: String,
    /// User name for the upstream.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Password for the upstream.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret<String>>,
    /// Cached content unused this long may be collected (default 168h).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl: Option<GoDuration>,
}

/// One entry of `berth.mirrors`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mirror {
    /// The registry host (`host[:port]`) as image names spell it, or `_default`.
    pub host: String,
    /// The upstream URL (default `https://<host>`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remoteurl: Option<String>,
    /// A directory holding files `username` and `password`, read when used.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credentialsdir: Option<PathBuf>,
    /// A cached tag is re-resolved upstream after this long (default 1m).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tagttl: Option<GoDuration>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

impl Filesystem {
    /// The filesystem driver rooted at `rootdirectory`.
    pub fn new(rootdirectory: impl Into<PathBuf>) -> Filesystem {
        Filesystem {
            rootdirectory: rootdirectory.into(),
            maxthreads: None,
        }
    }
}

impl S3 {
    /// The S3 driver for `bucket` in `region`, every other key at its default.
    pub fn new(bucket: impl Into<String>, region: impl Into<String>) -> S3 {
        S3 {
            bucket: bucket.into(),
            region: Some(region.into()),
            regionendpoint: None,
            forcepathstyle: false,
            accesskey: None,
            secretkey: None,
            rootdirectory: None,
            secure: true,
            skipverify: false,
            v4auth: true,
            chunksize: None,
            encrypt: false,
            keyid: None,
            storageclass: None,
        }
    }
}

impl Azure {
    /// The Azure driver for `container` of `accountname`, every other key
    /// at its default.
    pub fn new(accountname: impl Into<String>, container: impl Into<String>) -> Azure {
        Azure {
            accountname: accountname.into(),
            accountkey: None,
            container: container.into(),
            realm: None,
            serviceurl: None,
            rootdirectory: None,
            credentials: None,
            copy_status_poll_max_retry: None,
            copy_status_poll_delay: None,
        }
    }
}

impl Gcs {
    /// The GCS driver for `bucket`, every other key at its default.
    pub fn new(bucket: impl Into<String>) -> Gcs {
        Gcs {
            bucket: bucket.into(),
            keyfile: None,
            credentials: None,
            rootdirectory: None,
            chunksize: None,
            endpoint: None,
            useragent: None,
            maxconcurrency: None,
        }
    }
}

impl Config {
    /// A file of Distribution's format version (`0.1`), every section at
    /// its default.
    pub fn versioned() -> Config {
        Config {
            version: Some(Value::Number(0.1.into())),
            ..Config::default()
        }
    }
}

/// Defines `is_<default>` for each default function: whether a value is the
/// default, and so left out of a written file.
macro_rules! is_default_of {
    ($($is:ident => $default:ident: $ty:ty),* $(,)?) => {
        $(fn $is(value: &$ty) -> bool {
            *value == $default()
        })*
    };
}

is_default_of! {
    is_yes => yes: bool,
    is_default_metrics_path => default_metrics_path: String,
    is_default_realm => default_realm: String,
    is_default_purge_age => default_purge_age: GoDuration,
    is_default_purge_interval => default_purge_interval: GoDuration,
    is_default_manifest_max_bytes => default_manifest_max_bytes: u64,
    is_default_manifest_cache_bytes => default_manifest_cache_bytes: u64,
    is_default_queue_size => default_queue_size: usize,
    is_default_grace_period => default_grace_period: GoDuration,
    is_default_max_connections => default_max_connections: u32,
    is_default_idle_timeout => default_idle_timeout: GoDuration,
    is_default_stall_timeout => default_stall_timeout: GoDuration,
    is_default_high_watermark => default_high_watermark: u64,
    is_default_low_watermark => default_low_watermark: u64,
}

#[cfg(test)]
mod tests {
    use crate::test_support::parse;
    use crate::*;

    #[test]
    fn a_config_written_reads_back_to_the_same_settings() {
        let text = "\
version: 0.1
log: {level: debug, formatter: json, accesslog: {disabled: true}}
http:
  addr: 127.0.0.1:5003
  draintimeout: 1m30s
  headers: {X-Content-Type-Options: [nosniff]}
  debug: {addr: 127.0.0.1:5004}
storage:
  s3: {bucket: b, region: eu-west-1, regionendpoint: 'http://127.0.0.1:9000', forcepathstyle: true}
  redirect: {disable: true}
  delete: {enabled: true}
  maintenance: {uploadpurging: {age: 2h, interval: 10m}}
notifications:
  endpoints:
    - {name: hook, url: 'http://127.0.0.1:9999/events', timeout: 500ms, ignore: {actions: [pull]}}
proxy: {remoteurl: 'https://registry-1.docker.io', ttl: 72h}
berth:
  gcgraceperiod: 30m
  gcschedule: '@daily'
  writenetworks: [10.0.0.0/8]
  idletimeout: 45s
  mirrors:
    - {host: ghcr.io, tagttl: 30s}
  nodecache: {path: /var/cache/berth, maxbytes: 1000}
";
        let config: Config = serde_norway::from_str(text).unwrap();
        let written = serde_norway::to_string(&config).unwrap();
        let again: Config = serde_norway::from_str(&written).unwrap();
        assert_eq!(again, config, "{written}");
        let settings = config.settle().unwrap();
        let reread = parse(&written, &[]).unwrap();
        assert_eq!(format!("{reread:?}"), format!("{settings:?}"), "{written}");
    }

    #[test]
    fn defaults_are_not_written() {
        let config = Config::versioned();
        assert_eq!(serde_norway::to_string(&config).unwrap(), "version: 0.1\n");
    }
}
