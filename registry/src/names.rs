//! Repository names, tags and manifest references, validated with the OCI
//! Distribution grammar before anything touches storage.
//!
//! The grammar forbids `.`/`..` components and every character that could
//! escape a directory, so a validated name is safe to use as a storage path.

use std::fmt;

use crate::digest::Digest;

/// Longest repository name accepted (Distribution's limit).
const MAX_NAME_LEN: usize = 255;
/// Longest tag accepted (the spec's limit).
const MAX_TAG_LEN: usize = 128;

/// A validated repository name such as `library/ubuntu`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepoName(String);

/// A validated tag such as `v1.2.3`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(String);

/// What a manifest URL points at: a tag or a digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference {
    /// A mutable tag.
    Tag(Tag),
    /// An immutable content digest.
    Digest(Digest),
}

/// A path component: `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
fn is_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        // A separator run: ".", "_", "__", or one or more "-".
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

impl RepoName {
    /// Validates `name` against the repository name grammar.
    pub fn parse(name: &str) -> Option<RepoName> {
        (!name.is_empty() && name.len() <= MAX_NAME_LEN && name.split('/').all(is_component))
            .then(|| RepoName(name.to_owned()))
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Tag {
    /// Validates `tag` against `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
    pub fn parse(tag: &str) -> Option<Tag> {
        let b = tag.as_bytes();
        let word = |x: u8| x.is_ascii_alphanumeric() || x == b'_';
        let ok = !b.is_empty()
            && b.len() <= MAX_TAG_LEN
            && word(b[0])
            && b[1..].iter().all(|&x| word(x) || x == b'.' || x == b'-');
        ok.then(|| Tag(tag.to_owned()))
    }

    /// The tag as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Tag(t) => t.fmt(f),
            Reference::Digest(d) => d.fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::properties::{self, MANY};
    use proptest::prelude::*;

    #[test]
    fn names() {
        for ok in [
            "a",
            "library/ubuntu",
            "a-b/c__d/e.f",
            "a---b",
            "conformance/repo1",
            "0x",
        ] {
            assert!(RepoName::parse(ok).is_some(), "{ok}");
        }
        for bad in [
            "", "A", "a/../b", "..", "a/./b", "/a", "a/", "a//b", "a_.b", "a___b", "-a", "a-",
            "a%2e", "a b",
        ] {
            assert!(RepoName::parse(bad).is_none(), "{bad}");
        }
        assert!(RepoName::parse(&"a".repeat(256)).is_none());
    }

    #[test]
    fn tags() {
        for ok in ["latest", "v1.2.3", "_x", "A-b_c.d"] {
            assert!(Tag::parse(ok).is_some(), "{ok}");
        }
        for bad in ["", ".x", "-x", "a/b", "a:b", "..", &"a".repeat(129)] {
            assert!(Tag::parse(bad).is_none(), "{bad}");
        }
    }

    /// A path component of the spec's grammar, restated: lowercase letters
    /// and digits at both ends, runs of them joined by `.`, `_`, `__` or
    /// any number of `-`.
    fn is_grammar_component(component: &str) -> bool {
        let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
        component.starts_with(alnum)
            && component.ends_with(alnum)
            && component
                .split(alnum)
                .filter(|separator| !separator.is_empty())
                .all(|separator| {
                    [".", "_", "__"].contains(&separator) || separator.chars().all(|c| c == '-')
                })
    }

    /// Names and tags as the spec's grammar generates them.
    const NAME: &str = "[a-z0-9]{1,8}((\\.|_|__|-{1,3})[a-z0-9]{1,8}){0,3}(/[a-z0-9]{1,8}((\\.|_|__|-{1,3})[a-z0-9]{1,8}){0,3}){0,4}";
    const TAG: &str = "[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}";

    /// Text near the grammar (its alphabet and a few strangers), and any text.
    fn text() -> impl Strategy<Value = String> {
        prop_oneof!["[a-z0-9._/A-Z:%-]{0,64}", any::<String>()]
    }

    #[test]
    fn property_names_of_the_grammar_parse() {
        properties::check("names of the grammar parse", MANY, NAME, |name| {
            prop_assert_eq!(RepoName::parse(&name).map(|n| n.0), Some(name));
            Ok(())
        });
    }

    #[test]
    fn property_only_names_of_the_grammar_parse() {
        properties::check("only names of the grammar parse", MANY, text(), |text| {
            if let Some(name) = RepoName::parse(&text) {
                prop_assert!(name.as_str().len() <= MAX_NAME_LEN);
                prop_assert!(
                    name.as_str().split('/').all(is_grammar_component),
                    "{}",
                    name
                );
            }
            Ok(())
        });
    }

    #[test]
    fn property_tags_of_the_grammar_parse() {
        properties::check("tags of the grammar parse", MANY, TAG, |tag| {
            prop_assert_eq!(Tag::parse(&tag).map(|t| t.0), Some(tag));
            Ok(())
        });
    }

    #[test]
    fn property_only_tags_of_the_grammar_parse() {
        properties::check("only tags of the grammar parse", MANY, text(), |text| {
            if let Some(tag) = Tag::parse(&text) {
                let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
                prop_assert!(tag.as_str().len() <= MAX_TAG_LEN);
                prop_assert!(tag.as_str().starts_with(word));
                prop_assert!(
                    tag.as_str()
                        .chars()
                        .all(|c| word(c) || c == '.' || c == '-')
                );
            }
            Ok(())
        });
    }
}
