//! Request heads: parsed with httparse, held to RFC 9112's rules before a byte goes on, and
//! rewritten for the next hop with the framing the relay itself decided.

use std::ops::Range;

use crate::Framing;
use crate::fields::{
    Coding, ConnectionOptions, HOP_BY_HOP, content_length, has_bare_lf, is_disguised_framing,
    is_host, is_one_of, is_token, is_trusted, list, transfer_coding,
};

/// Most header fields in a head.
pub const MAX_HEADERS: usize = 100;

/// Why a request is refused; each is answered with its status and the connection closed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// 400: the head or its framing breaks RFC 9112 or could be read more than one way.
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    /// 431: the head is larger than the limit or has too many fields.
    #[error("request head too large")]
    TooLarge,
    /// 501: a transfer coding or method the relay does not implement.
    #[error("not implemented: {0}")]
    NotImplemented(&'static str),
    /// 505: not HTTP/1.0 or HTTP/1.1.
    #[error("HTTP version not supported: use HTTP/1.1")]
    Version,
    /// 417: an expectation other than `100-continue`.
    #[error("expectation not supported: only 100-continue is")]
    Expectation,
    /// 408: the head, or the body, did not arrive in time.
    #[error("request not received in time")]
    Timeout,
}

impl Refusal {
    /// What was wrong, in a few words.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::BadRequest(why) | Refusal::NotImplemented(why) => why,
            Refusal::TooLarge => "head too large",
            Refusal::Version => "version",
            Refusal::Expectation => "expectation",
            Refusal::Timeout => "timeout",
        }
    }

    /// The status the client is answered with.
    pub fn status(&self) -> u16 {
        match self {
            Refusal::BadRequest(_) => 400,
            Refusal::TooLarge => 431,
            Refusal::NotImplemented(_) => 501,
            Refusal::Version => 505,
            Refusal::Expectation => 417,
            Refusal::Timeout => 408,
        }
    }
}

fn bad(why: &'static str) -> Refusal {
    Refusal::BadRequest(why)
}

/// What the forwarding path needs to know of a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestHead {
    /// Bytes of the head in the buffer.
    pub len: usize,
    /// How its body is delimited.
    pub framing: Framing,
    /// Whether the client keeps the connection after this exchange.
    pub keep_alive: bool,
    /// An HTTP/1.0 request: no chunked response, no 1xx, keep-alive only when asked.
    pub http10: bool,
    /// `Expect: 100-continue` on a request with a body (answered by the relay, not forwarded).
    pub expect_continue: bool,
    /// A `HEAD` request: the response has no body whatever its headers say.
    pub is_head: bool,
    /// An HTTP/1.1 protocol upgrade (`Connection: upgrade` with `Upgrade`).
    pub upgrade: bool,
    /// Where the `K-Network-Probe` value is in the buffer.
    pub probe: Option<Range<usize>>,
    /// Where the authority the request is for is in the buffer: the target's, for an
    /// absolute-form target, else the `Host` value.
    pub host: Option<Range<usize>>,
    /// Where the `Knative-Serving-Tag` value is in the buffer.
    pub tag: Option<Range<usize>>,
}

/// How a request head is rewritten for the next hop. Both edits remove every field only
/// Sluice may set ([`crate::fields::TRUSTED`]), whoever sent it.
pub enum Edit<'a> {
    /// The queue-proxy's, toward the user process: `Forwarded` is derived from the
    /// `X-Forwarded-*` fields when absent; an HTTP/1.0 request without `Host` gets
    /// `default_host`.
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

/// The request target's form (RFC 9112 §3.2).
enum Target<'a> {
    /// `/path?query`, forwarded as is.
    Origin(&'a str),
    /// `http://authority/path?query`: routed by the authority, forwarded in origin form.
    Absolute { authority: &'a str, rest: &'a str },
    /// `*`, for `OPTIONS`.
    Asterisk,
}

