//! Blob upload sessions: start, append (chunked or streamed), status,
//! complete, cancel.
//!
//! A session's state is its files in storage (`_uploads/<id>/data` and
//! `startedat`), so any instance sharing the backend can continue it. Each
//! instance keeps, per session, a lock (requests for one session apply in
//! order) and a running SHA-256 as a cache: when it matches the data's size the
//! digest is known at completion without re-reading; otherwise the data is
//! re-hashed from storage. Content becomes a blob only by an atomic move after
//! its digest is verified.
//!
//! That per-instance state is bounded: a session's entry lives only while a
//! request holds its lock or while it caches a running hash, so a request for
//! an id that names no session leaves nothing behind, and at most
//! [`MAX_CACHED_HASHES`] hashes are cached (past that, idle ones are dropped
//! and those sessions are re-hashed from storage when they complete).

use std::collections::HashMap;
use std::io;
use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::{Stream, StreamExt, TryStreamExt};
use tokio::sync::OwnedMutexGuard;

use crate::digest::{Algorithm, Digest, Hasher};
use crate::error::{Code, RegistryError, Result};
use crate::layout;
use crate::names::RepoName;

use super::Registry;

/// Longest upload id accepted in a URL.
const MAX_UPLOAD_ID_LEN: usize = 128;

/// The running hash of a session's data, valid while `offset` equals its size.
struct RunningHash {
    offset: u64,
    hasher: Hasher,
}

type Session = Arc<tokio::sync::Mutex<Option<RunningHash>>>;

/// Most running hashes an instance caches for sessions no request holds.
const MAX_CACHED_HASHES: usize = 4096;

/// Per-instance state of upload sessions: the lock and cached running hash
/// of each session in use here.
#[derive(Default)]
pub(super) struct Sessions {
    sessions: Mutex<HashMap<String, Session>>,
}

impl Sessions {
    fn map(&self) -> MutexGuard<'_, HashMap<String, Session>> {
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits for, and takes, this instance's lock on session `id`.
    async fn lock(&self, id: &str) -> SessionGuard<'_> {
        let session = {
            let mut map = self.map();
            if map.len() >= MAX_CACHED_HASHES && !map.contains_key(id) {
                // Only the map refers to an idle entry: drop those hashes.
                map.retain(|_, session| Arc::strong_count(session) > 1);
            }
            map.entry(id.to_owned()).or_default().clone()
        };
        SessionGuard {
            sessions: self,
            id: id.to_owned(),
            hash: session.lock_owned().await,
        }
    }

    fn forget(&self, id: &str) {
        self.map().remove(id);
    }

    /// How many sessions have an entry.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.map().len()
    }
}

/// A held session lock, giving access to its running hash. Released, it
/// removes the session's entry unless the entry caches a hash or another
/// request waits for it.
struct SessionGuard<'a> {
    sessions: &'a Sessions,
    id: String,
    hash: OwnedMutexGuard<Option<RunningHash>>,
}

impl Deref for SessionGuard<'_> {
    type Target = Option<RunningHash>;

    fn deref(&self) -> &Self::Target {
        &self.hash
    }
}

impl DerefMut for SessionGuard<'_> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.hash
    }
}

impl Drop for SessionGuard<'_> {
    fn drop(&mut self) {
        if self.hash.is_some() {
            return;
        }
        let mut map = self.sessions.map();
        // With the map locked nobody can take a new reference: the map's and
        // this guard's are the only ones when nobody else waits.
        let unused = map.get(&self.id).is_some_and(|session| {
            Arc::ptr_eq(session, OwnedMutexGuard::mutex(&self.hash))
                && Arc::strong_count(session) == 2
        });
        if unused {
            map.remove(&self.id);
        }
    }
}

/// Where an upload session stands.
#[derive(Debug, Clone)]
pub struct UploadStatus {
    /// The session id.
    pub id: String,
    /// Bytes received so far.
    pub size: u64,
}

/// The outcome of a completed upload.
#[derive(Debug, Clone)]
pub struct UploadCompletion {
    /// The verified digest, now a blob linked into the repository.
    pub digest: Digest,
    /// Its size.
    pub size: u64,
}

