//! The `Registry` custom resource (`berth.dev/v1alpha1`).
//!
//! The doc comments on these types become the CRD's OpenAPI descriptions,
//! which is what `kubectl explain registry.spec...` shows. Defaults live in
//! the schema so the API server fills them in; rules that OpenAPI cannot say
//! (exactly one of two fields, cron syntax) are CEL `x-kubernetes-validations`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Affinity, ResourceRequirements, Toleration};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A container registry served on every selected node by a DaemonSet of
/// berth-registry, backed by shared storage.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "berth.dev",
    version = "v1alpha1",
    kind = "Registry",
    plural = "registries",
    shortname = "reg",
    namespaced,
    status = "RegistryStatus",
    doc = "A container registry on every selected node: a DaemonSet of berth-registry over shared storage.",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Nodes","type":"string","description":"Nodes with a ready registry / nodes that should run one","jsonPath":".status.nodes"}"#,
    printcolumn = r#"{"name":"Storage","type":"string","jsonPath":".status.storage"}"#,
    printcolumn = r#"{"name":"Configured","type":"integer","description":"Nodes whose containerd pulls through this Registry","jsonPath":".status.configuredNodes"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "!has(self.nodeCache) || !has(self.storage.filesystem)",
    "message": "nodeCache needs remote storage (storage.s3, storage.azure or storage.gcs): filesystem storage is already on the node or a volume"
}]))]
pub struct RegistrySpec {
    /// Container image of berth-registry. Unset (or empty) means the image
    /// the operator is configured with (its `--registry-image` flag), so
    /// Registries that set none follow the operator's upgrades.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,

    /// When the kubelet pulls the image.
    #[serde(default)]
    pub image_pull_policy: PullPolicy,

    /// Where the registry keeps its blobs and manifests: exactly one of
    /// `filesystem`, `s3`, `azure` or `gcs`.
    pub storage: Storage,

    /// Serve HTTPS with the certificate of a `kubernetes.io/tls` Secret;
    /// without it the registry serves plain HTTP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<Tls>,

    /// Require clients to authenticate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<Auth>,

    /// CA certificates the registry trusts for its own HTTPS connections,
    /// beside the public roots of its image: a storage endpoint (`s3`,
    /// `azure` or `gcs`), an upstream of `mirrors` or a webhook behind a
    /// private CA. A change restarts the registry pods.
    #[serde(default, rename = "trustedCA", skip_serializing_if = "Option::is_none")]
    pub trusted_ca: Option<TrustedCa>,

    /// Without `auth`, where pushes and deletes may come from: `Loopback`
    /// (through `kubectl port-forward` to a registry pod or its Service, or
    /// from the node itself with `exposure.mode: HostNetwork`) or `Anywhere`
    /// that reaches a node's port. Pulls are open either way; with `auth`,
    /// every write needs credentials.
    #[serde(default)]
    pub unauthenticated_writes: UnauthenticatedWrites,

    /// How each node reaches the registry pod running on it.
    #[serde(default)]
    pub exposure: Exposure,

    /// Garbage collection of blobs no kept manifest references.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gc: Option<Gc>,

    /// Refuse pushes and deletes; serve pulls only.
    #[serde(default)]
    pub read_only: bool,

    /// Run the registry only on nodes with these labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,

    /// Tolerations of the registry pods, for example to run on tainted nodes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,

    /// Node affinity and anti-affinity of the registry pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,

    /// CPU and memory requests and limits of the registry container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// PriorityClass of the registry pods (for example `system-node-critical`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,

    /// Annotations added to every registry pod.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pod_annotations: BTreeMap<String, String>,

    /// Verbosity of the registry's logs.
    #[serde(default)]
    pub log_level: berth_config::LogLevel,

    /// Upstream registries this Registry pulls through: a request that
    /// containerd sends for an image of `host` (it names it in the `ns`
    /// query parameter) is served from the Registry's cache, filled from the
    /// upstream on a miss. At most one entry per host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["host"]))]
    #[schemars(length(max = 64))]
    pub mirrors: Vec<Mirror>,

