//! fake-gcs-server, a Google Cloud Storage emulator (from the Go module
//! proxy), started on a free loopback port with its filesystem backend, so
//! data survives a restart. It serves the JSON API and path-style
//! downloads (`/bucket/object`, which V4 signed URLs use) without checking
//! credentials or signatures. Buckets are created, listed and read with
//! plain curl requests, past any registry.

use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;

use crate::curl::{self, Transfer};
use crate::minio::{ObjectInfo, encode};
use crate::process::{Retry, ServerProcess, StartError, free_port, start_until_bound};
use crate::storage::{BadBlob, verify_listed_blobs};
use crate::yaml::quoted;

/// Where a server finds its objects, as `storage.gcs` takes it.
#[derive(Debug, Clone)]
pub struct GcsBucket {
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    /// The bucket.
    pub bucket: String,
    /// `storage.gcs.rootdirectory`; empty for the bucket root.
    pub root_directory: String,
    /// A service account key file (`storage.gcs.keyfile`), which signs
    /// redirect URLs; none means anonymous requests.
    pub keyfile: Option<PathBuf>,
}

impl GcsBucket {
    /// This bucket with object names below `prefix`.
    pub fn with_root_directory(mut self, prefix: &str) -> GcsBucket {
        self.root_directory = prefix.to_owned();
        self
    }

    /// This bucket with the key file `keyfile`.
    pub fn with_keyfile(mut self, keyfile: &Path) -> GcsBucket {
        self.keyfile = Some(keyfile.to_path_buf());
        self
    }

    /// The `storage.gcs` section for it.
    pub fn section(&self) -> String {
        let mut yaml = format!(
            "bucket: {}\nendpoint: {}\n",
            quoted(&self.bucket),
            quoted(&self.endpoint)
        );
        if !self.root_directory.is_empty() {
            yaml.push_str(&format!(
                "rootdirectory: {}\n",
                quoted(&self.root_directory)
            ));
        }
        if let Some(keyfile) = &self.keyfile {
            yaml.push_str(&format!("keyfile: {}\n", quoted(keyfile.display())));
        }
        yaml
    }

    /// The name prefix of the registry layout, without a leading slash.
    pub fn v2_prefix(&self) -> String {
        crate::storage::v2_prefix(&self.root_directory)
    }
}

/// Write a service account JSON key file with a new 2048-bit RSA key (made
/// by `openssl`) to `path`.
pub fn write_keyfile(path: &Path) {
    let out = Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
        ])
        .env_clear()
        .env("PATH", crate::tools::child_path())
        .output()
        .expect("run openssl (make tools installs it)");
    assert!(
        out.status.success(),
        "openssl genpkey: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = serde_json::json!({
        "type": "service_account",
        "project_id": "berth-tests",
        "private_key_id": "berth-tests-key",
        "private_key": String::from_utf8_lossy(&out.stdout),
        "client_email": "registry@berth-tests.iam.gserviceaccount.com",
        "client_id": "1",
        "token_uri": "https://oauth2.googleapis.com/token",
    });
    std::fs::write(path, key.to_string()).expect("write the key file");
}

/// A running fake-gcs-server. Dropping it kills the process.
#[derive(Debug)]
pub struct FakeGcs {
    process: ServerProcess,
    port: u16,
    dir: TempDir,
}

