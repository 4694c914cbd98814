//! The node cache (`berth.nodecache`) in front of a real S3 server (MinIO),
//! with GETs of blobs counted on the S3 side from MinIO's own trace: a
//! second pull makes no S3 GET of its blobs; a 100 MiB cache under 300 MiB
//! of pulls stays within its bound and keeps serving correct bytes; a
//! cache file damaged on disk is detected and fetched again; SIGKILL in
//! the middle of a fill leaves no partial entry; eight concurrent GETs of
//! one uncached blob make one S3 GET.

use std::collections::HashMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use berth_tests::http::{Client, assert_status, open_request};
use berth_tests::images::{OciLayout, assert_same_image, random_bytes, single_image_layout};
use berth_tests::metrics;
use berth_tests::minio::{Minio, S3Bucket};
use berth_tests::oci::{push_blob, sha256_digest};
use berth_tests::proxy::TcpProxy;
use berth_tests::registry::{BerthRegistry, RegistryOptions};
use berth_tests::skopeo::{Skopeo, docker_ref};
use berth_tests::yaml::quoted;
use tempfile::TempDir;

const MIB: usize = 1024 * 1024;
const REPO: &str = "cache/app";

/// MinIO with a bucket, a node cache directory, and a registry over both.
struct Node {
    minio: Minio,
    bucket: S3Bucket,
    cache: TempDir,
    registry: BerthRegistry,
}

/// Options for a registry on `bucket` with a node cache of `max_bytes` in `cache`.
fn cached_options(
    bucket: &S3Bucket,
    cache: &Path,
    max_bytes: usize,
    redirect: bool,
) -> RegistryOptions {
    RegistryOptions::new().s3(bucket, redirect).section(
        "berth.nodecache",
        &format!("path: {}\nmaxbytes: {max_bytes}", quoted(cache.display())),
    )
}

fn node(name: &str, max_bytes: usize, redirect: bool) -> Node {
    let minio = Minio::start();
    let bucket = minio.create_bucket(name).with_root_directory("/registry");
    let cache = tempfile::Builder::new()
        .prefix("node-cache-")
        .tempdir()
        .expect("temporary directory");
    let registry = BerthRegistry::start(cached_options(&bucket, cache.path(), max_bytes, redirect));
    Node {
        minio,
        bucket,
        cache,
        registry,
    }
}

/// The cache file of the blob `digest`.
fn entry_path(cache: &Path, digest: &str) -> PathBuf {
    let (algorithm, hex) = digest.split_once(':').expect("a digest");
    cache.join("blobs").join(algorithm).join(hex)
}

/// Bytes of every file below `dir`, each file counted once: a fill renamed
/// from the spool into `blobs/` while the walk runs is seen by its inode,
/// whichever directory the walk finds it in (or both).
fn dir_bytes(dir: &Path) -> u64 {
    let mut files = HashMap::new();
    files_below(dir, &mut files);
    files.values().sum()
}

/// Sizes of the files below `dir`, by inode.
fn files_below(dir: &Path, files: &mut HashMap<u64, u64>) {
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        match entry.metadata() {
            Ok(m) if m.is_dir() => files_below(&entry.path(), files),
            Ok(m) => {
                files.insert(m.ino(), m.len());
            }
            Err(_) => {}
        }
    }
}

