//! Azurite, Microsoft's Azure Storage emulator (its blob service, from npm),
//! started on a free loopback port over a data directory that survives a
//! restart, with the emulator's well-known account. Containers are created,
//! listed and read with SharedKey-signed curl requests, past any registry.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use tempfile::TempDir;

use crate::curl::{self, Transfer};
use crate::minio::ObjectInfo;
use crate::process::{Retry, ServerProcess, StartError, free_port, start_until_bound};
use crate::storage::{BadBlob, verify_listed_blobs};
use crate::yaml::quoted;

/// Azurite's well-known account.
pub const ACCOUNT: &str = "devstoreaccount1";
/// Azurite's well-known account key.
pub const ACCOUNT_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
/// The REST API version of the harness's own requests.
const API_VERSION: &str = "2021-08-06";

/// Where a server finds its blobs, as `storage.azure` takes it.
#[derive(Debug, Clone)]
pub struct AzureContainer {
    /// `http://127.0.0.1:PORT/devstoreaccount1`.
    pub service_url: String,
    /// The container.
    pub container: String,
    /// The account key the server is given.
    pub account_key: String,
    /// `storage.azure.rootdirectory`; empty for the container root.
    pub root_directory: String,
}

impl AzureContainer {
    /// This container with blob names below `prefix`.
    pub fn with_root_directory(mut self, prefix: &str) -> AzureContainer {
        self.root_directory = prefix.to_owned();
        self
    }

    /// This container with another account key (for example, a wrong one).
    pub fn with_account_key(mut self, key: &str) -> AzureContainer {
        self.account_key = key.to_owned();
        self
    }

    /// The `storage.azure` section for it.
    pub fn section(&self) -> String {
        let mut yaml = format!(
            "accountname: {ACCOUNT}\naccountkey: {}\ncontainer: {}\nserviceurl: {}\ncredentials:\n  type: shared_key\n",
            quoted(&self.account_key),
            quoted(&self.container),
            quoted(&self.service_url)
        );
        if !self.root_directory.is_empty() {
            yaml.push_str(&format!(
                "rootdirectory: {}\n",
                quoted(&self.root_directory)
            ));
        }
        yaml
    }

    /// The name prefix of the registry layout, without a leading slash.
    pub fn v2_prefix(&self) -> String {
        crate::storage::v2_prefix(&self.root_directory)
    }
}

/// A running Azurite blob service. Dropping it kills the process.
#[derive(Debug)]
pub struct Azurite {
    process: ServerProcess,
    port: u16,
    dir: TempDir,
}

impl Azurite {
    /// Start Azurite on a free loopback port over a fresh directory and
    /// wait until it answers. Panics, saying to run `make tools`, when it
    /// is missing, and with its log when it does not come up.
    pub fn start() -> Azurite {
        crate::tools::require("azurite-blob");
        let dir = tempfile::Builder::new()
            .prefix("azurite-")
            .tempdir()
            .expect("temporary directory");
        let (process, port) = start_until_bound("Azurite", Retry::FreshPort, || {
            let port = free_port();
            spawn_ready(dir.path(), port).map(|process| (process, port))
        });
        Azurite { process, port, dir }
    }

    /// `http://127.0.0.1:PORT/devstoreaccount1`, the service URL.
    pub fn service_url(&self) -> String {
        format!("http://127.0.0.1:{}/{ACCOUNT}", self.port)
    }

