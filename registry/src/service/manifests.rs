//! Manifest push, pull and delete, with tags.
//!
//! A manifest is stored as a blob and linked into its repository as a
//! revision; a tag is a link to a revision. A push is accepted only when
//! everything it references is present in the repository, and is written in
//! an order that never exposes a dangling reference: blob, revision link,
//! then tag and referrer entries.

use bytes::Bytes;

use crate::digest::{Algorithm, Digest};
use crate::error::{Code, RegistryError, Result};
use crate::layout;
use crate::manifest::{self, Descriptor, Manifest};
use crate::names::{Reference, RepoName, Tag};

use super::Registry;
use super::manifest_cache::CachedManifest;

/// A manifest read from a repository.
#[derive(Debug, Clone)]
pub struct ManifestRead {
    /// Its digest.
    pub digest: Digest,
    /// The media type to serve it with.
    pub media_type: String,
    /// The exact bytes pushed.
    pub content: Bytes,
}

/// The result of a manifest push.
#[derive(Debug, Clone)]
pub struct PushedManifest {
    /// The manifest's digest.
    pub digest: Digest,
    /// The subject it refers to, if any (answered as `OCI-Subject`).
    pub subject: Option<Digest>,
    /// Its media type.
    pub media_type: String,
}

/// A manifest over `limit` bytes: `MANIFEST_INVALID`, as Distribution
/// answers it, with the status the spec gives an oversized manifest.
pub(crate) fn manifest_too_large(limit: u64) -> RegistryError {
    RegistryError::new(
        Code::ManifestInvalid,
        format!("manifest exceeds the limit of {limit} bytes"),
    )
    .with_status(http::StatusCode::PAYLOAD_TOO_LARGE)
}

fn unknown_manifest(repo: &RepoName, reference: &dyn std::fmt::Display) -> RegistryError {
    RegistryError::new(
        Code::ManifestUnknown,
        format!("manifest {reference} is unknown to {repo}"),
    )
}

impl Registry {
    /// The digest a reference names in `repo`, if the repository has it.
    async fn resolve(&self, repo: &RepoName, reference: &Reference) -> Result<Digest> {
        let digest = match reference {
            Reference::Digest(d) => d.clone(),
            Reference::Tag(t) => self
                .read_link(&layout::tag_current_link(repo, t))
                .await?
                .ok_or_else(|| unknown_manifest(repo, t))?,
        };
        if self
            .read_link(&layout::revision_link(repo, &digest))
            .await?
            .as_ref()
            != Some(&digest)
        {
            return Err(unknown_manifest(repo, reference));
        }
        self.touch(&digest).await;
        Ok(digest)
    }

    async fn read_manifest_blob(&self, repo: &RepoName, digest: &Digest) -> Result<Bytes> {
        // Read with a generous cap: manifests written by other registries may
        // exceed our push limit, and must still be served.
        let cap = self
            .options
            .manifest_max_bytes
            .max(manifest::READ_CAP_BYTES);
        self.storage
            .get_content(&layout::blob_data(digest), cap)
            .await
            .map_err(|e| {
                if e.is_not_found() {
                    unknown_manifest(repo, digest)
                } else {
                    e.into()
                }
            })
    }

