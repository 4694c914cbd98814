//! The s3 driver against a real S3 server (MinIO): the OCI conformance
//! suite with blob redirects on and off; skopeo round trips of multi-layer
//! images and an index with a 200 MiB layer among them; two instances on
//! one bucket, with a chunked upload whose PATCHes alternate between them;
//! faults (MinIO stopped mid-push and restarted, wrong credentials, a
//! missing bucket); written bytes signed over HTTP and not over HTTPS (MinIO
//! with a test CA's certificate); and a measurement of push and pull
//! throughput against direct PUT and GET.

use std::fs;
use std::thread;
use std::time::{Duration, Instant};

use berth_tests::certs::TestCa;
use berth_tests::conformance;
use berth_tests::curl;
use berth_tests::http::{Client, assert_status};
use berth_tests::images::{
    OciLayout, Platform, assert_same_image, assert_same_layout, multi_arch_layout, random_bytes,
};
use berth_tests::metrics;
use berth_tests::minio::{Minio, S3Bucket};
use berth_tests::object_store::alternate_chunks;
use berth_tests::oci::{location_path, push_blob, sha256_digest, start_upload, with_query};
use berth_tests::registry::{BerthRegistry, RegistryOptions};
use berth_tests::skopeo::{Skopeo, docker_ref};

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;

/// MinIO with one bucket `name`; the registry layout goes below `/registry`.
fn minio_with_bucket(name: &str) -> (Minio, S3Bucket) {
    let minio = Minio::start();
    let bucket = minio.create_bucket(name).with_root_directory("/registry");
    (minio, bucket)
}

/// Assert that every blob stored in `bucket` hashes to its key.
fn assert_bucket_blobs_intact(minio: &Minio, bucket: &S3Bucket) -> usize {
    let (checked, bad) = minio.verify_blobs(bucket);
    assert!(
        bad.is_empty(),
        "blobs in the bucket that do not match their key: {bad:#?}"
    );
    checked
}

fn conformance_on_s3(redirect: bool) {
    let (minio, bucket) = minio_with_bucket("conformance");
    let registry = BerthRegistry::start(
        RegistryOptions::new()
            .delete_enabled(true)
            .s3(&bucket, redirect),
    );
    let totals = conformance::run(&registry.addr(), || {
        format!("{}\n--- MinIO log ---\n{}", registry.log(), minio.log())
    });
    let mode = if redirect { "on" } else { "off" };
    println!(
        "conformance (s3, redirect {mode}): {} passed, {} failed",
        totals.pass,
        totals.failed()
    );
    println!(
        "conformance (s3, redirect {mode}): {} skipped, {} disabled",
        totals.skip, totals.disabled
    );
    assert_bucket_blobs_intact(&minio, &bucket);
}

#[test]
fn conformance_on_s3_with_redirect() {
    conformance_on_s3(true);
}

#[test]
fn conformance_on_s3_without_redirect() {
    conformance_on_s3(false);
}

/// A blob `GET` answers 307 to a pre-signed URL on MinIO when redirects
/// are on, and 200 with the bytes when they are off; either way the bytes
/// are `expected`.
fn assert_blob_served(
    client: &Client,
    bucket: &S3Bucket,
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
        assert!(
            location.starts_with(&bucket.endpoint),
            "GET {target}: redirected to {location}, not to the bucket's endpoint {}",
            bucket.endpoint
        );
        let followed = client.get(location);
        assert_status(
            &followed,
            200,
            &format!("GET the pre-signed URL {location}"),
        );
        followed.body
    } else {
        assert_status(&reply, 200, &format!("GET {target} with redirects off"));
        reply.body
    };
    assert!(body == expected, "GET {target}: different bytes");
}

