//! The `hosts.toml` Berth writes and the marker line that makes it Berth's.
//!
//! The first line of every file Berth writes names the owner and whether
//! Berth created the host's directory: that line is the whole bookkeeping.
//! A later `apply` finds the files an owner wrote by reading first lines,
//! and `remove` knows from it whether to remove the directory too. The
//! other tool's file, when there was one, sits beside it as
//! [`super::BACKUP_NAME`].

use super::names::{HostName, Owner, RegistryUrl};

/// How every marker line starts.
const MARKER_PREFIX: &str = "# berth-registry containerd-hosts: ";

/// What the marker line of a Berth-written `hosts.toml` records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marker {
    /// The owner (`NAMESPACE/NAME`) that wrote the file.
    pub owner: String,
    /// Whether Berth created the host's directory (and removes it again).
    pub created_dir: bool,
}

impl Marker {
    /// The marker of a file's first line: `None` when the file is not
    /// Berth's, `Err` with a reason when it is but the line is malformed.
    pub fn parse(first_line: &str) -> Option<Result<Marker, &'static str>> {
        let rest = first_line.strip_prefix(MARKER_PREFIX)?;
        let mut owner = None;
        let mut created_dir = None;
        for field in rest.split_whitespace() {
            match field.split_once('=') {
                Some(("owner", v)) => owner = Some(v.to_owned()),
                Some(("dir", "created")) => created_dir = Some(true),
                Some(("dir", "found")) => created_dir = Some(false),
                _ => return Some(Err("unknown field in the marker line")),
            }
        }
        Some(match (owner, created_dir) {
            (Some(owner), Some(created_dir)) => Ok(Marker { owner, created_dir }),
            _ => Err("the marker line lacks owner= or dir="),
        })
    }

    fn line(&self) -> String {
        let dir = if self.created_dir { "created" } else { "found" };
        format!("{MARKER_PREFIX}owner={} dir={dir}\n", self.owner)
    }
}

/// The `hosts.toml` for `host`: pulls and resolves go to `endpoint` (this
/// node's instance) first, then to `server` when given (containerd's
/// default for the host otherwise).
pub fn render(
    host: &HostName,
    owner: &Owner,
    created_dir: bool,
    endpoint: &RegistryUrl,
    server: Option<&RegistryUrl>,
) -> String {
    let marker = Marker {
        owner: owner.to_string(),
        created_dir,
    };
    let mut text = marker.line();
    text.push_str(&format!(
        "# Pulls of {host} try this node's berth-registry first. Written by\n\
         # `berth-registry containerd-hosts apply`; `containerd-hosts remove` restores what was here.\n"
    ));
    if let Some(server) = server {
        text.push_str(&format!("server = \"{server}\"\n"));
    }
    text.push_str(&format!(
        "\n[host.\"{endpoint}\"]\n  capabilities = [\"pull\", \"resolve\"]\n"
    ));
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> RegistryUrl {
        s.parse().unwrap()
    }

    #[test]
    fn the_file_points_at_the_endpoint_with_the_server_as_fallback() {
        let text = render(
            &"docker.io".parse().unwrap(),
            &"registry/local".parse().unwrap(),
            true,
            &url("http://10.0.0.5:5000"),
            Some(&url("https://registry-1.docker.io")),
        );
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "# berth-registry containerd-hosts: owner=registry/local dir=created"
        );
        assert!(text.contains("\nserver = \"https://registry-1.docker.io\"\n"));
        assert!(text.ends_with(
            "\n[host.\"http://10.0.0.5:5000\"]\n  capabilities = [\"pull\", \"resolve\"]\n"
        ));
        assert_eq!(
            Marker::parse(lines[0]),
            Some(Ok(Marker {
                owner: "registry/local".into(),
                created_dir: true
            }))
        );
    }

    #[test]
    fn without_a_server_there_is_no_server_line() {
        let text = render(
            &"_default".parse().unwrap(),
            &"a/b".parse().unwrap(),
            false,
            &url("http://10.0.0.5:5000"),
            None,
        );
        assert!(!text.contains("server ="), "{text}");
        let first = text.lines().next().unwrap();
        assert!(!Marker::parse(first).unwrap().unwrap().created_dir);
    }

    #[test]
    fn other_files_have_no_marker_and_broken_markers_are_errors() {
        assert_eq!(Marker::parse("server = \"https://x\""), None);
        assert_eq!(Marker::parse("# spegel"), None);
        assert!(
            Marker::parse("# berth-registry containerd-hosts: owner=a/b")
                .unwrap()
                .is_err()
        );
        assert!(
            Marker::parse("# berth-registry containerd-hosts: owner=a/b dir=maybe")
                .unwrap()
                .is_err()
        );
    }
}
