//! Requests routed to a pull-through cache: manifest and blob reads are
//! served from the cache or the upstream; everything else is refused with
//! 405 `UNSUPPORTED`, as Distribution's proxy mode refuses pushes.

use std::sync::Arc;

use axum::response::Response;
use http::header::{ACCEPT, RANGE};
use http::{Method, StatusCode};

use super::Call;
use super::blobs::{self, parse_digest, parse_range};
use super::manifests::{self, parse_reference};
use super::response::Reply;
use super::routes::Route;
use crate::error::{Code, RegistryError, Result};
use crate::proxy::Cache;

/// Answers `call` on `route` from `cache`.
pub(super) async fn handle(call: Call, route: Route, cache: Arc<Cache>) -> Result<Response> {
    match (&call.method, route) {
        (&Method::GET | &Method::HEAD, Route::Base) => Ok(Reply::new(StatusCode::OK)
            .content_type("application/json")
            .body("{}")),
        (&Method::GET | &Method::HEAD, Route::Manifest(repo, reference)) => {
            let reference = parse_reference(&reference)?;
            let manifest = cache
                .manifest(&repo, &reference, call.headers.get(ACCEPT))
                .await?;
            Ok(manifests::answer(&call, &repo, &reference, manifest))
        }
        (&Method::HEAD, Route::Blob(repo, digest)) => {
            let digest = parse_digest(&digest)?;
            let size = cache.blob_size(&repo, &digest).await?;
            Ok(blobs::head_answer(&digest, size))
        }
        (&Method::GET, Route::Blob(repo, digest)) => {
            let digest = parse_digest(&digest)?;
            let range = call.header(RANGE.as_str()).map(parse_range).transpose()?;
            let blob = cache.blob(&repo, &digest, range).await?;
            Ok(blobs::answer(&call, &repo, &digest, blob))
        }
        (method, route) => Err(RegistryError::new(
            Code::Unsupported,
            format!("{method} of {route:?} is not supported on a pull-through mirror"),
        )),
    }
}