/// Whether `id` can name an upload session (Distribution uses UUIDs).
fn valid_upload_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_UPLOAD_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A new upload session id: a random UUID, as Distribution's.
pub(super) fn new_upload_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn unknown_upload(id: &str) -> RegistryError {
    RegistryError::new(Code::BlobUploadUnknown, format!("upload {id:?} is unknown"))
}

impl Registry {
    /// Opens a new upload session in `repo`.
    pub async fn upload_start(&self, repo: &RepoName) -> Result<UploadStatus> {
        self.ensure_writable()?;
        let id = new_upload_id();
        let started = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
        self.storage
            .put_content(&layout::upload_started_at(repo, &id), Bytes::from(started))
            .await?;
        Ok(UploadStatus { id, size: 0 })
    }

    /// The size received so far by a session.
    pub async fn upload_status(&self, repo: &RepoName, id: &str) -> Result<UploadStatus> {
        let _session = self.lock_session(repo, id).await?;
        Ok(UploadStatus {
            id: id.to_owned(),
            size: self.upload_size(repo, id).await?,
        })
    }

    /// Appends `body` to a session. With `start`, the chunk must begin exactly
    /// at the bytes received so far (else RANGE_INVALID).
    pub async fn upload_append<S>(
        &self,
        repo: &RepoName,
        id: &str,
        start: Option<u64>,
        body: S,
    ) -> Result<UploadStatus>
    where
        S: Stream<Item = io::Result<Bytes>> + Send + Unpin,
    {
        self.ensure_writable()?;
        let mut running = self.lock_session(repo, id).await?;
        let size = self.append(repo, id, start, &mut running, body).await?;
        Ok(UploadStatus {
            id: id.to_owned(),
            size,
        })
    }

    /// Completes a session: appends the optional final chunk, verifies the
    /// digest, and moves the data into place as a blob linked into `repo`.
    /// On a digest mismatch the session is discarded and nothing is stored.
    pub async fn upload_complete<S>(
        &self,
        repo: &RepoName,
        id: &str,
        digest: &Digest,
        start: Option<u64>,
        body: Option<S>,
    ) -> Result<UploadCompletion>
    where
        S: Stream<Item = io::Result<Bytes>> + Send + Unpin,
    {
        self.ensure_writable()?;
        let mut running = self.lock_session(repo, id).await?;
        if let Some(body) = body {
            self.append(repo, id, start, &mut running, body).await?;
        }
        let data = layout::upload_data(repo, id);
        self.storage.writer(&data).await?.commit().await?;
        let size = self.upload_size(repo, id).await?;
        let actual = match running.take() {
            Some(h) if h.offset == size && h.hasher.algorithm() == digest.algorithm() => {
                h.hasher.finish()
            }
            _ => self.hash_stored(&data, digest.algorithm()).await?,
        };
        if actual != *digest {
            self.discard_upload(repo, id).await?;
            return Err(RegistryError::new(
                Code::DigestInvalid,
                format!("uploaded content has digest {actual}, not {digest}"),
            ));
        }
        self.touch(digest).await;
        self.publish_blob(digest, &data).await?;
        self.write_link(&layout::layer_link(repo, digest), digest)
            .await?;
        self.discard_upload(repo, id).await?;
        Ok(UploadCompletion {
            digest: digest.clone(),
            size,
        })
    }

    /// Uploads a whole blob in one request (`POST ?digest=`).
    pub async fn upload_monolithic<S>(
        &self,
        repo: &RepoName,
        digest: &Digest,
        body: S,
    ) -> Result<UploadCompletion>
    where
        S: Stream<Item = io::Result<Bytes>> + Send + Unpin,
    {
        let upload = self.upload_start(repo).await?;
        let result = self
            .upload_complete(repo, &upload.id, digest, None, Some(body))
            .await;
        if result.is_err()
            && let Err(e) = self.discard_upload(repo, &upload.id).await
        {
            tracing::warn!(error = %e, upload = %upload.id, "could not discard failed upload");
        }
        result
    }

    /// Cancels a session, deleting what it received.
    pub async fn upload_cancel(&self, repo: &RepoName, id: &str) -> Result<()> {
        self.ensure_writable()?;
        let _session = self.lock_session(repo, id).await?;
        self.discard_upload(repo, id).await
    }

