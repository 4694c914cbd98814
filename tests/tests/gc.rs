//! `berth-registry gc`: correctness of what it deletes and keeps, dry runs,
//! indexes and referrers, safety while clients push and pull, and recovery
//! from a collection killed mid-sweep.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use berth_tests::azurite::Azurite;
use berth_tests::http::Client;
use berth_tests::images::{OciLayout, random_layer};
use berth_tests::minio::{Minio, ObjectInfo, S3Bucket};
use berth_tests::object_store::{Emulator, Gcs};
use berth_tests::oci::{self, Descriptor, OCI_CONFIG, OCI_LAYER_GZIP, OCI_MANIFEST};
use berth_tests::registry::{self, BerthRegistry, RegistryOptions};
use berth_tests::skopeo::{Skopeo, docker_ref};
use serde_json::{Value, json};

/// The servers' grace period (`berth.gcgraceperiod`), and the collections'
/// too. Servers refresh a touch every quarter of it, so a client that saw
/// a blob present has three quarters of it (4.5 s) to push the manifest
/// that references it; a shorter grace lost images when the machine was
/// busy.
const GRACE_CONFIG: &str = "gcgraceperiod: 6s";
const GRACE: &str = "6s";
/// Long enough for content to fall out of the grace period.
const PAST_GRACE: Duration = Duration::from_millis(6500);

/// The storage driver a test runs on.
#[derive(Debug, Clone, Copy)]
enum Driver {
    Filesystem,
    S3,
    Azure,
    Gcs,
}

/// A registry with deletes on and a short grace period, and its storage.
struct Setup {
    registry: BerthRegistry,
    /// Lists the objects below a prefix of the layout in the backend
    /// (object stores), with what keeps the backend running.
    store: Option<Box<dyn ObjectLister + Send + Sync>>,
}

/// An object store and the place a registry keeps its layout in.
trait ObjectLister {
    /// The layout's name prefix (`<root>/docker/registry/v2`).
    fn v2_prefix(&self) -> String;
    /// Every object whose name starts with `prefix`.
    fn list(&self, prefix: &str) -> Vec<ObjectInfo>;
}

impl ObjectLister for (Minio, S3Bucket) {
    fn v2_prefix(&self) -> String {
        self.1.v2_prefix()
    }
    fn list(&self, prefix: &str) -> Vec<ObjectInfo> {
        self.0.list_objects(&self.1.bucket, prefix)
    }
}

/// An emulator and its place.
struct Emulated<E: Emulator>(E, E::Place);

impl<E: Emulator> ObjectLister for Emulated<E> {
    fn v2_prefix(&self) -> String {
        E::v2_prefix(&self.1)
    }
    fn list(&self, prefix: &str) -> Vec<ObjectInfo> {
        self.0.list(&self.1, prefix)
    }
}

/// An emulator with the place `gc-tests`, and a registry's options on it
/// (redirects off: tests read blobs through the registry).
fn emulated<E: Emulator + Send + Sync + 'static>(options: RegistryOptions) -> Setup
where
    E::Place: Send + Sync,
{
    let store = E::start();
    let place = store.create("gc-tests");
    let section = E::options(&place, false);
    let registry = BerthRegistry::start(options.storage_from(&section));
    Setup {
        registry,
        store: Some(Box::new(Emulated(store, place))),
    }
}

impl Setup {
    fn start(driver: Driver) -> Setup {
        let options = RegistryOptions::new()
            .delete_enabled(true)
            .section("berth", GRACE_CONFIG);
        match driver {
            Driver::Filesystem => Setup {
                registry: BerthRegistry::start(options),
                store: None,
            },
            Driver::Azure => emulated::<Azurite>(options),
            Driver::Gcs => emulated::<Gcs>(options),
            Driver::S3 => {
                let minio = Minio::start();
                let bucket = minio
                    .create_bucket("gc-tests")
                    .with_root_directory("registry");
                // Redirects off: tests read blobs through the registry.
                let registry = BerthRegistry::start(options.s3(&bucket, false));
                Setup {
                    registry,
                    store: Some(Box::new((minio, bucket))),
                }
            }
        }
    }

