//! The HTTP API: OCI Distribution v1.1 routes, health endpoints, and the
//! per-request context (request id, access log, standard headers).
//!
//! Handlers translate HTTP into service calls and service results into
//! HTTP; they never touch storage paths.

mod blobs;
mod events;
mod listing;
mod manifests;
mod middleware;
mod mirror;
mod request_body;
mod response;
pub mod routes;
mod uploads;

use std::io;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use bytes::Bytes;
use futures_util::{Stream, TryStreamExt};
use http::{HeaderMap, Method, StatusCode};

use crate::auth::Htpasswd;
use crate::error::{Code, RegistryError};
use crate::gc::LastReport;
use crate::metrics::Metrics;
use crate::names::RepoName;
use crate::notify::{Actor, Notifier, RequestRecord};
use crate::service::Registry;
use events::Events;
use middleware::{RequestId, RouteInfo, User};
use routes::Route;

/// Shared state of every handler.
#[derive(Clone)]
pub struct AppState {
    /// The registry service.
    pub registry: Arc<Registry>,
    /// The report of the last in-server garbage collection.
    pub gc_report: Arc<LastReport>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Webhook notifications.
    pub notifier: Arc<Notifier>,
    /// Basic authentication, when configured.
    pub auth: Option<Arc<Htpasswd>>,
    /// With `auth`, whether GET and HEAD need no credentials.
    pub anonymous_pull: bool,
    /// Without `auth`, the address ranges clients may push and delete from
    /// (`berth.writenetworks`); `None` is anywhere.
    pub write_networks: Option<Arc<[crate::config::network::Network]>>,
    /// Whether the listener speaks TLS (for URLs in events).
    pub tls: bool,
    /// Headers added to every response (`http.headers`).
    pub extra_headers: Arc<HeaderMap>,
    /// Whether `/readyz` checks storage.
    pub check_storage: bool,
    /// Whether each request is logged.
    pub access_log: bool,
    /// `log.fields`, rendered, attached to every request span.
    pub log_fields: Arc<str>,
    /// Pull-through upstreams (`proxy`, `berth.mirrors`), when configured.
    pub pull_through: Option<Arc<crate::proxy::PullThrough>>,
}

/// The client's address, attached to each request by the server.
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub std::net::SocketAddr);

/// The application router.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/berth/gc/last", get(last_gc_report))
        .route("/v2", any(v2))
        .route("/v2/", any(v2))
        .route("/v2/{*rest}", any(v2))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::authenticate,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::request_context,
        ))
        .with_state(state)
}

/// The router of the separate metrics listener (`http.debug.addr`).
pub fn metrics_router(metrics: Arc<Metrics>, path: &str) -> Router {
    Router::new().route(path, get(move || async move { metrics_response(&metrics) }))
}

async fn metrics(State(app): State<AppState>) -> Response {
    metrics_response(&app.metrics)
}

fn metrics_response(metrics: &Metrics) -> Response {
    response::Reply::new(StatusCode::OK)
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .body(metrics.encode())
}

