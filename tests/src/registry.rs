//! The Berth registry server under test: `berth-registry serve --config FILE`
//! on a free loopback port, with its storage in a temporary or given
//! directory or in an S3 bucket, plain HTTP or TLS, and any further config
//! sections a test adds. Its environment is cleared (no `AWS_*` from the
//! machine reaches it).

use std::fs;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output};
use std::time::Duration;

use tempfile::TempDir;

use crate::http::{Client, REQUEST_TIMEOUT, agent_with_tls};
use crate::minio::S3Bucket;
use crate::process::{Retry, ServerProcess, StartError, free_port, start_until_bound};
use crate::yaml::{YamlTree, quoted};

/// Environment variable that overrides where the server binary is found.
pub const BIN_ENV: &str = "BERTH_REGISTRY_BIN";

/// The `berth-registry` binary: `$BERTH_REGISTRY_BIN`, or the one Cargo built
/// next to this test executable (`target/<profile>/berth-registry`).
/// Panics, saying how to build it, when it is missing.
pub fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os(BIN_ENV) {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "{BIN_ENV}={} does not name a file",
            path.display()
        );
        return path;
    }
    let exe = std::env::current_exe().expect("path of the test executable");
    // target/<profile>/deps/<test>-<hash>  ->  target/<profile>/berth-registry
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executable lives in target/<profile>/deps");
    let path = profile_dir.join(format!("berth-registry{}", std::env::consts::EXE_SUFFIX));
    if !path.is_file() {
        panic!(
            "berth-registry binary not found at {}: run `cargo build -p berth-registry` \
             (or set {BIN_ENV})",
            path.display()
        );
    }
    path
}

/// Run `berth-registry config check FILE` and return what it did.
pub fn config_check(file: &Path) -> Output {
    let home = TempDir::new().expect("temporary home");
    Command::new(binary())
        .args(["config", "check"])
        .arg(file)
        .env_clear()
        .env("PATH", crate::tools::child_path())
        .env("HOME", home.path())
        .output()
        .expect("run berth-registry config check")
}

/// A Distribution-style `config.yml` for a filesystem-backed server.
pub fn render_config(addr: &str, root: &Path, delete_enabled: bool) -> String {
    base_config(addr, &Storage::Filesystem, root, delete_enabled).render()
}

/// The config every started server gets before a test's own sections:
/// version, log level, address, storage and `storage.delete`.
fn base_config(addr: &str, storage: &Storage, root: &Path, delete_enabled: bool) -> YamlTree {
    let mut tree = YamlTree::new();
    tree.set("", "version", "0.1")
        .set("log", "level", "info")
        .set("http", "addr", addr);
    match storage {
        Storage::Filesystem => {
            tree.set("storage.filesystem", "rootdirectory", root.display());
        }
        Storage::S3 { bucket, redirect } => {
            tree.set("storage.s3", "bucket", quoted(&bucket.bucket))
                .set("storage.s3", "region", quoted(&bucket.region))
                .set("storage.s3", "regionendpoint", quoted(&bucket.endpoint))
                .set("storage.s3", "forcepathstyle", true)
                .set("storage.s3", "accesskey", quoted(&bucket.access_key))
                .set("storage.s3", "secretkey", quoted(&bucket.secret_key));
            if !bucket.root_directory.is_empty() {
                tree.set(
                    "storage.s3",
                    "rootdirectory",
                    quoted(&bucket.root_directory),
                );
            }
            tree.set("storage.redirect", "disable", !redirect);
        }
        Storage::Section {
            path,
            yaml,
            redirect,
        } => {
            tree.add(path, yaml);
            tree.set("storage.redirect", "disable", !redirect);
        }
    }
    tree.set("storage.delete", "enabled", delete_enabled);
    tree
}

/// Where a server keeps its data.
#[derive(Debug, Clone, Default)]
enum Storage {
    /// `storage.filesystem` under the registry's root directory.
    #[default]
    Filesystem,
    /// `storage.s3` in `bucket`; blob reads answer 307 to the bucket when
    /// `redirect` is on.
    S3 { bucket: S3Bucket, redirect: bool },
    /// Another driver's section (`storage.azure`, `storage.gcs`) as YAML.
    Section {
        path: String,
        yaml: String,
        redirect: bool,
    },
}

/// What clients of a TLS server need: the CA to trust, and whether the
/// server asks for client certificates.
#[derive(Debug, Clone)]
struct TlsOptions {
    ca_pem: Vec<u8>,
    mutual: bool,
}

/// How to start a [`BerthRegistry`].
#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    root: Option<PathBuf>,
    delete_enabled: bool,
    storage: Storage,
    sections: Vec<(String, String)>,
    tls: Option<TlsOptions>,
    env: Vec<(String, String)>,
}

