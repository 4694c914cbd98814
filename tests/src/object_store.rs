//! The scenarios every object-store driver must pass, written once for any
//! emulator: the OCI conformance suite, skopeo round trips with a 200 MiB
//! layer, two instances sharing a chunked upload, the emulator stopped
//! mid-push, wrong credentials, a missing container or bucket, and a
//! throughput figure against the emulator's own upload and download.

use std::fs;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use crate::azurite::{AzureContainer, Azurite};
use crate::conformance;
use crate::curl::{self, Transfer};
use crate::fake_gcs::{FakeGcs, GcsBucket};
use crate::http::{Client, assert_status};
use crate::images::{
    OciLayout, Platform, assert_same_image, assert_same_layout, multi_arch_layout, random_bytes,
};
use crate::metrics;
use crate::minio::ObjectInfo;
use crate::oci::{location_path, sha256_digest, start_upload, with_query};
use crate::registry::{BerthRegistry, RegistryOptions};
use crate::skopeo::{Skopeo, docker_ref};
use crate::storage::BadBlob;

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;

/// An emulated object store, and how a registry is pointed at a place in it.
pub trait Emulator: Sized {
    /// A container or bucket, with the settings a registry needs.
    type Place: Clone;
    /// The driver's name (`azure`, `gcs`).
    const DRIVER: &'static str;
    /// Starts the emulator.
    fn start() -> Self;
    /// Creates the place `name`, the layout below `/registry`.
    fn create(&self, name: &str) -> Self::Place;
    /// The place `name`, not created.
    fn missing(&self, name: &str) -> Self::Place;
    /// The `storage.<driver>` section for `place`.
    fn section(place: &Self::Place) -> String;
    /// What a redirect to a blob of `place` starts with.
    fn redirect_prefix(&self, place: &Self::Place) -> String;
    /// Every blob of the layout in `place`, checked against its digest.
    fn verify_blobs(&self, place: &Self::Place) -> (usize, Vec<BadBlob>);
    /// Every object of `place` whose name starts with `prefix`.
    fn list(&self, place: &Self::Place, prefix: &str) -> Vec<ObjectInfo>;
    /// The name prefix of the registry layout in `place`.
    fn v2_prefix(place: &Self::Place) -> String;
    /// Uploads `file` as the object `name` of `place`, straight to the emulator.
    fn put_file(&self, place: &Self::Place, name: &str, file: &Path) -> Transfer;
    /// Downloads the object `name` of `place` into `file`.
    fn get_file(&self, place: &Self::Place, name: &str, file: &Path) -> Transfer;
    /// Stops the emulator, keeping its data.
    fn stop(&mut self);
    /// Starts it again on the same data and port.
    fn start_again(&mut self);
    /// The emulator's log.
    fn log(&self) -> String;
    /// The environment CNCF Distribution v3 needs to reach the emulator.
    fn distribution_env(&self) -> Vec<(&'static str, String)> {
        Vec::new()
    }
    /// Registry options storing in `place`.
    fn options(place: &Self::Place, redirect: bool) -> RegistryOptions {
        RegistryOptions::new().storage_section(
            &format!("storage.{}", Self::DRIVER),
            &Self::section(place),
            redirect,
        )
    }
    /// Asserts every blob in `place` is whole; returns how many there are.
    fn assert_blobs_intact(&self, place: &Self::Place) -> usize {
        let (checked, bad) = self.verify_blobs(place);
        assert!(
            bad.is_empty(),
            "blobs in the {} store that do not match their name: {bad:#?}",
            Self::DRIVER
        );
        checked
    }
}

