//! Blob uploads: `POST /v2/<name>/blobs/uploads/` (new session, single-request
//! upload with `?digest=`, or cross-repository `?mount=&from=`), and
//! `GET`/`PATCH`/`PUT`/`DELETE` on a session.

use axum::response::Response;
use http::StatusCode;
use http::header::{CONTENT_LENGTH, CONTENT_RANGE, RANGE};

use super::Call;
use super::blobs::parse_digest;
use super::response::{DOCKER_UPLOAD_UUID, Reply};
use crate::error::{Code, RegistryError, Result};
use crate::names::RepoName;
use crate::notify::Action;
use crate::service::UploadStatus;
use futures_util::TryStreamExt;

/// The `Range` header value for an upload of `size` bytes (Distribution's form).
fn range_header(size: u64) -> String {
    format!("0-{}", size.saturating_sub(1))
}

/// The 202 answer that tells a client where to continue a session.
fn session_reply(repo: &RepoName, status: &UploadStatus, code: StatusCode) -> Response {
    Reply::new(code)
        .location(format!("/v2/{repo}/blobs/uploads/{}", status.id))
        .header(RANGE, range_header(status.size))
        .header(DOCKER_UPLOAD_UUID, &status.id)
        .empty()
}

fn blob_created(repo: &RepoName, digest: &crate::digest::Digest) -> Response {
    Reply::new(StatusCode::CREATED)
        .location(format!("/v2/{repo}/blobs/{digest}"))
        .digest(digest)
        .empty()
}

/// Where the request's chunk starts, by its `Content-Range`, when it has one.
fn chunk_start(call: &Call) -> Result<Option<u64>> {
    call.header(CONTENT_RANGE.as_str())
        .map(|range| parse_content_range(range, call.header(CONTENT_LENGTH.as_str())))
        .transpose()
}

/// Parses `Content-Range: <start>-<end>` (also `bytes <start>-<end>/<total>`)
/// into the chunk's start, checking it against `Content-Length` when given.
fn parse_content_range(header: &str, content_length: Option<&str>) -> Result<u64> {
    let invalid = || {
        RegistryError::new(
            Code::RangeInvalid,
            format!("invalid Content-Range {header:?}"),
        )
    };
    let spec = header
        .trim()
        .trim_start_matches("bytes")
        .trim_start_matches('=')
        .trim();
    let spec = spec.split('/').next().unwrap_or("");
    let (a, b) = spec.split_once('-').ok_or_else(invalid)?;
    let (a, b): (u64, u64) = (
        a.trim().parse().map_err(|_| invalid())?,
        b.trim().parse().map_err(|_| invalid())?,
    );
    if b < a {
        return Err(invalid());
    }
    if let Some(length) = content_length.and_then(|l| l.parse::<u64>().ok()) {
        // `b - a + 1` overflows for the range 0 to u64::MAX.
        if length.checked_sub(1).and_then(|l| a.checked_add(l)) != Some(b) {
            return Err(RegistryError::new(
                Code::RangeInvalid,
                format!("Content-Range {header:?} does not match Content-Length {length}"),
            ));
        }
    }
    Ok(a)
}

pub(super) async fn start(call: Call, repo: RepoName) -> Result<Response> {
    if let Some(mount) = call.query.get("mount") {
        let digest = parse_digest(mount)?;
        let from = call.query.get("from").and_then(RepoName::parse);
        if let Some(from) = from
            && let Some(size) = call.registry.blob_mount(&repo, &from, &digest).await?
        {
            call.events
                .blob(Action::Mount, &repo, &digest, size, Some(&from));
            return Ok(blob_created(&repo, &digest));
        }
        // Not mountable: the client uploads it instead, into a new session.
        let status = call.registry.upload_start(&repo).await?;
        return Ok(session_reply(&repo, &status, StatusCode::ACCEPTED));
    }
    if let Some(digest) = call.query.get("digest") {
        let digest = parse_digest(digest)?;
        let (registry, events) = (call.registry.clone(), call.events);
        let body = call.body.into_data_stream().map_err(std::io::Error::other);
        let done = registry.upload_monolithic(&repo, &digest, body).await?;
        events.blob(Action::Push, &repo, &done.digest, done.size, None);
        return Ok(blob_created(&repo, &done.digest));
    }
    let status = call.registry.upload_start(&repo).await?;
    Ok(session_reply(&repo, &status, StatusCode::ACCEPTED))
}