impl RegistryOptions {
    /// Defaults: storage in a fresh temporary directory, deletes disabled
    /// (Distribution's default).
    pub fn new() -> RegistryOptions {
        RegistryOptions::default()
    }

    /// Store data under `root` (created if missing) instead of a temporary directory.
    pub fn root(mut self, root: impl Into<PathBuf>) -> RegistryOptions {
        self.root = Some(root.into());
        self
    }

    /// Set `storage.delete.enabled`.
    pub fn delete_enabled(mut self, enabled: bool) -> RegistryOptions {
        self.delete_enabled = enabled;
        self
    }

    /// Store data in an S3 bucket (`storage.s3`: bucket, region, endpoint,
    /// path-style addressing, static credentials, root directory) instead
    /// of the filesystem. With `redirect`, blob `GET`/`HEAD` answer 307 to
    /// a pre-signed URL; without, `storage.redirect.disable` is set and the
    /// bytes flow through the registry.
    pub fn s3(mut self, bucket: &S3Bucket, redirect: bool) -> RegistryOptions {
        self.storage = Storage::S3 {
            bucket: bucket.clone(),
            redirect,
        };
        self
    }

    /// Store data with the driver whose section `path` (`storage.azure`,
    /// `storage.gcs`) is `yaml`; with `redirect`, blob `GET`/`HEAD` answer
    /// 307 to the backend, without, `storage.redirect.disable` is set.
    pub fn storage_section(mut self, path: &str, yaml: &str, redirect: bool) -> RegistryOptions {
        self.storage = Storage::Section {
            path: path.to_owned(),
            yaml: yaml.to_owned(),
            redirect,
        };
        self
    }

    /// These options with the storage of `other`.
    pub fn storage_from(mut self, other: &RegistryOptions) -> RegistryOptions {
        self.storage = other.storage.clone();
        self
    }

    /// Add the YAML block `yaml` under the dotted config key `path`, for
    /// example `section("auth.htpasswd", "realm: x\npath: /p")`,
    /// `section("storage.maintenance", "readonly:\n  enabled: true")` or
    /// `section("berth", "anonymouspull: true")`. Blocks merge with the
    /// generated config; a key must not be given twice.
    pub fn section(mut self, path: &str, yaml: &str) -> RegistryOptions {
        self.sections.push((path.to_owned(), yaml.to_owned()));
        self
    }

    /// Start the server with the environment variable `name` set to
    /// `value` (it otherwise gets only `PATH` and `HOME`).
    pub fn env(mut self, name: &str, value: &str) -> RegistryOptions {
        self.env.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Serve HTTPS with the PEM files `certificate` and `key`
    /// (`http.tls`); clients of [`BerthRegistry::client`] trust only the CA
    /// certificate `ca_pem`, and the start waits for `/healthz` over HTTPS.
    pub fn tls(self, certificate: &Path, key: &Path, ca_pem: &str) -> RegistryOptions {
        let mut options = self.section(
            "http.tls",
            &format!(
                "certificate: {}\nkey: {}",
                quoted(certificate.display()),
                quoted(key.display())
            ),
        );
        options.tls = Some(TlsOptions {
            ca_pem: ca_pem.as_bytes().to_vec(),
            mutual: false,
        });
        options
    }

    /// Require client certificates signed by one of the CA files `cas`
    /// (`http.tls.clientcas`; needs [`RegistryOptions::tls`] first). The
    /// start then waits for the port to accept connections, since a probe
    /// without a certificate cannot finish a handshake.
    pub fn client_cas(mut self, cas: &[PathBuf]) -> RegistryOptions {
        let tls = self
            .tls
            .as_mut()
            .expect("RegistryOptions::client_cas needs RegistryOptions::tls first");
        tls.mutual = true;
        let list: String = cas
            .iter()
            .map(|p| format!("- {}\n", quoted(p.display())))
            .collect();
        self.section("http.tls", &format!("clientcas:\n{list}"))
    }

    /// The whole config file for a server on `addr` with storage root `root`.
    fn render(&self, addr: &str, root: &Path) -> String {
        let mut tree = base_config(addr, &self.storage, root, self.delete_enabled);
        for (path, yaml) in &self.sections {
            tree.add(path, yaml);
        }
        tree.render()
    }
}

/// A running `berth-registry` process. Dropping it kills the process.
#[derive(Debug)]
pub struct BerthRegistry {
    process: ServerProcess,
    port: u16,
    root: PathBuf,
    config: PathBuf,
    tls: Option<TlsOptions>,
    env: Vec<(String, String)>,
    dir: TempDir,
}

impl BerthRegistry {
    /// Write a config, spawn the server and wait for `/healthz` to answer 200.
    /// Panics with the server's log when it does not come up.
    pub fn start(options: RegistryOptions) -> BerthRegistry {
        let dir = tempfile::Builder::new()
            .prefix("berth-registry-")
            .tempdir()
            .expect("temporary directory");
        let root = options
            .root
            .clone()
            .unwrap_or_else(|| dir.path().join("root"));
        fs::create_dir_all(&root).expect("create storage root");
        let config = dir.path().join("config.yml");
        let (process, port) = start_until_bound("berth-registry", Retry::FreshPort, || {
            let port = free_port();
            let addr = format!("127.0.0.1:{port}");
            fs::write(&config, options.render(&addr, &root)).expect("write config");
            let log = dir.path().join("registry.log");
            let mut process = spawn(&config, &log, dir.path(), &options.env);
            wait_ready(&mut process, port, options.tls.as_ref())
                .map(|()| (process, port))
                .map_err(|e| e.with_context(|| format!("--- config ---\n{}", read(&config))))
        });
        BerthRegistry {
            process,
            port,
            root,
            config,
            tls: options.tls,
            env: options.env,
            dir,
        }
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `http://127.0.0.1:PORT`, or `https://` when TLS is on.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr())
    }

