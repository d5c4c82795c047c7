//! HTTP/2 on the request path, by hyper (and so the `h2` crate): no HTTP/2 byte is parsed
//! here. A client connection that opens with HTTP/2's preface (prior-knowledge h2c) is
//! served by [`serve`], each stream a request handed to the proxy's service; the proxy
//! sends it on through [`upstream`]'s connections. The queue-proxy of an `h2c` revision also
//! serves HTTP/1.1 with hyper here, so that every request reaches its user process over
//! HTTP/2 (as Knative's does).
//!
//! The same rules hold as for HTTP/1.1: [`headers::edit`] removes hop-by-hop fields and
//! every field only Sluice sets and refuses an ambiguous authority; headers are bounded by
//! [`Limits::max_head`], streams per connection by the caller, and a connection with no open
//! stream is closed after [`Limits::keepalive_timeout`] (hyper's pings find a peer that went
//! away meanwhile). Shutting down sends GOAWAY and lets open streams finish.

pub mod body;
pub mod headers;
mod io;
pub mod upstream;

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::sync::watch;
use tokio::time::Instant;

pub use self::body::{Body, Guarded, answer, answer_unreached, is_grpc};
pub use self::headers::{Hop, edit, take_unreached};
pub use self::io::Rewind;
pub use self::upstream::{H1Conns, H2Conns, SendError, refused_stream, splice};
use crate::Limits;

/// The client connection preface of HTTP/2 (RFC 9113 §3.4).
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Which protocol a connection speaks, told from its first bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP/1.x.
    Http1,
    /// HTTP/2 with prior knowledge.
    Http2,
}

/// How long an idle HTTP/2 connection is pinged at, and how long a ping's answer may take.
const PING: Duration = Duration::from_secs(20);

/// How many streams a client may reset before hyper closes its connection (the "rapid
/// reset" attack), and how many errors of its own streams it may cause.
const MAX_RESETS: usize = 20;

/// Open streams on one connection, and when the last one ended.
struct Activity {
    open: AtomicUsize,
    since: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            open: AtomicUsize::new(0),
            since: Instant::now(),
            last_ms: AtomicU64::new(0),
        })
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.since.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// When the connection, if it stays idle, has been idle for `limit`; `None` while a
    /// stream is open.
    fn idle_deadline(&self, limit: Duration) -> Option<Instant> {
        if self.open.load(Ordering::Acquire) > 0 {
            return None;
        }
        Some(self.since + Duration::from_millis(self.last_ms.load(Ordering::Acquire)) + limit)
    }
}

/// One open stream of a connection.
struct Open(Arc<Activity>);

impl Open {
    fn new(activity: &Arc<Activity>) -> Self {
        activity.open.fetch_add(1, Ordering::AcqRel);
        Self(activity.clone())
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.last_ms.store(self.0.now_ms(), Ordering::Release);
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Serves a client connection with hyper: HTTP/2 (at most `max_streams` streams at once) or
/// HTTP/1.1, each request answered by `service`. Returns when the connection ends: closed,
/// failed, idle past the keep-alive timeout, or finished after `closing` turned true.
pub async fn serve<S, F>(
    io: Rewind,
    protocol: Protocol,
    limits: Limits,
    max_streams: u32,
    closing: watch::Receiver<bool>,
    service: S,
) where
    S: Fn(Request<Incoming>) -> F + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let activity = Activity::new();
    let service = Arc::new(service);
    let svc = {
        let activity = activity.clone();
        hyper::service::service_fn(move |req| {
            let open = Open::new(&activity);
            let answered = service(req);
            async move {
                let resp = answered.await;
                Ok::<_, Infallible>(resp.map(|b| body::boxed(Guarded::new(b, open))))
            }
        })
    };
    let io = TokioIo::new(io);
    let max_head = u32::try_from(limits.max_head).unwrap_or(u32::MAX);
    match protocol {
        Protocol::Http2 => {
            let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .max_concurrent_streams(max_streams)
                .max_header_list_size(max_head)
                .max_pending_accept_reset_streams(MAX_RESETS)
                .max_local_error_reset_streams(MAX_RESETS)
                .keep_alive_interval(PING)
                .keep_alive_timeout(PING)
                .serve_connection(io, svc);
            drive(conn, &activity, limits, closing).await;
        }
        Protocol::Http1 => {
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.head_timeout)
                // hyper's smallest buffer is 8 KiB.
                .max_buf_size(limits.max_head.max(8192))
                .serve_connection(io, svc)
                // A service may answer `101` and take the connection (a WebSocket).
                .with_upgrades();
            drive(conn, &activity, limits, closing).await;
        }
    }
}

/// A connection hyper serves, which can be told to finish what it has and stop.
trait Graceful: Future {
    fn graceful_shutdown(self: std::pin::Pin<&mut Self>);
}

impl<I, S, E, B> Graceful for hyper::server::conn::http2::Connection<I, S, E>
where
    Self: Future,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + 'static,
    S: hyper::service::HttpService<Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: http_body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    E: hyper::rt::bounds::Http2ServerConnExec<S::Future, B>,
{
    fn graceful_shutdown(self: std::pin::Pin<&mut Self>) {
        hyper::server::conn::http2::Connection::graceful_shutdown(self);
    }
}

impl<I, S, B> Graceful for hyper::server::conn::http1::UpgradeableConnection<I, S>
where
    Self: Future,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::HttpService<Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: http_body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn graceful_shutdown(self: std::pin::Pin<&mut Self>) {
        hyper::server::conn::http1::UpgradeableConnection::graceful_shutdown(self);
    }
}

/// Runs `conn` to its end, shutting it down gracefully when idle too long or when `closing`.
async fn drive<C>(conn: C, activity: &Activity, limits: Limits, mut closing: watch::Receiver<bool>)
where
    C: Graceful,
{
    tokio::pin!(conn);
    let mut shutting = false;
    loop {
        // Checked again at least this often while streams are open.
        let wake = activity
            .idle_deadline(limits.keepalive_timeout)
            .unwrap_or_else(|| Instant::now() + limits.keepalive_timeout);
        tokio::select! {
            _ = conn.as_mut() => return,
            _ = closing.wait_for(|c| *c), if !shutting => {
                conn.as_mut().graceful_shutdown();
                shutting = true;
            }
            () = tokio::time::sleep_until(wake), if !shutting => {
                if activity
                    .idle_deadline(limits.keepalive_timeout)
                    .is_some_and(|at| at <= Instant::now())
                {
                    conn.as_mut().graceful_shutdown();
                    shutting = true;
                }
            }
        }
    }
}