    /// Point every selected node's containerd at the registry pod on that
    /// node: an init container of each registry pod writes containerd's
    /// `hosts.toml` for every mirror (and `registryName`) into the node's
    /// hosts directory, keeping what other tools wrote there. Removing this
    /// field, or deleting the Registry, restores the directory on every node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub containerd: Option<Containerd>,

    /// Keep the blobs each node serves on that node's disk, in front of
    /// remote storage (`s3`, `azure` or `gcs` only): a blob is fetched from
    /// the bucket once per node. Manifests and tags still come from the
    /// bucket, so a push through any node is seen on every node at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_cache: Option<NodeCache>,
}

/// An upstream registry pulled through.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Mirror {
    /// The registry's host, with its port when not the default, as image
    /// names spell it (`docker.io`, `ghcr.io`, `registry.example.com:5000`),
    /// or `_default` for every host without an entry of its own. No scheme,
    /// no path.
    #[schemars(
        length(min = 1, max = 253),
        regex(
            pattern = r"^(_default|[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*(:[0-9]{1,5})?)$"
        )
    )]
    pub host: String,

    /// The upstream's URL, `http://` or `https://` (for example
    /// `https://registry-1.docker.io`). Unset means `https://<host>`
    /// (`docker.io` means `https://registry-1.docker.io`); for `_default`,
    /// the host each request names. containerd falls back to it when the
    /// node's registry cannot answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048), regex(pattern = r"^https?://[^\s/]+(/\S*)?$"))]
    pub url: Option<String>,

    /// Name of a `kubernetes.io/basic-auth` Secret in the Registry's
    /// namespace (keys `username` and `password`) to log in to the upstream
    /// with. Mounted read-only; a rotated password is used without a restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub credentials_secret: Option<String>,

    /// How long a cached tag is served before it is resolved upstream again
    /// (for example `30s`, `1m`, `1h`); unset means one minute. While the
    /// upstream is down, cached tags are served regardless.
    #[serde(default, rename = "tagTTL", skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]+(s|m|h))+$"))]
    pub tag_ttl: Option<String>,
}

/// The node's containerd configuration.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "self.hostsDir == oldSelf.hostsDir",
    "message": "containerd.hostsDir cannot be changed: remove spec.containerd, wait until status.configuredNodes is gone, then set it again"
}]))]
pub struct Containerd {
    /// containerd's hosts directory on every node: the directory its
    /// `config_path` names (containerd 1.6 and 1.7: under
    /// `plugins."io.containerd.grpc.v1.cri".registry`; 2.x: under
    /// `plugins."io.containerd.cri.v1.images".registry`). It must be the
    /// only directory there: containerd 2.1 and later ignore mirrors when
    /// `config_path` lists two.
    #[serde(default = "default_hosts_dir")]
    #[schemars(length(min = 2, max = 4096), regex(pattern = r"^/[^:]*$"))]
    pub hosts_dir: String,

    /// A name under which pods refer to images pushed to this Registry
    /// (`berth.local/app:1`): containerd resolves it at the node's registry
    /// pod. Unset means only the mirrors are configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 253),
        regex(
            pattern = r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*(:[0-9]{1,5})?$"
        )
    )]
    pub registry_name: Option<String>,
}

fn default_hosts_dir() -> String {
    "/etc/containerd/certs.d".to_owned()
}

/// A bounded blob cache on each node's disk.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeCache {
    /// The most the cache holds on each node (for example `10Gi`); the least
    /// recently used blobs are evicted when it fills up.
    pub size: Quantity,

    /// The directory on each node below which caches live (created if
    /// missing); this Registry's cache is `<path>/<namespace>/<name>`.
    #[serde(default = "default_cache_path")]
    #[schemars(length(min = 2, max = 4096), regex(pattern = r"^/"))]
    pub path: String,
}

fn default_cache_path() -> String {
    "/var/lib/berth/cache".to_owned()
}

impl NodeCache {
    /// `size` in bytes; `None` when it is no quantity, or a fraction of a byte.
    pub fn max_bytes(&self) -> Option<u64> {
        quantity_bytes(&self.size.0)
    }
}

