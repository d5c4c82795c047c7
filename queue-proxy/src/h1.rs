//! HTTP/1.1 message heads and body framing for the forwarding path: parse a head with
//! `httparse`, write the head the other side gets, and find where a body ends so that the
//! bytes after it (a pipelined request, the next response) stay for the next message.

use std::fmt::Write as _;
use std::ops::Range;

/// Longest head accepted (request line or status line plus headers).
pub const MAX_HEAD: usize = 64 * 1024;
const MAX_HEADERS: usize = 100;

/// How a body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    Empty,
    /// `Content-Length` bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`, forwarded as is.
    Chunked,
    /// Everything until the sender closes (responses only).
    UntilClose,
}

/// A head that cannot be forwarded.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    /// Not HTTP/1.x, or a malformed line.
    #[error("malformed HTTP/1.1 head: {0}")]
    Malformed(&'static str),
    /// More than `MAX_HEAD` bytes, or more than 100 headers.
    #[error("request head too large")]
    TooLarge,
}

impl From<httparse::Error> for HeadError {
    fn from(e: httparse::Error) -> Self {
        match e {
            httparse::Error::TooManyHeaders => HeadError::TooLarge,
            _ => HeadError::Malformed("unparsable"),
        }
    }
}

/// What the forwarding path needs to know of a request.
#[derive(Debug, PartialEq, Eq)]
pub struct RequestHead {
    /// Bytes of the head in the buffer.
    pub len: usize,
    /// How its body is delimited.
    pub framing: Framing,
    /// Whether the client keeps the connection after this exchange.
    pub keep_alive: bool,
    /// An HTTP/1.0 request (which keeps the connection only when the answer says so).
    pub http10: bool,
    /// `Expect: 100-continue` (answered by the proxy; not forwarded).
    pub expect_continue: bool,
    /// A `HEAD` request: the response has no body whatever its headers say.
    pub is_head: bool,
    /// A protocol upgrade (`Connection: upgrade` with `Upgrade`).
    pub upgrade: bool,
    /// The `K-Network-Probe` value, if any.
    pub probe: Option<Vec<u8>>,
    /// Where the `Host` value is in the buffer.
    pub host: Option<Range<usize>>,
    /// Where the `Knative-Serving-Tag` value is in the buffer.
    pub tag: Option<Range<usize>>,
}

/// What the forwarding path needs to know of a response.
#[derive(Debug, PartialEq, Eq)]
pub struct ResponseHead {
    /// Bytes of the head in the buffer.
    pub len: usize,
    /// The status code.
    pub status: u16,
    /// How its body is delimited.
    pub framing: Framing,
    /// Whether the upstream keeps the connection after this exchange.
    pub keep_alive: bool,
}

