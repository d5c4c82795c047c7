//! A client connection being served: reading request heads within the head timeout, waiting
//! on an idle keep-alive connection within the keep-alive timeout (with its buffers given
//! back after a second, so an idle connection costs little), reading a small body ahead of
//! the replica slot, and the relay's own answers.

use std::time::Duration;

use bytes::{Buf, BufMut, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::body::BodyReader;
use crate::request::{Edit, Refusal, RequestHead, parse_request};
use crate::{Limits, READ_CHUNK};

/// How long an idle keep-alive connection keeps its buffers before giving them back.
const LINGER: Duration = Duration::from_secs(1);
/// First allocation for reading a head; most heads fit.
const HEAD_CHUNK: usize = 4096;
/// After answering and closing, the client's unread request is still read (and dropped) for
/// at most this long, and while it does not pause longer than [`LINGER_IDLE`], so that the
/// close does not reset the connection before the client has read the answer (nginx's
/// `lingering_time` and `lingering_timeout`).
const LINGER_TIME: Duration = Duration::from_secs(30);
const LINGER_IDLE: Duration = Duration::from_secs(5);

/// A client connection: its socket, the bytes read from it, and the buffers reused for heads
/// across its requests.
pub struct Downstream {
    /// The socket.
    pub stream: TcpStream,
    /// Bytes read and not yet used; starts with the current request's head until
    /// [`Downstream::consume_head`].
    pub buf: BytesMut,
    /// The current request's head as the next hop gets it.
    pub head: Vec<u8>,
    pub(crate) resp_head: Vec<u8>,
    /// Length of the current request's head while it is still at the start of `buf`.
    unconsumed: usize,
    closing: watch::Receiver<bool>,
    limits: Limits,
    accepted: Instant,
    served: u64,
    /// Whether `100 Continue` went out for the current request.
    continued: bool,
    /// How much of the current request's body has been read from the client.
    pub(crate) body: BodyState,
}

/// How much of the current request's body has been read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BodyState {
    /// None of it has been taken from `buf` (some may be there).
    Unread,
    /// Part of it went to the upstream; the rest is unread.
    Partial,
    /// All of it has been read (or there is none).
    Read,
}

/// What an idle connection's wait ended with.
enum Woke {
    Data,
    Linger,
    Done,
}

impl Downstream {
    /// Serves `stream` within `limits` until `closing` turns true while it is idle.
    pub fn new(stream: TcpStream, closing: watch::Receiver<bool>, limits: Limits) -> Self {
        Self {
            stream,
            buf: BytesMut::new(),
            head: Vec::new(),
            resp_head: Vec::new(),
            unconsumed: 0,
            closing,
            limits,
            accepted: Instant::now(),
            served: 0,
            continued: false,
            body: BodyState::Read,
        }
    }

    /// The limits this connection is served within.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Tells HTTP/2 with prior knowledge from HTTP/1.1 by the connection's first bytes,
    /// read within the head timeout (and kept in `buf` for the head). HTTP/1.1 is told from
    /// the first byte that differs from HTTP/2's preface, so it costs no extra read. `None`
    /// when the client sent nothing in time, closed, or the proxy is shutting down.
    pub async fn sniff(&mut self) -> Option<crate::h2::Protocol> {
        use crate::h2::{PREFACE, Protocol};
        let deadline = self.accepted + self.limits.head_timeout;
        loop {
            let n = self.buf.len().min(PREFACE.len());
            if self.buf[..n] != PREFACE[..n] {
                return Some(Protocol::Http1);
            }
            if n == PREFACE.len() {
                return Some(Protocol::Http2);
            }
            if !self.wait(deadline).await {
                return None;
            }
        }
    }

    /// The connection for another server (hyper's, for HTTP/2), with the bytes read so far
    /// in front.
    pub fn into_io(self) -> crate::h2::Rewind {
        crate::h2::Rewind::new(self.buf, self.stream)
    }

