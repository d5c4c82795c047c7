//! Response heads from the upstream: held to the same rules as requests (a response that
//! could be framed two ways is a 502, never passed on) and rewritten for the client with the
//! relay's own framing field, for the client's HTTP version.

use crate::Framing;
use crate::fields::{
    Coding, ConnectionOptions, HOP_BY_HOP, content_length, has_bare_lf, is_disguised_framing,
    is_one_of, is_token, list, transfer_coding,
};
use crate::request::{MAX_HEADERS, RequestHead, decimal, field, framing_field};

/// A response head that cannot be relayed (the client gets 502).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid response from upstream: {0}")]
pub struct BadResponse(pub &'static str);

/// What the forwarding path needs to know of a response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResponseHead {
    /// Bytes of the head in the buffer.
    pub len: usize,
    /// The status code.
    pub status: u16,
    /// How its body is delimited on the upstream connection.
    pub framing: Framing,
    /// Whether the upstream keeps the connection after this exchange.
    pub keep_alive: bool,
    /// The answer says the request reached no user process ([`UNREACHED`]).
    pub unreached: bool,
}

/// A response field a queue-proxy adds to its own answer when it could not reach its user
/// process (nothing of the request was sent there), so the activator may send the request
/// to another replica. Never relayed: every hop drops it, so a user process cannot fake it.
pub const UNREACHED: &str = "k-sluice-unreached";

impl ResponseHead {
    /// How the body is delimited toward the client of `req`: an HTTP/1.0 client cannot take
    /// chunked, so it gets the data until the connection closes.
    pub fn client_framing(&self, req: &RequestHead) -> Framing {
        Self::client_framing_of(self.framing, req)
    }
}

