//! Notification events for a request: what handlers publish after a
//! successful push, pull, mount or delete.

use std::sync::Arc;

use crate::digest::Digest;
use crate::names::{RepoName, Tag};
use crate::notify::{Action, Actor, Notifier, RequestRecord, Target};

/// What handlers need to publish notification events for their request.
pub(crate) struct Events {
    pub(super) notifier: Arc<Notifier>,
    pub(super) request: RequestRecord,
    pub(super) actor: Actor,
    pub(super) base_url: String,
}

/// Media type of blob events (Distribution's).
const BLOB_MEDIA_TYPE: &str = "application/octet-stream";

impl Events {
    /// Publishes `action` on `target`, filling in the request, actor and
    /// an absolute URL for `path`.
    fn publish(&self, action: Action, path: String, target: Target) {
        if self.notifier.is_enabled() {
            let target = Target {
                url: format!("{}{path}", self.base_url),
                ..target
            };
            self.notifier
                .publish(action, target, self.request.clone(), self.actor.clone());
        }
    }

    /// Publishes an event about a manifest, with its tag when addressed by one.
    pub fn manifest(
        &self,
        action: Action,
        repo: &RepoName,
        digest: &Digest,
        media_type: &str,
        size: u64,
        tag: Option<&Tag>,
    ) {
        let target = Target {
            media_type: media_type.to_owned(),
            size,
            length: size,
            digest: digest.to_string(),
            repository: repo.to_string(),
            tag: tag.map(Tag::to_string),
            ..Target::default()
        };
        self.publish(action, format!("/v2/{repo}/manifests/{digest}"), target);
    }

    /// Publishes an event about a blob (`from` names a mount's source).
    pub fn blob(
        &self,
        action: Action,
        repo: &RepoName,
        digest: &Digest,
        size: u64,
        from: Option<&RepoName>,
    ) {
        let target = Target {
            media_type: BLOB_MEDIA_TYPE.to_owned(),
            size,
            length: size,
            digest: digest.to_string(),
            repository: repo.to_string(),
            from_repository: from.map(RepoName::to_string),
            ..Target::default()
        };
        self.publish(action, format!("/v2/{repo}/blobs/{digest}"), target);
    }

    /// Publishes the deletion of a tag.
    pub fn tag_deleted(&self, repo: &RepoName, tag: &Tag) {
        let target = Target {
            repository: repo.to_string(),
            tag: Some(tag.to_string()),
            ..Target::default()
        };
        self.publish(
            Action::Delete,
            format!("/v2/{repo}/manifests/{tag}"),
            target,
        );
    }
}