    /// Deletes upload sessions that started more than `age` ago (only counts
    /// them when `dry_run`). Returns how many it found.
    pub async fn purge_uploads(&self, age: Duration, dry_run: bool) -> Result<usize> {
        let now = SystemTime::now();
        let mut purged = 0;
        for (name, children) in self.repository_dirs().await? {
            let Some(repo) =
                RepoName::parse(&name).filter(|_| children.iter().any(|c| c == "_uploads"))
            else {
                continue;
            };
            let ids = match self.storage.list(&layout::uploads_dir(&repo)).await {
                Ok(ids) => ids,
                Err(e) if e.is_not_found() => continue,
                Err(e) => return Err(e.into()),
            };
            for id in ids.into_iter().filter(|id| valid_upload_id(id)) {
                let started = self.upload_started(&repo, &id).await?;
                if started.is_some_and(|t| now.duration_since(t).unwrap_or_default() > age) {
                    purged += 1;
                    if dry_run {
                        tracing::info!(%repo, upload = %id, "would purge upload (dry run)");
                    } else {
                        tracing::info!(%repo, upload = %id, "purging upload");
                        self.discard_upload(&repo, &id).await?;
                    }
                }
            }
        }
        Ok(purged)
    }

    /// When a session started: its `startedat`, else its directory's mtime.
    async fn upload_started(&self, repo: &RepoName, id: &str) -> Result<Option<SystemTime>> {
        let recorded = match self
            .storage
            .get_content(&layout::upload_started_at(repo, id), 256)
            .await
        {
            Ok(text) => std::str::from_utf8(&text)
                .ok()
                .and_then(|t| humantime::parse_rfc3339_weak(t.trim()).ok()),
            Err(e) if e.is_not_found() => None,
            Err(e) => return Err(e.into()),
        };
        if recorded.is_some() {
            return Ok(recorded);
        }
        match self.storage.stat(&layout::upload_dir(repo, id)).await {
            Ok(info) => Ok(Some(info.modified)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Takes this instance's lock on a session that exists in `repo`,
    /// giving access to its running hash.
    async fn lock_session(&self, repo: &RepoName, id: &str) -> Result<SessionGuard<'_>> {
        if !valid_upload_id(id) {
            return Err(unknown_upload(id));
        }
        let guard = self.uploads.lock(id).await;
        if !self.exists(&layout::upload_started_at(repo, id)).await? {
            return Err(unknown_upload(id));
        }
        Ok(guard)
    }

    /// Bytes a session holds, appended so far (possibly by another instance).
    async fn upload_size(&self, repo: &RepoName, id: &str) -> Result<u64> {
        Ok(self
            .storage
            .writer(&layout::upload_data(repo, id))
            .await?
            .size())
    }

    /// Streams `body` onto the session's data, keeping the running hash in step.
    async fn append<S>(
        &self,
        repo: &RepoName,
        id: &str,
        start: Option<u64>,
        running: &mut Option<RunningHash>,
        mut body: S,
    ) -> Result<u64>
    where
        S: Stream<Item = io::Result<Bytes>> + Send + Unpin,
    {
        let mut writer = self.storage.writer(&layout::upload_data(repo, id)).await?;
        let offset = writer.size();
        if let Some(start) = start.filter(|&s| s != offset) {
            return Err(RegistryError::new(
                Code::RangeInvalid,
                format!("chunk starts at {start} but the upload has {offset} bytes"),
            ));
        }
        let mut hash = running.take().filter(|h| h.offset == offset);
        if offset == 0 && hash.is_none() {
            hash = Some(RunningHash {
                offset: 0,
                hasher: Hasher::new(Algorithm::Sha256),
            });
        }
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| {
                RegistryError::new(Code::BlobUploadInvalid, format!("reading upload body: {e}"))
            })?;
            if let Some(h) = hash.as_mut() {
                h.hasher.update(&chunk);
            }
            writer.write(chunk).await?;
        }
        let size = writer.size();
        writer.close().await?;
        *running = hash.map(|h| RunningHash {
            offset: size,
            hasher: h.hasher,
        });
        Ok(size)
    }

