//! `berth-registry containerd-hosts`: points a node's containerd at the
//! node's berth-registry by writing `DIR/<host>/hosts.toml` files
//! (containerd's registry host configuration), and takes them back.
//!
//! Files of other tools are never clobbered. When a host already has a
//! `hosts.toml` that is not Berth's, it is kept (hard-linked, so bytes, mode,
//! owner and times stay) as [`BACKUP_NAME`] beside Berth's file and renamed
//! back on removal. A directory holding only certificates in Docker's
//! pattern keeps them in force: Berth's file names them for the server,
//! since containerd reads nothing but `hosts.toml` once there is one.
//! The first line of each file Berth writes names its owner
//! and whether Berth created the directory (see [`file`]); nothing else is
//! recorded anywhere, so the hosts directory alone says what to undo.
//!
//! Every change is atomic: an `apply` first stages every new file under a
//! temporary name (a staged directory for hosts that had none), so a
//! directory that cannot be written fails the run before anything is
//! visible; then each is put in place by one `rename` (after `fsync`). A
//! crash leaves each host either as it was or as intended, and temporaries
//! whose names are Berth's are cleaned up by the next run.

mod file;
mod names;

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

pub use names::{HostName, Mirror, Owner, RegistryUrl};

use file::{DockerCerts, Marker};

/// containerd's file name in each host directory.
pub const HOSTS_FILE: &str = "hosts.toml";
/// Where another tool's `hosts.toml` is kept while Berth's is in place.
pub const BACKUP_NAME: &str = "hosts.toml.berth-original";
/// A file being staged inside an existing host directory.
const STAGED_FILE: &str = ".hosts.toml.berth-new";
/// Prefix of a host directory being staged under the hosts directory.
const STAGED_DIR_PREFIX: &str = ".berth-new-";
/// Prefix of a host directory being removed under the hosts directory.
const REMOVED_DIR_PREFIX: &str = ".berth-old-";
/// Mode of the files and directories Berth creates.
const FILE_MODE: u32 = 0o644;
const DIR_MODE: u32 = 0o755;
/// How much of a `hosts.toml` is read to find its marker line.
const FIRST_LINE_LIMIT: u64 = 4096;

/// Why `containerd-hosts` refused or failed. Each names what it is about.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A host name that is not `host[:port]` or `_default`.
    #[error("invalid host {host:?}: {reason}")]
    InvalidHost {
        /// The name as given.
        host: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// An owner that is not `NAMESPACE/NAME`.
    #[error("invalid owner {0:?}: expected NAMESPACE/NAME (Kubernetes object names)")]
    InvalidOwner(String),
    /// A URL that is not an `http://` or `https://` registry URL.
    #[error("invalid URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// The same host named twice.
    #[error("host {0} is named more than once")]
    DuplicateHost(HostName),
    /// A host whose `hosts.toml` another owner wrote.
    #[error(
        "{path}: host {host} is configured by {owner}, not by {requested}; nothing was changed"
    )]
    OwnedByOther {
        /// The host.
        host: String,
        /// Its `hosts.toml`.
        path: PathBuf,
        /// The owner named in that file.
        owner: String,
        /// The owner of this run.
        requested: Owner,
    },
    /// A Berth marker line that cannot be read.
    #[error("{path}: unreadable berth-registry marker line: {reason}; nothing was changed")]
    Marker {
        /// The file.
        path: PathBuf,
        /// What is wrong with its first line.
        reason: &'static str,
    },
    /// A kept original whose `hosts.toml` is not Berth's: something else
    /// changed the directory since Berth wrote it.
    #[error(
        "{path}: a kept original exists but {HOSTS_FILE} beside it is not berth-registry's; move it back or delete it; nothing was changed"
    )]
    StrayBackup {
        /// The backup file.
        path: PathBuf,
    },
    /// A directory containerd reads before the host's own (`HOST_PORT_`
    /// before `HOST:PORT`): a file Berth wrote would never be read.
    #[error(
        "{path}: containerd reads this directory instead of {host}, so a hosts.toml for {host} would be ignored; merge it into {host} or remove it; nothing was changed"
    )]
    Shadowed {
        /// The directory containerd prefers.
        path: PathBuf,
        /// The host.
        host: HostName,
    },
    /// The hosts directory, or a host entry in it, is not a directory.
    #[error("{0}: not a directory")]
    NotADirectory(PathBuf),
    /// A filesystem operation failed.
    #[error("{path}: cannot {action}: {cause}")]
    Io {
        /// The path the operation was on.
        path: PathBuf,
        /// What was being done.
        action: &'static str,
        /// The system's error, part of the message (not a separate source,
        /// so the one-line message does not repeat it).
        cause: io::Error,
    },
}

