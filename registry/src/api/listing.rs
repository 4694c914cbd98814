//! Listings: `/v2/<name>/tags/list`, `/v2/_catalog`, and
//! `/v2/<name>/referrers/<digest>`.

use axum::response::Response;
use http::StatusCode;
use http::header::LINK;
use serde_json::json;

use super::Call;
use super::blobs::parse_digest;
use super::response::{OCI_FILTERS_APPLIED, Reply};
use crate::error::{Code, RegistryError, Result};
use crate::manifest::OCI_INDEX;
use crate::names::RepoName;
use crate::service::Page;

/// Reads `n` and `last` from the query.
fn page_params(call: &Call) -> Result<(Option<usize>, Option<String>)> {
    let n = match call.query.get("n") {
        Some(n) => Some(n.parse::<usize>().map_err(|_| {
            RegistryError::new(
                Code::PaginationNumberInvalid,
                format!("n={n:?} is not a non-negative integer"),
            )
        })?),
        None => None,
    };
    Ok((n, call.query.get("last").map(str::to_owned)))
}

/// A JSON reply with a `Link: <...>; rel="next"` header when more entries follow.
fn paged(page: &Page, base: &str, n: Option<usize>, body: serde_json::Value) -> Response {
    let mut reply = Reply::new(StatusCode::OK).content_type("application/json");
    if let (true, Some(last)) = (page.more, page.items.last()) {
        let n = n.unwrap_or(page.items.len());
        reply = reply.header(LINK, format!("<{base}?n={n}&last={last}>; rel=\"next\""));
    }
    reply.body(body.to_string())
}

pub(super) async fn tags(call: Call, repo: RepoName) -> Result<Response> {
    let (n, last) = page_params(&call)?;
    let page = call.registry.tags(&repo, n, last.as_deref()).await?;
    let body = json!({ "name": repo.as_str(), "tags": page.items });
    Ok(paged(&page, &format!("/v2/{repo}/tags/list"), n, body))
}

pub(super) async fn catalog(call: Call) -> Result<Response> {
    let (n, last) = page_params(&call)?;
    let page = call.registry.catalog(n, last.as_deref()).await?;
    let body = json!({ "repositories": page.items });
    Ok(paged(&page, "/v2/_catalog", n, body))
}

pub(super) async fn referrers(call: Call, repo: RepoName, digest: String) -> Result<Response> {
    let digest = parse_digest(&digest)?;
    let artifact_type = call.query.get("artifactType").filter(|t| !t.is_empty());
    let descriptors = call
        .registry
        .referrers(&repo, &digest, artifact_type)
        .await?;
    let body = json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": descriptors });
    let mut reply = Reply::new(StatusCode::OK).content_type(OCI_INDEX);
    if artifact_type.is_some() {
        reply = reply.header(OCI_FILTERS_APPLIED, "artifactType");
    }
    Ok(reply.body(body.to_string()))
}
