//! The request body as the request context sees it: how much of it arrived,
//! and, when the answer is an error given before the client finished
//! sending, reading (and discarding) the rest so that the client gets to
//! read that answer.
//!
//! A server that answers early and closes the connection while the client
//! is still sending makes the kernel reset the connection when it closes a
//! socket with unread bytes; a client that writes its whole body before it
//! reads then sees "broken pipe" or "connection reset" instead of, say, the
//! 413 for an oversized manifest. Reading what is left, up to
//! [`DRAIN_LIMIT`] bytes within [`DRAIN_TIME`], lets the answer through and
//! keeps the connection usable. A larger rest, or a client too slow to send
//! it, gets the answer with `Connection: close` as before.

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use http::HeaderMap;
use http_body_util::BodyExt;
use hyper::body::{Body as HttpBody, Frame, SizeHint};

/// Most bytes read and discarded after an early error.
pub const DRAIN_LIMIT: u64 = 8 * 1024 * 1024;

/// Longest time spent reading them.
pub const DRAIN_TIME: Duration = Duration::from_secs(10);

/// The request body, shared between the handler (which reads it through a
/// [`Body`] from [`RequestBody::new`]) and the request context.
#[derive(Clone)]
pub(super) struct RequestBody(Arc<Mutex<Shared>>);

struct Shared {
    /// The body; taken back by the request context once the handler is done.
    body: Option<Body>,
    /// Data bytes received so far.
    received: u64,
    /// Whether anyone asked for the body (for `Expect: 100-continue`, that
    /// is what tells the client to send it).
    polled: bool,
    /// Whether the client waits to be asked (`Expect: 100-continue`).
    awaits_continue: bool,
}

impl RequestBody {
    /// Shares `body`, sent with `headers`; the returned [`Body`] is the one
    /// the handler reads.
    pub(super) fn new(body: Body, headers: &HeaderMap) -> (Body, RequestBody) {
        let awaits_continue = headers
            .get(http::header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
        let shared = RequestBody(Arc::new(Mutex::new(Shared {
            body: Some(body),
            received: 0,
            polled: false,
            awaits_continue,
        })));
        (Body::new(shared.clone()), shared)
    }

    fn shared(&self) -> MutexGuard<'_, Shared> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Data bytes received so far.
    pub(super) fn received(&self) -> u64 {
        self.shared().received
    }

    /// After an error answer: reads what the client still sends, within the
    /// drain limits. Whether the body is now read to its end; if not, the
    /// connection must close after the answer.
    pub(super) async fn drain_after_error(&self) -> bool {
        let (body, unasked) = {
            let mut shared = self.shared();
            (shared.body.take(), shared.awaits_continue && !shared.polled)
        };
        let Some(mut body) = body else {
            return false;
        };
        if body.is_end_stream() {
            return true;
        }
        if unasked {
            // The client has sent nothing yet and sends nothing unless asked.
            return false;
        }
        let drained = tokio::time::timeout(DRAIN_TIME, async {
            let mut left = DRAIN_LIMIT;
            while let Some(frame) = body.frame().await {
                let Ok(frame) = frame else {
                    return false;
                };
                let len = frame.data_ref().map_or(0, |d| d.len() as u64);
                self.shared().received += len;
                match left.checked_sub(len) {
                    Some(rest) => left = rest,
                    None => return false,
                }
            }
            true
        });
        drained.await.unwrap_or(false)
    }
}

impl HttpBody for RequestBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let mut shared = self.shared();
        shared.polled = true;
        let Some(body) = shared.body.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = Pin::new(body).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            let len = frame.data_ref().map_or(0, |d| d.len() as u64);
            shared.received += len;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.shared().body.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.shared()
            .body
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}