impl Emulator for Azurite {
    type Place = AzureContainer;
    const DRIVER: &'static str = "azure";
    fn start() -> Self {
        Azurite::start()
    }
    fn create(&self, name: &str) -> AzureContainer {
        self.create_container(name).with_root_directory("/registry")
    }
    fn missing(&self, name: &str) -> AzureContainer {
        self.container(name)
    }
    fn section(place: &AzureContainer) -> String {
        place.section()
    }
    fn redirect_prefix(&self, place: &AzureContainer) -> String {
        place.service_url.clone()
    }
    fn verify_blobs(&self, place: &AzureContainer) -> (usize, Vec<BadBlob>) {
        Azurite::verify_blobs(self, place)
    }
    fn list(&self, place: &AzureContainer, prefix: &str) -> Vec<ObjectInfo> {
        self.list_blobs(&place.container, prefix)
    }
    fn v2_prefix(place: &AzureContainer) -> String {
        place.v2_prefix()
    }
    fn put_file(&self, place: &AzureContainer, name: &str, file: &Path) -> Transfer {
        Azurite::put_file(self, &place.container, name, file)
    }
    fn get_file(&self, place: &AzureContainer, name: &str, file: &Path) -> Transfer {
        Azurite::get_file(self, &place.container, name, file)
    }
    fn stop(&mut self) {
        Azurite::stop(self)
    }
    fn start_again(&mut self) {
        Azurite::start_again(self)
    }
    fn log(&self) -> String {
        Azurite::log(self)
    }
}

/// fake-gcs-server with a service account key file for every bucket (so
/// redirects are signed), kept in its own directory.
pub struct Gcs {
    /// The emulator.
    pub server: FakeGcs,
    keys: tempfile::TempDir,
}

impl Gcs {
    /// The key file buckets are given.
    pub fn keyfile(&self) -> std::path::PathBuf {
        self.keys.path().join("key.json")
    }
}

impl Emulator for Gcs {
    type Place = GcsBucket;
    const DRIVER: &'static str = "gcs";
    fn start() -> Self {
        let keys = tempfile::tempdir().expect("temporary directory");
        crate::fake_gcs::write_keyfile(&keys.path().join("key.json"));
        Gcs {
            server: FakeGcs::start(),
            keys,
        }
    }
    fn create(&self, name: &str) -> GcsBucket {
        self.server
            .create_bucket(name)
            .with_root_directory("/registry")
            .with_keyfile(&self.keyfile())
    }
    fn missing(&self, name: &str) -> GcsBucket {
        self.server.bucket(name).with_keyfile(&self.keyfile())
    }
    fn section(place: &GcsBucket) -> String {
        place.section()
    }
    /// Google's Go client (Distribution's) finds an emulator through
    /// `STORAGE_EMULATOR_HOST`.
    fn distribution_env(&self) -> Vec<(&'static str, String)> {
        let host = self
            .server
            .endpoint()
            .trim_start_matches("http://")
            .to_owned();
        vec![("STORAGE_EMULATOR_HOST", host)]
    }
    fn redirect_prefix(&self, place: &GcsBucket) -> String {
        place.endpoint.clone()
    }
    fn verify_blobs(&self, place: &GcsBucket) -> (usize, Vec<BadBlob>) {
        self.server.verify_blobs(place)
    }
    fn list(&self, place: &GcsBucket, prefix: &str) -> Vec<ObjectInfo> {
        self.server.list_objects(&place.bucket, prefix)
    }
    fn v2_prefix(place: &GcsBucket) -> String {
        place.v2_prefix()
    }
    fn put_file(&self, place: &GcsBucket, name: &str, file: &Path) -> Transfer {
        self.server.put_file(&place.bucket, name, file)
    }
    fn get_file(&self, place: &GcsBucket, name: &str, file: &Path) -> Transfer {
        self.server.get_file(&place.bucket, name, file)
    }
    fn stop(&mut self) {
        self.server.stop()
    }
    fn start_again(&mut self) {
        self.server.start_again()
    }
    fn log(&self) -> String {
        self.server.log()
    }
}

