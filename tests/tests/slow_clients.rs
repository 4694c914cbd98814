//! Slow and hostile clients: connections that send nothing, send request
//! headers a byte at a time, send only the HTTP/2 preface, stop in the
//! middle of an upload body, or stop reading a download are closed by the
//! server after `berth.idletimeout` or `berth.stalltimeout`, over plain HTTP
//! and TLS; connections past `berth.maxconnections` are closed as they
//! arrive; and a burst of 5,000 connections is served or shed while the
//! server's resident memory stays within the README's bound. The tests print
//! how many connections the slow clients held, over time, and the RSS under
//! the burst.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use berth_tests::certs::TestCa;
use berth_tests::http::Client;
use berth_tests::images::random_bytes;
use berth_tests::metrics::{self, Exposition};
use berth_tests::oci;
use berth_tests::process::{free_port, rss_kib};
use berth_tests::registry::{BerthRegistry, RegistryOptions};

/// Short limits, so that the tests see them act within seconds.
const LIMITS: &str = "idletimeout: 2s\nstalltimeout: 3s";

/// How long a slow client waits for the server to close its connection
/// before the test fails: far beyond the limits above.
const GIVE_UP: Duration = Duration::from_secs(60);

const HTTP2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A registry with `berth` settings `berth`, its metrics on a second port
/// (whose connections the main listener's limits do not count).
fn start(options: RegistryOptions, berth: &str) -> (BerthRegistry, Client) {
    let debug_port = free_port();
    let registry = BerthRegistry::start(
        options
            .section("berth", berth)
            .section("http.debug", &format!("addr: 127.0.0.1:{debug_port}")),
    );
    let debug = Client::new(&format!("http://127.0.0.1:{debug_port}"));
    (registry, debug)
}

/// Connections open on the main listener.
fn open_connections(scrape: &Exposition) -> usize {
    scrape.sum("berth_http_connections", &[("listener", "main")]) as usize
}

/// Connections of the main listener the server closed for `reason`.
fn closed(scrape: &Exposition, reason: &str) -> usize {
    scrape.sum(
        "berth_http_connections_closed_total",
        &[("listener", "main"), ("reason", reason)],
    ) as usize
}

fn connect(addr: &str) -> TcpStream {
    let stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .expect("read timeout");
    stream
}

/// Whether the server has closed `stream`: reads (and drops) what arrived,
/// waiting at most the stream's read timeout.
fn is_closed(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 64 * 1024];
    match stream.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            false
        }
        Err(_) => true,
    }
}

/// A slow client: `step` runs between checks for the server's close (an
/// error from it counts as a close). How long the connection lived.
fn hold(mut stream: TcpStream, mut step: impl FnMut(&mut TcpStream) -> io::Result<()>) -> Duration {
    let opened = Instant::now();
    loop {
        if step(&mut stream).is_err() || is_closed(&mut stream) {
            return opened.elapsed();
        }
        assert!(
            opened.elapsed() < GIVE_UP,
            "a slow client's connection is still open after {GIVE_UP:?}"
        );
    }
}

/// Sends nothing.
fn silent(addr: &str) -> Duration {
    hold(connect(addr), |_| Ok(()))
}

/// Sends a request head that never ends, a byte every 100 ms.
fn trickling_headers(addr: &str) -> Duration {
    let head = b"GET /v2/ HTTP/1.1\r\nHost: x\r\nX-Slow: ";
    let mut sent = 0;
    hold(connect(addr), move |stream| {
        let byte = head.get(sent).copied().unwrap_or(b'a');
        sent += 1;
        stream.write_all(&[byte])
    })
}

/// Sends the HTTP/2 client preface and then nothing.
fn http2_preface_only(addr: &str) -> Duration {
    let mut stream = connect(addr);
    stream.write_all(HTTP2_PREFACE).expect("send the preface");
    hold(stream, |_| Ok(()))
}

