//! MinIO, a real S3 server: `minio server` on free loopback ports over a
//! data directory of its own, with its environment cleared except for the
//! root credentials, over plain HTTP or over HTTPS with a test CA's
//! certificate. It can be stopped and started again on the same data and
//! port (for fault tests), and is killed on drop. Objects are put,
//! fetched and listed directly with SigV4-signed curl requests, past any
//! registry.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::certs::TestCa;
use crate::curl::{self, Transfer};
use crate::http::agent_with_tls;
use crate::process::{Retry, ServerProcess, StartError, free_port, start_until_bound};
use crate::storage::{BadBlob, verify_listed_blobs};

/// The root user MinIO runs with (its S3 access key).
pub const ACCESS_KEY: &str = "berth-tests";
/// The root password MinIO runs with (its S3 secret key).
pub const SECRET_KEY: &str = "berth-tests-secret-key";
/// The region every test signs for.
pub const REGION: &str = "us-east-1";

/// Where a server finds its objects: endpoint, bucket, credentials and key
/// prefix, as `storage.s3` takes them.
#[derive(Debug, Clone)]
pub struct S3Bucket {
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    /// The bucket name.
    pub bucket: String,
    /// The region.
    pub region: String,
    /// The access key.
    pub access_key: String,
    /// The secret key.
    pub secret_key: String,
    /// The key prefix (`storage.s3.rootdirectory`); empty for the bucket root.
    pub root_directory: String,
}

impl S3Bucket {
    /// This bucket with keys below `prefix` (`storage.s3.rootdirectory`).
    pub fn with_root_directory(mut self, prefix: &str) -> S3Bucket {
        self.root_directory = prefix.to_owned();
        self
    }

    /// This bucket with other credentials (for example, wrong ones).
    pub fn with_credentials(mut self, access_key: &str, secret_key: &str) -> S3Bucket {
        self.access_key = access_key.to_owned();
        self.secret_key = secret_key.to_owned();
        self
    }

    /// The key prefix of the registry layout (`<rootdirectory>/docker/registry/v2`),
    /// without a leading slash.
    pub fn v2_prefix(&self) -> String {
        crate::storage::v2_prefix(&self.root_directory)
    }
}

/// One object of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// The key.
    pub key: String,
    /// The size in bytes.
    pub size: u64,
}

/// A running MinIO server. Dropping it kills the process.
#[derive(Debug)]
pub struct Minio {
    process: ServerProcess,
    host: String,
    port: u16,
    console_port: u16,
    data: PathBuf,
    /// The CA certificate file to trust, when MinIO serves HTTPS.
    ca: Option<PathBuf>,
    dir: TempDir,
}

impl Minio {
    /// Start MinIO on free loopback ports over a fresh data directory and
    /// wait until `/minio/health/live` answers 200. Panics, saying to run
    /// `make tools`, when MinIO is missing, and with its log when it does
    /// not come up.
    pub fn start() -> Minio {
        Minio::start_on("127.0.0.1")
    }

    /// [`Minio::start`] on the address `host` (the test node's address, so
    /// that its pods reach MinIO through their network's gateway).
    pub fn start_on(host: &str) -> Minio {
        Minio::start_with(host, None)
    }

    /// [`Minio::start`] serving HTTPS with a certificate for `127.0.0.1`
    /// signed by `ca`.
    pub fn start_tls(ca: &TestCa) -> Minio {
        Minio::start_tls_on("127.0.0.1", ca)
    }

    /// [`Minio::start_on`] `host` serving HTTPS with a certificate for
    /// `host` signed by `ca`.
    pub fn start_tls_on(host: &str, ca: &TestCa) -> Minio {
        Minio::start_with(host, Some(ca))
    }

