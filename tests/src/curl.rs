//! curl, for the requests the ureq client does not make: AWS SigV4-signed
//! S3 calls (`--aws-sigv4`), connections pinned to a public key
//! (`--pinnedpubkey`), and timed transfers of large files. Run with a
//! clean environment, so no proxy or CA setting of the machine leaks in.

use std::fs;
use std::path::Path;
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

/// What one curl run did.
#[derive(Debug)]
pub struct Transfer {
    /// The HTTP status of the last response; 0 when none arrived.
    pub status: u16,
    /// The response body, unless it was written to a file.
    pub body: Vec<u8>,
    /// How curl exited (non-zero on a transport or TLS error).
    pub exit: ExitStatus,
    /// What curl said on stderr.
    pub stderr: String,
    /// Wall-clock time of the whole run.
    pub elapsed: Duration,
}

impl Transfer {
    /// The body as text (lossy UTF-8).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Whether curl finished without a transport error.
    pub fn ok(&self) -> bool {
        self.exit.success()
    }

    /// Status, exit, stderr and the start of the body, for failure messages.
    pub fn describe(&self) -> String {
        let text = self.text();
        format!(
            "curl exited {} with HTTP {}\n--- stderr ---\n{}\n--- body ---\n{}",
            self.exit,
            self.status,
            self.stderr,
            text.chars().take(2000).collect::<String>()
        )
    }
}

/// Run `curl -sS ARGS`, writing the body to `output` (or capturing it when
/// `None`). Panics, saying to run `make tools`, when curl is missing.
pub fn run(args: &[String], output: Option<&Path>) -> Transfer {
    let scratch = tempfile::Builder::new()
        .prefix("curl-")
        .tempdir()
        .expect("temporary directory");
    let body_file = match output {
        Some(path) => path.to_path_buf(),
        None => scratch.path().join("body"),
    };
    let started = Instant::now();
    let result = Command::new("curl")
        .arg("-sS")
        .args(args)
        .arg("-o")
        .arg(&body_file)
        .args(["-w", "%{http_code}"])
        .env_clear()
        .env("PATH", crate::tools::child_path())
        .env("HOME", scratch.path())
        .output();
    let elapsed = started.elapsed();
    let out = match result {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            panic!("curl not found: run `make tools` at the workspace root")
        }
        Err(e) => panic!("run curl: {e}"),
    };
    let status = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    let body = match output {
        Some(_) => Vec::new(),
        None => fs::read(&body_file).unwrap_or_default(),
    };
    Transfer {
        status,
        body,
        exit: out.status,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        elapsed,
    }
}