#[test]
fn skopeo_round_trips_through_s3_with_a_200_mib_layer() {
    let work = tempfile::tempdir().unwrap();
    // One layout, generated once: a multi-layer image with a 200 MiB layer,
    // and a two-platform index, in the same layout under two tags.
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

    let minio = Minio::start();
    let skopeo = Skopeo::new();
    for redirect in [true, false] {
        let mode = if redirect { "on" } else { "off" };
        let bucket = minio
            .create_bucket(&format!("skopeo-redirect-{mode}"))
            .with_root_directory("/registry");
        let registry = BerthRegistry::start(RegistryOptions::new().s3(&bucket, redirect));
        let addr = registry.addr();
        let started = Instant::now();
        for tag in ["big", "multi"] {
            skopeo.copy(&src.reference(tag), &docker_ref(&addr, "s3/app", tag));
        }
        let pushed = started.elapsed();
        let dst = work.path().join(format!("dst-{mode}"));
        let started = Instant::now();
        for tag in ["big", "multi"] {
            skopeo.copy(
                &docker_ref(&addr, "s3/app", tag),
                &format!("oci:{}:{tag}", dst.display()),
            );
        }
        let pulled = started.elapsed();
        let dst = OciLayout::open(&dst);
        assert_same_image(&src, &dst, "big");
        assert_same_image(&src, &dst, "multi");
        assert_same_layout(&src, &dst);
        println!(
            "skopeo through s3 (redirect {mode}): pushed in {:.1} s, pulled in {:.1} s",
            pushed.as_secs_f64(),
            pulled.as_secs_f64()
        );

        // The pull really took the path the mode says.
        let client = registry.client();
        let config = src.reachable_from(&big).blobs.into_iter().next().unwrap();
        assert_blob_served(
            &client,
            &bucket,
            "s3/app",
            &src.read_blob(&config),
            redirect,
        );
        let head = client.head(&format!("/v2/s3/app/blobs/{big_layer}"));
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
        let checked = assert_bucket_blobs_intact(&minio, &bucket);
        assert!(checked >= 10, "only {checked} blobs in the bucket");
    }
}

#[test]
fn two_instances_on_one_bucket_push_and_pull() {
    let (minio, bucket) = minio_with_bucket("shared");
    let work = tempfile::tempdir().unwrap();
    let a = BerthRegistry::start(RegistryOptions::new().s3(&bucket, false));
    let b = BerthRegistry::start(RegistryOptions::new().s3(&bucket, true));
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

    // And the other way round, with a tag B adds that A lists.
    skopeo.copy(
        &layout.reference("v1"),
        &docker_ref(&b.addr(), "shared/app", "v2"),
    );
    assert_eq!(
        berth_tests::oci::list_tags(&a.client(), "shared/app"),
        ["v1", "v2"]
    );
    assert_bucket_blobs_intact(&minio, &bucket);
}

#[test]
fn a_chunked_upload_alternates_between_two_instances() {
    let (minio, bucket) = minio_with_bucket("chunks");
    let options = RegistryOptions::new()
        .s3(&bucket, false)
        .section("storage.s3", "chunksize: 5242880");
    let a = BerthRegistry::start(options.clone());
    let b = BerthRegistry::start(options);
    let (ca, cb) = (a.client(), b.client());

    // Chunks of at least one multipart part, small ones between them
    // (which the next chunk must be appended to), and a small last one.
    let content = random_bytes(24 * MIB + 4321);
    let cuts = [
        0,
        5 * MIB,
        5 * MIB + 100 * KIB,
        11 * MIB,
        11 * MIB + 17,
        17 * MIB + 3,
        24 * MIB,
        24 * MIB + 4321,
    ];
    let digest = alternate_chunks([&ca, &cb], "chunks/big", &content, &cuts);
    for (name, client) in [("A", &ca), ("B", &cb)] {
        let reply = client.get(&format!("/v2/chunks/big/blobs/{digest}"));
        assert_status(&reply, 200, &format!("GET the blob from {name}"));
        assert!(reply.body == content, "the blob from {name} differs");
    }

    // Only small chunks: none is a part on its own.
    let small = random_bytes(300 * KIB + 5);
    let cuts = [
        0,
        64 * KIB,
        64 * KIB + 1,
        200 * KIB,
        300 * KIB,
        300 * KIB + 5,
    ];
    let digest = alternate_chunks([&cb, &ca], "chunks/small", &small, &cuts);
    for (name, client) in [("A", &ca), ("B", &cb)] {
        let reply = client.get(&format!("/v2/chunks/small/blobs/{digest}"));
        assert_status(&reply, 200, &format!("GET the small blob from {name}"));
        assert!(reply.body == small, "the small blob from {name} differs");
    }
    assert_bucket_blobs_intact(&minio, &bucket);
}

