//! Pull-through: a node instance serves images of an upstream registry
//! (another berth-registry process, or CNCF Distribution, on loopback)
//! through `berth.mirrors` (chosen by `?ns=`, as containerd asks a mirror)
//! or `proxy.remoteurl`. Content is byte-identical to the upstream's, stays
//! available when the upstream stops, concurrent misses of one blob make one
//! upstream GET, and bad upstream answers never enter the cache.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use berth_tests::distribution::Distribution;
use berth_tests::htpasswd;
use berth_tests::http::{Client, Reply, assert_error, assert_status};
use berth_tests::images::{OciLayout, assert_same_image, random_bytes, single_image_layout};
use berth_tests::metrics::scrape;
use berth_tests::oci::{self, ACCEPT_MANIFESTS, OCI_MANIFEST, sha256_digest};
use berth_tests::proxy::TcpProxy;
use berth_tests::readme;
use berth_tests::registry::{self, BerthRegistry, RegistryOptions};
use berth_tests::skopeo::{Skopeo, docker_ref};
use serde_json::Value;

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;
/// The host the node mirrors, as image names would spell it.
const HOST: &str = "upstream.test";
/// The query containerd adds to requests for images of [`HOST`].
const NS: &str = "?ns=upstream.test";

/// A node instance mirroring [`HOST`] from `remote` with `tagttl`, plus
/// `extra` mirror entries; it spools in its own directory (its working
/// directory), which goes with it.
fn node_options(remote: &str, tagttl: &str, extra: &str) -> RegistryOptions {
    RegistryOptions::new().section(
        "berth",
        &format!(
            "spooldir: spool\nmirrors:\n  - host: {HOST}\n    remoteurl: {remote}\n    tagttl: {tagttl}\n{extra}"
        ),
    )
}

/// Pushes a one-image layout with layers of `sizes` to `registry` as `repo:tag`.
fn push_image(registry: &str, repo: &str, tag: &str, sizes: &[usize], dir: &Path) -> OciLayout {
    let (layout, _) = single_image_layout(dir, tag, sizes);
    Skopeo::new().copy(&layout.reference(tag), &docker_ref(registry, repo, tag));
    layout
}

/// Every manifest and blob of `repo:tag` as `client` serves them (each
/// request ending in `query`), by digest.
fn walk(client: &Client, repo: &str, tag: &str, query: &str) -> BTreeMap<String, Vec<u8>> {
    let mut content = BTreeMap::new();
    let mut manifests = vec![tag.to_owned()];
    while let Some(reference) = manifests.pop() {
        let reply = client.get_with(
            &format!("/v2/{repo}/manifests/{reference}{query}"),
            &[("Accept", ACCEPT_MANIFESTS)],
        );
        assert_status(
            &reply,
            200,
            &format!("GET manifest {repo}:{reference}{query}"),
        );
        let json: Value = reply.json();
        for child in json["manifests"].as_array().into_iter().flatten() {
            manifests.push(child["digest"].as_str().unwrap().to_owned());
        }
        let blobs = json["layers"]
            .as_array()
            .into_iter()
            .flatten()
            .chain(json.get("config"));
        for blob in blobs {
            let digest = blob["digest"].as_str().unwrap();
            let reply = client.get(&format!("/v2/{repo}/blobs/{digest}{query}"));
            assert_status(&reply, 200, &format!("GET blob {digest}{query}"));
            assert_eq!(sha256_digest(&reply.body), digest, "blob {digest}");
            content.insert(digest.to_owned(), reply.body);
        }
        content.insert(sha256_digest(&reply.body), reply.body);
    }
    content
}

/// `GET target` on `client`, with the time to its status.
fn timed_get(client: &Client, target: &str) -> (Reply, Duration) {
    let started = Instant::now();
    let reply = client.get_with(target, &[("Accept", ACCEPT_MANIFESTS)]);
    (reply, started.elapsed())
}

/// Blob GETs the registry behind `client` answered, by its own metrics.
fn blob_gets(client: &Client) -> f64 {
    scrape(client).sum(
        "berth_http_requests_total",
        &[("route", "blob"), ("method", "GET")],
    )
}