fn target_form<'a>(method: &str, target: &'a str) -> Result<Target<'a>, Refusal> {
    if !target.is_ascii() {
        // httparse lets UTF-8 through; a URI is ASCII, with anything else percent-encoded.
        return Err(bad("a request target is ASCII (percent-encode the rest)"));
    }
    if target.contains('#') {
        return Err(bad("a request target has no fragment"));
    }
    if target.starts_with('/') {
        return Ok(Target::Origin(target));
    }
    if target == "*" {
        return if method == "OPTIONS" {
            Ok(Target::Asterisk)
        } else {
            Err(bad("the * target is only for OPTIONS"))
        };
    }
    let Some((scheme, after)) = target.split_once("://") else {
        return Err(bad("request target is neither a path nor an absolute URI"));
    };
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return Err(bad("an absolute request target must be http or https"));
    }
    let end = after.find(['/', '?']).unwrap_or(after.len());
    let (authority, rest) = after.split_at(end);
    if authority.contains('@') {
        return Err(bad("user information in the request target"));
    }
    if authority.is_empty() || !is_host(authority.as_bytes()) {
        return Err(bad("invalid authority in the request target"));
    }
    Ok(Target::Absolute { authority, rest })
}

fn malformed(e: httparse::Error) -> Refusal {
    match e {
        httparse::Error::TooManyHeaders => Refusal::TooLarge,
        httparse::Error::Version => Refusal::Version,
        httparse::Error::HeaderName => bad("invalid header field name"),
        httparse::Error::HeaderValue => bad("invalid header field value"),
        httparse::Error::NewLine | httparse::Error::Status => bad("invalid line ending"),
        httparse::Error::Token => bad("invalid request line"),
    }
}