    /// Sizes of the stored blobs, by digest, read from the backend itself.
    fn blobs(&self) -> BTreeMap<String, u64> {
        match &self.store {
            None => stored_blobs(self.registry.root()),
            Some(store) => {
                let prefix = format!("{}/blobs/", store.v2_prefix());
                store
                    .list(&prefix)
                    .into_iter()
                    .filter_map(|o| {
                        let parts: Vec<&str> = o.key[prefix.len()..].split('/').collect();
                        match parts.as_slice() {
                            [alg, _, hex, "data"] => Some((format!("{alg}:{hex}"), o.size)),
                            _ => None,
                        }
                    })
                    .collect()
            }
        }
    }
}

/// Runs `berth-registry gc` against the registry's config.
fn gc_output(registry: &BerthRegistry, args: &[&str]) -> std::process::Output {
    let home = tempfile::tempdir().expect("temporary home");
    Command::new(registry::binary())
        .arg("gc")
        .arg("--config")
        .arg(registry.config_path())
        .args(["--grace-period", GRACE])
        .args(args)
        .env_clear()
        .env("PATH", berth_tests::tools::child_path())
        .env("HOME", home.path())
        .output()
        .expect("run berth-registry gc")
}

/// Runs `berth-registry gc` against the registry's config and returns its report.
fn gc(registry: &BerthRegistry, args: &[&str]) -> Value {
    let out = gc_output(registry, args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "gc {args:?} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("gc report is not JSON ({e}): {stdout}"))
}

fn number(report: &Value, key: &str) -> u64 {
    report[key]
        .as_u64()
        .unwrap_or_else(|| panic!("report has no {key}: {report}"))
}

/// Sizes of the blob files under the storage root, by digest.
fn stored_blobs(root: &Path) -> BTreeMap<String, u64> {
    let mut blobs = BTreeMap::new();
    let base = root.join("docker/registry/v2/blobs");
    let Ok(algs) = std::fs::read_dir(&base) else {
        return blobs;
    };
    for alg in algs.flatten() {
        for prefix in std::fs::read_dir(alg.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            for blob in std::fs::read_dir(prefix.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                if let Ok(meta) = std::fs::metadata(blob.path().join("data")) {
                    let digest = format!(
                        "{}:{}",
                        alg.file_name().to_string_lossy(),
                        blob.file_name().to_string_lossy()
                    );
                    blobs.insert(digest, meta.len());
                }
            }
        }
    }
    blobs
}

/// Everything a tagged image is made of: manifest, config and layers, each
/// fetched and checked against its digest.
fn verify_image(client: &Client, repo: &str, tag: &str) -> Result<BTreeSet<String>, String> {
    let reply = client.get_with(
        &format!("/v2/{repo}/manifests/{tag}"),
        &[(
            "Accept",
            "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json",
        )],
    );
    if reply.status != 200 {
        return Err(format!(
            "{repo}:{tag}: manifest GET answered {}",
            reply.status
        ));
    }
    let mut parts = BTreeSet::from([oci::sha256_digest(&reply.body)]);
    let manifest: Value =
        serde_json::from_slice(&reply.body).map_err(|e| format!("{repo}:{tag}: {e}"))?;
    let children = manifest["manifests"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for child in children {
        let digest = child["digest"].as_str().unwrap_or_default();
        let reply = client.get_with(
            &format!("/v2/{repo}/manifests/{digest}"),
            &[("Accept", OCI_MANIFEST)],
        );
        if reply.status != 200 || oci::sha256_digest(&reply.body) != digest {
            return Err(format!(
                "{repo}:{tag}: child manifest {digest} answered {}",
                reply.status
            ));
        }
        parts.insert(digest.to_owned());
        let child: Value = serde_json::from_slice(&reply.body).map_err(|e| e.to_string())?;
        parts.extend(verify_blobs(client, repo, &child)?);
    }
    parts.extend(verify_blobs(client, repo, &manifest)?);
    Ok(parts)
}

fn verify_blobs(client: &Client, repo: &str, manifest: &Value) -> Result<BTreeSet<String>, String> {
    let mut digests = BTreeSet::new();
    let descriptors = manifest["config"]
        .as_object()
        .map(|c| Value::Object(c.clone()))
        .into_iter();
    let layers = manifest["layers"].as_array().cloned().unwrap_or_default();
    for descriptor in descriptors.chain(layers) {
        let digest = descriptor["digest"].as_str().unwrap_or_default().to_owned();
        let reply = client.get(&format!("/v2/{repo}/blobs/{digest}"));
        if reply.status != 200 || oci::sha256_digest(&reply.body) != digest {
            return Err(format!(
                "{repo}: blob {digest} answered {} ({} bytes)",
                reply.status,
                reply.body.len()
            ));
        }
        digests.insert(digest);
    }
    Ok(digests)
}

/// A layout of images that share base layers: `count` images, each with the
/// shared layers and one layer of its own, tagged `img-<i>`.
fn shared_base_layout(
    dir: &Path,
    shared: &[Descriptor],
    shared_diff_ids: &[String],
    count: usize,
    own_size: usize,
) -> OciLayout {
    let layout = OciLayout::create(dir);
    for i in 0..count {
        let own = random_layer(&format!("own-{i}.bin"), own_size);
        let mut layers = shared.to_vec();
        layers.push(layout.write_blob(OCI_LAYER_GZIP, &own.compressed));
        let mut diff_ids = shared_diff_ids.to_vec();
        diff_ids.push(own.diff_id);
        let config = json!({
            "architecture": "amd64", "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "config": {"Labels": {"image": i.to_string()}},
        });
        let config = layout.write_blob(
            OCI_CONFIG,
            &serde_json::to_vec(&config).expect("config JSON"),
        );
        let manifest = layout.write_blob(OCI_MANIFEST, &oci::image_manifest(&config, &layers));
        layout.tag(&manifest, &format!("img-{i}"));
    }
    layout
}

/// Writes `count` random shared layers into a scratch layout and returns
/// their descriptors, diff ids and bytes.
fn shared_layers(count: usize, size: usize) -> (Vec<Descriptor>, Vec<String>, Vec<Vec<u8>>) {
    let mut descriptors = Vec::new();
    let mut diff_ids = Vec::new();
    let mut bytes = Vec::new();
    for i in 0..count {
        let layer = random_layer(&format!("base-{i}.bin"), size);
        descriptors.push(Descriptor::of(OCI_LAYER_GZIP, &layer.compressed));
        diff_ids.push(layer.diff_id);
        bytes.push(layer.compressed);
    }
    (descriptors, diff_ids, bytes)
}

/// Copies the shared layer bytes into `layout` (descriptors already point at them).
fn add_shared(layout: &OciLayout, bytes: &[Vec<u8>]) {
    for b in bytes {
        layout.write_blob(OCI_LAYER_GZIP, b);
    }
}

fn push_all(
    skopeo: &Skopeo,
    layout: &OciLayout,
    registry: &BerthRegistry,
    repo: &str,
    tags: impl IntoIterator<Item = String>,
) {
    for tag in tags {
        skopeo.copy(
            &layout.reference(&tag),
            &docker_ref(&registry.addr(), repo, &tag),
        );
    }
}

#[test]
fn fs_frees_exactly_what_deleted_images_held_and_dry_run_agrees() {
    frees_exactly_what_deleted_images_held_and_dry_run_agrees(Driver::Filesystem);
}

#[test]
fn s3_frees_exactly_what_deleted_images_held_and_dry_run_agrees() {
    frees_exactly_what_deleted_images_held_and_dry_run_agrees(Driver::S3);
}

fn frees_exactly_what_deleted_images_held_and_dry_run_agrees(driver: Driver) {
    let setup = Setup::start(driver);
    let registry = &setup.registry;
    let client = registry.client();
    let skopeo = Skopeo::new();
    let dir = tempfile::tempdir().expect("temporary directory");
    let (shared, diff_ids, bytes) = shared_layers(2, 300_000);
    let layout = shared_base_layout(&dir.path().join("layout"), &shared, &diff_ids, 3, 200_000);
    add_shared(&layout, &bytes);
    push_all(
        &skopeo,
        &layout,
        registry,
        "app/one",
        (0..3).map(|i| format!("img-{i}")),
    );
    // The same images in a second repository: deleting from one must not free what the other uses.
    push_all(&skopeo, &layout, registry, "app/two", ["img-0".to_owned()]);

    let before = setup.blobs();
    let keep: BTreeSet<String> = ["img-0", "img-1"]
        .iter()
        .flat_map(|t| verify_image(&client, "app/one", t).expect("image before gc"))
        .collect();
    let doomed = verify_image(&client, "app/one", "img-2").expect("image before gc");
    let only_doomed: BTreeSet<&String> = doomed.iter().filter(|d| !keep.contains(*d)).collect();
    let expected_bytes: u64 = only_doomed.iter().map(|d| before[*d]).sum();
    assert_eq!(
        only_doomed.len(),
        3,
        "img-2 alone holds its manifest, config and own layer"
    );

    // Delete the tag only: the manifest stays, untagged, until --delete-untagged.
    let reply = client.delete("/v2/app/one/manifests/img-2");
    assert_eq!(reply.status, 202, "{}", reply.describe());
    thread::sleep(PAST_GRACE);

    let kept_run = gc(registry, &[]);
    assert_eq!(
        number(&kept_run, "blobsDeleted"),
        0,
        "without --delete-untagged the untagged image stays: {kept_run}"
    );
    assert_eq!(setup.blobs(), before);

    let dry = gc(registry, &["--delete-untagged", "--dry-run"]);
    assert_eq!(setup.blobs(), before, "a dry run deletes nothing");
    let real = gc(registry, &["--delete-untagged"]);
    println!("gc report: {real}");
    for key in ["manifestsDeleted", "blobsDeleted", "bytesFreed"] {
        assert_eq!(
            number(&dry, key),
            number(&real, key),
            "dry run and real run differ on {key}"
        );
    }
    assert_eq!(number(&real, "manifestsDeleted"), 1, "{real}");
    assert_eq!(number(&real, "blobsDeleted"), 3, "{real}");
    assert_eq!(
        number(&real, "bytesFreed"),
        expected_bytes,
        "freed bytes must equal what img-2 alone held"
    );

    let after = setup.blobs();
    for digest in &only_doomed {
        assert!(!after.contains_key(*digest), "{digest} should be gone");
    }
    for digest in &keep {
        assert!(after.contains_key(digest), "{digest} must stay");
    }
    for tag in ["img-0", "img-1"] {
        verify_image(&client, "app/one", tag).expect("kept image after gc");
        let pulled = OciLayout::create(&dir.path().join(format!("pull-{tag}")));
        skopeo.copy(
            &docker_ref(&registry.addr(), "app/one", tag),
            &pulled.reference(tag),
        );
        berth_tests::images::assert_same_image(&layout, &pulled, tag);
    }
    verify_image(&client, "app/two", "img-0").expect("the other repository's image");
    assert_eq!(client.get("/v2/app/one/manifests/img-2").status, 404);

    // A second run finds nothing more.
    let again = gc(registry, &["--delete-untagged"]);
    assert_eq!(number(&again, "blobsDeleted"), 0, "{again}");
}

#[test]
fn fs_index_and_referrers_live_and_die_with_their_tag() {
    index_and_referrers_live_and_die_with_their_tag(Driver::Filesystem);
}

#[test]
fn s3_index_and_referrers_live_and_die_with_their_tag() {
    index_and_referrers_live_and_die_with_their_tag(Driver::S3);
}

fn index_and_referrers_live_and_die_with_their_tag(driver: Driver) {
    let setup = Setup::start(driver);
    let registry = &setup.registry;
    let client = registry.client();
    let skopeo = Skopeo::new();
    let dir = tempfile::tempdir().expect("temporary directory");
    let (layout, index) =
        berth_tests::images::multi_arch_layout(&dir.path().join("layout"), "multi", &[50_000]);
    skopeo.copy(
        &layout.reference("multi"),
        &docker_ref(&registry.addr(), "app/multi", "multi"),
    );

    // An artifact (say, a signature) whose subject is the index, pushed untagged.
    let sig_layer = b"signature bytes".to_vec();
    let sig_blob = Descriptor::of("application/vnd.example.signature", &sig_layer);
    let empty = b"{}".to_vec();
    let empty_config = Descriptor::of("application/vnd.oci.empty.v1+json", &empty);
    for (descriptor, content) in [(&sig_blob, &sig_layer), (&empty_config, &empty)] {
        let reply = client.post(
            &format!("/v2/app/multi/blobs/uploads/?digest={}", descriptor.digest),
            &[],
            content,
        );
        assert_eq!(reply.status, 201, "{}", reply.describe());
    }
    let artifact = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.example.signature",
        "config": empty_config.to_json(),
        "layers": [sig_blob.to_json()],
        "subject": index.to_json(),
    });
    let artifact = serde_json::to_vec(&artifact).expect("artifact JSON");
    let artifact_digest = oci::sha256_digest(&artifact);
    let reply = client.put(
        &format!("/v2/app/multi/manifests/{artifact_digest}"),
        &[("Content-Type", OCI_MANIFEST)],
        &artifact,
    );
    assert_eq!(reply.status, 201, "{}", reply.describe());
    thread::sleep(PAST_GRACE);

    let report = gc(registry, &["--delete-untagged"]);
    assert_eq!(
        number(&report, "blobsDeleted"),
        0,
        "a tagged index keeps its children and referrers: {report}"
    );
    verify_image(&client, "app/multi", "multi").expect("index after gc");
    assert_eq!(
        client
            .get_with(
                &format!("/v2/app/multi/manifests/{artifact_digest}"),
                &[("Accept", OCI_MANIFEST)]
            )
            .status,
        200
    );
    let referrers = client
        .get(&format!("/v2/app/multi/referrers/{}", index.digest))
        .json();
    assert_eq!(
        referrers["manifests"].as_array().map(Vec::len),
        Some(1),
        "{referrers}"
    );

    let reply = client.delete("/v2/app/multi/manifests/multi");
    assert_eq!(reply.status, 202, "{}", reply.describe());
    thread::sleep(PAST_GRACE);
    let report = gc(registry, &["--delete-untagged"]);
    // The index, two images (manifest, config, layer each) and the artifact (manifest, layer, config).
    assert_eq!(number(&report, "manifestsDeleted"), 4, "{report}");
    assert_eq!(number(&report, "blobsDeleted"), 10, "{report}");
    assert!(
        setup.blobs().is_empty(),
        "nothing is left: {:?}",
        setup.blobs()
    );
    assert_eq!(
        client
            .get_with(
                &format!("/v2/app/multi/manifests/{artifact_digest}"),
                &[("Accept", OCI_MANIFEST)]
            )
            .status,
        404
    );
    let referrers = client
        .get(&format!("/v2/app/multi/referrers/{}", index.digest))
        .json();
    assert_eq!(
        referrers["manifests"].as_array().map(Vec::len),
        Some(0),
        "{referrers}"
    );
}