    fn start_with(host: &str, tls: Option<&TestCa>) -> Minio {
        crate::tools::require("minio");
        let dir = tempfile::Builder::new()
            .prefix("minio-")
            .tempdir()
            .expect("temporary directory");
        let data = dir.path().join("data");
        fs::create_dir_all(&data).expect("create MinIO data directory");
        fs::create_dir_all(dir.path().join("home")).expect("create MinIO home");
        // MinIO serves HTTPS when its certificate directory holds a key pair.
        let ca = tls.map(|ca| {
            let certs = dir.path().join("certs");
            fs::create_dir_all(&certs).expect("create MinIO certificate directory");
            ca.server_cert_for("minio", &[host, "localhost"])
                .write(&certs.join("public.crt"), &certs.join("private.key"));
            ca.write_cert(&dir.path().join("ca.pem"))
        });
        let (process, port, console_port) = start_until_bound("MinIO", Retry::FreshPort, || {
            let (port, console_port) = (free_port(), free_port());
            if port == console_port {
                return Err(StartError::AddrInUse(format!(
                    "port {port} handed out twice"
                )));
            }
            spawn_ready(dir.path(), &data, host, port, console_port, ca.as_deref())
                .map(|process| (process, port, console_port))
        });
        Minio {
            process,
            host: host.to_owned(),
            port,
            console_port,
            data,
            ca,
            dir,
        }
    }

    /// `http://HOST:PORT` (`https://` with TLS), the S3 endpoint.
    pub fn endpoint(&self) -> String {
        let scheme = if self.ca.is_some() { "https" } else { "http" };
        format!("{scheme}://{}:{}", self.host, self.port)
    }

    /// The CA certificate file its clients trust, when it serves HTTPS.
    pub fn ca_file(&self) -> Option<&Path> {
        self.ca.as_deref()
    }

    /// curl's arguments to trust this server's certificate.
    fn curl_tls_args(&self) -> Vec<String> {
        match &self.ca {
            Some(ca) => vec!["--cacert".into(), ca.display().to_string()],
            None => Vec::new(),
        }
    }

    /// The data directory (objects live in MinIO's own format below
    /// `<data>/<bucket>/<key>/`).
    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    /// MinIO's log so far, across restarts.
    pub fn log(&self) -> String {
        self.process.log()
    }

    /// Whether the server process runs.
    pub fn is_running(&mut self) -> bool {
        self.process.is_running()
    }

    /// The bucket `name` of this server, with the root credentials, at the
    /// bucket root. Does not create it.
    pub fn bucket(&self, name: &str) -> S3Bucket {
        S3Bucket {
            endpoint: self.endpoint(),
            bucket: name.to_owned(),
            region: REGION.to_owned(),
            access_key: ACCESS_KEY.to_owned(),
            secret_key: SECRET_KEY.to_owned(),
            root_directory: String::new(),
        }
    }

