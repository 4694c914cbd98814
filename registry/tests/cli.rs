//! The `berth-registry` command line: `config check` and `gc` argument checks.
//!
//! Being an integration test of this package, this file also makes
//! `cargo test --workspace` build the `berth-registry` binary, which the
//! end-to-end tests in `tests/` start as a process.

use std::path::Path;
use std::process::{Command, Output};

fn berth(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_berth-registry"))
        .args(args)
        .current_dir(dir)
        .env_clear()
        .output()
        .expect("run berth-registry")
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
