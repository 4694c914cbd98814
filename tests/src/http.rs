//! HTTP for the tests: a thin ureq client that hands back every response,
//! 4xx and 5xx included, fully read (over plain HTTP, or HTTPS trusting a
//! test CA); a raw client over `TcpStream` for requests whose bytes on the
//! wire must be exact (or that a test streams itself); and assertions on
//! OCI error bodies.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use ureq::Agent;
use ureq::tls::{Certificate, ClientCert, PrivateKey, RootCerts, TlsConfig};

/// Time a single request may take, end to end, in [`Client`].
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(300);

/// A ureq agent that never turns a status into an error, never follows
/// redirects, ignores proxy settings from the environment, and gives up on
/// a request after `timeout`.
pub fn agent_with_timeout(timeout: Duration) -> Agent {
    Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .proxy(None)
        .timeout_global(Some(timeout))
        .build()
        .into()
}

/// [`agent_with_timeout`] for HTTPS: it trusts only the CA certificate
/// `ca_pem` and, when `identity` is given (certificate and key, PEM),
/// presents it as its client certificate.
pub fn agent_with_tls(timeout: Duration, ca_pem: &[u8], identity: Option<(&[u8], &[u8])>) -> Agent {
    let ca = Certificate::from_pem(ca_pem).expect("CA certificate PEM");
    let client_cert = identity.map(|(cert, key)| {
        ClientCert::new_with_certs(
            &[Certificate::from_pem(cert).expect("client certificate PEM")],
            PrivateKey::from_pem(key).expect("client key PEM"),
        )
    });
    let tls = TlsConfig::builder()
        .root_certs(RootCerts::Specific(Arc::new(vec![ca])))
        .client_cert(client_cert)
        .build();
    Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .proxy(None)
        .timeout_global(Some(timeout))
        .tls_config(tls)
        .build()
        .into()
}

/// The value of an `Authorization: Basic` header for `user` and `password`.
pub fn basic_auth(user: &str, password: &str) -> String {
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {token}")
}

