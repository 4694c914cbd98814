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
    percent_encoding::percent_decode_str(segment)
        .decode_utf8_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::properties::{self, MANY};
    use proptest::prelude::*;

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

    /// Paths made of the words routes are made of, and of stranger ones.
    fn paths() -> impl Strategy<Value = String> {
        let segment = prop_oneof![
            prop::sample::select(vec![
                "manifests",
                "blobs",
                "uploads",
                "tags",
                "list",
                "referrers",
                "_catalog",
                "",
                "..",
                "%2e%2e",
                "%2F",
                "a",
                "A",
            ])
            .prop_map(str::to_owned),
            "[a-zA-Z0-9._%:-]{0,12}",
            any::<String>(),
        ];
        let prefix = prop::sample::select(vec!["/v2/", "/v2", "/", "", "/v2//"]);
        (prefix, prop::collection::vec(segment, 0..8))
            .prop_map(|(prefix, segments)| format!("{prefix}{}", segments.join("/")))
    }

    #[test]
    fn property_any_path_routes_or_is_refused_with_name_invalid() {
        properties::check(
            "any path routes, or is NAME_INVALID, or 404",
            MANY,
            paths(),
            |path| {
                match parse(&path) {
                    None => {}
                    Some(Ok(_)) => prop_assert!(path.starts_with("/v2"), "{}", path),
                    Some(Err(e)) => {
                        prop_assert_eq!(e.code, Code::NameInvalid);
                        prop_assert_eq!(e.status, http::StatusCode::BAD_REQUEST);
                    }
                }
                Ok(())
            },
        );
    }

    #[test]
    fn property_paths_of_valid_names_route() {
        let name = "[a-z0-9]{1,8}((\\.|_|__|-{1,3})[a-z0-9]{1,8}){0,2}(/[a-z0-9]{1,8}){0,3}";
        let tail = "[a-zA-Z0-9_.:-]{1,20}".prop_filter("not a route word", |t| t != "uploads");
        properties::check(
            "paths of valid names route",
            MANY,
            (name, tail),
            |(name, tail)| {
                let repo =
                    RepoName::parse(&name).ok_or_else(|| TestCaseError::fail("a valid name"))?;
                for (path, route) in [
                    (format!("/v2/{name}/tags/list"), Route::Tags(repo.clone())),
                    (
                        format!("/v2/{name}/manifests/{tail}"),
                        Route::Manifest(repo.clone(), tail.clone()),
                    ),
                    (
                        format!("/v2/{name}/blobs/{tail}"),
                        Route::Blob(repo.clone(), tail.clone()),
                    ),
                    (
                        format!("/v2/{name}/blobs/uploads/"),
                        Route::UploadStart(repo.clone()),
                    ),
                    (
                        format!("/v2/{name}/blobs/uploads/{tail}"),
                        Route::Upload(repo.clone(), tail.clone()),
                    ),
                    (
                        format!("/v2/{name}/referrers/{tail}"),
                        Route::Referrers(repo.clone(), tail.clone()),
                    ),
                ] {
                    match parse(&path) {
                        Some(Ok(parsed)) => prop_assert_eq!(parsed, route),
                        other => prop_assert!(false, "{} parsed to {:?}", path, other),
                    }
                }
                Ok(())
            },
        );
    }

    #[test]
    fn property_query_decoding_takes_any_text() {
        properties::check(
            "query decoding takes any text",
            MANY,
            any::<String>(),
            |text| {
                decode_query(&text);
                Ok(())
            },
        );
    }
}