pub(super) async fn status(call: Call, repo: RepoName, id: String) -> Result<Response> {
    let status = call.registry.upload_status(&repo, &id).await?;
    Ok(session_reply(&repo, &status, StatusCode::NO_CONTENT))
}

pub(super) async fn patch(call: Call, repo: RepoName, id: String) -> Result<Response> {
    let start = chunk_start(&call)?;
    let registry = call.registry.clone();
    let status = registry
        .upload_append(&repo, &id, start, call.body_stream())
        .await?;
    Ok(session_reply(&repo, &status, StatusCode::ACCEPTED))
}

pub(super) async fn put(call: Call, repo: RepoName, id: String) -> Result<Response> {
    let digest = call.query.get("digest").ok_or_else(|| {
        RegistryError::new(
            Code::DigestInvalid,
            "the digest query parameter is required",
        )
    })?;
    let digest = parse_digest(digest)?;
    let start = chunk_start(&call)?;
    let (registry, events) = (call.registry.clone(), call.events);
    let body = call.body.into_data_stream().map_err(std::io::Error::other);
    let done = registry
        .upload_complete(&repo, &id, &digest, start, Some(body))
        .await?;
    events.blob(Action::Push, &repo, &done.digest, done.size, None);
    Ok(blob_created(&repo, &done.digest))
}

pub(super) async fn cancel(call: Call, repo: RepoName, id: String) -> Result<Response> {
    call.registry.upload_cancel(&repo, &id).await?;
    Ok(Reply::new(StatusCode::NO_CONTENT).empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::properties::{self, MANY};
    use proptest::prelude::*;

    #[test]
    fn range_headers() {
        assert_eq!(range_header(0), "0-0");
        assert_eq!(range_header(10), "0-9");
    }

    #[test]
    fn content_ranges() {
        assert_eq!(parse_content_range("0-9", Some("10")).unwrap(), 0);
        assert_eq!(parse_content_range("bytes 10-19/100", None).unwrap(), 10);
        for (bad, length) in [
            ("9-0", None),
            ("0-9", Some("9")),
            ("a-b", None),
            ("0-18446744073709551615", Some("0")),
        ] {
            let err = parse_content_range(bad, length).unwrap_err();
            assert_eq!(err.code, Code::RangeInvalid, "{bad}");
        }
    }

    #[test]
    fn property_content_ranges_start_their_chunk_or_are_range_invalid() {
        let number = prop_oneof!["[0-9]{1,20}", any::<u64>().prop_map(|n| n.to_string())];
        let header = prop_oneof![
            (number.clone(), number.clone()).prop_map(|(a, b)| format!("{a}-{b}")),
            (number.clone(), number.clone()).prop_map(|(a, b)| format!("bytes {a}-{b}/*")),
            "[0-9 a-z=/*-]{0,30}",
            any::<String>(),
        ];
        let length = prop::option::of(prop_oneof![number, any::<String>()]);
        properties::check(
            "Content-Range starts its chunk or is RANGE_INVALID",
            MANY,
            (header, length),
            |(header, length)| {
                match parse_content_range(&header, length.as_deref()) {
                    Ok(start) => {
                        let digits: String = header.chars().filter(char::is_ascii_digit).collect();
                        prop_assert!(digits.contains(&start.to_string()), "{}", header);
                    }
                    Err(e) => {
                        prop_assert_eq!(e.code, Code::RangeInvalid);
                        prop_assert_eq!(e.status, StatusCode::RANGE_NOT_SATISFIABLE);
                    }
                }
                Ok(())
            },
        );
    }
}
