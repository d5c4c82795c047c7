//! The HTTP/1.1 relaying that the queue-proxy and the activator share: reading request heads
//! from a client connection ([`Downstream`]), keep-alive connections pooled per address
//! ([`Pool`]), and one exchange ([`exchange`]): request and body out, response head and body
//! back, all in the calling task. Bodies pass through unchanged.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::h1::{self, ChunkedEnd, Framing, RequestHead};

/// How much is read at a time.
pub const READ_CHUNK: usize = 16 * 1024;

/// One connection to an upstream, with bytes read past the last response.
pub struct Conn {
    /// The socket.
    pub stream: TcpStream,
    /// Bytes read and not yet used.
    pub buf: BytesMut,
    /// Whether it came from the pool (so the upstream may have closed it while idle), until
    /// the upstream answers on it.
    pub reused: bool,
    /// When it went back to the pool.
    idle_since: std::time::Instant,
}

/// How long a connection may sit idle in the pool (hyper's client default).
const IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(90);
/// At most this often, when a connection comes back, the pool drops the connections idle past
/// [`IDLE_TIMEOUT`] and the stacks of addresses no longer used (replicas that went away).
const SWEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// Idle keep-alive connections, a stack per address: a request takes the most recently used
/// one (or connects), and gives it back when the exchange ended cleanly with both sides
/// keeping it.
pub struct Pool {
    max_idle: usize,
    idle: Mutex<Idle>,
}

struct Idle {
    by_addr: HashMap<SocketAddr, Vec<Conn>>,
    swept: std::time::Instant,
}

impl Pool {
    /// A pool keeping at most `max_idle` idle connections per address.
    pub fn new(max_idle: usize) -> Self {
        Self {
            max_idle,
            idle: Mutex::new(Idle {
                by_addr: HashMap::new(),
                swept: std::time::Instant::now(),
            }),
        }
    }

    /// The most recently used idle connection to `addr` that the upstream has not closed, or
    /// a new one.
    pub async fn take(&self, addr: SocketAddr) -> std::io::Result<Conn> {
        loop {
            let popped = self
                .idle
                .lock()
                .expect("pool lock")
                .by_addr
                .get_mut(&addr)
                .and_then(Vec::pop);
            let Some(conn) = popped else {
                break;
            };
            // An idle connection has nothing to read; EOF or data means it is unusable.
            let mut probe = [0u8; 1];
            match conn.stream.try_read(&mut probe) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    return Ok(Conn {
                        reused: true,
                        ..conn
                    });
                }
                _ => continue,
            }
        }
        Self::connect(addr).await
    }

    /// A new connection to `addr`.
    pub async fn connect(addr: SocketAddr) -> std::io::Result<Conn> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            buf: BytesMut::with_capacity(8 * 1024),
            reused: false,
            idle_since: std::time::Instant::now(),
        })
    }

    /// Returns a connection to `addr` whose last exchange ended cleanly.
    pub fn put_back(&self, addr: SocketAddr, mut conn: Conn) {
        if !conn.buf.is_empty() {
            return;
        }
        let now = std::time::Instant::now();
        conn.idle_since = now;
        let mut idle = self.idle.lock().expect("pool lock");
        if now.duration_since(idle.swept) >= SWEEP_EVERY {
            idle.swept = now;
            idle.by_addr.retain(|_, stack| {
                stack.retain(|c| now.duration_since(c.idle_since) < IDLE_TIMEOUT);
                !stack.is_empty()
            });
        }
        let stack = idle.by_addr.entry(addr).or_default();
        if stack.len() < self.max_idle {
            stack.push(conn);
        }
    }
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

/// Which side of a body copy failed.
enum Side {
    /// Reading, or the bytes read were not a valid body.
    From,
    /// Writing.
    To,
}