/// Parses a request head at the start of `buf`; `Ok(None)` while it is incomplete and under
/// `max_head` bytes. With an `edit`, `out` then holds the head for the next hop: origin-form
/// target, the relay's own framing field, hop-by-hop and trusted fields removed, the peer
/// appended to `X-Forwarded-For`, and the edit's own fields.
pub fn parse_request(
    buf: &[u8],
    max_head: usize,
    edit: Option<&Edit<'_>>,
    out: &mut Vec<u8>,
) -> Result<Option<RequestHead>, Refusal> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf).map_err(malformed)? {
        httparse::Status::Complete(len) if len > max_head => return Err(Refusal::TooLarge),
        httparse::Status::Complete(len) => len,
        httparse::Status::Partial if buf.len() >= max_head => return Err(Refusal::TooLarge),
        httparse::Status::Partial => return Ok(None),
    };
    if has_bare_lf(&buf[..len]) {
        return Err(bad("a line of the head ends in a bare LF, not CRLF"));
    }
    let method = req.method.ok_or(bad("no method"))?;
    let target = req.path.ok_or(bad("no request target"))?;
    let http10 = req.version == Some(0);
    if method == "CONNECT" {
        return Err(Refusal::NotImplemented("CONNECT"));
    }
    let form = target_form(method, target)?;

    let mut length = None;
    let mut coding = None;
    let mut host_field: Option<&[u8]> = None;
    let mut options = ConnectionOptions::default();
    let (mut close, mut keep_alive_10, mut conn_upgrade, mut upgrade_field) =
        (false, false, false, false);
    let (mut forwarded, mut proto, mut expect) = (false, None, false);
    let (mut probe, mut tag) = (None, None);
    for h in req.headers.iter() {
        let name = h.name;
        let value = h.value;
        if name.eq_ignore_ascii_case("content-length") {
            if length.is_some() {
                return Err(bad("more than one Content-Length"));
            }
            length = Some(content_length(value).ok_or(bad("Content-Length is not digits"))?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            if coding.is_some() {
                return Err(bad("more than one Transfer-Encoding"));
            }
            coding = Some(transfer_coding(value));
        } else if name.eq_ignore_ascii_case("connection") {
            for option in list(value) {
                if option.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if option.eq_ignore_ascii_case(b"keep-alive") {
                    keep_alive_10 = true;
                } else if option.eq_ignore_ascii_case(b"upgrade") {
                    conn_upgrade = true;
                } else if !is_token(option) {
                    return Err(bad("a Connection option is not a token"));
                } else if !options.push(option) {
                    return Err(bad("too many Connection options"));
                }
            }
        } else if name.eq_ignore_ascii_case("host") {
            if host_field.is_some() {
                return Err(bad("more than one Host"));
            }
            if !is_host(value) {
                return Err(bad("invalid Host"));
            }
            host_field = Some(value);
        } else if name.eq_ignore_ascii_case("forwarded") {
            forwarded = true;
        } else if name.eq_ignore_ascii_case("x-forwarded-proto") {
            proto = Some(value);
        } else if name.eq_ignore_ascii_case("expect") {
            if value.eq_ignore_ascii_case(b"100-continue") {
                expect = true;
            } else if !http10 {
                return Err(Refusal::Expectation);
            }
        } else if name.eq_ignore_ascii_case("upgrade") {
            // `Upgrade: h2c` (RFC 7540's upgrade, deprecated by RFC 9113) is ignored, as a
            // server may (RFC 9110 §7.8): the request is answered in HTTP/1.1, and
            // `HTTP2-Settings`, named in `Connection`, goes no further.
            upgrade_field = !value.is_empty() && !value.eq_ignore_ascii_case(b"h2c");
        } else if name.eq_ignore_ascii_case("k-network-probe") {
            probe = Some(range_in(buf, value));
        } else if name.eq_ignore_ascii_case("knative-serving-tag") {
            if tag.is_some() {
                return Err(bad("more than one Knative-Serving-Tag"));
            }
            tag = Some(range_in(buf, value));
        } else if is_disguised_framing(name.as_bytes()) {
            return Err(bad("a framing field name with _ for -"));
        }
    }
    if coding.is_some() && http10 {
        return Err(bad("Transfer-Encoding in an HTTP/1.0 request"));
    }
    if coding.is_some() && length.is_some() {
        return Err(bad("both Content-Length and Transfer-Encoding"));
    }
    match coding {
        Some(Coding::Invalid) => {
            return Err(bad("Transfer-Encoding must end in a single chunked"));
        }
        Some(Coding::Unsupported) => {
            return Err(Refusal::NotImplemented(
                "transfer codings other than chunked",
            ));
        }
        _ => {}
    }
    if host_field.is_none() && !http10 {
        return Err(bad("missing Host"));
    }
    let framing = match (coding, length) {
        (Some(_), _) => Framing::Chunked,
        (None, None) => Framing::Empty,
        (None, Some(n)) => Framing::Length(n),
    };
    let upgrade = !http10 && conn_upgrade && upgrade_field;
    let host = match form {
        Target::Absolute { authority, .. } => Some(authority.as_bytes()),
        _ => host_field,
    };
    let head = RequestHead {
        len,
        framing,
        keep_alive: !close && (!http10 || keep_alive_10),
        http10,
        expect_continue: expect && !http10 && !framing.is_empty(),
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
    match form {
        Target::Origin(path) => out.extend_from_slice(path.as_bytes()),
        Target::Asterisk => out.push(b'*'),
        Target::Absolute { rest, .. } => {
            if !rest.starts_with('/') {
                out.push(b'/');
            }
            out.extend_from_slice(rest.as_bytes());
        }
    }
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let (peer_ip, to_user) = match *edit {
        Edit::ToUser {
            peer_ip,
            default_host,
        } => {
            field(out, b"host", host.unwrap_or(default_host.as_bytes()));
            (peer_ip, true)
        }
        Edit::ToRevision {
            peer_ip,
            revision,
            namespace,
        } => {
            // HTTP/1.1 needs a Host: empty when the request (HTTP/1.0) had none.
            field(out, b"host", host.unwrap_or_default());
            field(out, b"k-proxy-request", b"activator");
            field(out, b"knative-serving-revision", revision);
            field(out, b"knative-serving-namespace", namespace);
            if proto.is_none() {
                field(out, b"x-forwarded-proto", b"http");
            }
            (peer_ip, false)
        }
    };
    framing_field(out, framing);
    for h in req.headers.iter() {
        let name = h.name;
        // Host, Expect and X-Forwarded-For are written (or answered) by the relay itself.
        let skip = is_one_of(name, &HOP_BY_HOP)
            || is_one_of(name, &["host", "expect", "x-forwarded-for"])
            || is_trusted(name.as_bytes())
            || options.lists(name)
            || (!upgrade && name.eq_ignore_ascii_case("upgrade"));
        if !skip {
            field(out, name.as_bytes(), h.value);
        }
    }
    if upgrade {
        field(out, b"connection", b"upgrade");
    }
    out.extend_from_slice(b"x-forwarded-for: ");
    let xff_start = out.len();
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("x-forwarded-for") && !h.value.is_empty() {
            out.extend_from_slice(h.value);
            out.extend_from_slice(b", ");
        }
    }
    out.extend_from_slice(peer_ip.as_bytes());
    let xff_end = out.len();
    out.extend_from_slice(b"\r\n");
    if to_user && !forwarded {
        forwarded_field(out, xff_start..xff_end, host, proto);
    }
    out.extend_from_slice(b"\r\n");
    Ok(Some(head))
}

