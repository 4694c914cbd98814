//! Listing: a repository's tags, and the catalog of repositories, both sorted
//! and paginated with `n` and `last` as the spec describes.

use crate::error::{Code, RegistryError, Result};
use crate::layout;
use crate::names::RepoName;

use super::Registry;

/// Entries returned by `_catalog` when the client gives no `n`.
const DEFAULT_CATALOG_PAGE: usize = 100;

/// One page of a sorted listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// The entries of this page.
    pub items: Vec<String>,
    /// Whether entries follow the last one of this page.
    pub more: bool,
}

/// Sorts `items` and keeps at most `n` of those after `last`.
fn paginate(mut items: Vec<String>, n: Option<usize>, last: Option<&str>) -> Page {
    items.sort();
    if let Some(last) = last {
        items.retain(|i| i.as_str() > last);
    }
    match n {
        Some(n) if items.len() > n => {
            items.truncate(n);
            Page { more: n > 0, items }
        }
        _ => Page { items, more: false },
    }
}

impl Registry {
    /// Names of the tag directories of `repo`; `None` when the repository has no manifests at all.
    pub(super) async fn tag_names(&self, repo: &RepoName) -> Result<Option<Vec<String>>> {
        match self.storage.list(&layout::tags_dir(repo)).await {
            Ok(names) => Ok(Some(names)),
            Err(e) if e.is_not_found() => Ok(self
                .exists(&layout::manifests_dir(repo))
                .await?
                .then(Vec::new)),
            Err(e) => Err(e.into()),
        }
    }

    /// A page of the tags of `repo`.
    pub async fn tags(
        &self,
        repo: &RepoName,
        n: Option<usize>,
        last: Option<&str>,
    ) -> Result<Page> {
        let names = self.tag_names(repo).await?.ok_or_else(|| {
            RegistryError::new(Code::NameUnknown, format!("repository {repo} is unknown"))
        })?;
        Ok(paginate(names, n, last))
    }

    /// A page of the names of all repositories: directories holding
    /// `_manifests` or (as Distribution counts them) `_layers`.
    pub async fn catalog(&self, n: Option<usize>, last: Option<&str>) -> Result<Page> {
        let repos = self
            .repository_dirs()
            .await?
            .into_iter()
            .filter(|(_, children)| children.iter().any(|c| c == "_manifests" || c == "_layers"))
            .map(|(name, _)| name)
            .collect();
        Ok(paginate(
            repos,
            Some(n.unwrap_or(DEFAULT_CATALOG_PAGE)),
            last,
        ))
    }

    /// Every directory below the repositories root whose path is a valid
    /// repository name, with the names of its children.
    pub(crate) async fn repository_dirs(&self) -> Result<Vec<(String, Vec<String>)>> {
        let mut found = Vec::new();
        let mut pending = vec![String::new()];
        while let Some(prefix) = pending.pop() {
            let dir = if prefix.is_empty() {
                layout::REPOSITORIES.to_owned()
            } else {
                format!("{}/{prefix}", layout::REPOSITORIES)
            };
            let children = match self.storage.list(&dir).await {
                Ok(children) => children,
                Err(e) if e.is_not_found() => continue,
                Err(e) => return Err(e.into()),
            };
            for child in &children {
                let path = if prefix.is_empty() {
                    child.clone()
                } else {
                    format!("{prefix}/{child}")
                };
                // Only directories that can be (part of) a repository name are walked.
                if RepoName::parse(&path).is_some()
                    && self
                        .storage
                        .stat(&format!("{}/{path}", layout::REPOSITORIES))
                        .await?
                        .is_dir
                {
                    pending.push(path);
                }
            }
            if !prefix.is_empty() {
                found.push((prefix, children));
            }
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn pagination() {
        let all = v(&["c", "a", "b", "d"]);
        assert_eq!(
            paginate(all.clone(), None, None),
            Page {
                items: v(&["a", "b", "c", "d"]),
                more: false
            }
        );
        assert_eq!(
            paginate(all.clone(), Some(2), None),
            Page {
                items: v(&["a", "b"]),
                more: true
            }
        );
        assert_eq!(
            paginate(all.clone(), Some(2), Some("b")),
            Page {
                items: v(&["c", "d"]),
                more: false
            }
        );
        assert_eq!(
            paginate(all.clone(), Some(0), None),
            Page {
                items: vec![],
                more: false
            }
        );
        assert_eq!(
            paginate(all, Some(10), Some("z")),
            Page {
                items: vec![],
                more: false
            }
        );
    }
}
