//! The mark phase: everything that must survive the collection.

use std::collections::{HashMap, HashSet};
use std::time::SystemTime;

use super::{GcError, GcOptions, Report, is_fresh};
use crate::digest::Digest;
use crate::manifest::Manifest;
use crate::names::RepoName;
use crate::service::Registry;

/// What the mark phase found.
#[derive(Debug, Default)]
pub(super) struct Marked {
    /// Digests of kept content: manifests, configs and layers, across all repositories.
    pub blobs: HashSet<Digest>,
    /// Every repository examined.
    pub repositories: Vec<RepoName>,
    /// Revisions to unlink: (repository, manifest, its subject).
    pub untagged: Vec<(RepoName, Digest, Option<Digest>)>,
}

/// Marks every repository's kept manifests and what they reference.
pub(super) async fn mark(
    registry: &Registry,
    options: &GcOptions,
    started: SystemTime,
    report: &mut Report,
) -> Result<Marked, GcError> {
    let mut marked = Marked::default();
    for repo in registry.repositories().await? {
        mark_repository(registry, options, started, &repo, &mut marked, report).await?;
        marked.repositories.push(repo);
    }
    report.repositories = marked.repositories.len();
    report.blobs_marked = marked.blobs.len();
    Ok(marked)
}

async fn mark_repository(
    registry: &Registry,
    options: &GcOptions,
    started: SystemTime,
    repo: &RepoName,
    marked: &mut Marked,
    report: &mut Report,
) -> Result<(), GcError> {
    let revisions = registry.revisions(repo).await?;
    let mut manifests: HashMap<Digest, Option<Manifest>> = HashMap::new();
    let mut referrers: HashMap<Digest, Vec<Digest>> = HashMap::new();
    for digest in &revisions {
        let manifest = registry.stored_manifest(digest).await?;
        if let Some(subject) = manifest.as_ref().and_then(|m| m.subject.as_ref()) {
            referrers
                .entry(subject.digest.clone())
                .or_default()
                .push(digest.clone());
        }
        manifests.insert(digest.clone(), manifest);
    }

    // Roots: tagged manifests; all manifests unless untagged ones go; and
    // untagged manifests pushed or touched within the grace period (a client
    // may be about to tag them, or to push an index naming them).
    let mut roots: Vec<Digest> = registry
        .tagged(repo)
        .await?
        .into_iter()
        .map(|(_, d)| d)
        .collect();
    if options.delete_untagged {
        for digest in &revisions {
            let times = [
                registry.last_touch(digest).await?,
                registry.revision_linked_at(repo, digest).await?,
            ];
            if is_fresh(times, options.grace_period, started) {
                roots.push(digest.clone());
            }
        }
    } else {
        roots.extend(revisions.iter().cloned());
    }

    // Keep the roots, what they reference, and their referrers, transitively.
    let mut kept: HashSet<Digest> = HashSet::new();
    while let Some(digest) = roots.pop() {
        if !kept.insert(digest.clone()) {
            continue;
        }
        let manifest = match manifests.get(&digest) {
            Some(m) => m.clone(),
            None => registry.stored_manifest(&digest).await?,
        };
        if let Some(m) = manifest {
            marked
                .blobs
                .extend(m.config.iter().chain(&m.layers).map(|b| b.digest.clone()));
            roots.extend(m.manifests.iter().map(|c| c.digest.clone()));
        }
        roots.extend(referrers.get(&digest).into_iter().flatten().cloned());
    }
    report.manifests_marked += kept.len();
    for digest in revisions.into_iter().filter(|d| !kept.contains(d)) {
        let subject = manifests
            .get(&digest)
            .and_then(|m| m.as_ref()?.subject.as_ref())
            .map(|s| s.digest.clone());
        marked.untagged.push((repo.clone(), digest, subject));
    }
    marked.blobs.extend(kept);
    Ok(())
}
