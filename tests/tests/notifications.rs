//! Webhook notifications in Distribution's envelope, received by an HTTP
//! endpoint inside the test: push, pull and delete events with their
//! target, request, actor and source; one event per action; events queued
//! while the endpoint is down arrive once it is up; an endpoint that never
//! comes up neither blocks requests nor grows the queue past its bound or
//! the process's memory.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use berth_tests::htpasswd;
use berth_tests::http::{Client, assert_status};
use berth_tests::images::{OciLayout, assert_same_image, random_bytes, single_image_layout};
use berth_tests::metrics::{self, Exposition};
use berth_tests::oci::{self, OCI_MANIFEST};
use berth_tests::process::{free_port, rss_kib};
use berth_tests::registry::{BerthRegistry, RegistryOptions};
use berth_tests::skopeo::{Skopeo, docker_ref};
use berth_tests::webhook::{Receiver, summary, url_for};
use berth_tests::yaml::quoted;
use serde_json::Value;

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;
const EVENTS_MEDIA_TYPE: &str = "application/vnd.docker.distribution.events.v2+json";
const ENDPOINT: &str = "test-endpoint";
const WAIT: Duration = Duration::from_secs(30);

/// Options for a registry that notifies `url` (retrying after 200 ms,
/// doubling after 3 failures), with deletes on.
fn notifying(url: &str) -> RegistryOptions {
    RegistryOptions::new().delete_enabled(true).section(
        "notifications",
        &format!(
            "endpoints:\n\
             - name: {ENDPOINT}\n  url: {}\n  timeout: 2s\n  backoff: 200ms\n  threshold: 3",
            quoted(url)
        ),
    )
}

/// Events with `action` whose target has `digest`.
fn with_digest<'a>(events: &'a [Value], action: &str, digest: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| e["action"] == action && e["target"]["digest"] == digest)
        .collect()
}

fn str_field<'a>(event: &'a Value, path: &[&str]) -> &'a str {
    let mut value = event;
    for key in path {
        value = &value[*key];
    }
    value
        .as_str()
        .unwrap_or_else(|| panic!("event without a string at {}: {event:#}", path.join(".")))
}

/// Assert the fields every event carries.
fn assert_envelope(event: &Value, repo: &str, actor: &str) {
    for path in [
        &["id"][..],
        &["timestamp"],
        &["request", "id"],
        &["request", "method"],
        &["request", "useragent"],
        &["request", "addr"],
        &["source", "instanceID"],
        &["source", "addr"],
    ] {
        assert!(
            !str_field(event, path).is_empty(),
            "empty {} in {event:#}",
            path.join(".")
        );
    }
    assert_eq!(
        str_field(event, &["target", "repository"]),
        repo,
        "{event:#}"
    );
    assert_eq!(event["actor"]["name"], actor, "actor.name in {event:#}");
}