/// A `map_err` for I/O on `path`.
fn io_err<'a>(path: &'a Path, action: &'static str) -> impl FnOnce(io::Error) -> Error + 'a {
    move |cause| Error::Io {
        path: path.to_path_buf(),
        action,
        cause,
    }
}

/// What `apply` is to write.
#[derive(Debug, Clone)]
pub struct ApplyRequest {
    /// The hosts directory (containerd's `config_path`).
    pub hosts_dir: PathBuf,
    /// This node's registry, e.g. `http://10.0.0.5:5000`.
    pub endpoint: RegistryUrl,
    /// Who writes: the Registry's `NAMESPACE/NAME`.
    pub owner: Owner,
    /// The upstream hosts pulled through the endpoint.
    pub mirrors: Vec<Mirror>,
    /// The name pods use for images pushed to this Registry.
    pub own_name: Option<HostName>,
}

/// One thing a run did, for its output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The file or directory.
    pub path: PathBuf,
    /// What happened to it.
    pub what: &'static str,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.what)
    }
}

/// What a host directory holds before a run.
#[derive(Debug)]
enum Found {
    /// No directory for the host.
    Nothing,
    /// A directory without `hosts.toml`.
    EmptyDir,
    /// Another tool's `hosts.toml`; `linked` when the backup is already a
    /// hard link of it (a run stopped between linking and renaming).
    Foreign { linked: bool },
    /// Berth's file, with its marker and bytes.
    Berth { marker: Marker, content: Vec<u8> },
}

/// Writes the `hosts.toml` of every host `request` names, keeps other
/// tools' files, and removes what the same owner wrote for hosts it no
/// longer names. Refuses, changing nothing, when a host belongs to another
/// owner or a directory cannot be written.
pub fn apply(request: &ApplyRequest) -> Result<Vec<Change>, Error> {
    let dir = &request.hosts_dir;
    let mut wanted: BTreeMap<HostName, Option<&RegistryUrl>> = BTreeMap::new();
    let named = request
        .mirrors
        .iter()
        .map(|m| (&m.host, m.server.as_ref()))
        .chain(
            request
                .own_name
                .iter()
                .map(|h| (h, Some(&request.endpoint))),
        );
    for (host, server) in named {
        if wanted.insert(host.clone(), server).is_some() {
            return Err(Error::DuplicateHost(host.clone()));
        }
    }
    check_dir(dir)?;
    clean_leftovers(dir)?;
    let mine = owned_by(dir, &request.owner)?;

    // Plan and stage everything before any visible change.
    let mut staged = Vec::new();
    let mut changes = Vec::new();
    let stage_all = |staged: &mut Vec<Staged>, changes: &mut Vec<Change>| {
        for (host, server) in &wanted {
            if let Some(preferred) = host.containerd_port_dir() {
                let path = dir.join(preferred);
                if path.exists() {
                    return Err(Error::Shadowed {
                        path,
                        host: host.clone(),
                    });
                }
            }
            let host_dir = dir.join(host.as_str());
            let found = inspect(&host_dir, &request.owner, host)?;
            let created_dir = match &found {
                Found::Nothing => true,
                Found::Berth { marker, .. } => marker.created_dir,
                Found::EmptyDir | Found::Foreign { .. } => false,
            };
            // Certificates containerd took from the directory while it had
            // no hosts.toml of another tool's must stay in force.
            let certs = match &found {
                Found::EmptyDir => docker_certs(&host_dir)?,
                Found::Berth { .. } if !host_dir.join(BACKUP_NAME).exists() => {
                    docker_certs(&host_dir)?
                }
                _ => DockerCerts::default(),
            };
            let text = file::render(
                host,
                &request.owner,
                created_dir,
                &request.endpoint,
                *server,
                &certs,
            );
            if let Found::Berth { content, .. } = &found
                && *content == text.as_bytes()
            {
                changes.push(Change {
                    path: host_dir.join(HOSTS_FILE),
                    what: "unchanged",
                });
                continue;
            }
            staged.push(stage(dir, host, found, &text)?);
        }
        Ok::<(), Error>(())
    };
    if let Err(e) = stage_all(&mut staged, &mut changes) {
        for s in &staged {
            s.discard();
        }
        return Err(e);
    }
    for s in staged {
        changes.push(s.commit(dir)?);
    }
    for (host, marker) in mine {
        if !wanted.contains_key(&host) {
            changes.extend(take_back(dir, &host, &marker)?);
        }
    }
    Ok(changes)
}

