//! The configuration resolved and checked: what the registry runs with.
//!
//! A [`Settings`] is built only by the checks
//! ([`Config::settle`](crate::schema::Config::settle)), so
//! holding one means every value was found valid.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::choices::{LogFormatter, LogLevel, TlsVersion};
use crate::network::Network;
use crate::pull_through::PullThrough;
use crate::schedule::Schedule;
use crate::secret::Secret;
use crate::service_account::ServiceAccountKey;

/// The limits on client connections (`berth.maxconnections`,
/// `berth.idletimeout`, `berth.stalltimeout`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Connections open at once; more are closed as they are accepted.
    pub max_connections: u32,
    /// How long a connection may go without a request in flight.
    pub idle_timeout: Duration,
    /// How long a request may wait on a client that moves no byte.
    pub stall_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            max_connections: 1000,
            idle_timeout: Duration::from_secs(30),
            stall_timeout: Duration::from_secs(60),
        }
    }
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

/// Settings resolved and checked, ready to run with.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Address to listen on (`http.addr`).
    pub addr: SocketAddr,
    /// TLS on the main listener (`http.tls`), when configured.
    pub tls: Option<TlsSettings>,
    /// Whether HTTP/2 is offered (`http.http2.disabled` unset).
    pub http2: bool,
    /// The storage backend.
    pub storage: StorageSettings,
    /// Whether manifests and blobs may be deleted (`storage.delete.enabled`).
    pub delete_enabled: bool,
    /// Whether every write is refused (`storage.maintenance.readonly.enabled`).
    pub read_only: bool,
    /// Shutdown drain timeout (`http.draintimeout`).
    pub drain_timeout: Duration,
    /// Upload purging (`storage.maintenance.uploadpurging`), when on.
    pub purge: Option<UploadPurge>,
    /// The separate metrics listener (`http.debug`), if any.
    pub debug: Option<DebugListener>,
    /// How the registry logs (`log`).
    pub log: LogSettings,
    /// Basic authentication (`auth.htpasswd`), when configured.
    pub htpasswd: Option<HtpasswdSettings>,
    /// With authentication, whether clients without credentials may pull
    /// (`berth.anonymouspull`).
    pub anonymous_pull: bool,
    /// Whether `/readyz` checks storage (`health.storagedriver.enabled`).
    pub check_storage: bool,
    /// Largest manifest accepted on push, in bytes (`berth.manifestmaxbytes`).
    pub manifest_max_bytes: u64,
    /// Bytes of manifests kept in memory; 0 is no cache (`berth.manifestcachebytes`).
    pub manifest_cache_bytes: u64,
    /// Notification endpoints, checked.
    pub endpoints: Vec<EndpointSettings>,
    /// Events queued per notification endpoint (`berth.notificationqueuesize`).
    pub notification_queue_size: usize,
    /// Headers added to every response (`http.headers`), checked.
    pub headers: http::HeaderMap,
    /// Garbage collection's grace period (`berth.gcgraceperiod`).
    pub gc_grace_period: Duration,
    /// When the server collects garbage itself (`berth.gcschedule` or `berth.gcinterval`).
    pub gc_schedule: Option<Schedule>,
    /// Whether in-server collections only report (`berth.gcdryrun`).
    pub gc_dry_run: bool,
    /// Whether in-server collections delete untagged manifests (`berth.gcdeleteuntagged`).
    pub gc_delete_untagged: bool,
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

/// TLS on the main listener (`http.tls`), checked: both files were readable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// PEM certificate chain file.
    pub certificate: PathBuf,
    /// PEM private key file.
    pub key: PathBuf,
    /// Lowest TLS version offered (`tls1.2` unless set).
    pub minimum_version: TlsVersion,
    /// PEM files of the CAs client certificates must chain to; empty is no
    /// client authentication.
    pub client_cas: Vec<PathBuf>,
}

/// The separate listener serving metrics (`http.debug`), present only when
/// it has an address and Prometheus is enabled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DebugListener {
    /// Its address (`http.debug.addr`).
    pub addr: SocketAddr,
    /// Path of the metrics endpoint (`http.debug.prometheus.path`).
    pub metrics_path: String,
}

/// How the registry logs (`log`), resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSettings {
    /// The level, unless `BERTH_LOG` overrides it.
    pub level: LogLevel,
    /// Text or JSON lines.
    pub formatter: LogFormatter,
    /// `log.fields` in key order, each value rendered as text.
    pub fields: Vec<(String, String)>,
    /// Whether each request is logged (`log.accesslog.disabled` unset).
    pub access_log: bool,
}

/// Basic authentication against an htpasswd file (`auth.htpasswd`),
/// checked: the file was readable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HtpasswdSettings {
    /// The htpasswd file, re-read when it changes.
    pub path: PathBuf,
    /// Realm named in the `WWW-Authenticate` challenge.
    pub realm: String,
}

/// Purging of abandoned uploads (`storage.maintenance.uploadpurging`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UploadPurge {
    /// Age past which an upload is purged.
    pub age: Duration,
    /// How often to look; never zero.
    pub interval: Duration,
    /// Only log what would be purged.
    pub dry_run: bool,
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
    pub key: Option<Secret<Vec<u8>>>,
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
    pub key: Option<ServiceAccountKey>,
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
    /// The bucket.
    pub bucket: String,
    /// The region; `None` leaves it to the AWS environment.
    pub region: Option<String>,
    /// A fixed access key; `None` uses the standard AWS credential chain.
    pub keys: Option<S3Keys>,
    /// Address buckets by path rather than by host name.
    pub force_path_style: bool,
    /// Key prefix without slashes at either end.
    pub root: String,
    /// Server-side encryption of stored objects, if any.
    pub encryption: Option<S3Encryption>,
    /// Storage class of stored objects; `None` is the bucket's default.
    pub storage_class: Option<String>,
    /// Endpoint URL with its scheme, for S3-compatible servers.
    pub endpoint: Option<String>,
    /// Multipart part size.
    pub chunk_size: u64,
    /// Whether blob GET/HEAD redirect to pre-signed URLs.
    pub redirect: bool,
}

/// An S3 access key and its secret (`storage.s3.accesskey`, `secretkey`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Keys {
    /// The access key id.
    pub access: String,
    /// The secret key.
    pub secret: Secret<String>,
}

/// How S3 encrypts stored objects (`storage.s3.encrypt`, `keyid`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum S3Encryption {
    /// With keys S3 manages (SSE-S3, AES-256).
    Aes256,
    /// With this KMS key (SSE-KMS).
    Kms(String),
}

/// Smallest multipart part S3 accepts (but for the last).
pub const S3_MIN_CHUNK: u64 = 5 * 1024 * 1024;

/// An enabled notification endpoint, checked.
#[derive(Debug, Clone)]
pub struct EndpointSettings {
    /// Its name in logs and metrics.
    pub name: String,
    /// The http(s) URL events are POSTed to.
    pub url: String,
    /// Actions whose events are not sent.
    pub ignored_actions: Vec<String>,
    /// Media types whose events are not sent (`ignore.mediatypes` and the
    /// older `ignoredmediatypes` together).
    pub ignored_media_types: Vec<String>,
    /// Time allowed per delivery.
    pub timeout: Duration,
    /// Consecutive failures before the retry delay doubles.
    pub threshold: u32,
    /// Delay before a retry.
    pub backoff: Duration,
    /// Headers sent with each delivery.
    pub headers: http::HeaderMap,
}