/// Files below the node's caches (`/berth/mirrors/` in its storage root).
fn cached_files(node: &BerthRegistry) -> Vec<String> {
    let mut files = Vec::new();
    let mut dirs = vec![node.root().join("berth/mirrors")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if entry.file_type().unwrap().is_dir() {
                dirs.push(entry.path());
            } else {
                files.push(entry.path().display().to_string());
            }
        }
    }
    files
}

#[test]
fn mirrored_images_are_byte_identical_and_survive_the_upstream() {
    let work = tempfile::tempdir().unwrap();
    let mut upstream = BerthRegistry::start(RegistryOptions::new());
    push_image(
        &upstream.addr(),
        "library/app",
        "v1",
        &[4 * KIB, 2 * MIB],
        &work.path().join("a"),
    );
    push_image(
        &upstream.addr(),
        "library/other",
        "v1",
        &[KIB],
        &work.path().join("b"),
    );
    let node = BerthRegistry::start(node_options(&upstream.url(), "1s", ""));
    let client = node.client();

    // (a) Byte-identical to what the upstream serves.
    let expected = walk(&upstream.client(), "library/app", "v1", "");
    assert_eq!(walk(&client, "library/app", "v1", NS), expected);
    // A HEAD of an uncached blob asks the upstream and fetches nothing.
    let other = oci::get_manifest(&upstream.client(), "library/other", "v1").json();
    let layer = other["layers"][0]["digest"].as_str().unwrap().to_owned();
    let gets = blob_gets(&upstream.client());
    let head = client.head(&format!("/v2/library/other/blobs/{layer}{NS}"));
    assert_status(&head, 200, "HEAD of an uncached blob");
    assert_eq!(
        blob_gets(&upstream.client()),
        gets,
        "a HEAD made a GET upstream"
    );
    // The mirrored repository is not the node's own.
    assert_error(
        &client.get("/v2/library/app/manifests/v1"),
        404,
        "MANIFEST_UNKNOWN",
        "the mirrored image without ns",
    );
    assert!(
        oci::catalog(&client).is_empty(),
        "catalog lists no cached repository"
    );
    let metrics = scrape(&client);
    let labels = [("mirror", HOST), ("kind", "blob")];
    let count = |name| metrics.sum(name, &labels) as u64;
    println!(
        "node: proxy hits {} misses {} upstream requests {} (blobs)",
        count("berth_proxy_hits_total"),
        count("berth_proxy_misses_total"),
        count("berth_proxy_upstream_requests_total")
    );
    assert!(metrics.sum("berth_proxy_upstream_requests_total", &labels) >= 3.0);

    // Past tagttl the tag is checked with a HEAD: unchanged, nothing is
    // fetched again; moved, the new image is served.
    let manifest_gets = |client: &Client| {
        scrape(client).sum(
            "berth_http_requests_total",
            &[("route", "manifest"), ("method", "GET")],
        )
    };
    let gets = manifest_gets(&upstream.client());
    thread::sleep(Duration::from_millis(1100));
    assert_eq!(walk(&client, "library/app", "v1", NS), expected);
    assert_eq!(
        manifest_gets(&upstream.client()),
        gets,
        "an unchanged tag was fetched again"
    );
    push_image(
        &upstream.addr(),
        "library/app",
        "v1",
        &[3 * KIB],
        &work.path().join("c"),
    );
    let expected = walk(&upstream.client(), "library/app", "v1", "");
    thread::sleep(Duration::from_millis(1100));
    assert_eq!(
        walk(&client, "library/app", "v1", NS),
        expected,
        "the moved tag"
    );

    // (b) The upstream stops: the cached image pulls by tag within the tag
    // ttl and beyond it; an uncached one fails at once, before any body.
    upstream.kill();
    assert_eq!(
        walk(&client, "library/app", "v1", NS),
        expected,
        "within tagttl"
    );
    thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        walk(&client, "library/app", "v1", NS),
        expected,
        "beyond tagttl"
    );
    let (reply, took) = timed_get(&client, &format!("/v2/library/other/manifests/v1{NS}"));
    assert_error(
        &reply,
        503,
        "UNAVAILABLE",
        "uncached manifest, upstream stopped",
    );
    let (blob, blob_took) = timed_get(&client, &format!("/v2/library/other/blobs/{layer}{NS}"));
    assert_error(&blob, 503, "UNAVAILABLE", "uncached blob, upstream stopped");
    println!("upstream stopped: uncached manifest failed in {took:?}, blob in {blob_took:?}");
    assert!(took < Duration::from_secs(1) && blob_took < Duration::from_secs(1));
}

