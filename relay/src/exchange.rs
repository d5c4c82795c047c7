//! One relayed exchange, all in the calling task: the request head and body out (the body
//! checked byte by byte as it goes, each read within the body timeout), the response head
//! back (checked before a byte of it reaches the client), informational answers and
//! upgrades, then the response body, decoded for an HTTP/1.0 client.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::body::BodyReader;
use crate::downstream::{BodyState, Downstream, read_at_most};
use crate::pool::{Conn, Pool};
use crate::request::{Refusal, RequestHead};
use crate::response::{ResponseHead, parse_response};
use crate::{Framing, READ_CHUNK};

/// When a relayed exchange gives up.
#[derive(Clone, Copy, Debug)]
pub struct Deadlines {
    /// The response head must have come by then.
    pub head: Instant,
    /// The whole exchange must be over by then; a body still streaming is cut.
    pub end: Instant,
    /// The longest silence while a response body streams.
    pub idle: Option<Duration>,
    /// An upgraded connection (a WebSocket) is closed then.
    pub tunnel: Instant,
}

impl Deadlines {
    /// Knative's revision timeouts: the response must start by `head`; once it has, it
    /// streams to its end, bounded only by `idle` between bytes (Knative's queue-proxy and
    /// activator cut a response only before its first byte). An upgraded connection lives
    /// until `tunnel`, the request's start plus `timeoutSeconds`: Knative's timeout handler
    /// ends the request then, and its proxy closes a hijacked connection with the request.
    pub fn response_start(head: Instant, tunnel: Instant, idle: Option<Duration>) -> Self {
        /// Far enough never to come, near enough not to overflow an `Instant`.
        const NEVER: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
        Self {
            head,
            end: head + NEVER,
            idle,
            tunnel,
        }
    }
}

/// Why a relayed exchange stopped early.
#[derive(Debug)]
pub enum Failure {
    /// No response head came in time; nothing has been written to the client.
    Timeout,
    /// The upstream closed, or answered something that cannot be relayed, before a response
    /// head; nothing has been written to the client.
    Upstream,
    /// The client's body stalled past the body timeout or was malformed; nothing has been
    /// written to the client, which gets the refusal's status.
    Refused(Refusal),
    /// The client connection cannot be used any more.
    Close,
    /// The queue-proxy answered that the request reached no user process
    /// ([`UNREACHED`](crate::response::UNREACHED)); nothing has been written to the client,
    /// and the request (bodiless) can go to another replica.
    Unreached,
}

