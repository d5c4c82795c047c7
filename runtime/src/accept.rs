//! Accepting connections on a listener, the way every Sluice server does:
//!
//! - at most `max_connections` open at once: past that, new connections wait in the kernel's
//!   backlog until one closes (nothing is read from them, so they cost no memory here);
//! - an accept error that is about the process, not the connection (out of descriptors, out
//!   of memory) is retried after a backoff from 1 ms doubling to 100 ms, not at once, so a
//!   process at its descriptor limit neither spins nor floods its log, and serves again
//!   within 100 ms of descriptors coming back;
//! - those errors are logged at most once a second, each line with the count since the last.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// A listening socket.
pub trait Listener: Send + 'static {
    /// An accepted connection.
    type Io: Send + 'static;
    /// The peer's address.
    type Addr: Send + 'static;
    /// The next connection, as the socket's own `accept`.
    fn accept(&self) -> impl Future<Output = io::Result<(Self::Io, Self::Addr)>> + Send;
}

impl Listener for TcpListener {
    type Io = TcpStream;
    type Addr = std::net::SocketAddr;
    fn accept(&self) -> impl Future<Output = io::Result<(TcpStream, Self::Addr)>> + Send {
        TcpListener::accept(self)
    }
}

impl Listener for UnixListener {
    type Io = UnixStream;
    type Addr = tokio::net::unix::SocketAddr;
    fn accept(&self) -> impl Future<Output = io::Result<(UnixStream, Self::Addr)>> + Send {
        UnixListener::accept(self)
    }
}

/// The first wait after a failed accept.
const BACKOFF_MIN: Duration = Duration::from_millis(1);
/// The longest wait between failed accepts: how late a listener can be in serving again once
/// descriptors free up.
const BACKOFF_MAX: Duration = Duration::from_millis(100);
/// At most one log line per this long about failed accepts.
const LOG_EVERY: Duration = Duration::from_secs(1);

/// A listener with a bound on open connections and backoff on errors.
pub struct Acceptor<L> {
    listener: L,
    open: Arc<Semaphore>,
    max: usize,
    backoff: Duration,
    log: ErrorLog,
    what: &'static str,
}

/// An accepted connection's place among the listener's open connections; dropping it (when
/// the connection is done) lets the next one in.
pub type Place = OwnedSemaphorePermit;

impl<L: Listener> Acceptor<L> {
    /// Accepts on `listener` (named `what` in logs), holding at most `max_connections` open.
    pub fn new(listener: L, max_connections: usize, what: &'static str) -> Self {
        let max = max_connections.clamp(1, Semaphore::MAX_PERMITS);
        Self {
            listener,
            open: Arc::new(Semaphore::new(max)),
            max,
            backoff: BACKOFF_MIN,
            log: ErrorLog::default(),
            what,
        }
    }

    /// The next connection, once one of the `max_connections` places is free. Cancel-safe.
    pub async fn accept(&mut self) -> (L::Io, L::Addr, Place) {
        let place = Arc::clone(&self.open)
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        loop {
            match self.listener.accept().await {
                Ok((io, addr)) => {
                    self.backoff = BACKOFF_MIN;
                    if let Some(failed) = self.log.recovered(Instant::now()) {
                        tracing::warn!(
                            listener = self.what,
                            failed,
                            "Accepting connections again."
                        );
                    }
                    return (io, addr, place);
                }
                // The connection went away before it was accepted: nothing to wait for.
                Err(e) if is_per_connection(&e) => {}
                Err(error) => {
                    if let Some(failed) = self.log.failed(Instant::now()) {
                        tracing::warn!(
                            listener = self.what,
                            %error,
                            failed,
                            open = self.open_connections(),
                            "Accept failed; backing off."
                        );
                    }
                    tokio::time::sleep(self.backoff).await;
                    self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }

    /// How many accepted connections are still open.
    pub fn open_connections(&self) -> usize {
        self.max - self.open.available_permits()
    }

    /// The listener.
    pub fn listener(&self) -> &L {
        &self.listener
    }
}

fn is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    )
}

/// When failed accepts are worth a log line: the first at once, then at most one a second,
/// each counting the failures since the line before.
#[derive(Debug, Default)]
struct ErrorLog {
    last_line: Option<Instant>,
    unreported: u64,
    /// Failed since the last recovery line, whether or not every failure was reported.
    failing: bool,
}

impl ErrorLog {
    /// A failure at `now`; `Some(count)` when a line is due, counting failures since the last.
    fn failed(&mut self, now: Instant) -> Option<u64> {
        self.unreported += 1;
        self.failing = true;
        self.line_due(now)
    }

    /// A success at `now`; after failures, `Some(count)` of those not yet reported (perhaps
    /// none) once a line is due. A listener flapping at its limit thus logs one line a second,
    /// and the first success due after the last failure always says it recovered.
    fn recovered(&mut self, now: Instant) -> Option<u64> {
        if !self.failing {
            return None;
        }
        let line = self.line_due(now);
        self.failing = line.is_none();
        line
    }

    fn line_due(&mut self, now: Instant) -> Option<u64> {
        if self
            .last_line
            .is_some_and(|t| now.saturating_duration_since(t) < LOG_EVERY)
        {
            return None;
        }
        self.last_line = Some(now);
        Some(std::mem::take(&mut self.unreported))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_logged_at_most_once_a_second_with_their_count() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut log = ErrorLog::default();
        assert_eq!(log.failed(at(0)), Some(1));
        // A thousand failures in the next second: no line.
        for ms in 1..=999 {
            assert_eq!(log.failed(at(ms)), None);
        }
        assert_eq!(log.failed(at(1000)), Some(1000));
        assert_eq!(log.failed(at(1500)), None);
        // Recovery reports the one left, but only once a line is due.
        assert_eq!(log.recovered(at(1600)), None);
        assert_eq!(log.recovered(at(2000)), Some(1));
        assert_eq!(log.recovered(at(5000)), None, "nothing left to report");
        assert_eq!(log.failed(at(9000)), Some(1));
        // Every failure reported already: recovery still gets its line, saying none are left.
        assert_eq!(log.recovered(at(9500)), None);
        assert_eq!(log.recovered(at(10_000)), Some(0));
        assert_eq!(log.recovered(at(11_000)), None);
    }

    #[tokio::test(start_paused = true)]
    async fn connections_past_the_bound_wait_until_one_closes() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut acceptor = Acceptor::new(listener, 2, "test");
        let _c1 = TcpStream::connect(addr).await.unwrap();
        let _c2 = TcpStream::connect(addr).await.unwrap();
        let _c3 = TcpStream::connect(addr).await.unwrap();
        let (_, _, first) = acceptor.accept().await;
        let (_, _, _second) = acceptor.accept().await;
        assert_eq!(acceptor.open_connections(), 2);
        // The third waits in the backlog...
        let third = tokio::time::timeout(Duration::from_secs(60), acceptor.accept()).await;
        assert!(
            third.is_err(),
            "a third connection was accepted past the bound"
        );
        // ...and is accepted once a place frees.
        drop(first);
        let (_, _, _third) = acceptor.accept().await;
        assert_eq!(acceptor.open_connections(), 2);
    }
}