#[test]
fn push_pull_and_delete_events() {
    let receiver = Receiver::start();
    let auth = tempfile::tempdir().unwrap();
    let htpasswd_file = auth.path().join("htpasswd");
    htpasswd::write(&htpasswd_file, &[("alice", "alices-password")]);
    let registry = BerthRegistry::start(notifying(&receiver.url()).section(
        "auth.htpasswd",
        &format!("realm: events\npath: {}", quoted(htpasswd_file.display())),
    ));
    let work = tempfile::tempdir().unwrap();
    let (layout, manifest) =
        single_image_layout(&work.path().join("src"), "v1", &[8 * KIB, 2 * MIB]);
    let blobs = layout.reachable_from(&manifest).blobs;
    let repo = "events/app";
    let skopeo = Skopeo::new();
    let target = docker_ref(&registry.addr(), repo, "v1");
    let creds = ["--dest-creds", "alice:alices-password"];
    skopeo
        .try_copy_with(&layout.reference("v1"), &target, &creds)
        .unwrap_or_else(|e| panic!("{e}"));

    // Push: one event per blob and one for the manifest, in the order of
    // the requests (the manifest last).
    let events = receiver.wait_for("the manifest push event", WAIT, |events| {
        !with_digest(events, "push", &manifest.digest).is_empty()
    });
    for digest in &blobs {
        let pushes = with_digest(&events, "push", digest);
        assert_eq!(pushes.len(), 1, "push events of blob {digest}: {pushes:#?}");
        let event = pushes[0];
        assert_envelope(event, repo, "alice");
        let size = std::fs::metadata(layout.blob_path(digest)).unwrap().len();
        assert_eq!(event["target"]["size"], size, "{event:#}");
        assert!(
            !str_field(event, &["target", "mediaType"]).is_empty(),
            "blob push event without a media type: {event:#}"
        );
        assert!(
            str_field(event, &["target", "url"]).ends_with(&format!("/v2/{repo}/blobs/{digest}")),
            "blob push event url: {event:#}"
        );
    }
    let pushes = with_digest(&events, "push", &manifest.digest);
    assert_eq!(pushes.len(), 1, "push events of the manifest: {pushes:#?}");
    let event = pushes[0];
    assert_envelope(event, repo, "alice");
    assert_eq!(str_field(event, &["target", "mediaType"]), OCI_MANIFEST);
    assert_eq!(event["target"]["size"], manifest.size);
    assert_eq!(str_field(event, &["target", "tag"]), "v1");
    assert_eq!(str_field(event, &["request", "method"]), "PUT");
    assert!(
        str_field(event, &["target", "url"])
            .ends_with(&format!("/v2/{repo}/manifests/{}", manifest.digest)),
        "manifest push event url: {event:#}"
    );
    let position = |digest: &str| {
        events
            .iter()
            .position(|e| e["action"] == "push" && e["target"]["digest"] == digest)
            .unwrap()
    };
    for digest in &blobs {
        assert!(
            position(digest) < position(&manifest.digest),
            "the push of blob {digest} was notified after the manifest's"
        );
    }

    // Pull: one event per blob GET, and for the manifest.
    let pulled = work.path().join("pulled");
    skopeo
        .try_copy_with(
            &target,
            &format!("oci:{}:v1", pulled.display()),
            &["--src-creds", "alice:alices-password"],
        )
        .unwrap_or_else(|e| panic!("{e}"));
    assert_same_image(&layout, &OciLayout::open(&pulled), "v1");
    let events = receiver.wait_for("pull events of every blob", WAIT, |events| {
        blobs
            .iter()
            .all(|d| !with_digest(events, "pull", d).is_empty())
    });
    for digest in &blobs {
        let pulls = with_digest(&events, "pull", digest);
        assert_eq!(pulls.len(), 1, "pull events of blob {digest}: {pulls:#?}");
        assert_envelope(pulls[0], repo, "alice");
        assert_eq!(str_field(pulls[0], &["request", "method"]), "GET");
    }
    let manifest_pulls = with_digest(&events, "pull", &manifest.digest);
    assert!(!manifest_pulls.is_empty(), "no pull event of the manifest");
    for event in &manifest_pulls {
        assert_envelope(event, repo, "alice");
        assert_eq!(str_field(event, &["target", "mediaType"]), OCI_MANIFEST);
    }

    // Delete: one event.
    let alice = registry
        .client()
        .with_basic_auth("alice", "alices-password");
    let reply = alice.delete(&format!("/v2/{repo}/manifests/{}", manifest.digest));
    assert_status(&reply, 202, "DELETE the manifest");
    let events = receiver.wait_for("the delete event", WAIT, |events| {
        !with_digest(events, "delete", &manifest.digest).is_empty()
    });
    let deletes = with_digest(&events, "delete", &manifest.digest);
    assert_eq!(deletes.len(), 1, "delete events: {deletes:#?}");
    assert_envelope(deletes[0], repo, "alice");
    assert_eq!(str_field(deletes[0], &["request", "method"]), "DELETE");

    // Events arrive in order, so nothing of the above is still on its way:
    // every push and pull was notified exactly as counted above.
    let ids: BTreeSet<&str> = events.iter().map(|e| str_field(e, &["id"])).collect();
    assert_eq!(ids.len(), events.len(), "event ids are not unique");
    for digest in &blobs {
        assert_eq!(with_digest(&events, "push", digest).len(), 1);
        assert_eq!(with_digest(&events, "pull", digest).len(), 1);
    }
    assert_eq!(with_digest(&events, "push", &manifest.digest).len(), 1);
    let instances: BTreeSet<&str> = events
        .iter()
        .map(|e| str_field(e, &["source", "instanceID"]))
        .collect();
    assert_eq!(instances.len(), 1, "one instance, one instance id");

    for delivery in receiver.deliveries() {
        assert_eq!(delivery.method, "POST");
        let content_type = delivery.header("content-type").unwrap_or_default();
        assert!(
            content_type.split(';').next() == Some(EVENTS_MEDIA_TYPE),
            "a delivery with content type {content_type:?}"
        );
    }
}

/// `berth_notification_events_total` of the test endpoint by outcome, and
/// its queue depth.
fn delivery_figures(scrape: &Exposition) -> (BTreeMap<String, f64>, f64) {
    let mut outcomes = BTreeMap::new();
    for sample in scrape.matching("berth_notification_events_total", &[("endpoint", ENDPOINT)]) {
        *outcomes
            .entry(sample.labels.get("outcome").cloned().unwrap_or_default())
            .or_insert(0.0) += sample.value;
    }
    let depth = scrape.sum("berth_notification_queue_depth", &[("endpoint", ENDPOINT)]);
    (outcomes, depth)
}

