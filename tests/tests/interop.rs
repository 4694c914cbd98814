//! Layout interoperability with CNCF Distribution 2.8: both servers run at
//! once over the same filesystem root. What one writes, the other serves
//! intact: OCI and Docker images and indexes, digests, tags and the catalog,
//! and both page through the same listings alike.

use std::fs;

use berth_tests::distribution::Distribution;
use berth_tests::http::{Client, Reply, assert_status};
use berth_tests::images::{
    OciLayout, assert_same_image, multi_arch_layout, random_layer, single_image_layout,
};
use berth_tests::oci::{self, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, Descriptor, sha256_digest};
use berth_tests::registry::{BerthRegistry, RegistryOptions};
use berth_tests::skopeo::{Skopeo, docker_ref};
use berth_tests::storage::{tag_link_path, verify_blobs};

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;
/// Docker image config media type.
const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// Docker gzip-compressed layer media type.
const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// Assert that `client` serves, as `repo:tag`, every manifest and blob
/// that `layout` holds under `layout_tag`, byte for byte.
fn assert_serves(client: &Client, repo: &str, tag: &str, layout: &OciLayout, layout_tag: &str) {
    let root = layout.tagged(layout_tag);
    let reply = oci::get_manifest(client, repo, tag);
    assert_status(
        &reply,
        200,
        &format!("GET {repo}:{tag} from {}", client.base()),
    );
    assert_eq!(sha256_digest(&reply.body), root.digest, "{repo}:{tag}");
    assert_eq!(
        reply.header("content-type"),
        Some(root.media_type.as_str()),
        "{repo}:{tag}"
    );
    let reachable = layout.reachable_from(&root);
    for digest in &reachable.manifests {
        let reply = oci::get_manifest(client, repo, digest);
        assert_status(
            &reply,
            200,
            &format!("GET manifest {digest} from {}", client.base()),
        );
        assert_eq!(&sha256_digest(&reply.body), digest);
    }
    for digest in &reachable.blobs {
        let reply = client.get(&format!("/v2/{repo}/blobs/{digest}"));
        assert_status(
            &reply,
            200,
            &format!("GET blob {digest} from {}", client.base()),
        );
        assert!(
            reply.body == layout.read_blob(digest),
            "blob {digest} from {} differs",
            client.base()
        );
    }
}

#[test]
fn what_distribution_writes_berth_serves() {
    let root = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let skopeo = Skopeo::new();
    let (single, manifest) = single_image_layout(
        &work.path().join("single"),
        "v1",
        &[16 * KIB, 2 * MIB, 512 * KIB],
    );
    let (multi, index) = multi_arch_layout(&work.path().join("multi"), "latest", &[8 * KIB, MIB]);

    let distribution = Distribution::start(root.path());
    let dist = distribution.addr();
    skopeo.copy(
        &single.reference("v1"),
        &docker_ref(&dist, "interop/app", "v1"),
    );
    skopeo.copy(
        &single.reference("v1"),
        &docker_ref(&dist, "interop/app", "v2"),
    );
    skopeo.copy(
        &multi.reference("latest"),
        &docker_ref(&dist, "interop/multi", "latest"),
    );

    let berth = BerthRegistry::start(RegistryOptions::new().root(root.path()));
    let client = berth.client();
    assert_serves(&client, "interop/app", "v1", &single, "v1");
    assert_serves(&client, "interop/multi", "latest", &multi, "latest");
    assert_eq!(oci::list_tags(&client, "interop/app"), ["v1", "v2"]);
    assert_eq!(oci::list_tags(&client, "interop/multi"), ["latest"]);
    assert_eq!(oci::catalog(&client), ["interop/app", "interop/multi"]);

    // A real client pulls through Berth and gets the same digests.
    let pulled = work.path().join("pulled");
    let addr = berth.addr();
    skopeo.copy(
        &docker_ref(&addr, "interop/app", "v2"),
        &format!("oci:{}:v2", pulled.display()),
    );
    skopeo.copy(
        &docker_ref(&addr, "interop/multi", "latest"),
        &format!("oci:{}:latest", pulled.display()),
    );
    let pulled = OciLayout::open(&pulled);
    assert_eq!(pulled.tagged("v2").digest, manifest.digest);
    assert_same_image(&multi, &pulled, "latest");
    assert_eq!(pulled.tagged("latest").digest, index.digest);

    // Berth adds a tag to a repository Distribution created; Distribution sees it.
    skopeo.copy(
        &single.reference("v1"),
        &docker_ref(&addr, "interop/app", "v3"),
    );
    assert_eq!(
        oci::list_tags(&distribution.client(), "interop/app"),
        ["v1", "v2", "v3"]
    );
    assert_serves(&distribution.client(), "interop/app", "v3", &single, "v1");

    let (_, bad) = verify_blobs(root.path());
    assert!(
        bad.is_empty(),
        "stored blobs that do not match their path: {bad:#?}"
    );
}

