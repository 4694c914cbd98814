//! Configuration files for the servers under test, built as a tree of YAML
//! sections: a starter writes the base config (address, storage) and a test
//! adds whole sections under a dotted path (`auth`, `http.tls`,
//! `storage.maintenance`, `berth`, ...) without caring where the base put
//! its own keys.

use std::fmt::Display;

/// A YAML mapping: raw lines of its own, then named sub-sections.
#[derive(Debug, Clone, Default)]
pub struct YamlTree {
    lines: Vec<String>,
    children: Vec<(String, YamlTree)>,
}

impl YamlTree {
    /// An empty mapping.
    pub fn new() -> YamlTree {
        YamlTree::default()
    }

    /// Add `yaml`, a block of mapping entries (`key: value` lines, nested
    /// by indentation relative to its least indented line), under the
    /// dotted `path` (`""` is the top level). Sections at the same path
    /// accumulate; the caller must not repeat a key.
    pub fn add(&mut self, path: &str, yaml: &str) -> &mut YamlTree {
        let node = self.node(path);
        let indent = yaml
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| l.len() - l.trim_start().len())
            .min()
            .unwrap_or(0);
        node.lines.extend(
            yaml.lines()
                .filter(|l| !l.trim().is_empty())
                .map(|l| l[indent..].trim_end().to_owned()),
        );
        self
    }

    /// Add the entry `key: value` under the dotted `path`.
    pub fn set(&mut self, path: &str, key: &str, value: impl Display) -> &mut YamlTree {
        self.node(path).lines.push(format!("{key}: {value}"));
        self
    }

    /// The mapping at the dotted `path`, created (empty) if missing.
    fn node(&mut self, path: &str) -> &mut YamlTree {
        let mut node = self;
        for name in path.split('.').filter(|s| !s.is_empty()) {
            let index = match node.children.iter().position(|(n, _)| n == name) {
                Some(i) => i,
                None => {
                    node.children.push((name.to_owned(), YamlTree::new()));
                    node.children.len() - 1
                }
            };
            node = &mut node.children[index].1;
        }
        node
    }

    /// The YAML text, two spaces per level.
    pub fn render(&self) -> String {
        let mut out = String::new();
        self.render_into(0, &mut out);
        out
    }

    fn render_into(&self, depth: usize, out: &mut String) {
        let pad = "  ".repeat(depth);
        for line in &self.lines {
            out.push_str(&pad);
            out.push_str(line);
            out.push('\n');
        }
        for (name, child) in &self.children {
            out.push_str(&format!("{pad}{name}:\n"));
            child.render_into(depth + 1, out);
        }
    }
}

/// `text` as a double-quoted YAML scalar (backslashes and quotes escaped).
pub fn quoted(text: impl Display) -> String {
    let text = text.to_string();
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_merge_under_their_paths() {
        let mut tree = YamlTree::new();
        tree.set("", "version", "0.1")
            .set("storage.delete", "enabled", true)
            .add(
                "storage",
                "  maintenance:\n    readonly:\n      enabled: true\n",
            )
            .add("http.tls", "certificate: /c\nkey: /k")
            .set("http", "addr", "127.0.0.1:1");
        assert_eq!(
            tree.render(),
            "version: 0.1\n\
             storage:\n  maintenance:\n    readonly:\n      enabled: true\n  delete:\n    enabled: true\n\
             http:\n  addr: 127.0.0.1:1\n  tls:\n    certificate: /c\n    key: /k\n"
        );
    }
}
