//! Strict parsing of image manifests and indexes (OCI and Docker schema 2).
//!
//! The registry stores manifests byte for byte; parsing only decides the media
//! type, rejects what is malformed, and lists what a manifest references so
//! the service can check those exist and index its `subject`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::digest::Digest;

/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker image manifest, schema 2.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list.
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// Largest stored manifest read back (pushes are limited separately).
pub const READ_CAP_BYTES: u64 = 16 * 1024 * 1024;

/// Whether a manifest lists blobs (an image) or other manifests (an index).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An image manifest: a config and layers.
    Image,
    /// An index or manifest list: child manifests.
    Index,
}

/// A content descriptor as manifests embed them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// Media type of the referenced content.
    pub media_type: String,
    /// Digest of the referenced content.
    pub digest: Digest,
    /// Size of the referenced content in bytes.
    pub size: u64,
    /// Artifact type, for artifacts and referrers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<Map<String, Value>>,
    /// Alternate locations (foreign layers).
    #[serde(default, skip_serializing)]
    pub urls: Option<Vec<String>>,
}

impl Descriptor {
    /// Whether the registry need not hold this blob: non-distributable and
    /// foreign layers are fetched from elsewhere by design.
    pub fn is_foreign(&self) -> bool {
        self.media_type
            .starts_with("application/vnd.oci.image.layer.nondistributable.")
            || self.media_type == "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
    }
}

/// The parts of a manifest the registry acts on.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// The media type the manifest is served with.
    pub media_type: String,
    /// Image or index.
    pub kind: Kind,
    /// The config blob (images only).
    pub config: Option<Descriptor>,
    /// Layer blobs (images only).
    pub layers: Vec<Descriptor>,
    /// Child manifests (indexes only).
    pub manifests: Vec<Descriptor>,
    /// The manifest this one refers to (OCI 1.1 referrers).
    pub subject: Option<Descriptor>,
    /// The artifact type: `artifactType`, else an image's config media type.
    pub artifact_type: Option<String>,
    /// Top-level annotations.
    pub annotations: Option<Map<String, Value>>,
}

/// The JSON shape shared by every supported manifest type.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Raw {
    schema_version: Option<i64>,
    media_type: Option<String>,
    artifact_type: Option<String>,
    config: Option<Descriptor>,
    layers: Option<Vec<Descriptor>>,
    manifests: Option<Vec<Descriptor>>,
    subject: Option<Descriptor>,
    annotations: Option<Map<String, Value>>,
}

fn kind_of(media_type: &str) -> Option<Kind> {
    match media_type {
        OCI_MANIFEST | DOCKER_MANIFEST => Some(Kind::Image),
        OCI_INDEX | DOCKER_LIST => Some(Kind::Index),
        _ => None,
    }
}