/// Takes back everything `owner` wrote under `hosts_dir`: Berth's files go,
/// kept originals come back, directories Berth created are removed.
pub fn remove(hosts_dir: &Path, owner: &Owner) -> Result<Vec<Change>, Error> {
    check_dir(hosts_dir)?;
    clean_leftovers(hosts_dir)?;
    let mut changes = Vec::new();
    for (host, marker) in owned_by(hosts_dir, owner)? {
        changes.extend(take_back(hosts_dir, &host, &marker)?);
    }
    Ok(changes)
}

fn check_dir(dir: &Path) -> Result<(), Error> {
    let meta = fs::metadata(dir).map_err(io_err(dir, "read the hosts directory"))?;
    if meta.is_dir() {
        Ok(())
    } else {
        Err(Error::NotADirectory(dir.to_path_buf()))
    }
}

/// Removes temporaries an interrupted run left (only names that are Berth's).
fn clean_leftovers(dir: &Path) -> Result<(), Error> {
    for entry in fs::read_dir(dir).map_err(io_err(dir, "list the hosts directory"))? {
        let entry = entry.map_err(io_err(dir, "list the hosts directory"))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let path = entry.path();
        if name.starts_with(STAGED_DIR_PREFIX) || name.starts_with(REMOVED_DIR_PREFIX) {
            fs::remove_dir_all(&path)
                .map_err(io_err(&path, "remove an interrupted run's leftover"))?;
        } else if path.is_dir() {
            let staged = path.join(STAGED_FILE);
            match fs::remove_file(&staged) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    return Err(io_err(&staged, "remove an interrupted run's leftover")(e));
                }
                _ => {}
            }
        }
    }
    Ok(())
}

/// The hosts whose `hosts.toml` `owner` wrote, with their markers.
fn owned_by(dir: &Path, owner: &Owner) -> Result<Vec<(HostName, Marker)>, Error> {
    let mut mine = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err(dir, "list the hosts directory"))? {
        let entry = entry.map_err(io_err(dir, "list the hosts directory"))?;
        let path = entry.path().join(HOSTS_FILE);
        if !entry.path().is_dir() {
            continue;
        }
        if let Some(marker) = read_marker(&path)?
            && marker.owner == owner.as_str()
            && let Ok(host) = entry.file_name().to_string_lossy().parse::<HostName>()
        {
            mine.push((host, marker));
        }
    }
    Ok(mine)
}