/// A Kubernetes quantity (`10Gi`, `500M`, `1e9`, `1.5Gi`) as a whole
/// number of bytes; `None` for anything else, a negative or fractional
/// result, or one that overflows.
fn quantity_bytes(quantity: &str) -> Option<u64> {
    let quantity = quantity.trim();
    let split = quantity
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+'))
        .unwrap_or(quantity.len());
    let (number, suffix) = quantity.split_at(split);
    let (multiplier, divisor): (u128, u128) = match suffix {
        "" => (1, 1),
        "Ki" => (1 << 10, 1),
        "Mi" => (1 << 20, 1),
        "Gi" => (1 << 30, 1),
        "Ti" => (1 << 40, 1),
        "Pi" => (1 << 50, 1),
        "Ei" => (1 << 60, 1),
        "m" => (1, 1000),
        "k" => (1_000, 1),
        "M" => (1_000_000, 1),
        "G" => (1_000_000_000, 1),
        "T" => (1_000_000_000_000, 1),
        "P" => (1_000_000_000_000_000, 1),
        "E" => (1_000_000_000_000_000_000, 1),
        exponent => {
            let power: u32 = exponent.strip_prefix(['e', 'E'])?.parse().ok()?;
            (10u128.checked_pow(power)?, 1)
        }
    };
    let number = number.strip_prefix('+').unwrap_or(number);
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty()
        || !whole
            .bytes()
            .chain(fraction.bytes())
            .all(|b| b.is_ascii_digit())
        || fraction.len() > 18
    {
        return None;
    }
    let scale = 10u128.pow(fraction.len() as u32);
    let digits: u128 = format!("{whole}{fraction}").parse().ok()?;
    let numerator = digits.checked_mul(multiplier)?;
    let denominator = scale * divisor;
    (numerator % denominator == 0)
        .then(|| numerator / denominator)
        .and_then(|bytes| u64::try_from(bytes).ok())
}

/// When the kubelet pulls the image.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum PullPolicy {
    /// Pull on every pod start.
    Always,
    /// Pull only when the node does not have the image.
    #[default]
    IfNotPresent,
    /// Never pull; the image must be on the node.
    Never,
}

impl PullPolicy {
    /// The policy as a container's `imagePullPolicy` spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            PullPolicy::Always => "Always",
            PullPolicy::IfNotPresent => "IfNotPresent",
            PullPolicy::Never => "Never",
        }
    }
}

/// Where the registry keeps its content.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "[has(self.filesystem), has(self.s3), has(self.azure), has(self.gcs)].filter(x, x).size() == 1",
    "message": "exactly one of storage.filesystem, storage.s3, storage.azure or storage.gcs must be set"
}]))]
pub struct Storage {
    /// A directory: a path on each node, or a (ReadWriteMany) PersistentVolumeClaim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filesystem: Option<FilesystemStorage>,

    /// A bucket of AWS S3 or of an S3-compatible server, shared by every node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Storage>,

    /// A container of an Azure storage account, shared by every node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub azure: Option<AzureStorage>,

    /// A Google Cloud Storage bucket, shared by every node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gcs: Option<GcsStorage>,
}

/// A directory the registry stores its layout in.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "has(self.hostPath) != has(self.persistentVolumeClaim)",
    "message": "exactly one of storage.filesystem.hostPath or storage.filesystem.persistentVolumeClaim must be set"
}]))]
pub struct FilesystemStorage {
    /// Absolute path of a directory on each node (created if missing).
    /// Every node keeps its own content: an image pushed through one node
    /// is not seen by the others.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 2, max = 4096), regex(pattern = r"^/"))]
    pub host_path: Option<String>,

    /// Name of a PersistentVolumeClaim in the Registry's namespace, mounted by
    /// every registry pod; it must allow ReadWriteMany to span several nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub persistent_volume_claim: Option<String>,
}

