//! Where the external tools the tests drive live: `<workspace>/.tools/bin`,
//! provisioned by `make tools`.
//!
//! A test that needs a tool and cannot find it fails; it never passes silently.

use std::path::PathBuf;

/// The workspace root: the directory above this package's manifest.
pub fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .expect("the tests package lives inside the workspace")
        .to_path_buf()
}

/// The directory `make tools` links every tool into.
pub fn tools_dir() -> PathBuf {
    workspace_root().join(".tools").join("bin")
}

/// The path of tool `name` in `.tools/bin`; panics, saying to run
/// `make tools`, when it is not there or does not resolve to a file.
pub fn require(name: &str) -> PathBuf {
    let path = tools_dir().join(name);
    if !path.is_file() {
        panic!(
            "required tool `{name}` not found at {}: run `make tools` at the workspace root ({})",
            path.display(),
            workspace_root().display()
        );
    }
    path
}

/// The `PATH` handed to child processes: the tools directory first, then the
/// system directories. Nothing else from the test's environment leaks in.
pub fn child_path() -> String {
    format!(
        "{}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        tools_dir().display()
    )
}

/// `cargo` as a user runs it from their shell: the cargo running these
/// tests (`$CARGO`), with its toolchain first on a [`child_path`] `PATH` and
/// the user's cargo and rustup homes and target directory; nothing else
/// of the tests' environment.
pub fn cargo() -> std::process::Command {
    let cargo = std::env::var_os("CARGO").map_or_else(|| PathBuf::from("cargo"), PathBuf::from);
    let path = match cargo.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(dir) => format!("{}:{}", dir.display(), child_path()),
        None => child_path(),
    };
    let mut command = std::process::Command::new(&cargo);
    command.env_clear().env("PATH", path);
    let home = std::env::var_os("HOME");
    for var in [
        "HOME",
        "CARGO_HOME",
        "RUSTUP_HOME",
        "CARGO_TARGET_DIR",
        "RUSTUP_TOOLCHAIN",
    ] {
        if let Some(value) = std::env::var_os(var) {
            command.env(var, value);
        }
    }
    // A caller may move HOME; cargo's registry cache stays the user's.
    if std::env::var_os("CARGO_HOME").is_none()
        && let Some(home) = home
    {
        command.env("CARGO_HOME", PathBuf::from(home).join(".cargo"));
    }
    command
}