#[test]
fn what_berth_writes_distribution_serves() {
    let root = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let skopeo = Skopeo::new();
    let (single, manifest) = single_image_layout(
        &work.path().join("single"),
        "v1",
        &[16 * KIB, 2 * MIB, 512 * KIB],
    );
    let (multi, index) = multi_arch_layout(&work.path().join("multi"), "latest", &[8 * KIB, MIB]);

    let berth = BerthRegistry::start(RegistryOptions::new().root(root.path()));
    let addr = berth.addr();
    skopeo.copy(
        &single.reference("v1"),
        &docker_ref(&addr, "interop/app", "v1"),
    );
    skopeo.copy(
        &single.reference("v1"),
        &docker_ref(&addr, "interop/app", "v2"),
    );
    skopeo.copy(
        &multi.reference("latest"),
        &docker_ref(&addr, "interop/multi", "latest"),
    );

    // The tags are where Distribution's layout puts them.
    for (repo, tag, digest) in [
        ("interop/app", "v1", &manifest.digest),
        ("interop/app", "v2", &manifest.digest),
        ("interop/multi", "latest", &index.digest),
    ] {
        let link = tag_link_path(root.path(), repo, tag);
        let text = fs::read_to_string(&link)
            .unwrap_or_else(|e| panic!("tag link {}: {e}", link.display()));
        assert_eq!(text.trim(), digest.as_str(), "{}", link.display());
    }

    let distribution = Distribution::start(root.path());
    let client = distribution.client();
    assert_serves(&client, "interop/app", "v1", &single, "v1");
    assert_serves(&client, "interop/multi", "latest", &multi, "latest");
    assert_eq!(oci::list_tags(&client, "interop/app"), ["v1", "v2"]);
    assert_eq!(oci::list_tags(&client, "interop/multi"), ["latest"]);
    assert_eq!(oci::catalog(&client), ["interop/app", "interop/multi"]);

    let pulled = work.path().join("pulled");
    let dist = distribution.addr();
    skopeo.copy(
        &docker_ref(&dist, "interop/app", "v2"),
        &format!("oci:{}:v2", pulled.display()),
    );
    skopeo.copy(
        &docker_ref(&dist, "interop/multi", "latest"),
        &format!("oci:{}:latest", pulled.display()),
    );
    let pulled = OciLayout::open(&pulled);
    assert_eq!(pulled.tagged("v2").digest, manifest.digest);
    assert_same_image(&multi, &pulled, "latest");

    // Distribution adds a tag to a repository Berth created; Berth sees it.
    skopeo.copy(
        &single.reference("v1"),
        &docker_ref(&dist, "interop/app", "v3"),
    );
    assert_eq!(
        oci::list_tags(&berth.client(), "interop/app"),
        ["v1", "v2", "v3"]
    );
    assert_serves(&berth.client(), "interop/app", "v3", &single, "v1");

    let (_, bad) = verify_blobs(root.path());
    assert!(
        bad.is_empty(),
        "stored blobs that do not match their path: {bad:#?}"
    );
}

