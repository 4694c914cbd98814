//! Client connections: how many may be open at once, and when the server
//! closes one.
//!
//! A registry on every node answers anything that reaches the node's port, so
//! a client must not be able to hold the server's memory or sockets by
//! connecting and then doing nothing, or doing it very slowly. Three limits
//! apply to every connection, HTTP/1.1 and HTTP/2, plain or TLS:
//!
//! - At most `berth.maxconnections` are open at once. A connection accepted
//!   past that is closed at once: a burst is shed rather than queued, so a
//!   client (containerd falling back to the upstream, say) learns it at once.
//! - A connection with no request in flight is closed `berth.idletimeout`
//!   after its last request ended, or after it was opened. A request counts
//!   only once its headers are in, so this one limit bounds an idle keep-alive
//!   connection, a TLS handshake, an HTTP/2 preface with nothing after it, and
//!   request headers sent byte by byte alike.
//! - A connection on which a request waits for the client (for body bytes it
//!   does not send, or for it to take the response) while no byte moves
//!   either way for `berth.stalltimeout` is closed. Time a request spends on
//!   the server's side (storage, hashing) never counts: only a client stalls.
//!
//! Each connection task runs a watchdog beside hyper's connection future and
//! drops that future, which closes the socket and cancels its requests, when
//! a limit is crossed. An idle connection is first asked to close gracefully
//! (HTTP/2 GOAWAY) and dropped if it is still idle a second later.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::body::Body;
use http::Request;
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

pub use crate::config::ConnectionLimits;

use crate::api::PeerAddr;
use crate::metrics::{ListenerLabels, Metrics};

/// How long an idle connection asked to close (HTTP/2: sent GOAWAY) may
/// take to do so before it is dropped; HTTP/1.1 request headers that never
/// end are cut then.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// How a listener serves: the application, TLS, protocols and limits.
#[derive(Clone)]
pub(super) struct Listener {
    /// The listener's name in metrics: `main` or `debug`.
    pub name: &'static str,
    /// The application.
    pub router: axum::Router,
    /// TLS, when the listener speaks it.
    pub tls: Option<TlsAcceptor>,
    /// Whether HTTP/2 is offered besides HTTP/1.1.
    pub http2: bool,
    /// The limits every connection is held to.
    pub limits: ConnectionLimits,
    /// Where connections are counted.
    pub metrics: Arc<Metrics>,
}

impl Listener {
    fn closed(&self, reason: &'static str) {
        self.metrics.connection_closed(self.name, reason);
    }
}

/// The open connections of a listener that stopped accepting.
pub(super) struct OpenConnections {
    slots: Arc<Semaphore>,
    max: u32,
    stop: watch::Sender<bool>,
}

impl OpenConnections {
    /// Asks every connection to finish its requests and close, and waits
    /// until all have closed or `deadline` passes. Whether all closed.
    pub(super) async fn drain(self, deadline: Instant) -> bool {
        let _ = self.stop.send(true);
        tokio::time::timeout_at(deadline, self.slots.acquire_many(self.max))
            .await
            .is_ok()
    }
}

/// Serves connections accepted on `listener` until `shutdown` resolves.
pub(super) async fn serve(
    listener: TcpListener,
    serving: Listener,
    shutdown: impl Future<Output = ()>,
) -> OpenConnections {
    let max = serving.limits.max_connections;
    let slots = Arc::new(Semaphore::new(max as usize));
    let (stop, stopped) = watch::channel(false);
    let serving = Arc::new(serving);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Typically out of file descriptors: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            serving.closed("shed");
            tracing::debug!(%peer, "connection limit reached: closing a new connection");
            continue;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(serve_connection(
            stream,
            peer,
            serving.clone(),
            slot,
            stopped.clone(),
        ));
    }
    OpenConnections { slots, max, stop }
}

/// Serves one connection until it ends, a limit closes it, or the listener
/// stops (then gracefully). Holds `_slot` while it runs.
async fn serve_connection(
    stream: TcpStream,
    peer: std::net::SocketAddr,
    serving: Arc<Listener>,
    _slot: OwnedSemaphorePermit,
    stop: watch::Receiver<bool>,
) {
    let _open = OpenGauge::new(&serving);
    let activity = Arc::new(Activity::new());
    let stream = Metered {
        io: stream,
        activity: activity.clone(),
    };
    let result = match &serving.tls {
        Some(acceptor) => {
            // The handshake happens before any request: the idle limit applies.
            match tokio::time::timeout(serving.limits.idle_timeout, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => drive(tls, peer, &serving, activity, stop).await,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    serving.closed("idle");
                    tracing::debug!(%peer, "TLS handshake not finished within the idle timeout");
                    return;
                }
            }
        }
        None => drive(stream, peer, &serving, activity, stop).await,
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}

/// Why the watchdog closes a connection.
enum Verdict {
    /// Nothing to do before this instant.
    Wait(Instant),
    /// No request in flight for the idle timeout.
    Idle,
    /// A request waits on a client that moved no byte for the stall timeout.
    Stalled,
}