/// `GET /berth/gc/last`: the report of the last collection this server ran
/// itself (`berth.gcschedule`), or 404 before the first.
async fn last_gc_report(State(app): State<AppState>) -> Response {
    match app.gc_report.get() {
        Some(json) => response::Reply::new(StatusCode::OK)
            .content_type("application/json")
            .body(json),
        None => (
            StatusCode::NOT_FOUND,
            "no garbage collection has run in this server yet\n",
        )
            .into_response(),
    }
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
            (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("storage not ready: {e}\n"),
            )
                .into_response()
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
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Everything a `/v2/` handler gets about its request.
pub(crate) struct Call {
    pub registry: Arc<Registry>,
    pub method: Method,
    pub headers: HeaderMap,
    pub query: Query,
    pub body: Body,
    pub events: Events,
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

/// The metrics label of a route.
fn route_name(route: &Route) -> &'static str {
    match route {
        Route::Base => "base",
        Route::Catalog => "catalog",
        Route::Tags(_) => "tags",
        Route::Manifest(..) => "manifest",
        Route::Blob(..) => "blob",
        Route::UploadStart(_) | Route::Upload(..) => "upload",
        Route::Referrers(..) => "referrers",
    }
}

fn route_repository(route: &Route) -> Option<&RepoName> {
    match route {
        Route::Base | Route::Catalog => None,
        Route::Tags(r) | Route::UploadStart(r) => Some(r),
        Route::Manifest(r, _)
        | Route::Blob(r, _)
        | Route::Upload(r, _)
        | Route::Referrers(r, _) => Some(r),
    }
}

fn header_text(headers: &HeaderMap, name: http::header::HeaderName) -> String {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

async fn v2(State(app): State<AppState>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let host = header_text(&parts.headers, http::header::HOST);
    let events = Events {
        notifier: app.notifier.clone(),
        request: RequestRecord {
            id: parts
                .extensions
                .get::<RequestId>()
                .map(|r| r.0.clone())
                .unwrap_or_default(),
            addr: parts
                .extensions
                .get::<PeerAddr>()
                .map(|p| p.0.to_string())
                .unwrap_or_default(),
            host: host.clone(),
            method: parts.method.to_string(),
            useragent: header_text(&parts.headers, http::header::USER_AGENT),
        },
        actor: Actor {
            name: parts
                .extensions
                .get::<User>()
                .map(|u| u.0.clone())
                .unwrap_or_default(),
        },
        base_url: format!("{}://{host}", if app.tls { "https" } else { "http" }),
    };
    let route = match routes::parse(parts.uri.path()) {
        Some(Ok(route)) => route,
        Some(Err(e)) => return e.into_response(),
        None => return (StatusCode::NOT_FOUND, "404 page not found\n").into_response(),
    };
    let info = RouteInfo {
        route: route_name(&route),
        repository: route_repository(&route).map(|r| r.to_string()),
    };
    let call = Call {
        registry: app.registry.clone(),
        method: parts.method,
        headers: parts.headers,
        query: Query::parse(parts.uri.query()),
        body,
        events,
    };
    let writes_upload = matches!(
        (&call.method, &route),
        (&Method::PATCH | &Method::PUT, Route::Upload(..)) | (&Method::POST, Route::UploadStart(_))
    );
    let _in_flight = writes_upload.then(|| InFlight::new(&app.metrics));
    if let Some(cache) = app
        .pull_through
        .as_ref()
        .and_then(|p| p.route(call.query.get("ns")))
    {
        let mut response = mirror::handle(call, route, cache)
            .await
            .unwrap_or_else(IntoResponse::into_response);
        response.extensions_mut().insert(info);
        return response;
    }
    let result = match (&call.method, route) {
        (&Method::GET | &Method::HEAD, Route::Base) => Ok(response::Reply::new(StatusCode::OK)
            .content_type("application/json")
            .body("{}")),
        (&Method::GET, Route::Catalog) => listing::catalog(call).await,
        (&Method::GET, Route::Tags(repo)) => listing::tags(call, repo).await,
        (&Method::GET, Route::Referrers(repo, digest)) => {
            listing::referrers(call, repo, digest).await
        }
        (&Method::GET | &Method::HEAD, Route::Manifest(repo, reference)) => {
            manifests::get(call, repo, reference).await
        }
        (&Method::PUT, Route::Manifest(repo, reference)) => {
            manifests::put(call, repo, reference).await
        }
        (&Method::DELETE, Route::Manifest(repo, reference)) => {
            manifests::delete(call, repo, reference).await
        }
        (&Method::GET | &Method::HEAD, Route::Blob(repo, digest)) => {
            blobs::get(call, repo, digest).await
        }
        (&Method::DELETE, Route::Blob(repo, digest)) => blobs::delete(call, repo, digest).await,
        (&Method::POST, Route::UploadStart(repo)) => uploads::start(call, repo).await,
        (&Method::GET, Route::Upload(repo, id)) => uploads::status(call, repo, id).await,
        (&Method::PATCH, Route::Upload(repo, id)) => uploads::patch(call, repo, id).await,
        (&Method::PUT, Route::Upload(repo, id)) => uploads::put(call, repo, id).await,
        (&Method::DELETE, Route::Upload(repo, id)) => uploads::cancel(call, repo, id).await,
        (method, route) => Err(RegistryError::new(
            Code::Unsupported,
            format!("{method} is not supported on {route:?}"),
        )),
    };
    let mut response = result.unwrap_or_else(IntoResponse::into_response);
    response.extensions_mut().insert(info);
    response
}

/// Counts an upload request in `uploads_in_flight` while it lives.
struct InFlight(prometheus_client::metrics::gauge::Gauge);

impl InFlight {
    fn new(metrics: &Metrics) -> Self {
        metrics.uploads_in_flight.inc();
        InFlight(metrics.uploads_in_flight.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}