/// Announces a 1 MiB chunk of an upload it started, sends 64 KiB of it,
/// then nothing.
fn stalled_upload(addr: &str, upload_path: &str) -> Duration {
    let mut stream = connect(addr);
    let head = format!(
        "PATCH {upload_path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
        1024 * 1024
    );
    stream.write_all(head.as_bytes()).expect("send the head");
    stream.write_all(&[0u8; 64 * 1024]).expect("send some body");
    hold(stream, |_| Ok(()))
}

/// Asks for `path` and reads nothing; returns the connection.
fn unread_download(addr: &str, path: &str) -> TcpStream {
    let mut stream = connect(addr);
    let head = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
    stream.write_all(head.as_bytes()).expect("send the request");
    stream
}

/// Reads `stream` to its end; the bytes that arrived.
fn drain(mut stream: TcpStream) -> u64 {
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("read timeout");
    let mut total = 0u64;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return total,
            Ok(n) => total += n as u64,
        }
    }
}

/// Scrapes `debug` until `done` holds for the scrape, printing the open
/// connections as they change; the last scrape.
fn watch_connections(debug: &Client, what: &str, done: impl Fn(&Exposition) -> bool) -> Exposition {
    let started = Instant::now();
    let mut last = None;
    loop {
        let scrape = metrics::scrape(debug);
        let now = [
            open_connections(&scrape),
            closed(&scrape, "idle"),
            closed(&scrape, "stalled"),
        ];
        if last != Some(now) {
            println!(
                "{what}: at {:.1} s, {} connections open; closed so far as idle: {}, as stalled: {}",
                started.elapsed().as_secs_f64(),
                now[0],
                now[1],
                now[2]
            );
            last = Some(now);
        }
        if done(&scrape) {
            return scrape;
        }
        assert!(
            started.elapsed() < GIVE_UP,
            "{what}: connections still open after {GIVE_UP:?}"
        );
        thread::sleep(Duration::from_millis(100));
    }
}

fn print_held(kind: &str, held: &[Duration]) {
    let max = held.iter().max().copied().unwrap_or_default();
    let min = held.iter().min().copied().unwrap_or_default();
    println!(
        "{kind}: {} connections, closed by the server after {:.1} to {:.1} s",
        held.len(),
        min.as_secs_f64(),
        max.as_secs_f64()
    );
}

#[test]
fn slow_clients_are_cut_after_the_timeouts() {
    const EACH: usize = 8;
    let (registry, debug) = start(RegistryOptions::new(), LIMITS);
    let client = registry.client();
    let addr = registry.addr();
    let blob = random_bytes(32 * 1024 * 1024);
    let digest = oci::push_blob(&client, "slow/app", &blob);
    let uploads: Vec<String> = (0..EACH)
        .map(|_| oci::location_path(&oci::start_upload(&client, "slow/app")))
        .collect();
    // Let the client's own connection close as idle before counting.
    watch_connections(&debug, "before", |s| open_connections(s) == 0);
    let before = metrics::scrape(&debug);

    let downloads: Vec<TcpStream> = (0..4)
        .map(|_| unread_download(&addr, &format!("/v2/slow/app/blobs/{digest}")))
        .collect();
    let held = thread::scope(|scope| {
        let kinds: Vec<(&str, Vec<thread::ScopedJoinHandle<'_, Duration>>)> = vec![
            (
                "silent",
                (0..EACH).map(|_| scope.spawn(|| silent(&addr))).collect(),
            ),
            (
                "headers a byte at a time",
                (0..EACH)
                    .map(|_| scope.spawn(|| trickling_headers(&addr)))
                    .collect(),
            ),
            (
                "HTTP/2 preface only",
                (0..EACH)
                    .map(|_| scope.spawn(|| http2_preface_only(&addr)))
                    .collect(),
            ),
            (
                "upload body stalled",
                uploads
                    .iter()
                    .map(|path| scope.spawn(|| stalled_upload(&addr, path)))
                    .collect(),
            ),
        ];
        let total = 4 * EACH + downloads.len();
        let scrape = watch_connections(&debug, "slow clients", |s| {
            closed(s, "idle") - closed(&before, "idle") >= 3 * EACH
                && closed(s, "stalled") - closed(&before, "stalled") >= EACH + downloads.len()
        });
        println!(
            "slow clients: {total} connections opened; closed as idle: {}, as stalled: {}",
            closed(&scrape, "idle") - closed(&before, "idle"),
            closed(&scrape, "stalled") - closed(&before, "stalled"),
        );
        kinds
            .into_iter()
            .map(|(kind, handles)| {
                let held: Vec<Duration> = handles.into_iter().map(|h| h.join().unwrap()).collect();
                (kind, held)
            })
            .collect::<Vec<_>>()
    });
    for (kind, held) in &held {
        print_held(kind, held);
    }
    for stream in downloads {
        let received = drain(stream);
        println!(
            "download not read: {received} of {} bytes arrived before the cut",
            blob.len()
        );
        assert!(
            received < blob.len() as u64,
            "a download the client stopped reading was not cut"
        );
    }
    let after = watch_connections(&debug, "after", |s| open_connections(s) == 0);
    assert_eq!(open_connections(&after), 0);
    // Normal clients are served as before.
    let reply = client.get(&format!("/v2/slow/app/blobs/{digest}"));
    assert_eq!(reply.status, 200, "{}", reply.describe());
    assert_eq!(reply.body.len(), blob.len());
}