    /// Reads a manifest by tag or digest. The tag and the repository's link
    /// are always read from storage; the bytes may come from the manifest
    /// cache (see `manifest_cache`).
    pub async fn manifest_get(
        &self,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<ManifestRead> {
        let digest = self.resolve(repo, reference).await?;
        if let Some(cached) = self.manifest_cache.get(&digest) {
            return Ok(ManifestRead {
                digest,
                media_type: cached.media_type,
                content: cached.content,
            });
        }
        let content = self.read_manifest_blob(repo, &digest).await?;
        let media_type = manifest::served_media_type(&content);
        self.manifest_cache.insert(
            &digest,
            CachedManifest {
                content: content.clone(),
                media_type: media_type.clone(),
            },
        );
        Ok(ManifestRead {
            digest,
            media_type,
            content,
        })
    }

    /// Stores a manifest under a tag or its digest.
    pub async fn manifest_put(
        &self,
        repo: &RepoName,
        reference: &Reference,
        content_type: Option<&str>,
        content: Bytes,
    ) -> Result<PushedManifest> {
        self.ensure_writable()?;
        if content.len() as u64 > self.options.manifest_max_bytes {
            return Err(manifest_too_large(self.options.manifest_max_bytes));
        }
        let parsed = manifest::parse(content_type, &content)
            .map_err(|e| RegistryError::new(Code::ManifestInvalid, e))?;
        let digest = match reference {
            Reference::Digest(expected) => {
                let actual = Digest::of(expected.algorithm(), &content);
                if actual != *expected {
                    return Err(RegistryError::new(
                        Code::DigestInvalid,
                        format!("manifest has digest {actual}, not {expected}"),
                    ));
                }
                actual
            }
            Reference::Tag(_) => Digest::of(Algorithm::Sha256, &content),
        };
        // Reject a manifest with missing references before writing anything;
        // then touch the references and check again, so that a concurrent
        // garbage collection either sees the touches or is seen by the check.
        self.check_references(repo, &parsed).await?;
        self.touch(&digest).await;
        for reference in parsed.required_blobs().chain(&parsed.manifests) {
            self.touch(&reference.digest).await;
        }
        self.check_references(repo, &parsed).await?;

        if self.stored_blob_size(&digest).await? != Some(content.len() as u64) {
            self.storage
                .put_content(&layout::blob_data(&digest), content.clone())
                .await?;
        }
        self.write_link(&layout::revision_link(repo, &digest), &digest)
            .await?;
        if let Reference::Tag(tag) = reference {
            self.write_link(&layout::tag_index_link(repo, tag, &digest), &digest)
                .await?;
            self.write_link(&layout::tag_current_link(repo, tag), &digest)
                .await?;
        }
        let subject = parsed.subject.as_ref().map(|s| s.digest.clone());
        if let Some(subject) = &subject {
            self.add_referrer(
                repo,
                subject,
                &referrer_descriptor(&parsed, &digest, content.len() as u64),
            )
            .await?;
        }
        Ok(PushedManifest {
            digest,
            subject,
            media_type: parsed.media_type,
        })
    }

    /// Fails with MANIFEST_BLOB_UNKNOWN unless everything `m` needs is in `repo`.
    async fn check_references(&self, repo: &RepoName, m: &Manifest) -> Result<()> {
        let missing = |d: &Descriptor| {
            RegistryError::new(
                Code::ManifestBlobUnknown,
                format!("{} {} is not in {repo}", d.media_type, d.digest),
            )
        };
        for blob in m.required_blobs() {
            if !self.is_linked(repo, &blob.digest).await?
                || self.stored_blob_size(&blob.digest).await?.is_none()
            {
                return Err(missing(blob));
            }
        }
        for child in &m.manifests {
            let linked = self
                .read_link(&layout::revision_link(repo, &child.digest))
                .await?;
            if linked.as_ref() != Some(&child.digest)
                || self.stored_blob_size(&child.digest).await?.is_none()
            {
                return Err(missing(child));
            }
        }
        Ok(())
    }

    /// Deletes a tag, or a manifest (with every tag pointing at it).
    pub async fn manifest_delete(&self, repo: &RepoName, reference: &Reference) -> Result<()> {
        self.ensure_delete_enabled()?;
        match reference {
            Reference::Tag(tag) => {
                if self
                    .read_link(&layout::tag_current_link(repo, tag))
                    .await?
                    .is_none()
                {
                    return Err(unknown_manifest(repo, tag));
                }
                self.delete_if_exists(&layout::tag_dir(repo, tag)).await
            }
            Reference::Digest(digest) => {
                let digest = self
                    .resolve(repo, &Reference::Digest(digest.clone()))
                    .await?;
                let subject = match self.read_manifest_blob(repo, &digest).await {
                    Ok(content) => manifest::parse(None, &content)
                        .ok()
                        .and_then(|m| m.subject)
                        .map(|s| s.digest),
                    Err(_) => None,
                };
                self.delete_if_exists(&layout::revision_dir(repo, &digest))
                    .await?;
                self.manifest_cache.remove(&digest);
                for tag in self.tags_pointing_at(repo, &digest).await? {
                    self.delete_if_exists(&layout::tag_dir(repo, &tag)).await?;
                }
                if let Some(subject) = subject {
                    self.remove_referrer(repo, &subject, &digest).await?;
                }
                Ok(())
            }
        }
    }

    async fn tags_pointing_at(&self, repo: &RepoName, digest: &Digest) -> Result<Vec<Tag>> {
        let mut tags = Vec::new();
        for tag in self.tag_names(repo).await?.unwrap_or_default() {
            let Some(tag) = Tag::parse(&tag) else {
                continue;
            };
            if self
                .read_link(&layout::tag_current_link(repo, &tag))
                .await?
                .as_ref()
                == Some(digest)
            {
                tags.push(tag);
            }
        }
        Ok(tags)
    }
}

/// The descriptor by which a referrer is listed under its subject.
fn referrer_descriptor(m: &Manifest, digest: &Digest, size: u64) -> Descriptor {
    Descriptor {
        media_type: m.media_type.clone(),
        digest: digest.clone(),
        size,
        artifact_type: m.artifact_type.clone(),
        annotations: m.annotations.clone(),
        urls: None,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::manifest::tests::{bodies, content_types};
    use crate::properties::{self, SOME};
    use crate::service::Options;
    use crate::storage::FilesystemDriver;
    use proptest::prelude::*;

    #[test]
    fn property_pushed_manifests_are_stored_or_refused_with_a_manifest_code() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::new(
            Arc::new(FilesystemDriver::new(dir.path())),
            Options::default(),
        );
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let repo = RepoName::parse("property/test").unwrap();
        let reference = Reference::Tag(Tag::parse("latest").unwrap());
        properties::check(
            "pushed manifests are stored, or refused with MANIFEST_INVALID or MANIFEST_BLOB_UNKNOWN",
            SOME,
            (content_types(), bodies()),
            |(content_type, body)| {
                let pushed = runtime.block_on(registry.manifest_put(
                    &repo,
                    &reference,
                    content_type.as_deref(),
                    Bytes::from(body),
                ));
                if let Err(e) = pushed {
                    prop_assert!(
                        [Code::ManifestInvalid, Code::ManifestBlobUnknown].contains(&e.code),
                        "{:?}",
                        e
                    );
                    prop_assert_eq!(e.status, http::StatusCode::BAD_REQUEST);
                }
                Ok(())
            },
        );
    }

    /// A registry over a fresh directory, deletes on, with a manifest cache of `cache_bytes`.
    fn registry_with_cache(dir: &std::path::Path, cache_bytes: u64) -> Registry {
        Registry::new(
            Arc::new(FilesystemDriver::new(dir)),
            Options {
                delete_enabled: true,
                ..Options::default()
            },
        )
        .with_manifest_cache(cache_bytes)
    }

    /// An empty OCI index: a valid manifest that needs no blobs.
    fn empty_index(annotation: &str) -> Bytes {
        Bytes::from(format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","manifests":[],"annotations":{{"n":"{annotation}"}}}}"#,
            manifest::OCI_INDEX
        ))
    }