/// Runs hyper's connection on `io` beside the watchdog that enforces the
/// idle and stall limits.
async fn drive<I>(
    io: I,
    peer: std::net::SocketAddr,
    serving: &Listener,
    activity: Arc<Activity>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let limits = serving.limits;
    // No timer for hyper: its own header timeout would race the watchdog's
    // idle limit, which covers request headers on both protocols.
    let mut builder = auto::Builder::new(TokioExecutor::new());
    if !serving.http2 {
        builder = builder.http1_only();
    }
    let router = serving
        .router
        .clone()
        .layer(axum::Extension(PeerAddr(peer)));
    let tracked = activity.clone();
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let in_flight = InFlight::new(tracked.clone());
        let request = request.map(|body| {
            Body::new(Watched {
                inner: body,
                side: Side::Request,
                waiting: false,
                activity: tracked.clone(),
                _in_flight: None,
            })
        });
        let response = router.clone().oneshot(request);
        let tracked = tracked.clone();
        async move {
            let response = response
                .await
                .unwrap_or_else(|never: Infallible| match never {});
            Ok::<_, Infallible>(response.map(|body| Watched {
                inner: body,
                side: Side::Response,
                waiting: false,
                activity: tracked,
                _in_flight: Some(in_flight),
            }))
        }
    });
    let connection = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(connection);
    let mut stopping = false;
    // When an idle connection was asked to close: when it gets dropped if
    // it is still idle.
    let mut closing: Option<Instant> = None;
    let mut check = Instant::now();
    loop {
        tokio::select! {
            result = connection.as_mut() => return result,
            _ = stop.changed(), if !stopping => {
                stopping = true;
                connection.as_mut().graceful_shutdown();
            }
            () = tokio::time::sleep_until(check) => {
                let now = Instant::now();
                match activity.verdict(now, &limits) {
                    Verdict::Wait(next) => check = next,
                    Verdict::Idle => match closing {
                        None => {
                            if !stopping {
                                serving.closed("idle");
                            }
                            tracing::debug!(%peer, "closing an idle connection");
                            connection.as_mut().graceful_shutdown();
                            closing = Some(now + CLOSE_GRACE);
                            check = now + CLOSE_GRACE;
                        }
                        Some(deadline) if now >= deadline => return Ok(()),
                        Some(deadline) => check = deadline,
                    },
                    Verdict::Stalled => {
                        serving.closed("stalled");
                        tracing::info!(%peer, timeout = ?limits.stall_timeout, "closing a connection whose client stalled");
                        return Ok(());
                    }
                }
            }
        }
    }
}

/// What a connection is doing, shared by its socket, its requests and its
/// watchdog.
struct Activity {
    opened: Instant,
    /// When a byte last moved, in milliseconds since `opened`.
    last_io: AtomicU64,
    state: Mutex<State>,
}

struct State {
    /// Requests whose response is not finished.
    in_flight: usize,
    /// Since when no request is in flight.
    idle_since: Instant,
    /// Request and response bodies waiting on the client.
    waiting: usize,
    /// Since when some body waits on the client.
    waiting_since: Instant,
}

impl Activity {
    fn new() -> Activity {
        let now = Instant::now();
        Activity {
            opened: now,
            last_io: AtomicU64::new(0),
            state: Mutex::new(State {
                in_flight: 0,
                idle_since: now,
                waiting: 0,
                waiting_since: now,
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn moved_bytes(&self) {
        let elapsed = self.opened.elapsed().as_millis() as u64;
        self.last_io.store(elapsed, Ordering::Relaxed);
    }

    fn last_io(&self) -> Instant {
        self.opened + Duration::from_millis(self.last_io.load(Ordering::Relaxed))
    }

    fn set_waiting(&self, waiting: bool) {
        let mut state = self.state();
        if waiting {
            if state.waiting == 0 {
                state.waiting_since = Instant::now();
            }
            state.waiting += 1;
        } else {
            state.waiting = state.waiting.saturating_sub(1);
        }
    }

    /// Whether a limit is crossed at `now`, or when to look again. The
    /// answer is never later than the shorter limit from now, so that a
    /// deadline set after this call is not overslept.
    fn verdict(&self, now: Instant, limits: &ConnectionLimits) -> Verdict {
        let state = self.state();
        let deadline = if state.in_flight == 0 {
            let deadline = state.idle_since + limits.idle_timeout;
            if now >= deadline {
                return Verdict::Idle;
            }
            deadline
        } else if state.waiting > 0 {
            let deadline = state.waiting_since.max(self.last_io()) + limits.stall_timeout;
            if now >= deadline {
                return Verdict::Stalled;
            }
            deadline
        } else {
            now + limits.stall_timeout
        };
        Verdict::Wait(deadline.min(now + limits.idle_timeout.min(limits.stall_timeout)))
    }
}

/// A request in flight on a connection, from its headers to the end (or
/// the drop) of its response.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn new(activity: Arc<Activity>) -> InFlight {
        activity.state().in_flight += 1;
        InFlight(activity)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut state = self.0.state();
        state.in_flight = state.in_flight.saturating_sub(1);
        if state.in_flight == 0 {
            state.idle_since = Instant::now();
        }
    }
}

/// Which way a [`Watched`] body flows.
enum Side {
    /// From the client: it waits on the client while a read is pending.
    Request,
    /// To the client: it waits on the client from a frame handed out until
    /// the next one is asked for.
    Response,
}

/// A request or response body that tells its connection's [`Activity`]
/// while it waits on the client.
struct Watched<B> {
    inner: B,
    side: Side,
    waiting: bool,
    activity: Arc<Activity>,
    /// For a response: its request, finished when the body is dropped.
    _in_flight: Option<InFlight>,
}

impl<B> Watched<B> {
    fn wait(&mut self, waiting: bool) {
        if self.waiting != waiting {
            self.waiting = waiting;
            self.activity.set_waiting(waiting);
        }
    }
}

impl<B> Drop for Watched<B> {
    fn drop(&mut self) {
        self.wait(false);
    }
}

impl<B: HttpBody + Unpin> HttpBody for Watched<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        match this.side {
            Side::Request => {
                let polled = Pin::new(&mut this.inner).poll_frame(cx);
                this.wait(polled.is_pending());
                polled
            }
            Side::Response => {
                this.wait(false);
                let polled = Pin::new(&mut this.inner).poll_frame(cx);
                this.wait(matches!(polled, Poll::Ready(Some(Ok(_)))));
                polled
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A socket that records in its connection's [`Activity`] when bytes move.
struct Metered<I> {
    io: I,
    activity: Arc<Activity>,
}

impl<I: AsyncRead + Unpin> AsyncRead for Metered<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.io).poll_read(cx, buf))?;
        if buf.filled().len() > before {
            self.activity.moved_bytes();
        }
        Poll::Ready(Ok(()))
    }
}

