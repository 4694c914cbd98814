//! `GET`/`HEAD`/`PUT`/`DELETE /v2/<name>/manifests/<reference>`.

use axum::body::{Body, to_bytes};
use axum::response::Response;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::{Method, StatusCode};

use super::Call;
use super::blobs::parse_digest;
use super::response::{OCI_SUBJECT, Reply};
use crate::error::{Code, RegistryError, Result};
use crate::names::{Reference, RepoName, Tag};
use crate::notify::Action;
use crate::service::{ManifestRead, manifest_too_large};

/// Parses a tag or digest reference.
pub(super) fn parse_reference(text: &str) -> Result<Reference> {
    if text.contains(':') {
        return parse_digest(text).map(Reference::Digest);
    }
    Tag::parse(text)
        .map(Reference::Tag)
        .ok_or_else(|| RegistryError::new(Code::TagInvalid, format!("invalid tag {text:?}")))
}

fn tag_of(reference: &Reference) -> Option<&Tag> {
    match reference {
        Reference::Tag(tag) => Some(tag),
        Reference::Digest(_) => None,
    }
}

pub(super) async fn get(call: Call, repo: RepoName, reference: String) -> Result<Response> {
    let reference = parse_reference(&reference)?;
    let manifest = call.registry.manifest_get(&repo, &reference).await?;
    Ok(answer(&call, &repo, &reference, manifest))
}

/// The answer to a GET or HEAD of `manifest`, with its pull event.
pub(super) fn answer(
    call: &Call,
    repo: &RepoName,
    reference: &Reference,
    manifest: ManifestRead,
) -> Response {
    let size = manifest.content.len() as u64;
    let reply = Reply::new(StatusCode::OK)
        .digest(&manifest.digest)
        .content_type(&manifest.media_type)
        .length(size);
    if call.method == Method::HEAD {
        return reply.body(Body::empty());
    }
    call.events.manifest(
        Action::Pull,
        repo,
        &manifest.digest,
        &manifest.media_type,
        size,
        tag_of(reference),
    );
    reply.body(manifest.content)
}

pub(super) async fn put(call: Call, repo: RepoName, reference: String) -> Result<Response> {
    let reference = parse_reference(&reference)?;
    let limit = call.registry.options().manifest_max_bytes;
    let too_large = || manifest_too_large(limit);
    if call
        .header(CONTENT_LENGTH.as_str())
        .and_then(|l| l.parse::<u64>().ok())
        .is_some_and(|l| l > limit)
    {
        return Err(too_large());
    }
    let content_type = call.header(CONTENT_TYPE.as_str()).map(str::to_owned);
    let content = to_bytes(call.body, limit as usize)
        .await
        .map_err(|_| too_large())?;
    let size = content.len() as u64;
    let pushed = call
        .registry
        .manifest_put(&repo, &reference, content_type.as_deref(), content)
        .await?;
    call.events.manifest(
        Action::Push,
        &repo,
        &pushed.digest,
        &pushed.media_type,
        size,
        tag_of(&reference),
    );
    let mut reply = Reply::new(StatusCode::CREATED)
        .location(format!("/v2/{repo}/manifests/{}", pushed.digest))
        .digest(&pushed.digest);
    if let Some(subject) = &pushed.subject {
        reply = reply.header(OCI_SUBJECT, subject.to_string());
    }
    Ok(reply.empty())
}

pub(super) async fn delete(call: Call, repo: RepoName, reference: String) -> Result<Response> {
    let reference = parse_reference(&reference)?;
    call.registry.manifest_delete(&repo, &reference).await?;
    match &reference {
        Reference::Tag(tag) => call.events.tag_deleted(&repo, tag),
        Reference::Digest(digest) => {
            call.events
                .manifest(Action::Delete, &repo, digest, "", 0, None)
        }
    }
    Ok(Reply::new(StatusCode::ACCEPTED).empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::properties::{self, MANY};
    use proptest::prelude::*;

    #[test]
    fn property_references_parse_or_are_tag_or_digest_invalid() {
        let text = prop_oneof![
            "[a-zA-Z0-9_.-]{1,130}",
            "sha(256|512):[a-f0-9]{0,130}",
            any::<String>()
        ];
        properties::check(
            "references parse, or are TAG_INVALID or DIGEST_INVALID",
            MANY,
            text,
            |text| {
                match parse_reference(&text) {
                    Ok(reference) => prop_assert_eq!(reference.to_string(), text),
                    Err(e) => {
                        let expected = if text.contains(':') {
                            Code::DigestInvalid
                        } else {
                            Code::TagInvalid
                        };
                        prop_assert_eq!(e.code, expected);
                        prop_assert_eq!(e.status, StatusCode::BAD_REQUEST);
                    }
                }
                Ok(())
            },
        );
    }
}
