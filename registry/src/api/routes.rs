//! Parsing `/v2/...` paths into routes.
//!
//! Repository names contain slashes, so routes are recognised from the end
//! of the path, where the grammar is unambiguous (`.../manifests/<ref>`,
//! `.../blobs/uploads/<id>`, ...). The name is validated before anything else
//! happens; references and digests are percent-decoded and validated by the
//! handlers.

use crate::error::{Code, RegistryError};
use crate::names::RepoName;

/// A recognised API route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `/v2/`: API version check.
    Base,
    /// `/v2/_catalog`.
    Catalog,
    /// `/v2/<name>/tags/list`.
    Tags(RepoName),
    /// `/v2/<name>/manifests/<reference>`.
    Manifest(RepoName, String),
    /// `/v2/<name>/blobs/<digest>`.
    Blob(RepoName, String),
    /// `/v2/<name>/blobs/uploads/`.
    UploadStart(RepoName),
    /// `/v2/<name>/blobs/uploads/<id>`.
    Upload(RepoName, String),
    /// `/v2/<name>/referrers/<digest>`.
    Referrers(RepoName, String),
}

/// Parses a request path. `None` when no route matches; an error when the
/// route matches but the repository name is invalid.
pub fn parse(path: &str) -> Option<Result<Route, RegistryError>> {
    let rest = path.strip_prefix("/v2")?;
    if rest.is_empty() || rest == "/" {
        return Some(Ok(Route::Base));
    }
    let rest = rest.strip_prefix('/')?;
    if rest == "_catalog" {
        return Some(Ok(Route::Catalog));
    }
    let segments: Vec<&str> = rest.split('/').collect();
    let n = segments.len();
    let tail = |k: usize| segments.get(n.wrapping_sub(k)).copied();
    let (name_len, make): (usize, Box<dyn FnOnce(RepoName) -> Route>) =
        match (tail(3), tail(2), tail(1)) {
            (_, Some("tags"), Some("list")) => (n - 2, Box::new(Route::Tags)),
            (Some("blobs"), Some("uploads"), Some("")) => (n - 3, Box::new(Route::UploadStart)),
            (_, Some("blobs"), Some("uploads")) => (n - 2, Box::new(Route::UploadStart)),
            (Some("blobs"), Some("uploads"), Some(id)) => {
                let id = decode(id);
                (n - 3, Box::new(move |r| Route::Upload(r, id)))
            }
            (_, Some("manifests"), Some(reference)) if !reference.is_empty() => {
                let reference = decode(reference);
                (n - 2, Box::new(move |r| Route::Manifest(r, reference)))
            }
            (_, Some("blobs"), Some(digest)) if !digest.is_empty() => {
                let digest = decode(digest);
                (n - 2, Box::new(move |r| Route::Blob(r, digest)))
            }
            (_, Some("referrers"), Some(digest)) if !digest.is_empty() => {
                let digest = decode(digest);
                (n - 2, Box::new(move |r| Route::Referrers(r, digest)))
            }
            _ => return None,
        };
    let name = segments[..name_len].join("/");
    Some(RepoName::parse(&name).map(make).ok_or_else(|| {
        RegistryError::new(
            Code::NameInvalid,
            format!("invalid repository name {name:?}"),
        )
    }))
}

/// Percent-decodes a query key or value (`+` is a space).
pub fn decode_query(part: &str) -> String {
    decode(&part.replace('+', " "))
}

/// Percent-decodes a path segment; invalid escapes are kept as they are (and
/// then fail validation).
fn decode(segment: &str) -> String {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo(s: &str) -> RepoName {
        RepoName::parse(s).unwrap()
    }

    fn ok(path: &str) -> Route {
        parse(path).unwrap().unwrap()
    }

    #[test]
    fn routes() {
        assert_eq!(ok("/v2/"), Route::Base);
        assert_eq!(ok("/v2"), Route::Base);
        assert_eq!(ok("/v2/_catalog"), Route::Catalog);
        assert_eq!(ok("/v2/a/b/tags/list"), Route::Tags(repo("a/b")));
        assert_eq!(
            ok("/v2/a/manifests/latest"),
            Route::Manifest(repo("a"), "latest".into())
        );
        assert_eq!(
            ok("/v2/a/manifests/sha256%3Aab"),
            Route::Manifest(repo("a"), "sha256:ab".into())
        );
        assert_eq!(ok("/v2/a/blobs/uploads/"), Route::UploadStart(repo("a")));
        assert_eq!(ok("/v2/a/blobs/uploads"), Route::UploadStart(repo("a")));
        assert_eq!(
            ok("/v2/a/blobs/uploads/xyz"),
            Route::Upload(repo("a"), "xyz".into())
        );
        assert_eq!(
            ok("/v2/a/blobs/sha256:ab"),
            Route::Blob(repo("a"), "sha256:ab".into())
        );
        assert_eq!(
            ok("/v2/blobs/blobs/x"),
            Route::Blob(repo("blobs"), "x".into())
        );
        assert_eq!(
            ok("/v2/a/referrers/sha256:ab"),
            Route::Referrers(repo("a"), "sha256:ab".into())
        );
    }

    #[test]
    fn invalid_names_and_unknown_paths() {
        for bad in [
            "/v2/a/../b/manifests/x",
            "/v2/A/tags/list",
            "/v2/a/%2e%2e/b/blobs/x",
            "/v2//manifests/x",
            "/v2/manifests/x",
        ] {
            let r = parse(bad).unwrap();
            assert_eq!(r.unwrap_err().code, Code::NameInvalid, "{bad}");
        }
        for none in [
            "/v3/",
            "/v2/a",
            "/v2/a/manifests/",
            "/v2x/a/tags/list",
            "/healthz",
        ] {
            assert!(parse(none).is_none(), "{none}");
        }
    }
}
