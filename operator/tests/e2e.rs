//! The operator's output, served for real, without a kubelet.
//!
//! The operator reconciles a Registry against a real kube-apiserver (see
//! `support`); then the test plays the kubelet for the DaemonSet's
//! container. It writes the ConfigMap and the Secrets that the pod's volumes
//! name where the container's volume mounts put them, below a temporary
//! "node" directory (only the mount-path prefix changes, in file contents
//! too), resolves the container's environment (`secretKeyRef` included),
//! runs `berth-registry` with the container's own arguments, overriding only
//! the listen address (`REGISTRY_HTTP_ADDR`), waits for the container's own
//! readiness probe, and pushes and pulls an image with skopeo.
//!
//! That proves the configuration the operator produces is one berth-registry
//! accepts and serves with: on a hostPath directory, and on S3 (MinIO) with
//! TLS, htpasswd and keys from Secrets, where the GC CronJob's command also
//! runs against the same files and its report is read the way the operator
//! reads it.

mod support;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use berth_operator::controller::Settings;
use berth_operator::crd::Registry;
use berth_tests::certs::TestCa;
use berth_tests::htpasswd;
use berth_tests::http::{Client as HttpClient, agent_with_timeout, agent_with_tls, assert_status};
use berth_tests::images::{OciLayout, assert_same_image, single_image_layout};
use berth_tests::minio::{self, Minio};
use berth_tests::netns::OtherHost;
use berth_tests::process::{Retry, ServerProcess, free_port, start_until_bound};
use berth_tests::skopeo::{Skopeo, docker_ref};
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::{ConfigMap, Container, KeyToPath, Pod, PodSpec, Secret};
use kube::api::PostParams;
use kube::{Api, Client};
use serde_json::json;
use support::{ControlPlane, Operator, eventually};
use tempfile::TempDir;

/// The operator's `--registry-image` in these tests.
const OPERATOR_IMAGE: &str = "registry.example/berth-registry:e2e";
/// The user the htpasswd Secret lets in.
const USER: (&str, &str) = ("alice", "wonderland");

fn settings(namespace: &str) -> Settings {
    Settings {
        namespace: Some(namespace.to_owned()),
        debounce: Duration::from_millis(100),
        identity: format!("e2e-{namespace}"),
        registry_image: OPERATOR_IMAGE.to_owned(),
    }
}

async fn create_registry(client: &Client, namespace: &str, name: &str, spec: serde_json::Value) {
    let registry: Registry = serde_json::from_value(json!({
        "apiVersion": "berth.dev/v1alpha1", "kind": "Registry",
        "metadata": {"name": name}, "spec": spec,
    }))
    .expect("a Registry");
    Api::<Registry>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &registry)
        .await
        .expect("create Registry");
}

/// One container as a kubelet would run it, everything it refers to read
/// from the API server.
#[derive(Debug, Clone)]
struct Resolved {
    /// The container's volume mounts, each with the files it shows.
    mounts: Vec<Mount>,
    /// The environment, `secretKeyRef`s resolved.
    env: Vec<(String, String)>,
    /// The container's arguments, as the pod spec has them.
    args: Vec<String>,
    /// The readiness probe's scheme (`http` or `https`) and path.
    readiness: Option<(String, String)>,
    /// The liveness probe's path.
    liveness: Option<String>,
}

/// A volume as mounted into the container.
#[derive(Debug, Clone)]
struct Mount {
    /// The mount path inside the container.
    path: String,
    /// The volume's kind (`configMap`, `secret`, `emptyDir`, `hostPath`,
    /// `persistentVolumeClaim`).
    kind: &'static str,
    /// The files a ConfigMap or Secret volume shows; directories start empty.
    files: BTreeMap<String, Vec<u8>>,
}

/// The registry (first) container of the DaemonSet's pod template.
fn daemon_set_container(ds: &DaemonSet) -> (&PodSpec, &Container) {
    let pod = ds
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .expect("the DaemonSet has a pod template");
    (pod, pod.containers.first().expect("a container"))
}

/// The container of the CronJob's pod template.
fn cron_job_container(cron: &CronJob) -> (&PodSpec, &Container) {
    let pod = cron
        .spec
        .as_ref()
        .and_then(|s| s.job_template.spec.as_ref())
        .and_then(|s| s.template.spec.as_ref())
        .expect("the CronJob has a pod template");
    (pod, pod.containers.first().expect("a container"))
}

