//! The relay's two directions run without sockets: the same functions the proxies' tasks
//! call (`parse_request`, `parse_response`, `BodyReader`, `ResponseHead::finish_head`), in the
//! same order, over input that arrives in reads of varying sizes. What they write is what a
//! proxy would put on the wire.

use sluice_relay::body::BodyReader;
use sluice_relay::{Edit, Framing, Limits, RequestHead, parse_request, parse_response};

/// One message as the relay framed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Framed {
    /// The head it wrote.
    pub head: Vec<u8>,
    /// The status it relayed, for a response.
    pub status: u16,
    /// The payload it counted as the body (transfer coding removed).
    pub body: Vec<u8>,
}

/// How the relay's run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// The input ran out between messages (or inside a head, which was not forwarded).
    Clean,
    /// A message was cut after part of it went on; the connection it went on is closed.
    Partial,
    /// A message was refused (with this status, for this reason) before any of it went on.
    Refused(u16, &'static str),
    /// The connection closed after the last message (`Connection: close`, an upgrade, or a
    /// body delimited by the close).
    Closed,
}

/// What one run wrote and framed.
#[derive(Debug, Default)]
pub struct Run {
    /// The bytes written toward the next hop.
    pub out: Vec<u8>,
    /// The messages, in order.
    pub framed: Vec<Framed>,
}

/// Input arriving in reads whose sizes come from `seed` (0: all at once).
pub struct Reads<'a> {
    input: &'a [u8],
    at: usize,
    state: u32,
}

impl<'a> Reads<'a> {
    /// `input` in reads sized by `seed`.
    pub fn new(input: &'a [u8], seed: u8) -> Self {
        Self {
            input,
            at: 0,
            state: u32::from(seed),
        }
    }

    /// Appends the next read to `buf`; false when the input is over.
    fn more(&mut self, buf: &mut Vec<u8>) -> bool {
        let left = self.input.len() - self.at;
        if left == 0 {
            return false;
        }
        let n = if self.state == 0 {
            left
        } else {
            // xorshift32: reads of 1 to 64 bytes.
            self.state ^= self.state << 13;
            self.state ^= self.state >> 17;
            self.state ^= self.state << 5;
            (self.state % 64 + 1) as usize
        };
        let n = n.min(left);
        buf.extend_from_slice(&self.input[self.at..self.at + n]);
        self.at += n;
        true
    }
}

/// The client side of a proxy (its `Downstream` and the request half of `exchange`): heads
/// parsed and rewritten with `edit`, a small body read ahead, then the body relayed, for as
/// long as the client keeps the connection.
pub fn requests(mut reads: Reads<'_>, edit: &Edit<'_>) -> (Run, End) {
    let limits = Limits::default();
    let mut run = Run::default();
    let mut buf = Vec::new();
    let mut head = Vec::new();
    loop {
        let req = loop {
            if !buf.is_empty() {
                match parse_request(&buf, limits.max_head, Some(edit), &mut head) {
                    Ok(Some(req)) => break req,
                    Ok(None) => {}
                    Err(refusal) => return (run, End::Refused(refusal.status(), refusal.reason())),
                }
            }
            if !reads.more(&mut buf) {
                return (run, End::Clean);
            }
        };
        // Read ahead: the body up to the buffer size is checked before the head goes on.
        let mut ahead = BodyReader::new(req.framing);
        let mut scanned = req.len;
        loop {
            match ahead.take(&buf[scanned..], None) {
                Ok(n) => scanned += n,
                Err(bad) => return (run, End::Refused(400, bad.0)),
            }
            if ahead.is_done() || scanned - req.len >= limits.body_buffer {
                break;
            }
            if !reads.more(&mut buf) {
                return (run, End::Clean);
            }
        }
        buf.drain(..req.len);
        run.out.extend_from_slice(&head);
        let mut reader = BodyReader::new(req.framing);
        let mut body = Vec::new();
        loop {
            match reader.take(&buf, Some(&mut body)) {
                Ok(n) => {
                    run.out.extend_from_slice(&buf[..n]);
                    buf.drain(..n);
                }
                Err(_) => return (run, End::Partial),
            }
            if reader.is_done() {
                break;
            }
            if !reads.more(&mut buf) {
                return (run, End::Partial);
            }
        }
        run.framed.push(Framed {
            head: head.clone(),
            status: 0,
            body,
        });
        if !req.keep_alive || req.upgrade {
            return (run, End::Closed);
        }
    }
}

