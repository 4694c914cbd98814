//! The Berth registry server under test: `berth-registry serve --config FILE`
//! on a free loopback port, with its storage in a temporary or given directory.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::thread;
use std::time::Duration;

use tempfile::TempDir;

use crate::http::Client;
use crate::process::{ServerProcess, StartError, free_port};

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
    format!(
        "version: 0.1\n\
         log:\n  level: info\n\
         http:\n  addr: {addr}\n\
         storage:\n  filesystem:\n    rootdirectory: {root}\n  delete:\n    enabled: {delete_enabled}\n",
        root = root.display()
    )
}

/// How to start a [`BerthRegistry`].
#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    root: Option<PathBuf>,
    delete_enabled: bool,
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
}

/// A running `berth-registry` process. Dropping it kills the process.
#[derive(Debug)]
pub struct BerthRegistry {
    process: ServerProcess,
    port: u16,
    root: PathBuf,
    config: PathBuf,
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
        let root = options.root.unwrap_or_else(|| dir.path().join("root"));
        fs::create_dir_all(&root).expect("create storage root");
        let config = dir.path().join("config.yml");
        let mut last_error = String::new();
        for _ in 0..5 {
            let port = free_port();
            let addr = format!("127.0.0.1:{port}");
            fs::write(&config, render_config(&addr, &root, options.delete_enabled))
                .expect("write config");
            let log = dir.path().join("registry.log");
            let mut process = spawn(&config, &log, dir.path());
            match process.wait_ready(&format!("http://{addr}/healthz"), 200) {
                Ok(()) => {
                    return BerthRegistry {
                        process,
                        port,
                        root,
                        config,
                        dir,
                    };
                }
                Err(StartError::AddrInUse(msg)) => last_error = msg,
                Err(StartError::Failed(msg)) => {
                    panic!(
                        "berth-registry did not start: {msg}\n--- config ---\n{}",
                        read(&config)
                    )
                }
            }
        }
        panic!("berth-registry could not bind a free port: {last_error}");
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// The storage root directory (`storage.filesystem.rootdirectory`).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The config file the server was started with.
    pub fn config_path(&self) -> &Path {
        &self.config
    }

    /// The server's log so far (stderr and stdout, across restarts).
    pub fn log(&self) -> String {
        self.process.log()
    }

    /// An HTTP client for this server.
    pub fn client(&self) -> Client {
        Client::new(&self.url())
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
        let mut last_error = String::new();
        for _ in 0..10 {
            let mut process = spawn(&self.config, &log, self.dir.path());
            match process.wait_ready(&format!("{}/healthz", self.url()), 200) {
                Ok(()) => {
                    self.process = process;
                    return;
                }
                // The old listener's port may linger for a moment; try again.
                Err(StartError::AddrInUse(msg)) => {
                    last_error = msg;
                    thread::sleep(Duration::from_millis(300));
                }
                Err(StartError::Failed(msg)) => panic!("berth-registry did not restart: {msg}"),
            }
        }
        panic!(
            "berth-registry could not rebind {}: {last_error}",
            self.addr()
        );
    }
}

fn spawn(config: &Path, log: &Path, home: &Path) -> ServerProcess {
    let mut cmd = Command::new(binary());
    cmd.arg("serve")
        .arg("--config")
        .arg(config)
        .current_dir(home)
        .env_clear()
        .env("PATH", crate::tools::child_path())
        .env("HOME", home)
        .env("RUST_BACKTRACE", "1");
    ServerProcess::spawn(cmd, log)
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_default()
}
