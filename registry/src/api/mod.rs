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

use crate::auth::{Htpasswd, Verdict};
use crate::digest::Digest;
use crate::names::{RepoName, Tag};
use crate::error::{Code, RegistryError};
use crate::metrics::{Metrics, RequestLabels, RouteLabels};
use crate::notify::{Action, Actor, Notifier, RequestRecord, Target};
use crate::service::Registry;
use routes::Route;

/// Shared state of every handler.
#[derive(Clone)]
pub struct AppState {
    /// The registry service.
    pub registry: Arc<Registry>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Webhook notifications.
    pub notifier: Arc<Notifier>,
    /// Basic authentication, when configured.
    pub auth: Option<Arc<Htpasswd>>,
    /// With `auth`, whether GET and HEAD need no credentials.
    pub anonymous_pull: bool,
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
}

/// The client's address, attached to each request by the server.
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub std::net::SocketAddr);

/// The request id, attached to each request.
#[derive(Debug, Clone)]
struct RequestId(String);

/// The authenticated user, attached to the request and its response.
#[derive(Debug, Clone)]
struct User(String);

/// The route and repository a response answered, for metrics and the access log.
#[derive(Debug, Clone)]
struct RouteInfo {
    route: &'static str,
    repository: Option<String>,
}

/// The application router.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/v2", any(v2))
        .route("/v2/", any(v2))
        .route("/v2/{*rest}", any(v2))
        .layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .layer(middleware::from_fn_with_state(state.clone(), request_context))
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
    pub events: Events,
}

/// What handlers need to publish notification events for their request.
pub(crate) struct Events {
    notifier: Arc<Notifier>,
    request: RequestRecord,
    actor: Actor,
    base_url: String,
}

/// Media type of blob events (Distribution's).
const BLOB_MEDIA_TYPE: &str = "application/octet-stream";

impl Events {
    /// Publishes `action` on `target`, filling in the request, actor and
    /// an absolute URL for `path`.
    fn publish(&self, action: Action, path: String, target: Target) {
        if self.notifier.is_enabled() {
            let target = Target { url: format!("{}{path}", self.base_url), ..target };
            self.notifier.publish(action, target, self.request.clone(), self.actor.clone());
        }
    }

    /// Publishes an event about a manifest, with its tag when addressed by one.
    pub fn manifest(&self, action: Action, repo: &RepoName, digest: &Digest, media_type: &str, size: u64, tag: Option<&Tag>) {
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
    pub fn blob(&self, action: Action, repo: &RepoName, digest: &Digest, size: u64, from: Option<&RepoName>) {
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
        let target = Target { repository: repo.to_string(), tag: Some(tag.to_string()), ..Target::default() };
        self.publish(Action::Delete, format!("/v2/{repo}/manifests/{tag}"), target);
    }
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
        Route::Manifest(r, _) | Route::Blob(r, _) | Route::Upload(r, _) | Route::Referrers(r, _) => Some(r),
    }
}

fn header_text(headers: &HeaderMap, name: http::header::HeaderName) -> String {
    headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned()
}

