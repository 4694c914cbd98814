//! skopeo, the real client: `skopeo copy --all --preserve-digests` between
//! OCI layouts (`oci:DIR:TAG`) and registries (`docker://HOST/REPO:TAG`),
//! run with a clean environment and its home and XDG directories in a
//! temporary directory.

use std::fmt;
use std::fs;
use std::path::PathBuf;
use std::process::{Command, Output};

use tempfile::TempDir;

/// A failed skopeo run, with everything it said.
#[derive(Debug)]
pub struct SkopeoError {
    /// The arguments skopeo ran with.
    pub args: Vec<String>,
    /// How it exited.
    pub status: std::process::ExitStatus,
    /// Its standard output.
    pub stdout: String,
    /// Its standard error.
    pub stderr: String,
}

impl fmt::Display for SkopeoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "skopeo {} failed ({})\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.args.join(" "),
            self.status,
            self.stdout,
            self.stderr
        )
    }
}

impl std::error::Error for SkopeoError {}

/// A skopeo with its own home directory.
#[derive(Debug)]
pub struct Skopeo {
    bin: PathBuf,
    home: TempDir,
    /// The network namespace skopeo runs in, when not the test's own.
    netns: Option<String>,
}

impl Default for Skopeo {
    fn default() -> Self {
        Skopeo::new()
    }
}

impl Skopeo {
    /// Find skopeo in `.tools/bin` (panics, saying to run `make tools`, if it
    /// is missing) and give it a fresh home.
    pub fn new() -> Skopeo {
        let bin = crate::tools::require("skopeo");
        let home = tempfile::Builder::new()
            .prefix("skopeo-home-")
            .tempdir()
            .expect("temporary directory");
        for sub in ["config", "cache", "data", "run", "tmp"] {
            fs::create_dir_all(home.path().join(sub)).expect("create skopeo dirs");
        }
        Skopeo {
            bin,
            home,
            netns: None,
        }
    }

    /// A skopeo that runs in the network namespace `netns` (see
    /// [`crate::netns::OtherHost`]), as a client on another host.
    pub fn in_netns(netns: &str) -> Skopeo {
        Skopeo {
            netns: Some(netns.to_owned()),
            ..Skopeo::new()
        }
    }

    /// Run skopeo with `args` (after the global `--insecure-policy`).
    pub fn run(&self, args: &[String]) -> Result<Output, SkopeoError> {
        let home = self.home.path();
        let mut command = match &self.netns {
            Some(netns) => {
                let mut command = Command::new("ip");
                command.args(["netns", "exec", netns]).arg(&self.bin);
                command
            }
            None => Command::new(&self.bin),
        };
        let output = command
            .arg("--insecure-policy")
            .args(args)
            .env_clear()
            .env("PATH", crate::tools::child_path())
            .env("HOME", home)
            .env("XDG_CONFIG_HOME", home.join("config"))
            .env("XDG_CACHE_HOME", home.join("cache"))
            .env("XDG_DATA_HOME", home.join("data"))
            .env("XDG_RUNTIME_DIR", home.join("run"))
            .env("TMPDIR", home.join("tmp"))
            .output()
            .expect("run skopeo");
        if output.status.success() {
            Ok(output)
        } else {
            Err(SkopeoError {
                args: args.to_vec(),
                status: output.status,
                stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            })
        }
    }

    /// `skopeo copy --all --preserve-digests SRC DEST`, with TLS
    /// verification off for `docker://` ends (the test servers speak plain HTTP).
    pub fn try_copy(&self, src: &str, dest: &str) -> Result<Output, SkopeoError> {
        self.try_copy_with(src, dest, &[])
    }

    /// [`Skopeo::try_copy`] with extra `copy` options before the references,
    /// for example `--dest-creds USER:PASSWORD` or `--src-creds USER:PASSWORD`.
    pub fn try_copy_with(
        &self,
        src: &str,
        dest: &str,
        options: &[&str],
    ) -> Result<Output, SkopeoError> {
        let mut args: Vec<String> =
            vec!["copy".into(), "--all".into(), "--preserve-digests".into()];
        args.extend(options.iter().map(|o| o.to_string()));
        if src.starts_with("docker://") {
            args.push("--src-tls-verify=false".into());
        }
        if dest.starts_with("docker://") {
            args.push("--dest-tls-verify=false".into());
        }
        args.push(src.into());
        args.push(dest.into());
        self.run(&args)
    }

    /// [`Skopeo::try_copy`], panicking with skopeo's output on failure.
    pub fn copy(&self, src: &str, dest: &str) {
        if let Err(e) = self.try_copy(src, dest) {
            panic!("{e}");
        }
    }

    /// `skopeo inspect --raw REF`: the manifest bytes exactly as served.
    pub fn inspect_raw(&self, reference: &str) -> Vec<u8> {
        let mut args: Vec<String> = vec!["inspect".into(), "--raw".into()];
        if reference.starts_with("docker://") {
            args.push("--tls-verify=false".into());
        }
        args.push(reference.into());
        match self.run(&args) {
            Ok(output) => output.stdout,
            Err(e) => panic!("{e}"),
        }
    }
}

/// `docker://ADDR/REPO:TAG` (or `@DIGEST` when `reference` is a digest).
pub fn docker_ref(addr: &str, repo: &str, reference: &str) -> String {
    if reference.contains(':') {
        format!("docker://{addr}/{repo}@{reference}")
    } else {
        format!("docker://{addr}/{repo}:{reference}")
    }
}