fn has_token(value: &[u8], token: &str) -> bool {
    value
        .split(|b| *b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

fn content_length(value: &[u8], seen: Option<u64>) -> Result<u64, HeadError> {
    let n = std::str::from_utf8(value)
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .ok_or(HeadError::Malformed("content-length"))?;
    match seen {
        Some(prev) if prev != n => Err(HeadError::Malformed("conflicting content-length")),
        _ => Ok(n),
    }
}

/// How a request head is rewritten for the next hop.
pub enum Edit<'a> {
    /// The queue-proxy's, toward the user process: `K-Original-Host` becomes `Host` (a request
    /// without one gets `default_host`), Knative's routing headers go, and `Forwarded` is
    /// derived from the `X-Forwarded-*` headers when absent.
    ToUser {
        /// The client's address, appended to `X-Forwarded-For`.
        peer_ip: &'a str,
        /// `Host` for requests that came without one.
        default_host: &'a str,
    },
    /// The activator's, toward a revision's queue-proxy: `K-Proxy-Request: activator`, the
    /// revision and its namespace, and `X-Forwarded-Proto: http` when absent.
    ToRevision {
        /// The client's address, appended to `X-Forwarded-For`.
        peer_ip: &'a str,
        /// `Knative-Serving-Revision`.
        revision: &'a [u8],
        /// `Knative-Serving-Namespace`.
        namespace: &'a [u8],
    },
}

/// Where `part` (a slice of `buf`) sits in `buf`.
fn range_in(buf: &[u8], part: &[u8]) -> Range<usize> {
    let start = part.as_ptr() as usize - buf.as_ptr() as usize;
    start..start + part.len()
}

/// Parses a request head at the start of `buf`; `Ok(None)` while it is incomplete. With an
/// `edit`, `out` then holds the head for the next hop: origin-form target, hop-by-hop headers
/// removed, the peer appended to `X-Forwarded-For`, and the edit's own changes.
pub fn parse_request(
    buf: &[u8],
    edit: Option<&Edit<'_>>,
    out: &mut Vec<u8>,
) -> Result<Option<RequestHead>, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf)? {
        httparse::Status::Complete(len) => len,
        httparse::Status::Partial if buf.len() > MAX_HEAD => return Err(HeadError::TooLarge),
        httparse::Status::Partial => return Ok(None),
    };
    let method = req.method.ok_or(HeadError::Malformed("method"))?;
    let target = req.path.ok_or(HeadError::Malformed("target"))?;
    let http10 = req.version == Some(0);

    let mut framing_len = None;
    let mut chunked = false;
    let (mut close, mut keep_alive_10, mut conn_upgrade) = (false, false, false);
    let (mut host, mut original_host, mut xff_prev, mut forwarded, mut proto) =
        (None, None, Vec::<&[u8]>::new(), false, None);
    let (mut expect_continue, mut upgrade_header, mut probe, mut tag) = (false, false, None, None);
    for h in req.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("content-length") {
            framing_len = Some(content_length(h.value, framing_len)?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            // Only chunked as the final coding can be delimited (RFC 9112 §6.3).
            chunked = h
                .value
                .rsplit(|b| *b == b',')
                .next()
                .is_some_and(|t| t.trim_ascii().eq_ignore_ascii_case(b"chunked"));
            if !chunked {
                return Err(HeadError::Malformed("transfer-encoding without chunked"));
            }
        } else if name.eq_ignore_ascii_case("connection") {
            close |= has_token(h.value, "close");
            keep_alive_10 |= has_token(h.value, "keep-alive");
            conn_upgrade |= has_token(h.value, "upgrade");
        } else if name.eq_ignore_ascii_case("host") {
            host = Some(h.value);
        } else if name.eq_ignore_ascii_case("k-original-host") {
            original_host = Some(h.value);
        } else if name.eq_ignore_ascii_case("x-forwarded-for") {
            xff_prev.push(h.value);
        } else if name.eq_ignore_ascii_case("forwarded") {
            forwarded = true;
        } else if name.eq_ignore_ascii_case("x-forwarded-proto") {
            proto = Some(h.value);
        } else if name.eq_ignore_ascii_case("expect") {
            expect_continue = h.value.eq_ignore_ascii_case(b"100-continue");
        } else if name.eq_ignore_ascii_case("upgrade") {
            upgrade_header = true;
        } else if name.eq_ignore_ascii_case("k-network-probe") {
            probe = Some(h.value.to_vec());
        } else if name.eq_ignore_ascii_case("knative-serving-tag") {
            tag = Some(range_in(buf, h.value));
        }
    }
    let upgrade = conn_upgrade && upgrade_header;
    let framing = if chunked {
        Framing::Chunked
    } else {
        match framing_len {
            Some(0) | None => Framing::Empty,
            Some(n) => Framing::Length(n),
        }
    };

    let head = RequestHead {
        len,
        framing,
        keep_alive: if http10 {
            keep_alive_10 && !close
        } else {
            !close
        },
        http10,
        expect_continue,
        is_head: method == "HEAD",
        upgrade,
        probe,
        host: host.map(|h| range_in(buf, h)),
        tag,
    };
    let Some(edit) = edit else {
        return Ok(Some(head));
    };

    out.clear();
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(origin_form(target).as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let (peer_ip, host) = match *edit {
        Edit::ToUser {
            peer_ip,
            default_host,
        } => {
            let host = original_host.or(host).unwrap_or(default_host.as_bytes());
            header(out, "host", host);
            (peer_ip, Some(host))
        }
        Edit::ToRevision {
            peer_ip,
            revision,
            namespace,
        } => {
            if let Some(host) = host {
                header(out, "host", host);
            }
            header(out, "k-proxy-request", b"activator");
            header(out, "knative-serving-revision", revision);
            header(out, "knative-serving-namespace", namespace);
            if proto.is_none() {
                header(out, "x-forwarded-proto", b"http");
            }
            (peer_ip, host)
        }
    };
    let to_user = matches!(edit, Edit::ToUser { .. });
    for h in req.headers.iter() {
        let name = h.name;
        let skip = [
            "host",
            "knative-serving-revision",
            "knative-serving-namespace",
        ]
        .iter()
        .chain(&[
            "x-forwarded-for",
            "connection",
            "keep-alive",
            "proxy-connection",
        ])
        .chain(&["te", "k-network-probe", "k-proxy-request"])
        .any(|s| name.eq_ignore_ascii_case(s))
            || (to_user && name.eq_ignore_ascii_case("k-original-host"))
            // Transfer-Encoding wins over Content-Length (RFC 9112 §6.3); only one goes on.
            || (chunked && name.eq_ignore_ascii_case("content-length"))
            || (expect_continue && name.eq_ignore_ascii_case("expect"))
            || (!upgrade && name.eq_ignore_ascii_case("upgrade"));
        if !skip {
            header(out, name, h.value);
        }
    }
    if upgrade {
        header(out, "connection", b"upgrade");
    }
    let xff_start = out.len() + "x-forwarded-for: ".len();
    out.extend_from_slice(b"x-forwarded-for: ");
    for prev in &xff_prev {
        out.extend_from_slice(prev);
        out.extend_from_slice(b", ");
    }
    out.extend_from_slice(peer_ip.as_bytes());
    let xff_end = out.len();
    out.extend_from_slice(b"\r\n");
    if to_user && !forwarded {
        // RFC 7239 from the X-Forwarded-* headers, as Knative's forwarded shim does.
        let mut fwd = String::with_capacity(64);
        let xff = String::from_utf8_lossy(&out[xff_start..xff_end]).into_owned();
        for (i, node) in xff.split(',').enumerate() {
            fwd.push_str(if i > 0 { ", for=" } else { "for=" });
            let node = node.trim();
            if node.contains(':') {
                let _ = write!(fwd, "\"[{node}]\"");
            } else {
                fwd.push_str(node);
            }
        }
        if let Some(host) = host.and_then(|h| std::str::from_utf8(h).ok()) {
            fwd.push_str(";host=");
            fwd.push_str(host);
        }
        fwd.push_str(";proto=");
        fwd.push_str(
            proto
                .and_then(|p| std::str::from_utf8(p).ok())
                .unwrap_or("http"),
        );
        header(out, "forwarded", fwd.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    Ok(Some(head))
}

fn header(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// `/path?query` of a target in origin or absolute form.
fn origin_form(target: &str) -> &str {
    if target.starts_with('/') || target == "*" {
        return target;
    }
    match target.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("/", |i| &rest[i..]),
        None => target,
    }
}

/// Parses a response head at the start of `buf` for a request (`is_head` for `HEAD`);
/// `Ok(None)` while it is incomplete. On success `out` holds the head the client gets, without
/// its final empty line and without `Connection`/`Keep-Alive`, so the caller can add
/// `connection: close`.
pub fn parse_response(
    buf: &[u8],
    is_head: bool,
    out: &mut Vec<u8>,
) -> Result<Option<ResponseHead>, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let len = match resp.parse(buf)? {
        httparse::Status::Complete(len) => len,
        httparse::Status::Partial if buf.len() > MAX_HEAD => return Err(HeadError::TooLarge),
        httparse::Status::Partial => return Ok(None),
    };
    let status = resp.code.ok_or(HeadError::Malformed("status"))?;
    let http10 = resp.version == Some(0);
    let (mut length, mut chunked, mut close, mut keep_alive_10) = (None, false, false, false);
    out.clear();
    let _ = write!(
        ByteWriter(out),
        "HTTP/1.1 {status} {}\r\n",
        resp.reason.unwrap_or("")
    );
    for h in resp.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(content_length(h.value, length)?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = has_token(h.value, "chunked");
        } else if name.eq_ignore_ascii_case("connection") {
            close |= has_token(h.value, "close");
            keep_alive_10 |= has_token(h.value, "keep-alive");
            if status == 101 {
                out.extend_from_slice(b"connection: upgrade\r\n");
            }
            continue;
        } else if name.eq_ignore_ascii_case("keep-alive") {
            continue;
        }
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(h.value);
        out.extend_from_slice(b"\r\n");
    }
    let framing = if is_head || (100..200).contains(&status) || status == 204 || status == 304 {
        Framing::Empty
    } else if chunked {
        Framing::Chunked
    } else {
        match length {
            Some(0) => Framing::Empty,
            Some(n) => Framing::Length(n),
            None => Framing::UntilClose,
        }
    };
    Ok(Some(ResponseHead {
        len,
        status,
        framing,
        keep_alive: if http10 {
            keep_alive_10 && !close
        } else {
            !close
        },
    }))
}