async fn v2(State(app): State<AppState>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let host = header_text(&parts.headers, http::header::HOST);
    let events = Events {
        notifier: app.notifier.clone(),
        request: RequestRecord {
            id: parts.extensions.get::<RequestId>().map(|r| r.0.clone()).unwrap_or_default(),
            addr: parts.extensions.get::<PeerAddr>().map(|p| p.0.to_string()).unwrap_or_default(),
            host: host.clone(),
            method: parts.method.to_string(),
            useragent: header_text(&parts.headers, http::header::USER_AGENT),
        },
        actor: Actor { name: parts.extensions.get::<User>().map(|u| u.0.clone()).unwrap_or_default() },
        base_url: format!("{}://{host}", if app.tls { "https" } else { "http" }),
    };
    let route = match routes::parse(parts.uri.path()) {
        Some(Ok(route)) => route,
        Some(Err(e)) => return e.into_response(),
        None => return (StatusCode::NOT_FOUND, "404 page not found\n").into_response(),
    };
    let info = RouteInfo { route: route_name(&route), repository: route_repository(&route).map(|r| r.to_string()) };
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

/// Checks credentials on `/v2` routes when `auth.htpasswd` is configured,
/// answering 401 with a Basic challenge otherwise. The API root always
/// challenges clients without credentials, so that they learn to send them
/// even when anonymous pulls are allowed.
async fn authenticate(State(app): State<AppState>, mut request: Request, next: Next) -> Response {
    let Some(db) = app.auth.clone() else { return next.run(request).await };
    let path = request.uri().path();
    if !path.starts_with("/v2") {
        return next.run(request).await;
    }
    let is_root = path == "/v2" || path == "/v2/";
    let header = request.headers().get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok()).map(str::to_owned);
    // bcrypt is deliberately slow: keep it off the async worker threads.
    let verdict = tokio::task::spawn_blocking(move || db.check(header.as_deref())).await.unwrap_or(Verdict::Denied);
    let read = matches!(*request.method(), Method::GET | Method::HEAD);
    match verdict {
        Verdict::User(name) => {
            request.extensions_mut().insert(User(name.clone()));
            let mut response = next.run(request).await;
            response.extensions_mut().insert(User(name));
            response
        }
        Verdict::Anonymous if app.anonymous_pull && read && !is_root => next.run(request).await,
        _ => {
            let realm = app.auth.as_ref().map(|a| a.realm().replace('"', "")).unwrap_or_default();
            let mut response = RegistryError::new(Code::Unauthorized, "authentication required").into_response();
            if let Ok(challenge) = HeaderValue::from_str(&format!("Basic realm=\"{realm}\"")) {
                response.headers_mut().insert(http::header::WWW_AUTHENTICATE, challenge);
            }
            response
        }
    }
}

const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const API_VERSION: HeaderName = HeaderName::from_static("docker-distribution-api-version");

/// A client-supplied request id, if it is short and printable.
fn client_request_id(headers: &HeaderMap) -> Option<String> {
    let id = headers.get(&X_REQUEST_ID)?.to_str().ok()?;
    (!id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_graphic())).then(|| id.to_owned())
}

/// Gives every request an id and a tracing span, adds the standard headers,
/// records metrics, and writes the access log line.
async fn request_context(State(app): State<AppState>, mut request: Request, next: Next) -> Response {
    let id = client_request_id(request.headers()).unwrap_or_else(|| format!("{:032x}", rand::random::<u128>()));
    request.extensions_mut().insert(RequestId(id.clone()));
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let received = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let request = {
        let received = received.clone();
        request.map(|body| {
            Body::new(http_body_util::BodyExt::map_frame(body, move |frame| {
                if let Some(data) = frame.data_ref() {
                    received.fetch_add(data.len() as u64, std::sync::atomic::Ordering::Relaxed);
                }
                frame
            }))
        })
    };
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
    let elapsed = started.elapsed();
    let status = response.status();
    let info = response.extensions().get::<RouteInfo>().cloned();
    let route = match (&info, path.as_str()) {
        (Some(info), _) => info.route,
        (None, "/healthz") => "healthz",
        (None, "/readyz") => "readyz",
        (None, "/metrics") => "metrics",
        (None, _) => "other",
    };
    let labels = RouteLabels { route, method: method.to_string() };
    let metrics = &app.metrics;
    metrics.requests.get_or_create(&RequestLabels { route, method: labels.method.clone(), status: status.as_str().to_owned() }).inc();
    metrics.request_duration.get_or_create(&labels).observe(elapsed.as_secs_f64());
    let bytes_in = received.load(std::sync::atomic::Ordering::Relaxed);
    metrics.bytes_received.get_or_create(&labels).inc_by(bytes_in);
    if app.access_log {
        let user = response.extensions().get::<User>().map(|u| u.0.as_str()).unwrap_or("");
        let repository = info.as_ref().and_then(|i| i.repository.as_deref()).unwrap_or("");
        let bytes_out = response
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
            .unwrap_or(0);
        span.in_scope(|| {
            tracing::info!(
                status = status.as_u16(),
                route,
                repository,
                user,
                bytes_in,
                bytes_out,
                duration_us = elapsed.as_micros() as u64,
                "request"
            )
        });
    }
    let sent = metrics.bytes_sent.get_or_create(&labels).clone();
    response.map(|body| {
        Body::new(http_body_util::BodyExt::map_frame(body, move |frame| {
            if let Some(data) = frame.data_ref() {
                sent.inc_by(data.len() as u64);
            }
            frame
        }))
    })
}