    /// Hashes stored content from the start (a missing file is empty).
    async fn hash_stored(&self, path: &str, algorithm: Algorithm) -> Result<Digest> {
        let mut hasher = Hasher::new(algorithm);
        match self.storage.reader(path, 0, None).await {
            Ok(mut stream) => {
                while let Some(chunk) =
                    stream
                        .try_next()
                        .await
                        .map_err(|e| crate::storage::StorageError::Io {
                            path: path.to_owned(),
                            source: e,
                        })?
                {
                    hasher.update(&chunk);
                }
            }
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
        Ok(hasher.finish())
    }

    /// Makes verified upload data the blob `digest` (unless it already exists).
    async fn publish_blob(&self, digest: &Digest, data: &str) -> Result<()> {
        if self.stored_blob_size(digest).await?.is_some() {
            return Ok(());
        }
        Ok(self
            .storage
            .rename(data, &layout::blob_data(digest))
            .await?)
    }

    async fn discard_upload(&self, repo: &RepoName, id: &str) -> Result<()> {
        self.uploads.forget(id);
        self.delete_upload_dir(repo, id).await
    }

    /// Deletes an upload session's directory, its data first by the data's
    /// own path: an object store finds the open multipart uploads of the
    /// data by listing uploads below the path deleted, and MinIO lists them
    /// by exact object name only, so deleting the directory alone would
    /// leave them open there.
    pub(crate) async fn delete_upload_dir(&self, repo: &RepoName, id: &str) -> Result<()> {
        self.delete_if_exists(&layout::upload_data(repo, id))
            .await?;
        self.delete_if_exists(&layout::upload_dir(repo, id)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upload_ids() {
        let id = new_upload_id();
        assert_eq!(id.len(), 36);
        assert!(valid_upload_id(&id));
        for bad in ["", "../x", "a/b", "a.b", &"a".repeat(129)] {
            assert!(!valid_upload_id(bad), "{bad}");
        }
    }

    fn registry(root: &std::path::Path) -> Registry {
        let driver = crate::storage::FilesystemDriver::new(root);
        Registry::new(Arc::new(driver), super::super::Options::default())
    }

    #[tokio::test]
    async fn unknown_ids_leave_no_state() {
        let dir = tempfile::tempdir().unwrap();
        let registry = registry(dir.path());
        let repo = RepoName::parse("a/b").unwrap();
        for _ in 0..100 {
            let id = new_upload_id();
            let status = registry.upload_status(&repo, &id).await.unwrap_err();
            assert_eq!(status.code, Code::BlobUploadUnknown);
            let body = futures_util::stream::iter([Ok(Bytes::from_static(b"x"))]);
            let append = registry.upload_append(&repo, &id, None, body).await;
            assert_eq!(append.unwrap_err().code, Code::BlobUploadUnknown);
        }
        assert_eq!(registry.uploads.len(), 0);
    }

    #[tokio::test]
    async fn sessions_keep_only_cached_hashes() {
        let dir = tempfile::tempdir().unwrap();
        let registry = registry(dir.path());
        let repo = RepoName::parse("a").unwrap();
        let upload = registry.upload_start(&repo).await.unwrap();
        registry.upload_status(&repo, &upload.id).await.unwrap();
        assert_eq!(registry.uploads.len(), 0, "a status read caches nothing");
        let body = futures_util::stream::iter([Ok(Bytes::from_static(b"abc"))]);
        registry
            .upload_append(&repo, &upload.id, None, body)
            .await
            .unwrap();
        assert_eq!(registry.uploads.len(), 1, "an append caches its hash");
        let digest = Digest::of(Algorithm::Sha256, b"abc");
        let none = None::<futures_util::stream::Empty<io::Result<Bytes>>>;
        registry
            .upload_complete(&repo, &upload.id, &digest, None, none)
            .await
            .unwrap();
        assert_eq!(registry.uploads.len(), 0, "completion forgets the session");
    }

    #[tokio::test]
    async fn cached_hashes_are_bounded() {
        let sessions = Sessions::default();
        for i in 0..MAX_CACHED_HASHES + 10 {
            let mut guard = sessions.lock(&format!("s{i}")).await;
            *guard = Some(RunningHash {
                offset: 0,
                hasher: Hasher::new(Algorithm::Sha256),
            });
        }
        assert!(sessions.len() <= MAX_CACHED_HASHES, "{}", sessions.len());
    }
}
