//! The `berth-registry` command line: `config check` (which refuses what
//! `serve` refuses, and reads the file from `REGISTRY_CONFIGURATION_PATH`
//! too) and `gc` argument checks.
//!
//! Being an integration test of this package, this file also makes
//! `cargo test --workspace` build the `berth-registry` binary, which the
//! end-to-end tests in `tests/` start as a process.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

fn command(args: &[&str], dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_berth-registry"));
    command.args(args).current_dir(dir).env_clear();
    command
}

fn berth(args: &[&str], dir: &Path) -> Output {
    command(args, dir).output().expect("run berth-registry")
}

/// `berth-registry serve --config FILE`, which must refuse to start: its
/// output once it exited (it is killed, and the test fails, if it serves).
fn serve_refuses(config: &str, dir: &Path) -> Output {
    let mut child = command(&["serve", "--config", config], dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run berth-registry serve");
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().expect("wait for serve").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("serve started with a configuration config check refuses");
        }
        thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("serve's output");
    assert!(!out.status.success());
    out
}

/// The last line of `out`'s stderr: the error, without log lines before it.
fn error_line(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .last()
        .unwrap_or_default()
        .to_owned()
}

fn write_config(dir: &Path, text: &str) -> String {
    let path = dir.join("config.yml");
    std::fs::write(&path, text).expect("write config");
    path.display().to_string()
}

const VALID: &str = "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: ./data\n";

#[test]
fn config_check_accepts_a_valid_file_and_names_a_bad_key() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let good = write_config(dir.path(), VALID);
    let out = berth(&["config", "check", &good], dir.path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let bad = write_config(dir.path(), &VALID.replace("rootdirectory", "rootdir"));
    let out = berth(&["config", "check", &bad], dir.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("storage.filesystem") && stderr.contains("rootdir"),
        "{stderr}"
    );
}

#[test]
fn gc_refuses_a_grace_period_shorter_than_touches_allow() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let config = write_config(dir.path(), &format!("{VALID}berth:\n  gcgraceperiod: 1h\n"));
    let out = berth(
        &["gc", "--config", &config, "--grace-period", "10m"],
        dir.path(),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("berth.gcgraceperiod"), "{stderr}");
    assert!(
        !dir.path().join("data").exists(),
        "a refused collection touches no storage"
    );
}

#[test]
fn gc_on_an_empty_registry_reports_json() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let config = write_config(dir.path(), VALID);
    let out = berth(&["gc", "--config", &config, "--dry-run"], dir.path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    assert_eq!(report["dryRun"], true);
    assert_eq!(report["blobsDeleted"], 0);
}

#[test]
fn config_check_reads_the_file_named_by_registry_configuration_path() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let file = write_config(dir.path(), VALID);
    for args in [
        vec!["config", "check", file.as_str()],
        vec!["config", "check"],
    ] {
        let out = command(&args, dir.path())
            .env("REGISTRY_CONFIGURATION_PATH", &file)
            .output()
            .expect("run berth-registry");
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn config_check_refuses_what_serve_refuses() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let not_pem = dir.path().join("tls.pem");
    std::fs::write(&not_pem, "not a certificate").unwrap();
    let cases = [
        (
            format!("{VALID}http:\n  headers:\n    Bad Name: [x]\n"),
            "http.headers.Bad Name",
        ),
        (
            format!(
                "{VALID}http:\n  tls:\n    certificate: {0}\n    key: {0}\n",
                not_pem.display()
            ),
            "http.tls.certificate",
        ),
        (
            format!("{VALID}berth:\n  gcschedule: \"@daily\"\n  gcinterval: 24h\n"),
            "berth.gcschedule",
        ),
    ];
    for (text, key) in cases {
        let file = write_config(dir.path(), &text);
        let checked = berth(&["config", "check", &file], dir.path());
        assert!(!checked.status.success(), "config check accepted:\n{text}");
        let served = serve_refuses(&file, dir.path());
        let (checked, served) = (error_line(&checked), error_line(&served));
        assert!(checked.contains(key), "{checked}");
        assert!(
            served.ends_with(checked.trim_start_matches("error: ")),
            "serve and config check differ:\n  serve: {served}\n  check: {checked}"
        );
    }
}
