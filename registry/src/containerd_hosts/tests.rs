//! `apply` and `remove` on temporary hosts directories.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::*;

/// Every entry below `root`: kind, mode and (for files) bytes.
fn snapshot(root: &Path) -> BTreeMap<PathBuf, (bool, u32, Vec<u8>)> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, (bool, u32, Vec<u8>)>) {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = fs::symlink_metadata(&path).unwrap();
            let rel = path.strip_prefix(root).unwrap().to_path_buf();
            let mode = meta.permissions().mode();
            if meta.is_dir() {
                out.insert(rel, (true, mode, Vec::new()));
                walk(root, &path, out);
            } else {
                out.insert(rel, (false, mode, fs::read(&path).unwrap()));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn request(dir: &Path, owner: &str, mirrors: &[&str], own_name: Option<&str>) -> ApplyRequest {
    ApplyRequest {
        hosts_dir: dir.to_path_buf(),
        endpoint: "http://10.0.0.5:5000".parse().unwrap(),
        owner: owner.parse().unwrap(),
        mirrors: mirrors.iter().map(|m| m.parse().unwrap()).collect(),
        own_name: own_name.map(|n| n.parse().unwrap()),
    }
}

fn read(path: PathBuf) -> String {
    fs::read_to_string(path).unwrap()
}

/// A hosts directory another tool already uses: its own `docker.io` file
/// (mode 0600), a `quay.io` directory with only a CA file, and an unrelated host.
fn tree_of_another_tool() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fs::create_dir(d.join("docker.io")).unwrap();
    fs::write(
        d.join("docker.io/hosts.toml"),
        "server = \"https://mirror.example\"\n",
    )
    .unwrap();
    fs::set_permissions(
        d.join("docker.io/hosts.toml"),
        fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    fs::create_dir(d.join("quay.io")).unwrap();
    fs::write(d.join("quay.io/ca.crt"), "PEM").unwrap();
    fs::create_dir(d.join("example.com")).unwrap();
    fs::write(d.join("example.com/hosts.toml"), "# other\n").unwrap();
    dir
}

#[test]
fn apply_writes_every_host_and_a_second_apply_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let req = request(
        dir.path(),
        "registry/local",
        &["docker.io=https://registry-1.docker.io", "_default"],
        Some("berth.local"),
    );
    let changes = apply(&req).unwrap();
    assert_eq!(changes.len(), 3, "{changes:?}");
    let docker = read(dir.path().join("docker.io/hosts.toml"));
    assert!(
        docker.starts_with("# berth-registry containerd-hosts: owner=registry/local dir=created\n")
    );
    assert!(docker.contains("server = \"https://registry-1.docker.io\""));
    assert!(docker.contains("[host.\"http://10.0.0.5:5000\"]"));
    assert!(!read(dir.path().join("_default/hosts.toml")).contains("server ="));
    assert!(
        read(dir.path().join("berth.local/hosts.toml"))
            .contains("server = \"http://10.0.0.5:5000\"")
    );
    let mode = fs::metadata(dir.path().join("docker.io/hosts.toml"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o644);

    let before = snapshot(dir.path());
    let again = apply(&req).unwrap();
    assert!(again.iter().all(|c| c.what == "unchanged"), "{again:?}");
    assert_eq!(snapshot(dir.path()), before);
}

#[test]
fn apply_with_fewer_mirrors_removes_exactly_the_dropped_hosts() {
    let dir = tree_of_another_tool();
    let original = snapshot(dir.path());
    apply(&request(
        dir.path(),
        "registry/local",
        &["docker.io", "ghcr.io", "quay.io"],
        None,
    ))
    .unwrap();
    let with_ghcr = snapshot(dir.path());
    apply(&request(dir.path(), "registry/local", &["ghcr.io"], None)).unwrap();
    let now = snapshot(dir.path());
    // docker.io and quay.io are as the other tool left them; ghcr.io is unchanged.
    for (path, entry) in &original {
        assert_eq!(now.get(path), Some(entry), "{}", path.display());
    }
    for (path, entry) in &now {
        if path.starts_with("ghcr.io") {
            assert_eq!(with_ghcr.get(path), Some(entry));
        } else {
            assert_eq!(original.get(path), Some(entry), "{}", path.display());
        }
    }
}

#[test]
fn remove_restores_the_directory_exactly() {
    let dir = tree_of_another_tool();
    let original = snapshot(dir.path());
    let req = request(
        dir.path(),
        "registry/local",
        &[
            "docker.io=https://registry-1.docker.io",
            "quay.io",
            "ghcr.io",
        ],
        Some("berth.local"),
    );
    let changes = apply(&req).unwrap();
    assert!(
        changes.iter().any(|c| c.what.contains("original kept")),
        "{changes:?}"
    );
    assert_eq!(
        read(dir.path().join("docker.io").join(BACKUP_NAME)),
        "server = \"https://mirror.example\"\n"
    );
    let owner: Owner = "registry/local".parse().unwrap();
    remove(dir.path(), &owner).unwrap();
    assert_eq!(snapshot(dir.path()), original);
    // Removing twice is harmless.
    assert!(remove(dir.path(), &owner).unwrap().is_empty());
    assert_eq!(snapshot(dir.path()), original);
}

#[test]
fn another_owners_host_is_refused_and_nothing_changes() {
    let dir = tree_of_another_tool();
    apply(&request(dir.path(), "team-a/cache", &["ghcr.io"], None)).unwrap();
    let before = snapshot(dir.path());
    let err = apply(&request(
        dir.path(),
        "team-b/cache",
        &["docker.io", "ghcr.io", "zz.io"],
        None,
    ))
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("ghcr.io") && err.contains("team-a/cache"),
        "{err}"
    );
    assert_eq!(snapshot(dir.path()), before);
    // Nor does the other owner's removal touch it.
    remove(dir.path(), &"team-b/cache".parse().unwrap()).unwrap();
    assert_eq!(snapshot(dir.path()), before);
}

#[test]
fn a_host_entry_that_is_a_file_is_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("ghcr.io"), "not a directory").unwrap();
    let before = snapshot(dir.path());
    let err = apply(&request(
        dir.path(),
        "registry/local",
        &["docker.io", "ghcr.io"],
        None,
    ))
    .unwrap_err()
    .to_string();
    assert!(err.contains("ghcr.io: not a directory"), "{err}");
    assert_eq!(snapshot(dir.path()), before);
}

