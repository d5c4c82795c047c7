//! A lenient HTTP/1.1 parser, the kind many servers are: a line ends at LF (a CR before it is
//! dropped), whitespace before a colon is accepted, folded lines are joined, `_` in a field
//! name reads as `-` (as CGI-style servers map names), `Transfer-Encoding` means chunked if it
//! mentions chunked and wins over `Content-Length`, the last `Content-Length` counts and is
//! read like `atoi`, and a chunk size is whatever hex digits start its line.

use crate::message::{Asked, Body, Message, Step, Tail, bodiless, body_then, read_all};

/// The line at `at` (up to LF, a CR before it removed) and where the next starts.
fn line(buf: &[u8], at: usize) -> Option<(&[u8], usize)> {
    let lf = buf[at..].iter().position(|&b| b == b'\n')? + at;
    let l = &buf[at..lf];
    Some((l.strip_suffix(b"\r").unwrap_or(l), lf + 1))
}

struct Head<'a> {
    start: &'a [u8],
    fields: Vec<(Vec<u8>, Vec<u8>)>,
    len: usize,
}

fn head(buf: &[u8]) -> Option<Head<'_>> {
    let mut at = 0;
    let start = loop {
        let (l, next) = line(buf, at)?;
        at = next;
        if !l.is_empty() {
            break l;
        }
    };
    let mut fields: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    loop {
        let (l, next) = line(buf, at)?;
        at = next;
        if l.is_empty() {
            return Some(Head {
                start,
                fields,
                len: at,
            });
        }
        if matches!(l[0], b' ' | b'\t') {
            if let Some(last) = fields.last_mut() {
                last.1.push(b' ');
                last.1.extend_from_slice(l.trim_ascii());
            }
            continue;
        }
        let Some(colon) = l.iter().position(|&b| b == b':') else {
            continue;
        };
        let name: Vec<u8> = l[..colon]
            .trim_ascii()
            .iter()
            .map(|b| {
                if *b == b'_' {
                    b'-'
                } else {
                    b.to_ascii_lowercase()
                }
            })
            .collect();
        fields.push((name, l[colon + 1..].trim_ascii().to_vec()));
    }
}

fn atoi(v: &[u8]) -> Option<u64> {
    let v = v.trim_ascii();
    let v = v.strip_prefix(b"+").unwrap_or(v);
    let digits = v.iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&v[..digits]).ok()?.parse().ok()
}

fn framing(fields: &[(Vec<u8>, Vec<u8>)]) -> Option<Body> {
    let chunked = fields.iter().any(|(n, v)| {
        n == b"transfer-encoding" && v.to_ascii_lowercase().windows(7).any(|w| w == b"chunked")
    });
    if chunked {
        return Some(Body::Chunked);
    }
    match fields.iter().rev().find(|(n, _)| n == b"content-length") {
        Some((_, v)) => Some(Body::Length(atoi(v)?)),
        None => Some(Body::Close),
    }
}

fn chunked(buf: &[u8]) -> Result<Option<(Vec<u8>, usize)>, &'static str> {
    let mut at = 0;
    let mut payload = Vec::new();
    loop {
        let Some((l, next)) = line(buf, at) else {
            return Ok(None);
        };
        let l = l.trim_ascii_start();
        let digits = l.iter().take_while(|b| b.is_ascii_hexdigit()).count();
        if digits == 0 {
            return Err("no chunk size");
        }
        let size =
            u64::from_str_radix(std::str::from_utf8(&l[..digits.min(16)]).unwrap_or("x"), 16)
                .map_err(|_| "bad chunk size")?;
        at = next;
        if size == 0 {
            break;
        }
        let size = usize::try_from(size).map_err(|_| "chunk too large")?;
        if buf.len() < at + size {
            return Ok(None);
        }
        payload.extend_from_slice(&buf[at..at + size]);
        at += size;
        match buf.get(at..) {
            Some([b'\r', b'\n', ..]) => at += 2,
            Some([b'\n', ..]) => at += 1,
            Some([] | [b'\r']) => return Ok(None),
            _ => return Err("chunk data not followed by a line end"),
        }
    }
    loop {
        let Some((l, next)) = line(buf, at) else {
            return Ok(None);
        };
        at = next;
        if l.is_empty() {
            return Ok(Some((payload, at)));
        }
    }
}

fn host(fields: &[(Vec<u8>, Vec<u8>)]) -> Option<Vec<u8>> {
    // The first one, as many servers take it.
    fields.iter().find(|f| f.0 == b"host").map(|f| f.1.clone())
}

fn request(buf: &[u8]) -> Step {
    let Some(h) = head(buf) else {
        return Step::Incomplete;
    };
    let mut words = h
        .start
        .split(u8::is_ascii_whitespace)
        .filter(|w| !w.is_empty());
    let (Some(method), Some(target)) = (words.next(), words.next()) else {
        return Step::Invalid("request line");
    };
    let Some(body) = framing(&h.fields) else {
        return Step::Invalid("content-length");
    };
    let body = match body {
        Body::Close => Body::Length(0),
        b => b,
    };
    let m = Message {
        head: buf[..h.len].to_vec(),
        method: method.to_vec(),
        target: target.to_vec(),
        status: 0,
        host: host(&h.fields),
        body: Vec::new(),
    };
    body_then(h.len, buf, body, false, chunked, m)
}

fn response(buf: &[u8], asked: Asked, eof: bool) -> Step {
    let Some(h) = head(buf) else {
        return Step::Incomplete;
    };
    let mut words = h
        .start
        .split(u8::is_ascii_whitespace)
        .filter(|w| !w.is_empty());
    let status = words
        .nth(1)
        .and_then(|w| std::str::from_utf8(w).ok())
        .and_then(|w| w.parse::<u16>().ok());
    let Some(status) = status else {
        return Step::Invalid("status line");
    };
    let body = if bodiless(status, asked) {
        Body::Length(0)
    } else {
        match framing(&h.fields) {
            Some(body) => body,
            None => return Step::Invalid("content-length"),
        }
    };
    let m = Message {
        head: buf[..h.len].to_vec(),
        method: Vec::new(),
        target: Vec::new(),
        status,
        host: None,
        body: Vec::new(),
    };
    body_then(h.len, buf, body, eof, chunked, m)
}

/// Every request in `buf`, and how the bytes after the last one end.
pub fn requests(buf: &[u8]) -> (Vec<Message>, Tail) {
    read_all(buf, request)
}

/// Every response in `buf` to requests like `asked`; `eof` when the connection closed after
/// `buf`.
pub fn responses(buf: &[u8], asked: Asked, eof: bool) -> (Vec<Message>, Tail) {
    read_all(buf, |b| response(b, asked, eof))
}