#[test]
fn slow_tls_handshakes_are_cut_after_the_idle_timeout() {
    const EACH: usize = 8;
    let ca = TestCa::new("berth-tests CA");
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    ca.server_cert("slow").write(&cert, &key);
    let (registry, debug) = start(
        RegistryOptions::new().tls(&cert, &key, ca.cert_pem()),
        LIMITS,
    );
    watch_connections(&debug, "before", |s| open_connections(s) == 0);
    let addr = registry.addr();
    // A TLS record header announcing a ClientHello that never comes.
    let partial_hello: &[u8] = &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01];
    let held = thread::scope(|scope| {
        let quiet: Vec<_> = (0..EACH).map(|_| scope.spawn(|| silent(&addr))).collect();
        let partial: Vec<_> = (0..EACH)
            .map(|_| {
                scope.spawn(|| {
                    let mut stream = connect(&addr);
                    stream
                        .write_all(partial_hello)
                        .expect("send a partial hello");
                    hold(stream, |_| Ok(()))
                })
            })
            .collect();
        watch_connections(&debug, "TLS slow clients", |s| {
            closed(s, "idle") >= 2 * EACH
        });
        [
            ("TLS, silent", quiet),
            ("TLS, partial ClientHello", partial),
        ]
        .map(|(kind, handles)| {
            (
                kind,
                handles
                    .into_iter()
                    .map(|h| h.join().unwrap())
                    .collect::<Vec<_>>(),
            )
        })
    });
    for (kind, held) in &held {
        print_held(kind, held);
    }
    assert_eq!(registry.client().get("/v2/").status, 200);
}

#[test]
fn connections_past_the_limit_are_closed_as_they_arrive() {
    const MAX: usize = 10;
    let (registry, debug) = start(
        RegistryOptions::new(),
        &format!("maxconnections: {MAX}\nidletimeout: 30s"),
    );
    watch_connections(&debug, "before", |s| open_connections(s) == 0);
    let addr = registry.addr();
    let held: Vec<TcpStream> = (0..MAX).map(|_| connect(&addr)).collect();
    watch_connections(&debug, "at the limit", |s| open_connections(s) == MAX);
    let mut shed = 0;
    for _ in 0..5 {
        let mut extra = connect(&addr);
        let deadline = Instant::now() + GIVE_UP;
        while !is_closed(&mut extra) {
            assert!(
                Instant::now() < deadline,
                "a connection past the limit stayed open"
            );
        }
        shed += 1;
    }
    let scrape = metrics::scrape(&debug);
    println!(
        "limit {MAX}: {} connections held, {shed} more closed on arrival (berth_http_connections_closed_total{{reason=\"shed\"}} {})",
        open_connections(&scrape),
        closed(&scrape, "shed")
    );
    assert_eq!(closed(&scrape, "shed"), 5);
    drop(held);
    watch_connections(&debug, "released", |s| open_connections(s) == 0);
    assert_eq!(registry.client().get("/v2/").status, 200);
}

