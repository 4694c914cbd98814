//! OCI vocabulary and the registry API steps tests share: media types,
//! digests, descriptors, and pushing blobs and manifests over HTTP.

use serde_json::{Value, json};
use sha2::{Digest as _, Sha256, Sha512};

use crate::http::{Client, Reply, assert_status};

/// OCI image manifest media type.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index media type.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI image config media type.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// OCI gzip-compressed tar layer media type.
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// Docker image manifest v2 schema 2 media type.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list media type.
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// An `Accept` header value that admits every manifest type above.
pub const ACCEPT_MANIFESTS: &str = "application/vnd.oci.image.manifest.v1+json, \
     application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json, \
     application/vnd.docker.distribution.manifest.list.v2+json";

/// Whether `media_type` is an index (OCI index or Docker manifest list).
pub fn is_index(media_type: &str) -> bool {
    media_type == OCI_INDEX || media_type == DOCKER_MANIFEST_LIST
}

/// Whether `media_type` is an image manifest (OCI or Docker schema 2).
pub fn is_image_manifest(media_type: &str) -> bool {
    media_type == OCI_MANIFEST || media_type == DOCKER_MANIFEST
}

/// `sha256:<hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// `sha512:<hex>` of `bytes`.
pub fn sha512_digest(bytes: &[u8]) -> String {
    format!("sha512:{}", hex::encode(Sha512::digest(bytes)))
}

/// Whether `bytes` hash to `digest` (`sha256:` or `sha512:`); `None` for an
/// algorithm the tests do not know.
pub fn digest_matches(digest: &str, bytes: &[u8]) -> Option<bool> {
    match digest.split_once(':') {
        Some(("sha256", _)) => Some(sha256_digest(bytes) == digest),
        Some(("sha512", _)) => Some(sha512_digest(bytes) == digest),
        _ => None,
    }
}

/// A content descriptor: media type, digest and size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    /// The media type of the referenced content.
    pub media_type: String,
    /// `algorithm:hex` of the referenced content.
    pub digest: String,
    /// The size in bytes of the referenced content.
    pub size: u64,
}

impl Descriptor {
    /// The descriptor of `bytes` as content of type `media_type`.
    pub fn of(media_type: &str, bytes: &[u8]) -> Descriptor {
        Descriptor {
            media_type: media_type.to_owned(),
            digest: sha256_digest(bytes),
            size: bytes.len() as u64,
        }
    }

    /// The descriptor as OCI JSON.
    pub fn to_json(&self) -> Value {
        json!({"mediaType": self.media_type, "digest": self.digest, "size": self.size})
    }
}

/// The JSON bytes of an OCI image manifest with `config` and `layers`.
pub fn image_manifest(config: &Descriptor, layers: &[Descriptor]) -> Vec<u8> {
    let value = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config.to_json(),
        "layers": layers.iter().map(Descriptor::to_json).collect::<Vec<_>>(),
    });
    serde_json::to_vec(&value).expect("serialise manifest")
}

/// `location` with `key=value` appended as a query parameter.
pub fn with_query(location: &str, key: &str, value: &str) -> String {
    let sep = if location.contains('?') { '&' } else { '?' };
    format!("{location}{sep}{key}={value}")
}

/// `POST /v2/<repo>/blobs/uploads/`: open an upload session, assert 202 and
/// return its `Location` (relative or absolute, as the server sent it).
pub fn start_upload(client: &Client, repo: &str) -> String {
    let reply = client.post(&format!("/v2/{repo}/blobs/uploads/"), &[], b"");
    assert_status(&reply, 202, &format!("POST /v2/{repo}/blobs/uploads/"));
    reply
        .header("location")
        .unwrap_or_else(|| panic!("upload POST without Location:\n{}", reply.describe()))
        .to_owned()
}

/// Push `bytes` as a blob of `repo` (POST, then PUT with the digest), assert
/// 201, and return the digest.
pub fn push_blob(client: &Client, repo: &str, bytes: &[u8]) -> String {
    let digest = sha256_digest(bytes);
    let location = start_upload(client, repo);
    let reply = client.put(
        &with_query(&location, "digest", &digest),
        &[("Content-Type", "application/octet-stream")],
        bytes,
    );
    assert_status(&reply, 201, &format!("PUT blob {digest} into {repo}"));
    digest
}

/// `PUT /v2/<repo>/manifests/<reference>` with `body` as `media_type`.
pub fn put_manifest(
    client: &Client,
    repo: &str,
    reference: &str,
    media_type: &str,
    body: &[u8],
) -> Reply {
    client.put(
        &format!("/v2/{repo}/manifests/{reference}"),
        &[("Content-Type", media_type)],
        body,
    )
}

/// `GET /v2/<repo>/manifests/<reference>` accepting every manifest type.
pub fn get_manifest(client: &Client, repo: &str, reference: &str) -> Reply {
    client.get_with(
        &format!("/v2/{repo}/manifests/{reference}"),
        &[("Accept", ACCEPT_MANIFESTS)],
    )
}

/// The tags of `repo` from `GET /v2/<repo>/tags/list`, sorted; panics
/// unless the server answers 200 with a tag list.
pub fn list_tags(client: &Client, repo: &str) -> Vec<String> {
    let reply = client.get(&format!("/v2/{repo}/tags/list"));
    assert_status(&reply, 200, &format!("GET /v2/{repo}/tags/list"));
    let value = reply.json();
    assert_eq!(value["name"], repo, "tags list names the repository");
    let mut tags: Vec<String> = value["tags"]
        .as_array()
        .unwrap_or_else(|| panic!("tags list without tags array:\n{}", reply.describe()))
        .iter()
        .map(|t| t.as_str().expect("tag is a string").to_owned())
        .collect();
    tags.sort();
    tags
}

/// The repositories from `GET /v2/_catalog` (one large page), sorted.
pub fn catalog(client: &Client) -> Vec<String> {
    let reply = client.get("/v2/_catalog?n=1000");
    assert_status(&reply, 200, "GET /v2/_catalog");
    let mut repos: Vec<String> = reply.json()["repositories"]
        .as_array()
        .unwrap_or_else(|| panic!("catalog without repositories array:\n{}", reply.describe()))
        .iter()
        .map(|r| r.as_str().expect("repository is a string").to_owned())
        .collect();
    repos.sort();
    repos
}

/// The path and query of `location`, dropping any `scheme://authority`
/// (servers may send absolute or relative `Location` headers).
pub fn location_path(location: &str) -> String {
    match location.split_once("://") {
        Some((_, rest)) => match rest.find('/') {
            Some(i) => rest[i..].to_owned(),
            None => "/".to_owned(),
        },
        None => location.to_owned(),
    }
}

/// The upload session id in an upload `Location`: its last path segment.
pub fn upload_id(location: &str) -> String {
    let path = location_path(location);
    let path = path.split('?').next().unwrap_or_default();
    path.trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_owned()
}