#[test]
fn an_unresponsive_upstream_fails_fast() {
    let work = tempfile::tempdir().unwrap();
    let upstream = BerthRegistry::start(RegistryOptions::new());
    for repo in ["library/app", "library/other"] {
        push_image(
            &upstream.addr(),
            repo,
            "v1",
            &[KIB],
            &work.path().join(repo),
        );
    }
    // A network partition: connections open, nothing ever answers.
    let port = upstream.url().rsplit(':').next().unwrap().parse().unwrap();
    let partition = TcpProxy::start(port);
    let node = BerthRegistry::start(node_options(
        &format!("http://127.0.0.1:{}", partition.port()),
        "1s",
        "",
    ));
    let client = node.client();
    let cached = walk(&client, "library/app", "v1", NS);
    partition.cut();
    thread::sleep(Duration::from_millis(1100));
    // The stale tag waits out one upstream timeout, then comes from the cache.
    let target = format!("/v2/library/app/manifests/v1{NS}");
    let (reply, first) = timed_get(&client, &target);
    assert_status(&reply, 200, "a cached tag, upstream silent");
    // From then on the node does not wait for the silent upstream again.
    let (reply, uncached) = timed_get(&client, &format!("/v2/library/other/manifests/v1{NS}"));
    assert_error(
        &reply,
        503,
        "UNAVAILABLE",
        "uncached manifest, upstream silent",
    );
    let (reply, again) = timed_get(&client, &target);
    assert_status(&reply, 200, "the cached tag again");
    assert_eq!(walk(&client, "library/app", "v1", NS), cached);
    println!(
        "upstream silent: a stale cached tag answered after {first:?}, then an uncached manifest failed after {uncached:?} and the tag answered after {again:?}"
    );
    assert!(first < Duration::from_secs(8), "{first:?}");
    assert!(uncached < Duration::from_secs(1) && again < Duration::from_secs(1));
}

#[test]
fn concurrent_misses_of_one_blob_make_one_upstream_get() {
    let upstream = BerthRegistry::start(RegistryOptions::new());
    let bytes = random_bytes(64 * MIB);
    let digest = oci::push_blob(&upstream.client(), "library/big", &bytes);
    let node = BerthRegistry::start(node_options(&upstream.url(), "1m", ""));
    let before = blob_gets(&upstream.client());
    let target = format!("/v2/library/big/blobs/{digest}{NS}");
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let (client, target) = (node.client(), target.clone());
            thread::spawn(move || client.get(&target))
        })
        .collect();
    for client in clients {
        let reply = client.join().unwrap();
        assert_status(&reply, 200, "concurrent GET");
        assert_eq!(sha256_digest(&reply.body), digest);
    }
    let gets = blob_gets(&upstream.client()) - before;
    let metrics = scrape(&node.client());
    let labels = [("mirror", HOST), ("kind", "blob")];
    let (misses, hits) = (
        metrics.sum("berth_proxy_misses_total", &labels) as u64,
        metrics.sum("berth_proxy_hits_total", &labels) as u64,
    );
    println!(
        "8 concurrent GETs of an uncached 64 MiB blob: {gets} upstream GET(s); {misses} joined the fill, {hits} found it cached"
    );
    assert_eq!(gets, 1.0);
    assert_eq!(misses + hits, 8);
    assert!(misses >= 2, "the GETs did not overlap");
    // Cached now: more GETs, one with a range, never reach the upstream.
    assert_eq!(sha256_digest(&node.client().get(&target).body), digest);
    let part = node.client().get_with(&target, &[("Range", "bytes=10-19")]);
    assert_status(&part, 206, "range of a cached blob");
    assert_eq!(part.body, bytes[10..20]);
    // Another repository with the same layer (a shared base layer): the
    // upstream confirms it with a HEAD, and the bytes come from the cache.
    oci::push_blob(&upstream.client(), "library/sibling", &bytes);
    let sibling = node
        .client()
        .get(&format!("/v2/library/sibling/blobs/{digest}{NS}"));
    assert_status(&sibling, 200, "the layer through another repository");
    assert_eq!(sha256_digest(&sibling.body), digest);
    assert_error(
        &node
            .client()
            .get(&format!("/v2/library/stranger/blobs/{digest}{NS}")),
        404,
        "BLOB_UNKNOWN",
        "the layer through a repository the upstream does not give it",
    );
    assert_eq!(blob_gets(&upstream.client()) - before, 1.0);
}