/// Over plain HTTP the bytes Berth writes to S3 are signed, the signature
/// being their only integrity check there; over HTTPS they go as
/// `UNSIGNED-PAYLOAD`, which spares a second sha256 of every pushed byte.
/// Each request is seen in MinIO's trace; either way the blob, pushed in
/// several multipart parts, reads back whole.
#[test]
fn written_bytes_are_signed_over_http_and_not_over_https() {
    let ca = TestCa::new("berth-tests-s3");
    for tls in [false, true] {
        let minio = if tls {
            Minio::start_tls(&ca)
        } else {
            Minio::start()
        };
        let bucket = minio
            .create_bucket("signing")
            .with_root_directory("/registry");
        let mut options = RegistryOptions::new()
            .s3(&bucket, false)
            .section("storage.s3", "chunksize: 5242880");
        if let Some(ca) = minio.ca_file() {
            // The SDK trusts the system's roots, or this file instead.
            options = options.env("SSL_CERT_FILE", &ca.display().to_string());
        }
        let registry = BerthRegistry::start(options);
        let client = registry.client();
        let trace = minio.trace();
        let content = random_bytes(12 * MIB + 5);
        let digest = push_blob(&client, "signing/blob", &content);
        let reply = client.get(&format!("/v2/signing/blob/blobs/{digest}"));
        assert_status(&reply, 200, "GET the pushed blob");
        assert!(reply.body == content, "the blob read back differs");

        let calls = trace.calls(&minio);
        let writes: Vec<_> = calls
            .iter()
            .filter(|c| c.path.starts_with("/signing/"))
            .filter(|c| matches!(c.function.as_str(), "s3.PutObject" | "s3.PutObjectPart"))
            .collect();
        assert!(
            writes.iter().any(|c| c.function == "s3.PutObjectPart"),
            "no multipart part among the writes: {calls:#?}"
        );
        for call in writes {
            let payload = call.content_sha256.as_deref().unwrap_or_default();
            if tls {
                assert_eq!(payload, "UNSIGNED-PAYLOAD", "over HTTPS: {call:?}");
            } else {
                assert!(
                    payload.len() == 64 && payload.bytes().all(|b| b.is_ascii_hexdigit()),
                    "over HTTP, a write without its payload's sha256: {call:?}"
                );
            }
        }
        assert_bucket_blobs_intact(&minio, &bucket);
    }
}

/// Deleting an upload session aborts every open multipart upload of its
/// data, past the first page of 1,000 that one listing returns.
#[test]
fn deleting_an_upload_aborts_all_1100_of_its_open_multipart_uploads() {
    const OPEN: usize = 1100;
    let (minio, bucket) = minio_with_bucket("aborts");
    let registry = BerthRegistry::start(RegistryOptions::new().s3(&bucket, false));
    let client = registry.client();
    let location = location_path(&start_upload(&client, "app"));
    let id = location.rsplit('/').next().expect("an upload id");
    let key = format!("{}/repositories/app/_uploads/{id}/data", bucket.v2_prefix());
    thread::scope(|scope| {
        for worker in 0..4 {
            let (minio, bucket, key) = (&minio, &bucket.bucket, &key);
            scope.spawn(move || {
                for _ in (worker..OPEN).step_by(4) {
                    minio.open_multipart_upload(bucket, key);
                }
            });
        }
    });
    assert_eq!(minio.open_multipart_uploads(&bucket.bucket, &key), OPEN);

    let reply = client.delete(&location);
    assert_status(&reply, 204, "DELETE the upload");
    assert_eq!(
        minio.open_multipart_uploads(&bucket.bucket, &key),
        0,
        "open multipart uploads left behind"
    );
}

/// The value of `berth_uploads_in_flight` on `client`'s server.
fn uploads_in_flight(client: &Client) -> f64 {
    metrics::scrape(client).sum("berth_uploads_in_flight", &[])
}