/// The OCI conformance suite against a registry on `E`, with blob
/// redirects on or off; prints the counts.
pub fn conformance<E: Emulator>(redirect: bool) {
    let store = E::start();
    let place = store.create("conformance");
    let registry = BerthRegistry::start(E::options(&place, redirect).delete_enabled(true));
    let totals = conformance::run(&registry.addr(), || {
        format!("{}\n--- emulator log ---\n{}", registry.log(), store.log())
    });
    let mode = if redirect { "on" } else { "off" };
    println!(
        "conformance ({}, redirect {mode}): {} passed, {} failed",
        E::DRIVER,
        totals.pass,
        totals.failed()
    );
    println!(
        "conformance ({}, redirect {mode}): {} skipped, {} disabled",
        E::DRIVER,
        totals.skip,
        totals.disabled
    );
    store.assert_blobs_intact(&place);
}

/// A blob `GET` answers 307 into the store when redirects are on (and the
/// redirect serves the bytes), 200 with the bytes when they are off.
fn assert_blob_served<E: Emulator>(
    store: &E,
    place: &E::Place,
    client: &Client,
    repo: &str,
    expected: &[u8],
    redirect: bool,
) {
    let digest = sha256_digest(expected);
    let target = format!("/v2/{repo}/blobs/{digest}");
    let reply = client.get(&target);
    let body = if redirect {
        assert_status(&reply, 307, &format!("GET {target} with redirects on"));
        let location = reply.header("location").expect("307 with a Location");
        let prefix = store.redirect_prefix(place);
        assert!(
            location.starts_with(&prefix),
            "GET {target}: redirected to {location}, not into the store at {prefix}"
        );
        let followed = client.get(location);
        assert_status(&followed, 200, &format!("GET the signed URL {location}"));
        followed.body
    } else {
        assert_status(&reply, 200, &format!("GET {target} with redirects off"));
        reply.body
    };
    assert!(body == expected, "GET {target}: different bytes");
}

/// skopeo pushes and pulls a multi-layer image with a 200 MiB layer and a
/// two-platform index, with redirects on and off.
pub fn skopeo_round_trips<E: Emulator>() {
    let work = tempfile::tempdir().unwrap();
    let src = OciLayout::create(&work.path().join("src"));
    let big = src.add_image(
        &Platform::linux_amd64(),
        &[4 * KIB, 3 * MIB, 200 * MIB, 12 * MIB],
    );
    src.tag(&big, "big");
    let platforms = [Platform::linux_amd64(), Platform::linux_arm64()];
    let children: Vec<_> = platforms
        .into_iter()
        .map(|p| (src.add_image(&p, &[8 * KIB, 6 * MIB]), p))
        .collect();
    let index = src.add_index(&children);
    src.tag(&index, "multi");
    let big_layer = src
        .reachable_from(&big)
        .blobs
        .into_iter()
        .max_by_key(|d| fs::metadata(src.blob_path(d)).unwrap().len())
        .unwrap();

    let store = E::start();
    let skopeo = Skopeo::new();
    for redirect in [true, false] {
        let mode = if redirect { "on" } else { "off" };
        let place = store.create(&format!("skopeo-redirect-{mode}"));
        let registry = BerthRegistry::start(E::options(&place, redirect));
        let addr = registry.addr();
        let repo = format!("{}/app", E::DRIVER);
        let started = Instant::now();
        for tag in ["big", "multi"] {
            skopeo.copy(&src.reference(tag), &docker_ref(&addr, &repo, tag));
        }
        let pushed = started.elapsed();
        let dst = work.path().join(format!("dst-{mode}"));
        let started = Instant::now();
        for tag in ["big", "multi"] {
            skopeo.copy(
                &docker_ref(&addr, &repo, tag),
                &format!("oci:{}:{tag}", dst.display()),
            );
        }
        let pulled = started.elapsed();
        let dst = OciLayout::open(&dst);
        assert_same_image(&src, &dst, "big");
        assert_same_image(&src, &dst, "multi");
        assert_same_layout(&src, &dst);
        println!(
            "skopeo through {} (redirect {mode}): pushed in {:.1} s, pulled in {:.1} s",
            E::DRIVER,
            pushed.as_secs_f64(),
            pulled.as_secs_f64()
        );
        let client = registry.client();
        let config = src.reachable_from(&big).blobs.into_iter().next().unwrap();
        assert_blob_served(
            &store,
            &place,
            &client,
            &repo,
            &src.read_blob(&config),
            redirect,
        );
        let head = client.head(&format!("/v2/{repo}/blobs/{big_layer}"));
        if redirect {
            assert_status(&head, 307, "HEAD the 200 MiB layer with redirects on");
        } else {
            assert_status(&head, 200, "HEAD the 200 MiB layer with redirects off");
            let size = fs::metadata(src.blob_path(&big_layer))
                .unwrap()
                .len()
                .to_string();
            assert_eq!(head.header("content-length"), Some(size.as_str()));
        }
        let checked = store.assert_blobs_intact(&place);
        assert!(checked >= 10, "only {checked} blobs in the store");
    }
}