/// Reads the ConfigMaps and Secrets `container` uses through `pod`'s
/// volumes and its environment.
async fn resolve(
    client: &Client,
    namespace: &str,
    pod: &PodSpec,
    container: &Container,
) -> Resolved {
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let volumes = pod.volumes.as_deref().unwrap_or_default();
    let mut mounts = Vec::new();
    for mount in container.volume_mounts.iter().flatten() {
        assert!(
            mount.sub_path.is_none() && mount.sub_path_expr.is_none(),
            "subPath mounts are not played here: {mount:?}"
        );
        let volume = volumes
            .iter()
            .find(|v| v.name == mount.name)
            .unwrap_or_else(|| panic!("mount {:?} names no volume of the pod", mount.name));
        let (kind, files) = if let Some(source) = &volume.config_map {
            let map = config_maps.get(&source.name).await.unwrap_or_else(|e| {
                panic!("ConfigMap {} of volume {}: {e}", source.name, volume.name)
            });
            let mut files: BTreeMap<String, Vec<u8>> = map
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.into_bytes()))
                .collect();
            files.extend(
                map.binary_data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.0)),
            );
            ("configMap", project(files, source.items.as_deref()))
        } else if let Some(source) = &volume.secret {
            let name = source
                .secret_name
                .as_deref()
                .expect("a Secret volume names its Secret");
            let secret = secrets
                .get(name)
                .await
                .unwrap_or_else(|e| panic!("Secret {name} of volume {}: {e}", volume.name));
            let files = secret
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.0))
                .collect();
            ("secret", project(files, source.items.as_deref()))
        } else if volume.empty_dir.is_some() {
            ("emptyDir", BTreeMap::new())
        } else if volume.host_path.is_some() {
            ("hostPath", BTreeMap::new())
        } else if volume.persistent_volume_claim.is_some() {
            ("persistentVolumeClaim", BTreeMap::new())
        } else {
            panic!(
                "volume {} is of a kind not played here: {volume:?}",
                volume.name
            )
        };
        mounts.push(Mount {
            path: mount.mount_path.clone(),
            kind,
            files,
        });
    }

    assert!(
        container.env_from.as_ref().is_none_or(Vec::is_empty),
        "envFrom is not played here"
    );
    let mut env = Vec::new();
    for var in container.env.iter().flatten() {
        let value =
            match (&var.value, &var.value_from) {
                (Some(value), _) => value.clone(),
                (None, Some(source)) => {
                    let key_ref = source.secret_key_ref.as_ref().unwrap_or_else(|| {
                        panic!("{}: only secretKeyRef is played here", var.name)
                    });
                    let secret = secrets.get(&key_ref.name).await.unwrap_or_else(|e| {
                        panic!("Secret {} of ${}: {e}", key_ref.name, var.name)
                    });
                    let bytes = secret
                        .data
                        .unwrap_or_default()
                        .remove(&key_ref.key)
                        .unwrap_or_else(|| {
                            panic!("Secret {} has no key {}", key_ref.name, key_ref.key)
                        });
                    String::from_utf8(bytes.0).expect("an environment value is UTF-8")
                }
                (None, None) => String::new(),
            };
        env.push((var.name.clone(), value));
    }

    let readiness = container
        .readiness_probe
        .as_ref()
        .and_then(|p| p.http_get.as_ref())
        .map(|get| {
            (
                get.scheme.as_deref().unwrap_or("HTTP").to_lowercase(),
                get.path.clone().unwrap_or_else(|| "/".to_owned()),
            )
        });
    let liveness = container
        .liveness_probe
        .as_ref()
        .and_then(|p| p.http_get.as_ref())
        .map(|get| get.path.clone().unwrap_or_else(|| "/".to_owned()));
    Resolved {
        mounts,
        env,
        args: container.args.clone().unwrap_or_default(),
        readiness,
        liveness,
    }
}

/// The files a ConfigMap or Secret volume shows: every key, or only the
/// `items`, under their paths.
fn project(
    files: BTreeMap<String, Vec<u8>>,
    items: Option<&[KeyToPath]>,
) -> BTreeMap<String, Vec<u8>> {
    match items {
        None => files,
        Some(items) => items
            .iter()
            .map(|item| {
                let content = files
                    .get(&item.key)
                    .unwrap_or_else(|| panic!("volume item {} is not in its source", item.key));
                (item.path.clone(), content.clone())
            })
            .collect(),
    }
}