/// Writes `head` to `to`, then the body delimited by `framing` from `from` (bytes already read
/// in `from_buf` first, in the same write as the head). Bytes past the body stay in
/// `from_buf`. Each read waits at most `idle`, when set.
async fn copy_body(
    framing: Framing,
    from: &mut TcpStream,
    from_buf: &mut BytesMut,
    to: &mut TcpStream,
    head: &mut Vec<u8>,
    idle: Option<std::time::Duration>,
) -> Result<(), Side> {
    // How many bytes at the start of `from_buf` belong to the body, and whether it is over.
    let mut left = match framing {
        Framing::Length(n) => n,
        _ => 0,
    };
    let mut chunks = ChunkedEnd::default();
    let mut take = |buf: &[u8]| -> Result<(usize, bool), Side> {
        Ok(match framing {
            Framing::Empty => (0, true),
            Framing::Length(_) => {
                let n = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                left -= n as u64;
                (n, left == 0)
            }
            Framing::Chunked => {
                let n = chunks.scan(buf).map_err(|_| Side::From)?;
                (n, chunks.is_done())
            }
            Framing::UntilClose => (buf.len(), false),
        })
    };
    let (n, mut done) = take(from_buf)?;
    head.extend_from_slice(&from_buf[..n]);
    from_buf.advance(n);
    to.write_all(head).await.map_err(|_| Side::To)?;
    while !done {
        from_buf.reserve(READ_CHUNK);
        let read = match idle {
            None => from.read_buf(from_buf).await,
            Some(idle) => tokio::time::timeout(idle, from.read_buf(from_buf))
                .await
                .unwrap_or(Err(std::io::ErrorKind::TimedOut.into())),
        };
        match read {
            Ok(0) if framing == Framing::UntilClose => return Ok(()),
            Ok(0) | Err(_) => return Err(Side::From),
            Ok(_) => {}
        }
        let (n, over) = take(from_buf)?;
        to.write_all(&from_buf[..n]).await.map_err(|_| Side::To)?;
        from_buf.advance(n);
        done = over;
    }
    Ok(())
}

/// Why a request could not be sent.
pub enum SendError {
    /// The client went away or sent a malformed body.
    Client,
    /// The user process's connection failed.
    Upstream,
}

/// Writes the head and streams the request body; a body already read goes in the same write
/// as the head (which `head` then holds too).
pub async fn send_request(
    up: &mut Conn,
    client: &mut TcpStream,
    buf: &mut BytesMut,
    head: &mut Vec<u8>,
    req: &RequestHead,
) -> Result<(), SendError> {
    copy_body(req.framing, client, buf, &mut up.stream, head, None)
        .await
        .map_err(|side| match side {
            Side::From => SendError::Client,
            Side::To => SendError::Upstream,
        })
}

/// Why no response head came.
pub enum ReadError {
    /// The response did not start in time.
    Timeout,
    /// The user process closed or sent something that is not HTTP.
    Upstream,
}

/// Reads a response head (for `req`) into `out`, waiting at most until `deadline`.
pub async fn read_response_head(
    up: &mut Conn,
    req: &RequestHead,
    out: &mut Vec<u8>,
    deadline: Instant,
) -> Result<h1::ResponseHead, ReadError> {
    loop {
        if !up.buf.is_empty() {
            match h1::parse_response(&up.buf, req.is_head, out) {
                Ok(Some(resp)) => {
                    up.buf.advance(resp.len);
                    return Ok(resp);
                }
                Ok(None) => {}
                Err(_) => return Err(ReadError::Upstream),
            }
        }
        up.buf.reserve(READ_CHUNK);
        match tokio::time::timeout_at(deadline, up.stream.read_buf(&mut up.buf)).await {
            Err(_) => return Err(ReadError::Timeout),
            Ok(Ok(n)) if n > 0 => up.reused = false,
            Ok(_) => return Err(ReadError::Upstream),
        }
    }
}

/// Writes the response head and streams the body; a body already read goes in the same write
/// as the head. Each read waits at most `idle` (when set).
pub async fn send_body(
    framing: Framing,
    up: &mut Conn,
    client: &mut TcpStream,
    head: &mut Vec<u8>,
    idle: Option<std::time::Duration>,
) -> Result<(), ()> {
    copy_body(framing, &mut up.stream, &mut up.buf, client, head, idle)
        .await
        .map_err(|_| ())
}