/// Parses a response head at the start of `buf` for `req`; `Ok(None)` while it is incomplete
/// and under `max_head` bytes. On success `out` holds the head the client gets, without its
/// final empty line and without `Connection`, so the caller can add its own.
pub fn parse_response(
    buf: &[u8],
    max_head: usize,
    req: &RequestHead,
    out: &mut Vec<u8>,
) -> Result<Option<ResponseHead>, BadResponse> {
    // httparse skips empty lines before a status line; only requests may have them
    // (RFC 9112 §2.2).
    if buf.first().is_some_and(|&b| b == b'\r' || b == b'\n') {
        return Err(BadResponse("an empty line before the status line"));
    }
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(len)) if len <= max_head => len,
        Ok(httparse::Status::Partial) if buf.len() < max_head => return Ok(None),
        Ok(_) | Err(httparse::Error::TooManyHeaders) => {
            return Err(BadResponse("response head too large"));
        }
        Err(_) => return Err(BadResponse("malformed response head")),
    };
    if has_bare_lf(&buf[..len]) {
        return Err(BadResponse(
            "a line of the head ends in a bare LF, not CRLF",
        ));
    }
    let status = resp.code.ok_or(BadResponse("no status"))?;
    if !(100..=599).contains(&status) {
        return Err(BadResponse("status code outside 100-599"));
    }
    let http10 = resp.version == Some(0);
    let (mut length, mut coding) = (None, None);
    let mut options = ConnectionOptions::default();
    let (mut close, mut keep_alive_10) = (false, false);
    let mut unreached = false;
    for h in resp.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case(UNREACHED) {
            unreached = true;
        } else if name.eq_ignore_ascii_case("content-length") {
            if length.is_some() {
                return Err(BadResponse("more than one Content-Length"));
            }
            length =
                Some(content_length(h.value).ok_or(BadResponse("Content-Length is not digits"))?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            if coding.is_some() {
                return Err(BadResponse("more than one Transfer-Encoding"));
            }
            if transfer_coding(h.value) != Coding::Chunked {
                return Err(BadResponse("Transfer-Encoding other than chunked"));
            }
            coding = Some(Coding::Chunked);
        } else if name.eq_ignore_ascii_case("connection") {
            for option in list(h.value) {
                if option.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if option.eq_ignore_ascii_case(b"keep-alive") {
                    keep_alive_10 = true;
                } else if option.eq_ignore_ascii_case(b"upgrade") {
                } else if !is_token(option) || !options.push(option) {
                    return Err(BadResponse("invalid Connection options"));
                }
            }
        } else if is_disguised_framing(name.as_bytes()) {
            return Err(BadResponse("a framing field name with _ for -"));
        }
    }
    let chunked = coding.is_some();
    if chunked && length.is_some() {
        return Err(BadResponse("both Content-Length and Transfer-Encoding"));
    }
    if chunked && http10 {
        return Err(BadResponse("Transfer-Encoding in an HTTP/1.0 response"));
    }
    let informational = (100..200).contains(&status);
    if informational && (chunked || length.is_some()) {
        return Err(BadResponse("a 1xx response with a body"));
    }
    if status == 101 && !req.upgrade {
        return Err(BadResponse("101 to a request that asked for no upgrade"));
    }
    if status == 204 && (chunked || length.is_some_and(|n| n > 0)) {
        return Err(BadResponse("a 204 response with a body"));
    }
    if status == 304 && chunked {
        return Err(BadResponse("a 304 response with Transfer-Encoding"));
    }
    let bodiless = req.is_head || informational || status == 204 || status == 304;
    let framing = match (bodiless, chunked, length) {
        (true, _, _) => Framing::Empty,
        (false, true, _) => Framing::Chunked,
        (false, false, Some(n)) => Framing::Length(n),
        (false, false, None) => Framing::UntilClose,
    };

    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    decimal(out, u64::from(status));
    out.push(b' ');
    out.extend_from_slice(resp.reason.unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    // A bodiless answer to HEAD, or a 304, still describes the body it would have had.
    let described = match (chunked, length) {
        (true, _) if !req.http10 => Framing::Chunked,
        (false, Some(n)) if status != 204 && !informational => Framing::Length(n),
        _ => Framing::Empty,
    };
    framing_field(
        out,
        if bodiless {
            described
        } else {
            ResponseHead::client_framing_of(framing, req)
        },
    );
    for h in resp.headers.iter() {
        let name = h.name;
        let hop = is_one_of(name, &HOP_BY_HOP) || name.eq_ignore_ascii_case(UNREACHED);
        if !hop && !options.lists(name) && (status == 101 || !name.eq_ignore_ascii_case("upgrade"))
        {
            field(out, name.as_bytes(), h.value);
        }
    }
    if status == 101 {
        field(out, b"connection", b"upgrade");
    }
    Ok(Some(ResponseHead {
        len,
        status,
        framing,
        keep_alive: !close && (!http10 || keep_alive_10),
        unreached,
    }))
}

impl ResponseHead {
    /// Whether an informational response goes on to the client of `req`: not 100 (the relay
    /// answers `Expect` itself), and nothing to HTTP/1.0 clients.
    pub fn is_forwarded_interim(&self, req: &RequestHead) -> bool {
        (102..200).contains(&self.status) && !req.http10
    }

    /// Ends `out`, the final response's head from [`parse_response`], with the connection
    /// field and the empty line; whether the client connection stays open after the body.
    pub fn finish_head(&self, req: &RequestHead, out: &mut Vec<u8>) -> bool {
        let keep_client = req.keep_alive && self.client_framing(req) != Framing::UntilClose;
        if !keep_client {
            out.extend_from_slice(b"connection: close\r\n");
        } else if req.http10 {
            out.extend_from_slice(b"connection: keep-alive\r\n");
        }
        out.extend_from_slice(b"\r\n");
        keep_client
    }

    /// Whether the upstream connection can go back to the pool once the body is read.
    pub fn reusable(&self) -> bool {
        self.keep_alive && self.framing != Framing::UntilClose
    }