/// The marker of the file at `path`, `None` when it is absent or not Berth's.
fn read_marker(path: &Path) -> Result<Option<Marker>, Error> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(path, "read")(e)),
    };
    let mut head = Vec::new();
    file.take(FIRST_LINE_LIMIT)
        .read_to_end(&mut head)
        .map_err(io_err(path, "read"))?;
    let head = String::from_utf8_lossy(&head);
    let first = head.lines().next().unwrap_or_default();
    match Marker::parse(first) {
        None => Ok(None),
        Some(Ok(marker)) => Ok(Some(marker)),
        Some(Err(reason)) => Err(Error::Marker {
            path: path.to_path_buf(),
            reason,
        }),
    }
}

/// What `host_dir` holds, refusing another owner's file and a stray backup.
fn inspect(host_dir: &Path, owner: &Owner, host: &HostName) -> Result<Found, Error> {
    match fs::metadata(host_dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Found::Nothing),
        Err(e) => return Err(io_err(host_dir, "read")(e)),
        Ok(meta) if !meta.is_dir() => return Err(Error::NotADirectory(host_dir.to_path_buf())),
        Ok(_) => {}
    }
    let path = host_dir.join(HOSTS_FILE);
    let backup = host_dir.join(BACKUP_NAME);
    let backup_meta = match fs::symlink_metadata(&backup) {
        Ok(meta) => Some(meta),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(io_err(&backup, "read")(e)),
    };
    if let Some(marker) = read_marker(&path)? {
        if marker.owner != owner.as_str() {
            return Err(Error::OwnedByOther {
                host: host.to_string(),
                path,
                owner: marker.owner,
                requested: owner.clone(),
            });
        }
        let content = fs::read(&path).map_err(io_err(&path, "read"))?;
        return Ok(Found::Berth { marker, content });
    }
    let meta = match fs::symlink_metadata(&path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return match backup_meta {
                Some(_) => Err(Error::StrayBackup { path: backup }),
                None => Ok(Found::EmptyDir),
            };
        }
        Err(e) => return Err(io_err(&path, "read")(e)),
    };
    match backup_meta {
        None => Ok(Found::Foreign { linked: false }),
        Some(b) if b.dev() == meta.dev() && b.ino() == meta.ino() => {
            Ok(Found::Foreign { linked: true })
        }
        Some(_) => Err(Error::StrayBackup { path: backup }),
    }
}