    #[tokio::test]
    async fn manifest_bytes_come_from_the_cache_but_links_and_tags_from_storage() {
        let dir = tempfile::tempdir().unwrap();
        let registry = registry_with_cache(dir.path(), 1 << 20);
        let repo = RepoName::parse("cache/test").unwrap();
        let tag = Reference::Tag(Tag::parse("latest").unwrap());
        let first = empty_index("1");
        let pushed = registry
            .manifest_put(&repo, &tag, Some(manifest::OCI_INDEX), first.clone())
            .await
            .unwrap();
        let by_digest = Reference::Digest(pushed.digest.clone());
        let read = registry.manifest_get(&repo, &by_digest).await.unwrap();
        assert_eq!(read.content, first);
        assert_eq!(read.media_type, manifest::OCI_INDEX);

        // The bytes are gone from storage, yet served: they come from the cache.
        let storage = registry.storage().clone();
        storage
            .delete(&layout::blob_dir(&pushed.digest))
            .await
            .unwrap();
        let read = registry.manifest_get(&repo, &by_digest).await.unwrap();
        assert_eq!(read.content, first);
        assert_eq!(read.media_type, manifest::OCI_INDEX);
        assert_eq!(
            registry.manifest_get(&repo, &tag).await.unwrap().content,
            first
        );

        // Another instance sharing the storage moves the tag: seen at once.
        let second = empty_index("2");
        let other = registry_with_cache(dir.path(), 1 << 20);
        let moved = other
            .manifest_put(&repo, &tag, Some(manifest::OCI_INDEX), second.clone())
            .await
            .unwrap();
        assert_eq!(
            registry.manifest_get(&repo, &tag).await.unwrap().content,
            second
        );

        // Another instance unlinks the first manifest: seen at once, although
        // its bytes are still in this instance's cache.
        storage
            .delete(&layout::revision_dir(&repo, &pushed.digest))
            .await
            .unwrap();
        let err = registry.manifest_get(&repo, &by_digest).await.unwrap_err();
        assert_eq!(err.code, Code::ManifestUnknown);

        // A delete on this instance: unknown as soon as it returns.
        let second_digest = Reference::Digest(moved.digest.clone());
        registry.manifest_get(&repo, &second_digest).await.unwrap();
        registry
            .manifest_delete(&repo, &second_digest)
            .await
            .unwrap();
        for reference in [&second_digest, &tag] {
            let err = registry.manifest_get(&repo, reference).await.unwrap_err();
            assert_eq!(err.code, Code::ManifestUnknown);
        }
    }

    #[tokio::test]
    async fn without_the_cache_every_read_goes_to_storage() {
        let dir = tempfile::tempdir().unwrap();
        let registry = registry_with_cache(dir.path(), 0);
        let repo = RepoName::parse("cache/off").unwrap();
        let tag = Reference::Tag(Tag::parse("latest").unwrap());
        let pushed = registry
            .manifest_put(&repo, &tag, Some(manifest::OCI_INDEX), empty_index("1"))
            .await
            .unwrap();
        let by_digest = Reference::Digest(pushed.digest.clone());
        registry.manifest_get(&repo, &by_digest).await.unwrap();
        registry
            .storage()
            .delete(&layout::blob_dir(&pushed.digest))
            .await
            .unwrap();
        let err = registry.manifest_get(&repo, &by_digest).await.unwrap_err();
        assert_eq!(err.code, Code::ManifestUnknown);
    }
}