    /// The storage root directory (`storage.filesystem.rootdirectory`).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The config file the server was started with.
    pub fn config_path(&self) -> &Path {
        &self.config
    }

    /// The server's own temporary directory (config, log); a test may keep
    /// files there that the config names.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The server's log so far (stderr and stdout, across restarts).
    pub fn log(&self) -> String {
        self.process.log()
    }

    /// An HTTP client for this server (trusting the test CA when TLS is on).
    pub fn client(&self) -> Client {
        match &self.tls {
            Some(tls) => Client::with_agent(
                &self.url(),
                agent_with_tls(REQUEST_TIMEOUT, &tls.ca_pem, None),
            ),
            None => Client::new(&self.url()),
        }
    }

    /// The operating-system process id, while the server runs.
    pub fn pid(&self) -> Option<u32> {
        self.process.id()
    }

    /// Whether the server process still runs.
    pub fn is_running(&mut self) -> bool {
        self.process.is_running()
    }

    /// Send the signal `name` (`TERM`, `INT`, ...) to the server.
    pub fn signal(&self, name: &str) {
        self.process.signal(name);
    }

    /// Wait up to `timeout` for the server to exit; how it exited, or
    /// `None` when it still runs.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.process.wait_exit(timeout)
    }

    /// Kill the server with SIGKILL, as a crash would, and reap it.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Kill the server if it runs, then start it again with the same config,
    /// port and storage root, and wait for `/healthz`.
    pub fn restart(&mut self) {
        self.process.kill();
        let log = self.process.log_path().to_path_buf();
        self.process = start_until_bound("berth-registry", Retry::SamePort, || {
            let mut process = spawn(&self.config, &log, self.dir.path(), &self.env);
            wait_ready(&mut process, self.port, self.tls.as_ref()).map(|()| process)
        });
    }
}

/// Wait until the server on `port` is up: `/healthz` answers 200 over HTTP,
/// or over HTTPS trusting the test CA; with mutual TLS, until the port
/// accepts a TCP connection.
fn wait_ready(
    process: &mut ServerProcess,
    port: u16,
    tls: Option<&TlsOptions>,
) -> Result<(), StartError> {
    match tls {
        None => process.wait_ready(&format!("http://127.0.0.1:{port}/healthz"), 200),
        Some(tls) if !tls.mutual => {
            let url = format!("https://127.0.0.1:{port}/healthz");
            let agent = agent_with_tls(Duration::from_secs(2), &tls.ca_pem, None);
            process.wait_ready_via(&agent, &url, 200)
        }
        Some(_) => {
            let addr = format!("127.0.0.1:{port}");
            process.wait_ready_with(&format!("a TCP connection to {addr}"), 200, || {
                TcpStream::connect(&addr)
                    .map(|_| 200)
                    .map_err(|e| e.to_string())
            })
        }
    }
}

fn spawn(config: &Path, log: &Path, home: &Path, env: &[(String, String)]) -> ServerProcess {
    let mut cmd = Command::new(binary());
    cmd.arg("serve")
        .arg("--config")
        .arg(config)
        .current_dir(home)
        .env_clear()
        .env("PATH", crate::tools::child_path())
        .env("HOME", home)
        .env("RUST_BACKTRACE", "1")
        .envs(env.iter().map(|(k, v)| (k, v)));
    ServerProcess::spawn(cmd, log)
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_default()
}
