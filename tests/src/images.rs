//! Test images as OCI image layouts on disk (`oci-layout`, `index.json`,
//! `blobs/sha256/...`): gzip-compressed tar layers of random, incompressible
//! content, image configs whose `rootfs.diff_ids` match, image manifests and
//! multi-platform indexes; and reading a layout back to compare what two
//! layouts hold.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use flate2::Compression;
use flate2::write::GzEncoder;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use crate::oci::{
    self, Descriptor, OCI_CONFIG, OCI_INDEX, OCI_LAYER_GZIP, OCI_MANIFEST, digest_matches,
    is_image_manifest, is_index, sha256_digest,
};

/// The annotation that names a tag in an OCI layout's `index.json`.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// An operating system and CPU architecture pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    /// `os`, e.g. `linux`.
    pub os: String,
    /// `architecture`, e.g. `amd64`.
    pub architecture: String,
}

impl Platform {
    /// `linux/amd64`.
    pub fn linux_amd64() -> Platform {
        Platform {
            os: "linux".into(),
            architecture: "amd64".into(),
        }
    }

    /// `linux/arm64`.
    pub fn linux_arm64() -> Platform {
        Platform {
            os: "linux".into(),
            architecture: "arm64".into(),
        }
    }

    fn to_json(&self) -> Value {
        json!({"os": self.os, "architecture": self.architecture})
    }
}

/// `len` random bytes (incompressible).
pub fn random_bytes(len: usize) -> Vec<u8> {
    let mut rng = SmallRng::from_rng(&mut rand::rng());
    let mut buf = vec![0u8; len];
    rng.fill_bytes(&mut buf);
    buf
}

/// A layer: a gzip-compressed tar and the digest of the uncompressed tar.
#[derive(Debug, Clone)]
pub struct Layer {
    /// The `.tar.gz` bytes, as stored in a blob.
    pub compressed: Vec<u8>,
    /// `sha256:` of the uncompressed tar (the config's `diff_id`).
    pub diff_id: String,
}

/// A layer holding one regular file `name` of `size` random bytes.
///
/// The content is random, so deflate cannot shrink it: the gzip stream uses
/// stored (level 0) deflate blocks, a valid gzip member that is much faster
/// to produce in unoptimised test builds.
pub fn random_layer(name: &str, size: usize) -> Layer {
    let tar = tar_with_file(name, &random_bytes(size));
    let diff_id = sha256_digest(&tar);
    let mut gz = GzEncoder::new(Vec::with_capacity(tar.len() + 1024), Compression::none());
    gz.write_all(&tar).expect("gzip in memory");
    Layer {
        compressed: gz.finish().expect("gzip in memory"),
        diff_id,
    }
}

/// A ustar archive with a single regular file.
fn tar_with_file(name: &str, content: &[u8]) -> Vec<u8> {
    assert!(name.len() < 100, "tar member name too long");
    let mut header = [0u8; 512];
    let field = |h: &mut [u8; 512], offset: usize, value: &[u8]| {
        h[offset..offset + value.len()].copy_from_slice(value);
    };
    field(&mut header, 0, name.as_bytes());
    field(&mut header, 100, b"0000644\0");
    field(&mut header, 108, b"0000000\0");
    field(&mut header, 116, b"0000000\0");
    field(
        &mut header,
        124,
        format!("{:011o}\0", content.len()).as_bytes(),
    );
    field(
        &mut header,
        136,
        format!("{:011o}\0", 1_700_000_000u64).as_bytes(),
    );
    field(&mut header, 156, b"0");
    field(&mut header, 257, b"ustar\0");
    field(&mut header, 263, b"00");
    // The checksum is computed with its own field read as spaces.
    field(&mut header, 148, b"        ");
    let sum: u32 = header.iter().map(|&b| u32::from(b)).sum();
    field(&mut header, 148, format!("{sum:06o}\0 ").as_bytes());

    let padded = content.len().div_ceil(512) * 512;
    let mut tar = Vec::with_capacity(512 + padded + 1024);
    tar.extend_from_slice(&header);
    tar.extend_from_slice(content);
    tar.resize(512 + padded, 0);
    tar.resize(tar.len() + 1024, 0); // two zero blocks end the archive
    tar
}