/// Push, over the API, a Docker schema 2 image for `architecture` into
/// `repo` (by digest) and return the manifest bytes.
fn push_docker_image(client: &Client, repo: &str, architecture: &str) -> Vec<u8> {
    let layer = random_layer("file.bin", 32 * KIB);
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": architecture,
        "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id]},
    }))
    .unwrap();
    let config = Descriptor {
        media_type: DOCKER_CONFIG.into(),
        digest: oci::push_blob(client, repo, &config),
        size: config.len() as u64,
    };
    let layer = Descriptor {
        media_type: DOCKER_LAYER.into(),
        digest: oci::push_blob(client, repo, &layer.compressed),
        size: layer.compressed.len() as u64,
    };
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": config.to_json(),
        "layers": [layer.to_json()],
    }))
    .unwrap();
    let digest = sha256_digest(&manifest);
    let reply = oci::put_manifest(client, repo, &digest, DOCKER_MANIFEST, &manifest);
    assert_status(&reply, 201, &format!("PUT Docker manifest into {repo}"));
    manifest
}

/// Assert that `client` serves `body` as `repo@digest(body)` (and as
/// `repo:tag` if given) with content type `media_type`.
fn assert_manifest(client: &Client, repo: &str, tag: Option<&str>, media_type: &str, body: &[u8]) {
    let digest = sha256_digest(body);
    for reference in std::iter::once(digest.as_str()).chain(tag) {
        let what = format!("{repo}:{reference} from {}", client.base());
        let reply = oci::get_manifest(client, repo, reference);
        assert_status(&reply, 200, &format!("GET {what}"));
        assert!(reply.body == body, "{what}: different bytes");
        assert_eq!(reply.header("content-type"), Some(media_type), "{what}");
        assert_eq!(
            reply.header("docker-content-digest"),
            Some(digest.as_str()),
            "{what}"
        );
        let head = client.request(
            "HEAD",
            &format!("/v2/{repo}/manifests/{reference}"),
            &[("Accept", oci::ACCEPT_MANIFESTS)],
            None,
        );
        assert_status(&head, 200, &format!("HEAD {what}"));
        assert_eq!(
            head.header("docker-content-digest"),
            Some(digest.as_str()),
            "HEAD {what}"
        );
    }
}

#[test]
fn docker_schema2_manifests_and_lists_interoperate() {
    let root = tempfile::tempdir().unwrap();
    let distribution = Distribution::start(root.path());
    let berth = BerthRegistry::start(RegistryOptions::new().root(root.path()));
    let servers = [
        ("distribution", distribution.client()),
        ("berth", berth.client()),
    ];
    for (i, (writer_name, writer)) in servers.iter().enumerate() {
        let (_, reader) = &servers[1 - i];
        let repo = format!("docker/{writer_name}");
        let amd64 = push_docker_image(writer, &repo, "amd64");
        let arm64 = push_docker_image(writer, &repo, "arm64");
        let entry = |body: &[u8], architecture: &str| {
            serde_json::json!({
                "mediaType": DOCKER_MANIFEST,
                "digest": sha256_digest(body),
                "size": body.len(),
                "platform": {"architecture": architecture, "os": "linux"},
            })
        };
        let list = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST_LIST,
            "manifests": [entry(&amd64, "amd64"), entry(&arm64, "arm64")],
        }))
        .unwrap();
        let reply = oci::put_manifest(writer, &repo, "latest", DOCKER_MANIFEST_LIST, &list);
        assert_status(
            &reply,
            201,
            &format!("PUT manifest list through {writer_name}"),
        );

        for client in [writer, reader] {
            assert_manifest(client, &repo, None, DOCKER_MANIFEST, &amd64);
            assert_manifest(client, &repo, None, DOCKER_MANIFEST, &arm64);
            assert_manifest(client, &repo, Some("latest"), DOCKER_MANIFEST_LIST, &list);
            assert_eq!(oci::list_tags(client, &repo), ["latest"]);
        }
    }
}

/// `text` with `%XX` escapes decoded.
fn percent_decode(text: &str) -> String {
    percent_encoding::percent_decode_str(text)
        .decode_utf8_lossy()
        .into_owned()
}

