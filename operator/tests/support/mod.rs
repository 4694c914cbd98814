//! A throwaway control plane for integration tests, the way
//! controller-runtime's envtest does it: etcd and kube-apiserver (built by
//! `make tools` into `.tools/bin/`) on free loopback ports, state in a
//! temporary directory, a serving certificate made on the spot, and an admin
//! identity from a static token file. kube-controller-manager runs only when
//! a test asks for it ([`ControlPlane::start_controller_manager`]), with just
//! the controllers that delete: the garbage collector (owner references)
//! and the namespace controller. There is no scheduler or kubelet: tests
//! play their part where they need one.
//!
//! Processes are killed when the [`ControlPlane`] (or the
//! [`ControllerManager`]) is dropped.

#![allow(dead_code)] // Each test binary uses a different part of the harness.

pub mod helm;

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use base64::Engine as _;
use berth_operator::controller::{self, Settings};
use berth_operator::metrics::Metrics;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use tempfile::TempDir;

/// Free loopback ports come from the shared harness, as the registry tests' do.
pub use berth_tests::process::free_port;

/// How long etcd and kube-apiserver get to become ready (a busy 2-core machine is slow).
const READY_TIMEOUT: Duration = Duration::from_secs(90);
/// The admin token in the static token file.
const TOKEN: &str = "berth-test-admin-token";

/// etcd and kube-apiserver, running.
pub struct ControlPlane {
    dir: TempDir,
    etcd: Child,
    apiserver: Option<Child>,
    apiserver_port: u16,
    etcd_port: u16,
    /// The kubeconfig file of an admin (group `system:masters`).
    pub kubeconfig: PathBuf,
}

/// The controllers [`ControlPlane::start_controller_manager`] runs: the
/// garbage collector, which deletes objects whose owner is gone, and the
/// namespace controller, which empties a deleted namespace.
pub const CONTROLLERS: &str = "garbage-collector-controller,namespace-controller";

/// Where `make tools` links the binaries.
pub fn tool(name: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../.tools/bin")
        .join(name);
    assert!(
        path.exists(),
        "{} is missing: run `make tools` (scripts/k8s-tools.sh builds kube-apiserver and etcd)",
        path.display()
    );
    path
}

static SHARED: std::sync::Mutex<Weak<ControlPlane>> = std::sync::Mutex::new(Weak::new());

impl ControlPlane {
    /// A control plane shared by the tests running at the same time; the
    /// last one to finish stops it. Tests keep apart through namespaces.
    pub async fn shared() -> Arc<ControlPlane> {
        let existing = SHARED.lock().map(|weak| weak.upgrade()).unwrap_or(None);
        if let Some(plane) = existing {
            return plane;
        }
        // Started outside the lock; two tests racing here start two planes,
        // which is wasteful but correct.
        let plane = Arc::new(ControlPlane::start().await);
        if let Ok(mut shared) = SHARED.lock() {
            *shared = Arc::downgrade(&plane);
        }
        plane
    }

    /// A control plane of one's own, with the Registry CRD installed.
    pub async fn start() -> ControlPlane {
        let (apiserver_bin, etcd_bin) = (tool("kube-apiserver"), tool("etcd"));
        let dir = tempfile::Builder::new()
            .prefix("berth-envtest")
            .tempdir()
            .expect("temp dir");
        let etcd_port = free_port();
        let etcd = start_etcd(&etcd_bin, dir.path(), etcd_port);
        write_pki(dir.path());
        let apiserver_port = free_port();
        let kubeconfig = dir.path().join("kubeconfig");
        write_kubeconfig(&kubeconfig, dir.path(), apiserver_port);
        let mut plane = ControlPlane {
            dir,
            etcd,
            apiserver: None,
            apiserver_port,
            etcd_port,
            kubeconfig,
        };
        plane.apiserver = Some(plane.spawn_apiserver(&apiserver_bin));
        plane.wait_ready().await;
        plane.install_crd().await;
        plane
    }

    /// A client authenticated as the admin.
    pub async fn client(&self) -> Client {
        let kubeconfig = Kubeconfig::read_from(&self.kubeconfig).expect("read kubeconfig");
        let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .expect("kubeconfig");
        Client::try_from(config).expect("client")
    }