/// Manifests and blobs reachable from some root descriptors of a layout.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reachable {
    /// Digests of image manifests and indexes.
    pub manifests: BTreeSet<String>,
    /// Digests of configs and layers.
    pub blobs: BTreeSet<String>,
}

impl Reachable {
    /// Manifests and blobs together.
    pub fn all(&self) -> BTreeSet<String> {
        self.manifests.union(&self.blobs).cloned().collect()
    }
}

/// An OCI image layout directory.
#[derive(Debug, Clone)]
pub struct OciLayout {
    dir: PathBuf,
}

impl OciLayout {
    /// Create an empty layout at `dir` (created if missing).
    pub fn create(dir: &Path) -> OciLayout {
        fs::create_dir_all(dir.join("blobs").join("sha256")).expect("create layout");
        fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)
            .expect("write oci-layout");
        let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []});
        fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap())
            .expect("write index.json");
        OciLayout {
            dir: dir.to_path_buf(),
        }
    }

    /// A layout that already exists at `dir` (e.g. written by skopeo).
    pub fn open(dir: &Path) -> OciLayout {
        assert!(
            dir.join("index.json").is_file(),
            "{} is not an OCI layout (no index.json)",
            dir.display()
        );
        OciLayout {
            dir: dir.to_path_buf(),
        }
    }

    /// The layout directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A skopeo/containers-image reference to `tag` in this layout: `oci:DIR:TAG`.
    pub fn reference(&self, tag: &str) -> String {
        format!("oci:{}:{tag}", self.dir.display())
    }

    /// Where the blob `digest` lives in the layout.
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        let (algorithm, hex) = digest.split_once(':').expect("digest has an algorithm");
        self.dir.join("blobs").join(algorithm).join(hex)
    }

    /// Store `bytes` as a blob and return its descriptor.
    pub fn write_blob(&self, media_type: &str, bytes: &[u8]) -> Descriptor {
        let descriptor = Descriptor::of(media_type, bytes);
        fs::write(self.blob_path(&descriptor.digest), bytes).expect("write blob");
        descriptor
    }

    /// The content of blob `digest`, checked against the digest.
    pub fn read_blob(&self, digest: &str) -> Vec<u8> {
        let path = self.blob_path(digest);
        let bytes = fs::read(&path).unwrap_or_else(|e| panic!("read blob {}: {e}", path.display()));
        assert_eq!(
            digest_matches(digest, &bytes),
            Some(true),
            "blob {} does not hash to its name",
            path.display()
        );
        bytes
    }

    /// Write an image for `platform` with one random layer per entry of
    /// `layer_sizes` (the size of the file inside each layer), its config and
    /// its manifest; return the manifest's descriptor. Not tagged.
    pub fn add_image(&self, platform: &Platform, layer_sizes: &[usize]) -> Descriptor {
        let mut layers = Vec::new();
        let mut diff_ids = Vec::new();
        let mut history = Vec::new();
        for (i, &size) in layer_sizes.iter().enumerate() {
            let layer = random_layer(&format!("layer-{i}.bin"), size);
            layers.push(self.write_blob(OCI_LAYER_GZIP, &layer.compressed));
            diff_ids.push(layer.diff_id);
            history.push(json!({
                "created": "2024-01-01T00:00:00Z",
                "created_by": format!("berth-tests: layer {i} with {size} random bytes"),
            }));
        }
        let config = json!({
            "created": "2024-01-01T00:00:00Z",
            "architecture": platform.architecture,
            "os": platform.os,
            "config": {
                "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                "Cmd": ["/bin/sh"],
            },
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": history,
        });
        let config = self.write_blob(OCI_CONFIG, &serde_json::to_vec(&config).unwrap());
        self.write_blob(OCI_MANIFEST, &oci::image_manifest(&config, &layers))
    }

    /// Write an OCI index over `manifests`, each with its platform, and
    /// return its descriptor. Not tagged.
    pub fn add_index(&self, manifests: &[(Descriptor, Platform)]) -> Descriptor {
        let entries: Vec<Value> = manifests
            .iter()
            .map(|(descriptor, platform)| {
                let mut entry = descriptor.to_json();
                entry["platform"] = platform.to_json();
                entry
            })
            .collect();
        let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries});
        self.write_blob(OCI_INDEX, &serde_json::to_vec(&index).unwrap())
    }

    /// Reference `descriptor` from `index.json` under `tag`.
    pub fn tag(&self, descriptor: &Descriptor, tag: &str) {
        let mut index = self.index();
        let mut entry = descriptor.to_json();
        entry["annotations"] = json!({ REF_NAME: tag });
        index["manifests"]
            .as_array_mut()
            .expect("index.json has manifests")
            .push(entry);
        fs::write(
            self.dir.join("index.json"),
            serde_json::to_vec(&index).unwrap(),
        )
        .expect("write index.json");
    }

    /// The parsed `index.json`.
    pub fn index(&self) -> Value {
        let bytes = fs::read(self.dir.join("index.json")).expect("read index.json");
        serde_json::from_slice(&bytes).expect("index.json is JSON")
    }

    /// Every tagged descriptor of `index.json`, by tag.
    pub fn tags(&self) -> BTreeMap<String, Descriptor> {
        let index = self.index();
        let mut tags = BTreeMap::new();
        for entry in index["manifests"].as_array().into_iter().flatten() {
            if let Some(tag) = entry["annotations"][REF_NAME].as_str() {
                tags.insert(tag.to_owned(), descriptor_from_json(entry));
            }
        }
        tags
    }

    /// The descriptor tagged `tag`; panics when there is none.
    pub fn tagged(&self, tag: &str) -> Descriptor {
        self.tags()
            .remove(tag)
            .unwrap_or_else(|| panic!("{} has no tag {tag}: {}", self.dir.display(), self.index()))
    }

    /// Every manifest and blob reachable from `index.json`.
    pub fn reachable(&self) -> Reachable {
        let mut out = Reachable::default();
        for entry in self.index()["manifests"].as_array().into_iter().flatten() {
            self.walk(&descriptor_from_json(entry), &mut out);
        }
        out
    }

    /// Every manifest and blob reachable from `root`, each read and checked
    /// against its digest.
    pub fn reachable_from(&self, root: &Descriptor) -> Reachable {
        let mut out = Reachable::default();
        self.walk(root, &mut out);
        out
    }

    fn walk(&self, descriptor: &Descriptor, out: &mut Reachable) {
        let bytes = self.read_blob(&descriptor.digest);
        assert_eq!(
            bytes.len() as u64,
            descriptor.size,
            "size of {} in {}",
            descriptor.digest,
            self.dir.display()
        );
        let value: Value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("manifest {} is not JSON: {e}", descriptor.digest));
        let media_type = value["mediaType"]
            .as_str()
            .unwrap_or(&descriptor.media_type)
            .to_owned();
        out.manifests.insert(descriptor.digest.clone());
        if is_index(&media_type) {
            for child in value["manifests"].as_array().into_iter().flatten() {
                self.walk(&descriptor_from_json(child), out);
            }
        } else if is_image_manifest(&media_type) {
            let mut blobs = vec![descriptor_from_json(&value["config"])];
            blobs.extend(
                value["layers"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(descriptor_from_json),
            );
            for blob in blobs {
                let data = self.read_blob(&blob.digest);
                assert_eq!(data.len() as u64, blob.size, "size of blob {}", blob.digest);
                out.blobs.insert(blob.digest);
            }
        } else {
            panic!(
                "unexpected manifest media type {media_type} for {}",
                descriptor.digest
            );
        }
    }
}