/// `fmt::Write` into a byte vector.
struct ByteWriter<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for ByteWriter<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// Finds the end of a chunked body in the bytes as they arrive; the bytes themselves are
/// forwarded unchanged.
#[derive(Debug, Default)]
pub struct ChunkedEnd {
    state: Chunk,
    size: u64,
    digits: u32,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    #[default]
    Size,
    Extension,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    TrailerStart,
    TrailerLine,
    EndLf,
    Done,
}

/// A chunked body that does not follow RFC 9112 §7.1.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("malformed chunked body")]
pub struct BadChunk;

impl ChunkedEnd {
    /// Whether the last chunk and the trailers have been seen.
    pub fn is_done(&self) -> bool {
        self.state == Chunk::Done
    }

    /// Consumes bytes of the body from the start of `data`; returns how many belong to it
    /// (all of them unless the body ends inside `data`).
    pub fn scan(&mut self, data: &[u8]) -> Result<usize, BadChunk> {
        let mut i = 0;
        while i < data.len() && self.state != Chunk::Done {
            if self.state == Chunk::Data {
                let take = (data.len() - i).min(usize::try_from(self.size).unwrap_or(usize::MAX));
                i += take;
                self.size -= take as u64;
                if self.size == 0 {
                    self.state = Chunk::DataCr;
                }
                continue;
            }
            let b = data[i];
            i += 1;
            self.state = match (self.state, b) {
                (Chunk::Size, b) if b.is_ascii_hexdigit() => {
                    let d = u64::from((b as char).to_digit(16).unwrap_or(0));
                    self.digits += 1;
                    if self.digits > 15 {
                        return Err(BadChunk);
                    }
                    self.size = self.size * 16 + d;
                    Chunk::Size
                }
                (Chunk::Size, b';' | b' ' | b'\t') if self.digits > 0 => Chunk::Extension,
                (Chunk::Size, b'\r') if self.digits > 0 => Chunk::SizeLf,
                (Chunk::Size, b'\n') | (Chunk::SizeLf, b'\n') | (Chunk::Extension, b'\n')
                    if self.digits > 0 =>
                {
                    if self.size == 0 {
                        Chunk::TrailerStart
                    } else {
                        Chunk::Data
                    }
                }
                (Chunk::Extension, _) => Chunk::Extension,
                (Chunk::DataCr, b'\r') => Chunk::DataLf,
                (Chunk::DataCr, b'\n') | (Chunk::DataLf, b'\n') => {
                    self.digits = 0;
                    Chunk::Size
                }
                (Chunk::TrailerStart, b'\r') => Chunk::EndLf,
                (Chunk::TrailerStart, b'\n') | (Chunk::EndLf, b'\n') => Chunk::Done,
                (Chunk::TrailerStart, _) => Chunk::TrailerLine,
                (Chunk::TrailerLine, b'\n') => Chunk::TrailerStart,
                (Chunk::TrailerLine, _) => Chunk::TrailerLine,
                _ => return Err(BadChunk),
            };
        }
        Ok(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RW: Edit<'static> = Edit::ToUser {
        peer_ip: "10.0.0.9",
        default_host: "127.0.0.1:8080",
    };

    fn request(raw: &str) -> (RequestHead, String) {
        let mut out = Vec::new();
        let head = parse_request(raw.as_bytes(), Some(&RW), &mut out)
            .unwrap()
            .unwrap();
        (head, String::from_utf8(out).unwrap())
    }

    #[test]
    fn request_head_is_rewritten_for_the_user_process() {
        let raw = "GET http://h.example/a?b=1 HTTP/1.1\r\nHost: activator\r\nK-Original-Host: h.example\r\n\
             Knative-Serving-Revision: r\r\nKnative-Serving-Namespace: n\r\nX-Forwarded-For: 1.2.3.4\r\n\
             Connection: keep-alive\r\nX-Custom: yes\r\n\r\nleftover";
        let (head, out) = request(raw);
        assert_eq!(head.framing, Framing::Empty);
        assert!(head.keep_alive);
        assert_eq!(head.len, raw.len() - "leftover".len());
        assert!(
            out.starts_with("GET /a?b=1 HTTP/1.1\r\nhost: h.example\r\n"),
            "{out}"
        );
        assert!(out.contains("X-Custom: yes\r\n"), "{out}");
        assert!(
            out.contains("x-forwarded-for: 1.2.3.4, 10.0.0.9\r\n"),
            "{out}"
        );
        assert!(
            out.contains("forwarded: for=1.2.3.4, for=10.0.0.9;host=h.example;proto=http\r\n"),
            "{out}"
        );
        for gone in [
            "Knative-Serving",
            "K-Original-Host",
            "Connection",
            "activator",
        ] {
            assert!(!out.contains(gone), "{gone} left in {out}");
        }
        assert!(out.ends_with("\r\n\r\n"));
    }

    #[test]
    fn request_framing_and_keep_alive() {
        let (h, _) = request("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n");
        assert_eq!(h.framing, Framing::Length(5));
        let (h, out) =
            request("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n");
        assert_eq!(h.framing, Framing::Chunked);
        assert!(out.contains("Transfer-Encoding: gzip, chunked\r\n"));
        let (h, _) = request("GET / HTTP/1.0\r\n\r\n");
        assert!(!h.keep_alive);
        let (h, out) = request("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        assert!(h.keep_alive);
        assert!(out.contains("host: 127.0.0.1:8080\r\n"), "{out}");
        let (h, _) = request("GET / HTTP/1.1\r\nConnection: close\r\n\r\n");
        assert!(!h.keep_alive);
        let (h, out) =
            request("PUT / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n");
        assert!(h.expect_continue);
        assert!(!out.to_ascii_lowercase().contains("expect"));
        let (h, out) =
            request("GET / HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n");
        assert!(h.upgrade);
        assert!(
            out.contains("Upgrade: websocket\r\nconnection: upgrade\r\n"),
            "{out}"
        );
    }

    #[test]
    fn transfer_encoding_wins_over_content_length() {
        let (h, out) =
            request("POST / HTTP/1.1\r\nContent-Length: 9\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert_eq!(h.framing, Framing::Chunked);
        assert!(
            !out.to_ascii_lowercase().contains("content-length"),
            "{out}"
        );
    }

    #[test]
    fn the_activator_edit_names_the_revision() {
        let edit = Edit::ToRevision {
            peer_ip: "10.0.0.9",
            revision: b"hello-00001",
            namespace: b"default",
        };
        let raw = "GET /x HTTP/1.1\r\nHost: hello.default.example.com\r\n\
                   Knative-Serving-Tag: canary\r\nK-Proxy-Request: spoofed\r\n\r\n";
        let mut out = Vec::new();
        let head = parse_request(raw.as_bytes(), Some(&edit), &mut out)
            .unwrap()
            .unwrap();
        let at = |r: Option<Range<usize>>| &raw[r.unwrap()];
        assert_eq!(at(head.host.clone()), "hello.default.example.com");
        assert_eq!(at(head.tag.clone()), "canary");
        let out = String::from_utf8(out).unwrap();
        assert!(
            out.starts_with("GET /x HTTP/1.1\r\nhost: hello.default.example.com\r\n"),
            "{out}"
        );
        assert!(out.contains("k-proxy-request: activator\r\n"), "{out}");
        assert!(!out.contains("spoofed"), "{out}");
        assert!(
            out.contains(
                "knative-serving-revision: hello-00001\r\nknative-serving-namespace: default\r\n"
            ),
            "{out}"
        );
        assert!(out.contains("x-forwarded-proto: http\r\n"), "{out}");
        assert!(out.contains("x-forwarded-for: 10.0.0.9\r\n"), "{out}");
        assert!(
            !out.contains("\nforwarded:"),
            "only the queue-proxy adds Forwarded: {out}"
        );
    }

    #[test]
    fn bad_requests_are_refused() {
        let mut out = Vec::new();
        let bad = |raw: &str, out: &mut Vec<u8>| parse_request(raw.as_bytes(), Some(&RW), out);
        assert!(
            bad(
                "GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                &mut out
            )
            .is_err()
        );
        assert!(
            bad(
                "GET / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
                &mut out
            )
            .is_err()
        );
        assert!(bad("NOT HTTP\r\n\r\n", &mut out).is_err());
        assert_eq!(bad("GET / HTTP/1.1\r\nHost: a\r\n", &mut out), Ok(None));
        let huge = format!("GET / HTTP/1.1\r\nX: {}\r\n", "a".repeat(MAX_HEAD));
        assert_eq!(bad(&huge, &mut out), Err(HeadError::TooLarge));
    }

    #[test]
    fn response_framing() {
        let mut out = Vec::new();
        let parse = |raw: &str, is_head, out: &mut Vec<u8>| {
            parse_response(raw.as_bytes(), is_head, out)
                .unwrap()
                .unwrap()
        };
        let r = parse(
            "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc",
            false,
            &mut out,
        );
        assert_eq!(
            (r.status, r.framing, r.keep_alive),
            (200, Framing::Length(3), false)
        );
        assert_eq!(
            String::from_utf8_lossy(&out),
            "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n"
        );
        let r = parse(
            "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n",
            true,
            &mut out,
        );
        assert_eq!(r.framing, Framing::Empty);
        let r = parse("HTTP/1.1 204 No Content\r\n\r\n", false, &mut out);
        assert_eq!(r.framing, Framing::Empty);
        let r = parse(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            false,
            &mut out,
        );
        assert_eq!(r.framing, Framing::Chunked);
        let r = parse("HTTP/1.0 200 OK\r\n\r\n", false, &mut out);
        assert_eq!((r.framing, r.keep_alive), (Framing::UntilClose, false));
        let r = parse("HTTP/1.1 100 Continue\r\n\r\n", false, &mut out);
        assert_eq!((r.status, r.framing), (100, Framing::Empty));
    }

    #[test]
    fn chunked_end_is_found_across_reads() {
        let body = b"4;ext=1\r\nWiki\r\n5\r\npedia\r\n0\r\nTrailer: x\r\n\r\nNEXT";
        let end = body.len() - "NEXT".len();
        for split in 0..body.len() {
            let mut c = ChunkedEnd::default();
            let a = c.scan(&body[..split]).unwrap();
            assert_eq!(a, split.min(end));
            let b = c.scan(&body[a..]).unwrap();
            assert!(c.is_done(), "split at {split}");
            assert_eq!(a + b, end, "split at {split}");
        }
        let mut c = ChunkedEnd::default();
        assert_eq!(c.scan(b"0\r\n\r\n"), Ok(5));
        assert!(c.is_done());
        assert_eq!(ChunkedEnd::default().scan(b"zz\r\n"), Err(BadChunk));
        assert_eq!(ChunkedEnd::default().scan(b"1\r\nab"), Err(BadChunk));
        assert_eq!(
            ChunkedEnd::default().scan(b"ffffffffffffffff\r\n"),
            Err(BadChunk)
        );
    }
}
