//! The values `containerd-hosts` writes into file names and `hosts.toml`:
//! registry host names, owners and URLs, validated before anything is
//! touched. A validated host name is one path component (no `/`, no `..`,
//! no whitespace), so `DIR/<host>` never leaves `DIR`; a validated URL or
//! owner needs no escaping in a TOML string or in the marker line.

use std::fmt;
use std::str::FromStr;

use super::Error;

/// The host namespace containerd uses when no other directory matches.
pub const DEFAULT_HOST: &str = "_default";

/// A registry host as image names spell it (`docker.io`,
/// `registry.example.com:5000`, `10.0.0.5:5000`) or `_default`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HostName(String);

impl HostName {
    /// The name as given (also the directory name under the hosts directory).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// For `host:port`, the directory name containerd looks for first
    /// (`host_port_`, Windows-safe); `None` without a port.
    pub fn containerd_port_dir(&self) -> Option<String> {
        self.0
            .rsplit_once(':')
            .map(|(name, port)| format!("{name}_{port}_"))
    }
}

impl fmt::Display for HostName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for HostName {
    type Err = Error;

    fn from_str(s: &str) -> Result<HostName, Error> {
        host_problem(s).map_or_else(
            || Ok(HostName(s.to_owned())),
            |reason| {
                Err(Error::InvalidHost {
                    host: s.to_owned(),
                    reason,
                })
            },
        )
    }
}

/// Why `s` is not `host[:port]` or `_default`, if it is not.
fn host_problem(s: &str) -> Option<&'static str> {
    if s == DEFAULT_HOST {
        return None;
    }
    if s.is_empty() {
        return Some("it is empty");
    }
    if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Some("it contains whitespace");
    }
    if s.contains('/') {
        return Some("it contains `/` (give the host only, without scheme or path)");
    }
    let (name, port) = match s.rsplit_once(':') {
        Some((name, port)) => (name, Some(port)),
        None => (s, None),
    };
    if let Some(port) = port
        && !(port.bytes().all(|b| b.is_ascii_digit())
            && matches!(port.parse::<u32>(), Ok(1..=65535)))
    {
        return Some("the port is not a number from 1 to 65535");
    }
    if name.len() > 253 {
        return Some("the host is longer than 253 characters");
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if !name.split('.').all(label_ok) {
        return Some(
            "the host is not a DNS name or IPv4 address (labels of letters, digits and `-`, separated by single dots)",
        );
    }
    None
}

/// Who wrote a `hosts.toml`: the Registry's `NAMESPACE/NAME`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner(String);

impl Owner {
    /// `NAMESPACE/NAME`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Owner {
    type Err = Error;

    fn from_str(s: &str) -> Result<Owner, Error> {
        // Kubernetes object names: lowercase letters, digits, `-` and `.`,
        // starting and ending with a letter or digit.
        let part_ok = |p: &str| {
            !p.is_empty()
                && p.len() <= 253
                && p.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
                && p.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
                && p.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric())
        };
        match s.split_once('/') {
            Some((namespace, name)) if part_ok(namespace) && part_ok(name) => {
                Ok(Owner(s.to_owned()))
            }
            _ => Err(Error::InvalidOwner(s.to_owned())),
        }
    }
}

/// An `http://` or `https://` URL of a registry (`http://10.0.0.5:5000`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryUrl(String);

impl RegistryUrl {
    /// The URL as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RegistryUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for RegistryUrl {
    type Err = Error;

    fn from_str(s: &str) -> Result<RegistryUrl, Error> {
        let invalid = |reason| {
            Err(Error::InvalidUrl {
                url: s.to_owned(),
                reason,
            })
        };
        let Some(rest) = s
            .strip_prefix("http://")
            .or_else(|| s.strip_prefix("https://"))
        else {
            return invalid("it does not start with http:// or https://");
        };
        let authority = rest.split('/').next().unwrap_or_default();
        if authority.is_empty() {
            return invalid("it names no host");
        }
        if s.chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '"' | '\\' | '?' | '#'))
        {
            return invalid("it contains whitespace, a quote, a backslash, a query or a fragment");
        }
        Ok(RegistryUrl(s.to_owned()))
    }
}

/// A `--mirror` argument: `HOST` or `HOST=SERVER_URL`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mirror {
    /// The host whose pulls go through this node's instance.
    pub host: HostName,
    /// The upstream containerd falls back to; without one, containerd's
    /// default for the host (`https://HOST`, Docker Hub for `docker.io`).
    pub server: Option<RegistryUrl>,
}

impl FromStr for Mirror {
    type Err = Error;

    fn from_str(s: &str) -> Result<Mirror, Error> {
        let (host, server) = match s.split_once('=') {
            Some((host, server)) => (host, Some(server.parse()?)),
            None => (s, None),
        };
        Ok(Mirror {
            host: host.parse()?,
            server,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_with_ports_and_the_default_namespace_are_accepted() {
        for ok in [
            "docker.io",
            "ghcr.io",
            "registry.example.com:5000",
            "10.0.0.5:5000",
            "localhost",
            "_default",
            "berth.local",
        ] {
            assert_eq!(ok.parse::<HostName>().unwrap().as_str(), ok);
        }
    }

    #[test]
    fn hosts_that_could_leave_the_directory_or_are_not_hosts_are_refused() {
        for bad in [
            "",
            "..",
            ".",
            "a/b",
            "../etc",
            "docker.io/library",
            "http://docker.io",
            "docker .io",
            "docker.io\n",
            "a..b",
            ".hidden",
            "host:0",
            "host:65536",
            "host:+5",
            "host:",
            "-bad.io",
            "_defaults",
            "[::1]:5000",
        ] {
            let err = bad.parse::<HostName>().unwrap_err().to_string();
            assert!(err.contains("invalid host"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn owners_are_namespace_slash_name() {
        assert!("registry/local".parse::<Owner>().is_ok());
        for bad in ["local", "a/b/c", "A/b", "a/", "/b", "a b/c", "a/-b"] {
            assert!(bad.parse::<Owner>().is_err(), "{bad}");
        }
    }

    #[test]
    fn urls_need_a_scheme_and_a_host_and_no_toml_specials() {
        assert!("http://10.0.0.5:5000".parse::<RegistryUrl>().is_ok());
        assert!(
            "https://registry-1.docker.io"
                .parse::<RegistryUrl>()
                .is_ok()
        );
        for bad in [
            "10.0.0.5:5000",
            "http://",
            "ftp://x",
            "http://a\"b",
            "http://a b",
            "http://a?x=1",
        ] {
            assert!(bad.parse::<RegistryUrl>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_mirror_names_a_host_and_maybe_a_server() {
        let m: Mirror = "docker.io=https://registry-1.docker.io".parse().unwrap();
        assert_eq!(m.host.as_str(), "docker.io");
        assert_eq!(
            m.server.map(|s| s.to_string()).as_deref(),
            Some("https://registry-1.docker.io")
        );
        assert_eq!("ghcr.io".parse::<Mirror>().unwrap().server, None);
        assert!("gh/cr.io=https://x".parse::<Mirror>().is_err());
    }
}
