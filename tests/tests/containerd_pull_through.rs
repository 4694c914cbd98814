//! containerd pulling an upstream's images through the hosts.toml that
//! `berth-registry containerd-hosts` wrote and the node instance's
//! pull-through (`berth.mirrors`): the image arrives byte-identical to the
//! upstream's, a cached image still pulls once the upstream is gone, an
//! uncached one fails within seconds instead of hanging, and eight nodes
//! pulling one uncached 64 MiB layer at once cost the upstream one GET.
//!
//! Every "upstream" is a berth-registry process on loopback standing in for
//! a public registry; each containerd has its own root, state and socket.

use std::path::Path;
use std::thread;
use std::time::Duration;

use berth_tests::containerd::{Containerd, hosts_writer};
use berth_tests::http::Client;
use berth_tests::images::{OciLayout, single_image_layout};
use berth_tests::metrics::scrape;
use berth_tests::oci::Descriptor;
use berth_tests::registry::{BerthRegistry, RegistryOptions};
use berth_tests::skopeo::{Skopeo, docker_ref};

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;
/// The upstream's name as image references spell it.
const HOST: &str = "upstream.test";
/// What "fails within seconds" means here.
const FAILURE_LIMIT: Duration = Duration::from_secs(5);

/// A node instance mirroring [`HOST`] from `upstream`, re-resolving tags
/// after a second; it spools in its own working directory.
fn node_instance(upstream: &BerthRegistry) -> BerthRegistry {
    BerthRegistry::start(RegistryOptions::new().section(
        "berth",
        &format!(
            "spooldir: spool\nmirrors:\n  - host: {HOST}\n    remoteurl: {}\n    tagttl: 1s\n",
            upstream.url()
        ),
    ))
}