#[test]
fn minio_stopped_mid_push_then_restarted() {
    let (mut minio, bucket) = minio_with_bucket("faults");
    let work = tempfile::tempdir().unwrap();
    let mut registry = BerthRegistry::start(
        RegistryOptions::new()
            .s3(&bucket, false)
            .section("storage.s3", "chunksize: 5242880"),
    );
    let client = registry.client();
    let (layout, manifest) = berth_tests::images::single_image_layout(
        &work.path().join("src"),
        "v1",
        &[64 * KIB, 96 * MIB],
    );
    let target = docker_ref(&registry.addr(), "faults/app", "v1");

    // Stop MinIO while skopeo streams a layer into the registry.
    let push = {
        let source = layout.reference("v1");
        let target = target.clone();
        thread::spawn(move || Skopeo::new().try_copy(&source, &target))
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while uploads_in_flight(&client) < 1.0 {
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
    minio.stop();
    let result = push.join().unwrap();
    let error = match result {
        Ok(_) => panic!("the push succeeded although MinIO was stopped during it"),
        Err(e) => e,
    };
    println!(
        "push with MinIO stopped failed as it should: {}",
        error.stderr.lines().last().unwrap_or_default()
    );
    let ready = client.get("/readyz");
    assert_status(&ready, 503, "/readyz while MinIO is down");
    assert!(
        registry.is_running(),
        "the registry exited while MinIO was down"
    );

    minio.start_again();
    wait_ready(&client);
    // Nothing partial is visible: every layer is absent or whole.
    let reachable = layout.reachable_from(&manifest);
    for digest in &reachable.blobs {
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
    let manifest_reply = berth_tests::oci::get_manifest(&client, "faults/app", "v1");
    assert_status(&manifest_reply, 404, "the tag of the failed push");
    assert_bucket_blobs_intact(&minio, &bucket);

    // The retried push succeeds and pulls back intact.
    let skopeo = Skopeo::new();
    skopeo.copy(&layout.reference("v1"), &target);
    let pulled = work.path().join("pulled");
    skopeo.copy(&target, &format!("oci:{}:v1", pulled.display()));
    assert_same_image(&layout, &OciLayout::open(&pulled), "v1");
    assert_bucket_blobs_intact(&minio, &bucket);
}

/// Wait (up to 30 s) until `/readyz` answers 200.
fn wait_ready(client: &Client) {
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

#[test]
fn wrong_credentials_make_readyz_fail_naming_the_bucket() {
    let (_minio, bucket) = minio_with_bucket("credentials-bucket");
    let wrong = bucket.with_credentials(berth_tests::minio::ACCESS_KEY, "not-the-secret-key");
    let mut registry = BerthRegistry::start(RegistryOptions::new().s3(&wrong, false));
    let client = registry.client();
    for _ in 0..3 {
        let reply = client.get("/readyz");
        assert_status(&reply, 503, "/readyz with wrong credentials");
        assert!(
            reply.text().contains("credentials-bucket"),
            "/readyz does not name the bucket:\n{}",
            reply.describe()
        );
    }
    // A request that needs storage fails, and the process keeps running.
    let reply = client.get("/v2/some/repo/tags/list");
    assert!(
        reply.status >= 500,
        "a tags list with wrong credentials:\n{}",
        reply.describe()
    );
    assert_status(
        &client.get("/healthz"),
        200,
        "/healthz with wrong credentials",
    );
    assert!(
        registry.is_running(),
        "the registry exited:\n{}",
        registry.log()
    );
    assert!(
        !registry.log().contains("not-the-secret-key"),
        "the secret key appears in the log"
    );
}

#[test]
fn a_missing_bucket_makes_readyz_fail_naming_the_bucket() {
    let minio = Minio::start();
    let bucket = minio.bucket("bucket-that-is-not-there");
    let mut registry = BerthRegistry::start(RegistryOptions::new().s3(&bucket, false));
    let client = registry.client();
    let reply = client.get("/readyz");
    assert_status(&reply, 503, "/readyz with a missing bucket");
    assert!(
        reply.text().contains("bucket-that-is-not-there"),
        "/readyz does not name the bucket:\n{}",
        reply.describe()
    );
    assert!(
        registry.is_running(),
        "the registry exited:\n{}",
        registry.log()
    );

    // Once the bucket exists, the same process is ready.
    minio.create_bucket("bucket-that-is-not-there");
    wait_ready(&client);
}

#[test]
fn s3_throughput_measurement() {
    let (minio, bucket) = minio_with_bucket("throughput");
    let registry = BerthRegistry::start(RegistryOptions::new().s3(&bucket, false));
    let work = tempfile::tempdir().unwrap();
    let size = 200 * MIB;
    let content = random_bytes(size);
    let digest = sha256_digest(&content);
    let file = work.path().join("layer.bin");
    fs::write(&file, &content).unwrap();
    drop(content);
    let mb = size as f64 / 1e6;

    // Through the registry: one monolithic PUT, one GET (no redirect), both
    // with curl, so the client is the same as for the direct transfers.
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

    // The same bytes straight to and from MinIO.
    let put = minio.put_file(&bucket.bucket, "direct/layer.bin", &file);
    let direct = work.path().join("direct.bin");
    let get = minio.get_file(&bucket.bucket, "direct/layer.bin", &direct);
    assert_eq!(sha256_digest(&fs::read(&direct).unwrap()), digest);

    let rate = |t: &curl::Transfer| mb / t.elapsed.as_secs_f64();
    println!(
        "s3 throughput: push {:.1} MB/s (direct PUT {:.1} MB/s), pull {:.1} MB/s (direct GET {:.1} MB/s)",
        rate(&push),
        rate(&put),
        rate(&pull),
        rate(&get)
    );
}
