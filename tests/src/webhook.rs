//! A notification endpoint inside the test: an HTTP/1.1 server on a
//! loopback port (a `TcpListener` and a thread per connection) that
//! answers every request 200 and records it, so a test can read the events
//! a registry POSTed. It can start on a port chosen in advance, to play an
//! endpoint that comes up late. Stopped on drop.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde_json::Value;

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The method.
    pub method: String,
    /// The request target.
    pub target: String,
    /// Header names (lower case) and values.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Delivery {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The `events` array of the body (Distribution's envelope); panics
    /// when the body is not one.
    pub fn events(&self) -> Vec<Value> {
        let value: Value = serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "a delivery that is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        });
        value["events"]
            .as_array()
            .unwrap_or_else(|| panic!("a delivery without an events array: {value}"))
            .clone()
    }
}

/// A running receiver. Dropping it stops listening.
#[derive(Debug)]
pub struct Receiver {
    port: u16,
    deliveries: Arc<Mutex<Vec<Delivery>>>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl Receiver {
    /// Listen on a free loopback port.
    pub fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        Receiver::serve(listener)
    }

    /// Listen on `port` (chosen before, for example with
    /// [`crate::process::free_port`]); fails when it is taken.
    pub fn start_on(port: u16) -> io::Result<Receiver> {
        Ok(Receiver::serve(TcpListener::bind(("127.0.0.1", port))?))
    }

    fn serve(listener: TcpListener) -> Receiver {
        let port = listener.local_addr().expect("local address").port();
        let deliveries = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let accept = {
            let deliveries = deliveries.clone();
            let stop = stop.clone();
            thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let Ok(conn) = conn else { continue };
                    let deliveries = deliveries.clone();
                    let stop = stop.clone();
                    thread::spawn(move || {
                        let _ = handle(conn, &deliveries, &stop);
                    });
                }
            })
        };
        Receiver {
            port,
            deliveries,
            stop,
            accept: Some(accept),
        }
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL to configure as the endpoint: `http://127.0.0.1:PORT/events`.
    pub fn url(&self) -> String {
        url_for(self.port)
    }

    /// Every request so far.
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.deliveries.lock().unwrap().clone()
    }

    /// Every event of every request so far, in order.
    pub fn events(&self) -> Vec<Value> {
        self.deliveries()
            .iter()
            .flat_map(Delivery::events)
            .collect()
    }

    /// Poll (up to `timeout`) until `done` holds for the events received so
    /// far; return them, or panic with them when it never does.
    pub fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        done: impl Fn(&[Value]) -> bool,
    ) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let events = self.events();
            if done(&events) {
                return events;
            }
            if Instant::now() >= deadline {
                let shown: Vec<String> = events.iter().map(summary).collect();
                panic!(
                    "{what}: not received within {timeout:?}; {} events so far:\n{}",
                    events.len(),
                    shown.join("\n")
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }
}

/// The endpoint URL for a receiver on `port`: `http://127.0.0.1:PORT/events`.
pub fn url_for(port: u16) -> String {
    format!("http://127.0.0.1:{port}/events")
}

/// `action target.repository target.digest target.tag`, for messages.
pub fn summary(event: &Value) -> String {
    format!(
        "{} {} {} {} {}",
        event["action"].as_str().unwrap_or("?"),
        event["target"]["repository"].as_str().unwrap_or("?"),
        event["target"]["mediaType"].as_str().unwrap_or("?"),
        event["target"]["digest"].as_str().unwrap_or("?"),
        event["target"]["tag"].as_str().unwrap_or("-"),
    )
}

/// Serve requests on one connection until it closes or the receiver stops.
fn handle(conn: TcpStream, deliveries: &Mutex<Vec<Delivery>>, stop: &AtomicBool) -> io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_millis(500)))?;
    let mut writer = conn.try_clone()?;
    let mut reader = BufReader::new(conn);
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                if stop.load(Ordering::SeqCst) {
                    return Ok(());
                }
                continue;
            }
            Err(e) => return Err(e),
        }
        if line.trim().is_empty() {
            continue;
        }
        // The rest of the request arrives promptly; wait for it.
        reader
            .get_ref()
            .set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or_default().to_owned();
        let target = parts.next().unwrap_or_default().to_owned();
        let mut headers = Vec::new();
        loop {
            let mut header = String::new();
            reader.read_line(&mut header)?;
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((k, v)) = header.split_once(':') {
                headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
            }
        }
        let find = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v): &(String, String)| v.clone())
        };
        let body = if find("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
        {
            read_chunked(&mut reader)?
        } else {
            let len: usize = find("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let mut body = vec![0; len];
            reader.read_exact(&mut body)?;
            body
        };
        deliveries.lock().unwrap().push(Delivery {
            method,
            target,
            headers,
            body,
        });
        writer.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")?;
        reader
            .get_ref()
            .set_read_timeout(Some(Duration::from_millis(500)))?;
    }
}

fn read_chunked(reader: &mut impl BufRead) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut size = String::new();
        reader.read_line(&mut size)?;
        let size = usize::from_str_radix(size.trim().split(';').next().unwrap_or("0"), 16)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        if size == 0 {
            // Trailers, then the empty line.
            loop {
                let mut line = String::new();
                reader.read_line(&mut line)?;
                if line.trim().is_empty() {
                    return Ok(body);
                }
            }
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader.read_exact(&mut body[start..])?;
        let mut crlf = [0u8; 2];
        reader.read_exact(&mut crlf)?;
    }
}
