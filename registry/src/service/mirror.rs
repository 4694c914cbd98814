//! Storing what a pull-through cache fetched from its upstream.
//!
//! A cache keeps the usual layout, so reads go through the ordinary
//! service code; but its writes skip the checks of a push: a manifest is
//! kept without the blobs it references (they are fetched when asked for),
//! and a blob arrives whole from a verified spool file, not as an upload.

use std::path::Path;

use bytes::Bytes;
use tokio::io::AsyncReadExt;

use crate::digest::Digest;
use crate::error::Result;
use crate::layout;
use crate::names::{RepoName, Tag};

use super::Registry;

/// Bytes copied per write from a spool file into storage.
const COPY_CHUNK: usize = 1024 * 1024;

impl Registry {
    /// Keeps a manifest fetched upstream (already verified to have
    /// `digest`) as a revision of `repo`, and under `tag` when given.
    pub async fn cache_manifest(
        &self,
        repo: &RepoName,
        digest: &Digest,
        tag: Option<&Tag>,
        content: Bytes,
    ) -> Result<()> {
        self.ensure_writable()?;
        if self.stored_blob_size(digest).await? != Some(content.len() as u64) {
            self.storage
                .put_content(&layout::blob_data(digest), content)
                .await?;
        }
        self.write_link(&layout::revision_link(repo, digest), digest)
            .await?;
        if let Some(tag) = tag {
            self.write_link(&layout::tag_index_link(repo, tag, digest), digest)
                .await?;
            self.write_link(&layout::tag_current_link(repo, tag), digest)
                .await?;
        }
        Ok(())
    }

    /// Whether the blob's data is stored (for any repository).
    pub async fn holds_blob(&self, digest: &Digest) -> Result<bool> {
        Ok(self.stored_blob_size(digest).await?.is_some())
    }

    /// Links into `repo` a blob stored for another repository.
    pub async fn link_blob(&self, repo: &RepoName, digest: &Digest) -> Result<()> {
        self.ensure_writable()?;
        self.write_link(&layout::layer_link(repo, digest), digest)
            .await
    }

    /// Keeps a blob whose verified bytes are in the local file `spool`:
    /// copied into an upload path, then renamed into place (so a reader
    /// never sees part of it) and linked into `repo`.
    pub async fn cache_blob(&self, repo: &RepoName, digest: &Digest, spool: &Path) -> Result<()> {
        self.ensure_writable()?;
        if self.stored_blob_size(digest).await?.is_none() {
            let id = super::uploads::new_upload_id();
            let upload = layout::upload_data(repo, &id);
            let mut writer = self.storage.writer(&upload).await?;
            let mut file = tokio::fs::File::open(spool).await.map_err(|e| {
                crate::storage::StorageError::Io {
                    path: spool.display().to_string(),
                    source: e,
                }
            })?;
            loop {
                let mut buffer = vec![0; COPY_CHUNK];
                let n =
                    file.read(&mut buffer)
                        .await
                        .map_err(|e| crate::storage::StorageError::Io {
                            path: spool.display().to_string(),
                            source: e,
                        })?;
                if n == 0 {
                    break;
                }
                buffer.truncate(n);
                writer.write(Bytes::from(buffer)).await?;
            }
            writer.commit().await?;
            self.storage
                .rename(&upload, &layout::blob_data(digest))
                .await?;
            self.delete_upload_dir(repo, &id).await?;
        }
        self.write_link(&layout::layer_link(repo, digest), digest)
            .await
    }
}

impl Registry {
    /// Deletes the tags of a cache whose manifest was neither resolved
    /// upstream nor pulled within `ttl` before `started` (a dry run only
    /// counts them); their manifests and blobs are then collected as
    /// untagged content. Returns how many tags went.
    pub(crate) async fn expire_cached_tags(
        &self,
        ttl: std::time::Duration,
        started: std::time::SystemTime,
        dry_run: bool,
    ) -> Result<usize> {
        let mut expired = 0;
        for repo in self.repositories().await? {
            for (tag, digest) in self.tagged(&repo).await? {
                let linked = match self
                    .storage
                    .stat(&layout::tag_current_link(&repo, &tag))
                    .await
                {
                    Ok(info) => Some(info.modified),
                    Err(e) if e.is_not_found() => None,
                    Err(e) => return Err(e.into()),
                };
                let times = [linked, self.last_touch(&digest).await?];
                if crate::gc::is_fresh(times, ttl, started) {
                    continue;
                }
                tracing::info!(%repo, %tag, dry_run, "expiring a cached tag");
                if !dry_run {
                    self.delete_if_exists(&layout::tag_dir(&repo, &tag)).await?;
                }
                expired += 1;
            }
        }
        Ok(expired)
    }
}
