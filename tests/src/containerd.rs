//! containerd (Debian's, `/usr/bin/containerd`) as a pulling client: a
//! daemon started by the test with its own root, state directory and
//! socket in a temporary directory (no CRI plugin: nothing but image pulls),
//! killed at drop; `ctr images pull --hosts-dir DIR REF` through it, and
//! what it stored, for comparison with what was pushed.
//!
//! Also what tests of `berth-registry containerd-hosts` share: running the
//! writer, and a snapshot of a hosts directory (paths, kinds, modes, bytes)
//! to compare before and after.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::images::OciLayout;
use crate::oci::Descriptor;
use crate::process::{ServerProcess, StartError};

/// Debian's containerd (`make tools` installs the package).
pub const CONTAINERD: &str = "/usr/bin/containerd";
/// Debian's ctr.
pub const CTR: &str = "/usr/bin/ctr";

/// A running containerd of the test's own. Dropping it kills the daemon;
/// the temporary directory (root, state) goes with it.
#[derive(Debug)]
pub struct Containerd {
    process: ServerProcess,
    socket: PathBuf,
    dir: TempDir,
}

/// How a `ctr images pull` went.
#[derive(Debug)]
pub struct Pull {
    /// Whether ctr exited 0.
    pub ok: bool,
    /// How long it took.
    pub elapsed: Duration,
    /// What ctr printed (stdout, then stderr).
    pub output: String,
}

impl Containerd {
    /// Writes a minimal config and starts containerd; waits until `ctr
    /// version` answers on its socket. Panics with the daemon's log when it
    /// does not come up.
    pub fn start() -> Containerd {
        for tool in [CONTAINERD, CTR] {
            assert!(
                Path::new(tool).is_file(),
                "{tool} not found: run `make tools` (it installs Debian's containerd)"
            );
        }
        let dir = tempfile::Builder::new()
            .prefix("containerd-")
            .tempdir()
            .expect("temporary directory");
        let d = dir.path();
        let socket = d.join("containerd.sock");
        let config = d.join("config.toml");
        fs::write(&config, config_toml(d, &socket)).expect("write containerd's config");
        let mut command = Command::new(CONTAINERD);
        command
            .arg("--config")
            .arg(&config)
            .env_clear()
            .env("PATH", crate::tools::child_path());
        let mut process = ServerProcess::spawn(command, &d.join("containerd.log"));
        let ready = process.wait_ready_with("ctr version", 200, || {
            let out = ctr_at(&socket, d)
                .arg("version")
                .output()
                .map_err(|e| e.to_string())?;
            if out.status.success() {
                Ok(200)
            } else {
                Err(String::from_utf8_lossy(&out.stderr).into_owned())
            }
        });
        match ready {
            Ok(()) => Containerd {
                process,
                socket,
                dir,
            },
            Err(StartError::AddrInUse(msg) | StartError::Failed(msg)) => {
                panic!("containerd did not start: {msg}")
            }
        }
    }

    /// containerd's socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// containerd's log so far.
    pub fn log(&self) -> String {
        self.process.log()
    }

    /// `ctr --address SOCKET`, with a clean environment (no proxy settings).
    pub fn ctr(&self) -> Command {
        ctr_at(&self.socket, self.dir.path())
    }

    /// `ctr images pull --hosts-dir HOSTS_DIR REFERENCE`: fetches and
    /// unpacks the image for this machine's platform.
    pub fn pull(&self, hosts_dir: &Path, reference: &str) -> Pull {
        let started = Instant::now();
        let output = self
            .ctr()
            .args(["images", "pull", "--hosts-dir"])
            .arg(hosts_dir)
            .arg(reference)
            .output()
            .expect("run ctr images pull");
        Pull {
            ok: output.status.success(),
            elapsed: started.elapsed(),
            output: format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ),
        }
    }

    /// Asserts that containerd holds `reference` as exactly the image
    /// `manifest` of `layout`: the same manifest digest, every blob byte
    /// for byte.
    pub fn assert_holds(&self, reference: &str, layout: &OciLayout, manifest: &Descriptor) {
        assert_eq!(
            self.image_digest(reference).as_deref(),
            Some(manifest.digest.as_str()),
            "containerd's image {reference}"
        );
        let reachable = layout.reachable_from(manifest);
        for digest in reachable.manifests.iter().chain(&reachable.blobs) {
            assert!(
                self.content(digest) == layout.read_blob(digest),
                "containerd's {digest} differs from the layout's bytes"
            );
        }
    }

    /// The digest `reference` names in containerd's image store, if any.
    pub fn image_digest(&self, reference: &str) -> Option<String> {
        let out = self.ctr().args(["images", "ls"]).output().ok()?;
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|line| {
                let mut fields = line.split_whitespace();
                (fields.next() == Some(reference))
                    .then(|| fields.nth(1).map(str::to_owned))
                    .flatten()
            })
    }

    /// The bytes of `digest` in containerd's content store; panics when it
    /// has none.
    pub fn content(&self, digest: &str) -> Vec<u8> {
        let out = self
            .ctr()
            .args(["content", "get", digest])
            .output()
            .expect("run ctr content get");
        assert!(
            out.status.success(),
            "ctr content get {digest}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }
}

/// `ctr` for the containerd on `socket`, with `home` as its home.
fn ctr_at(socket: &Path, home: &Path) -> Command {
    let mut command = Command::new(CTR);
    command
        .arg("--address")
        .arg(socket)
        .env_clear()
        .env("PATH", crate::tools::child_path())
        .env("HOME", home);
    command
}

/// containerd's config: everything under `dir`, no CRI plugin, and no
/// snapshotters this machine cannot run (they only log errors).
fn config_toml(dir: &Path, socket: &Path) -> String {
    let d = dir.display();
    let s = socket.display();
    format!(
        r#"version = 2
root = "{d}/root"
state = "{d}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs"]

[grpc]
  address = "{s}"

[ttrpc]
  address = "{s}.ttrpc"

[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"
"#
    )
}

/// Runs `berth-registry containerd-hosts ARGS...` with a clean environment.
pub fn hosts_writer<S: AsRef<OsStr>>(args: &[S]) -> Output {
    hosts_writer_command(args)
        .output()
        .expect("run berth-registry containerd-hosts")
}

/// The command [`hosts_writer`] runs, for a test that wraps it.
pub fn hosts_writer_command<S: AsRef<OsStr>>(args: &[S]) -> Command {
    let mut command = Command::new(crate::registry::binary());
    command
        .arg("containerd-hosts")
        .args(args)
        .env_clear()
        .env("PATH", crate::tools::child_path());
    command
}

/// One entry of a directory tree: a directory, or a file and its bytes,
/// with its permission bits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// A directory and its mode.
    Dir(u32),
    /// A regular file (or anything else read as one), its mode and bytes.
    File(u32, Vec<u8>),
}

/// Every entry below `root`, by path relative to it.
pub fn snapshot(root: &Path) -> BTreeMap<PathBuf, Entry> {
    let mut out = BTreeMap::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let entries = fs::read_dir(&dir).unwrap_or_else(|e| panic!("list {}: {e}", dir.display()));
        for entry in entries {
            let path = entry.expect("directory entry").path();
            let meta = fs::symlink_metadata(&path).expect("metadata");
            let rel = path.strip_prefix(root).expect("below root").to_path_buf();
            let mode = meta.permissions().mode() & 0o7777;
            if meta.is_dir() {
                out.insert(rel, Entry::Dir(mode));
                pending.push(path);
            } else {
                let bytes =
                    fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
                out.insert(rel, Entry::File(mode, bytes));
            }
        }
    }
    out
}
