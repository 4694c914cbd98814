//! CNCF Distribution 2.8 (Debian's `docker-registry`), the reference server:
//! `docker-registry serve CONFIG` on a free loopback port over a given
//! filesystem root or S3 bucket, for layout interoperability tests. Its
//! environment is cleared: the AWS SDK it embeds must not see the
//! machine's `AWS_*` settings.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;

use crate::http::Client;
use crate::minio::S3Bucket;
use crate::process::{Retry, ServerProcess, free_port, start_until_bound};
use crate::yaml::{YamlTree, quoted};

/// A Distribution config: filesystem storage at `root`, deletes enabled, no
/// blob descriptor cache (so it sees what another server writes to the same
/// root at once), and no upload purging.
pub fn render_config(addr: &str, root: &Path) -> String {
    let mut tree = common_config(addr);
    tree.set("storage.filesystem", "rootdirectory", root.display());
    tree.render()
}

/// [`render_config`] with storage in the S3 bucket `bucket` instead
/// (Distribution 2.8's `s3` driver: static credentials, the region, a
/// plain-HTTP endpoint, signature v4, path-style addressing). With
/// `redirect` off, blob bytes flow through Distribution.
pub fn render_s3_config(addr: &str, bucket: &S3Bucket, redirect: bool) -> String {
    let mut tree = common_config(addr);
    let s3 = "storage.s3";
    tree.set(s3, "accesskey", quoted(&bucket.access_key))
        .set(s3, "secretkey", quoted(&bucket.secret_key))
        .set(s3, "region", quoted(&bucket.region))
        .set(s3, "regionendpoint", quoted(&bucket.endpoint))
        .set(s3, "bucket", quoted(&bucket.bucket))
        .set(s3, "secure", false)
        .set(s3, "v4auth", true)
        .set(s3, "forcepathstyle", true);
    if !bucket.root_directory.is_empty() {
        tree.set(s3, "rootdirectory", quoted(&bucket.root_directory));
    }
    tree.set("storage.redirect", "disable", !redirect);
    tree.render()
}

fn common_config(addr: &str) -> YamlTree {
    let mut tree = YamlTree::new();
    tree.set("", "version", "0.1")
        .set("log", "level", "info")
        .set("log.accesslog", "disabled", false)
        .set("storage.delete", "enabled", true)
        .set("storage.maintenance.uploadpurging", "enabled", false)
        .set("http", "addr", addr)
        .set("http", "secret", "berth-tests-not-a-secret");
    tree
}

/// A running CNCF Distribution registry. Dropping it kills the process.
#[derive(Debug)]
pub struct Distribution {
    process: ServerProcess,
    port: u16,
    root: PathBuf,
    _dir: TempDir,
    _root_dir: Option<TempDir>,
}

impl Distribution {
    /// Start Distribution over the filesystem root `root` (created if missing)
    /// and wait for `/v2/` to answer 200. Panics, saying to run `make tools`,
    /// when the tool is missing, and with its log when it does not come up.
    pub fn start(root: &Path) -> Distribution {
        fs::create_dir_all(root).expect("create storage root");
        Distribution::start_with(root, "docker-registry", &[], |addr| {
            render_config(addr, root)
        })
    }

    /// Start Distribution over the S3 bucket `bucket` (which must exist),
    /// redirecting blob reads to pre-signed URLs when `redirect` is on, and
    /// wait for `/v2/` to answer 200. [`Distribution::root`] is then an
    /// empty directory.
    pub fn start_s3(bucket: &S3Bucket, redirect: bool) -> Distribution {
        let dir = tempfile::Builder::new()
            .prefix("distribution-root-")
            .tempdir()
            .expect("temporary directory");
        let root = dir.path().to_path_buf();
        let mut distribution = Distribution::start_with(&root, "docker-registry", &[], |addr| {
            render_s3_config(addr, bucket, redirect)
        });
        distribution._root_dir = Some(dir);
        distribution
    }

    /// Start CNCF Distribution v3 (built by `make tools`; its azure and gcs
    /// drivers take an emulator's endpoint, 2.8's do not) with the storage
    /// section `path` (`storage.azure`, `storage.gcs`) set to `yaml`, blob
    /// redirects off, and `env` added to its environment.
    pub fn start_v3(path: &str, yaml: &str, env: &[(&str, String)]) -> Distribution {
        let dir = tempfile::Builder::new()
            .prefix("distribution-root-")
            .tempdir()
            .expect("temporary directory");
        let root = dir.path().to_path_buf();
        let render = |addr: &str| {
            let mut tree = common_config(addr);
            tree.add(path, yaml)
                .set("storage.redirect", "disable", true);
            tree.render()
        };
        let mut distribution = Distribution::start_with(&root, "registry-v3", env, render);
        distribution._root_dir = Some(dir);
        distribution
    }

    fn start_with(
        root: &Path,
        tool: &str,
        env: &[(&str, String)],
        render: impl Fn(&str) -> String,
    ) -> Distribution {
        let bin = crate::tools::require(tool);
        let dir = tempfile::Builder::new()
            .prefix("distribution-")
            .tempdir()
            .expect("temporary directory");
        let config = dir.path().join("config.yml");
        let log = dir.path().join("distribution.log");
        let (process, port) = start_until_bound("Distribution", Retry::FreshPort, || {
            let port = free_port();
            let addr = format!("127.0.0.1:{port}");
            fs::write(&config, render(&addr)).expect("write config");
            let mut cmd = Command::new(&bin);
            cmd.arg("serve")
                .arg(&config)
                .current_dir(dir.path())
                .env_clear()
                .env("PATH", crate::tools::child_path())
                .env("HOME", dir.path())
                .envs(env.iter().map(|(k, v)| (k, v)));
            let mut process = ServerProcess::spawn(cmd, &log);
            process
                .wait_ready(&format!("http://{addr}/v2/"), 200)
                .map(|()| (process, port))
        });
        Distribution {
            process,
            port,
            root: root.to_path_buf(),
            _dir: dir,
            _root_dir: None,
        }
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
