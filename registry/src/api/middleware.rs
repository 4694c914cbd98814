//! Per-request middleware: authentication, and the request context (id,
//! tracing span, standard headers, metrics, access log).

use std::time::Instant;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use tracing::Instrument;

use super::request_body::RequestBody;
use super::{AppState, PeerAddr};
use crate::auth::Verdict;
use crate::error::{Code, RegistryError};
use crate::metrics::{RequestLabels, RouteLabels, method_label};

/// The request id, attached to each request.
#[derive(Debug, Clone)]
pub(super) struct RequestId(pub(super) String);

/// The authenticated user, attached to the request and its response.
#[derive(Debug, Clone)]
pub(super) struct User(pub(super) String);

/// The route and repository a response answered, for metrics and the access log.
#[derive(Debug, Clone)]
pub(super) struct RouteInfo {
    pub(super) route: &'static str,
    pub(super) repository: Option<String>,
}

/// Checks credentials on `/v2` and `/berth` routes when `auth.htpasswd` is
/// configured, answering 401 with a Basic challenge otherwise. The API root
/// always challenges clients without credentials, so that they learn to send
/// them even when anonymous pulls are allowed; `/berth` routes are not pulls
/// and always need credentials. Without `auth`, pushes and deletes from
/// outside `berth.writenetworks` get 403 `DENIED`.
pub(super) async fn authenticate(
    State(app): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let Some(db) = app.auth.clone() else {
        if let Some(networks) = &app.write_networks
            && is_write(&request)
        {
            let peer = request.extensions().get::<PeerAddr>().map(|p| p.0.ip());
            if !peer.is_some_and(|ip| networks.iter().any(|n| n.contains(ip))) {
                let allowed: Vec<String> = networks.iter().map(|n| n.to_string()).collect();
                return RegistryError::new(
                    Code::Denied,
                    format!(
                        "pushes and deletes without credentials are accepted only from {}",
                        allowed.join(", ")
                    ),
                )
                .into_response();
            }
        }
        return next.run(request).await;
    };
    let path = request.uri().path();
    // The last GC report holds counts only, like /metrics; the operator
    // reads each node's through the API server's pod proxy for the status.
    if path == "/berth/gc/last" {
        return next.run(request).await;
    }
    let is_berth = path.starts_with("/berth/");
    if !path.starts_with("/v2") && !is_berth {
        return next.run(request).await;
    }
    let needs_credentials = is_berth || path == "/v2" || path == "/v2/";
    let header = request
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    // bcrypt is deliberately slow: keep it off the async worker threads.
    let verdict = tokio::task::spawn_blocking(move || db.check(header.as_deref()))
        .await
        .unwrap_or(Verdict::Denied);
    let read = matches!(*request.method(), Method::GET | Method::HEAD);
    match verdict {
        Verdict::User(name) => {
            request.extensions_mut().insert(User(name.clone()));
            let mut response = next.run(request).await;
            response.extensions_mut().insert(User(name));
            response
        }
        Verdict::Anonymous if app.anonymous_pull && read && !needs_credentials => {
            next.run(request).await
        }
        _ => {
            let realm = app
                .auth
                .as_ref()
                .map(|a| a.realm().replace('"', ""))
                .unwrap_or_default();
            let mut response =
                RegistryError::new(Code::Unauthorized, "authentication required").into_response();
            if let Ok(challenge) = HeaderValue::from_str(&format!("Basic realm=\"{realm}\"")) {
                response
                    .headers_mut()
                    .insert(http::header::WWW_AUTHENTICATE, challenge);
            }
            response
        }
    }
}

/// Whether `request` would change the registry: anything but a read on the
/// API.
fn is_write(request: &Request) -> bool {
    request.uri().path().starts_with("/v2/")
        && !matches!(
            *request.method(),
            Method::GET | Method::HEAD | Method::OPTIONS
        )
}

const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const API_VERSION: HeaderName = HeaderName::from_static("docker-distribution-api-version");

/// A client-supplied request id, if it is short and printable.
fn client_request_id(headers: &HeaderMap) -> Option<String> {
    let id = headers.get(&X_REQUEST_ID)?.to_str().ok()?;
    (!id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_graphic()))
        .then(|| id.to_owned())
}

/// Gives every request an id and a tracing span, adds the standard headers,
/// records metrics, and writes the access log line.
pub(super) async fn request_context(
    State(app): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let id = client_request_id(request.headers())
        .unwrap_or_else(|| format!("{:032x}", rand::random::<u128>()));
    request.extensions_mut().insert(RequestId(id.clone()));
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let (body, request_body) =
        RequestBody::new(std::mem::take(request.body_mut()), request.headers());
    *request.body_mut() = body;
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
    // An error answered before the request body was read: read the rest so
    // that the client gets to read the answer, or, when there is too much,
    // close the connection and say so, so that the client does not send
    // its next request into a connection about to close.
    let failed = response.status().is_client_error() || response.status().is_server_error();
    if failed && !request_body.drain_after_error().await {
        response
            .headers_mut()
            .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    }
    let elapsed = started.elapsed();
    let status = response.status();
    let info = response.extensions().get::<RouteInfo>().cloned();
    let route = match (&info, path.as_str()) {
        (Some(info), _) => info.route,
        (None, "/healthz") => "healthz",
        (None, "/readyz") => "readyz",
        (None, "/metrics") => "metrics",
        (None, "/berth/gc/last") => "gc_report",
        (None, _) => "other",
    };
    let labels = RouteLabels {
        route,
        method: method_label(&method),
    };
    let metrics = &app.metrics;
    metrics
        .requests
        .get_or_create(&RequestLabels {
            route,
            method: labels.method,
            status: status.as_str().to_owned(),
        })
        .inc();
    metrics
        .request_duration
        .get_or_create(&labels)
        .observe(elapsed.as_secs_f64());
    let bytes_in = request_body.received();
    metrics
        .bytes_received
        .get_or_create(&labels)
        .inc_by(bytes_in);
    if app.access_log {
        let user = response
            .extensions()
            .get::<User>()
            .map(|u| u.0.as_str())
            .unwrap_or("");
        let repository = info
            .as_ref()
            .and_then(|i| i.repository.as_deref())
            .unwrap_or("");
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
