//! The registry's storage root as seen on disk, in CNCF Distribution's v2
//! layout: paths of blobs and links, snapshots of the tree to prove a
//! request wrote nothing, and a check that every stored blob's content
//! hashes to its path.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use crate::oci::digest_matches;

/// `<root>/docker/registry/v2`.
pub fn v2_dir(root: &Path) -> PathBuf {
    root.join("docker").join("registry").join("v2")
}

/// `<root>/docker/registry/v2/blobs/<alg>/<first two hex>/<hex>/data`.
pub fn blob_data_path(root: &Path, digest: &str) -> PathBuf {
    let (algorithm, hex) = digest.split_once(':').expect("digest has an algorithm");
    v2_dir(root)
        .join("blobs")
        .join(algorithm)
        .join(&hex[..2])
        .join(hex)
        .join("data")
}

/// `<root>/docker/registry/v2/repositories/<repo>`.
pub fn repository_dir(root: &Path, repo: &str) -> PathBuf {
    v2_dir(root).join("repositories").join(repo)
}

/// The link file that tags `tag` in `repo`:
/// `repositories/<repo>/_manifests/tags/<tag>/current/link`.
pub fn tag_link_path(root: &Path, repo: &str, tag: &str) -> PathBuf {
    repository_dir(root, repo)
        .join("_manifests")
        .join("tags")
        .join(tag)
        .join("current")
        .join("link")
}

/// What one path in a snapshot is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// A directory.
    Dir,
    /// A file with this content.
    File(Vec<u8>),
    /// Anything else (a symlink, ...), by its link target if any.
    Other(String),
}

/// Every path under a root and what it holds, to compare before and after.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Snapshot {
    entries: BTreeMap<PathBuf, Entry>,
}

impl Snapshot {
    /// Everything under `root` (an empty snapshot if `root` does not exist).
    pub fn full(root: &Path) -> Snapshot {
        Snapshot::filtered(root, |_| true)
    }

    /// Everything under `root` except upload sessions (any path with an
    /// `_uploads` component): the content a registry has committed.
    pub fn committed(root: &Path) -> Snapshot {
        Snapshot::filtered(root, |rel| {
            !rel.components().any(|c| c.as_os_str() == "_uploads")
        })
    }

    /// The paths under `root` (relative to it) for which `keep` holds; a
    /// directory that is not kept is not descended into.
    pub fn filtered(root: &Path, keep: impl Fn(&Path) -> bool) -> Snapshot {
        let mut entries = BTreeMap::new();
        let mut stack = vec![root.to_path_buf()];
        while let Some(dir) = stack.pop() {
            let Ok(read) = fs::read_dir(&dir) else {
                continue;
            };
            for item in read.flatten() {
                let path = item.path();
                let rel = path.strip_prefix(root).expect("under root").to_path_buf();
                if !keep(&rel) {
                    continue;
                }
                let Ok(kind) = item.file_type() else { continue };
                let entry = if kind.is_dir() {
                    stack.push(path.clone());
                    Entry::Dir
                } else if kind.is_file() {
                    Entry::File(fs::read(&path).unwrap_or_default())
                } else {
                    Entry::Other(
                        fs::read_link(&path)
                            .map(|t| t.display().to_string())
                            .unwrap_or_default(),
                    )
                };
                entries.insert(rel, entry);
            }
        }
        Snapshot { entries }
    }

    /// The paths in the snapshot.
    pub fn paths(&self) -> impl Iterator<Item = &Path> {
        self.entries.keys().map(PathBuf::as_path)
    }

    /// A description of how `after` differs from `self`; empty when equal.
    pub fn diff(&self, after: &Snapshot) -> String {
        let mut out = String::new();
        for (path, entry) in &after.entries {
            match self.entries.get(path) {
                None => out.push_str(&format!("  added    {}\n", path.display())),
                Some(old) if old != entry => {
                    out.push_str(&format!("  changed  {}\n", path.display()))
                }
                Some(_) => {}
            }
        }
        for path in self.entries.keys() {
            if !after.entries.contains_key(path) {
                out.push_str(&format!("  removed  {}\n", path.display()));
            }
        }
        out
    }

