//! The README's commands, run as a new user runs them.
//!
//! Each `cargo run` runs exactly as the README shows it, from an empty
//! working directory (with `--manifest-path` pointing at this workspace,
//! because `./data` is relative to where the registry runs), with a clean
//! environment. `make test` builds the release binaries first, so these runs
//! only check that they are current.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use berth_tests::images::{OciLayout, assert_same_image, single_image_layout};
use berth_tests::process::ServerProcess;
use berth_tests::readme::{self, COMMANDS};
use berth_tests::storage::{tag_link_path, verify_blobs};
use berth_tests::tools::{child_path, workspace_root};

/// The address the README's first command serves on.
const DEVELOPMENT_ADDR: &str = "127.0.0.1:5000";

/// `command` (a README line) as a process run in `dir`: `cargo run` gets
/// this workspace's manifest; other programs are found on the tests' `PATH`.
fn readme_command(command: &str, dir: &Path) -> Command {
    let words: Vec<&str> = command.split_whitespace().collect();
    let mut cmd = if words[0] == "cargo" {
        berth_tests::tools::cargo()
    } else {
        let mut cmd = Command::new(words[0]);
        cmd.env_clear().env("PATH", child_path());
        if let Some(home) = std::env::var_os("HOME") {
            cmd.env("HOME", home);
        }
        cmd
    };
    if words.starts_with(&["cargo", "run"]) {
        let manifest = workspace_root().join("Cargo.toml");
        cmd.args(["run", "--manifest-path"])
            .arg(manifest)
            .args(&words[2..]);
    } else {
        cmd.args(&words[1..]);
    }
    cmd.current_dir(dir);
    cmd
}

/// Run a README command to completion in `dir`, panicking with its output
/// when it fails.
fn run(command: &str, dir: &Path) -> Output {
    let output = readme_command(command, dir)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{command}: {e}"));
    assert!(
        output.status.success(),
        "`{command}` failed ({}) in {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        output.status,
        dir.display(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

#[test]
fn every_readme_command_is_run_by_a_test() {
    let shown = readme::commands(&readme::text(), "sh");
    let known: Vec<&str> = COMMANDS.iter().map(|c| c.command).collect();
    let untested: Vec<&String> = shown
        .iter()
        .filter(|c| !known.contains(&c.as_str()))
        .collect();
    let dropped: Vec<&&str> = known
        .iter()
        .filter(|c| !shown.iter().any(|s| s == **c))
        .collect();
    assert!(
        untested.is_empty() && dropped.is_empty(),
        "README.md and tests/src/readme.rs disagree.\nshown in the README but run by no test: {untested:#?}\n\
         listed as run but no longer in the README: {dropped:#?}"
    );
}

/// The README's first command, then its push and pull: the registry with no
/// arguments serves 127.0.0.1:5000 from `./data` in Distribution's layout.
#[test]
fn first_command_serves_from_data_in_distributions_layout() {
    let dir = tempfile::tempdir().expect("temporary directory");
    // The README's address is fixed: fail clearly when another process has it.
    if let Err(e) = TcpListener::bind(DEVELOPMENT_ADDR) {
        panic!("{DEVELOPMENT_ADDR} is taken ({e}); the README's first command serves there");
    }
    let logs = tempfile::tempdir().expect("temporary directory");
    let mut server = ServerProcess::spawn(
        readme_command(readme::RUN_REGISTRY, dir.path()),
        &logs.path().join("registry.log"),
    );
    // A first release build may still be running inside `cargo run`.
    let ready = wait_until(std::time::Duration::from_secs(900), || {
        !server.is_running() || answers_ok(&format!("http://{DEVELOPMENT_ADDR}/v2/"))
    });
    assert!(
        ready && server.is_running(),
        "`{}` did not serve /v2/\n{}",
        readme::RUN_REGISTRY,
        server.log()
    );

    let (layout, manifest) =
        single_image_layout(&dir.path().join("my-layout"), "latest", &[4096, 1 << 20]);
    run(readme::PUSH_LAYOUT, dir.path());
    run(readme::PULL_LAYOUT, dir.path());
    assert_same_image(
        &layout,
        &OciLayout::open(&dir.path().join("copy")),
        "latest",
    );

    let data = dir.path().join("data");
    let link = tag_link_path(&data, "team/app", "latest");
    let linked =
        std::fs::read_to_string(&link).unwrap_or_else(|e| panic!("{}: {e}", link.display()));
    assert_eq!(linked, manifest.digest, "the tag's link in ./data");
    let (blobs, bad) = verify_blobs(&data);
    assert!(
        blobs >= 4 && bad.is_empty(),
        "{blobs} blobs in ./data, wrong: {bad:?}"
    );

    let report = run(readme::GC_DEVELOPMENT, dir.path());
    let report: serde_json::Value =
        serde_json::from_slice(&report.stdout).expect("gc prints a JSON report");
    assert_eq!(report["dryRun"], true, "{report}");
    assert_eq!(report["manifestsMarked"], 1, "{report}");
    assert_eq!(report["blobsDeleted"], 0, "{report}");

    server.signal("TERM");
    assert!(
        server
            .wait_exit(std::time::Duration::from_secs(30))
            .is_some(),
        "the registry stops on SIGTERM\n{}",
        server.log()
    );
}

/// The README's example configuration, saved as `example.yml`, passes
/// `config check`.
#[test]
fn example_configuration_passes_config_check() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let examples = readme::fenced_blocks(&readme::text(), "yaml");
    let example = examples
        .iter()
        .find(|block| block.starts_with("version: 0.1"))
        .expect("the README shows an example config.yml");
    std::fs::write(dir.path().join("example.yml"), example).expect("write example.yml");
    let out = run(readme::CHECK_EXAMPLE, dir.path());
    assert!(String::from_utf8_lossy(&out.stdout).contains("example.yml: ok"));
}

/// The README's `--help` of the operator lists every flag.
#[test]
fn operator_help_lists_every_flag() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let out = run(readme::OPERATOR_HELP, dir.path());
    let help = String::from_utf8_lossy(&out.stdout);
    let flags = [
        "--metrics-addr",
        "--namespace",
        "--registry-image",
        "--lease-name",
        "--lease-namespace",
        "--identity",
        "--lease-duration",
        "--renew-deadline",
        "--renew-interval",
        "--debounce",
        "--log-format",
    ];
    for flag in flags {
        assert!(help.contains(flag), "--help does not list {flag}:\n{help}");
    }
}

fn answers_ok(url: &str) -> bool {
    let agent = berth_tests::http::agent_with_timeout(std::time::Duration::from_secs(2));
    agent
        .get(url)
        .call()
        .map(|r| r.status().as_u16() == 200)
        .unwrap_or(false)
}

fn wait_until(timeout: std::time::Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    false
}