/// Parses `body`, pushed with `content_type`, into a [`Manifest`].
///
/// The media type comes from the body's `mediaType`, else from a known
/// `Content-Type`, else (OCI allows omitting it) from the body's shape. A
/// `Content-Type` naming another manifest type than the body is rejected.
pub fn parse(content_type: Option<&str>, body: &[u8]) -> Result<Manifest, String> {
    let raw: Raw =
        serde_json::from_slice(body).map_err(|e| format!("manifest is not valid JSON: {e}"))?;
    if raw.schema_version != Some(2) {
        return Err(format!(
            "schemaVersion must be 2, got {}",
            raw.schema_version
                .map_or("nothing".to_owned(), |v| v.to_string())
        ));
    }
    let header_type = content_type
        .map(|c| c.split(';').next().unwrap_or("").trim())
        .filter(|c| kind_of(c).is_some());
    let media_type = match (&raw.media_type, header_type) {
        (Some(body_type), Some(header)) if body_type != header => {
            return Err(format!(
                "mediaType {body_type:?} does not match Content-Type {header:?}"
            ));
        }
        (Some(body_type), _) => body_type.clone(),
        (None, Some(header)) => header.to_owned(),
        (None, None) if raw.manifests.is_some() => OCI_INDEX.to_owned(),
        (None, None) => OCI_MANIFEST.to_owned(),
    };
    let kind = kind_of(&media_type)
        .ok_or_else(|| format!("unsupported manifest mediaType {media_type:?}"))?;
    if media_type.starts_with("application/vnd.docker") && raw.media_type.is_none() {
        return Err("Docker schema 2 manifests must carry mediaType".to_owned());
    }
    match kind {
        Kind::Image if raw.config.is_none() => {
            return Err("image manifest has no config".to_owned());
        }
        Kind::Image if raw.manifests.is_some() => {
            return Err("image manifest must not list manifests".to_owned());
        }
        Kind::Index if raw.manifests.is_none() => return Err("index has no manifests".to_owned()),
        Kind::Index if raw.config.is_some() || raw.layers.is_some() => {
            return Err("index must not have config or layers".to_owned());
        }
        _ => {}
    }
    let artifact_type = raw.artifact_type.or_else(|| {
        (kind == Kind::Image)
            .then(|| raw.config.as_ref().map(|c| c.media_type.clone()))
            .flatten()
    });
    Ok(Manifest {
        media_type,
        kind,
        config: raw.config,
        layers: raw.layers.unwrap_or_default(),
        manifests: raw.manifests.unwrap_or_default(),
        subject: raw.subject,
        artifact_type,
        annotations: raw.annotations,
    })
}

impl Manifest {
    /// Blobs this manifest needs present in its repository (config and
    /// distributable layers).
    pub fn required_blobs(&self) -> impl Iterator<Item = &Descriptor> {
        self.config
            .iter()
            .chain(self.layers.iter().filter(|l| !l.is_foreign()))
    }
}