/// A stand-in for a node's filesystem: the pod path `/a/b` of a mounted
/// volume lives at `<dir>/a/b`.
struct Node {
    dir: TempDir,
}

impl Node {
    fn new() -> Node {
        let dir = tempfile::Builder::new()
            .prefix("berth-e2e-node-")
            .tempdir()
            .expect("temp dir");
        Node { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Where the pod path `pod_path` lives here, when a mount of `resolved` holds it.
    fn host(&self, resolved: &Resolved, pod_path: &str) -> Option<PathBuf> {
        let mounted = resolved.mounts.iter().any(|m| {
            let mount = m.path.trim_end_matches('/');
            pod_path == mount || pod_path.starts_with(&format!("{mount}/"))
        });
        mounted.then(|| self.dir.path().join(pod_path.trim_start_matches('/')))
    }

    /// `arg`, a pod path or `--flag=path`, with a mounted path moved here.
    fn rewrite_arg(&self, resolved: &Resolved, arg: &str) -> String {
        if let Some(path) = self.host(resolved, arg) {
            return path.display().to_string();
        }
        match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => match self.host(resolved, value) {
                Some(path) => format!("{flag}={}", path.display()),
                None => arg.to_owned(),
            },
            _ => arg.to_owned(),
        }
    }

    /// Writes every mount's files (a YAML file of a ConfigMap with its
    /// mounted paths moved here) and returns the arguments to run with.
    fn install(&self, resolved: &Resolved) -> Vec<String> {
        for mount in &resolved.mounts {
            let dir = self
                .host(resolved, &mount.path)
                .expect("a mount path is mounted");
            fs::create_dir_all(&dir).expect("create the mount directory");
            for (name, content) in &mount.files {
                let yaml = name.ends_with(".yml") || name.ends_with(".yaml");
                let content = if mount.kind == "configMap" && yaml {
                    self.rewrite_yaml(resolved, content)
                } else {
                    content.clone()
                };
                fs::write(dir.join(name), content).expect("write a mounted file");
            }
        }
        resolved
            .args
            .iter()
            .map(|a| self.rewrite_arg(resolved, a))
            .collect()
    }

    /// `text` with every string value that is a mounted path moved here.
    fn rewrite_yaml(&self, resolved: &Resolved, text: &[u8]) -> Vec<u8> {
        fn walk(value: &mut serde_norway::Value, rewrite: &dyn Fn(&str) -> Option<PathBuf>) {
            match value {
                serde_norway::Value::String(text) => {
                    if let Some(path) = rewrite(text) {
                        *text = path.display().to_string();
                    }
                }
                serde_norway::Value::Sequence(items) => {
                    items.iter_mut().for_each(|v| walk(v, rewrite))
                }
                serde_norway::Value::Mapping(map) => {
                    map.iter_mut().for_each(|(_, v)| walk(v, rewrite))
                }
                serde_norway::Value::Tagged(tagged) => walk(&mut tagged.value, rewrite),
                _ => {}
            }
        }
        let original: serde_norway::Value =
            serde_norway::from_slice(text).expect("the config file is YAML");
        let mut value = original.clone();
        walk(&mut value, &|path| self.host(resolved, path));
        // Nothing but the prefixes changed: taking them off gives the original.
        let mut restored = value.clone();
        walk(&mut restored, &|path| {
            let inside = Path::new(path).strip_prefix(self.path()).ok()?;
            Some(Path::new("/").join(inside))
        });
        assert_eq!(restored, original, "only mounted paths are rewritten");
        serde_norway::to_string(&value)
            .expect("YAML serializes")
            .into_bytes()
    }

    /// The config file a container's `--config` argument names, as written here.
    fn config_text(&self, args: &[String]) -> String {
        let file = args
            .iter()
            .position(|a| a == "--config")
            .and_then(|i| args.get(i + 1))
            .expect("a --config argument");
        fs::read_to_string(file).unwrap_or_default()
    }
}

/// berth-registry, running as the container would.
struct Served {
    process: ServerProcess,
    /// `127.0.0.1:PORT`.
    addr: String,
    base: String,
    port: u16,
}

/// Runs berth-registry with the container's arguments and environment plus
/// only `REGISTRY_HTTP_ADDR` on a free port of every address (as a pod's
/// port on its node), and waits until the
/// container's readiness probe answers 200 (over HTTPS trusting `ca`, when
/// the probe says HTTPS).
fn serve(node: &Node, resolved: &Resolved, args: &[String], ca: Option<&str>) -> Served {
    let (scheme, path) = resolved
        .readiness
        .clone()
        .expect("the container has a readiness probe");
    let agent = match (scheme.as_str(), ca) {
        ("https", Some(ca)) => agent_with_tls(Duration::from_secs(2), ca.as_bytes(), None),
        ("https", None) => panic!("an HTTPS probe needs the CA"),
        _ => agent_with_timeout(Duration::from_secs(2)),
    };
    start_until_bound("berth-registry", Retry::FreshPort, || {
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let mut cmd = Command::new(berth_tests::registry::binary());
        cmd.args(args)
            .current_dir(node.path())
            .env_clear()
            .env("PATH", berth_tests::tools::child_path())
            .env("HOME", node.path())
            .envs(resolved.env.iter().map(|(k, v)| (k, v)))
            .env("REGISTRY_HTTP_ADDR", format!("0.0.0.0:{port}"));
        let mut process = ServerProcess::spawn(cmd, &node.path().join("registry.log"));
        let base = format!("{scheme}://{addr}");
        let url = format!("{base}{path}");
        process
            .wait_ready_via(&agent, &url, 200)
            .map(|()| Served {
                process,
                addr,
                base,
                port,
            })
            .map_err(|e| {
                e.with_context(|| {
                    format!(
                        "--- the operator's config, as mounted ---\n{}",
                        node.config_text(args)
                    )
                })
            })
    })
}

/// Pushes a two-layer image to `served` and pulls it back into a new layout,
/// asserting the same content arrives; `creds` are `user:password`.
fn push_and_pull(served: &Served, repo: &str, creds: Option<&str>) {
    let work = tempfile::Builder::new()
        .prefix("berth-e2e-images-")
        .tempdir()
        .expect("temp dir");
    let skopeo = Skopeo::new();
    let (layout, _) =
        single_image_layout(&work.path().join("pushed"), "v1", &[96 * 1024, 16 * 1024]);
    let remote = docker_ref(&served.addr, repo, "v1");
    let push: Vec<&str> = creds.map(|c| vec!["--dest-creds", c]).unwrap_or_default();
    if let Err(error) = skopeo.try_copy_with(&layout.reference("v1"), &remote, &push) {
        panic!(
            "push: {error}\n--- registry log ---\n{}",
            served.process.log()
        );
    }
    let pulled = work.path().join("pulled");
    let pull: Vec<&str> = creds.map(|c| vec!["--src-creds", c]).unwrap_or_default();
    let local = format!("oci:{}:v1", pulled.display());
    if let Err(error) = skopeo.try_copy_with(&remote, &local, &pull) {
        panic!(
            "pull: {error}\n--- registry log ---\n{}",
            served.process.log()
        );
    }
    assert_same_image(&layout, &OciLayout::open(&pulled), "v1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_path_registry_serves_with_the_operators_config() {
    let plane = ControlPlane::shared().await;
    let client = plane.client().await;
    let ns = plane.namespace("e2e-fs").await;
    let _operator = Operator::start_with(client.clone(), settings(&ns));
    let spec = json!({
        "storage": {"filesystem": {"hostPath": "/var/lib/berth"}},
        "exposure": {"mode": "HostNetwork", "port": 5443},
        "gc": {"schedule": "@hourly", "deleteUntagged": true},
        "logLevel": "debug",
    });
    create_registry(&client, &ns, "local", spec).await;
    let daemon_sets: Api<DaemonSet> = Api::namespaced(client.clone(), &ns);
    let ds = eventually("DaemonSet", || async {
        daemon_sets.get_opt("local").await.ok().flatten()
    })
    .await;
    let (pod, container) = daemon_set_container(&ds);
    assert_eq!(
        container.image.as_deref(),
        Some(OPERATOR_IMAGE),
        "a Registry without spec.image runs the operator's --registry-image"
    );
    let resolved = resolve(&client, &ns, pod, container).await;
    assert!(
        resolved.mounts.iter().any(|m| m.kind == "hostPath"),
        "the data volume is the hostPath: {resolved:?}"
    );

    tokio::task::block_in_place(|| {
        let node = Node::new();
        let args = node.install(&resolved);
        assert_eq!(args.first().map(String::as_str), Some("serve"), "{args:?}");
        let served = serve(&node, &resolved, &args, None);
        let http = HttpClient::new(&served.base);
        let liveness = resolved.liveness.as_deref().expect("a liveness probe");
        assert_status(&http.get(liveness), 200, "the liveness probe");
        assert_status(&http.get("/v2/"), 200, "GET /v2/ without auth");

        push_and_pull(&served, "team/app", None);

        // A client on another host (its own network namespace, link and
        // address) pulls, but its push without credentials is refused: a
        // Registry without auth takes writes only over the pod's loopback,
        // where the push above and a port-forward arrive.
        let other = OtherHost::new().expect("another host");
        let remote = format!("{}:{}", other.local_ip, served.port);
        let outside = Skopeo::in_netns(other.name());
        let work = tempfile::tempdir().expect("temp dir");
        let pulled = format!("oci:{}:v1", work.path().join("pulled").display());
        if let Err(error) = outside.try_copy(&docker_ref(&remote, "team/app", "v1"), &pulled) {
            panic!("a pull from another host: {error}");
        }
        let (layout, _) = single_image_layout(&work.path().join("pushed"), "v2", &[4096]);
        match outside.try_copy(
            &layout.reference("v2"),
            &docker_ref(&remote, "team/app", "v2"),
        ) {
            Err(error) if error.stderr.contains("denied") => {}
            other => panic!("a push from another host without credentials: {other:?}"),
        }
        assert_status(
            &http.head("/v2/team/app/manifests/v2"),
            404,
            "the refused push left no tag",
        );

        // The content is in the directory the hostPath volume is mounted at.
        let data = resolved
            .mounts
            .iter()
            .find(|m| m.kind == "hostPath")
            .and_then(|m| node.host(&resolved, &m.path))
            .expect("the data mount");
        let tag = data.join("docker/registry/v2/repositories/team/app/_manifests/tags/v1");
        assert!(tag.is_dir(), "{} is missing", tag.display());
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_registry_with_tls_and_htpasswd_serves_with_the_operators_config() {
    let minio = tokio::task::block_in_place(Minio::start);
    let bucket = tokio::task::block_in_place(|| minio.create_bucket("berth-e2e"));
    let ca = TestCa::new("berth-e2e-ca");
    let cert = ca.server_cert("berth-e2e");
    let users = htpasswd::entry(USER.0, USER.1, htpasswd::HTPASSWD_COST) + "\n";

    let plane = ControlPlane::shared().await;
    let client = plane.client().await;
    let ns = plane.namespace("e2e-s3").await;
    let _operator = Operator::start_with(client.clone(), settings(&ns));
    support::apply_secret(
        &client,
        &ns,
        "s3-keys",
        "Opaque",
        &[
            ("accessKey", minio::ACCESS_KEY.as_bytes()),
            ("secretKey", minio::SECRET_KEY.as_bytes()),
        ],
    )
    .await;
    support::apply_secret(
        &client,
        &ns,
        "registry-tls",
        "kubernetes.io/tls",
        &[
            ("tls.crt", cert.cert_pem.as_bytes()),
            ("tls.key", cert.key_pem.as_bytes()),
        ],
    )
    .await;
    support::apply_secret(
        &client,
        &ns,
        "registry-users",
        "Opaque",
        &[("htpasswd", users.as_bytes())],
    )
    .await;
    let pinned = "mirror.example/berth-registry:pinned";
    let spec = json!({
        "image": pinned,
        "storage": {"s3": {
            "bucket": bucket.bucket, "region": bucket.region, "endpoint": bucket.endpoint,
            "forcePathStyle": true, "rootDirectory": "cluster", "credentialsSecret": "s3-keys",
        }},
        "tls": {"secretName": "registry-tls"},
        "auth": {"htpasswd": {"secretName": "registry-users"}},
        "gc": {"schedule": "0 3 * * *", "deleteUntagged": true},
    });
    create_registry(&client, &ns, "shared", spec).await;
    let daemon_sets: Api<DaemonSet> = Api::namespaced(client.clone(), &ns);
    let ds = eventually("DaemonSet", || async {
        daemon_sets.get_opt("shared").await.ok().flatten()
    })
    .await;
    let (pod, container) = daemon_set_container(&ds);
    assert_eq!(
        container.image.as_deref(),
        Some(pinned),
        "spec.image wins over the operator's default"
    );
    let resolved = resolve(&client, &ns, pod, container).await;
    let cron_jobs: Api<CronJob> = Api::namespaced(client.clone(), &ns);
    let cron = eventually("GC CronJob", || async {
        cron_jobs.get_opt("shared-gc").await.ok().flatten()
    })
    .await;
    let (job_pod, job_container) = cron_job_container(&cron);
    let job = resolve(&client, &ns, job_pod, job_container).await;
    assert!(
        resolved
            .env
            .iter()
            .any(|(k, v)| k == "REGISTRY_STORAGE_S3_SECRETKEY" && v == minio::SECRET_KEY),
        "the S3 keys come from the Secret"
    );

    let report = tokio::task::block_in_place(|| {
        let node = Node::new();
        let args = node.install(&resolved);
        let config = node.config_text(&args);
        assert!(
            !config.contains(minio::SECRET_KEY) && !config.contains(minio::ACCESS_KEY),
            "S3 keys in the config file: {config}"
        );
        let served = serve(&node, &resolved, &args, Some(ca.cert_pem()));

        // TLS with the Secret's certificate, basic auth with the Secret's users.
        let agent = agent_with_tls(Duration::from_secs(10), ca.cert_pem().as_bytes(), None);
        let https = HttpClient::with_agent(&served.base, agent);
        let challenge = https.get("/v2/");
        assert_status(&challenge, 401, "GET /v2/ without credentials");
        assert!(
            challenge
                .header("www-authenticate")
                .is_some_and(|h| h.starts_with("Basic")),
            "{}",
            challenge.describe()
        );
        assert_status(
            &https.clone().with_basic_auth(USER.0, USER.1).get("/v2/"),
            200,
            "GET /v2/ as alice",
        );
        let plain = HttpClient::with_agent(
            &format!("http://{}", served.addr),
            agent_with_timeout(Duration::from_secs(10)),
        );
        let answer = plain.try_request("GET", "/v2/", &[], None);
        assert!(
            answer.as_ref().map_or(true, |r| r.status == 400),
            "plain HTTP is served: {answer:?}"
        );

        let (user, password) = USER;
        let creds = format!("{user}:{password}");
        let skopeo = Skopeo::new();
        let work = tempfile::Builder::new()
            .prefix("berth-e2e-anon-")
            .tempdir()
            .expect("temp dir");
        let (layout, _) = single_image_layout(&work.path().join("image"), "v1", &[1024]);
        assert!(
            skopeo
                .try_copy(
                    &layout.reference("v1"),
                    &docker_ref(&served.addr, "team/anon", "v1")
                )
                .is_err(),
            "a push without credentials is refused"
        );
        push_and_pull(&served, "team/app", Some(&creds));

        // The bytes are in the bucket, below spec.storage.s3.rootDirectory.
        let (checked, bad) = minio.verify_blobs(&bucket.clone().with_root_directory("cluster"));
        assert!(
            checked >= 3 && bad.is_empty(),
            "{checked} blobs in the bucket, bad: {bad:?}"
        );

        // The GC CronJob's container, against the same files.
        let job_args = node.install(&job);
        assert_eq!(
            job_args.first().map(String::as_str),
            Some("gc"),
            "{job_args:?}"
        );
        let output = Command::new(berth_tests::registry::binary())
            .args(&job_args)
            .current_dir(node.path())
            .env_clear()
            .env("PATH", berth_tests::tools::child_path())
            .env("HOME", node.path())
            .envs(job.env.iter().map(|(k, v)| (k, v)))
            .output()
            .expect("run berth-registry gc");
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "the GC job fails: {}\n{stdout}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        // Nothing is older than the grace period: the image is still whole.
        push_and_pull(&served, "team/app", Some(&creds));
        stdout.trim().lines().last().unwrap_or_default().to_owned()
    });

    // The operator reads the job's report from the pod's termination message.
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "shared-gc-1"},
        "status": {"containerStatuses": [{
            "name": "gc", "image": pinned, "imageID": "", "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": 0, "finishedAt": "2025-01-01T03:00:05Z", "message": report}},
        }]},
    }))
    .expect("a GC pod");
    let result = berth_operator::status::last_gc(&[pod]).expect("a GC result");
    assert_eq!(result.outcome, "Succeeded", "report {report:?}");
    assert_eq!(
        (result.deleted_blobs, result.freed_bytes),
        (0, 0),
        "report {report:?}"
    );
}