/// An S3 bucket.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct S3Storage {
    /// Name of the bucket.
    #[schemars(length(min = 3, max = 63))]
    pub bucket: String,

    /// Region of the bucket.
    #[serde(default = "default_region")]
    #[schemars(length(min = 1))]
    pub region: String,

    /// URL of an S3-compatible server (for example `http://minio.storage:9000`);
    /// unset means AWS S3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^https?://[^\s/]+(/.*)?$"))]
    pub endpoint: Option<String>,

    /// Address objects as `endpoint/bucket/key`, which most S3-compatible servers need.
    #[serde(default)]
    pub force_path_style: bool,

    /// Prefix of every object key the registry writes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_directory: Option<String>,

    /// Name of a Secret in the Registry's namespace with the keys `accessKey`
    /// and `secretKey`; passed to the registry as environment variables. Unset
    /// means the pod's ambient credentials (for example IRSA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub credentials_secret: Option<String>,

    /// Redirect blob downloads to pre-signed S3 URLs instead of streaming them
    /// through the registry.
    #[serde(default)]
    pub redirect: bool,
}

/// A container of an Azure storage account.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AzureStorage {
    /// Name of the storage account.
    #[schemars(length(min = 3, max = 24))]
    pub account_name: String,

    /// Name of the container.
    #[schemars(length(min = 3, max = 63))]
    pub container: String,

    /// URL of the blob service; unset means
    /// `https://<accountName>.blob.core.windows.net`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^https?://[^\s/]+(/.*)?$"))]
    pub service_url: Option<String>,

    /// Prefix of every blob name the registry writes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_directory: Option<String>,

    /// Name of a Secret in the Registry's namespace with the key `accountKey`
    /// (the account's shared key), passed to the registry as an environment
    /// variable. Unset means Azure workload identity (the pod's
    /// `AZURE_CLIENT_ID`, `AZURE_TENANT_ID` and `AZURE_FEDERATED_TOKEN_FILE`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub credentials_secret: Option<String>,

    /// Redirect blob downloads to SAS URLs instead of streaming them through
    /// the registry (needs `credentialsSecret`).
    #[serde(default)]
    pub redirect: bool,
}

/// A Google Cloud Storage bucket.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GcsStorage {
    /// Name of the bucket.
    #[schemars(length(min = 3, max = 222))]
    pub bucket: String,

    /// Prefix of every object name the registry writes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_directory: Option<String>,

    /// Name of a Secret in the Registry's namespace with the key `key.json`
    /// (a service account's JSON key), mounted as a file. Unset means GKE
    /// workload identity (tokens from the metadata server).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub credentials_secret: Option<String>,

    /// Redirect blob downloads to signed URLs instead of streaming them
    /// through the registry (needs `credentialsSecret`).
    #[serde(default)]
    pub redirect: bool,
}

fn default_region() -> String {
    "us-east-1".to_owned()
}

/// HTTPS.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Tls {
    /// Name of a `kubernetes.io/tls` Secret (keys `tls.crt` and `tls.key`) in
    /// the Registry's namespace. A renewed certificate is picked up without a restart.
    #[schemars(length(min = 1, max = 253))]
    pub secret_name: String,
}

/// Private CA certificates to trust.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrustedCa {
    /// Name of a Secret in the Registry's namespace whose key `ca.crt` holds
    /// one or more PEM certificates (as cert-manager writes it).
    #[schemars(length(min = 1, max = 253))]
    pub secret_name: String,
}

/// Client authentication.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Auth {
    /// HTTP basic authentication against an htpasswd file of bcrypt entries.
    pub htpasswd: Htpasswd,
}

/// htpasswd authentication.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Htpasswd {
    /// Name of a Secret in the Registry's namespace whose key `htpasswd`
    /// holds the file (`htpasswd -B` entries).
    #[schemars(length(min = 1, max = 253))]
    pub secret_name: String,
}

/// How each node reaches the registry pod running on it.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Exposure {
    /// `HostPort` maps the port on the node's addresses to the pod;
    /// `HostNetwork` runs the pod in the node's network namespace.
    #[serde(default)]
    pub mode: ExposureMode,

    /// The port every node serves the registry on.
    #[serde(default = "default_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
}

