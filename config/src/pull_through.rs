//! Pull-through: `proxy` (Distribution's one upstream) and `berth.mirrors`
//! (upstreams chosen by the `ns` query parameter), checked into the
//! upstreams the registry fetches from.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::check::{http_url, positive_duration};
use crate::error::{ConfigError, invalid};
use crate::schema::Config;
use crate::secret::Secret;

/// The host `berth.mirrors` uses for "any ns not listed".
pub const DEFAULT_MIRROR: &str = "_default";

/// Distribution's default `proxy.ttl`.
const DEFAULT_PROXY_TTL: Duration = Duration::from_secs(168 * 3600);

/// Default `tagttl` of a mirror.
const DEFAULT_TAG_TTL: Duration = Duration::from_secs(60);

/// How a pull-through upstream authenticates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamCredentials {
    /// Anonymously.
    None,
    /// With a fixed user name and password (`proxy.username`, `proxy.password`).
    Fixed {
        /// The user name.
        username: String,
        /// The password.
        password: Secret<String>,
    },
    /// With the files `username` and `password` of a directory, read when used.
    Dir(PathBuf),
}

/// One upstream, checked.
#[derive(Debug, Clone)]
pub struct UpstreamSettings {
    /// The upstream URL without a trailing slash; `None` for `_default`,
    /// where the request's `ns` decides (`https://<ns>`).
    pub url: Option<String>,
    /// How to authenticate.
    pub credentials: UpstreamCredentials,
    /// How long a resolved tag is served without asking the upstream again.
    pub tag_ttl: Duration,
}

/// Everything pull-through needs from the configuration.
#[derive(Debug, Clone, Default)]
pub struct PullThrough {
    /// `proxy`: the upstream of requests without `ns`.
    pub proxy: Option<UpstreamSettings>,
    /// `berth.mirrors` by host (`_default` included).
    pub mirrors: BTreeMap<String, UpstreamSettings>,
    /// Cached content unused this long may be collected (`proxy.ttl`).
    pub ttl: Duration,
    /// Where fetched blobs are spooled (`berth.spooldir`).
    pub spool_dir: PathBuf,
}

impl PullThrough {
    /// Whether any upstream is configured.
    pub fn enabled(&self) -> bool {
        self.proxy.is_some() || !self.mirrors.is_empty()
    }
}

/// Whether `host` is a registry host as image names spell it: DNS labels
/// (letters, digits, `-`, `.`), an optional `:port`.
pub fn is_registry_host(host: &str) -> bool {
    let (name, port) = match host.rsplit_once(':') {
        Some((name, port)) => (name, Some(port)),
        None => (host, None),
    };
    let name_ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    let port_ok = port.is_none_or(|p| {
        !p.is_empty()
            && p.bytes().all(|b| b.is_ascii_digit())
            && p.parse::<u16>().is_ok_and(|p| p > 0)
    });
    name_ok && port_ok
}

impl Config {
    /// `proxy`, `berth.mirrors` and `berth.spooldir`, checked.
    pub(crate) fn pull_through(&self, port: u16) -> Result<PullThrough, ConfigError> {
        let ttl = match self.proxy.as_ref().and_then(|p| p.ttl) {
            Some(ttl) => positive_duration("proxy.ttl", ttl)?,
            None => DEFAULT_PROXY_TTL,
        };
        let proxy = match &self.proxy {
            None => None,
            Some(p) => {
                let credentials = match (&p.username, &p.password) {
                    (None, None) => UpstreamCredentials::None,
                    (Some(username), Some(password)) => UpstreamCredentials::Fixed {
                        username: username.clone(),
                        password: password.clone(),
                    },
                    _ => {
                        return Err(invalid(
                            "proxy.username",
                            "set both proxy.username and proxy.password, or neither",
                        ));
                    }
                };
                Some(UpstreamSettings {
                    url: Some(http_url("proxy.remoteurl", &p.remoteurl)?),
                    credentials,
                    tag_ttl: DEFAULT_TAG_TTL,
                })
            }
        };
        let mut mirrors = BTreeMap::new();
        for (i, m) in self.berth.mirrors.iter().enumerate() {
            let key = |field: &str| format!("berth.mirrors[{i}].{field}");
            if m.host != DEFAULT_MIRROR && !is_registry_host(&m.host) {
                return Err(invalid(
                    &key("host"),
                    format!(
                        "{:?} is not a registry host[:port] nor {DEFAULT_MIRROR}",
                        m.host
                    ),
                ));
            }
            let url = match (&m.remoteurl, m.host.as_str()) {
                (Some(url), _) => Some(http_url(&key("remoteurl"), url)?),
                (None, DEFAULT_MIRROR) => None,
                (None, host) => Some(default_upstream_url(host)),
            };
            let credentials = match &m.credentialsdir {
                Some(dir) => {
                    if !dir.is_dir() {
                        return Err(invalid(
                            &key("credentialsdir"),
                            format!("{} is not a directory", dir.display()),
                        ));
                    }
                    UpstreamCredentials::Dir(dir.clone())
                }
                None => UpstreamCredentials::None,
            };
            let tag_ttl = match &m.tagttl {
                Some(t) => t.0,
                None => DEFAULT_TAG_TTL,
            };
            let settings = UpstreamSettings {
                url,
                credentials,
                tag_ttl,
            };
            if mirrors.insert(m.host.clone(), settings).is_some() {
                return Err(invalid(
                    &key("host"),
                    format!("{} is listed more than once", m.host),
                ));
            }
        }
        let spool_dir = self
            .berth
            .spooldir
            .clone()
            .unwrap_or_else(|| std::env::temp_dir().join(format!("berth-spool-{port}")));
        if spool_dir.as_os_str().is_empty() {
            return Err(invalid("berth.spooldir", "must not be empty"));
        }
        Ok(PullThrough {
            proxy,
            mirrors,
            ttl,
            spool_dir,
        })
    }
}

