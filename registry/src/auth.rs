//! Basic authentication against an htpasswd file (bcrypt entries), as
//! Distribution's `auth.htpasswd` does.
//!
//! The file is re-read when it changes on disk (a Kubernetes Secret update
//! swaps it under a symlink), checked every [`RELOAD_INTERVAL`]. Every failed
//! check costs one bcrypt verification, for an unknown user too, so timing
//! does not tell unknown users from wrong passwords. Successful checks are
//! remembered (keyed by a SHA-256 of the credentials) until the file changes,
//! so a pull of many layers costs one bcrypt verification, not one per
//! request.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use sha2::{Digest as _, Sha256};

/// How often the htpasswd file is checked for changes.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(2);

/// bcrypt cost of the stand-in hash when the file has no entries (`htpasswd -B`'s default).
const DEFAULT_COST: u32 = 10;

/// Why the htpasswd file could not be loaded.
#[derive(Debug, thiserror::Error)]
#[error("auth.htpasswd.path: {path}: {source}")]
pub struct HtpasswdError {
    path: String,
    source: std::io::Error,
}

/// The outcome of checking a request's credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Valid credentials for this user.
    User(String),
    /// No credentials sent.
    Anonymous,
    /// Credentials sent but wrong (or malformed).
    Denied,
}

#[derive(Default)]
struct Users {
    hashes: HashMap<String, String>,
    /// A hash of the same cost as the real ones, verified against for
    /// unknown users so they cost the same as a wrong password.
    stand_in: String,
    /// SHA-256 of `user:password` pairs already verified against `hashes`.
    verified: HashSet<[u8; 32]>,
    stamp: Option<(SystemTime, u64)>,
}

/// An htpasswd user database that follows its file.
pub struct Htpasswd {
    path: PathBuf,
    realm: String,
    users: RwLock<Users>,
}

fn file_stamp(path: &Path) -> std::io::Result<(SystemTime, u64)> {
    let meta = std::fs::metadata(path)?;
    Ok((meta.modified()?, meta.len()))
}

/// Parses htpasswd lines `user:$2y$...`; other hash kinds are skipped with a warning.
fn parse(text: &str) -> HashMap<String, String> {
    let mut users = HashMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match line.split_once(':') {
            Some((user, hash)) if hash.starts_with("$2") => {
                users.insert(user.to_owned(), hash.to_owned());
            }
            // Never log the line: it holds a password hash.
            _ => tracing::warn!(
                line = n + 1,
                "htpasswd: skipping an entry that is not user:bcrypt-hash"
            ),
        }
    }
    users
}

impl Htpasswd {
    /// Loads the file at `path`.
    pub fn load(path: &Path, realm: &str) -> Result<Arc<Htpasswd>, HtpasswdError> {
        let db = Htpasswd {
            path: path.to_owned(),
            realm: realm.to_owned(),
            users: RwLock::default(),
        };
        db.reload().map_err(|source| HtpasswdError {
            path: path.display().to_string(),
            source,
        })?;
        Ok(Arc::new(db))
    }

    /// The realm for the `WWW-Authenticate` challenge.
    pub fn realm(&self) -> &str {
        &self.realm
    }

    /// Re-reads the file if its modification time or size changed.
    pub fn reload(&self) -> std::io::Result<bool> {
        let stamp = file_stamp(&self.path)?;
        if self.users.read().unwrap_or_else(|e| e.into_inner()).stamp == Some(stamp) {
            return Ok(false);
        }
        let hashes = parse(&std::fs::read_to_string(&self.path)?);
        let count = hashes.len();
        let cost = hashes
            .values()
            .find_map(|h| h.get(4..6)?.parse().ok())
            .unwrap_or(DEFAULT_COST);
        let stand_in =
            bcrypt::hash(rand::random::<u64>().to_string(), cost).map_err(std::io::Error::other)?;
        *self.users.write().unwrap_or_else(|e| e.into_inner()) = Users {
            hashes,
            stand_in,
            verified: HashSet::new(),
            stamp: Some(stamp),
        };
        tracing::info!(users = count, path = %self.path.display(), "htpasswd loaded");
        Ok(true)
    }

    /// Keeps the database in step with its file until the task is dropped.
    pub async fn follow_file(self: Arc<Self>) {
        crate::reload::follow("htpasswd", RELOAD_INTERVAL, move || self.reload()).await
    }

    /// Checks an `Authorization` header value. Runs bcrypt, so call it off
    /// the async executor threads.
    pub fn check(&self, authorization: Option<&str>) -> Verdict {
        let Some(header) = authorization else {
            return Verdict::Anonymous;
        };
        let Some((user, password)) = decode_basic(header) else {
            return Verdict::Denied;
        };
        // Clients without credentials answer a challenge with empty ones.
        if user.is_empty() && password.is_empty() {
            return Verdict::Anonymous;
        }
        let key: [u8; 32] = Sha256::digest(format!("{user}:{password}").as_bytes()).into();
        let (hash, stand_in) = {
            let users = self.users.read().unwrap_or_else(|e| e.into_inner());
            if users.verified.contains(&key) {
                return Verdict::User(user);
            }
            (users.hashes.get(&user).cloned(), users.stand_in.clone())
        };
        let known = hash.is_some();
        let ok = bcrypt::verify(&password, hash.as_deref().unwrap_or(&stand_in)).unwrap_or(false)
            && known;
        if !ok {
            return Verdict::Denied;
        }
        let mut users = self.users.write().unwrap_or_else(|e| e.into_inner());
        // Remember only while the same hash is in force.
        if users.hashes.get(&user) == hash.as_ref() {
            users.verified.insert(key);
        }
        Verdict::User(user)
    }
}

/// Splits `Basic base64(user:password)`.
fn decode_basic(header: &str) -> Option<(String, String)> {
    let (scheme, encoded) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(user: &str, password: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        )
    }

    #[test]
    fn checks_and_follows_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("htpasswd");
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        std::fs::write(&path, format!("alice:{hash}\nbad line\n")).unwrap();
        let db = Htpasswd::load(&path, "r").unwrap();
        assert_eq!(
            db.check(Some(&basic("alice", "s3cret"))),
            Verdict::User("alice".into())
        );
        assert_eq!(
            db.check(Some(&basic("alice", "s3cret"))),
            Verdict::User("alice".into())
        );
        assert_eq!(db.check(Some(&basic("alice", "wrong"))), Verdict::Denied);
        assert_eq!(db.check(Some(&basic("bob", "s3cret"))), Verdict::Denied);
        assert_eq!(db.check(Some("Bearer x")), Verdict::Denied);
        assert_eq!(db.check(None), Verdict::Anonymous);
        assert_eq!(db.check(Some(&basic("", ""))), Verdict::Anonymous);

        let new_hash = bcrypt::hash("rotated", 4).unwrap();
        std::fs::write(&path, format!("alice:{new_hash}\nbob:{new_hash}\n")).unwrap();
        // Force a different stamp even on coarse-mtime filesystems.
        let later = SystemTime::now() + Duration::from_secs(5);
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(later)
            .unwrap();
        assert!(db.reload().unwrap());
        assert_eq!(db.check(Some(&basic("alice", "s3cret"))), Verdict::Denied);
        assert_eq!(
            db.check(Some(&basic("bob", "rotated"))),
            Verdict::User("bob".into())
        );
    }
}