    /// Create the bucket `name` (a signed `PUT /name`) and return it.
    pub fn create_bucket(&self, name: &str) -> S3Bucket {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let reply = self.s3("PUT", &format!("/{name}"), &[], None, None);
            if reply.status == 200 {
                return self.bucket(name);
            }
            // Right after start, MinIO may still answer 503 while it settles.
            if Instant::now() >= deadline || (reply.status != 503 && reply.status != 0) {
                panic!("creating bucket {name}: {}", reply.describe());
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stop the server (SIGKILL), keeping its data directory and port.
    pub fn stop(&mut self) {
        self.process.kill();
    }

    /// Start the server again on the same data directory and ports, and wait
    /// until it is live. The old listener's port may linger for a moment,
    /// so a bind failure is retried.
    pub fn start_again(&mut self) {
        self.process.kill();
        self.process = start_until_bound("MinIO", Retry::SamePort, || {
            spawn_ready(
                self.dir.path(),
                &self.data,
                &self.host,
                self.port,
                self.console_port,
                self.ca.as_deref(),
            )
        });
    }

    /// A SigV4-signed request with curl: `method` on `path_and_query`
    /// (`/bucket/key?...`, already percent-encoded), uploading the file
    /// `upload` and writing the body to `output` when given.
    pub fn s3(
        &self,
        method: &str,
        path_and_query: &str,
        extra: &[String],
        upload: Option<&Path>,
        output: Option<&Path>,
    ) -> Transfer {
        let mut args: Vec<String> = vec![
            "-X".into(),
            method.into(),
            "--aws-sigv4".into(),
            format!("aws:amz:{REGION}:s3"),
            "--user".into(),
            format!("{ACCESS_KEY}:{SECRET_KEY}"),
        ];
        args.extend(self.curl_tls_args());
        if let Some(file) = upload {
            args.push("-T".into());
            args.push(file.display().to_string());
        }
        args.extend(extra.iter().cloned());
        args.push(format!("{}{path_and_query}", self.endpoint()));
        curl::run(&args, output)
    }

    /// [`Minio::s3`] without extra arguments; panics unless MinIO answers 200.
    fn s3_ok(
        &self,
        method: &str,
        path_and_query: &str,
        upload: Option<&Path>,
        output: Option<&Path>,
    ) -> Transfer {
        let reply = self.s3(method, path_and_query, &[], upload, output);
        assert_eq!(
            reply.status,
            200,
            "{method} {path_and_query}: {}",
            reply.describe()
        );
        reply
    }

    /// Upload the file `path` as `bucket/key`; panics unless MinIO answers 200.
    /// Returns the transfer (its `elapsed` is the upload's wall time).
    pub fn put_file(&self, bucket: &str, key: &str, path: &Path) -> Transfer {
        self.s3_ok(
            "PUT",
            &format!("/{bucket}/{}", encode_key(key)),
            Some(path),
            None,
        )
    }

    /// Download `bucket/key` into the file `path`; panics unless MinIO
    /// answers 200. Returns the transfer (its `elapsed` is the download's
    /// wall time).
    pub fn get_file(&self, bucket: &str, key: &str, path: &Path) -> Transfer {
        self.s3_ok(
            "GET",
            &format!("/{bucket}/{}", encode_key(key)),
            None,
            Some(path),
        )
    }

    /// The content of `bucket/key`, or `None` when MinIO answers 404.
    pub fn get_object(&self, bucket: &str, key: &str) -> Option<Vec<u8>> {
        let reply = self.s3(
            "GET",
            &format!("/{bucket}/{}", encode_key(key)),
            &[],
            None,
            None,
        );
        match reply.status {
            200 => Some(reply.body),
            404 => None,
            _ => panic!("GET {bucket}/{key}: {}", reply.describe()),
        }
    }

    /// Opens a multipart upload of `bucket/key` (with no parts).
    pub fn open_multipart_upload(&self, bucket: &str, key: &str) {
        self.s3_ok(
            "POST",
            &format!("/{bucket}/{}?uploads=", encode_key(key)),
            None,
            None,
        );
    }

    /// How many multipart uploads of exactly `bucket/key` are open, page by
    /// page (MinIO lists uploads by exact object name only).
    pub fn open_multipart_uploads(&self, bucket: &str, key: &str) -> usize {
        let (mut count, mut id_marker) = (0, String::new());
        loop {
            let reply = self.s3_ok(
                "GET",
                &format!(
                    "/{bucket}?key-marker={key}&prefix={key}&upload-id-marker={}&uploads=",
                    encode(&id_marker),
                    key = encode(key),
                ),
                None,
                None,
            );
            let text = reply.text();
            count += text.matches("<UploadId>").count();
            match crate::xml::field(&text, "NextUploadIdMarker") {
                Some(next)
                    if crate::xml::field(&text, "IsTruncated").as_deref() == Some("true") =>
                {
                    id_marker = crate::xml::unescape(&next);
                }
                _ => return count,
            }
        }
    }

    /// Every object of `bucket` whose key starts with `prefix`, page by page.
    pub fn list_objects(&self, bucket: &str, prefix: &str) -> Vec<ObjectInfo> {
        let mut objects = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut query = format!("list-type=2&max-keys=1000&prefix={}", encode(prefix));
            if let Some(t) = &token {
                // Signed queries must list their parameters in order.
                query = format!("continuation-token={}&{query}", encode(t));
            }
            let reply = self.s3_ok("GET", &format!("/{bucket}?{query}"), None, None);
            let text = reply.text();
            for contents in text.split("<Contents>").skip(1) {
                let key = crate::xml::field(contents, "Key").expect("listed object has a Key");
                let size = crate::xml::field(contents, "Size")
                    .and_then(|s| s.parse().ok())
                    .expect("listed object has a Size");
                objects.push(ObjectInfo {
                    key: crate::xml::unescape(&key),
                    size,
                });
            }
            match crate::xml::field(&text, "NextContinuationToken") {
                Some(next)
                    if crate::xml::field(&text, "IsTruncated").as_deref() == Some("true") =>
                {
                    token = Some(crate::xml::unescape(&next));
                }
                _ => return objects,
            }
        }
    }

    /// Fetch every blob of the registry layout in `bucket`
    /// (`<v2>/blobs/<alg>/<xx>/<hex>/data`) and check that its content
    /// hashes to its key. Returns how many blobs were checked and every
    /// one that is wrong.
    pub fn verify_blobs(&self, bucket: &S3Bucket) -> (usize, Vec<BadBlob>) {
        let prefix = format!("{}/blobs/", bucket.v2_prefix());
        let keys = self
            .list_objects(&bucket.bucket, &prefix)
            .into_iter()
            .map(|o| o.key);
        verify_listed_blobs(&prefix, keys, |key| self.get_object(&bucket.bucket, key))
    }
}

/// Spawn MinIO over `data` on `port` (API) and `console_port`, logging to
/// `<dir>/minio.log`, and wait until it is live. With `ca` (the CA's
/// certificate file), it serves HTTPS with the key pair in `<dir>/certs`.
fn spawn_ready(
    dir: &Path,
    data: &Path,
    host: &str,
    port: u16,
    console_port: u16,
    ca: Option<&Path>,
) -> Result<ServerProcess, StartError> {
    let mut cmd = Command::new(crate::tools::require("minio"));
    if ca.is_some() {
        cmd.arg("--certs-dir").arg(dir.join("certs"));
    }
    cmd.arg("server")
        .arg("--address")
        .arg(format!("{host}:{port}"))
        .arg("--console-address")
        .arg(format!("127.0.0.1:{console_port}"))
        .arg(data)
        .current_dir(dir)
        .env_clear()
        .env("PATH", crate::tools::child_path())
        .env("HOME", dir.join("home"))
        .env("MINIO_ROOT_USER", ACCESS_KEY)
        .env("MINIO_ROOT_PASSWORD", SECRET_KEY)
        .env("MINIO_BROWSER", "off")
        .env("MINIO_UPDATE", "off");
    let mut process = ServerProcess::spawn(cmd, &dir.join("minio.log"));
    match ca {
        None => process.wait_ready(&format!("http://{host}:{port}/minio/health/live"), 200)?,
        Some(ca) => {
            let ca_pem = fs::read(ca).expect("read the CA certificate");
            let agent = agent_with_tls(Duration::from_secs(2), &ca_pem, None);
            let url = format!("https://{host}:{port}/minio/health/live");
            process.wait_ready_via(&agent, &url, 200)?;
        }
    }
    Ok(process)
}

/// Percent-encode `text` for a query value: everything but unreserved
/// characters (SigV4's canonical form).
pub fn encode(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Percent-encode an object key for a path, keeping its slashes.
pub fn encode_key(key: &str) -> String {
    key.split('/').map(encode).collect::<Vec<_>>().join("/")
}

/// SHA-256 of the empty body: MinIO's admin API wants the payload hash signed.
const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// One S3 call MinIO traced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TracedCall {
    /// MinIO's name of the call (`s3.GetObject`, `s3.HeadObject`, ...).
    pub function: String,
    /// The request path, `/bucket/key`.
    pub path: String,
    /// The request's `X-Amz-Content-Sha256`: the payload's hex sha256 when
    /// it is signed, `UNSIGNED-PAYLOAD` when not.
    pub content_sha256: Option<String>,
}

/// MinIO's own trace of the S3 calls it answers (the admin API's
/// `trace`, as `mc admin trace` shows it), streamed by curl into a file:
/// what a client fetched, counted on the S3 side. Dropping it stops curl.
#[derive(Debug)]
pub struct S3Trace {
    process: ServerProcess,
    markers: std::sync::atomic::AtomicU64,
    _dir: TempDir,
}

impl Minio {
    /// Starts tracing every S3 call this server answers; returns once the
    /// trace is live.
    pub fn trace(&self) -> S3Trace {
        let dir = tempfile::Builder::new()
            .prefix("minio-trace-")
            .tempdir()
            .expect("temporary directory");
        let mut cmd = Command::new("curl");
        cmd.args(["-sSN", "--aws-sigv4"])
            .arg(format!("aws:amz:{REGION}:s3"))
            .arg("--user")
            .arg(format!("{ACCESS_KEY}:{SECRET_KEY}"))
            .arg("-H")
            .arg(format!("x-amz-content-sha256: {EMPTY_SHA256}"))
            .args(self.curl_tls_args())
            .arg(format!("{}/minio/admin/v3/trace?s3=true", self.endpoint()))
            .env_clear()
            .env("PATH", crate::tools::child_path())
            .env("HOME", dir.path());
        let process = ServerProcess::spawn(cmd, &dir.path().join("trace.jsonl"));
        let trace = S3Trace {
            process,
            markers: std::sync::atomic::AtomicU64::new(0),
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !trace.try_sync(self, Duration::from_millis(500)) {
            assert!(
                Instant::now() < deadline,
                "MinIO's trace did not start: {}",
                trace.process.log()
            );
        }
        trace
    }
}

impl S3Trace {
    /// Every call traced so far, including every call MinIO answered
    /// before this one (a marker request is sent and awaited in the trace).
    pub fn calls(&self, minio: &Minio) -> Vec<TracedCall> {
        assert!(
            self.try_sync(minio, Duration::from_secs(20)),
            "MinIO's trace stopped: {}",
            self.process.log()
        );
        self.parsed()
    }