/// Poll `/metrics` (up to 30 s) until `done` holds for the figures.
fn wait_for_figures(
    client: &Client,
    what: &str,
    done: impl Fn(&BTreeMap<String, f64>, f64) -> bool,
) -> (BTreeMap<String, f64>, f64) {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let (outcomes, depth) = delivery_figures(&metrics::scrape(client));
        if done(&outcomes, depth) {
            return (outcomes, depth);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what} within {WAIT:?}: outcomes {outcomes:?}, queue depth {depth}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn events_queued_while_the_endpoint_is_down_arrive_when_it_is_up() {
    let port = free_port();
    let registry = BerthRegistry::start(notifying(&url_for(port)));
    let client = registry.client();
    let digests: Vec<String> = (0..5)
        .map(|i| oci::push_blob(&client, "queued/app", format!("blob {i}").as_bytes()))
        .collect();
    // Deliveries are failing now (nothing listens on the port).
    let (_, depth) = wait_for_figures(&client, "a failed delivery", |outcomes, _| {
        outcomes.get("failed").copied().unwrap_or(0.0) > 0.0
    });
    assert!(depth >= 1.0, "nothing queued while the endpoint is down");

    let receiver = Receiver::start_on(port).expect("bind the endpoint's port");
    let events = receiver.wait_for("every queued push event", WAIT, |events| {
        digests
            .iter()
            .all(|d| !with_digest(events, "push", d).is_empty())
    });
    for digest in &digests {
        assert_eq!(
            with_digest(&events, "push", digest).len(),
            1,
            "push events of {digest}: {:?}",
            events.iter().map(summary).collect::<Vec<_>>()
        );
    }
    wait_for_figures(&client, "an empty queue", |outcomes, depth| {
        depth == 0.0 && outcomes.get("delivered").copied().unwrap_or(0.0) >= 5.0
    });
}

#[test]
fn an_endpoint_that_never_answers_neither_blocks_nor_grows_the_queue() {
    const QUEUE: usize = 50;
    let port = free_port();
    let mut registry = BerthRegistry::start(
        notifying(&url_for(port)).section("berth", &format!("notificationqueuesize: {QUEUE}")),
    );
    let client = registry.client();
    // Pushes succeed while events pile up undelivered.
    for i in 0..120 {
        oci::push_blob(&client, "dead/app", format!("blob {i}").as_bytes());
    }
    let (outcomes, depth) = delivery_figures(&metrics::scrape(&client));
    assert!(depth <= QUEUE as f64, "queue depth {depth} past {QUEUE}");
    let dropped_before = outcomes.get("dropped").copied().unwrap_or(0.0);
    assert!(
        dropped_before >= (120 - QUEUE) as f64,
        "only {dropped_before} events dropped after 120 pushes into a queue of {QUEUE}: {outcomes:?}"
    );

    // A burst of pulls: every GET is an event, every one dropped or queued.
    let blob = random_bytes(KIB);
    let digest = oci::push_blob(&client, "dead/app", &blob);
    let pid = registry.pid().expect("the registry runs");
    for _ in 0..200 {
        assert_status(
            &client.get(&format!("/v2/dead/app/blobs/{digest}")),
            200,
            "warm-up GET",
        );
    }
    let rss_before = rss_kib(pid).expect("read VmRSS");
    const BURST: usize = 3000;
    for _ in 0..BURST {
        let reply = client.get(&format!("/v2/dead/app/blobs/{digest}"));
        assert_eq!(
            reply.status,
            200,
            "GET during the burst:\n{}",
            reply.describe()
        );
    }
    let rss_after = rss_kib(pid).expect("read VmRSS");
    let (outcomes, depth) = delivery_figures(&metrics::scrape(&client));
    let dropped_after = outcomes.get("dropped").copied().unwrap_or(0.0);
    println!(
        "dead endpoint: queue depth {depth}, dropped {dropped_before} -> {dropped_after}, \
         VmRSS {rss_before} KiB -> {rss_after} KiB after {BURST} pulls"
    );
    assert!(depth <= QUEUE as f64, "queue depth {depth} past {QUEUE}");
    assert!(
        dropped_after >= dropped_before + (BURST - QUEUE) as f64,
        "dropped went from {dropped_before} to {dropped_after} over {BURST} pull events"
    );
    assert!(
        rss_after <= rss_before + 64 * 1024,
        "VmRSS grew from {rss_before} KiB to {rss_after} KiB over {BURST} undeliverable events"
    );
    // Still serving.
    oci::push_blob(&client, "dead/app", b"after the burst");
    assert!(registry.is_running());
}
