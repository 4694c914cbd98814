//! Registry errors: the OCI Distribution error codes, each with its HTTP status.
//!
//! The service layer returns these; the API layer turns them into the spec's
//! `{"errors":[{"code","message","detail"}]}` body. Storage failures that are
//! not a client's fault become `Internal` and are logged, never shown in full.

use http::StatusCode;

use crate::storage::StorageError;

/// An OCI Distribution error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// Blob unknown to registry.
    BlobUnknown,
    /// Blob upload invalid.
    BlobUploadInvalid,
    /// Blob upload unknown to registry.
    BlobUploadUnknown,
    /// Provided digest did not match uploaded content, or is malformed.
    DigestInvalid,
    /// A manifest references a blob unknown to the registry.
    ManifestBlobUnknown,
    /// The manifest is invalid.
    ManifestInvalid,
    /// Manifest unknown to the registry.
    ManifestUnknown,
    /// Invalid repository name.
    NameInvalid,
    /// Repository name not known to registry.
    NameUnknown,
    /// Provided length did not match content length.
    SizeInvalid,
    /// The requested range cannot be satisfied.
    RangeInvalid,
    /// Manifest tag is invalid.
    TagInvalid,
    /// The `n` of a paginated listing is not a number (Distribution's code).
    PaginationNumberInvalid,
    /// The operation is unsupported (for example deletes when disabled).
    Unsupported,
    /// Authentication required.
    Unauthorized,
    /// Requested access to the resource is denied.
    Denied,
    /// Too many requests.
    TooManyRequests,
    /// An upstream this registry pulls through cannot answer, and nothing is cached.
    Unavailable,
    /// Server-side failure.
    Unknown,
}

impl Code {
    /// The code string used in error bodies.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::BlobUnknown => "BLOB_UNKNOWN",
            Code::BlobUploadInvalid => "BLOB_UPLOAD_INVALID",
            Code::BlobUploadUnknown => "BLOB_UPLOAD_UNKNOWN",
            Code::DigestInvalid => "DIGEST_INVALID",
            Code::ManifestBlobUnknown => "MANIFEST_BLOB_UNKNOWN",
            Code::ManifestInvalid => "MANIFEST_INVALID",
            Code::ManifestUnknown => "MANIFEST_UNKNOWN",
            Code::NameInvalid => "NAME_INVALID",
            Code::NameUnknown => "NAME_UNKNOWN",
            Code::SizeInvalid => "SIZE_INVALID",
            Code::RangeInvalid => "RANGE_INVALID",
            Code::TagInvalid => "TAG_INVALID",
            Code::PaginationNumberInvalid => "PAGINATION_NUMBER_INVALID",
            Code::Unsupported => "UNSUPPORTED",
            Code::Unauthorized => "UNAUTHORIZED",
            Code::Denied => "DENIED",
            Code::TooManyRequests => "TOOMANYREQUESTS",
            Code::Unavailable => "UNAVAILABLE",
            Code::Unknown => "UNKNOWN",
        }
    }

    /// The HTTP status the spec (or Distribution, where the spec is silent) pairs with it.
    pub fn status(self) -> StatusCode {
        match self {
            Code::BlobUnknown
            | Code::BlobUploadUnknown
            | Code::ManifestUnknown
            | Code::NameUnknown => StatusCode::NOT_FOUND,
            Code::BlobUploadInvalid
            | Code::DigestInvalid
            | Code::ManifestBlobUnknown
            | Code::ManifestInvalid
            | Code::NameInvalid
            | Code::SizeInvalid
            | Code::TagInvalid
            | Code::PaginationNumberInvalid => StatusCode::BAD_REQUEST,
            Code::RangeInvalid => StatusCode::RANGE_NOT_SATISFIABLE,
            Code::Unsupported => StatusCode::METHOD_NOT_ALLOWED,
            Code::Unauthorized => StatusCode::UNAUTHORIZED,
            Code::Denied => StatusCode::FORBIDDEN,
            Code::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
            Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Code::Unknown => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The spec's one-line message for the code.
    pub fn message(self) -> &'static str {
        match self {
            Code::BlobUnknown => "blob unknown to registry",
            Code::BlobUploadInvalid => "blob upload invalid",
            Code::BlobUploadUnknown => "blob upload unknown to registry",
            Code::DigestInvalid => "provided digest did not match uploaded content",
            Code::ManifestBlobUnknown => {
                "manifest references a manifest or blob unknown to registry"
            }
            Code::ManifestInvalid => "manifest invalid",
            Code::ManifestUnknown => "manifest unknown to registry",
            Code::NameInvalid => "invalid repository name",
            Code::NameUnknown => "repository name not known to registry",
            Code::SizeInvalid => "provided length did not match content length",
            Code::RangeInvalid => "invalid content range",
            Code::TagInvalid => "manifest tag is invalid",
            Code::PaginationNumberInvalid => "invalid number of results requested",
            Code::Unsupported => "the operation is unsupported",
            Code::Unauthorized => "authentication required",
            Code::Denied => "requested access to the resource is denied",
            Code::TooManyRequests => "too many requests",
            Code::Unavailable => "the upstream registry is unavailable",
            Code::Unknown => "unknown error",
        }
    }
}

/// A registry error: a code, and a detail for the client.
///
/// Its text (for logs, the GC report and the operator's `status.lastGC`)
/// also names the storage failure behind it; the client's error body does
/// not.
#[derive(Debug, thiserror::Error)]
#[error("{}: {detail}{}", code.as_str(), cause.as_ref().map(|c| format!(": {c}")).unwrap_or_default())]
pub struct RegistryError {
    /// The OCI error code.
    pub code: Code,
    /// Human-readable detail; for `Unknown`, only a generic text (the cause is logged).
    pub detail: String,
    /// The HTTP status of the answer: the code's, unless the spec names
    /// another for the case (413 for a manifest over the size limit).
    pub status: StatusCode,
    /// The storage failure behind an `Unknown` error, if that is what it is
    /// (in the text, so not also a `source`: a chain would print it twice).
    pub cause: Option<StorageError>,
}

impl RegistryError {
    /// An error with `code` and a detail text, answered with the code's status.
    pub fn new(code: Code, detail: impl Into<String>) -> Self {
        RegistryError {
            code,
            detail: detail.into(),
            status: code.status(),
            cause: None,
        }
    }

    /// This error, answered with `status` instead of the code's.
    pub fn with_status(self, status: StatusCode) -> Self {
        RegistryError { status, ..self }
    }
}

/// Results of registry operations.
pub type Result<T, E = RegistryError> = std::result::Result<T, E>;

impl From<StorageError> for RegistryError {
    fn from(e: StorageError) -> Self {
        tracing::error!(error = %e, "storage error");
        RegistryError {
            cause: Some(e),
            ..RegistryError::new(Code::Unknown, "storage error")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::response::IntoResponse;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn a_storage_failure_is_named_in_the_text_but_not_told_to_clients() {
        let cause = StorageError::Io {
            path: "blobs/sha256/ab/data".to_owned(),
            source: std::io::Error::other("connection refused"),
        };
        let error = RegistryError::from(cause);
        assert_eq!(
            error.to_string(),
            "UNKNOWN: storage error: blobs/sha256/ab/data: connection refused"
        );
        let body = error.into_response().into_body().collect().await;
        let body = String::from_utf8_lossy(&body.expect("a body").to_bytes()).into_owned();
        assert!(
            body.contains("UNKNOWN") && !body.contains("refused"),
            "{body}"
        );
    }
}