    /// The next request's head, parsed at the start of `buf` (and, with `edit`, rewritten
    /// into `head`). `None` when the connection is done: closed, idle past the keep-alive
    /// timeout, shutting down while idle, or refused (answered with the refusal's status).
    pub async fn next_request(&mut self, edit: Option<&Edit<'_>>) -> Option<RequestHead> {
        self.continued = false;
        // The first request's head is timed from the connection's start, later ones from the
        // read that brought their first bytes without the rest.
        let mut since = (self.served == 0).then_some(self.accepted);
        loop {
            if self.buf.is_empty() {
                let woke = match since {
                    Some(since) => self.wait(since + self.limits.head_timeout).await,
                    None => self.wait_idle().await,
                };
                if !woke {
                    return None;
                }
            }
            match parse_request(&self.buf, self.limits.max_head, edit, &mut self.head) {
                Ok(Some(req)) => {
                    self.unconsumed = req.len;
                    self.served += 1;
                    self.body = if req.framing.is_empty() {
                        BodyState::Read
                    } else {
                        BodyState::Unread
                    };
                    return Some(req);
                }
                Ok(None) => {}
                Err(refusal) => {
                    self.refuse(&refusal).await;
                    return None;
                }
            }
            // An incomplete head: from now on it is timed (a whole head in one read, the usual
            // case, never reads the clock).
            let started = *since.get_or_insert_with(Instant::now);
            let room = self.limits.max_head.saturating_sub(self.buf.len()).max(1);
            let read = tokio::time::timeout_at(
                started + self.limits.head_timeout,
                read_at_most(&mut self.stream, &mut self.buf, room.min(HEAD_CHUNK)),
            )
            .await;
            match read {
                Err(_) => {
                    self.refuse(&Refusal::Timeout).await;
                    return None;
                }
                Ok(Ok(n)) if n > 0 => {}
                Ok(_) => return None,
            }
        }
    }

    /// Waits for the first bytes of a request until `deadline`; false when none came, the
    /// client closed, or the proxy is shutting down.
    async fn wait(&mut self, deadline: Instant) -> bool {
        let closing = &mut self.closing;
        tokio::select! {
            read = tokio::time::timeout_at(deadline, read_at_most(&mut self.stream, &mut self.buf, HEAD_CHUNK)) => {
                matches!(read, Ok(Ok(n)) if n > 0)
            }
            _ = closing.wait_for(|down| *down) => false,
        }
    }

    /// Waits on an idle keep-alive connection for the next request's first bytes, at most
    /// the keep-alive timeout; after [`LINGER`] its buffers are given back.
    async fn wait_idle(&mut self) -> bool {
        let now = Instant::now();
        let idle_until = now + self.limits.keepalive_timeout;
        let mut wake = (now + LINGER).min(idle_until);
        let mut released = false;
        loop {
            let woke = {
                let closing = &mut self.closing;
                tokio::select! {
                    biased;
                    ready = self.stream.readable() => if ready.is_ok() { Woke::Data } else { Woke::Done },
                    () = tokio::time::sleep_until(wake) => Woke::Linger,
                    _ = closing.wait_for(|down| *down) => Woke::Done,
                }
            };
            match woke {
                Woke::Done => return false,
                Woke::Linger if released || wake >= idle_until => return false,
                Woke::Linger => {
                    // Idle for a while: an idle connection holds no buffers.
                    self.buf = BytesMut::new();
                    self.head = Vec::new();
                    self.resp_head = Vec::new();
                    released = true;
                    wake = idle_until;
                }
                Woke::Data => {
                    self.buf.reserve(HEAD_CHUNK);
                    match self.stream.try_read_buf(&mut self.buf) {
                        Ok(0) => return false,
                        Ok(_) => return true,
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                        Err(_) => return false,
                    }
                }
            }
        }
    }

    /// Rewrites the current request's head (still at the start of `buf`) into `head`.
    pub fn rewrite_head(&mut self, edit: &Edit<'_>) {
        if self.unconsumed > 0 {
            let _ = parse_request(&self.buf, self.limits.max_head, Some(edit), &mut self.head);
        }
    }

    /// Drops the current request's head from `buf`, leaving its body (once).
    pub fn consume_head(&mut self) {
        self.buf.advance(std::mem::take(&mut self.unconsumed));
    }

    /// Sends `100 Continue` if the request asked for it and it has not gone out; false when
    /// the client connection failed.
    pub(crate) async fn send_continue(&mut self, req: &RequestHead) -> bool {
        if !req.expect_continue || self.continued {
            return true;
        }
        self.continued = true;
        self.stream
            .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
            .await
            .is_ok()
    }

