//! Building responses: OCI error bodies and the headers the spec requires.

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use http::{HeaderName, HeaderValue, StatusCode};

use crate::digest::Digest;
use crate::error::RegistryError;

/// `Docker-Content-Digest`.
pub const DOCKER_CONTENT_DIGEST: HeaderName = HeaderName::from_static("docker-content-digest");
/// `Docker-Upload-UUID`.
pub const DOCKER_UPLOAD_UUID: HeaderName = HeaderName::from_static("docker-upload-uuid");
/// `OCI-Subject`.
pub const OCI_SUBJECT: HeaderName = HeaderName::from_static("oci-subject");
/// `OCI-Filters-Applied`.
pub const OCI_FILTERS_APPLIED: HeaderName = HeaderName::from_static("oci-filters-applied");

impl IntoResponse for RegistryError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "errors": [{ "code": self.code.as_str(), "message": self.code.message(), "detail": self.detail }]
        });
        Reply::new(self.status)
            .content_type("application/json")
            .body(body.to_string())
    }
}

/// A response builder with the headers used across handlers.
pub struct Reply(http::response::Builder);

impl Reply {
    /// A response with `status`.
    pub fn new(status: StatusCode) -> Self {
        Reply(Response::builder().status(status))
    }

    /// Adds a header; values here are built from validated parts, so always valid.
    pub fn header(self, name: HeaderName, value: impl AsRef<str>) -> Self {
        match HeaderValue::from_str(value.as_ref()) {
            Ok(v) => Reply(self.0.header(name, v)),
            Err(_) => self,
        }
    }

    /// Adds `Docker-Content-Digest`.
    pub fn digest(self, digest: &Digest) -> Self {
        self.header(DOCKER_CONTENT_DIGEST, digest.to_string())
    }

    /// Adds `Location`.
    pub fn location(self, location: impl AsRef<str>) -> Self {
        self.header(LOCATION, location)
    }

    /// Adds `Content-Type`.
    pub fn content_type(self, media_type: &str) -> Self {
        self.header(CONTENT_TYPE, media_type)
    }

    /// Adds `Content-Length`.
    pub fn length(self, length: u64) -> Self {
        self.header(CONTENT_LENGTH, length.to_string())
    }

    /// Finishes with a body.
    pub fn body(self, body: impl Into<Body>) -> Response {
        self.0
            .body(body.into())
            .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
    }

    /// Finishes with an empty body.
    pub fn empty(self) -> Response {
        self.length(0).body(Body::empty())
    }
}