#[test]
fn single_upstream_proxy_mode_pulls_without_ns() {
    let work = tempfile::tempdir().unwrap();
    let skopeo = Skopeo::new();
    let berth = BerthRegistry::start(RegistryOptions::new());
    let mut distribution = Distribution::start(&work.path().join("distribution"));
    for (name, url, addr) in [
        ("berth", berth.url(), berth.addr()),
        ("distribution", distribution.url(), distribution.addr()),
    ] {
        let src = push_image(
            &addr,
            "team/app",
            "v1",
            &[KIB, 3 * MIB],
            &work.path().join(name),
        );
        let node = BerthRegistry::start(
            RegistryOptions::new()
                .section("proxy", &format!("remoteurl: {url}\nttl: 24h"))
                .section("berth", "spooldir: spool"),
        );
        let pulled = OciLayout::create(&work.path().join(format!("{name}-pulled")));
        skopeo.copy(
            &docker_ref(&node.addr(), "team/app", "v1"),
            &pulled.reference("v1"),
        );
        assert_same_image(&src, &pulled, "v1");
        // Writes are refused: the node stands in for the upstream.
        assert_error(
            &node.client().post("/v2/team/app/blobs/uploads/", &[], b""),
            405,
            "UNSUPPORTED",
            "push in proxy mode",
        );
    }
    distribution.stop();
}

#[test]
fn pushes_to_a_mirror_are_refused_and_own_images_unaffected() {
    let work = tempfile::tempdir().unwrap();
    let upstream = BerthRegistry::start(RegistryOptions::new());
    push_image(
        &upstream.addr(),
        "library/app",
        "v1",
        &[KIB],
        &work.path().join("up"),
    );
    let node = BerthRegistry::start(node_options(&upstream.url(), "1m", "").delete_enabled(true));
    let client = node.client();
    walk(&client, "library/app", "v1", NS);
    let manifest = oci::get_manifest(&upstream.client(), "library/app", "v1");
    for (method, target) in [
        ("POST", "/v2/library/app/blobs/uploads/"),
        ("PUT", "/v2/library/app/manifests/v2"),
        ("DELETE", "/v2/library/app/manifests/v1"),
        (
            "DELETE",
            "/v2/library/app/blobs/sha256:0000000000000000000000000000000000000000000000000000000000000000",
        ),
        ("GET", "/v2/library/app/tags/list"),
    ] {
        let reply = client.request(
            method,
            &format!("{target}{NS}"),
            &[("Content-Type", OCI_MANIFEST)],
            Some(&manifest.body),
        );
        assert_error(
            &reply,
            405,
            "UNSUPPORTED",
            &format!("{method} {target} on the mirror"),
        );
    }
    // The node's own images push and pull as before, even under the same name.
    let src = push_image(
        &node.addr(),
        "library/app",
        "own",
        &[2 * KIB],
        &work.path().join("own"),
    );
    let pulled = OciLayout::create(&work.path().join("pulled"));
    Skopeo::new().copy(
        &docker_ref(&node.addr(), "library/app", "own"),
        &pulled.reference("own"),
    );
    assert_same_image(&src, &pulled, "own");
    assert_eq!(oci::catalog(&client), ["library/app"]);
    assert_eq!(oci::list_tags(&client, "library/app"), ["own"]);
    // The mirrored tag is still the upstream's.
    let mirrored = client.get_with(
        &format!("/v2/library/app/manifests/v1{NS}"),
        &[("Accept", ACCEPT_MANIFESTS)],
    );
    assert_eq!(mirrored.body, manifest.body);
}