impl Default for Exposure {
    fn default() -> Self {
        Exposure {
            mode: ExposureMode::default(),
            port: default_port(),
        }
    }
}

fn default_port() -> i32 {
    5000
}

/// Where a Registry without `auth` accepts pushes and deletes from.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum UnauthenticatedWrites {
    /// Only over the pod's loopback interface.
    #[default]
    Loopback,
    /// From any client that reaches the port.
    Anywhere,
}

/// How a node's port reaches the registry.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ExposureMode {
    /// A `hostPort` on the registry container.
    #[default]
    HostPort,
    /// The pod shares the node's network namespace.
    HostNetwork,
}

/// Garbage collection.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Gc {
    /// Cron schedule of collections (five fields, or a macro such as `@daily`).
    /// Unset means no collection. With shared storage a CronJob runs
    /// `berth-registry gc`; with hostPath storage each registry pod collects
    /// its own node's content at this schedule's times, in UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 100))]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": r"self.matches('^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)|[0-9A-Za-z*/,?-]+( +[0-9A-Za-z*/,?-]+){4})$')",
        "message": "must be a cron schedule of five fields (minute hour day-of-month month day-of-week) or one of @yearly, @monthly, @weekly, @daily, @hourly"
    }]))]
    pub schedule: Option<String>,

    /// Also delete manifests that no tag points to.
    #[serde(default)]
    pub delete_untagged: bool,

    /// Content written or pulled within this period is never deleted, so a
    /// push in progress is safe (for example `1h`, `90m`).
    #[serde(default = "default_grace_period")]
    #[schemars(regex(pattern = r"^([0-9]+(s|m|h))+$"))]
    pub grace_period: String,

    /// Only report what a collection would delete.
    #[serde(default)]
    pub dry_run: bool,

    /// Pause scheduled collections.
    #[serde(default)]
    pub suspend: bool,
}

fn default_grace_period() -> String {
    "1h".to_owned()
}

/// What the operator last observed of a Registry.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RegistryStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// `Ready`, `Progressing` and `Degraded`, each with a reason and a message.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,

    /// Nodes that should run a registry pod.
    #[serde(default)]
    pub desired_nodes: i32,

    /// Nodes whose registry pod is ready.
    #[serde(default)]
    pub ready_nodes: i32,

    /// Nodes whose registry pod runs the current pod template.
    #[serde(default)]
    pub updated_nodes: i32,

    /// `readyNodes/desiredNodes`, for `kubectl get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<String>,

    /// The storage in use: `S3`, `Azure`, `GCS`, `HostPath` or `PersistentVolumeClaim`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<String>,

    /// Where clients in the cluster reach the registry (the Service); every
    /// selected node also serves it on `spec.exposure.port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,

    /// How garbage is collected: `CronJob`, `InServer` (each pod, for
    /// node-local storage) or `Disabled`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gc_mode: Option<String>,

    /// The outcome of the most recent garbage collection Job.
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "lastGC")]
    pub last_gc: Option<GcResult>,

    /// The last in-server garbage collection of each node (`gcMode`
    /// `InServer`), as the node's registry pod reports it; by node name.
    #[serde(default, skip_serializing_if = "Vec::is_empty", rename = "nodeGC")]
    pub node_gc: Vec<NodeGcResult>,

    /// With `spec.containerd`: the nodes whose containerd hosts files this
    /// Registry wrote (registry pods whose `containerd-hosts` init container
    /// succeeded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub configured_nodes: Option<i32>,
}

/// The last garbage collection that a node's registry pod ran itself.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeGcResult {
    /// The node.
    pub node: String,
    /// What the run came to.
    #[serde(flatten)]
    pub result: GcResult,
}

/// One garbage collection run.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GcResult {
    /// When the run finished.
    pub time: Time,
    /// Blobs deleted (or, in a dry run, that would be).
    #[serde(default)]
    pub deleted_blobs: i64,
    /// Bytes freed (or, in a dry run, that would be).
    #[serde(default)]
    pub freed_bytes: i64,
    /// `Succeeded` or `Failed`, with the reason when failed.
    pub outcome: String,
}