/// A descriptor read from OCI JSON.
pub fn descriptor_from_json(value: &Value) -> Descriptor {
    Descriptor {
        media_type: value["mediaType"].as_str().unwrap_or_default().to_owned(),
        digest: value["digest"]
            .as_str()
            .unwrap_or_else(|| panic!("descriptor without digest: {value}"))
            .to_owned(),
        size: value["size"]
            .as_u64()
            .unwrap_or_else(|| panic!("descriptor without size: {value}")),
    }
}

/// A layout at `dir` holding one image for linux/amd64 with layers of
/// `layer_sizes`, tagged `tag`. Returns the layout and the manifest descriptor.
pub fn single_image_layout(
    dir: &Path,
    tag: &str,
    layer_sizes: &[usize],
) -> (OciLayout, Descriptor) {
    let layout = OciLayout::create(dir);
    let manifest = layout.add_image(&Platform::linux_amd64(), layer_sizes);
    layout.tag(&manifest, tag);
    (layout, manifest)
}

/// A layout at `dir` holding the image `tag` of `base` with one more layer
/// on top (a file of `size` random bytes), tagged `tag`: a new image whose
/// other layers a node may already hold. Returns the layout and the
/// manifest's descriptor.
pub fn image_on_top(
    base: &OciLayout,
    tag: &str,
    dir: &Path,
    size: usize,
) -> (OciLayout, Descriptor) {
    let layout = OciLayout::create(dir);
    let json = |digest: &str| -> Value {
        serde_json::from_slice(&base.read_blob(digest)).expect("a JSON blob")
    };
    let mut manifest = json(&base.tagged(tag).digest);
    let mut config = json(manifest["config"]["digest"].as_str().expect("a config"));
    for layer in manifest["layers"].as_array().expect("layers") {
        let digest = layer["digest"].as_str().expect("a layer digest");
        fs::copy(base.blob_path(digest), layout.blob_path(digest)).expect("copy a layer");
    }
    let extra = random_layer("berth-tests-on-top.bin", size);
    let extra_descriptor = layout.write_blob(OCI_LAYER_GZIP, &extra.compressed);
    config["rootfs"]["diff_ids"]
        .as_array_mut()
        .expect("diff_ids")
        .push(json!(extra.diff_id));
    let config_type = manifest["config"]["mediaType"]
        .as_str()
        .unwrap_or(OCI_CONFIG)
        .to_owned();
    let config = layout.write_blob(&config_type, &serde_json::to_vec(&config).expect("JSON"));
    manifest["config"] = config.to_json();
    manifest["layers"]
        .as_array_mut()
        .expect("layers")
        .push(extra_descriptor.to_json());
    let manifest = layout.write_blob(OCI_MANIFEST, &serde_json::to_vec(&manifest).expect("JSON"));
    layout.tag(&manifest, tag);
    (layout, manifest)
}

