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