/// Push `content` as one upload whose chunks, cut at `cuts`, alternate
/// between `clients` (starting with the second), complete it on the first,
/// and return the digest.
pub fn alternate_chunks(
    clients: [&Client; 2],
    repo: &str,
    content: &[u8],
    cuts: &[usize],
) -> String {
    let mut location = location_path(&start_upload(clients[0], repo));
    for (i, window) in cuts.windows(2).enumerate() {
        let client = clients[(i + 1) % 2];
        let (start, end) = (window[0], window[1]);
        let range = format!("{start}-{}", end - 1);
        let reply = client.patch(
            &location,
            &[
                ("Content-Type", "application/octet-stream"),
                ("Content-Range", &range),
            ],
            &content[start..end],
        );
        assert_status(
            &reply,
            202,
            &format!(
                "PATCH {range} on instance {}",
                if i % 2 == 0 { "B" } else { "A" }
            ),
        );
        assert_eq!(
            reply.header("range"),
            Some(format!("0-{}", end - 1).as_str()),
            "PATCH {range}: the upload's range"
        );
        location = location_path(reply.header("location").unwrap_or(&location));
    }
    let status = clients[0].get(&location);
    assert_status(&status, 204, "upload status");
    assert_eq!(
        status.header("range"),
        Some(format!("0-{}", content.len() - 1).as_str()),
        "every chunk is in the upload"
    );
    let digest = sha256_digest(content);
    let reply = clients[0].put(&with_query(&location, "digest", &digest), &[], b"");
    assert_status(&reply, 201, "complete the upload");
    assert_eq!(reply.header("docker-content-digest"), Some(digest.as_str()));
    digest
}

/// Two instances on one place: what one pushes the other pulls, and a
/// chunked upload (chunks larger and smaller than a part) alternates
/// between them.
pub fn two_instances<E: Emulator>() {
    let store = E::start();
    let place = store.create("shared");
    let work = tempfile::tempdir().unwrap();
    let a = BerthRegistry::start(E::options(&place, false));
    let b = BerthRegistry::start(E::options(&place, true));
    let (layout, index) =
        multi_arch_layout(&work.path().join("src"), "v1", &[16 * KIB, 7 * MIB, MIB]);
    let skopeo = Skopeo::new();
    skopeo.copy(
        &layout.reference("v1"),
        &docker_ref(&a.addr(), "shared/app", "v1"),
    );
    let pulled = work.path().join("pulled");
    skopeo.copy(
        &docker_ref(&b.addr(), "shared/app", "v1"),
        &format!("oci:{}:v1", pulled.display()),
    );
    let pulled = OciLayout::open(&pulled);
    assert_same_image(&layout, &pulled, "v1");
    assert_eq!(pulled.tagged("v1").digest, index.digest);

    let (ca, cb) = (a.client(), b.client());
    let content = random_bytes(24 * MIB + 4321);
    let cuts = [
        0,
        9 * MIB,
        9 * MIB + 100 * KIB,
        17 * MIB,
        17 * MIB + 17,
        21 * MIB + 3,
        24 * MIB,
        24 * MIB + 4321,
    ];
    let digest = alternate_chunks([&ca, &cb], "chunks/big", &content, &cuts);
    let small = random_bytes(300 * KIB + 5);
    let small_cuts = [
        0,
        64 * KIB,
        64 * KIB + 1,
        200 * KIB,
        300 * KIB,
        300 * KIB + 5,
    ];
    let small_digest = alternate_chunks([&cb, &ca], "chunks/small", &small, &small_cuts);
    for (name, client) in [("A", &ca), ("B", &cb)] {
        for (repo, digest, bytes) in [("big", &digest, &content), ("small", &small_digest, &small)]
        {
            let reply = client.get(&format!("/v2/chunks/{repo}/blobs/{digest}"));
            let reply = match reply.status {
                307 => client.get(reply.header("location").unwrap_or_default()),
                _ => reply,
            };
            assert_status(&reply, 200, &format!("GET the {repo} blob from {name}"));
            assert!(reply.body == *bytes, "the {repo} blob from {name} differs");
        }
    }
    store.assert_blobs_intact(&place);
}

