//! The HTTP API: OCI Distribution v1.1 routes, health endpoints, and the
//! per-request context (request id, access log, standard headers).
//!
//! Handlers translate HTTP into service calls and service results into
//! HTTP; they never touch storage paths.

mod blobs;
mod listing;
mod manifests;
mod response;
pub mod routes;
mod uploads;

use std::io;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::Router;
use bytes::Bytes;
use futures_util::{Stream, TryStreamExt};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use tracing::Instrument;

use crate::error::{Code, RegistryError};
use crate::service::Registry;
use routes::Route;

/// Shared state of every handler.
#[derive(Clone)]
pub struct AppState {
    /// The registry service.
    pub registry: Arc<Registry>,
    /// Headers added to every response (`http.headers`).
    pub extra_headers: Arc<HeaderMap>,
    /// Whether `/readyz` checks storage.
    pub check_storage: bool,
    /// Whether each request is logged.
    pub access_log: bool,
    /// `log.fields`, rendered, attached to every request span.
    pub log_fields: Arc<str>,
}

/// The application router.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/v2", any(v2))
        .route("/v2/", any(v2))
        .route("/v2/{*rest}", any(v2))
        .layer(middleware::from_fn_with_state(state.clone(), request_context))
        .with_state(state)
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(app): State<AppState>) -> Response {
    if !app.check_storage {
        return "ok\n".into_response();
    }
    match app.registry.storage().check().await {
        Ok(()) => "ok\n".into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            (StatusCode::SERVICE_UNAVAILABLE, format!("storage not ready: {e}\n")).into_response()
        }
    }
}

/// The query string as pairs, for handlers to pick from.
pub(crate) struct Query(Vec<(String, String)>);

impl Query {
    fn parse(query: Option<&str>) -> Query {
        Query(
            query
                .map(|q| {
                    q.split('&')
                        .filter(|kv| !kv.is_empty())
                        .map(|kv| {
                            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                            (routes::decode_query(k), routes::decode_query(v))
                        })
                        .collect()
                })
                .unwrap_or_default(),
        )
    }

    /// The first value of `key`.
    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

/// Everything a `/v2/` handler gets about its request.
pub(crate) struct Call {
    pub registry: Arc<Registry>,
    pub method: Method,
    pub headers: HeaderMap,
    pub query: Query,
    pub body: Body,
}

impl Call {
    /// The request body as a stream of byte chunks.
    pub fn body_stream(self) -> impl Stream<Item = io::Result<Bytes>> + Send + Unpin {
        self.body.into_data_stream().map_err(io::Error::other)
    }

    /// A header's value as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

async fn v2(State(app): State<AppState>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let call = Call {
        registry: app.registry.clone(),
        method: parts.method,
        headers: parts.headers,
        query: Query::parse(parts.uri.query()),
        body,
    };
    let route = match routes::parse(parts.uri.path()) {
        Some(Ok(route)) => route,
        Some(Err(e)) => return e.into_response(),
        None => return (StatusCode::NOT_FOUND, "404 page not found\n").into_response(),
    };
    let result = match (&call.method, route) {
        (&Method::GET | &Method::HEAD, Route::Base) => Ok(response::Reply::new(StatusCode::OK)
            .content_type("application/json")
            .body("{}")),
        (&Method::GET, Route::Catalog) => listing::catalog(call).await,
        (&Method::GET, Route::Tags(repo)) => listing::tags(call, repo).await,
        (&Method::GET, Route::Referrers(repo, digest)) => listing::referrers(call, repo, digest).await,
        (&Method::GET | &Method::HEAD, Route::Manifest(repo, reference)) => manifests::get(call, repo, reference).await,
        (&Method::PUT, Route::Manifest(repo, reference)) => manifests::put(call, repo, reference).await,
        (&Method::DELETE, Route::Manifest(repo, reference)) => manifests::delete(call, repo, reference).await,
        (&Method::GET | &Method::HEAD, Route::Blob(repo, digest)) => blobs::get(call, repo, digest).await,
        (&Method::DELETE, Route::Blob(repo, digest)) => blobs::delete(call, repo, digest).await,
        (&Method::POST, Route::UploadStart(repo)) => uploads::start(call, repo).await,
        (&Method::GET, Route::Upload(repo, id)) => uploads::status(call, repo, id).await,
        (&Method::PATCH, Route::Upload(repo, id)) => uploads::patch(call, repo, id).await,
        (&Method::PUT, Route::Upload(repo, id)) => uploads::put(call, repo, id).await,
        (&Method::DELETE, Route::Upload(repo, id)) => uploads::cancel(call, repo, id).await,
        (method, route) => Err(RegistryError::new(Code::Unsupported, format!("{method} is not supported on {route:?}"))),
    };
    result.unwrap_or_else(IntoResponse::into_response)
}

const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const API_VERSION: HeaderName = HeaderName::from_static("docker-distribution-api-version");

/// A client-supplied request id, if it is short and printable.
fn client_request_id(headers: &HeaderMap) -> Option<String> {
    let id = headers.get(&X_REQUEST_ID)?.to_str().ok()?;
    (!id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_graphic())).then(|| id.to_owned())
}

/// Gives every request an id and a tracing span, adds the standard headers,
/// and writes the access log line.
async fn request_context(State(app): State<AppState>, request: Request, next: Next) -> Response {
    let id = client_request_id(request.headers()).unwrap_or_else(|| format!("{:032x}", rand::random::<u128>()));
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let span = tracing::info_span!("request", id = %id, method = %method, path = %path, fields = tracing::field::Empty);
    if !app.log_fields.is_empty() {
        span.record("fields", &*app.log_fields);
    }
    let started = Instant::now();
    let mut response = next.run(request).instrument(span.clone()).await;
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&id) {
        headers.insert(X_REQUEST_ID, value);
    }
    if path.starts_with("/v2") {
        headers.insert(API_VERSION, HeaderValue::from_static("registry/2.0"));
    }
    for (name, value) in app.extra_headers.iter() {
        headers.append(name, value.clone());
    }
    if app.access_log {
        let status = response.status().as_u16();
        let micros = started.elapsed().as_micros() as u64;
        span.in_scope(|| tracing::info!(status, duration_us = micros, "request"));
    }
    response
}