    /// The API server's port.
    pub fn apiserver_port(&self) -> u16 {
        self.apiserver_port
    }

    /// A copy of the admin kubeconfig that reaches the API server through
    /// `port` on loopback (a proxy a test controls).
    pub fn kubeconfig_through(&self, port: u16) -> PathBuf {
        let path = self.dir.path().join(format!("kubeconfig-{port}"));
        write_kubeconfig(&path, self.dir.path(), port);
        path
    }

    /// A new namespace with a unique name starting with `prefix`.
    pub async fn namespace(&self, prefix: &str) -> String {
        let name = format!("{prefix}-{:x}", rand_suffix());
        let api: Api<Namespace> = Api::all(self.client().await);
        let ns: Namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": name}}))
            .expect("namespace");
        api.create(&PostParams::default(), &ns)
            .await
            .expect("create namespace");
        name
    }

    /// Stops kube-apiserver (etcd keeps the state).
    pub fn stop_apiserver(&mut self) {
        if let Some(mut child) = self.apiserver.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts kube-controller-manager with only [`CONTROLLERS`], as the
    /// admin of the kubeconfig, and waits until its `/healthz` answers. It
    /// acts on the whole cluster; it is stopped when the handle is dropped.
    pub async fn start_controller_manager(&self) -> ControllerManager {
        let bin = tool("kube-controller-manager");
        let dir = self.dir.path();
        let path = |name: &str| dir.join(name).display().to_string();
        let port = free_port();
        let args = [
            format!("--kubeconfig={}", self.kubeconfig.display()),
            format!("--controllers={CONTROLLERS}"),
            "--use-service-account-credentials=false".to_owned(),
            "--leader-elect=false".to_owned(),
            format!("--service-account-private-key-file={}", path("sa.key")),
            format!("--root-ca-file={}", path("ca.crt")),
            "--bind-address=127.0.0.1".to_owned(),
            format!("--secure-port={port}"),
            format!("--tls-cert-file={}", path("serving.crt")),
            format!("--tls-private-key-file={}", path("serving.key")),
        ];
        let log = dir.join(format!("controller-manager-{port}.log"));
        let mut manager = ControllerManager {
            child: spawn(&bin, &args, &log),
            log,
        };
        let url = format!("https://127.0.0.1:{port}");
        let kubeconfig = Kubeconfig::read_from(&self.kubeconfig).expect("read kubeconfig");
        let mut config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .expect("kubeconfig");
        config.cluster_url = url.parse().expect("a URL");
        let client = Client::try_from(config).expect("client");
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if answers_ok(&client, "/healthz").await {
                return manager;
            }
            if let Ok(Some(status)) = manager.child.try_wait() {
                panic!(
                    "kube-controller-manager exited ({status}):\n{}",
                    manager.logs()
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "kube-controller-manager not healthy after {READY_TIMEOUT:?}:\n{}",
                    manager.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Starts kube-apiserver again on the same port and waits for it.
    pub async fn restart_apiserver(&mut self) {
        self.stop_apiserver();
        self.apiserver = Some(self.spawn_apiserver(&tool("kube-apiserver")));
        self.wait_ready().await;
    }

    fn spawn_apiserver(&self, bin: &Path) -> Child {
        let dir = self.dir.path();
        let path = |name: &str| dir.join(name).display().to_string();
        let args = [
            format!("--etcd-servers=http://127.0.0.1:{}", self.etcd_port),
            format!("--secure-port={}", self.apiserver_port),
            "--bind-address=127.0.0.1".to_owned(),
            "--advertise-address=127.0.0.1".to_owned(),
            format!("--cert-dir={}", path("apiserver-certs")),
            format!("--tls-cert-file={}", path("serving.crt")),
            format!("--tls-private-key-file={}", path("serving.key")),
            format!("--token-auth-file={}", path("tokens.csv")),
            "--authorization-mode=RBAC".to_owned(),
            "--service-cluster-ip-range=10.0.0.0/24".to_owned(),
            "--service-account-issuer=https://kubernetes.default.svc".to_owned(),
            format!("--service-account-key-file={}", path("sa.pub")),
            format!("--service-account-signing-key-file={}", path("sa.key")),
            "--allow-privileged=true".to_owned(),
            "--enable-priority-and-fairness=false".to_owned(),
        ];
        spawn(bin, &args, &dir.join("apiserver.log"))
    }

    async fn wait_ready(&mut self) {
        let client = self.client().await;
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if answers_ok(&client, "/readyz").await {
                return;
            }
            if let Some(Ok(Some(status))) = self.apiserver.as_mut().map(Child::try_wait) {
                panic!("kube-apiserver exited ({status}):\n{}", self.logs());
            }
            if Instant::now() > deadline {
                panic!(
                    "kube-apiserver not ready after {READY_TIMEOUT:?}:\n{}",
                    self.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// The tails of etcd's and kube-apiserver's logs.
    pub fn logs(&self) -> String {
        ["etcd.log", "apiserver.log"]
            .iter()
            .map(|name| {
                let text = fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(30).collect();
                format!(
                    "--- {name}\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Applies `crds/registry.yaml` (the checked-in file) and waits until it is served.
    async fn install_crd(&self) {
        let text = include_str!("../../../crds/registry.yaml");
        let crd: CustomResourceDefinition =
            serde_norway::from_str(text).expect("crds/registry.yaml parses");
        let api: Api<CustomResourceDefinition> = Api::all(self.client().await);
        let name = "registries.berth.dev";
        api.patch(
            name,
            &PatchParams::apply("berth-tests").force(),
            &Patch::Apply(&crd),
        )
        .await
        .expect("kube-apiserver accepts the CRD");
        eventually("CRD established", || async {
            let crd = api.get(name).await.ok()?;
            let conditions = crd.status?.conditions?;
            conditions
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
                .then_some(())
        })
        .await;
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.stop_apiserver();
        let _ = self.etcd.kill();
        let _ = self.etcd.wait();
    }
}

/// kube-controller-manager, running; killed when dropped.
pub struct ControllerManager {
    child: Child,
    log: PathBuf,
}

impl ControllerManager {
    /// The tail of its log.
    pub fn logs(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(40).collect();
        format!(
            "--- {}\n{}",
            self.log.display(),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        )
    }
}

impl Drop for ControllerManager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_etcd(bin: &Path, dir: &Path, port: u16) -> Child {
    let peer = free_port();
    let args = [
        "--name=default".to_owned(),
        format!("--data-dir={}", dir.join("etcd").display()),
        format!("--listen-client-urls=http://127.0.0.1:{port}"),
        format!("--advertise-client-urls=http://127.0.0.1:{port}"),
        format!("--listen-peer-urls=http://127.0.0.1:{peer}"),
        format!("--initial-advertise-peer-urls=http://127.0.0.1:{peer}"),
        format!("--initial-cluster=default=http://127.0.0.1:{peer}"),
        "--unsafe-no-fsync=true".to_owned(),
        "--log-level=warn".to_owned(),
    ];
    spawn(bin, &args, &dir.join("etcd.log"))
}

fn spawn(bin: &Path, args: &[String], log: &Path) -> Child {
    let out = File::create(log).expect("log file");
    let err = out.try_clone().expect("log file");
    Command::new(bin)
        .args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()))
}

/// A CA, a serving certificate for 127.0.0.1 signed by it, a service-account
/// key pair and the token file, all in `dir`.
fn write_pki(dir: &Path) {
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.distinguished_name
        .push(DnType::CommonName, "berth-envtest-ca");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).expect("self-sign CA");
    let issuer = Issuer::new(ca, ca_key);

    let key = KeyPair::generate().expect("serving key");
    let mut serving = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .expect("params");
    serving
        .distinguished_name
        .push(DnType::CommonName, "kube-apiserver");
    let cert = serving
        .signed_by(&key, &issuer)
        .expect("sign serving certificate");

    let sa = KeyPair::generate().expect("service-account key");
    let files = [
        ("ca.crt", ca_cert.pem()),
        ("serving.crt", cert.pem()),
        ("serving.key", key.serialize_pem()),
        ("sa.key", sa.serialize_pem()),
        ("sa.pub", sa.public_key_pem()),
        (
            "tokens.csv",
            format!("{TOKEN},admin,admin-uid,\"system:masters\"\n"),
        ),
    ];
    for (name, content) in files {
        fs::write(dir.join(name), content).expect("write PKI file");
    }
}

fn write_kubeconfig(path: &Path, dir: &Path, port: u16) {
    let ca = fs::read(dir.join("ca.crt")).expect("CA written");
    let ca = base64::engine::general_purpose::STANDARD.encode(ca);
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: envtest\n  cluster:\n    server: https://127.0.0.1:{port}\n    certificate-authority-data: {ca}\nusers:\n- name: admin\n  user:\n    token: {TOKEN}\ncontexts:\n- name: envtest\n  context:\n    cluster: envtest\n    user: admin\n    namespace: default\ncurrent-context: envtest\n"
    );
    fs::write(path, text).expect("write kubeconfig");
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(Instant::now()) & 0xffff_ffff
}

/// Creates or replaces (server-side apply) the Secret `name` of `type_`.
pub async fn apply_secret(
    client: &Client,
    namespace: &str,
    name: &str,
    type_: &str,
    data: &[(&str, &[u8])],
) {
    let secret = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(name.to_owned()),
            ..Default::default()
        },
        type_: Some(type_.to_owned()),
        data: Some(
            data.iter()
                .map(|(k, v)| (k.to_string(), ByteString(v.to_vec())))
                .collect(),
        ),
        ..Secret::default()
    };
    Api::<Secret>::namespaced(client.clone(), namespace)
        .patch(
            name,
            &PatchParams::apply("berth-tests").force(),
            &Patch::Apply(&secret),
        )
        .await
        .expect("apply Secret");
}

/// A GET of `path` on 127.0.0.1:`port`; the body, if the answer is 200.
pub fn http_get(port: u16, path: &str) -> Option<String> {
    let http = berth_tests::http::Client::with_agent(
        &format!("http://127.0.0.1:{port}"),
        berth_tests::http::agent_with_timeout(Duration::from_secs(5)),
    );
    let reply = http.try_request("GET", path, &[], None).ok()?;
    (reply.status == 200).then(|| reply.text())
}

/// Polls `check` until it returns `Some`, for up to 30 seconds.
pub async fn eventually<T, F, Fut>(what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    eventually_within(what, Duration::from_secs(30), check).await
}

/// Whether the server behind `client` answers `path` (`/healthz`, `/readyz`) with `ok`.
async fn answers_ok(client: &Client, path: &str) -> bool {
    let request = http::Request::get(path).body(Vec::new()).expect("request");
    matches!(client.request_text(request).await, Ok(body) if body == "ok")
}

/// Waits for an Event with `reason` in namespace `ns`.
pub async fn event_with_reason(client: &Client, ns: &str, reason: &str) {
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    eventually(&format!("a {reason} Event"), || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        list.items
            .iter()
            .any(|e| e.reason.as_deref() == Some(reason))
            .then_some(())
    })
    .await;
}

/// Polls `check` until it returns `Some`, for up to `timeout`.
pub async fn eventually_within<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The operator's controller running in this test, watching one namespace;
/// stopped on drop.
pub struct Operator(tokio::task::JoinHandle<()>);

impl Operator {
    /// Starts the controller against `client`, confined to `namespace`.
    pub fn start(client: Client, namespace: &str) -> Operator {
        let settings = Settings {
            namespace: Some(namespace.to_owned()),
            debounce: Duration::from_millis(100),
            identity: format!("test-{namespace}"),
            ..Settings::default()
        };
        Operator::start_with(client, settings)
    }

    /// Starts the controller against `client` with `settings` as they are.
    pub fn start_with(client: Client, settings: Settings) -> Operator {
        Operator(tokio::spawn(controller::run(
            client,
            settings,
            Metrics::default(),
            std::future::pending(),
        )))
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.0.abort();
    }
}