/// Writes the hosts.toml files that send pulls of [`HOST`] to `node`, with
/// the upstream itself as containerd's fallback `server`.
fn write_hosts(hosts_dir: &Path, node: &BerthRegistry, upstream: &BerthRegistry) {
    std::fs::create_dir_all(hosts_dir).unwrap();
    let out = hosts_writer(&[
        "apply",
        "--hosts-dir",
        &hosts_dir.display().to_string(),
        "--endpoint",
        &node.url(),
        "--owner",
        "tests/pull-through",
        "--mirror",
        &format!("{HOST}={}", upstream.url()),
    ]);
    assert!(
        out.status.success(),
        "containerd-hosts apply: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Pushes a one-image layout with layers of `sizes` to `upstream` as `repo:v1`.
fn push(
    upstream: &BerthRegistry,
    repo: &str,
    sizes: &[usize],
    dir: &Path,
) -> (OciLayout, Descriptor) {
    let (layout, manifest) = single_image_layout(dir, "v1", sizes);
    Skopeo::new().copy(
        &layout.reference("v1"),
        &docker_ref(&upstream.addr(), repo, "v1"),
    );
    (layout, manifest)
}

/// Requests for `kind` (blob or manifest) the node sent to the upstream.
fn upstream_requests(node: &Client, kind: &str) -> f64 {
    scrape(node).sum(
        "berth_proxy_upstream_requests_total",
        &[("mirror", HOST), ("kind", kind)],
    )
}

/// Blob GETs the upstream answered, by its own metrics.
fn blob_gets(upstream: &Client) -> f64 {
    scrape(upstream).sum(
        "berth_http_requests_total",
        &[("route", "blob"), ("method", "GET")],
    )
}

#[test]
fn an_upstream_image_pulls_through_the_node_instance_and_survives_the_upstream() {
    let work = tempfile::tempdir().unwrap();
    let mut upstream = BerthRegistry::start(RegistryOptions::new());
    let (app, app_manifest) = push(
        &upstream,
        "library/app",
        &[64 * KIB, MIB],
        &work.path().join("app"),
    );
    push(
        &upstream,
        "library/other",
        &[4 * KIB],
        &work.path().join("other"),
    );
    let node = node_instance(&upstream);
    let hosts_dir = work.path().join("certs.d");
    write_hosts(&hosts_dir, &node, &upstream);
    let reference = format!("{HOST}/library/app:v1");

    // Through the node instance: byte-identical to the upstream's image.
    let containerd = Containerd::start();
    let pull = containerd.pull(&hosts_dir, &reference);
    assert!(
        pull.ok,
        "ctr pull through the node instance: {}",
        pull.output
    );
    containerd.assert_holds(&reference, &app, &app_manifest);
    let fetched = upstream_requests(&node.client(), "blob");
    assert!(
        fetched >= 3.0,
        "the node instance fetched the config and both layers upstream ({fetched} requests)"
    );
    println!(
        "pulled {reference} through the node instance in {:?}",
        pull.elapsed
    );

    // The upstream goes away, and the tag is older than its TTL: a node
    // without the image (a fresh containerd) still pulls it from the cache.
    upstream.kill();
    thread::sleep(Duration::from_millis(1500));
    let fresh = Containerd::start();
    let again = fresh.pull(&hosts_dir, &reference);
    assert!(
        again.ok,
        "cached image with the upstream gone: {}",
        again.output
    );
    fresh.assert_holds(&reference, &app, &app_manifest);
    assert_eq!(
        upstream_requests(&node.client(), "blob"),
        fetched,
        "no blob was asked upstream again"
    );
    println!(
        "pulled {reference} from the node's cache with the upstream stopped in {:?}",
        again.elapsed
    );

    // An image the node never cached: the node answers at once, containerd
    // tries the server (the stopped upstream) and gives up within seconds.
    let uncached = fresh.pull(&hosts_dir, &format!("{HOST}/library/other:v1"));
    assert!(
        !uncached.ok,
        "an uncached image cannot pull: {}",
        uncached.output
    );
    assert!(
        uncached.elapsed < FAILURE_LIMIT,
        "an uncached image failed after {:?}: {}",
        uncached.elapsed,
        uncached.output
    );
    println!(
        "an uncached image failed after {:?} with the upstream stopped",
        uncached.elapsed
    );
}

#[test]
fn eight_nodes_pulling_one_uncached_64_mib_layer_cost_the_upstream_one_get() {
    let work = tempfile::tempdir().unwrap();
    let upstream = BerthRegistry::start(RegistryOptions::new());
    let (big, big_manifest) = push(
        &upstream,
        "library/big",
        &[64 * MIB],
        &work.path().join("big"),
    );
    let layer = &big.reachable_from(&big_manifest).blobs;
    let node = node_instance(&upstream);
    let hosts_dir = work.path().join("certs.d");
    write_hosts(&hosts_dir, &node, &upstream);
    let reference = format!("{HOST}/library/big:v1");

    // Eight containerds (eight nodes' worth of runtime, so none of them
    // can share a download with another), started before anyone pulls.
    let runtimes: Vec<Containerd> = (0..8).map(|_| Containerd::start()).collect();
    let before = blob_gets(&upstream.client());
    let pulls: Vec<_> = thread::scope(|scope| {
        let handles: Vec<_> = runtimes
            .iter()
            .map(|containerd| {
                let (hosts_dir, reference) = (&hosts_dir, &reference);
                scope.spawn(move || containerd.pull(hosts_dir, reference))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (i, pull) in pulls.iter().enumerate() {
        assert!(pull.ok, "pull {i}: {}", pull.output);
        runtimes[i].assert_holds(&reference, &big, &big_manifest);
    }
    let gets = blob_gets(&upstream.client()) - before;
    let slowest = pulls.iter().map(|p| p.elapsed).max().unwrap_or_default();
    // Requests that found a blob missing and joined its one fill: more
    // than one per blob means the pulls really overlapped.
    let joined = scrape(&node.client()).sum(
        "berth_proxy_misses_total",
        &[("mirror", HOST), ("kind", "blob")],
    );
    println!(
        "8 containerds pulled {reference} (one 64 MiB layer) at once: {gets} upstream blob GETs for {} blobs; {joined} blob requests joined a fill; slowest pull {slowest:?}",
        layer.len()
    );
    assert!(
        joined > layer.len() as f64,
        "the pulls did not overlap ({joined} misses)"
    );
    // One GET per blob of the image (the layer and the config), whatever
    // the number of nodes asking.
    assert_eq!(gets, layer.len() as f64);
}
