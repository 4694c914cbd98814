//! Giving a filesystem storage root to the user the registry runs as.
//!
//! On Kubernetes, a hostPath volume that does not exist yet is created by
//! kubelet as root with mode 0755, and `fsGroup` does not apply to hostPath:
//! a registry running as a non-root user could neither write nor, therefore,
//! become ready. `berth-registry prepare-storage` runs first, as root with
//! only `CAP_CHOWN`, and hands the directory over. When the root is already
//! owned by that user it does nothing; otherwise it also hands over what is
//! below it (a tree another registry wrote, for example), without following
//! symbolic links, and the root itself last, so an interrupted run is
//! completed by the next one.

use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, lchown};
use std::path::Path;

/// What [`give_to`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Handover {
    /// Whether the root directory was created.
    pub created: bool,
    /// Entries (the root included) whose owner changed.
    pub changed: u64,
}

/// Creates `root` if it is missing and makes `uid:gid` the owner of it and
/// of everything below it; returns what changed. Errors name the path.
pub fn give_to(root: &Path, uid: u32, gid: u32) -> io::Result<Handover> {
    let with_path =
        |path: &Path, e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", path.display()));
    let mut handover = Handover::default();
    if !root.exists() {
        fs::create_dir_all(root).map_err(|e| with_path(root, e))?;
        handover.created = true;
    }
    let meta = fs::symlink_metadata(root).map_err(|e| with_path(root, e))?;
    if !meta.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{}: not a directory", root.display()),
        ));
    }
    if (meta.uid(), meta.gid()) == (uid, gid) {
        return Ok(handover);
    }
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).map_err(|e| with_path(&dir, e))? {
            let entry = entry.map_err(|e| with_path(&dir, e))?;
            let path = entry.path();
            let meta = fs::symlink_metadata(&path).map_err(|e| with_path(&path, e))?;
            if (meta.uid(), meta.gid()) != (uid, gid) {
                lchown(&path, Some(uid), Some(gid)).map_err(|e| with_path(&path, e))?;
                handover.changed += 1;
            }
            if meta.is_dir() {
                stack.push(path);
            }
        }
    }
    lchown(root, Some(uid), Some(gid)).map_err(|e| with_path(root, e))?;
    handover.changed += 1;
    Ok(handover)
}

/// Parses `UID:GID`.
pub fn parse_owner(text: &str) -> Result<(u32, u32), String> {
    let (uid, gid) = text
        .split_once(':')
        .ok_or_else(|| format!("{text:?} is not UID:GID"))?;
    let number = |s: &str| {
        s.parse::<u32>()
            .map_err(|_| format!("{s:?} in {text:?} is not a number"))
    };
    Ok((number(uid)?, number(gid)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_parse() {
        assert_eq!(parse_owner("65532:65532"), Ok((65532, 65532)));
        assert!(parse_owner("65532").is_err());
        assert!(parse_owner("a:1").is_err());
    }

    #[test]
    fn an_owned_root_is_left_alone_and_a_missing_one_is_made() {
        let dir = tempfile::tempdir().unwrap();
        let meta = fs::metadata(dir.path()).unwrap();
        let (uid, gid) = (meta.uid(), meta.gid());
        let root = dir.path().join("data");
        let first = give_to(&root, uid, gid).unwrap();
        assert!(first.created);
        fs::write(root.join("file"), b"x").unwrap();
        assert_eq!(give_to(&root, uid, gid).unwrap(), Handover::default());
    }

    #[test]
    fn a_tree_is_handed_over_without_following_links() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside");
        fs::write(&outside, b"not the registry's").unwrap();
        let root = dir.path().join("data");
        fs::create_dir_all(root.join("docker/registry")).unwrap();
        fs::write(root.join("docker/registry/file"), b"x").unwrap();
        std::os::unix::fs::symlink(&outside, root.join("link")).unwrap();
        let before = fs::metadata(&outside).unwrap().uid();
        // SAFETY: geteuid has no preconditions.
        let as_root = unsafe { libc::geteuid() } == 0;
        match give_to(&root, 65532, 65532) {
            Ok(handover) => {
                assert!(as_root, "only root may give files away");
                assert_eq!(handover.changed, 5, "root, docker, registry, file, link");
                for path in ["", "docker", "docker/registry", "docker/registry/file"] {
                    let meta = fs::metadata(root.join(path)).unwrap();
                    assert_eq!((meta.uid(), meta.gid()), (65532, 65532), "{path}");
                }
                assert_eq!(fs::metadata(&outside).unwrap().uid(), before);
            }
            Err(e) => assert!(
                !as_root && e.kind() == io::ErrorKind::PermissionDenied,
                "{e}"
            ),
        }
    }

    #[test]
    fn a_file_is_not_a_root() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        fs::write(&file, b"x").unwrap();
        let err = give_to(&file, 0, 0).unwrap_err().to_string();
        assert!(err.contains("not a directory"), "{err}");
    }
}