impl<I: AsyncWrite + Unpin> Metered<I> {
    fn wrote(&self, written: Poll<io::Result<usize>>) -> Poll<io::Result<usize>> {
        if let Poll::Ready(Ok(n)) = written
            && n > 0
        {
            self.activity.moved_bytes();
        }
        written
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Metered<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.io).poll_write(cx, buf);
        self.wrote(written)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.wrote(written)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Counts a connection in `berth_http_connections` while it is open.
struct OpenGauge(prometheus_client::metrics::gauge::Gauge);

impl OpenGauge {
    fn new(listener: &Listener) -> OpenGauge {
        let gauge = listener
            .metrics
            .connections
            .get_or_create(&ListenerLabels {
                listener: listener.name,
            })
            .clone();
        gauge.inc();
        OpenGauge(gauge)
    }
}

impl Drop for OpenGauge {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: ConnectionLimits = ConnectionLimits {
        max_connections: 10,
        idle_timeout: Duration::from_secs(30),
        stall_timeout: Duration::from_secs(60),
    };
    const SECOND: Duration = Duration::from_secs(1);

    fn is_wait(verdict: Verdict) -> bool {
        matches!(verdict, Verdict::Wait(_))
    }

    #[test]
    fn idle_from_the_last_request() {
        let activity = Arc::new(Activity::new());
        let opened = Instant::now();
        assert!(is_wait(activity.verdict(opened + 29 * SECOND, &LIMITS)));
        assert!(matches!(
            activity.verdict(opened + 31 * SECOND, &LIMITS),
            Verdict::Idle
        ));
        let request = InFlight::new(activity.clone());
        assert!(is_wait(activity.verdict(opened + 300 * SECOND, &LIMITS)));
        drop(request);
        let ended = Instant::now();
        assert!(is_wait(activity.verdict(ended + 29 * SECOND, &LIMITS)));
        assert!(matches!(
            activity.verdict(ended + LIMITS.idle_timeout, &LIMITS),
            Verdict::Idle
        ));
    }

    #[test]
    fn stalled_only_while_waiting_on_a_silent_client() {
        let activity = Arc::new(Activity::new());
        let _request = InFlight::new(activity.clone());
        // The server works on the request: never stalled.
        let start = Instant::now();
        assert!(is_wait(activity.verdict(start + 600 * SECOND, &LIMITS)));
        activity.set_waiting(true);
        activity.moved_bytes();
        let moved = Instant::now();
        assert!(is_wait(activity.verdict(moved + 59 * SECOND, &LIMITS)));
        assert!(matches!(
            activity.verdict(moved + 61 * SECOND, &LIMITS),
            Verdict::Stalled
        ));
        activity.set_waiting(false);
        assert!(is_wait(activity.verdict(moved + 600 * SECOND, &LIMITS)));
    }

    #[test]
    fn never_sleeps_past_the_shorter_limit() {
        let activity = Activity::new();
        let now = Instant::now();
        let Verdict::Wait(next) = activity.verdict(now, &LIMITS) else {
            panic!("a fresh connection is not idle yet");
        };
        assert!(next <= now + LIMITS.idle_timeout);
    }
}