    /// Reads the current request's body ahead of the exchange, until it is whole or
    /// `body_buffer` bytes of it are here, so that a body this small never holds a replica
    /// slot while the client sends it. False when the connection is done: the body stalled
    /// past the body timeout (answered 408), was malformed (400), or the client went away.
    pub async fn read_body_ahead(&mut self, req: &RequestHead) -> bool {
        if req.framing.is_empty() || self.limits.body_buffer == 0 {
            return true;
        }
        if !self.send_continue(req).await {
            return false;
        }
        let start = self.unconsumed;
        let mut reader = BodyReader::new(req.framing);
        let mut scanned = start;
        loop {
            match reader.take(&self.buf[scanned..], None) {
                Ok(n) => scanned += n,
                Err(bad) => {
                    self.refuse(&Refusal::BadRequest(bad.0)).await;
                    return false;
                }
            }
            let ahead = scanned - start;
            if reader.is_done() || ahead >= self.limits.body_buffer {
                return true;
            }
            let read = tokio::time::timeout(
                self.limits.body_timeout,
                read_at_most(
                    &mut self.stream,
                    &mut self.buf,
                    (self.limits.body_buffer - ahead).min(READ_CHUNK),
                ),
            )
            .await;
            match read {
                Err(_) => {
                    self.refuse(&Refusal::Timeout).await;
                    return false;
                }
                Ok(Ok(n)) if n > 0 => {}
                Ok(_) => return false,
            }
        }
    }

    /// Answers the current request with `status` and `body` when nothing of a response has
    /// been written; whether the connection can carry another request (only when the
    /// request's body, if any, has been read whole).
    pub async fn answer(&mut self, req: &RequestHead, status: u16, body: &str) -> bool {
        self.answer_marked(req, status, body, false).await
    }

    /// As [`answer`](Self::answer), marked [`UNREACHED`](crate::response::UNREACHED): the
    /// request reached no user process, and the activator may try another replica.
    pub async fn answer_unreached(&mut self, req: &RequestHead, status: u16, body: &str) -> bool {
        self.answer_marked(req, status, body, true).await
    }

    async fn answer_marked(
        &mut self,
        req: &RequestHead,
        status: u16,
        body: &str,
        unreached: bool,
    ) -> bool {
        self.consume_head();
        let body_read = self.skip_body(req);
        let keep = req.keep_alive && body_read && !self.is_closing();
        text_response(&mut self.resp_head, status, body, !keep);
        if unreached {
            // Before the empty line that ends the head.
            let at = self.resp_head.len() - body.len() - 2;
            let field = format!("{}: 1\r\n", crate::response::UNREACHED);
            self.resp_head.splice(at..at, field.bytes());
        }
        let written = self.stream.write_all(&self.resp_head).await.is_ok();
        if written && !keep {
            self.drain_and_close().await;
        }
        written && keep
    }

    /// Answers a refused request (status and reason) and closes the connection.
    pub async fn refuse(&mut self, refusal: &Refusal) {
        text_response(
            &mut self.resp_head,
            refusal.status(),
            &format!("{refusal}\n"),
            true,
        );
        if self.stream.write_all(&self.resp_head).await.is_ok() {
            self.drain_and_close().await;
        }
    }

    /// Drops the current request's body from `buf` if all of it is there; whether the body is
    /// now read.
    fn skip_body(&mut self, req: &RequestHead) -> bool {
        match self.body {
            BodyState::Read => return true,
            BodyState::Partial => return false,
            BodyState::Unread => {}
        }
        let mut reader = BodyReader::new(req.framing);
        match reader.take(&self.buf, None) {
            Ok(n) if reader.is_done() => {
                self.buf.advance(n);
                self.body = BodyState::Read;
                true
            }
            _ => false,
        }
    }

    /// Ends the connection without resetting it: the write side is shut, and what the client
    /// still sends is read and dropped for a short while, so that the answer just written is
    /// not lost to a reset (a close with unread data sends one).
    async fn drain_and_close(&mut self) {
        let _ = self.stream.shutdown().await;
        // On the heap: a buffer on the stack here would sit in every connection's task.
        let mut sink = vec![0u8; 4096];
        let _ = tokio::time::timeout(LINGER_TIME, async {
            while let Ok(Ok(n)) =
                tokio::time::timeout(LINGER_IDLE, self.stream.read(&mut sink)).await
            {
                if n == 0 {
                    break;
                }
            }
        })
        .await;
    }

    /// Whether the proxy is shutting down.
    pub fn is_closing(&self) -> bool {
        *self.closing.borrow()
    }
}

/// Reads at most `max` bytes into `buf`.
pub(crate) async fn read_at_most(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    max: usize,
) -> std::io::Result<usize> {
    buf.reserve(max);
    stream.read_buf(&mut (&mut *buf).limit(max)).await
}

/// A complete plain-text response.
pub fn text_response(out: &mut Vec<u8>, status: u16, body: &str, close: bool) {
    let reason = http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    out.clear();
    out.extend_from_slice(
        format!(
            "HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\n{}\r\n{body}",
            body.len(),
            if close { "connection: close\r\n" } else { "" }
        )
        .as_bytes(),
    );
}
