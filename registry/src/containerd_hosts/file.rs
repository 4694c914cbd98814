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

/// Certificate files in Docker's pattern (`*.crt` CAs, `*.cert` with its
/// `*.key`) that containerd uses for a host directory without `hosts.toml`.
/// Once Berth writes one, containerd reads only the file, so it names them
/// for the server, as paths relative to the directory (containerd resolves
/// them against it, wherever the directory is mounted).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DockerCerts {
    /// CA certificate file names.
    pub ca: Vec<String>,
    /// Client certificate and key file names.
    pub client: Vec<(String, String)>,
}

impl DockerCerts {
    /// The files of `names` (a directory's entries) that containerd would
    /// take in Docker's pattern; a `.cert` without its `.key` is left out.
    pub fn from_names(names: &[String]) -> DockerCerts {
        let mut certs = DockerCerts::default();
        for name in names {
            if name.ends_with(".crt") {
                certs.ca.push(name.clone());
            } else if let Some(stem) = name.strip_suffix(".cert") {
                let key = format!("{stem}.key");
                if names.contains(&key) {
                    certs.client.push((name.clone(), key));
                }
            }
        }
        certs.ca.sort();
        certs.client.sort();
        certs
    }
}

/// `s` as a TOML basic string.
fn toml_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The `hosts.toml` for `host`: pulls and resolves go to `endpoint` (this
/// node's instance) first, then to `server` when given (containerd's
/// default for the host otherwise), trusting `certs`.
pub fn render(
    host: &HostName,
    owner: &Owner,
    created_dir: bool,
    endpoint: &RegistryUrl,
    server: Option<&RegistryUrl>,
    certs: &DockerCerts,
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
    if !certs.ca.is_empty() {
        let ca: Vec<String> = certs.ca.iter().map(|c| toml_string(c)).collect();
        text.push_str(&format!("ca = [{}]\n", ca.join(", ")));
    }
    if !certs.client.is_empty() {
        let pairs: Vec<String> = certs
            .client
            .iter()
            .map(|(cert, key)| format!("[{}, {}]", toml_string(cert), toml_string(key)))
            .collect();
        text.push_str(&format!("client = [{}]\n", pairs.join(", ")));
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
            &DockerCerts::default(),
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
            &DockerCerts::default(),
        );
        assert!(!text.contains("server ="), "{text}");
        let first = text.lines().next().unwrap();
        assert!(!Marker::parse(first).unwrap().unwrap().created_dir);
    }

    #[test]
    fn docker_pattern_certificates_are_named_for_the_server() {
        let names: Vec<String> = [
            "ca.crt",
            "client.cert",
            "client.key",
            "lone.cert",
            "b\"q.crt",
            "x.pem",
        ]
        .iter()
        .map(|n| n.to_string())
        .collect();
        let certs = DockerCerts::from_names(&names);
        assert_eq!(certs.ca, ["b\"q.crt", "ca.crt"]);
        assert_eq!(
            certs.client,
            [("client.cert".to_owned(), "client.key".to_owned())]
        );
        let text = render(
            &"registry.example.com:5000".parse().unwrap(),
            &"a/b".parse().unwrap(),
            false,
            &url("http://10.0.0.5:5000"),
            Some(&url("https://registry.example.com:5000")),
            &certs,
        );
        assert!(
            text.contains("ca = [\"b\\\"q.crt\", \"ca.crt\"]\nclient = [[\"client.cert\", \"client.key\"]]\n\n[host."),
            "{text}"
        );
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