/// What the online-safety run did.
#[derive(Debug, Default)]
struct Tally {
    pushes_ok: AtomicUsize,
    pushes_failed: AtomicUsize,
    deletes: AtomicUsize,
    gc_runs: AtomicUsize,
    blobs_deleted: AtomicUsize,
}

#[test]
fn fs_collection_is_safe_while_clients_push_and_pull() {
    collection_is_safe_while_clients_push_and_pull(Driver::Filesystem);
}

#[test]
fn s3_collection_is_safe_while_clients_push_and_pull() {
    collection_is_safe_while_clients_push_and_pull(Driver::S3);
}

#[test]
fn azure_collection_is_safe_while_clients_push_and_pull() {
    collection_is_safe_while_clients_push_and_pull(Driver::Azure);
}

#[test]
fn gcs_collection_is_safe_while_clients_push_and_pull() {
    collection_is_safe_while_clients_push_and_pull(Driver::Gcs);
}

fn collection_is_safe_while_clients_push_and_pull(driver: Driver) {
    const WORKERS: usize = 4;
    const PUSHES_PER_WORKER: usize = 60;
    /// Images per worker; all images share base layers.
    const IMAGES: usize = 10;
    /// One-off images per worker, pushed once and untagged at once: garbage
    /// that no later push touches again, so collections during the run
    /// always have something to sweep.
    const ONE_OFFS: usize = PUSHES_PER_WORKER / 10;

    let setup = Arc::new(Setup::start(driver));
    let dir = tempfile::tempdir().expect("temporary directory");
    let (shared, diff_ids, bytes) = shared_layers(2, 100_000);
    let layout = Arc::new(shared_base_layout(
        &dir.path().join("layout"),
        &shared,
        &diff_ids,
        WORKERS * (IMAGES + ONE_OFFS),
        50_000,
    ));
    add_shared(&layout, &bytes);

    let tally = Arc::new(Tally::default());
    // Tags whose push succeeded and that nobody deleted since: each must pull intact at the end.
    let live: Arc<Mutex<BTreeMap<String, String>>> = Arc::new(Mutex::new(BTreeMap::new()));
    let stop = Arc::new(AtomicBool::new(false));

    let collector = {
        let (setup, tally, stop) = (setup.clone(), tally.clone(), stop.clone());
        thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let report = gc(&setup.registry, &["--delete-untagged"]);
                tally.gc_runs.fetch_add(1, Ordering::SeqCst);
                tally
                    .blobs_deleted
                    .fetch_add(number(&report, "blobsDeleted") as usize, Ordering::SeqCst);
                thread::sleep(Duration::from_millis(300));
            }
        })
    };

    let workers: Vec<_> = (0..WORKERS)
        .map(|w| {
            let (setup, layout, tally, live) =
                (setup.clone(), layout.clone(), tally.clone(), live.clone());
            thread::spawn(move || {
                let skopeo = Skopeo::new();
                let client = setup.registry.client();
                for n in 0..PUSHES_PER_WORKER {
                    // Each worker re-pushes its own images: a push finds the
                    // shared layers present, and its own ones too unless the
                    // collector took them after the tag was deleted.
                    let image = w * IMAGES + n % IMAGES;
                    let tag = format!("w{w}-i{image}");
                    let src = layout.reference(&format!("img-{image}"));
                    match skopeo.try_copy(
                        &src,
                        &docker_ref(&setup.registry.addr(), "online/app", &tag),
                    ) {
                        Ok(_) => {
                            tally.pushes_ok.fetch_add(1, Ordering::SeqCst);
                            live.lock()
                                .expect("live tags")
                                .insert(tag.clone(), format!("img-{image}"));
                        }
                        Err(e) => {
                            tally.pushes_failed.fetch_add(1, Ordering::SeqCst);
                            eprintln!("push {tag} failed (allowed: the client saw it): {e}");
                        }
                    }
                    // Now and then delete another image's tag, making garbage while pushes go on.
                    if n % 2 == 1 {
                        let old = format!("w{w}-i{}", w * IMAGES + (n + 2) % IMAGES);
                        if live.lock().expect("live tags").remove(&old).is_some() {
                            let reply = client.delete(&format!("/v2/online/app/manifests/{old}"));
                            assert_eq!(reply.status, 202, "{}", reply.describe());
                            tally.deletes.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    // Every tenth push, a one-off image goes up and is untagged right away.
                    if n % 10 == 0 {
                        let image = WORKERS * IMAGES + w * ONE_OFFS + n / 10;
                        let tag = format!("w{w}-once{image}");
                        let src = layout.reference(&format!("img-{image}"));
                        if skopeo
                            .try_copy(
                                &src,
                                &docker_ref(&setup.registry.addr(), "online/app", &tag),
                            )
                            .is_ok()
                        {
                            let reply = client.delete(&format!("/v2/online/app/manifests/{tag}"));
                            assert_eq!(reply.status, 202, "{}", reply.describe());
                            tally.deletes.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    // And pull something that should be there.
                    let sample = live.lock().expect("live tags").keys().next_back().cloned();
                    if let Some(sample) = sample {
                        let _ = client.get(&format!("/v2/online/app/manifests/{sample}"));
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("push worker");
    }
    stop.store(true, Ordering::SeqCst);
    collector.join().expect("collector");
    // One more collection after the dust settles, past the grace period.
    thread::sleep(PAST_GRACE);
    let last = gc(&setup.registry, &["--delete-untagged"]);
    tally.gc_runs.fetch_add(1, Ordering::SeqCst);

    let client = setup.registry.client();
    let live = live.lock().expect("live tags").clone();
    let lost: Vec<String> = live
        .keys()
        .filter_map(|tag| verify_image(&client, "online/app", tag).err())
        .collect();
    // A sample also pulls with skopeo.
    let skopeo = Skopeo::new();
    for (i, (tag, image)) in live.iter().enumerate().filter(|(i, _)| i % 10 == 0) {
        let pulled = OciLayout::create(&dir.path().join(format!("pull-{i}")));
        skopeo.copy(
            &docker_ref(&setup.registry.addr(), "online/app", tag),
            &pulled.reference(image),
        );
        berth_tests::images::assert_same_image(&layout, &pulled, image);
    }
    println!(
        "online gc ({driver:?}): {} pushes ok, {} pushes failed, {} tags deleted, {} gc runs deleting {} blobs, {} images verified, {} lost",
        tally.pushes_ok.load(Ordering::SeqCst),
        tally.pushes_failed.load(Ordering::SeqCst),
        tally.deletes.load(Ordering::SeqCst),
        tally.gc_runs.load(Ordering::SeqCst),
        tally.blobs_deleted.load(Ordering::SeqCst) + number(&last, "blobsDeleted") as usize,
        live.len() - lost.len(),
        lost.len(),
    );
    assert!(
        lost.is_empty(),
        "images lost to garbage collection:\n{}",
        lost.join("\n")
    );
    assert!(
        tally.gc_runs.load(Ordering::SeqCst) >= 5,
        "the collector must have run while pushes went on"
    );
    assert!(
        tally.blobs_deleted.load(Ordering::SeqCst) > 0,
        "the collector must have had garbage to delete"
    );
}

#[test]
fn fs_a_collection_killed_mid_sweep_leaves_a_consistent_registry() {
    a_collection_killed_mid_sweep_leaves_a_consistent_registry(Driver::Filesystem);
}

#[test]
fn s3_a_collection_killed_mid_sweep_leaves_a_consistent_registry() {
    a_collection_killed_mid_sweep_leaves_a_consistent_registry(Driver::S3);
}

/// A collection whose storage stops answering fails with the storage's own
/// message (which the CronJob's report and `status.lastGC` carry), not only
/// `UNKNOWN: storage error`.
#[test]
fn s3_a_collection_that_cannot_reach_its_storage_names_the_failure() {
    let mut setup = Setup::start(Driver::S3);
    setup.store = None; // stops MinIO
    let out = gc_output(&setup.registry, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "gc succeeded without storage: {stderr}"
    );
    assert!(
        stderr.contains("garbage collection failed: UNKNOWN: storage error: ")
            && stderr.contains("bucket gc-tests: "),
        "{stderr}"
    );
}

fn a_collection_killed_mid_sweep_leaves_a_consistent_registry(driver: Driver) {
    let setup = Setup::start(driver);
    let registry = &setup.registry;
    let client = registry.client();
    let skopeo = Skopeo::new();
    let dir = tempfile::tempdir().expect("temporary directory");
    let (layout, _) = berth_tests::images::multi_arch_layout(
        &dir.path().join("layout"),
        "keep",
        &[20_000, 30_000],
    );
    skopeo.copy(
        &layout.reference("keep"),
        &docker_ref(&registry.addr(), "app/kept", "keep"),
    );

    // Plenty of garbage: blobs no manifest references, in two repositories.
    for i in 0..1000 {
        let content = format!("garbage blob {i} {}", "x".repeat(i % 100)).into_bytes();
        let digest = oci::sha256_digest(&content);
        let repo = if i % 2 == 0 { "junk/a" } else { "junk/b" };
        let reply = client.post(
            &format!("/v2/{repo}/blobs/uploads/?digest={digest}"),
            &[],
            &content,
        );
        assert_eq!(reply.status, 201, "{}", reply.describe());
    }
    thread::sleep(PAST_GRACE);
    let total = setup.blobs().len();

    // Kill the collector once it has deleted some garbage but not all.
    let home = tempfile::tempdir().expect("temporary home");
    let mut child = Command::new(registry::binary())
        .args(["gc", "--config"])
        .arg(registry.config_path())
        .args(["--grace-period", GRACE, "--delete-untagged"])
        .env_clear()
        .env("PATH", berth_tests::tools::child_path())
        .env("HOME", home.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start gc");
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut killed_with = None;
    while Instant::now() < deadline {
        let left = setup.blobs().len();
        if left < total - 20 {
            child.kill().expect("kill gc");
            killed_with = Some(left);
            break;
        }
        if child.try_wait().expect("poll gc").is_some() {
            break;
        }
        thread::sleep(Duration::from_millis(2));
    }
    let _ = child.wait();
    let left =
        killed_with.expect("gc finished before it could be killed mid-sweep; make more garbage");
    assert!(
        left > 9,
        "gc was killed mid-sweep, with garbage left ({left} of {total} blobs)"
    );

    // The registry still serves the kept image while garbage is half gone.
    verify_image(&client, "app/kept", "keep").expect("kept image after an interrupted gc");
    let report = gc(registry, &["--delete-untagged"]);
    println!("gc ({driver:?}) killed with {left} of {total} blobs left; the next run: {report}");
    let after = setup.blobs();
    assert_eq!(
        after.len(),
        9,
        "only the kept index's content remains: {after:?}"
    );
    verify_image(&client, "app/kept", "keep").expect("kept image after the full run");
    let pulled = OciLayout::create(&dir.path().join("pulled"));
    skopeo.copy(
        &docker_ref(&registry.addr(), "app/kept", "keep"),
        &pulled.reference("keep"),
    );
    berth_tests::images::assert_same_image(&layout, &pulled, "keep");

    // And the whole API still conforms.
    let totals = berth_tests::conformance::run(&registry.addr(), || registry.log());
    println!(
        "conformance after an interrupted gc ({driver:?}): {} passed, {} failed",
        totals.pass,
        totals.failed()
    );
}