/// The key of the certificate chain in a `kubernetes.io/tls` Secret.
pub const TLS_CERT_KEY: &str = "tls.crt";
/// The key of the private key in a `kubernetes.io/tls` Secret.
pub const TLS_KEY_KEY: &str = "tls.key";
/// The key of the htpasswd file in its Secret.
pub const HTPASSWD_KEY: &str = "htpasswd";
/// The key of the S3 access key id in the credentials Secret.
pub const S3_ACCESS_KEY: &str = "accessKey";
/// The key of the S3 secret access key in the credentials Secret.
pub const S3_SECRET_KEY: &str = "secretKey";

/// The key of the user name in a mirror's `kubernetes.io/basic-auth` Secret.
pub const MIRROR_USERNAME_KEY: &str = "username";
/// The key of the password in a mirror's `kubernetes.io/basic-auth` Secret.
pub const MIRROR_PASSWORD_KEY: &str = "password";

/// The key of the PEM certificates in the `trustedCA` Secret.
pub const TRUSTED_CA_KEY: &str = "ca.crt";

/// The key of the Azure account key in the credentials Secret.
pub const AZURE_ACCOUNT_KEY: &str = "accountKey";
/// The key of the GCS service account key file in the credentials Secret.
pub const GCS_KEY_FILE: &str = "key.json";

/// A Secret a Registry uses: the field naming it, its name, and the keys it must have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SecretRef<'a> {
    /// The spec field naming the Secret, for messages.
    pub field: &'static str,
    /// The Secret's name, in the Registry's namespace.
    pub name: &'a str,
    /// The keys the registry reads.
    pub keys: &'static [&'static str],
    /// Whether the registry reads the keys only when it starts (environment
    /// variables), so that a new value needs new pods. Mounted files are
    /// re-read by the running registry.
    pub read_at_start: bool,
    /// What the keys must hold.
    pub content: KeyContent,
}

/// What a Secret's keys must hold, beyond being there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyContent {
    /// Whatever the registry reads; it reports what it cannot use.
    Any,
    /// At least one PEM certificate. The registry would skip anything else
    /// without a word and then fail every TLS handshake it was meant for.
    PemCertificates,
}

impl KeyContent {
    /// Why `value` does not hold what it must, if it does not.
    pub fn problem(self, value: &[u8]) -> Option<&'static str> {
        match self {
            KeyContent::Any => None,
            KeyContent::PemCertificates => {
                // Read as the registry's TLS clients read it
                // (rustls-native-certs): every block that parses is trusted.
                let holds = CertificateDer::pem_slice_iter(value).any(|cert| cert.is_ok());
                (!holds).then_some("holds no PEM certificate (-----BEGIN CERTIFICATE-----)")
            }
        }
    }
}