/// `/readyz` answers 200 within 30 s.
pub fn wait_ready(client: &Client) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let reply = client.get("/readyz");
        if reply.status == 200 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz did not answer 200 within 30 s:\n{}",
            reply.describe()
        );
        thread::sleep(Duration::from_millis(100));
    }
}

/// The emulator stopped while skopeo streams a layer: the push fails, the
/// registry stays up and unready, nothing partial is visible after the
/// restart, and the retried push succeeds.
pub fn stopped_mid_push<E: Emulator>() {
    let mut store = E::start();
    let place = store.create("faults");
    let work = tempfile::tempdir().unwrap();
    let mut registry = BerthRegistry::start(E::options(&place, false));
    let client = registry.client();
    let (layout, manifest) =
        crate::images::single_image_layout(&work.path().join("src"), "v1", &[64 * KIB, 96 * MIB]);
    let target = docker_ref(&registry.addr(), "faults/app", "v1");
    let push = {
        let source = layout.reference("v1");
        let target = target.clone();
        thread::spawn(move || Skopeo::new().try_copy(&source, &target))
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while metrics::scrape(&client).sum("berth_uploads_in_flight", &[]) < 1.0 {
        assert!(
            !push.is_finished(),
            "the push ended before an upload was seen in flight"
        );
        assert!(
            Instant::now() < deadline,
            "no upload in flight within 120 s"
        );
        thread::sleep(Duration::from_millis(10));
    }
    store.stop();
    let error = match push.join().unwrap() {
        Ok(_) => panic!("the push succeeded although the emulator was stopped during it"),
        Err(e) => e,
    };
    println!(
        "push with the {} emulator stopped failed as it should: {}",
        E::DRIVER,
        error.stderr.lines().last().unwrap_or_default()
    );
    assert_status(
        &client.get("/readyz"),
        503,
        "/readyz while the emulator is down",
    );
    assert!(
        registry.is_running(),
        "the registry exited while the emulator was down"
    );

    store.start_again();
    wait_ready(&client);
    for digest in &layout.reachable_from(&manifest).blobs {
        let reply = client.get(&format!("/v2/faults/app/blobs/{digest}"));
        match reply.status {
            404 => {}
            200 => assert!(
                reply.body == layout.read_blob(digest),
                "blob {digest} is visible with other content"
            ),
            _ => panic!("GET blob {digest} after the restart:\n{}", reply.describe()),
        }
    }
    let manifest_reply = crate::oci::get_manifest(&client, "faults/app", "v1");
    assert_status(&manifest_reply, 404, "the tag of the failed push");
    store.assert_blobs_intact(&place);

    let skopeo = Skopeo::new();
    skopeo.copy(&layout.reference("v1"), &target);
    let pulled = work.path().join("pulled");
    skopeo.copy(&target, &format!("oci:{}:v1", pulled.display()));
    assert_same_image(&layout, &OciLayout::open(&pulled), "v1");
    store.assert_blobs_intact(&place);
}

/// A registry on `place` whose backend refuses it: `/readyz` answers 503
/// naming `name`, storage requests fail, and the process keeps running.
pub fn refused_names_the_place<E: Emulator>(store: &E, place: &E::Place, name: &str) {
    let mut registry = BerthRegistry::start(E::options(place, false));
    let client = registry.client();
    for _ in 0..3 {
        let reply = client.get("/readyz");
        assert_status(&reply, 503, "/readyz");
        assert!(
            reply.text().contains(name),
            "/readyz does not name {name}:\n{}",
            reply.describe()
        );
    }
    let reply = client.get("/v2/some/repo/tags/list");
    assert!(
        reply.status >= 500 || reply.status == 404,
        "a tags list:\n{}",
        reply.describe()
    );
    assert_status(&client.get("/healthz"), 200, "/healthz");
    assert!(
        registry.is_running(),
        "the registry exited:\n{}",
        registry.log()
    );
    let _ = store;
}

/// A missing container or bucket: `/readyz` answers 503 naming it until it
/// is created, and then 200 from the same process.
pub fn missing_place<E: Emulator>() {
    let store = E::start();
    let name = "place-that-is-not-there";
    let place = store.missing(name);
    let registry = BerthRegistry::start(E::options(&place, false));
    let client = registry.client();
    let reply = client.get("/readyz");
    assert_status(&reply, 503, "/readyz with a missing container or bucket");
    assert!(
        reply.text().contains(name),
        "/readyz does not name it:\n{}",
        reply.describe()
    );
    drop(registry);
    refused_names_the_place(&store, &place, name);
    store.create(name);
    let registry = BerthRegistry::start(E::options(&place, false));
    wait_ready(&registry.client());
}

/// Push and pull of a 200 MiB blob through the registry (curl, no
/// redirect) next to the same bytes straight to and from the emulator;
/// prints MB/s.
pub fn throughput<E: Emulator>() {
    let store = E::start();
    let place = store.create("throughput");
    let registry = BerthRegistry::start(E::options(&place, false));
    let work = tempfile::tempdir().unwrap();
    let size = 200 * MIB;
    let content = random_bytes(size);
    let digest = sha256_digest(&content);
    let file = work.path().join("layer.bin");
    fs::write(&file, &content).unwrap();
    drop(content);
    let mb = size as f64 / 1e6;

    let client = registry.client();
    let location = start_upload(&client, "throughput/layer");
    let url = client.url(&with_query(&location, "digest", &digest));
    let push = curl::run(
        &[
            "-X".into(),
            "PUT".into(),
            "-H".into(),
            "Content-Type: application/octet-stream".into(),
            "-T".into(),
            file.display().to_string(),
            url,
        ],
        None,
    );
    assert_eq!(
        push.status,
        201,
        "push the 200 MiB blob: {}",
        push.describe()
    );
    let pulled = work.path().join("pulled.bin");
    let pull = curl::run(
        &[client.url(&format!("/v2/throughput/layer/blobs/{digest}"))],
        Some(&pulled),
    );
    assert_eq!(
        pull.status,
        200,
        "pull the 200 MiB blob: {}",
        pull.describe()
    );
    assert_eq!(
        sha256_digest(&fs::read(&pulled).unwrap()),
        digest,
        "the pulled blob"
    );

    let put = store.put_file(&place, "direct/layer.bin", &file);
    let direct = work.path().join("direct.bin");
    let get = store.get_file(&place, "direct/layer.bin", &direct);
    assert_eq!(sha256_digest(&fs::read(&direct).unwrap()), digest);
    let rate = |t: &Transfer| mb / t.elapsed.as_secs_f64();
    println!(
        "{} throughput: push {:.1} MB/s (direct upload {:.1} MB/s), pull {:.1} MB/s (direct download {:.1} MB/s)",
        E::DRIVER,
        rate(&push),
        rate(&put),
        rate(&pull),
        rate(&get)
    );
}
