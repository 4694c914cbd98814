//! The cache's files: `<path>/blobs/<algorithm>/<hex>` holds one verified
//! blob each, `<path>/spool/` holds fills under way.
//!
//! An entry appears only by renaming a fill's spool file, after its bytes
//! matched the digest and were synced, with the directory synced after the
//! rename; both live below one path, so the rename is atomic. A process
//! killed mid-fill therefore leaves at worst a spool file, which the next
//! start deletes, never a partial entry. An entry's file modification time
//! is its last use, so the LRU order survives a restart without a sidecar.

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::digest::{Digest, Hasher};

/// Bytes hashed per read when checking an entry.
const VERIFY_CHUNK: usize = 1024 * 1024;

/// Why an entry cannot be served.
#[derive(Debug, thiserror::Error)]
pub(super) enum EntryError {
    /// The file is not the size the index recorded (truncated or replaced).
    #[error("{path} holds {found} bytes, not {expected}")]
    WrongSize {
        /// The file.
        path: PathBuf,
        /// The recorded size.
        expected: u64,
        /// The file's size.
        found: u64,
    },
    /// The file's bytes do not match its digest.
    #[error("{path} hashes to {actual}")]
    WrongDigest {
        /// The file.
        path: PathBuf,
        /// What its bytes hash to.
        actual: Digest,
    },
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
}

/// An entry found on disk at start.
#[derive(Debug)]
pub(super) struct Found {
    /// The blob's digest, from the file's name.
    pub digest: Digest,
    /// The file's size.
    pub size: u64,
    /// Its last use (the file's modification time).
    pub last_used: SystemTime,
}

/// Where a cache keeps its files.
#[derive(Debug, Clone)]
pub(super) struct Disk {
    blobs: PathBuf,
    spool: PathBuf,
}

impl Disk {
    /// The layout below `root`.
    pub fn new(root: &Path) -> Disk {
        Disk {
            blobs: root.join("blobs"),
            spool: root.join("spool"),
        }
    }

    /// The directory for spool files.
    pub fn spool(&self) -> &Path {
        &self.spool
    }

    /// The file of the entry for `digest`.
    pub fn path(&self, digest: &Digest) -> PathBuf {
        self.blobs
            .join(digest.algorithm().name())
            .join(digest.hex())
    }

    /// Every entry on disk. Files whose names are no digest (nothing this
    /// cache writes) are deleted.
    pub fn scan(&self) -> io::Result<Vec<Found>> {
        fs::create_dir_all(&self.blobs)?;
        let mut found = Vec::new();
        for algorithm in fs::read_dir(&self.blobs)? {
            let algorithm = algorithm?;
            if !algorithm.file_type()?.is_dir() {
                fs::remove_file(algorithm.path())?;
                continue;
            }
            let name = algorithm.file_name().to_string_lossy().into_owned();
            for file in fs::read_dir(algorithm.path())? {
                let file = file?;
                let meta = file.metadata()?;
                let digest = format!("{name}:{}", file.file_name().to_string_lossy())
                    .parse::<Digest>()
                    .ok()
                    .filter(|_| meta.is_file());
                match digest {
                    Some(digest) => found.push(Found {
                        digest,
                        size: meta.len(),
                        last_used: meta.modified()?,
                    }),
                    None if meta.is_file() => fs::remove_file(file.path())?,
                    None => {}
                }
            }
        }
        Ok(found)
    }

    /// Makes the verified spool file at `spool` the entry of `digest`.
    pub fn keep(&self, spool: &Path, digest: &Digest) -> io::Result<()> {
        let path = self.path(digest);
        let dir = path.parent().unwrap_or(&self.blobs);
        fs::create_dir_all(dir)?;
        fs::rename(spool, &path)?;
        File::open(dir)?.sync_all()
    }

    /// Deletes the entry of `digest`; one already gone is no error.
    pub fn remove(&self, digest: &Digest) -> io::Result<()> {
        match fs::remove_file(self.path(digest)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Opens the entry of `digest` for reading, checking its size and,
    /// with `verify`, that its bytes hash to the digest. Records the use
    /// in its modification time.
    pub fn open(&self, digest: &Digest, size: u64, verify: bool) -> Result<File, EntryError> {
        let path = self.path(digest);
        let io = |source| EntryError::Io {
            path: path.clone(),
            source,
        };
        let mut file = File::open(&path).map_err(io)?;
        let found = file.metadata().map_err(io)?.len();
        if found != size {
            return Err(EntryError::WrongSize {
                path,
                expected: size,
                found,
            });
        }
        if verify {
            let mut hasher = Hasher::new(digest.algorithm());
            let mut buffer = vec![0; VERIFY_CHUNK];
            loop {
                match file.read(&mut buffer) {
                    Ok(0) => break,
                    Ok(n) => hasher.update(&buffer[..n]),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(io(e)),
                }
            }
            let actual = hasher.finish();
            if actual != *digest {
                return Err(EntryError::WrongDigest { path, actual });
            }
        }
        // The last use orders eviction after a restart; failing to record
        // it only makes the entry look older.
        if let Err(e) = file.set_modified(SystemTime::now()) {
            tracing::debug!(path = %path.display(), error = %e, "could not record a cache entry's use");
        }
        Ok(file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Algorithm;

    #[test]
    fn entries_are_kept_found_checked_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let disk = Disk::new(dir.path());
        assert!(disk.scan().unwrap().is_empty());
        fs::create_dir_all(disk.spool()).unwrap();
        let bytes = b"some blob".to_vec();
        let digest = Digest::of(Algorithm::Sha256, &bytes);
        let spool = disk.spool().join("x");
        fs::write(&spool, &bytes).unwrap();
        disk.keep(&spool, &digest).unwrap();
        assert!(!spool.exists());
        // Junk in the blobs directory goes at the next scan.
        fs::write(disk.path(&digest).with_file_name("not-a-digest"), b"?").unwrap();
        let found = disk.scan().unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(
            (found[0].digest.clone(), found[0].size),
            (digest.clone(), 9)
        );
        assert_eq!(
            fs::read_dir(disk.path(&digest).parent().unwrap())
                .unwrap()
                .count(),
            1
        );
        assert!(disk.open(&digest, 9, true).is_ok());
        assert!(matches!(
            disk.open(&digest, 10, false),
            Err(EntryError::WrongSize { found: 9, .. })
        ));
        fs::write(disk.path(&digest), b"some blub").unwrap();
        assert!(
            disk.open(&digest, 9, false).is_ok(),
            "not hashed without verify"
        );
        assert!(matches!(
            disk.open(&digest, 9, true),
            Err(EntryError::WrongDigest { .. })
        ));
        disk.remove(&digest).unwrap();
        disk.remove(&digest).unwrap();
        assert!(matches!(
            disk.open(&digest, 9, false),
            Err(EntryError::Io { .. })
        ));
    }
}