/// A client connection being served: its socket, the bytes read from it, and the buffers
/// reused for heads across its requests.
pub struct Downstream {
    /// The socket.
    pub stream: TcpStream,
    /// Bytes read and not yet used; starts with the current request's head until
    /// [`Downstream::consume_head`].
    pub buf: BytesMut,
    /// The current request's head as the next hop gets it.
    pub head: Vec<u8>,
    resp_head: Vec<u8>,
    /// Length of the current request's head while it is still at the start of `buf`.
    unconsumed: usize,
    closing: tokio::sync::watch::Receiver<bool>,
}

impl Downstream {
    /// Serves `stream` until `closing` turns true while it is idle.
    pub fn new(stream: TcpStream, closing: tokio::sync::watch::Receiver<bool>) -> Self {
        Self {
            stream,
            buf: BytesMut::with_capacity(8 * 1024),
            head: Vec::with_capacity(1024),
            resp_head: Vec::with_capacity(1024),
            unconsumed: 0,
            closing,
        }
    }

    /// The next request's head, parsed at the start of `buf` (and, with `edit`, rewritten
    /// into `head`). `None` when the connection is done: closed, shutting down while idle, or
    /// a malformed head (answered 400 or 431).
    pub async fn next_request(&mut self, edit: Option<&h1::Edit<'_>>) -> Option<RequestHead> {
        loop {
            if !self.buf.is_empty() {
                match h1::parse_request(&self.buf, edit, &mut self.head) {
                    Ok(Some(req)) => {
                        self.unconsumed = req.len;
                        return Some(req);
                    }
                    Ok(None) => {}
                    Err(error) => {
                        let status = match error {
                            h1::HeadError::TooLarge => 431,
                            h1::HeadError::Malformed(_) => 400,
                        };
                        text_response(&mut self.resp_head, status, &error.to_string(), true);
                        let _ = self.stream.write_all(&self.resp_head).await;
                        return None;
                    }
                }
            }
            self.buf.reserve(READ_CHUNK);
            let read = if self.buf.is_empty() {
                tokio::select! {
                    r = self.stream.read_buf(&mut self.buf) => r,
                    _ = self.closing.wait_for(|down| *down) => return None,
                }
            } else {
                self.stream.read_buf(&mut self.buf).await
            };
            if !matches!(read, Ok(n) if n > 0) {
                return None;
            }
        }
    }

    /// Rewrites the current request's head (still at the start of `buf`) into `head`.
    pub fn rewrite_head(&mut self, edit: &h1::Edit<'_>) {
        if self.unconsumed > 0 {
            let _ = h1::parse_request(&self.buf, Some(edit), &mut self.head);
        }
    }

    /// Drops the current request's head from `buf`, leaving its body (once).
    pub fn consume_head(&mut self) {
        self.buf.advance(std::mem::take(&mut self.unconsumed));
    }

    /// Answers the current request with `status` and `body` when nothing of a response has
    /// been written; whether the connection can carry another request (not when the request
    /// had a body, which may be unread).
    pub async fn answer(&mut self, req: &RequestHead, status: u16, body: &str) -> bool {
        self.consume_head();
        let keep = req.keep_alive && req.framing == Framing::Empty && !self.is_closing();
        text_response(&mut self.resp_head, status, body, !keep);
        self.stream.write_all(&self.resp_head).await.is_ok() && keep
    }

    /// Whether the proxy is shutting down.
    pub fn is_closing(&self) -> bool {
        *self.closing.borrow()
    }
}

/// Why a relayed exchange stopped early.
pub enum Failure {
    /// No response head came in time; nothing has been written to the client.
    Timeout,
    /// The upstream closed or answered something that is not HTTP before a response head;
    /// nothing has been written to the client.
    Upstream,
    /// The client connection cannot be used any more.
    Close,
}