#[test]
fn upstream_credentials_come_from_the_credentials_directory() {
    let work = tempfile::tempdir().unwrap();
    let htpasswd_file = work.path().join("htpasswd");
    htpasswd::write(&htpasswd_file, &[("alice", "secret")]);
    let upstream = BerthRegistry::start(RegistryOptions::new().section(
        "auth.htpasswd",
        &format!("realm: upstream\npath: {}", htpasswd_file.display()),
    ));
    let pushed = upstream.client().with_basic_auth("alice", "secret");
    let layer = oci::push_blob(&pushed, "private/app", &random_bytes(100 * KIB));
    let credentials = work.path().join("credentials");
    std::fs::create_dir(&credentials).unwrap();
    std::fs::write(credentials.join("username"), "alice").unwrap();
    std::fs::write(credentials.join("password"), "wrong").unwrap();
    let node = BerthRegistry::start(node_options(
        &upstream.url(),
        "1m",
        &format!(
            "  - host: anonymous.test\n    remoteurl: {}\n  - host: private.test\n    remoteurl: {}\n    credentialsdir: {}\n",
            upstream.url(),
            upstream.url(),
            credentials.display()
        ),
    ));
    let target = |host: &str| format!("/v2/private/app/blobs/{layer}?ns={host}");
    assert_error(
        &node.client().get(&target("anonymous.test")),
        503,
        "UNAVAILABLE",
        "no credentials",
    );
    assert_error(
        &node.client().get(&target("private.test")),
        503,
        "UNAVAILABLE",
        "a wrong password",
    );
    // The Secret is rotated: the files are read again when used.
    std::fs::write(credentials.join("password"), "secret").unwrap();
    let reply = node.client().get(&target("private.test"));
    assert_status(&reply, 200, "with the rotated credentials");
    assert_eq!(sha256_digest(&reply.body), layer);
}

/// A deliberately broken upstream registry: a mock for faults a real
/// registry cannot be made to produce (a body that does not match its
/// digest, a truncated body, an oversized manifest). It answers each path
/// from `answers` and counts the requests for it.
struct BrokenUpstream {
    port: u16,
    hits: Arc<std::sync::Mutex<BTreeMap<String, usize>>>,
}

/// A canned answer: status, headers and body, and how many body bytes to
/// send before closing (all of them when `None`).
#[derive(Clone)]
struct Canned {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    send: Option<usize>,
}

impl BrokenUpstream {
    fn start(answers: BTreeMap<String, Canned>) -> BrokenUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let hits = Arc::new(std::sync::Mutex::new(BTreeMap::new()));
        let (answers, counter) = (Arc::new(answers), hits.clone());
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (answers, counter) = (answers.clone(), counter.clone());
                thread::spawn(move || serve(stream, &answers, &counter));
            }
        });
        BrokenUpstream { port, hits }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn hits(&self, path: &str) -> usize {
        self.hits.lock().unwrap().get(path).copied().unwrap_or(0)
    }
}

/// Answers the requests of one connection from `answers`.
fn serve(
    stream: TcpStream,
    answers: &BTreeMap<String, Canned>,
    hits: &std::sync::Mutex<BTreeMap<String, usize>>,
) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut out = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let path = line.split(' ').nth(1).unwrap_or("").to_owned();
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 || header == "\r\n" {
                break;
            }
        }
        *hits.lock().unwrap().entry(path.clone()).or_default() += 1;
        let canned = answers.get(&path).cloned().unwrap_or(Canned {
            status: 404,
            headers: Vec::new(),
            body: Vec::new(),
            send: None,
        });
        let mut head = format!(
            "HTTP/1.1 {} X\r\nContent-Length: {}\r\n",
            canned.status,
            canned.body.len()
        );
        for (name, value) in &canned.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        let sent = canned.send.unwrap_or(canned.body.len());
        if out.write_all(head.as_bytes()).is_err() || out.write_all(&canned.body[..sent]).is_err() {
            return;
        }
        if canned.send.is_some() {
            return;
        }
    }
}

