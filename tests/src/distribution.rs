//! CNCF Distribution 2.8 (Debian's `docker-registry`), the reference server:
//! `docker-registry serve CONFIG` on a free loopback port over a given
//! filesystem root, for layout interoperability tests.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;

use crate::http::Client;
use crate::process::{ServerProcess, StartError, free_port};

/// A Distribution config: filesystem storage at `root`, deletes enabled, no
/// blob descriptor cache (so it sees what another server writes to the same
/// root at once), and no upload purging.
pub fn render_config(addr: &str, root: &Path) -> String {
    format!(
        "version: 0.1\n\
         log:\n  level: info\n  accesslog:\n    disabled: false\n\
         storage:\n  filesystem:\n    rootdirectory: {root}\n  delete:\n    enabled: true\n  \
         maintenance:\n    uploadpurging:\n      enabled: false\n\
         http:\n  addr: {addr}\n  secret: berth-tests-not-a-secret\n",
        root = root.display()
    )
}

/// A running CNCF Distribution registry. Dropping it kills the process.
#[derive(Debug)]
pub struct Distribution {
    process: ServerProcess,
    port: u16,
    root: PathBuf,
    _dir: TempDir,
}

impl Distribution {
    /// Start Distribution over the filesystem root `root` (created if missing)
    /// and wait for `/v2/` to answer 200. Panics, saying to run `make tools`,
    /// when the tool is missing, and with its log when it does not come up.
    pub fn start(root: &Path) -> Distribution {
        let bin = crate::tools::require("docker-registry");
        let dir = tempfile::Builder::new()
            .prefix("distribution-")
            .tempdir()
            .expect("temporary directory");
        fs::create_dir_all(root).expect("create storage root");
        let config = dir.path().join("config.yml");
        let log = dir.path().join("distribution.log");
        let mut last_error = String::new();
        for _ in 0..5 {
            let port = free_port();
            let addr = format!("127.0.0.1:{port}");
            fs::write(&config, render_config(&addr, root)).expect("write config");
            let mut cmd = Command::new(&bin);
            cmd.arg("serve")
                .arg(&config)
                .current_dir(dir.path())
                .env_clear()
                .env("PATH", crate::tools::child_path())
                .env("HOME", dir.path());
            let mut process = ServerProcess::spawn(cmd, &log);
            match process.wait_ready(&format!("http://{addr}/v2/"), 200) {
                Ok(()) => {
                    return Distribution {
                        process,
                        port,
                        root: root.to_path_buf(),
                        _dir: dir,
                    };
                }
                Err(StartError::AddrInUse(msg)) => last_error = msg,
                Err(StartError::Failed(msg)) => panic!("Distribution did not start: {msg}"),
            }
        }
        panic!("Distribution could not bind a free port: {last_error}");
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// The storage root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Distribution's log so far.
    pub fn log(&self) -> String {
        self.process.log()
    }

    /// An HTTP client for this server.
    pub fn client(&self) -> Client {
        Client::new(&self.url())
    }

    /// Stop the server (SIGKILL) and reap it.
    pub fn stop(&mut self) {
        self.process.kill();
    }
}