    /// How many `GetObject` calls fetched a key of `bucket` ending in `suffix`.
    pub fn get_objects(&self, minio: &Minio, bucket: &S3Bucket, suffix: &str) -> usize {
        let prefix = format!("/{}/", bucket.bucket);
        self.calls(minio)
            .iter()
            .filter(|c| {
                c.function == "s3.GetObject"
                    && c.path.starts_with(&prefix)
                    && c.path.ends_with(suffix)
            })
            .count()
    }

    /// Sends a marker request and waits up to `timeout` for it in the trace.
    fn try_sync(&self, minio: &Minio, timeout: Duration) -> bool {
        let n = self
            .markers
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let marker = format!("/berth-trace-marker/{n}");
        minio.s3("GET", &marker, &[], None, None);
        let deadline = Instant::now() + timeout;
        loop {
            if self.parsed().iter().any(|c| c.path == marker) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    fn parsed(&self) -> Vec<TracedCall> {
        self.process
            .log()
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter_map(|call| {
                Some(TracedCall {
                    function: call.get("funcname")?.as_str()?.to_owned(),
                    path: call.get("path")?.as_str()?.to_owned(),
                    content_sha256: call
                        .pointer("/http/request/headers/X-Amz-Content-Sha256/0")
                        .and_then(|v| v.as_str())
                        .map(str::to_owned),
                })
            })
            .collect()
    }
}