/// When a relayed exchange gives up.
#[derive(Clone, Copy, Debug)]
pub struct Deadlines {
    /// The response head must have come by then.
    pub head: Instant,
    /// The whole exchange must be over by then; a body still streaming is cut.
    pub end: Instant,
    /// The longest silence while a response body streams.
    pub idle: Option<std::time::Duration>,
}

/// Relays the current request of `down` (head in `down.head`, already consumed from
/// `down.buf`) over `up`, a connection to `addr`, and streams the response back: 100-continue
/// answered first, informational responses forwarded, upgrades handed over to a two-way copy.
/// A bodiless request whose pooled connection turns out closed goes again on a new one. On a
/// clean end the connection goes back to `pool`. `Ok(keep)` says whether the client connection
/// can carry another request.
pub async fn exchange(
    pool: &Pool,
    addr: SocketAddr,
    mut up: Conn,
    down: &mut Downstream,
    req: &RequestHead,
    deadlines: Deadlines,
) -> Result<bool, Failure> {
    let client = &mut down.stream;
    let resp_head = &mut down.resp_head;
    if req.expect_continue {
        client
            .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
            .await
            .map_err(|_| Failure::Close)?;
    }
    let mut resp = loop {
        let sent = tokio::time::timeout_at(
            deadlines.end,
            send_request(&mut up, client, &mut down.buf, &mut down.head, req),
        )
        .await
        .unwrap_or(Err(SendError::Client));
        let outcome = match sent {
            Ok(()) => read_response_head(&mut up, req, resp_head, deadlines.head).await,
            Err(SendError::Client) => return Err(Failure::Close),
            Err(SendError::Upstream) => Err(ReadError::Upstream),
        };
        match outcome {
            Ok(resp) => break resp,
            Err(ReadError::Timeout) => return Err(Failure::Timeout),
            Err(ReadError::Upstream) if up.reused && req.framing == Framing::Empty => {
                up = Pool::connect(addr).await.map_err(|_| Failure::Upstream)?;
            }
            Err(ReadError::Upstream) => return Err(Failure::Upstream),
        }
    };

    // Informational answers go to the client as they come; 101 hands both sockets over.
    loop {
        if resp.status == 101 && req.upgrade {
            resp_head.extend_from_slice(b"\r\n");
            client
                .write_all(resp_head)
                .await
                .map_err(|_| Failure::Close)?;
            let pending = up.buf.split();
            client
                .write_all(&pending)
                .await
                .map_err(|_| Failure::Close)?;
            if !down.buf.is_empty() {
                let early = down.buf.split();
                up.stream
                    .write_all(&early)
                    .await
                    .map_err(|_| Failure::Close)?;
            }
            let _ = tokio::io::copy_bidirectional(client, &mut up.stream).await;
            return Ok(false);
        }
        if !(100..200).contains(&resp.status) {
            break;
        }
        resp_head.extend_from_slice(b"\r\n");
        client
            .write_all(resp_head)
            .await
            .map_err(|_| Failure::Close)?;
        resp = read_response_head(&mut up, req, resp_head, deadlines.head)
            .await
            .map_err(|_| Failure::Close)?;
    }

    let keep_client = req.keep_alive && resp.framing != Framing::UntilClose;
    if !keep_client {
        resp_head.extend_from_slice(b"connection: close\r\n");
    } else if req.http10 {
        resp_head.extend_from_slice(b"connection: keep-alive\r\n");
    }
    resp_head.extend_from_slice(b"\r\n");
    let done = tokio::time::timeout_at(
        deadlines.end,
        send_body(resp.framing, &mut up, client, resp_head, deadlines.idle),
    )
    .await;
    match done {
        Ok(Ok(())) => {
            if resp.keep_alive && resp.framing != Framing::UntilClose {
                pool.put_back(addr, up);
            }
            Ok(keep_client)
        }
        // Cut mid-body (the deadline or the idle timeout passed, or either side failed): the
        // status line has gone out, so the only signal left is closing the connection.
        _ => Err(Failure::Close),
    }
}