/// The path and decoded query parameters (sorted) of a
/// `Link: <...>; rel="next"` header, or `None` without one.
fn next_link(reply: &Reply) -> Option<Vec<String>> {
    let link = reply.header("link")?;
    let target = link.split_once('<')?.1.split_once('>')?.0;
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut params: Vec<String> = query.split('&').map(percent_decode).collect();
    params.sort();
    params.insert(0, path.to_owned());
    Some(params)
}

#[test]
fn listings_agree_with_distribution() {
    let root = tempfile::tempdir().unwrap();
    let berth = BerthRegistry::start(RegistryOptions::new().root(root.path()));
    let client = berth.client();
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let repos = ["list/a", "list/b", "list/c", "list/d", "other"];
    let tags = ["1.0", "1.1", "2.0", "latest", "v10", "v9"];
    for repo in repos {
        let digest = oci::push_blob(&client, repo, config);
        let manifest = oci::image_manifest(
            &Descriptor {
                media_type: oci::OCI_CONFIG.into(),
                digest,
                size: config.len() as u64,
            },
            &[],
        );
        for tag in tags {
            let reply = oci::put_manifest(&client, repo, tag, oci::OCI_MANIFEST, &manifest);
            assert_status(&reply, 201, &format!("PUT {repo}:{tag}"));
        }
    }
    let distribution = Distribution::start(root.path());
    let reference = distribution.client();

    // The catalog: Distribution 2.8 pages through it as the spec says, so
    // both must answer every page alike.
    for query in [
        "/v2/_catalog",
        "/v2/_catalog?n=2",
        "/v2/_catalog?n=2&last=list/b",
        "/v2/_catalog?n=10&last=list/d",
    ] {
        let want = reference.get(query);
        let got = client.get(query);
        assert_status(&want, 200, &format!("Distribution GET {query}"));
        assert_status(&got, 200, &format!("Berth GET {query}"));
        assert_eq!(
            got.json(),
            want.json(),
            "GET {query}: Berth and Distribution differ"
        );
        assert_eq!(
            next_link(&got),
            next_link(&want),
            "GET {query}: Link headers differ (Berth {:?}, Distribution {:?})",
            got.header("link"),
            want.header("link")
        );
    }

    // Tags: Distribution 2.8 lists them unordered and unpaginated, so only
    // the sets are compared; Berth's pages follow the spec (lexical order,
    // `n`, `last`, a `Link` to the next page).
    let mut sorted: Vec<String> = tags.iter().map(|t| t.to_string()).collect();
    sorted.sort();
    for repo in repos {
        assert_eq!(
            oci::list_tags(&reference, repo),
            sorted,
            "Distribution's tags of {repo}"
        );
        assert_eq!(
            oci::list_tags(&client, repo),
            sorted,
            "Berth's tags of {repo}"
        );
    }
    let reply = client.get("/v2/list/a/tags/list?n=2&last=1.1");
    assert_status(&reply, 200, "GET tags after 1.1");
    assert_eq!(reply.json()["tags"], serde_json::json!(["2.0", "latest"]));
    let mut page = Some("/v2/list/a/tags/list?n=4".to_owned());
    let mut walked: Vec<String> = Vec::new();
    for _ in 0..10 {
        let Some(target) = page.take() else { break };
        let reply = client.get(&target);
        assert_status(&reply, 200, &format!("GET {target}"));
        let names = reply.json()["tags"].as_array().cloned().unwrap_or_default();
        assert!(
            names.len() <= 4,
            "GET {target}: {} tags on a page of 4",
            names.len()
        );
        walked.extend(names.iter().map(|t| t.as_str().unwrap().to_owned()));
        page = reply
            .header("link")
            .and_then(|l| Some(l.split_once('<')?.1.split_once('>')?.0.to_owned()));
    }
    assert!(page.is_none(), "tag pages never ended");
    assert_eq!(walked, sorted, "tags walked page by page");
}