impl RegistrySpec {
    /// The Secrets this Registry mounts or reads.
    pub fn secret_refs(&self) -> Vec<SecretRef<'_>> {
        let mut refs = Vec::new();
        if let Some(tls) = &self.tls {
            refs.push(SecretRef {
                field: "spec.tls.secretName",
                name: &tls.secret_name,
                keys: &[TLS_CERT_KEY, TLS_KEY_KEY],
                read_at_start: false,
                content: KeyContent::Any,
            });
        }
        if let Some(auth) = &self.auth {
            let name = &auth.htpasswd.secret_name;
            refs.push(SecretRef {
                field: "spec.auth.htpasswd.secretName",
                name,
                keys: &[HTPASSWD_KEY],
                read_at_start: false,
                content: KeyContent::Any,
            });
        }
        if let Some(name) = self
            .storage
            .s3
            .as_ref()
            .and_then(|s3| s3.credentials_secret.as_deref())
        {
            let keys = &[S3_ACCESS_KEY, S3_SECRET_KEY];
            refs.push(SecretRef {
                field: "spec.storage.s3.credentialsSecret",
                name,
                keys,
                read_at_start: true,
                content: KeyContent::Any,
            });
        }
        if let Some(name) = self
            .storage
            .azure
            .as_ref()
            .and_then(|azure| azure.credentials_secret.as_deref())
        {
            refs.push(SecretRef {
                field: "spec.storage.azure.credentialsSecret",
                name,
                keys: &[AZURE_ACCOUNT_KEY],
                read_at_start: true,
                content: KeyContent::Any,
            });
        }
        if let Some(name) = self
            .storage
            .gcs
            .as_ref()
            .and_then(|gcs| gcs.credentials_secret.as_deref())
        {
            refs.push(SecretRef {
                field: "spec.storage.gcs.credentialsSecret",
                name,
                keys: &[GCS_KEY_FILE],
                // The driver reads the key file when it starts.
                read_at_start: true,
                content: KeyContent::Any,
            });
        }
        if let Some(trusted) = &self.trusted_ca {
            refs.push(SecretRef {
                field: "spec.trustedCA.secretName",
                name: &trusted.secret_name,
                keys: &[TRUSTED_CA_KEY],
                // Loaded into each HTTPS client when it is built.
                read_at_start: true,
                content: KeyContent::PemCertificates,
            });
        }
        for name in self
            .mirrors
            .iter()
            .filter_map(|m| m.credentials_secret.as_deref())
        {
            refs.push(SecretRef {
                field: "spec.mirrors[].credentialsSecret",
                name,
                keys: &[MIRROR_USERNAME_KEY, MIRROR_PASSWORD_KEY],
                // Mounted files, re-read when used.
                read_at_start: false,
                content: KeyContent::Any,
            });
        }
        refs
    }

    /// The image to run: `spec.image`, or `default` when that is unset or empty.
    pub fn image_or<'a>(&'a self, default: &'a str) -> &'a str {
        match self.image.as_deref().map(str::trim) {
            Some(image) if !image.is_empty() => image,
            _ => default,
        }
    }

    /// Whether content lives on each node's own disk.
    pub fn node_local_storage(&self) -> bool {
        self.storage
            .filesystem
            .as_ref()
            .is_some_and(|fs| fs.host_path.is_some())
    }

    /// The node's hosts directory when the Registry configures containerd.
    pub fn hosts_dir(&self) -> Option<&str> {
        self.containerd.as_ref().map(|c| c.hosts_dir.as_str())
    }

    /// The storage kind as the status and printer column show it.
    pub fn storage_kind(&self) -> &'static str {
        let storage = &self.storage;
        match &storage.filesystem {
            _ if storage.s3.is_some() => "S3",
            _ if storage.azure.is_some() => "Azure",
            _ if storage.gcs.is_some() => "GCS",
            Some(fs) if fs.host_path.is_some() => "HostPath",
            _ => "PersistentVolumeClaim",
        }
    }
}

#[cfg(test)]
mod tests {
    use kube::CustomResourceExt;

    use super::*;

    /// `crds/registry.yaml` is `crdgen`'s output; regenerate it with `make crds`
    /// (or `cargo run -p berth-operator --bin crdgen > crds/registry.yaml`).
    #[test]
    fn checked_in_crd_is_current() {
        let generated = crate::crd_yaml().expect("CRD serializes");
        let checked_in = include_str!("../../crds/registry.yaml");
        assert!(
            generated == checked_in,
            "crds/registry.yaml is stale: run `cargo run -p berth-operator --bin crdgen > crds/registry.yaml`"
        );
    }

    #[test]
    fn defaults_fill_a_minimal_spec() {
        let spec: RegistrySpec =
            serde_json::from_value(serde_json::json!({"storage": {"s3": {"bucket": "images"}}}))
                .unwrap();
        assert_eq!(spec.image, None);
        assert_eq!(spec.image_or("default:1"), "default:1");
        assert_eq!(
            spec.exposure,
            Exposure {
                mode: ExposureMode::HostPort,
                port: 5000
            }
        );
        assert_eq!(spec.log_level, berth_config::LogLevel::Info);
        assert_eq!(spec.storage.s3.unwrap().region, "us-east-1");
    }