/// How reading a body failed.
enum ReadFailure {
    /// Nothing arrived within the idle time.
    Timeout,
    /// The sender closed early or the connection failed.
    Closed,
    /// The bytes are not a valid body.
    Malformed(&'static str),
}

/// Which side of a body copy failed.
enum Side {
    From(ReadFailure),
    To,
}

/// Writes `head` to `to`, then the body delimited by `framing` from `from` (bytes already read
/// in `from_buf` first, in the same write as the head). With `decode`, only the payload goes
/// on (the chunk framing removed). Bytes past the body stay in `from_buf`. Each read waits at
/// most `idle`, when set. Only bytes checked as part of the body are written.
async fn copy_body(
    framing: Framing,
    decode: bool,
    from: &mut TcpStream,
    from_buf: &mut BytesMut,
    to: &mut TcpStream,
    head: &mut Vec<u8>,
    idle: Option<Duration>,
) -> Result<(), Side> {
    let mut reader = BodyReader::new(framing);
    let malformed = |e: crate::chunked::BadChunk| Side::From(ReadFailure::Malformed(e.0));
    let n = if decode {
        reader.take(from_buf, Some(head)).map_err(malformed)?
    } else {
        let n = reader.take(from_buf, None).map_err(malformed)?;
        head.extend_from_slice(&from_buf[..n]);
        n
    };
    from_buf.advance(n);
    to.write_all(head).await.map_err(|_| Side::To)?;
    while !reader.is_done() {
        let read = read_at_most(from, from_buf, READ_CHUNK);
        let read = match idle {
            None => read.await,
            Some(idle) => match tokio::time::timeout(idle, read).await {
                Ok(read) => read,
                Err(_) => return Err(Side::From(ReadFailure::Timeout)),
            },
        };
        match read {
            Ok(0) if framing == Framing::UntilClose => return Ok(()),
            Ok(0) | Err(_) => return Err(Side::From(ReadFailure::Closed)),
            Ok(_) => {}
        }
        if decode {
            head.clear();
            let n = reader.take(from_buf, Some(head)).map_err(malformed)?;
            from_buf.advance(n);
            to.write_all(head).await.map_err(|_| Side::To)?;
        } else {
            let n = reader.take(from_buf, None).map_err(malformed)?;
            to.write_all(&from_buf[..n]).await.map_err(|_| Side::To)?;
            from_buf.advance(n);
        }
    }
    Ok(())
}

/// Why no response head came.
enum ReadError {
    /// The response did not start in time.
    Timeout,
    /// The upstream closed or sent something that cannot be relayed.
    Upstream,
}

/// Reads a response head (for `req`) into `out`, waiting at most until `deadline`.
async fn read_response_head(
    up: &mut Conn,
    req: &RequestHead,
    max_head: usize,
    out: &mut Vec<u8>,
    deadline: Instant,
) -> Result<ResponseHead, ReadError> {
    loop {
        if !up.buf.is_empty() {
            match parse_response(&up.buf, max_head, req, out) {
                Ok(Some(resp)) => {
                    up.buf.advance(resp.len);
                    return Ok(resp);
                }
                Ok(None) => {}
                Err(_) => return Err(ReadError::Upstream),
            }
        }
        let read = read_at_most(&mut up.stream, &mut up.buf, READ_CHUNK);
        match tokio::time::timeout_at(deadline, read).await {
            Err(_) => return Err(ReadError::Timeout),
            Ok(Ok(n)) if n > 0 => up.reused = false,
            Ok(_) => return Err(ReadError::Upstream),
        }
    }
}

/// Relays the current request of `down` (head in `down.head`, already consumed from
/// `down.buf`) over `up`, a connection to `addr`, and streams the response back: 100-continue
/// answered by the relay, other informational responses forwarded to HTTP/1.1 clients,
/// upgrades handed over to a two-way copy. A bodiless request whose pooled connection turns
/// out closed goes again on a new one. With `retry_unreached`, a bodiless request that the
/// upstream (a queue-proxy) answers as having reached no user process ends in
/// [`Failure::Unreached`] instead of that answer. On a clean end the connection goes back to
/// `pool`. `Ok(keep)` says whether the client connection can carry another request.
pub async fn exchange(
    pool: &Pool,
    addr: SocketAddr,
    mut up: Conn,
    down: &mut Downstream,
    req: &RequestHead,
    deadlines: Deadlines,
    retry_unreached: bool,
) -> Result<bool, Failure> {
    if !down.send_continue(req).await {
        return Err(Failure::Close);
    }
    let limits = *down.limits();
    let mut resp = loop {
        if down.body != BodyState::Read {
            down.body = BodyState::Partial;
        }
        let sent = tokio::time::timeout_at(
            deadlines.end,
            copy_body(
                req.framing,
                false,
                &mut down.stream,
                &mut down.buf,
                &mut up.stream,
                &mut down.head,
                Some(limits.body_timeout),
            ),
        )
        .await
        .unwrap_or(Err(Side::From(ReadFailure::Closed)));
        let outcome = match sent {
            Ok(()) => {
                down.body = BodyState::Read;
                read_response_head(
                    &mut up,
                    req,
                    limits.max_head,
                    &mut down.resp_head,
                    deadlines.head,
                )
                .await
            }
            Err(Side::From(ReadFailure::Timeout)) => {
                return Err(Failure::Refused(Refusal::Timeout));
            }
            Err(Side::From(ReadFailure::Malformed(why))) => {
                return Err(Failure::Refused(Refusal::BadRequest(why)));
            }
            Err(Side::From(ReadFailure::Closed)) => return Err(Failure::Close),
            Err(Side::To) => Err(ReadError::Upstream),
        };
        match outcome {
            Ok(resp) => break resp,
            Err(ReadError::Timeout) => return Err(Failure::Timeout),
            Err(ReadError::Upstream) if up.reused && req.framing.is_empty() => {
                up = Pool::connect(addr).await.map_err(|_| Failure::Upstream)?;
            }
            Err(ReadError::Upstream) => return Err(Failure::Upstream),
        }
    };
    if resp.unreached && retry_unreached && req.framing.is_empty() {
        // Its connection goes, with the unread rest of that answer.
        return Err(Failure::Unreached);
    }

    let client = &mut down.stream;
    let resp_head = &mut down.resp_head;
    // Informational answers go to HTTP/1.1 clients as they come (the relay has answered
    // `100-continue` itself); 101 hands both sockets over.
    loop {
        if resp.status == 101 {
            // Only to a request that asked for an upgrade (parse_response refuses others).
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
            tunnel(client, &mut up.stream, deadlines.tunnel).await;
            return Ok(false);
        }
        if !(100..200).contains(&resp.status) {
            break;
        }
        if resp.is_forwarded_interim(req) {
            resp_head.extend_from_slice(b"\r\n");
            client
                .write_all(resp_head)
                .await
                .map_err(|_| Failure::Close)?;
        }
        resp = read_response_head(&mut up, req, limits.max_head, resp_head, deadlines.head)
            .await
            .map_err(|why| match why {
                ReadError::Timeout => Failure::Timeout,
                ReadError::Upstream => Failure::Upstream,
            })?;
    }

    let keep_client = resp.finish_head(req, resp_head);
    let decode = resp.client_framing(req) != resp.framing;
    let done = tokio::time::timeout_at(
        deadlines.end,
        copy_body(
            resp.framing,
            decode,
            &mut up.stream,
            &mut up.buf,
            client,
            resp_head,
            deadlines.idle,
        ),
    )
    .await;
    match done {
        Ok(Ok(())) => {
            if resp.reusable() {
                pool.put_back(addr, up);
            }
            Ok(keep_client)
        }
        // Cut mid-body (the deadline or the idle timeout passed, or either side failed): the
        // status line has gone out, so the only signal left is closing the connection.
        _ => Err(Failure::Close),
    }
}

/// The two-way copy of an upgraded connection (a WebSocket). It ends as Go's reverse proxy
/// (Knative's queue-proxy and activator) ends one: when either direction ends (its end
/// passed on as a shutdown of the other socket's writing side), or at `until` with no word to
/// either side. The caller then drops both sockets, and with them the request's slot: a
/// client that keeps its socket open after the app closed does not hold the revision.
async fn tunnel(client: &mut TcpStream, app: &mut TcpStream, until: Instant) {
    let (mut from_client, mut to_client) = client.split();
    let (mut from_app, mut to_app) = app.split();
    let upward = async {
        let _ = tokio::io::copy(&mut from_client, &mut to_app).await;
        let _ = to_app.shutdown().await;
    };
    let downward = async {
        let _ = tokio::io::copy(&mut from_app, &mut to_client).await;
        let _ = to_client.shutdown().await;
    };
    tokio::select! {
        () = upward => {}
        () = downward => {}
        () = tokio::time::sleep_until(until) => {}
    }
}