/// The request a response run answers: `GET` or `HEAD`, HTTP/1.1 or HTTP/1.0 (keep-alive),
/// with or without an upgrade.
pub fn asked_request(head: bool, http10: bool, upgrade: bool) -> RequestHead {
    let raw = format!(
        "{} / HTTP/1.{}\r\nHost: a\r\n{}{}\r\n",
        if head { "HEAD" } else { "GET" },
        if http10 { 0 } else { 1 },
        if http10 {
            "Connection: keep-alive\r\n"
        } else {
            ""
        },
        if upgrade {
            "Connection: upgrade\r\nUpgrade: websocket\r\n"
        } else {
            ""
        },
    );
    parse_request(raw.as_bytes(), 1024, None, &mut Vec::new())
        .ok()
        .flatten()
        .expect("a valid request")
}

/// The upstream side of `exchange`: for each request like `req` in turn on one pooled
/// connection, the response head checked and rewritten, informational answers, then the body
/// relayed (decoded for an HTTP/1.0 client), while both sides keep the connection.
pub fn responses(mut reads: Reads<'_>, req: &RequestHead) -> (Run, End) {
    let limits = Limits::default();
    let mut run = Run::default();
    let mut buf = Vec::new();
    let mut head = Vec::new();
    loop {
        let resp = loop {
            if !buf.is_empty() {
                match parse_response(&buf, limits.max_head, req, &mut head) {
                    Ok(Some(resp)) => {
                        buf.drain(..resp.len);
                        if resp.status == 101 {
                            head.extend_from_slice(b"\r\n");
                            run.out.extend_from_slice(&head);
                            run.framed.push(Framed {
                                head: head.clone(),
                                status: 101,
                                body: Vec::new(),
                            });
                            return (run, End::Closed);
                        }
                        if !(100..200).contains(&resp.status) {
                            break resp;
                        }
                        if resp.is_forwarded_interim(req) {
                            head.extend_from_slice(b"\r\n");
                            run.out.extend_from_slice(&head);
                            run.framed.push(Framed {
                                head: head.clone(),
                                status: resp.status,
                                body: Vec::new(),
                            });
                        }
                        continue;
                    }
                    Ok(None) => {}
                    Err(bad) => return (run, End::Refused(502, bad.0)),
                }
            }
            if !reads.more(&mut buf) {
                // No final response: the proxy answers 502 itself.
                return (run, End::Refused(502, "no final response"));
            }
        };
        let keep_client = resp.finish_head(req, &mut head);
        let decode = resp.client_framing(req) != resp.framing;
        run.out.extend_from_slice(&head);
        let mut reader = BodyReader::new(resp.framing);
        let mut body = Vec::new();
        let mut scratch = Vec::new();
        loop {
            scratch.clear();
            match reader.take(&buf, Some(&mut scratch)) {
                Ok(n) => {
                    if decode {
                        run.out.extend_from_slice(&scratch);
                    } else {
                        run.out.extend_from_slice(&buf[..n]);
                    }
                    body.extend_from_slice(&scratch);
                    buf.drain(..n);
                }
                Err(_) => return (run, End::Partial),
            }
            if reader.is_done() {
                break;
            }
            if !reads.more(&mut buf) {
                if resp.framing == Framing::UntilClose {
                    run.framed.push(Framed {
                        head: head.clone(),
                        status: resp.status,
                        body,
                    });
                    return (run, End::Closed);
                }
                return (run, End::Partial);
            }
        }
        run.framed.push(Framed {
            head: head.clone(),
            status: resp.status,
            body,
        });
        if !keep_client {
            return (run, End::Closed);
        }
        // The connection goes back to the pool only with nothing left over; the next request
        // would go on another connection, which this run does not model.
        if !resp.reusable() || !buf.is_empty() {
            return (run, End::Clean);
        }
    }
}