#[test]
fn a_missing_hosts_directory_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("certs.d");
    let err = apply(&request(&missing, "registry/local", &["docker.io"], None))
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with(&format!("{}: cannot", missing.display())),
        "{err}"
    );
}

#[test]
fn a_stray_backup_is_refused() {
    let dir = tree_of_another_tool();
    fs::write(dir.path().join("docker.io").join(BACKUP_NAME), "stale").unwrap();
    let before = snapshot(dir.path());
    let err = apply(&request(dir.path(), "registry/local", &["docker.io"], None))
        .unwrap_err()
        .to_string();
    assert!(err.contains(BACKUP_NAME), "{err}");
    assert_eq!(snapshot(dir.path()), before);
}

#[test]
fn a_run_interrupted_after_keeping_the_original_completes_and_undoes() {
    let dir = tree_of_another_tool();
    let original = snapshot(dir.path());
    // As left by a run stopped between the hard link and the rename, with
    // its staged file and a staged directory of another host still there.
    let docker = dir.path().join("docker.io");
    fs::hard_link(docker.join(HOSTS_FILE), docker.join(BACKUP_NAME)).unwrap();
    fs::write(docker.join(STAGED_FILE), "half").unwrap();
    fs::create_dir(dir.path().join(format!("{STAGED_DIR_PREFIX}ghcr.io"))).unwrap();
    apply(&request(dir.path(), "registry/local", &["docker.io"], None)).unwrap();
    assert!(read(docker.join(HOSTS_FILE)).starts_with("# berth-registry"));
    remove(dir.path(), &"registry/local".parse().unwrap()).unwrap();
    assert_eq!(snapshot(dir.path()), original);
}

#[test]
fn a_created_directory_that_gained_other_files_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    apply(&request(dir.path(), "registry/local", &["docker.io"], None)).unwrap();
    fs::write(dir.path().join("docker.io/ca.crt"), "PEM").unwrap();
    remove(dir.path(), &"registry/local".parse().unwrap()).unwrap();
    assert!(!dir.path().join("docker.io/hosts.toml").exists());
    assert!(dir.path().join("docker.io/ca.crt").exists());
}

#[test]
fn a_host_named_twice_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let err = apply(&request(
        dir.path(),
        "a/b",
        &["docker.io"],
        Some("docker.io"),
    ))
    .unwrap_err()
    .to_string();
    assert!(err.contains("docker.io is named more than once"), "{err}");
    assert!(snapshot(dir.path()).is_empty());
}

#[test]
fn certificates_of_a_directory_without_hosts_toml_stay_in_force() {
    let dir = tree_of_another_tool();
    fs::write(dir.path().join("quay.io/client.cert"), "C").unwrap();
    fs::write(dir.path().join("quay.io/client.key"), "K").unwrap();
    apply(&request(
        dir.path(),
        "registry/local",
        &["quay.io", "docker.io"],
        None,
    ))
    .unwrap();
    let quay = read(dir.path().join("quay.io/hosts.toml"));
    assert!(
        quay.contains("ca = [\"ca.crt\"]\nclient = [[\"client.cert\", \"client.key\"]]\n"),
        "{quay}"
    );
    // A host whose other tool's file governed keeps that file's choices only.
    assert!(!read(dir.path().join("docker.io/hosts.toml")).contains("ca ="));
    // Applying again keeps the same file.
    let before = snapshot(dir.path());
    apply(&request(
        dir.path(),
        "registry/local",
        &["quay.io", "docker.io"],
        None,
    ))
    .unwrap();
    assert_eq!(snapshot(dir.path()), before);
}

#[test]
fn a_directory_containerd_prefers_for_a_host_with_a_port_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join("registry.example.com_5000_")).unwrap();
    let before = snapshot(dir.path());
    let err = apply(&request(
        dir.path(),
        "registry/local",
        &["ghcr.io", "registry.example.com:5000"],
        None,
    ))
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("registry.example.com_5000_: containerd reads this directory instead of registry.example.com:5000"),
        "{err}"
    );
    assert_eq!(snapshot(dir.path()), before);
}