/// Raises this process's open-file limit to its hard limit, for 5,000
/// client sockets; the limit in force.
fn raise_open_files() -> libc::rlim_t {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read and write only `limit`.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        }
    }
    limit.rlim_cur
}

#[test]
fn a_burst_of_5000_connections_is_served_or_shed_within_the_memory_bound() {
    const BURST: usize = 5_000;
    const THREADS: usize = 8;
    let open_files = raise_open_files();
    assert!(
        open_files > BURST as libc::rlim_t + 100,
        "this test needs more than {BURST} open files; the limit is {open_files}"
    );
    let (registry, debug) = start(RegistryOptions::new(), "maxconnections: 1000");
    let pid = registry.pid().expect("the server runs");
    let before = rss_kib(pid).expect("the server's VmRSS");
    let addr: SocketAddr = registry.addr().parse().unwrap();
    let refused = AtomicUsize::new(0);
    let peak = AtomicUsize::new(before as usize);
    let streams: Vec<TcpStream> = thread::scope(|scope| {
        let opening: Vec<_> = (0..THREADS)
            .map(|_| {
                scope.spawn(|| {
                    let mut streams = Vec::new();
                    for _ in 0..BURST / THREADS {
                        match TcpStream::connect_timeout(&addr, Duration::from_secs(30)) {
                            Ok(mut stream) => {
                                let _ = stream.write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n");
                                streams.push(stream);
                            }
                            Err(_) => {
                                refused.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        if let Some(rss) = rss_kib(pid) {
                            peak.fetch_max(rss as usize, Ordering::Relaxed);
                        }
                    }
                    streams
                })
            })
            .collect();
        opening
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    let held = rss_kib(pid).expect("the server's VmRSS");
    let peak = peak.load(Ordering::Relaxed).max(held as usize) as u64;
    let scrape = metrics::scrape(&debug);
    let (mut served, mut shed) = (0, 0);
    for mut stream in streams {
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("read timeout");
        let mut head = [0u8; 12];
        match stream.read_exact(&mut head) {
            Ok(()) if head.starts_with(b"HTTP/1.1 200") => served += 1,
            Ok(()) => panic!("unexpected answer {:?}", String::from_utf8_lossy(&head)),
            Err(_) => shed += 1,
        }
    }
    let refused = refused.load(Ordering::Relaxed);
    println!(
        "burst of {BURST} connections: {served} served, {shed} shed (closed on arrival), {refused} refused at connect; \
         {} open at once (berth_http_connections), {} counted shed",
        open_connections(&scrape),
        closed(&scrape, "shed")
    );
    println!(
        "server RSS: {before} KiB before the burst, peak {peak} KiB while it was held, {held} KiB with the connections open"
    );
    assert_eq!(served + shed + refused, BURST);
    assert!(served > 0, "the burst got no answer at all");
    assert!(
        open_connections(&scrape) <= 1000,
        "more connections open than berth.maxconnections"
    );
    // The README's bound: 64 MiB above the server's idle size at the
    // default berth.maxconnections of 1000.
    assert!(
        peak < before + 64 * 1024,
        "RSS grew from {before} KiB to {peak} KiB under the burst"
    );
    assert_eq!(registry.client().get("/healthz").status, 200);
}
