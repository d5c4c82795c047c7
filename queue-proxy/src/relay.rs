//! The pieces of HTTP/1.1 relaying that the queue-proxy and the activator share: keep-alive
//! connections pooled per address, writing a request with its body, reading a response head,
//! and streaming a response body, all in the calling task. Bodies pass through unchanged.

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
}

/// Idle keep-alive connections, a stack per address: a request takes the most recently used
/// one (or connects), and gives it back when the exchange ended cleanly with both sides
/// keeping it.
pub struct Pool {
    max_idle: usize,
    idle: Mutex<HashMap<SocketAddr, Vec<Conn>>>,
}

impl Pool {
    /// A pool keeping at most `max_idle` idle connections per address.
    pub fn new(max_idle: usize) -> Self {
        Self {
            max_idle,
            idle: Mutex::new(HashMap::new()),
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
        })
    }

    /// Returns a connection to `addr` whose last exchange ended cleanly.
    pub fn put_back(&self, addr: SocketAddr, conn: Conn) {
        if !conn.buf.is_empty() {
            return;
        }
        let mut idle = self.idle.lock().expect("pool lock");
        let stack = idle.entry(addr).or_default();
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

/// Why a request could not be sent.
pub enum SendError {
    /// The client went away or sent a malformed body.
    Client,
    /// The user process's connection failed.
    Upstream,
}

/// Writes the head and streams the request body; small bodies already read go in the same
/// write as the head.
pub async fn send_request(
    up: &mut Conn,
    client: &mut TcpStream,
    buf: &mut BytesMut,
    head: &[u8],
    req: &RequestHead,
) -> Result<(), SendError> {
    match req.framing {
        Framing::Empty | Framing::UntilClose => up
            .stream
            .write_all(head)
            .await
            .map_err(|_| SendError::Upstream),
        Framing::Length(n) => {
            let mut left = n;
            let first = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
            let mut joined = Vec::with_capacity(head.len() + first);
            joined.extend_from_slice(head);
            joined.extend_from_slice(&buf[..first]);
            buf.advance(first);
            left -= first as u64;
            up.stream
                .write_all(&joined)
                .await
                .map_err(|_| SendError::Upstream)?;
            while left > 0 {
                buf.reserve(READ_CHUNK);
                let read = client.read_buf(buf).await.map_err(|_| SendError::Client)?;
                if read == 0 {
                    return Err(SendError::Client);
                }
                let take = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                up.stream
                    .write_all(&buf[..take])
                    .await
                    .map_err(|_| SendError::Upstream)?;
                buf.advance(take);
                left -= take as u64;
            }
            Ok(())
        }
        Framing::Chunked => {
            up.stream
                .write_all(head)
                .await
                .map_err(|_| SendError::Upstream)?;
            let mut end = ChunkedEnd::default();
            loop {
                let take = end.scan(buf).map_err(|_| SendError::Client)?;
                up.stream
                    .write_all(&buf[..take])
                    .await
                    .map_err(|_| SendError::Upstream)?;
                buf.advance(take);
                if end.is_done() {
                    return Ok(());
                }
                buf.reserve(READ_CHUNK);
                if client.read_buf(buf).await.map_err(|_| SendError::Client)? == 0 {
                    return Err(SendError::Client);
                }
            }
        }
    }
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
) -> std::io::Result<()> {
    let closed = || std::io::Error::from(std::io::ErrorKind::UnexpectedEof);
    let read_more = async |up: &mut Conn| -> std::io::Result<usize> {
        up.buf.reserve(READ_CHUNK);
        match idle {
            None => up.stream.read_buf(&mut up.buf).await,
            Some(idle) => tokio::time::timeout(idle, up.stream.read_buf(&mut up.buf))
                .await
                .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?,
        }
    };
    match framing {
        Framing::Empty => client.write_all(head).await,
        Framing::Length(n) => {
            let mut left = n;
            let first = usize::try_from(left)
                .unwrap_or(usize::MAX)
                .min(up.buf.len());
            head.extend_from_slice(&up.buf[..first]);
            up.buf.advance(first);
            left -= first as u64;
            client.write_all(head).await?;
            while left > 0 {
                if read_more(up).await? == 0 {
                    return Err(closed());
                }
                let take = usize::try_from(left)
                    .unwrap_or(usize::MAX)
                    .min(up.buf.len());
                client.write_all(&up.buf[..take]).await?;
                up.buf.advance(take);
                left -= take as u64;
            }
            Ok(())
        }
        Framing::Chunked => {
            let mut end = ChunkedEnd::default();
            let first = end
                .scan(&up.buf)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
            head.extend_from_slice(&up.buf[..first]);
            up.buf.advance(first);
            client.write_all(head).await?;
            while !end.is_done() {
                if read_more(up).await? == 0 {
                    return Err(closed());
                }
                let take = end
                    .scan(&up.buf)
                    .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
                client.write_all(&up.buf[..take]).await?;
                up.buf.advance(take);
            }
            Ok(())
        }
        Framing::UntilClose => {
            head.extend_from_slice(&up.buf);
            up.buf.clear();
            client.write_all(head).await?;
            loop {
                if read_more(up).await? == 0 {
                    return Ok(());
                }
                client.write_all(&up.buf).await?;
                up.buf.clear();
            }
        }
    }
}