    fn client_framing_of(framing: Framing, req: &RequestHead) -> Framing {
        match framing {
            Framing::Chunked if req.http10 => Framing::UntilClose,
            framing => framing,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::parse_request;

    const MAX: usize = 32 * 1024;

    fn req(raw: &str) -> RequestHead {
        parse_request(raw.as_bytes(), MAX, None, &mut Vec::new())
            .unwrap()
            .unwrap()
    }

    fn get() -> RequestHead {
        req("GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    }

    fn parse(raw: &str, req: &RequestHead) -> Result<(ResponseHead, String), BadResponse> {
        let mut out = Vec::new();
        let head = parse_response(raw.as_bytes(), MAX, req, &mut out)?.unwrap();
        Ok((head, String::from_utf8(out).unwrap()))
    }

    #[test]
    fn the_unreached_mark_is_read_and_never_relayed() {
        let (r, out) = parse(
            "HTTP/1.1 502 Bad Gateway\r\nK-Sluice-Unreached: 1\r\nContent-Length: 0\r\n\r\n",
            &get(),
        )
        .unwrap();
        assert!(r.unreached);
        assert!(!out.to_ascii_lowercase().contains("unreached"), "{out}");
        let (r, _) = parse(
            "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n",
            &get(),
        )
        .unwrap();
        assert!(!r.unreached);
    }

    #[test]
    fn framing_and_the_head_the_client_gets() {
        let (r, out) = parse(
            "HTTP/1.1 200 OK\r\nContent-Length: 03\r\nConnection: close\r\n\r\nabc",
            &get(),
        )
        .unwrap();
        assert_eq!(
            (r.status, r.framing, r.keep_alive),
            (200, Framing::Length(3), false)
        );
        assert_eq!(out, "HTTP/1.1 200 OK\r\ncontent-length: 3\r\n");
        let head = req("HEAD / HTTP/1.1\r\nHost: a\r\n\r\n");
        let (r, out) = parse("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", &head).unwrap();
        assert_eq!(r.framing, Framing::Empty);
        assert!(
            out.contains("content-length: 3\r\n"),
            "HEAD keeps the length: {out}"
        );
        let (r, _) = parse(
            "HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n",
            &get(),
        )
        .unwrap();
        assert_eq!(r.framing, Framing::Empty);
        let (r, out) = parse(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            &get(),
        )
        .unwrap();
        assert_eq!(r.framing, Framing::Chunked);
        assert!(out.contains("transfer-encoding: chunked\r\n"), "{out}");
        let (r, _) = parse("HTTP/1.0 200 OK\r\n\r\n", &get()).unwrap();
        assert_eq!((r.framing, r.keep_alive), (Framing::UntilClose, false));
        let (r, _) = parse("HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n", &get()).unwrap();
        assert_eq!((r.status, r.framing), (103, Framing::Empty));
    }

    #[test]
    fn an_http10_client_gets_no_chunked_body() {
        let old = req("GET / HTTP/1.0\r\n\r\n");
        let (r, out) = parse(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            &old,
        )
        .unwrap();
        assert_eq!(r.framing, Framing::Chunked);
        assert_eq!(r.client_framing(&old), Framing::UntilClose);
        assert!(
            !out.to_ascii_lowercase().contains("transfer-encoding"),
            "{out}"
        );
    }

    #[test]
    fn responses_that_could_be_read_two_ways_are_refused() {
        let upgrade =
            req("GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n");
        for raw in [
            "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: +3\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            "HTTP/1.1 200 OK\nContent-Length: 3\r\n\r\n",
            "HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n",
            "HTTP/1.1 099 Odd\r\n\r\n",
            "HTTP/1.1 600 Odd\r\n\r\n",
            "HTTP/1.1 100 Continue\r\nContent-Length: 3\r\n\r\n",
            "HTTP/1.1 204 No Content\r\nContent-Length: 3\r\n\r\n",
            "HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\n\r\n",
            "HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n",
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
            "\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        ] {
            assert!(parse(raw, &get()).is_err(), "{raw:?}");
        }
        let (r, out) = parse(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
            &upgrade,
        )
        .unwrap();
        assert_eq!(r.status, 101);
        assert!(
            out.contains("Upgrade: websocket\r\nconnection: upgrade\r\n"),
            "{out}"
        );
    }
}