/// Names of the files in `dir` (none when it is missing).
fn files_in(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// GETs the blob `digest` of [`REPO`] and asserts 200 with bytes that hash to it.
fn get_blob(client: &Client, digest: &str, what: &str) {
    let reply = client.get(&format!("/v2/{REPO}/blobs/{digest}"));
    assert_status(&reply, 200, what);
    assert_eq!(sha256_digest(&reply.body), digest, "{what}: wrong bytes");
}

/// The value of the node cache's metric `name` on `client`'s server.
fn cache_metric(client: &Client, name: &str) -> f64 {
    metrics::scrape(client).sum(name, &[])
}

/// The blob's key suffix in the bucket (`.../<hex>/data`).
fn data_key(digest: &str) -> String {
    let hex = digest.split_once(':').map_or(digest, |(_, h)| h);
    format!("/{hex}/data")
}

/// Waits until `done` holds, up to 20 seconds.
fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_second_pull_makes_no_s3_get_of_its_blobs() {
    // Redirects on: with a node cache, blob GETs are still served by the node.
    let node = node("second-pull", 1024 * MIB, true);
    let work = tempfile::tempdir().expect("temporary directory");
    let (layout, _) = single_image_layout(&work.path().join("src"), "v1", &[8 * MIB, 3 * MIB, MIB]);
    let skopeo = Skopeo::new();
    let reference = docker_ref(&node.registry.addr(), REPO, "v1");
    skopeo.copy(&layout.reference("v1"), &reference);
    let blobs = layout.reachable().blobs;
    let trace = node.minio.trace();
    let count = || -> usize {
        blobs
            .iter()
            .map(|d| trace.get_objects(&node.minio, &node.bucket, &data_key(d)))
            .sum()
    };

    let first = work.path().join("first");
    skopeo.copy(&reference, &format!("oci:{}:v1", first.display()));
    assert_same_image(&layout, &OciLayout::open(&first), "v1");
    let after_first = count();
    for digest in &blobs {
        wait_for("the blob's cache entry", || {
            entry_path(node.cache.path(), digest).is_file()
        });
    }
    let second = work.path().join("second");
    skopeo.copy(&reference, &format!("oci:{}:v1", second.display()));
    assert_same_image(&layout, &OciLayout::open(&second), "v1");
    let after_second = count();
    println!(
        "S3 GETs of the image's {} blobs: first pull {after_first}, second pull {}",
        blobs.len(),
        after_second - after_first
    );
    assert_eq!(
        after_first,
        blobs.len(),
        "the first pull fetches each blob once"
    );
    assert_eq!(
        after_second, after_first,
        "the second pull fetches no blob from S3"
    );

    // GET is served by the node, not redirected; HEAD still redirects.
    let client = node.registry.client();
    let digest = blobs.iter().next().expect("a blob");
    get_blob(&client, digest, "GET of a cached blob with redirects on");
    let head = client.head(&format!("/v2/{REPO}/blobs/{digest}"));
    assert_status(&head, 307, "HEAD with redirects on");
    assert_eq!(count(), after_second);
    let hits = cache_metric(&client, "berth_nodecache_hits_total");
    assert!(hits >= (blobs.len() + 1) as f64, "hits: {hits}");
}

#[test]
fn a_100_mib_cache_stays_within_its_bound_under_300_mib_of_pulls() {
    const BOUND: usize = 100 * MIB;
    let node = node("bounded", BOUND, false);
    let client = node.registry.client();
    let digests: Vec<String> = (0..12)
        .map(|_| push_blob(&client, REPO, &random_bytes(25 * MIB)))
        .collect();
    let mut largest = 0;
    let mut check_bound = |what: &str| {
        let bytes = dir_bytes(node.cache.path());
        largest = largest.max(bytes);
        assert!(
            bytes <= BOUND as u64,
            "{what}: the cache holds {bytes} bytes"
        );
    };
    // 300 MiB pulled once, then the last three again, newest first (still
    // cached: served from disk), and the first four again (evicted long
    // ago: fetched again).
    for (i, digest) in digests.iter().enumerate() {
        get_blob(&client, digest, &format!("first GET of blob {i}"));
        check_bound(&format!("after blob {i}"));
    }
    let hits_before = cache_metric(&client, "berth_nodecache_hits_total");
    let again = digests.iter().enumerate().rev().take(3);
    for (i, digest) in again.chain(digests.iter().enumerate().take(4)) {
        get_blob(&client, digest, &format!("second GET of blob {i}"));
        check_bound(&format!("after blob {i} again"));
    }
    wait_for("the fills to finish", || {
        files_in(&node.cache.path().join("spool")).is_empty()
    });
    check_bound("at rest");
    let scrape = metrics::scrape(&client);
    let hits = scrape.sum("berth_nodecache_hits_total", &[]) - hits_before;
    let evictions = scrape.sum("berth_nodecache_evictions_total", &[]);
    let gauge = scrape.sum("berth_nodecache_bytes", &[]);
    println!(
        "100 MiB cache under 300 MiB of pulls (+200 MiB again): largest {:.1} MiB on disk, {evictions} evictions, {hits} of the last three re-read from disk, {:.1} MiB held",
        largest as f64 / MIB as f64,
        gauge / MIB as f64
    );
    assert_eq!(hits, 3.0, "recently used blobs are served from disk");
    assert!(evictions >= 8.0, "evictions: {evictions}");
    assert_eq!(gauge as u64, dir_bytes(&node.cache.path().join("blobs")));
}

#[test]
fn a_damaged_cache_file_is_detected_and_fetched_again() {
    let mut node = node("damaged", 1024 * MIB, false);
    let client = node.registry.client();
    let digest = push_blob(&client, REPO, &random_bytes(4 * MIB + 5));
    let trace = node.minio.trace();
    let key = data_key(&digest);
    get_blob(&client, &digest, "the GET that fills the cache");
    let entry = entry_path(node.cache.path(), &digest);
    wait_for("the cache entry", || entry.is_file());
    assert_eq!(trace.get_objects(&node.minio, &node.bucket, &key), 1);

    // Bytes flipped on disk while the server is down: the first GET after
    // the restart hashes the entry before serving it, drops it, and is
    // answered with the right bytes through a new fetch.
    node.registry.kill();
    let mut bytes = fs::read(&entry).expect("read the entry");
    for b in &mut bytes[MIB..MIB + 16] {
        *b ^= 0xff;
    }
    fs::write(&entry, &bytes).expect("damage the entry");
    node.registry.restart();
    let client = node.registry.client();
    get_blob(&client, &digest, "the first GET after the restart");
    assert_eq!(cache_metric(&client, "berth_nodecache_corrupt_total"), 1.0);
    assert_eq!(trace.get_objects(&node.minio, &node.bucket, &key), 2);
    wait_for("the refetched entry", || {
        fs::read(&entry).is_ok_and(|b| sha256_digest(&b) == digest)
    });

    // A file truncated under a running server: caught by its size on the next GET.
    fs::OpenOptions::new()
        .write(true)
        .open(&entry)
        .and_then(|f| f.set_len(MIB as u64))
        .expect("truncate the entry");
    get_blob(&client, &digest, "the GET after truncation");
    assert_eq!(cache_metric(&client, "berth_nodecache_corrupt_total"), 2.0);
    assert_eq!(trace.get_objects(&node.minio, &node.bucket, &key), 3);
    println!(
        "damaged entries: both detected on the next GET, which got the right bytes; 3 S3 GETs in all"
    );
}

#[test]
fn sigkill_during_a_fill_leaves_no_partial_entry() {
    // The registry reaches MinIO through a proxy the test cuts mid-fill, so
    // the fill is certainly under way when the registry is killed.
    let minio = Minio::start();
    let bucket = minio
        .create_bucket("killed")
        .with_root_directory("/registry");
    let proxy = TcpProxy::start(
        minio
            .endpoint()
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("MinIO's port"),
    );
    let mut through_proxy = bucket.clone();
    through_proxy.endpoint = format!("http://127.0.0.1:{}", proxy.port());
    let cache = tempfile::tempdir().expect("temporary directory");
    let mut registry = BerthRegistry::start(cached_options(
        &through_proxy,
        cache.path(),
        1024 * MIB,
        false,
    ));
    let client = registry.client();
    let size = 32 * MIB;
    let digest = push_blob(&client, REPO, &random_bytes(size));

    let spool = cache.path().join("spool");
    let mut request = open_request(
        &registry.addr(),
        "GET",
        &format!("/v2/{REPO}/blobs/{digest}"),
        &[],
        None,
    )
    .expect("open a GET");
    // The response starts once MinIO has answered the fill's GET; the
    // fill's source is cut as soon as its first bytes are in the spool
    // file, so it stops part way.
    let mut head = [0u8; 4096];
    let read = request.read(&mut head).expect("the response starts");
    assert!(String::from_utf8_lossy(&head[..read]).starts_with("HTTP/1.1 200"));
    let deadline = Instant::now() + Duration::from_secs(20);
    while dir_bytes(&spool) == 0 {
        assert!(Instant::now() < deadline, "the fill wrote nothing");
    }
    proxy.cut();
    thread::sleep(Duration::from_millis(300));
    let spooled = files_in(&spool);
    let partial: u64 = dir_bytes(&spool);
    assert_eq!(spooled.len(), 1, "one fill under way: {spooled:?}");
    assert!(partial < size as u64, "mid-fill spool: {partial} bytes");
    registry.kill();
    drop(request);
    let entry = entry_path(cache.path(), &digest);
    assert!(!entry.exists(), "no entry for a fill that never finished");

    // Restart talking to MinIO directly.
    let config = fs::read_to_string(registry.config_path()).expect("read the config");
    fs::write(
        registry.config_path(),
        config.replace(&through_proxy.endpoint, &bucket.endpoint),
    )
    .expect("rewrite the config");
    registry.restart();
    assert!(files_in(&spool).is_empty(), "the spool is cleared at start");
    assert!(!entry.exists());
    let client = registry.client();
    get_blob(&client, &digest, "GET after the restart");
    wait_for("the entry", || {
        fs::metadata(&entry).is_ok_and(|m| m.len() == size as u64)
    });
    println!(
        "killed mid-fill with {:.1} of {} MiB spooled: no entry after the restart, the blob served whole",
        partial as f64 / MIB as f64,
        size / MIB
    );
}

#[test]
fn eight_concurrent_gets_of_an_uncached_blob_make_one_s3_get() {
    let node = node("concurrent", 1024 * MIB, false);
    let client = node.registry.client();
    let digest = push_blob(&client, REPO, &random_bytes(64 * MIB));
    let trace = node.minio.trace();
    let readers: Vec<_> = (0..8)
        .map(|i| {
            let (client, digest) = (node.registry.client(), digest.clone());
            thread::spawn(move || get_blob(&client, &digest, &format!("concurrent GET {i}")))
        })
        .collect();
    for reader in readers {
        reader.join().expect("a reader panicked");
    }
    let gets = trace.get_objects(&node.minio, &node.bucket, &data_key(&digest));
    println!("8 concurrent GETs of one uncached 64 MiB blob: {gets} S3 GET of it");
    assert_eq!(gets, 1);
}