    #[test]
    fn an_empty_image_means_the_default() {
        let spec = |image: &str| -> RegistrySpec {
            serde_json::from_value(
                serde_json::json!({"image": image, "storage": {"s3": {"bucket": "images"}}}),
            )
            .unwrap()
        };
        assert_eq!(spec("").image_or("default:1"), "default:1");
        assert_eq!(spec("  ").image_or("default:1"), "default:1");
        assert_eq!(spec("mine:2").image_or("default:1"), "mine:2");
    }

    #[test]
    fn quantities_become_bytes() {
        for (quantity, bytes) in [
            ("10Gi", Some(10 << 30)),
            ("1.5Ki", Some(1536)),
            ("500M", Some(500_000_000)),
            ("1e3", Some(1000)),
            ("4096", Some(4096)),
            ("+1k", Some(1000)),
            ("1.5", None),
            ("100m", None),
            ("", None),
            ("Gi", None),
            ("-1Gi", None),
            ("10GB", None),
            ("16Ei", None),
        ] {
            assert_eq!(quantity_bytes(quantity), bytes, "{quantity}");
        }
    }

    #[test]
    fn mirror_and_node_fields_read_and_default() {
        let spec: RegistrySpec = serde_json::from_value(serde_json::json!({
            "storage": {"s3": {"bucket": "images"}},
            "mirrors": [{"host": "docker.io", "tagTTL": "30s", "credentialsSecret": "hub"}],
            "containerd": {},
            "nodeCache": {"size": "1Gi"},
        }))
        .unwrap();
        assert_eq!(spec.mirrors[0].tag_ttl.as_deref(), Some("30s"));
        assert_eq!(spec.hosts_dir(), Some("/etc/containerd/certs.d"));
        let cache = spec.node_cache.as_ref().unwrap();
        assert_eq!(
            (cache.path.as_str(), cache.max_bytes()),
            ("/var/lib/berth/cache", Some(1 << 30))
        );
        let secret = spec.secret_refs()[0];
        assert_eq!(
            (secret.name, secret.keys, secret.read_at_start),
            ("hub", &["username", "password"][..], false)
        );
    }

    #[test]
    fn a_trusted_ca_must_hold_a_pem_certificate() {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(Vec::<String>::new())
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let bundle = format!("# internal\n{}", cert.pem());
        assert_eq!(KeyContent::PemCertificates.problem(bundle.as_bytes()), None);
        for bad in [
            &b""[..],
            cert.der(),
            key.serialize_pem().as_bytes(),
            b"-----BEGIN CERTIFICATE-----\nMIIB",
            b"-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
        ] {
            assert!(
                KeyContent::PemCertificates.problem(bad).is_some(),
                "{bad:?}"
            );
        }
        assert_eq!(KeyContent::Any.problem(b""), None);
        let spec: RegistrySpec = serde_json::from_value(serde_json::json!({
            "storage": {"s3": {"bucket": "images"}},
            "trustedCA": {"secretName": "internal-ca"},
        }))
        .unwrap();
        let secret = spec.secret_refs()[0];
        assert_eq!(
            (
                secret.name,
                secret.keys,
                secret.read_at_start,
                secret.content
            ),
            (
                "internal-ca",
                &["ca.crt"][..],
                true,
                KeyContent::PemCertificates
            )
        );
    }

    #[test]
    fn schema_carries_defaults_and_rules() {
        let crd = serde_json::to_value(Registry::crd()).unwrap();
        let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
        assert_eq!(
            spec["properties"]["exposure"]["properties"]["port"]["default"],
            5000
        );
        assert_eq!(
            spec["properties"]["exposure"]["properties"]["port"]["maximum"],
            65535.0
        );
        let rules = &spec["properties"]["storage"]["x-kubernetes-validations"];
        assert!(
            rules[0]["rule"]
                .as_str()
                .unwrap()
                .contains("has(self.filesystem)"),
            "{rules}"
        );
        assert!(
            spec["properties"]["image"]["description"]
                .as_str()
                .is_some()
        );
        assert!(
            spec["properties"]["image"].get("default").is_none(),
            "no image default in the schema: the operator's flag decides"
        );
    }
}
