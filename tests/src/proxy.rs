//! A TCP proxy on a free loopback port that a test can cut: afterwards no
//! byte passes in either direction, on connections open or new, and the
//! sockets stay open. A client sees what a network partition looks like:
//! calls that never answer, rather than errors it could react to at once.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

/// The running proxy; it stops forwarding when cut or dropped.
#[derive(Debug)]
pub struct TcpProxy {
    port: u16,
    cut: Arc<AtomicBool>,
}

impl TcpProxy {
    /// Forwards connections to `127.0.0.1:<target>` from a free loopback port.
    pub fn start(target: u16) -> TcpProxy {
        TcpProxy::start_on("127.0.0.1", target)
    }

    /// Forwards connections to `127.0.0.1:<target>` from a free port on
    /// the local address `ip` (to show a loopback server on a bridge).
    pub fn start_on(ip: &str, target: u16) -> TcpProxy {
        let listener = TcpListener::bind((ip, 0)).expect("bind a local port");
        let port = listener.local_addr().expect("local address").port();
        let cut = Arc::new(AtomicBool::new(false));
        let flag = cut.clone();
        thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                };
                for (from, to) in [(&client, &server), (&server, &client)] {
                    let (Ok(from), Ok(to)) = (from.try_clone(), to.try_clone()) else {
                        continue;
                    };
                    let flag = flag.clone();
                    thread::spawn(move || pump(from, to, &flag));
                }
            }
        });
        TcpProxy { port, cut }
    }

    /// The port clients connect to.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// From now on, nothing passes.
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.cut();
    }
}

/// Copies `from` to `to` until either closes or the proxy is cut; once
/// cut, holds both open and silent.
fn pump(mut from: TcpStream, mut to: TcpStream, cut: &AtomicBool) {
    let _ = from.set_read_timeout(Some(Duration::from_millis(100)));
    let mut buffer = [0u8; 16 * 1024];
    loop {
        if cut.load(Ordering::SeqCst) {
            // Keep the sockets open (a partition, not a reset) for a while.
            thread::sleep(Duration::from_secs(120));
            return;
        }
        match from.read(&mut buffer) {
            Ok(0) => {
                let _ = to.shutdown(Shutdown::Write);
                return;
            }
            Ok(n) => {
                if cut.load(Ordering::SeqCst) || to.write_all(&buffer[..n]).is_err() {
                    continue;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return,
        }
    }
}