#[test]
fn bad_upstream_answers_never_enter_the_cache() {
    let good = random_bytes(300 * KIB);
    let wrong = random_bytes(300 * KIB);
    let good_digest = sha256_digest(&good);
    let truncated = random_bytes(300 * KIB);
    let truncated_digest = sha256_digest(&truncated);
    let config = br#"{"architecture":"amd64","os":"linux"}"#.to_vec();
    let config_descriptor =
        oci::Descriptor::of("application/vnd.oci.image.config.v1+json", &config);
    let manifest = oci::image_manifest(&config_descriptor, &[]);
    let other_manifest = oci::image_manifest(
        &oci::Descriptor::of("application/vnd.oci.image.config.v1+json", b"{}"),
        &[],
    );
    let mut big = oci::image_manifest(&config_descriptor, &[]);
    big.extend(std::iter::repeat_n(b' ', 8 * KIB));
    let canned = |status, body: &[u8], digest: Option<String>, send| Canned {
        status,
        headers: [("Content-Type".to_owned(), OCI_MANIFEST.to_owned())]
            .into_iter()
            .chain(digest.map(|d| ("Docker-Content-Digest".to_owned(), d)))
            .collect(),
        body: body.to_vec(),
        send,
    };
    let answers: BTreeMap<String, Canned> = [
        // A blob whose bytes have another digest.
        (
            format!("/v2/bad/blobs/{good_digest}"),
            canned(200, &wrong, None, None),
        ),
        // A blob cut short.
        (
            format!("/v2/bad/blobs/{truncated_digest}"),
            canned(200, &truncated, None, Some(100 * KIB)),
        ),
        // A manifest announced under another digest.
        (
            "/v2/bad/manifests/wrongdigest".to_owned(),
            canned(200, &manifest, Some(sha256_digest(&other_manifest)), None),
        ),
        // A manifest fetched by digest whose bytes differ.
        (
            format!("/v2/bad/manifests/{}", sha256_digest(&other_manifest)),
            canned(200, &manifest, None, None),
        ),
        // A server error.
        (
            "/v2/bad/manifests/error".to_owned(),
            canned(500, b"oops", None, None),
        ),
        // A manifest over berth.manifestmaxbytes.
        (
            "/v2/bad/manifests/big".to_owned(),
            canned(200, &big, Some(sha256_digest(&big)), None),
        ),
        // Not JSON at all.
        (
            "/v2/bad/manifests/garbage".to_owned(),
            canned(
                200,
                b"\x00garbage",
                Some(sha256_digest(b"\x00garbage")),
                None,
            ),
        ),
    ]
    .into_iter()
    .collect();
    let upstream = BrokenUpstream::start(answers);
    let node = BerthRegistry::start(
        node_options(&upstream.url(), "1m", "").section("berth", "manifestmaxbytes: 4096"),
    );
    let client = node.client();
    for _ in 0..2 {
        for reference in [
            "wrongdigest",
            "error",
            "big",
            "garbage",
            &sha256_digest(&other_manifest),
        ] {
            let (reply, _) = timed_get(&client, &format!("/v2/bad/manifests/{reference}{NS}"));
            assert_error(&reply, 503, "UNAVAILABLE", &format!("manifest {reference}"));
        }
        for digest in [&good_digest, &truncated_digest] {
            // When the status is sent before the body is known bad, the body
            // breaks off before its last bytes; when the fill failed first,
            // the answer is an error.
            match client.try_request("GET", &format!("/v2/bad/blobs/{digest}{NS}"), &[], None) {
                Err(_) => {}
                Ok(reply) => assert_error(&reply, 503, "UNAVAILABLE", "a bad blob"),
            }
        }
    }
    // What the upstream does not have is a 404, as from the upstream itself.
    let absent = sha256_digest(b"absent");
    assert_error(
        &client.get(&format!("/v2/bad/blobs/{absent}{NS}")),
        404,
        "BLOB_UNKNOWN",
        "a blob the upstream does not have",
    );
    let (reply, _) = timed_get(&client, &format!("/v2/bad/manifests/absent{NS}"));
    assert_error(
        &reply,
        404,
        "MANIFEST_UNKNOWN",
        "a tag the upstream does not have",
    );
    // Each was asked twice: nothing was cached.
    for path in [
        format!("/v2/bad/blobs/{good_digest}"),
        format!("/v2/bad/blobs/{truncated_digest}"),
        "/v2/bad/manifests/wrongdigest".to_owned(),
        "/v2/bad/manifests/error".to_owned(),
        "/v2/bad/manifests/big".to_owned(),
    ] {
        assert_eq!(upstream.hits(&path), 2, "{path}");
    }
    let files = cached_files(&node);
    assert!(
        files
            .iter()
            .all(|f| !f.contains("/blobs/") && !f.contains("/_manifests/")),
        "cache holds {files:#?}"
    );
}

