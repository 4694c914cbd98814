//! `GET`/`HEAD`/`DELETE /v2/<name>/blobs/<digest>`.

use axum::body::Body;
use axum::response::Response;
use http::header::{ACCEPT_RANGES, CONTENT_RANGE, RANGE};
use http::{Method, StatusCode};

use super::Call;
use super::response::Reply;
use crate::digest::Digest;
use crate::error::{Code, RegistryError, Result};
use crate::names::RepoName;
use crate::notify::Action;
use crate::service::{BlobRange, BlobRead};

/// Parses a digest from a URL or query, as DIGEST_INVALID when malformed.
pub(super) fn parse_digest(text: &str) -> Result<Digest> {
    text.parse()
        .map_err(|e| RegistryError::new(Code::DigestInvalid, format!("{e}")))
}

/// Parses a single-range `Range: bytes=...` header.
pub(super) fn parse_range(header: &str) -> Result<BlobRange> {
    let invalid =
        || RegistryError::new(Code::RangeInvalid, format!("unsupported Range {header:?}"));
    let spec = header.trim().strip_prefix("bytes=").ok_or_else(invalid)?;
    let (a, b) = spec.split_once('-').ok_or_else(invalid)?;
    let num = |s: &str| s.trim().parse::<u64>().map_err(|_| invalid());
    match (a.trim().is_empty(), b.trim().is_empty()) {
        (false, false) => Ok(BlobRange::Between(num(a)?, num(b)?)),
        (false, true) => Ok(BlobRange::From(num(a)?)),
        (true, false) => Ok(BlobRange::Suffix(num(b)?)),
        (true, true) => Err(invalid()),
    }
}

pub(super) async fn get(call: Call, repo: RepoName, digest: String) -> Result<Response> {
    let digest = parse_digest(&digest)?;
    let head = call.method == Method::HEAD;
    let range = call.header(RANGE.as_str()).map(parse_range).transpose()?;
    // A suffix range (`bytes=-N`) is served here: Azure Blob Storage does
    // not support them, so a redirect would hand the client a broken answer.
    let suffix = matches!(range, Some(BlobRange::Suffix(_)));
    if call.registry.redirects()
        && !suffix
        && let Some(url) = call.registry.blob_redirect(&repo, &digest, head).await?
    {
        if !head {
            call.events.blob(Action::Pull, &repo, &digest, 0, None);
        }
        return Ok(Reply::new(StatusCode::TEMPORARY_REDIRECT)
            .location(url)
            .digest(&digest)
            .empty());
    }
    if head {
        let size = call.registry.blob_size(&repo, &digest).await?;
        return Ok(head_answer(&digest, size));
    }
    let blob = call.registry.blob_get(&repo, &digest, range).await?;
    Ok(answer(&call, &repo, &digest, blob))
}

/// The answer to a GET of `blob`, with its pull event.
pub(super) fn answer(call: &Call, repo: &RepoName, digest: &Digest, blob: BlobRead) -> Response {
    call.events
        .blob(Action::Pull, repo, digest, blob.size, None);
    let reply = |status| blob_reply(status, digest);
    let response = match blob.range {
        Some((a, b)) => reply(StatusCode::PARTIAL_CONTENT)
            .header(CONTENT_RANGE, format!("bytes {a}-{b}/{}", blob.size))
            .length(b - a + 1),
        None => reply(StatusCode::OK).length(blob.size),
    };
    response.body(Body::from_stream(blob.body))
}

/// The answer to a HEAD of a blob of `size` bytes.
pub(super) fn head_answer(digest: &Digest, size: u64) -> Response {
    blob_reply(StatusCode::OK, digest)
        .length(size)
        .body(Body::empty())
}

/// The headers every blob answer has.
fn blob_reply(status: StatusCode, digest: &Digest) -> Reply {
    Reply::new(status)
        .digest(digest)
        .content_type("application/octet-stream")
        .header(ACCEPT_RANGES, "bytes")
}

pub(super) async fn delete(call: Call, repo: RepoName, digest: String) -> Result<Response> {
    let digest = parse_digest(&digest)?;
    call.registry.blob_delete(&repo, &digest).await?;
    call.events.blob(Action::Delete, &repo, &digest, 0, None);
    Ok(Reply::new(StatusCode::ACCEPTED).digest(&digest).empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::properties::{self, MANY};
    use proptest::prelude::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9").unwrap(), BlobRange::Between(0, 9));
        assert_eq!(parse_range("bytes=5-").unwrap(), BlobRange::From(5));
        assert_eq!(parse_range("bytes=-5").unwrap(), BlobRange::Suffix(5));
        for bad in ["bytes=-", "0-9", "bytes=a-b", "bytes=0-1,3-4"] {
            assert!(parse_range(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn property_ranges_parse_or_are_range_invalid() {
        let header = prop_oneof![
            "bytes=[0-9]{0,21}-[0-9]{0,21}",
            "(bytes=)?[0-9 ,a-z=-]{0,30}",
            any::<String>(),
        ];
        properties::check("Range parses or is RANGE_INVALID", MANY, header, |header| {
            if let Err(e) = parse_range(&header) {
                prop_assert_eq!(e.code, Code::RangeInvalid);
                prop_assert_eq!(e.status, StatusCode::RANGE_NOT_SATISFIABLE);
            }
            Ok(())
        });
    }

    #[test]
    fn property_digests_parse_or_are_digest_invalid() {
        let text = prop_oneof!["sha(256|512):[a-f0-9]{0,130}", any::<String>()];
        properties::check("digests parse or are DIGEST_INVALID", MANY, text, |text| {
            if let Err(e) = parse_digest(&text) {
                prop_assert_eq!(e.code, Code::DigestInvalid);
                prop_assert_eq!(e.status, StatusCode::BAD_REQUEST);
            }
            Ok(())
        });
    }
}