    /// Assert that `after` equals `self`; `what` names what happened in between.
    pub fn assert_unchanged(&self, after: &Snapshot, what: &str) {
        let diff = self.diff(after);
        assert!(diff.is_empty(), "{what} changed the storage root:\n{diff}");
    }
}

/// A stored blob whose content does not match its path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadBlob {
    /// The `data` file.
    pub path: PathBuf,
    /// What is wrong with it.
    pub problem: String,
}

/// The key prefix of the registry layout below an object store's
/// `rootdirectory` (`<root>/docker/registry/v2`), without a leading slash.
pub fn v2_prefix(root_directory: &str) -> String {
    let root = root_directory.trim_matches('/');
    if root.is_empty() {
        "docker/registry/v2".to_owned()
    } else {
        format!("{root}/docker/registry/v2")
    }
}

/// What is wrong with the stored blob at `rel` below `blobs/` (which must
/// be `<alg>/<xx>/<hex>/data`, `<xx>` the first two characters of
/// `<hex>`), whose content `read` gives (`Err`: why it could not be read);
/// `None` when it is whole.
pub fn blob_problem(rel: &str, read: impl FnOnce() -> Result<Vec<u8>, String>) -> Option<String> {
    let parts: Vec<&str> = rel.split('/').collect();
    let [algorithm, prefix, hex, "data"] = parts.as_slice() else {
        return Some("not at blobs/<alg>/<xx>/<hex>/data".to_owned());
    };
    if prefix.len() != 2 || !hex.starts_with(prefix) {
        return Some(format!("directory {prefix} is not the prefix of {hex}"));
    }
    let digest = format!("{algorithm}:{hex}");
    match read() {
        Err(e) => Some(e),
        Ok(bytes) => match digest_matches(&digest, &bytes) {
            Some(true) => None,
            Some(false) => Some(format!(
                "{} bytes that do not hash to {digest}",
                bytes.len()
            )),
            None => Some(format!("unknown algorithm {algorithm}")),
        },
    }
}

/// Check every blob an object store lists: `keys` are the object keys below
/// `prefix` (`<v2>/blobs/`), `read` fetches one (`None`: not found).
/// Returns how many blobs were checked and every one that is wrong.
pub fn verify_listed_blobs(
    prefix: &str,
    keys: impl IntoIterator<Item = String>,
    read: impl Fn(&str) -> Option<Vec<u8>>,
) -> (usize, Vec<BadBlob>) {
    let mut checked = 0;
    let mut bad = Vec::new();
    for key in keys {
        checked += 1;
        let rel = key.strip_prefix(prefix).unwrap_or(&key);
        let problem = blob_problem(rel, || {
            read(&key).ok_or_else(|| "listed but not found".to_owned())
        });
        if let Some(problem) = problem {
            bad.push(BadBlob {
                path: PathBuf::from(&key),
                problem,
            });
        }
    }
    (checked, bad)
}

/// Walk `blobs/<alg>/<xx>/<hex>/data` under the root and check that each
/// file's content hashes to `<alg>:<hex>` and that `<xx>` is the first two
/// characters of `<hex>`. Returns the number of blobs checked and every
/// blob that is wrong.
pub fn verify_blobs(root: &Path) -> (usize, Vec<BadBlob>) {
    let blobs = v2_dir(root).join("blobs");
    let mut checked = 0;
    let mut bad = Vec::new();
    let mut stack = vec![blobs.clone()];
    while let Some(dir) = stack.pop() {
        let Ok(read) = fs::read_dir(&dir) else {
            continue;
        };
        for item in read.flatten() {
            let path = item.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.file_name().is_none_or(|n| n != "data") {
                continue;
            }
            checked += 1;
            let rel = path.strip_prefix(&blobs).expect("under blobs");
            let problem = blob_problem(&rel.to_string_lossy(), || {
                fs::read(&path).map_err(|e| format!("unreadable: {e}"))
            });
            if let Some(problem) = problem {
                bad.push(BadBlob { path, problem });
            }
        }
    }
    (checked, bad)
}