/// A response, read in full.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The status code.
    pub status: u16,
    /// Header names (lower case) and values, in order.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Reply {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as text (lossy UTF-8).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON; panics, showing the response, when it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("response body is not JSON ({e}):\n{}", self.describe()))
    }

    /// The `code` of every entry in an OCI error body
    /// (`{"errors":[{"code":...}]}`); empty when the body is not one.
    pub fn error_codes(&self) -> Vec<String> {
        let Ok(value) = serde_json::from_slice::<serde_json::Value>(&self.body) else {
            return Vec::new();
        };
        value["errors"]
            .as_array()
            .map(|errors| {
                errors
                    .iter()
                    .filter_map(|e| e["code"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Status, headers and the start of the body, for failure messages.
    pub fn describe(&self) -> String {
        let mut out = format!("HTTP {}\n", self.status);
        for (k, v) in &self.headers {
            out.push_str(&format!("{k}: {v}\n"));
        }
        let text = self.text();
        let shown: String = text.chars().take(2000).collect();
        out.push('\n');
        out.push_str(&shown);
        if shown.len() < text.len() {
            out.push_str(&format!("... ({} bytes in all)", self.body.len()));
        }
        out
    }
}

/// Assert that `reply` has status `status`; `what` names the request.
pub fn assert_status(reply: &Reply, status: u16, what: &str) {
    assert_eq!(
        reply.status,
        status,
        "{what}: expected status {status}, got:\n{}",
        reply.describe()
    );
}

/// Assert that `reply` has status `status` and an OCI error body whose
/// errors include `code`; `what` names the request.
pub fn assert_error(reply: &Reply, status: u16, code: &str, what: &str) {
    assert_status(reply, status, what);
    let codes = reply.error_codes();
    assert!(
        codes.iter().any(|c| c == code),
        "{what}: expected error code {code}, got {codes:?}:\n{}",
        reply.describe()
    );
}

/// A client for one server, addressed by its base URL (`http://host:port`).
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    agent: Agent,
    headers: Vec<(String, String)>,
}

impl Client {
    /// A client for the server at `base` (`http://127.0.0.1:PORT`).
    pub fn new(base: &str) -> Client {
        Client::with_agent(base, agent_with_timeout(REQUEST_TIMEOUT))
    }

    /// A client for the server at `base` that sends through `agent` (for
    /// example one from [`agent_with_tls`]).
    pub fn with_agent(base: &str, agent: Agent) -> Client {
        Client {
            base: base.trim_end_matches('/').to_owned(),
            agent,
            headers: Vec::new(),
        }
    }

    /// This client, sending header `name: value` with every request.
    pub fn with_header(mut self, name: &str, value: &str) -> Client {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// This client, sending `Authorization: Basic` for `user` and `password`
    /// with every request.
    pub fn with_basic_auth(self, user: &str, password: &str) -> Client {
        self.with_header("Authorization", &basic_auth(user, password))
    }

    /// The base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// `target` as an absolute URL: absolute URLs pass through, paths
    /// (`/v2/...`, as in a relative `Location`) are joined to the base.
    pub fn url(&self, target: &str) -> String {
        if target.starts_with("http://") || target.starts_with("https://") {
            target.to_owned()
        } else if target.starts_with('/') {
            format!("{}{target}", self.base)
        } else {
            format!("{}/{target}", self.base)
        }
    }

    /// Send a request and read the whole response. `body: None` sends no
    /// body; `Some` sends it with its `Content-Length`. Panics only on a
    /// transport error (no response at all).
    pub fn request(
        &self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Reply {
        self.try_request(method, target, headers, body)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`Client::request`], returning a transport error (refused connection,
    /// failed TLS handshake, broken body, ...) as text instead of panicking.
    pub fn try_request(
        &self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Result<Reply, String> {
        let url = self.url(target);
        let mut builder = ureq::http::Request::builder().method(method).uri(&url);
        for (k, v) in &self.headers {
            builder = builder.header(k, v);
        }
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        let result = match body {
            Some(bytes) => self.agent.run(builder.body(bytes).expect("valid request")),
            None => self.agent.run(builder.body(()).expect("valid request")),
        };
        let mut response = result.map_err(|e| format!("{method} {url}: no response: {e}"))?;
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let body = if method.eq_ignore_ascii_case("HEAD") {
            Vec::new()
        } else {
            response
                .body_mut()
                .with_config()
                .limit(u64::MAX)
                .read_to_vec()
                .map_err(|e| format!("{method} {url}: reading the body: {e}"))?
        };
        Ok(Reply {
            status,
            headers,
            body,
        })
    }

    /// `GET target`.
    pub fn get(&self, target: &str) -> Reply {
        self.request("GET", target, &[], None)
    }

    /// `GET target` with extra headers.
    pub fn get_with(&self, target: &str, headers: &[(&str, &str)]) -> Reply {
        self.request("GET", target, headers, None)
    }

    /// `HEAD target`.
    pub fn head(&self, target: &str) -> Reply {
        self.request("HEAD", target, &[], None)
    }

    /// `DELETE target`.
    pub fn delete(&self, target: &str) -> Reply {
        self.request("DELETE", target, &[], None)
    }

    /// `POST target` with a body (possibly empty).
    pub fn post(&self, target: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
        self.request("POST", target, headers, Some(body))
    }

    /// `PUT target` with a body (possibly empty).
    pub fn put(&self, target: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
        self.request("PUT", target, headers, Some(body))
    }

    /// `PATCH target` with a body.
    pub fn patch(&self, target: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
        self.request("PATCH", target, headers, Some(body))
    }
}

/// Open a connection to `addr` and write a request head for `method target`
/// announcing a body of `content_length` bytes (`None`: no `Content-Length`
/// header). The caller writes the body, then may call [`read_reply`].
/// The request asks the server to close the connection afterwards.
pub fn open_request(
    addr: &str,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    content_length: Option<u64>,
) -> io::Result<TcpStream> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(REQUEST_TIMEOUT))?;
    stream.set_write_timeout(Some(REQUEST_TIMEOUT))?;
    let mut head = format!("{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(len) = content_length {
        head.push_str(&format!("Content-Length: {len}\r\n"));
    }
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    Ok(stream)
}

/// Read a whole response from a connection the server will close.
pub fn read_reply(stream: &mut TcpStream, method: &str) -> io::Result<Reply> {
    let mut raw = Vec::new();
    let mut buf = [0u8; 64 * 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            // A server that rejects a request early may reset the connection
            // once it has answered; keep what arrived.
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset && !raw.is_empty() => break,
            Err(e) => return Err(e),
        }
    }
    parse_reply(&raw, method)
}

/// Send one request with exactly the given target (no normalisation or
/// escaping of the path) and body, and read the response. If the server
/// stops reading the body early, the rest is not sent and the response is
/// still read. Panics when no response arrives.
pub fn raw_request(
    addr: &str,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Reply {
    let send_length = !body.is_empty() || matches!(method, "POST" | "PUT" | "PATCH");
    let mut stream = open_request(
        addr,
        method,
        target,
        headers,
        send_length.then_some(body.len() as u64),
    )
    .unwrap_or_else(|e| panic!("{method} {target}: connecting to {addr}: {e}"));
    for chunk in body.chunks(256 * 1024) {
        if stream.write_all(chunk).is_err() {
            break;
        }
    }
    read_reply(&mut stream, method)
        .unwrap_or_else(|e| panic!("{method} {target}: no response from {addr}: {e}"))
}

/// Send one request as a plain client does that writes its whole body
/// before it reads anything, then read the response. Unlike [`raw_request`],
/// a server that stops reading early makes this fail (typically with
/// "broken pipe" or "connection reset"), and the error says so.
pub fn whole_request(
    addr: &str,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> io::Result<Reply> {
    let context = |what: &str, e: io::Error| {
        io::Error::new(e.kind(), format!("{method} {target}: {what}: {e}"))
    };
    let mut stream = open_request(addr, method, target, headers, Some(body.len() as u64))
        .map_err(|e| context("connecting", e))?;
    stream
        .write_all(body)
        .map_err(|e| context("sending the body", e))?;
    read_reply(&mut stream, method).map_err(|e| context("reading the response", e))
}

fn parse_reply(raw: &[u8], method: &str) -> io::Result<Reply> {
    let invalid = |msg: &str| io::Error::new(io::ErrorKind::InvalidData, msg.to_owned());
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| invalid(&format!("no complete response head in {} bytes", raw.len())))?;
    let head = String::from_utf8_lossy(&raw[..end]);
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| invalid(&format!("bad status line {status_line:?}")))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let rest = &raw[end + 4..];
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked"));
    let body = if method.eq_ignore_ascii_case("HEAD") {
        Vec::new()
    } else if chunked {
        dechunk(rest).ok_or_else(|| invalid("malformed chunked body"))?
    } else {
        rest.to_vec()
    };
    Ok(Reply {
        status,
        headers,
        body,
    })
}

fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&data[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}
