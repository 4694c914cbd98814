//! CNCF Distribution's v2 storage layout: which path holds what.
//!
//! ```text
//! /docker/registry/v2/blobs/<alg>/<hh>/<hex>/data                       blob content
//! /docker/registry/v2/repositories/<name>/_layers/<alg>/<hex>/link       blob linked into a repo
//! /docker/registry/v2/repositories/<name>/_manifests/revisions/<alg>/<hex>/link
//! /docker/registry/v2/repositories/<name>/_manifests/tags/<tag>/current/link
//! /docker/registry/v2/repositories/<name>/_manifests/tags/<tag>/index/<alg>/<hex>/link
//! /docker/registry/v2/repositories/<name>/_uploads/<id>/{data,startedat}
//! /docker/registry/v2/repositories/<name>/_berth/referrers/<alg>/<hex>/<alg>-<hex>
//! /docker/registry/v2/_berth/touches/<alg>/<hex>                        last "is present" answer
//! /.berth/gc/last.json                                                   last in-server GC report
//! ```
//!
//! A `link` file holds a digest string. Berth's own additions live under
//! `_berth/`, a directory Distribution skips (it ignores `_`-prefixed
//! directories other than its own), or under `/.berth/`, beside the tree
//! Distribution walks. Only this module builds paths, and only from
//! validated names, tags, digests and upload ids.

use crate::digest::Digest;
use crate::names::{RepoName, Tag};

/// The report of the last garbage collection the server ran itself (the
/// JSON `berth-registry gc` prints).
pub const GC_REPORT: &str = "/.berth/gc/last.json";

/// Root of everything Distribution-compatible.
pub const V2: &str = "/docker/registry/v2";
/// Parent directory of all repositories.
pub const REPOSITORIES: &str = "/docker/registry/v2/repositories";

/// The content of a blob.
pub fn blob_data(d: &Digest) -> String {
    format!(
        "{V2}/blobs/{}/{}/{}/data",
        d.algorithm().name(),
        &d.hex()[..2],
        d.hex()
    )
}

/// Where the last touch of a digest is recorded (see `service::touch`).
pub fn touch(d: &Digest) -> String {
    format!("{V2}/_berth/touches/{}/{}", d.algorithm().name(), d.hex())
}

/// Parent directory of all blobs.
pub const BLOBS: &str = "/docker/registry/v2/blobs";

/// A blob's directory (deleted as a whole to delete the blob).
pub fn blob_dir(d: &Digest) -> String {
    format!(
        "{V2}/blobs/{}/{}/{}",
        d.algorithm().name(),
        &d.hex()[..2],
        d.hex()
    )
}

/// A repository's directory.
pub fn repository(repo: &RepoName) -> String {
    format!("{REPOSITORIES}/{repo}")
}

/// The `_manifests` directory whose presence makes a directory a repository.
pub fn manifests_dir(repo: &RepoName) -> String {
    format!("{REPOSITORIES}/{repo}/_manifests")
}

/// The link that makes a blob (layer or config) part of a repository.
pub fn layer_link(repo: &RepoName, d: &Digest) -> String {
    format!(
        "{REPOSITORIES}/{repo}/_layers/{}/{}/link",
        d.algorithm().name(),
        d.hex()
    )
}

/// The directory of a layer link (deleted as a whole to unlink).
pub fn layer_link_dir(repo: &RepoName, d: &Digest) -> String {
    format!(
        "{REPOSITORIES}/{repo}/_layers/{}/{}",
        d.algorithm().name(),
        d.hex()
    )
}

/// The link that makes a manifest revision part of a repository.
pub fn revision_link(repo: &RepoName, d: &Digest) -> String {
    format!(
        "{REPOSITORIES}/{repo}/_manifests/revisions/{}/{}/link",
        d.algorithm().name(),
        d.hex()
    )
}

/// The directory of a revision link.
pub fn revision_dir(repo: &RepoName, d: &Digest) -> String {
    format!(
        "{REPOSITORIES}/{repo}/_manifests/revisions/{}/{}",
        d.algorithm().name(),
        d.hex()
    )
}

/// The directory listing a repository's tags.
pub fn tags_dir(repo: &RepoName) -> String {
    format!("{REPOSITORIES}/{repo}/_manifests/tags")
}

/// A tag's directory.
pub fn tag_dir(repo: &RepoName, tag: &Tag) -> String {
    format!("{REPOSITORIES}/{repo}/_manifests/tags/{tag}")
}

/// The link holding the digest a tag currently points at.
pub fn tag_current_link(repo: &RepoName, tag: &Tag) -> String {
    format!("{REPOSITORIES}/{repo}/_manifests/tags/{tag}/current/link")
}

/// The tag's history entry for a digest (Distribution keeps one per revision tagged).
pub fn tag_index_link(repo: &RepoName, tag: &Tag, d: &Digest) -> String {
    format!(
        "{REPOSITORIES}/{repo}/_manifests/tags/{tag}/index/{}/{}/link",
        d.algorithm().name(),
        d.hex()
    )
}

/// A blob upload session's directory.
pub fn upload_dir(repo: &RepoName, id: &str) -> String {
    format!("{REPOSITORIES}/{repo}/_uploads/{id}")
}

/// The bytes received so far by an upload session.
pub fn upload_data(repo: &RepoName, id: &str) -> String {
    format!("{REPOSITORIES}/{repo}/_uploads/{id}/data")
}

/// When an upload session started (RFC 3339), as Distribution records it.
pub fn upload_started_at(repo: &RepoName, id: &str) -> String {
    format!("{REPOSITORIES}/{repo}/_uploads/{id}/startedat")
}

/// The directory of all upload sessions of a repository.
pub fn uploads_dir(repo: &RepoName) -> String {
    format!("{REPOSITORIES}/{repo}/_uploads")
}

/// The directory of referrers of `subject` in a repository.
pub fn referrers_dir(repo: &RepoName, subject: &Digest) -> String {
    format!(
        "{REPOSITORIES}/{repo}/_berth/referrers/{}/{}",
        subject.algorithm().name(),
        subject.hex()
    )
}

/// The descriptor of one referrer of `subject`.
pub fn referrer_entry(repo: &RepoName, subject: &Digest, referrer: &Digest) -> String {
    format!(
        "{}/{}-{}",
        referrers_dir(repo, subject),
        referrer.algorithm().name(),
        referrer.hex()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distribution_paths() {
        let d: Digest = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
            .parse()
            .unwrap();
        let r = RepoName::parse("a/b").unwrap();
        assert_eq!(
            blob_data(&d),
            "/docker/registry/v2/blobs/sha256/e3/e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855/data"
        );
        assert_eq!(
            layer_link(&r, &d),
            "/docker/registry/v2/repositories/a/b/_layers/sha256/e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855/link"
        );
        let t = Tag::parse("v1").unwrap();
        assert_eq!(
            tag_current_link(&r, &t),
            "/docker/registry/v2/repositories/a/b/_manifests/tags/v1/current/link"
        );
    }
}