/// Runs `berth-registry gc` on the node's config with `proxy.ttl` set to
/// `ttl` (through the environment, as a user would override it) and returns
/// the report.
fn gc_with_cache_ttl(node: &BerthRegistry, ttl: &str) -> Value {
    let home = tempfile::tempdir().unwrap();
    let out = Command::new(registry::binary())
        .arg("gc")
        .arg("--config")
        .arg(node.config_path())
        .env_clear()
        .env("PATH", berth_tests::tools::child_path())
        .env("HOME", home.path())
        .env("REGISTRY_PROXY_REMOTEURL", "http://127.0.0.1:9")
        .env("REGISTRY_PROXY_TTL", ttl)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "gc failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap()
}

#[test]
fn gc_collects_cached_content_unused_for_the_ttl_and_never_own_content() {
    let work = tempfile::tempdir().unwrap();
    let upstream = BerthRegistry::start(RegistryOptions::new());
    push_image(
        &upstream.addr(),
        "library/app",
        "v1",
        &[KIB, 2 * KIB],
        &work.path().join("up"),
    );
    let node = BerthRegistry::start(node_options(&upstream.url(), "1m", ""));
    let client = node.client();
    let mirrored = walk(&client, "library/app", "v1", NS);
    push_image(
        &node.addr(),
        "own/app",
        "v1",
        &[KIB],
        &work.path().join("own"),
    );
    let own = walk(&client, "own/app", "v1", "");

    // Used within the ttl: nothing goes.
    let report = gc_with_cache_ttl(&node, "1h");
    let cache = &report["mirrorCaches"][HOST];
    assert_eq!(cache["blobsDeleted"], 0, "{report}");
    assert_eq!(report["blobsDeleted"], 0, "{report}");

    thread::sleep(Duration::from_millis(2100));
    let report = gc_with_cache_ttl(&node, "1s");
    println!("gc after the ttl: {report}");
    let cache = &report["mirrorCaches"][HOST];
    assert_eq!(cache["tagsExpired"], 1, "{report}");
    assert_eq!(cache["blobsDeleted"], mirrored.len() as u64, "{report}");
    assert_eq!(report["blobsDeleted"], 0, "own content: {report}");
    assert!(
        cached_files(&node).iter().all(|f| !f.ends_with("/data")),
        "{:#?}",
        cached_files(&node)
    );
    // Own content is whole; the mirrored image is fetched again.
    assert_eq!(walk(&client, "own/app", "v1", ""), own);
    assert_eq!(walk(&client, "library/app", "v1", NS), mirrored);
}

/// The README's pull-through example passes `config check` (with its
/// credentials directory present), and a config naming a mirror twice is
/// refused with the key.
#[test]
fn the_readme_pull_through_example_passes_config_check() {
    let dir = tempfile::tempdir().unwrap();
    let example = readme::fenced_blocks(&readme::text(), "yaml")
        .into_iter()
        .find(|block| block.starts_with("proxy:"))
        .expect("the README shows a pull-through example");
    let credentials = dir.path().join("credentials");
    std::fs::create_dir(&credentials).unwrap();
    let config = format!(
        "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\n{}",
        dir.path().join("root").display(),
        example.replace("/etc/berth/mirrors/1", &credentials.display().to_string())
    );
    let file = dir.path().join("config.yml");
    std::fs::write(&file, &config).unwrap();
    let out = registry::config_check(&file);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(&file, config.replace("host: _default", "host: docker.io")).unwrap();
    let out = registry::config_check(&file);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("berth.mirrors[2].host"), "{stderr}");
}

#[test]
fn read_only_maintenance_passes_upstream_content_through_without_caching() {
    let work = tempfile::tempdir().unwrap();
    let upstream = BerthRegistry::start(RegistryOptions::new());
    push_image(
        &upstream.addr(),
        "library/app",
        "v1",
        &[KIB, 200 * KIB],
        &work.path().join("up"),
    );
    let node = BerthRegistry::start(
        node_options(&upstream.url(), "1m", "")
            .section("storage.maintenance", "readonly:\n  enabled: true"),
    );
    let expected = walk(&upstream.client(), "library/app", "v1", "");
    assert_eq!(walk(&node.client(), "library/app", "v1", NS), expected);
    let files = cached_files(&node);
    assert!(files.is_empty(), "{files:#?}");
}