    /// Azurite's log so far, across restarts.
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
        self.process = start_until_bound("Azurite", Retry::SamePort, || {
            spawn_ready(self.dir.path(), self.port)
        });
    }

    /// The container `name`, with the account key, at its root. Does not create it.
    pub fn container(&self, name: &str) -> AzureContainer {
        AzureContainer {
            service_url: self.service_url(),
            container: name.to_owned(),
            account_key: ACCOUNT_KEY.to_owned(),
            root_directory: String::new(),
        }
    }

    /// Create the container `name` and return it.
    pub fn create_container(&self, name: &str) -> AzureContainer {
        let reply = self.request("PUT", &format!("/{name}?restype=container"), None, None);
        assert_eq!(
            reply.status,
            201,
            "create container {name}: {}",
            reply.describe()
        );
        self.wait_persisted(&format!("\"name\":\"{name}\""));
        self.container(name)
    }

    /// Waits until Azurite's metadata file holds `needle`. Azurite keeps
    /// its metadata in memory and saves it every few seconds, so a
    /// container created just before a SIGKILL is gone after the restart,
    /// which real Azure never does; tests that kill it wait for this first.
    fn wait_persisted(&self, needle: &str) {
        let db = self
            .dir
            .path()
            .join("data")
            .join("__azurite_db_blob__.json");
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !std::fs::read_to_string(&db).is_ok_and(|text| text.contains(needle)) {
            assert!(
                std::time::Instant::now() < deadline,
                "Azurite did not save {needle} to {} within 30 s",
                db.display()
            );
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// A SharedKey-signed request with curl: `method` on `path_and_query`
    /// (`/container/blob?...`, percent-encoded) below the account, uploading
    /// the file `upload` and writing the body to `output` when given.
    pub fn request(
        &self,
        method: &str,
        path_and_query: &str,
        upload: Option<&Path>,
        output: Option<&Path>,
    ) -> Transfer {
        let length = upload
            .map(|f| std::fs::metadata(f).expect("upload file").len())
            .unwrap_or(0);
        let date = httpdate_now();
        let mut headers = vec![
            ("x-ms-date".to_owned(), date),
            ("x-ms-version".to_owned(), API_VERSION.to_owned()),
        ];
        if upload.is_some() {
            headers.push(("x-ms-blob-type".to_owned(), "BlockBlob".to_owned()));
        }
        let (path, query) = path_and_query
            .split_once('?')
            .unwrap_or((path_and_query, ""));
        let mut canonical = format!(
            "{method}\n\n\n{}\n\n{}\n\n\n\n\n\n\n",
            if length > 0 {
                length.to_string()
            } else {
                String::new()
            },
            if upload.is_some() {
                "application/octet-stream"
            } else {
                ""
            },
        );
        headers.sort();
        for (name, value) in &headers {
            canonical.push_str(&format!("{name}:{value}\n"));
        }
        canonical.push_str(&format!("/{ACCOUNT}/{ACCOUNT}{path}"));
        let mut params: Vec<(String, String)> = query
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (k.to_lowercase(), percent_decode(v))
            })
            .collect();
        params.sort();
        for (k, v) in params {
            canonical.push_str(&format!("\n{k}:{v}"));
        }
        let key = BASE64
            .decode(ACCOUNT_KEY)
            .expect("the well-known key is base64");
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key);
        let signature = BASE64.encode(ring::hmac::sign(&key, canonical.as_bytes()).as_ref());
        let mut args: Vec<String> = vec!["-X".into(), method.into()];
        for (name, value) in &headers {
            args.push("-H".into());
            args.push(format!("{name}: {value}"));
        }
        args.push("-H".into());
        args.push(format!("Authorization: SharedKey {ACCOUNT}:{signature}"));
        if let Some(file) = upload {
            args.extend([
                "-H".into(),
                "Content-Type: application/octet-stream".into(),
                "-T".into(),
                file.display().to_string(),
            ]);
        } else if method == "PUT" {
            args.extend(["-H".into(), "Content-Length: 0".into()]);
        }
        args.push(format!("{}{path_and_query}", self.service_url()));
        curl::run(&args, output)
    }

    /// Upload the file `path` as the blob `container/name`; panics unless
    /// Azurite answers 201. Returns the transfer (its `elapsed` is the
    /// upload's wall time).
    pub fn put_file(&self, container: &str, name: &str, path: &Path) -> Transfer {
        let reply = self.request(
            "PUT",
            &format!("/{container}/{}", encode_name(name)),
            Some(path),
            None,
        );
        assert_eq!(
            reply.status,
            201,
            "PUT {container}/{name}: {}",
            reply.describe()
        );
        reply
    }

    /// Download the blob `container/name` into the file `path`; panics
    /// unless Azurite answers 200.
    pub fn get_file(&self, container: &str, name: &str, path: &Path) -> Transfer {
        let reply = self.request(
            "GET",
            &format!("/{container}/{}", encode_name(name)),
            None,
            Some(path),
        );
        assert_eq!(
            reply.status,
            200,
            "GET {container}/{name}: {}",
            reply.describe()
        );
        reply
    }

    /// The content of the blob `container/name`, or `None` on 404.
    pub fn get_blob(&self, container: &str, name: &str) -> Option<Vec<u8>> {
        let reply = self.request(
            "GET",
            &format!("/{container}/{}", encode_name(name)),
            None,
            None,
        );
        match reply.status {
            200 => Some(reply.body),
            404 => None,
            _ => panic!("GET {container}/{name}: {}", reply.describe()),
        }
    }

    /// Every blob of `container` whose name starts with `prefix`.
    pub fn list_blobs(&self, container: &str, prefix: &str) -> Vec<ObjectInfo> {
        let mut names = Vec::new();
        let mut marker = String::new();
        loop {
            let mut query = format!("comp=list&prefix={}&restype=container", encode_name(prefix));
            if !marker.is_empty() {
                query.push_str(&format!("&marker={}", encode_name(&marker)));
            }
            let reply = self.request("GET", &format!("/{container}?{query}"), None, None);
            assert_eq!(
                reply.status,
                200,
                "list {container}/{prefix}: {}",
                reply.describe()
            );
            let text = reply.text();
            for blob in text.split("<Blob>").skip(1) {
                let name = crate::xml::field(blob, "Name").expect("a listed blob has a Name");
                let size = crate::xml::field(blob, "Content-Length")
                    .and_then(|s| s.parse().ok())
                    .expect("a listed blob has a Content-Length");
                names.push(ObjectInfo {
                    key: crate::xml::unescape(&name),
                    size,
                });
            }
            match crate::xml::field(&text, "NextMarker").filter(|m| !m.is_empty()) {
                Some(next) => marker = crate::xml::unescape(&next),
                None => return names,
            }
        }
    }

    /// Fetch every blob of the registry layout in `container` and check that
    /// its content hashes to its name.
    pub fn verify_blobs(&self, container: &AzureContainer) -> (usize, Vec<BadBlob>) {
        let prefix = format!("{}/blobs/", container.v2_prefix());
        let names = self
            .list_blobs(&container.container, &prefix)
            .into_iter()
            .map(|o| o.key);
        verify_listed_blobs(&prefix, names, |name| {
            self.get_blob(&container.container, name)
        })
    }
}