/// The upstream URL of a registry host: `https://<host>`, but Docker Hub's
/// registry for `docker.io`.
pub fn default_upstream_url(host: &str) -> String {
    match host {
        "docker.io" | "index.docker.io" => "https://registry-1.docker.io".to_owned(),
        host => format!("https://{host}"),
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::Duration;

    use crate::test_support::{BASIC, error, parse};
    use crate::*;

    #[test]
    fn pull_through_settings_are_checked_and_resolved() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "{BASIC}proxy:\n  remoteurl: https://registry-1.docker.io/\n  ttl: 24h\nberth:\n  spooldir: /var/spool/berth\n  mirrors:\n    - host: docker.io\n    - host: registry.example.com:5000\n      remoteurl: http://127.0.0.1:5001\n      credentialsdir: {}\n      tagttl: 30s\n    - host: _default\n",
            dir.path().display()
        );
        let s = parse(&text, &[]).unwrap();
        let p = &s.pull_through;
        assert_eq!(p.ttl, Duration::from_secs(24 * 3600));
        assert_eq!(p.spool_dir, PathBuf::from("/var/spool/berth"));
        let proxy = p.proxy.as_ref().unwrap();
        assert_eq!(proxy.url.as_deref(), Some("https://registry-1.docker.io"));
        assert_eq!(proxy.credentials, UpstreamCredentials::None);
        assert_eq!(
            p.mirrors["docker.io"].url.as_deref(),
            Some("https://registry-1.docker.io")
        );
        assert_eq!(p.mirrors["docker.io"].tag_ttl, Duration::from_secs(60));
        let local = &p.mirrors["registry.example.com:5000"];
        assert_eq!(local.url.as_deref(), Some("http://127.0.0.1:5001"));
        assert_eq!(local.tag_ttl, Duration::from_secs(30));
        assert_eq!(
            local.credentials,
            UpstreamCredentials::Dir(dir.path().to_owned())
        );
        assert_eq!(p.mirrors["_default"].url, None);
        // Without the keys: nothing is mirrored; the spool is per port.
        let s = parse(BASIC, &[]).unwrap();
        assert!(!s.pull_through.enabled());
        assert!(
            s.pull_through
                .spool_dir
                .ends_with(format!("berth-spool-{}", s.addr.port()))
        );
        for (from, to, key) in [
            (
                "https://registry-1.docker.io/",
                "ftp://x",
                "proxy.remoteurl",
            ),
            ("ttl: 24h", "ttl: soon", "proxy.ttl"),
            ("ttl: 24h", "username: alice", "proxy.username"),
            (
                "http://127.0.0.1:5001",
                "127.0.0.1:5001",
                "berth.mirrors[1].remoteurl",
            ),
            ("tagttl: 30s", "tagttl: 30", "berth.mirrors[1].tagttl"),
            (
                "host: docker.io",
                "host: registry.example.com:5000",
                "berth.mirrors[1].host",
            ),
            ("host: docker.io", "host: _default", "berth.mirrors[2].host"),
            (
                "host: docker.io",
                "host: docker.io/library",
                "berth.mirrors[0].host",
            ),
            (
                "host: docker.io",
                "host: \"docker.io:0\"",
                "berth.mirrors[0].host",
            ),
            (
                "credentialsdir: /",
                "credentialsdir: /nonexistent/",
                "berth.mirrors[1].credentialsdir",
            ),
        ] {
            assert!(text.contains(from), "{from}");
            let err = error(&text.replacen(from, to, 1), &[]);
            assert!(err.starts_with(key), "{to}: {err}");
        }
    }

    #[test]
    fn registry_hosts() {
        for good in [
            "docker.io",
            "ghcr.io",
            "localhost:5000",
            "10.0.0.1:5000",
            "a-b.c",
        ] {
            assert!(is_registry_host(good), "{good}");
        }
        for bad in [
            "",
            "_default",
            "a/b",
            "-a.io",
            "a..io",
            "a.io:",
            "a.io:99999",
            "a.io:x",
            "../x",
        ] {
            assert!(!is_registry_host(bad), "{bad}");
        }
    }
}