/// The media type to serve stored manifest bytes with: the parsed type, else
/// the body's own `mediaType`, else schema 1's signed type for
/// `schemaVersion: 1` (content another registry may have stored).
pub fn served_media_type(content: &[u8]) -> String {
    if let Ok(m) = parse(None, content) {
        return m.media_type;
    }
    let value: Value = serde_json::from_slice(content).unwrap_or(Value::Null);
    if let Some(media_type) = value.get("mediaType").and_then(Value::as_str) {
        return media_type.to_owned();
    }
    if value.get("schemaVersion").and_then(Value::as_i64) == Some(1) {
        return "application/vnd.docker.distribution.manifest.v1+prettyjws".to_owned();
    }
    OCI_MANIFEST.to_owned()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::properties::{self, SOME};
    use proptest::prelude::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn image(extra: &str) -> String {
        format!(
            r#"{{"schemaVersion":2,{extra}"config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{D}","size":0}},"layers":[]}}"#
        )
    }

    #[test]
    fn oci_image_without_media_type_is_sniffed() {
        let m = parse(None, image("").as_bytes()).unwrap();
        assert_eq!(m.media_type, OCI_MANIFEST);
        assert_eq!(m.kind, Kind::Image);
        assert_eq!(
            m.artifact_type.as_deref(),
            Some("application/vnd.oci.image.config.v1+json")
        );
        assert_eq!(m.required_blobs().count(), 1);
    }

    #[test]
    fn content_type_must_agree() {
        let body = image(&format!(r#""mediaType":"{OCI_MANIFEST}","#));
        assert!(parse(Some(OCI_INDEX), body.as_bytes()).is_err());
        assert!(parse(Some(OCI_MANIFEST), body.as_bytes()).is_ok());
    }

    #[test]
    fn rejects_malformed() {
        assert!(parse(None, b"{").is_err());
        assert!(parse(None, br#"{"schemaVersion":1}"#).is_err());
        assert!(
            parse(
                None,
                br#"{"schemaVersion":2,"mediaType":"text/plain","config":{}}"#
            )
            .is_err()
        );
        let bad_digest = image("").replace(D, "sha256:abc");
        assert!(parse(None, bad_digest.as_bytes()).is_err());
    }

    #[test]
    fn index_with_subject() {
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","artifactType":"x/y","manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{D}","size":2}}],"subject":{{"mediaType":"{OCI_MANIFEST}","digest":"{D}","size":2}}}}"#
        );
        let m = parse(None, body.as_bytes()).unwrap();
        assert_eq!(m.kind, Kind::Index);
        assert_eq!(m.artifact_type.as_deref(), Some("x/y"));
        assert!(m.subject.is_some());
    }

    /// Media types and digests that manifests hold, and stranger text.
    fn word() -> impl Strategy<Value = String> {
        prop_oneof![
            prop::sample::select(vec![
                OCI_MANIFEST,
                OCI_INDEX,
                DOCKER_MANIFEST,
                DOCKER_LIST,
                "application/vnd.oci.image.config.v1+json",
                "application/vnd.oci.image.layer.v1.tar+gzip",
                "application/vnd.oci.image.layer.nondistributable.v1.tar",
                D,
                "sha256:abc",
                "",
            ])
            .prop_map(str::to_owned),
            any::<String>(),
        ]
    }

    /// The top-level fields of manifests and indexes.
    const FIELDS: [&str; 8] = [
        "schemaVersion",
        "mediaType",
        "artifactType",
        "config",
        "layers",
        "manifests",
        "subject",
        "annotations",
    ];

    /// JSON documents whose keys are mostly a manifest's, nested a few deep.
    pub(crate) fn manifest_like() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            prop_oneof![Just(2i64), Just(1), Just(-1), any::<i64>()].prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            word().prop_map(Value::from),
        ];
        let key = prop_oneof![
            prop::sample::select([&FIELDS[..], &["digest", "size", "urls"]].concat())
                .prop_map(str::to_owned),
            any::<String>(),
        ];
        leaf.prop_recursive(4, 48, 6, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map(key.clone(), inner, 0..7)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// A well-formed image or index with one field replaced by `value`.
    fn near_valid() -> impl Strategy<Value = Value> {
        let descriptor = |media_type: &str| serde_json::json!({ "mediaType": media_type, "digest": D, "size": 2 });
        let image = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": descriptor("application/vnd.oci.image.config.v1+json"),
            "layers": [descriptor("application/vnd.oci.image.layer.v1.tar+gzip")],
            "subject": descriptor(OCI_MANIFEST),
        });
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [descriptor(OCI_MANIFEST)],
        });
        let field = prop::sample::select(&FIELDS[..]);
        (prop::bool::ANY, field, manifest_like()).prop_map(move |(is_image, field, value)| {
            let mut document = if is_image {
                image.clone()
            } else {
                index.clone()
            };
            document[field] = value;
            document
        })
    }

    /// Bodies to push: manifest-like JSON, near-valid manifests, any bytes.
    pub(crate) fn bodies() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            manifest_like().prop_map(|v| v.to_string().into_bytes()),
            near_valid().prop_map(|v| v.to_string().into_bytes()),
            any::<Vec<u8>>(),
        ]
    }

    /// `Content-Type` headers a client may send with a manifest.
    pub(crate) fn content_types() -> impl Strategy<Value = Option<String>> {
        prop::option::of(prop_oneof![
            word(),
            word().prop_map(|w| format!("{w}; charset=utf-8")),
        ])
    }

    #[test]
    fn property_manifests_parse_to_a_known_type_or_an_error() {
        properties::check(
            "manifests parse to a known type or an error",
            SOME,
            (content_types(), bodies()),
            |(content_type, body)| {
                if let Ok(manifest) = parse(content_type.as_deref(), &body) {
                    prop_assert_eq!(kind_of(&manifest.media_type), Some(manifest.kind));
                    prop_assert_eq!(manifest.kind == Kind::Image, manifest.config.is_some());
                }
                served_media_type(&body);
                Ok(())
            },
        );
    }
}
