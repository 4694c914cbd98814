//! The referrers index: which manifests name a given manifest as `subject`.
//!
//! Distribution 2.8 keeps no such index, so Berth records one entry per
//! referrer under the repository's `_berth/` directory when the referrer is
//! pushed. Listing re-checks that each referrer is still a revision of the
//! repository, so a manifest deleted by another registry drops out.

use bytes::Bytes;

use crate::digest::Digest;
use crate::error::Result;
use crate::layout;
use crate::manifest::Descriptor;
use crate::names::RepoName;

use super::Registry;

/// Longest referrer entry read (a descriptor with annotations).
const ENTRY_MAX_BYTES: u64 = 1024 * 1024;

impl Registry {
    pub(super) async fn add_referrer(
        &self,
        repo: &RepoName,
        subject: &Digest,
        referrer: &Descriptor,
    ) -> Result<()> {
        let entry = serde_json::to_vec(referrer).map_err(|e| {
            crate::error::RegistryError::new(
                crate::error::Code::Unknown,
                format!("encoding referrer: {e}"),
            )
        })?;
        let path = layout::referrer_entry(repo, subject, &referrer.digest);
        Ok(self.storage.put_content(&path, Bytes::from(entry)).await?)
    }

    pub(super) async fn remove_referrer(
        &self,
        repo: &RepoName,
        subject: &Digest,
        referrer: &Digest,
    ) -> Result<()> {
        self.delete_if_exists(&layout::referrer_entry(repo, subject, referrer))
            .await
    }

    /// The manifests in `repo` whose subject is `subject`, optionally only
    /// those of `artifact_type`, ordered by digest.
    pub async fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<Descriptor>> {
        let dir = layout::referrers_dir(repo, subject);
        let names = match self.storage.list(&dir).await {
            Ok(names) => names,
            Err(e) if e.is_not_found() => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let mut found = Vec::new();
        for name in names {
            let content = match self
                .storage
                .get_content(&format!("{dir}/{name}"), ENTRY_MAX_BYTES)
                .await
            {
                Ok(c) => c,
                Err(e) if e.is_not_found() => continue,
                Err(e) => return Err(e.into()),
            };
            let Ok(descriptor) = serde_json::from_slice::<Descriptor>(&content) else {
                tracing::warn!(entry = %name, %repo, "ignoring unreadable referrer entry");
                continue;
            };
            if artifact_type.is_some_and(|t| descriptor.artifact_type.as_deref() != Some(t)) {
                continue;
            }
            let linked = self
                .read_link(&layout::revision_link(repo, &descriptor.digest))
                .await?;
            if linked.as_ref() == Some(&descriptor.digest) {
                found.push(descriptor);
            }
        }
        found.sort_by(|a, b| a.digest.cmp(&b.digest));
        Ok(found)
    }
}