impl FakeGcs {
    /// Start fake-gcs-server on a free loopback port over a fresh directory
    /// and wait until it is healthy. Panics, saying to run `make tools`,
    /// when it is missing, and with its log when it does not come up.
    pub fn start() -> FakeGcs {
        crate::tools::require("fake-gcs-server");
        let dir = tempfile::Builder::new()
            .prefix("fake-gcs-")
            .tempdir()
            .expect("temporary directory");
        let (process, port) = start_until_bound("fake-gcs-server", Retry::FreshPort, || {
            let port = free_port();
            spawn_ready(dir.path(), port).map(|process| (process, port))
        });
        FakeGcs { process, port, dir }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The server's log so far, across restarts.
    pub fn log(&self) -> String {
        self.process.log()
    }

    /// Stop the server (SIGKILL), keeping its data and port.
    pub fn stop(&mut self) {
        self.process.kill();
    }

    /// Start the server again on the same data and port.
    pub fn start_again(&mut self) {
        self.process.kill();
        self.process = start_until_bound("fake-gcs-server", Retry::SamePort, || {
            spawn_ready(self.dir.path(), self.port)
        });
    }

    /// The bucket `name`, at its root, without a key. Does not create it.
    pub fn bucket(&self, name: &str) -> GcsBucket {
        GcsBucket {
            endpoint: self.endpoint(),
            bucket: name.to_owned(),
            root_directory: String::new(),
            keyfile: None,
        }
    }

    /// Create the bucket `name` and return it.
    pub fn create_bucket(&self, name: &str) -> GcsBucket {
        let reply = curl::run(
            &[
                "-X".into(),
                "POST".into(),
                "-H".into(),
                "Content-Type: application/json".into(),
                "--data".into(),
                serde_json::json!({ "name": name }).to_string(),
                format!("{}/storage/v1/b", self.endpoint()),
            ],
            None,
        );
        assert_eq!(
            reply.status,
            200,
            "create bucket {name}: {}",
            reply.describe()
        );
        self.bucket(name)
    }

    fn object_url(&self, bucket: &str, name: &str) -> String {
        format!(
            "{}/storage/v1/b/{bucket}/o/{}",
            self.endpoint(),
            encode(name)
        )
    }

    /// Upload the file `path` as `bucket/name`; panics unless the server
    /// answers 200. Returns the transfer (its `elapsed` is the upload's wall time).
    pub fn put_file(&self, bucket: &str, name: &str, path: &Path) -> Transfer {
        let reply = curl::run(
            &[
                "-X".into(),
                "POST".into(),
                "-H".into(),
                "Content-Type: application/octet-stream".into(),
                "-T".into(),
                path.display().to_string(),
                format!(
                    "{}/upload/storage/v1/b/{bucket}/o?uploadType=media&name={}",
                    self.endpoint(),
                    encode(name)
                ),
            ],
            None,
        );
        assert_eq!(
            reply.status,
            200,
            "upload {bucket}/{name}: {}",
            reply.describe()
        );
        reply
    }

    /// Download `bucket/name` into the file `path`; panics unless the server answers 200.
    pub fn get_file(&self, bucket: &str, name: &str, path: &Path) -> Transfer {
        let url = format!("{}?alt=media", self.object_url(bucket, name));
        let reply = curl::run(&[url], Some(path));
        assert_eq!(
            reply.status,
            200,
            "download {bucket}/{name}: {}",
            reply.describe()
        );
        reply
    }

    /// The content of `bucket/name`, or `None` on 404.
    pub fn get_object(&self, bucket: &str, name: &str) -> Option<Vec<u8>> {
        let reply = curl::run(
            &[format!("{}?alt=media", self.object_url(bucket, name))],
            None,
        );
        match reply.status {
            200 => Some(reply.body),
            404 => None,
            _ => panic!("download {bucket}/{name}: {}", reply.describe()),
        }
    }

    /// Every object of `bucket` whose name starts with `prefix`.
    pub fn list_objects(&self, bucket: &str, prefix: &str) -> Vec<ObjectInfo> {
        let mut names = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut url = format!(
                "{}/storage/v1/b/{bucket}/o?prefix={}",
                self.endpoint(),
                encode(prefix)
            );
            if let Some(t) = &token {
                url.push_str(&format!("&pageToken={}", encode(t)));
            }
            let reply = curl::run(&[url], None);
            assert_eq!(
                reply.status,
                200,
                "list {bucket}/{prefix}: {}",
                reply.describe()
            );
            let page: serde_json::Value =
                serde_json::from_slice(&reply.body).expect("a JSON listing");
            for item in page["items"].as_array().into_iter().flatten() {
                let name = item["name"].as_str().expect("a listed object has a name");
                let size = item["size"]
                    .as_str()
                    .and_then(|s| s.parse().ok())
                    .expect("a listed object has a size");
                names.push(ObjectInfo {
                    key: name.to_owned(),
                    size,
                });
            }
            match page["nextPageToken"].as_str().filter(|t| !t.is_empty()) {
                Some(next) => token = Some(next.to_owned()),
                None => return names,
            }
        }
    }

    /// Fetch every blob of the registry layout in `bucket` and check that
    /// its content hashes to its name.
    pub fn verify_blobs(&self, bucket: &GcsBucket) -> (usize, Vec<BadBlob>) {
        let prefix = format!("{}/blobs/", bucket.v2_prefix());
        let names = self
            .list_objects(&bucket.bucket, &prefix)
            .into_iter()
            .map(|o| o.key);
        verify_listed_blobs(&prefix, names, |name| self.get_object(&bucket.bucket, name))
    }
}

/// Spawn fake-gcs-server on `port` with its data in `dir`, and wait until
/// its health check answers.
fn spawn_ready(dir: &Path, port: u16) -> Result<ServerProcess, StartError> {
    let data = dir.join("data");
    std::fs::create_dir_all(&data).expect("create fake-gcs-server's data directory");
    let mut cmd = Command::new(crate::tools::require("fake-gcs-server"));
    cmd.args(["-scheme", "http", "-host", "127.0.0.1", "-port"])
        .arg(port.to_string())
        .args(["-backend", "filesystem", "-filesystem-root"])
        .arg(&data)
        .arg("-public-host")
        .arg(format!("127.0.0.1:{port}"))
        .args(["-log-level", "warn"])
        .current_dir(dir)
        .env_clear()
        .env("PATH", crate::tools::child_path())
        .env("HOME", dir);
    let mut process = ServerProcess::spawn(cmd, &dir.join("fake-gcs-server.log"));
    process.wait_ready(
        &format!("http://127.0.0.1:{port}/_internal/healthcheck"),
        200,
    )?;
    Ok(process)
}
