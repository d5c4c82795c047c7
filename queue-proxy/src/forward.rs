//! The request path: one task per client connection reads a request head, applies the
//! queue-proxy's rules (probe, in-flight stats, breaker, timeouts, header rewriting), and
//! streams the exchange through a pooled connection to the user process, with no task hops
//! and buffers reused across the requests of a connection. Bodies pass through unchanged; only
//! heads are rewritten.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::State;
use crate::breaker::QueueFull;
use crate::h1::{self, Edit, Framing, RequestHead};
use crate::relay::{self, Pool, READ_CHUNK, ReadError, SendError, text_response};

/// Why an exchange stopped early.
enum Failed {
    /// Nothing has been written to the client yet: answer with this status and text.
    Answer(u16, &'static str),
    /// The client connection cannot be used any more.
    Close,
}

/// Serves one client connection until it closes, fails, or the proxy shuts down while it is
/// idle.
pub(crate) async fn serve(
    state: Arc<State>,
    mut client: TcpStream,
    peer: SocketAddr,
    mut shutdown: watch::Receiver<bool>,
) {
    let peer_ip = peer.ip().to_string();
    let default_host = state.user_addr.to_string();
    let edit = Edit::ToUser {
        peer_ip: &peer_ip,
        default_host: &default_host,
    };
    let mut buf = BytesMut::with_capacity(8 * 1024);
    let mut head = Vec::with_capacity(1024);
    let mut resp_head = Vec::with_capacity(1024);
    loop {
        let req = loop {
            if !buf.is_empty() {
                match h1::parse_request(&buf, Some(&edit), &mut head) {
                    Ok(Some(req)) => break req,
                    Ok(None) => {}
                    Err(error) => {
                        let status = match error {
                            h1::HeadError::TooLarge => 431,
                            h1::HeadError::Malformed(_) => 400,
                        };
                        text_response(&mut resp_head, status, &error.to_string(), true);
                        let _ = client.write_all(&resp_head).await;
                        return;
                    }
                }
            }
            buf.reserve(READ_CHUNK);
            let read = if buf.is_empty() {
                tokio::select! {
                    r = client.read_buf(&mut buf) => r,
                    _ = shutdown.wait_for(|down| *down) => return,
                }
            } else {
                client.read_buf(&mut buf).await
            };
            if !matches!(read, Ok(n) if n > 0) {
                return;
            }
        };
        buf.advance(req.len);
        let keep = match exchange(&state, &mut client, &mut buf, &head, &mut resp_head, &req).await
        {
            Ok(keep) => keep,
            Err(Failed::Answer(status, body)) => {
                // The request body may be unread: keep the connection only if there was none.
                let keep = req.keep_alive && req.framing == Framing::Empty;
                text_response(&mut resp_head, status, body, !keep);
                client.write_all(&resp_head).await.is_ok() && keep
            }
            Err(Failed::Close) => false,
        };
        if !keep || *shutdown.borrow() {
            return;
        }
    }
}

/// One request and its response. `Ok(keep)` says whether the client connection can carry
/// another request.
async fn exchange(
    state: &State,
    client: &mut TcpStream,
    buf: &mut BytesMut,
    head: &[u8],
    resp_head: &mut Vec<u8>,
    req: &RequestHead,
) -> Result<bool, Failed> {
    if let Some(value) = &req.probe {
        let (status, body) = state.probe(value).await;
        text_response(resp_head, status, body, !req.keep_alive);
        client
            .write_all(resp_head)
            .await
            .map_err(|_| Failed::Close)?;
        return Ok(req.keep_alive && req.framing == Framing::Empty);
    }
    state.touch();
    let _in_flight = state.stats.begin();
    let deadline = Instant::now() + state.cfg.timeout;
    let _slot = match &state.breaker {
        None => None,
        Some(breaker) => match tokio::time::timeout_at(deadline, breaker.acquire()).await {
            Ok(Ok(slot)) => Some(slot),
            Ok(Err(QueueFull)) => return Err(Failed::Answer(503, "pending request queue full")),
            Err(_) => {
                return Err(Failed::Answer(
                    503,
                    "request timed out waiting in the queue",
                ));
            }
        },
    };
    let head_deadline = match state.cfg.response_start_timeout {
        Some(rs) => deadline.min(Instant::now() + rs),
        None => deadline,
    };
    if req.expect_continue {
        client
            .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
            .await
            .map_err(|_| Failed::Close)?;
    }

    // The request, on a pooled connection; a bodiless request that finds its pooled
    // connection closed goes again on a new one.
    let mut up =
        state.upstream.take(state.user_addr).await.map_err(|_| {
            Failed::Answer(502, "error reaching the user process: connection refused")
        })?;
    let mut resp = loop {
        let sent = tokio::time::timeout_at(
            deadline,
            relay::send_request(&mut up, client, buf, head, req),
        )
        .await
        .unwrap_or(Err(SendError::Client));
        let outcome = match sent {
            Ok(()) => relay::read_response_head(&mut up, req, resp_head, head_deadline).await,
            Err(SendError::Client) => return Err(Failed::Close),
            Err(SendError::Upstream) => Err(ReadError::Upstream),
        };
        match outcome {
            Ok(resp) => break resp,
            Err(ReadError::Timeout) => return Err(Failed::Answer(504, "request timeout")),
            Err(ReadError::Upstream) if up.reused && req.framing == Framing::Empty => {
                up = Pool::connect(state.user_addr).await.map_err(|_| {
                    Failed::Answer(502, "error reaching the user process: connection refused")
                })?;
            }
            Err(ReadError::Upstream) => {
                return Err(Failed::Answer(
                    502,
                    "error reaching the user process: connection closed",
                ));
            }
        }
    };

    // Informational answers go to the client as they come; 101 hands both sockets over.
    loop {
        if resp.status == 101 && req.upgrade {
            resp_head.extend_from_slice(b"\r\n");
            client
                .write_all(resp_head)
                .await
                .map_err(|_| Failed::Close)?;
            let pending = up.buf.split();
            client
                .write_all(&pending)
                .await
                .map_err(|_| Failed::Close)?;
            if !buf.is_empty() {
                let early = buf.split();
                up.stream
                    .write_all(&early)
                    .await
                    .map_err(|_| Failed::Close)?;
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
            .map_err(|_| Failed::Close)?;
        resp = match relay::read_response_head(&mut up, req, resp_head, head_deadline).await {
            Ok(r) => r,
            Err(_) => return Err(Failed::Close),
        };
    }

    let keep_client = req.keep_alive && resp.framing != Framing::UntilClose;
    if !keep_client {
        resp_head.extend_from_slice(b"connection: close\r\n");
    } else if req.http10 {
        resp_head.extend_from_slice(b"connection: keep-alive\r\n");
    }
    resp_head.extend_from_slice(b"\r\n");
    let done = tokio::time::timeout_at(
        deadline,
        relay::send_body(
            resp.framing,
            &mut up,
            client,
            resp_head,
            state.cfg.idle_timeout,
        ),
    )
    .await;
    match done {
        Ok(Ok(())) => {
            if resp.keep_alive && resp.framing != Framing::UntilClose {
                state.upstream.put_back(state.user_addr, up);
            }
            Ok(keep_client)
        }
        // Cut mid-body (revision or idle timeout, or either side failed): the status line has
        // gone out, so the only signal left is closing the connection.
        _ => Err(Failed::Close),
    }
}