/// Spawn Azurite's blob service on `port` with its data in `dir`, and wait
/// until it answers HTTP.
fn spawn_ready(dir: &Path, port: u16) -> Result<ServerProcess, StartError> {
    let location: PathBuf = dir.join("data");
    std::fs::create_dir_all(&location).expect("create Azurite's data directory");
    let mut cmd = Command::new(crate::tools::require("azurite-blob"));
    cmd.args(["--blobHost", "127.0.0.1", "--blobPort"])
        .arg(port.to_string())
        .arg("--location")
        .arg(&location)
        .args(["--skipApiVersionCheck", "--disableTelemetry", "--loose"])
        .current_dir(dir)
        .env_clear()
        .env("PATH", crate::tools::child_path())
        .env("HOME", dir);
    let mut process = ServerProcess::spawn(cmd, &dir.join("azurite.log"));
    let url = format!("http://127.0.0.1:{port}/{ACCOUNT}?comp=list");
    let agent = crate::http::agent_with_timeout(Duration::from_secs(2));
    // Any HTTP answer (403 without a signature) means it serves.
    process.wait_ready_with(&url, 200, || {
        agent
            .get(&url)
            .call()
            .map(|_| 200)
            .map_err(|e| e.to_string())
    })?;
    Ok(process)
}

/// The current time as an HTTP date.
fn httpdate_now() -> String {
    httpdate::fmt_http_date(std::time::SystemTime::now())
}

/// Percent-encode a blob name for a URL, keeping its slashes.
pub fn encode_name(name: &str) -> String {
    crate::minio::encode_key(name)
}

/// Percent-decodes a query value.
fn percent_decode(text: &str) -> String {
    percent_encoding::percent_decode_str(text)
        .decode_utf8_lossy()
        .into_owned()
}