/// Writes `name: value` and CRLF.
pub(crate) fn field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Writes the one framing field a message with `framing` carries.
pub(crate) fn framing_field(out: &mut Vec<u8>, framing: Framing) {
    match framing {
        Framing::Length(n) => {
            out.extend_from_slice(b"content-length: ");
            decimal(out, n);
            out.extend_from_slice(b"\r\n");
        }
        Framing::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        Framing::Empty | Framing::UntilClose => {}
    }
}

/// Writes `n` in decimal.
pub(crate) fn decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// RFC 7239 `Forwarded` from the `X-Forwarded-For` list at `xff` in `out` (as Knative's
/// forwarded shim does), the host and the protocol.
pub(crate) fn forwarded_field(
    out: &mut Vec<u8>,
    xff: Range<usize>,
    host: Option<&[u8]>,
    proto: Option<&[u8]>,
) {
    out.extend_from_slice(b"forwarded: ");
    let mut first = true;
    let mut pos = xff.start;
    while pos < xff.end {
        let end = out[pos..xff.end]
            .iter()
            .position(|&b| b == b',')
            .map_or(xff.end, |i| pos + i);
        let (mut a, mut b) = (pos, end);
        while a < b && matches!(out[a], b' ' | b'\t') {
            a += 1;
        }
        while b > a && matches!(out[b - 1], b' ' | b'\t') {
            b -= 1;
        }
        if a < b {
            out.extend_from_slice(if first { b"for=" } else { b", for=" });
            if out[a..b].contains(&b':') {
                out.extend_from_slice(b"\"[");
                out.extend_from_within(a..b);
                out.extend_from_slice(b"]\"");
            } else {
                out.extend_from_within(a..b);
            }
            first = false;
        }
        pos = end + 1;
    }
    if let Some(host) = host {
        out.extend_from_slice(b";host=");
        if is_token(host) {
            out.extend_from_slice(host);
        } else {
            // A host with a port or an IPv6 literal is not a token: quoted (it has no quote
            // or backslash, being a valid host).
            out.push(b'"');
            out.extend_from_slice(host);
            out.push(b'"');
        }
    }
    out.extend_from_slice(b";proto=");
    match proto {
        Some(p) if is_token(p) => out.extend_from_slice(p),
        _ => out.extend_from_slice(b"http"),
    }
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 32 * 1024;
    const TO_USER: Edit<'static> = Edit::ToUser {
        peer_ip: "10.0.0.9",
        default_host: "127.0.0.1:8080",
    };

    fn request(raw: &str) -> (RequestHead, String) {
        let mut out = Vec::new();
        let head = parse_request(raw.as_bytes(), MAX, Some(&TO_USER), &mut out)
            .unwrap()
            .unwrap();
        (head, String::from_utf8(out).unwrap())
    }

    fn refusal(raw: &str) -> Refusal {
        parse_request(raw.as_bytes(), MAX, Some(&TO_USER), &mut Vec::new()).unwrap_err()
    }

    #[test]
    fn the_head_is_rewritten_for_the_user_process() {
        let raw = "GET http://h.example/a?b=1 HTTP/1.1\r\nHost: activator\r\nK-Original-Host: evil\r\n\
             Knative-Serving-Revision: r\r\nKnative-Serving-Namespace: n\r\nX-Forwarded-For: 1.2.3.4\r\n\
             Connection: keep-alive\r\nX-Custom: yes\r\n\r\nleftover";
        let (head, out) = request(raw);
        assert_eq!(head.framing, Framing::Empty);
        assert!(head.keep_alive);
        assert_eq!(head.len, raw.len() - "leftover".len());
        assert_eq!(
            &raw[head.host.unwrap()],
            "h.example",
            "routed by the target"
        );
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
            "evil",
            "Connection",
            "activator",
        ] {
            assert!(!out.contains(gone), "{gone} left in {out}");
        }
        assert!(out.ends_with("\r\n\r\n"));
    }

    #[test]
    fn absolute_form_keeps_its_query_and_routes_by_its_authority() {
        let (_, out) = request("GET http://h.example?x=1 HTTP/1.1\r\nHost: other\r\n\r\n");
        assert!(
            out.starts_with("GET /?x=1 HTTP/1.1\r\nhost: h.example\r\n"),
            "{out}"
        );
        let (_, out) = request("GET HTTPS://h.example:8443 HTTP/1.1\r\nHost: h\r\n\r\n");
        assert!(
            out.starts_with("GET / HTTP/1.1\r\nhost: h.example:8443\r\n"),
            "{out}"
        );
        assert!(out.contains(";host=\"h.example:8443\""), "{out}");
        let (_, out) = request("OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n");
        assert!(out.starts_with("OPTIONS * HTTP/1.1\r\n"), "{out}");
    }

    #[test]
    fn framing_and_keep_alive() {
        let (h, out) = request("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 005\r\n\r\n");
        assert_eq!(h.framing, Framing::Length(5));
        assert!(out.contains("content-length: 5\r\n"), "{out}");
        assert!(!out.contains("005"), "{out}");
        let (h, out) = request("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n");
        assert_eq!(h.framing, Framing::Chunked);
        assert!(out.contains("transfer-encoding: chunked\r\n"), "{out}");
        assert!(!out.contains("Chunked"), "{out}");
        let (h, _) = request("GET / HTTP/1.0\r\n\r\n");
        assert!(!h.keep_alive && h.http10);
        let (h, out) = request("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        assert!(h.keep_alive);
        assert!(out.contains("host: 127.0.0.1:8080\r\n"), "{out}");
        let (h, _) = request("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
        assert!(!h.keep_alive);
        let (h, out) = request(
            "PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n",
        );
        assert!(h.expect_continue);
        assert!(!out.to_ascii_lowercase().contains("expect"));
        let (h, _) = request("PUT / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n");
        assert!(!h.expect_continue, "HTTP/1.0 expectations are ignored");
        let (h, out) = request(
            "GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
        );
        assert!(h.upgrade);
        assert!(
            out.contains("Upgrade: websocket\r\nconnection: upgrade\r\n"),
            "{out}"
        );
        let (h, out) =
            request("GET / HTTP/1.0\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n");
        assert!(!h.upgrade, "no upgrade in HTTP/1.0");
        assert!(!out.contains("websocket"), "{out}");
        let (h, out) = request(
            "GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n",
        );
        assert!(!h.upgrade, "Upgrade: h2c is answered in HTTP/1.1");
        let lower = out.to_ascii_lowercase();
        assert!(
            !lower.contains("h2c") && !lower.contains("http2-settings"),
            "{out}"
        );
    }

    #[test]
    fn fields_named_in_connection_are_hop_by_hop() {
        let (_, out) = request(
            "GET / HTTP/1.1\r\nHost: a\r\nConnection: close, X-Secret, Content-Length\r\n\
             X-Secret: s\r\nContent-Length: 3\r\n\r\n",
        );
        assert!(!out.contains("X-Secret"), "{out}");
        // Naming a framing field does not change the framing the relay writes.
        assert!(out.contains("content-length: 3\r\n"), "{out}");
    }

    #[test]
    fn the_activator_edit_names_the_revision_and_drops_what_clients_sent() {
        let edit = Edit::ToRevision {
            peer_ip: "10.0.0.9",
            revision: b"hello-00001",
            namespace: b"default",
        };
        let raw = "GET /x HTTP/1.1\r\nHost: hello.default.example.com\r\n\
                   Knative-Serving-Tag: canary\r\nK-Proxy-Request: spoofed\r\n\
                   K_Original_Host: spoofed\r\nKnative-Serving-Revision: spoofed\r\n\r\n";
        let mut out = Vec::new();
        let head = parse_request(raw.as_bytes(), MAX, Some(&edit), &mut out)
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
        assert!(!out.contains("canary"), "{out}");
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
    fn every_ambiguity_is_refused_with_rfc_9112s_status() {
        let cases: &[(&str, u16)] = &[
            // Line endings.
            ("GET / HTTP/1.1\nHost: a\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: a\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: a\r\n\n", 400),
            ("GET / HTTP/1.1\r\nX: a\rb\r\nHost: a\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n folded\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: a\r\nX: \x01\r\n\r\n", 400),
            // Content-Length.
            (
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\n",
                400,
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3 3\r\n\r\n",
                400,
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 3\r\n\r\n",
                400,
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n",
                400,
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n",
                400,
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: \u{3000}3\r\n\r\n",
                400,
            ),
            // Transfer-Encoding.
            (
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
                400,
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
                400,
            ),
            ("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
                501,
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n",
                400,
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n",
                400,
            ),
            // Host and target.
            ("GET / HTTP/1.1\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 400),
            ("GET http://u@h/ HTTP/1.1\r\nHost: h\r\n\r\n", 400),
            ("GET ftp://h/ HTTP/1.1\r\nHost: h\r\n\r\n", 400),
            ("GET http:///x HTTP/1.1\r\nHost: h\r\n\r\n", 400),
            ("GET /a#b HTTP/1.1\r\nHost: h\r\n\r\n", 400),
            ("GET /caf\u{e9} HTTP/1.1\r\nHost: h\r\n\r\n", 400),
            ("GET * HTTP/1.1\r\nHost: h\r\n\r\n", 400),
            ("GET x HTTP/1.1\r\nHost: h\r\n\r\n", 400),
            ("CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\n", 501),
            // Versions, expectations, size.
            ("GET / HTTP/1.2\r\nHost: a\r\n\r\n", 505),
            ("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505),
            ("GET / HTTP/1.1\r\nHost: a\r\nExpect: teapot\r\n\r\n", 417),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nKnative-Serving-Tag: a\r\nKnative-Serving-Tag: b\r\n\r\n",
                400,
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nContent_Length: 3\r\n\r\n",
                400,
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\ntransfer_encoding: chunked\r\n\r\n",
                400,
            ),
        ];
        for (raw, status) in cases {
            assert_eq!(refusal(raw).status(), *status, "{raw:?}");
        }
        let huge = format!("GET / HTTP/1.1\r\nHost: a\r\nX: {}\r\n", "a".repeat(MAX));
        assert_eq!(refusal(&huge), Refusal::TooLarge);
        let many: String = (0..MAX_HEADERS + 1)
            .map(|i| format!("X-{i}: a\r\n"))
            .collect();
        assert_eq!(
            refusal(&format!("GET / HTTP/1.1\r\nHost: a\r\n{many}\r\n")),
            Refusal::TooLarge
        );
        assert_eq!(
            parse_request(b"GET / HTTP/1.1\r\nHost: a\r\n", MAX, None, &mut Vec::new()),
            Ok(None),
            "an incomplete head waits for more"
        );
    }
}