/// A layout at `dir` holding an OCI index over two images, linux/amd64 and
/// linux/arm64, each with layers of `layer_sizes`, the index tagged `tag`.
/// Returns the layout and the index descriptor.
pub fn multi_arch_layout(dir: &Path, tag: &str, layer_sizes: &[usize]) -> (OciLayout, Descriptor) {
    let layout = OciLayout::create(dir);
    let platforms = [Platform::linux_amd64(), Platform::linux_arm64()];
    let manifests: Vec<(Descriptor, Platform)> = platforms
        .into_iter()
        .map(|p| (layout.add_image(&p, layer_sizes), p))
        .collect();
    let index = layout.add_index(&manifests);
    layout.tag(&index, tag);
    (layout, index)
}

/// Assert that `actual` holds, under `tag`, the very content `expected`
/// holds under the same tag: the same root digest and the same sets of
/// manifest and blob digests reachable from it (each verified on read).
pub fn assert_same_image(expected: &OciLayout, actual: &OciLayout, tag: &str) {
    let want = expected.tagged(tag);
    let got = actual.tagged(tag);
    assert_eq!(
        got.digest,
        want.digest,
        "tag {tag}: {} holds a different root digest than {}",
        actual.dir().display(),
        expected.dir().display()
    );
    let want_set = expected.reachable_from(&want);
    let got_set = actual.reachable_from(&got);
    assert_eq!(
        got_set.manifests, want_set.manifests,
        "tag {tag}: manifest digests differ"
    );
    assert_eq!(
        got_set.blobs, want_set.blobs,
        "tag {tag}: blob digests differ"
    );
}

/// Assert that `actual` holds the same tags as `expected`, each naming the
/// same content (see [`assert_same_image`]).
pub fn assert_same_layout(expected: &OciLayout, actual: &OciLayout) {
    let want: Vec<String> = expected.tags().into_keys().collect();
    let got: Vec<String> = actual.tags().into_keys().collect();
    assert_eq!(
        got,
        want,
        "{} and {} hold different tags",
        actual.dir().display(),
        expected.dir().display()
    );
    for tag in &want {
        assert_same_image(expected, actual, tag);
    }
}