/// The certificate files of `host_dir` in Docker's pattern.
fn docker_certs(host_dir: &Path) -> Result<DockerCerts, Error> {
    let mut names = Vec::new();
    for entry in fs::read_dir(host_dir).map_err(io_err(host_dir, "list"))? {
        let entry = entry.map_err(io_err(host_dir, "list"))?;
        if entry.file_type().is_ok_and(|t| !t.is_dir()) {
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    Ok(DockerCerts::from_names(&names))
}

/// A new `hosts.toml` written under a temporary name, not yet visible.
#[derive(Debug)]
struct Staged {
    host: HostName,
    /// The staged file, or the staged directory for a host without one.
    temp: PathBuf,
    found: Found,
}

fn stage(dir: &Path, host: &HostName, found: Found, text: &str) -> Result<Staged, Error> {
    let temp = match found {
        Found::Nothing => {
            let temp = dir.join(format!("{STAGED_DIR_PREFIX}{host}"));
            fs::create_dir(&temp).map_err(io_err(&temp, "create a directory"))?;
            let staged = Staged {
                host: host.clone(),
                temp: temp.clone(),
                found,
            };
            let result = fs::set_permissions(&temp, fs::Permissions::from_mode(DIR_MODE))
                .map_err(io_err(&temp, "set the mode of"))
                .and_then(|()| write_synced(&temp.join(HOSTS_FILE), text));
            if let Err(e) = result {
                staged.discard();
                return Err(e);
            }
            return Ok(staged);
        }
        _ => dir.join(host.as_str()).join(STAGED_FILE),
    };
    write_synced(&temp, text).inspect_err(|_| {
        let _ = fs::remove_file(&temp);
    })?;
    Ok(Staged {
        host: host.clone(),
        temp,
        found,
    })
}

impl Staged {
    /// Removes the staged file or directory (best effort: it is Berth's
    /// temporary, and the next run removes it too).
    fn discard(&self) {
        let _ = match self.found {
            Found::Nothing => fs::remove_dir_all(&self.temp),
            _ => fs::remove_file(&self.temp),
        };
    }

    /// Puts the staged file in place with one rename, keeping another tool's
    /// file as [`BACKUP_NAME`] first.
    fn commit(self, dir: &Path) -> Result<Change, Error> {
        let host_dir = dir.join(self.host.as_str());
        let path = host_dir.join(HOSTS_FILE);
        match self.found {
            Found::Nothing => {
                fs::rename(&self.temp, &host_dir).map_err(io_err(&host_dir, "create"))?;
                sync_dir(dir)?;
                return Ok(Change {
                    path,
                    what: "written (directory created)",
                });
            }
            Found::Foreign { linked: false } => {
                let backup = host_dir.join(BACKUP_NAME);
                fs::hard_link(&path, &backup).map_err(io_err(&backup, "keep the original as"))?;
            }
            _ => {}
        }
        fs::rename(&self.temp, &path).map_err(io_err(&path, "replace"))?;
        sync_dir(&host_dir)?;
        Ok(Change {
            path,
            what: match self.found {
                Found::Foreign { .. } => "written (original kept as hosts.toml.berth-original)",
                Found::Berth { .. } => "updated",
                _ => "written",
            },
        })
    }
}

/// Undoes what the file of `host` did: the kept original comes back, or
/// Berth's file goes (with the directory, when Berth created it and it
/// holds nothing else).
fn take_back(dir: &Path, host: &HostName, marker: &Marker) -> Result<Vec<Change>, Error> {
    let host_dir = dir.join(host.as_str());
    let path = host_dir.join(HOSTS_FILE);
    let backup = host_dir.join(BACKUP_NAME);
    if backup.exists() {
        fs::rename(&backup, &path).map_err(io_err(&path, "restore the original of"))?;
        sync_dir(&host_dir)?;
        return Ok(vec![Change {
            path,
            what: "original restored",
        }]);
    }
    if marker.created_dir {
        let only_ours = fs::read_dir(&host_dir)
            .map_err(io_err(&host_dir, "list"))?
            .filter_map(Result::ok)
            .all(|e| e.file_name() == HOSTS_FILE);
        if only_ours {
            // Out of containerd's sight in one step, then deleted.
            let doomed = dir.join(format!("{REMOVED_DIR_PREFIX}{host}"));
            fs::rename(&host_dir, &doomed).map_err(io_err(&host_dir, "remove"))?;
            sync_dir(dir)?;
            fs::remove_dir_all(&doomed).map_err(io_err(&doomed, "remove"))?;
            return Ok(vec![Change {
                path: host_dir,
                what: "removed (Berth had created it)",
            }]);
        }
    }
    fs::remove_file(&path).map_err(io_err(&path, "remove"))?;
    sync_dir(&host_dir)?;
    Ok(vec![Change {
        path,
        what: if marker.created_dir {
            "removed (the directory holds other files now: kept)"
        } else {
            "removed"
        },
    }])
}

/// Writes `text` to a new file at `path` (mode 0644) and flushes it to disk.
fn write_synced(path: &Path, text: &str) -> Result<(), Error> {
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(FILE_MODE)
        .open(path)
        .map_err(io_err(path, "write"))?;
    file.set_permissions(fs::Permissions::from_mode(FILE_MODE))
        .map_err(io_err(path, "set the mode of"))?;
    file.write_all(text.as_bytes())
        .map_err(io_err(path, "write"))?;
    file.sync_all().map_err(io_err(path, "write"))
}

/// Flushes a directory's entries (a rename in it) to disk.
fn sync_dir(dir: &Path) -> Result<(), Error> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir, "sync"))
}

#[cfg(test)]
mod tests;
