//! Enumerating what storage holds, for garbage collection: repositories,
//! their revisions, tags and layer links, and every blob.

use std::time::SystemTime;

use crate::digest::Digest;
use crate::error::Result;
use crate::layout;
use crate::manifest::{self, Manifest};
use crate::names::{RepoName, Tag};

use super::Registry;

/// A stored blob.
#[derive(Debug, Clone)]
pub struct StoredBlob {
    /// Its digest.
    pub digest: Digest,
    /// Its size.
    pub size: u64,
    /// When its data was written.
    pub modified: SystemTime,
}

impl Registry {
    /// Names of the directories below `path`, or none when it does not exist.
    async fn children(&self, path: &str) -> Result<Vec<String>> {
        match self.storage.list(path).await {
            Ok(names) => Ok(names),
            Err(e) if e.is_not_found() => Ok(Vec::new()),
            Err(e) => Err(e.into()),
        }
    }

    /// Digests named by `<dir>/<alg>/<hex>` entries.
    async fn digests_below(&self, dir: &str) -> Result<Vec<Digest>> {
        let mut digests = Vec::new();
        for alg in self.children(dir).await? {
            for hex in self.children(&format!("{dir}/{alg}")).await? {
                if let Ok(d) = format!("{alg}:{hex}").parse() {
                    digests.push(d);
                }
            }
        }
        Ok(digests)
    }

    /// Every repository: directories holding `_manifests` or `_layers`.
    pub(crate) async fn repositories(&self) -> Result<Vec<RepoName>> {
        let dirs = self.repository_dirs().await?;
        Ok(dirs
            .into_iter()
            .filter(|(_, children)| children.iter().any(|c| c == "_manifests" || c == "_layers"))
            .filter_map(|(name, _)| RepoName::parse(&name))
            .collect())
    }

    /// The manifest revisions of a repository.
    pub(crate) async fn revisions(&self, repo: &RepoName) -> Result<Vec<Digest>> {
        self.digests_below(&format!(
            "{}/_manifests/revisions",
            layout::repository(repo)
        ))
        .await
    }

    /// When a revision was linked into a repository, if it still is.
    pub(crate) async fn revision_linked_at(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Option<SystemTime>> {
        match self
            .storage
            .stat(&layout::revision_link(repo, digest))
            .await
        {
            Ok(info) => Ok(Some(info.modified)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The digests a repository's tags point at.
    pub(crate) async fn tagged(&self, repo: &RepoName) -> Result<Vec<(Tag, Digest)>> {
        let mut tagged = Vec::new();
        for name in self.tag_names(repo).await?.unwrap_or_default() {
            let Some(tag) = Tag::parse(&name) else {
                continue;
            };
            if let Some(digest) = self
                .read_link(&layout::tag_current_link(repo, &tag))
                .await?
            {
                tagged.push((tag, digest));
            }
        }
        Ok(tagged)
    }

    /// The blobs a repository links as layers.
    pub(crate) async fn layer_links(&self, repo: &RepoName) -> Result<Vec<Digest>> {
        self.digests_below(&format!("{}/_layers", layout::repository(repo)))
            .await
    }

    /// A stored manifest, parsed; `None` when missing or not a manifest.
    pub(crate) async fn stored_manifest(&self, digest: &Digest) -> Result<Option<Manifest>> {
        match self
            .storage
            .get_content(&layout::blob_data(digest), manifest::READ_CAP_BYTES)
            .await
        {
            Ok(content) => Ok(manifest::parse(None, &content).ok()),
            Err(e) if e.is_not_found() => Ok(None),
            Err(crate::storage::StorageError::TooLarge { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Every digest with a directory under `blobs/`.
    pub(crate) async fn blob_digests(&self) -> Result<Vec<Digest>> {
        let mut digests = Vec::new();
        for alg in self.children(layout::BLOBS).await? {
            for prefix in self.children(&format!("{}/{alg}", layout::BLOBS)).await? {
                for hex in self
                    .children(&format!("{}/{alg}/{prefix}", layout::BLOBS))
                    .await?
                {
                    if let Ok(d) = format!("{alg}:{hex}").parse::<Digest>() {
                        digests.push(d);
                    }
                }
            }
        }
        Ok(digests)
    }

    /// Size and write time of a stored blob.
    pub(crate) async fn stored_blob(&self, digest: &Digest) -> Result<Option<StoredBlob>> {
        match self.storage.stat(&layout::blob_data(digest)).await {
            Ok(info) if !info.is_dir => Ok(Some(StoredBlob {
                digest: digest.clone(),
                size: info.size,
                modified: info.modified,
            })),
            Ok(_) => Ok(None),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes a blob's data and its touch record.
    pub(crate) async fn delete_blob(&self, digest: &Digest) -> Result<()> {
        self.delete_if_exists(&layout::blob_dir(digest)).await?;
        self.manifest_cache.remove(digest);
        self.delete_if_exists(&layout::touch(digest)).await
    }

    /// Unlinks a manifest revision (its tags' history entries stay, as in Distribution).
    pub(crate) async fn unlink_revision(
        &self,
        repo: &RepoName,
        digest: &Digest,
        subject: Option<&Digest>,
    ) -> Result<()> {
        self.delete_if_exists(&layout::revision_dir(repo, digest))
            .await?;
        self.manifest_cache.remove(digest);
        if let Some(subject) = subject {
            self.remove_referrer(repo, subject, digest).await?;
        }
        Ok(())
    }

    /// Unlinks a layer from a repository.
    pub(crate) async fn unlink_layer(&self, repo: &RepoName, digest: &Digest) -> Result<()> {
        self.delete_if_exists(&layout::layer_link_dir(repo, digest))
            .await
    }

    /// Removes the empty directories of a repository; whether it is gone.
    pub(crate) async fn prune_repository(&self, repo: &RepoName) -> Result<bool> {
        let dir = layout::repository(repo);
        self.storage.prune_empty_dirs(&dir).await?;
        Ok(!self.exists(&dir).await?)
    }
}
