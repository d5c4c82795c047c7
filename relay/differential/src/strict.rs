//! A strict HTTP/1.1 parser written from RFC 9112 alone, with no code shared with the relay:
//! lines end in CRLF and nothing else, fields are `token ":" OWS value OWS`, one framing field,
//! `Transfer-Encoding` exactly `chunked`, chunked bodies by the grammar. It is the kind of
//! upstream (gunicorn, h11) that reads a bare LF as an error, or not as a line end.

use crate::message::{Asked, Body, Message, Step, Tail, bodiless, body_then, read_all};

fn tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn token(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().copied().all(tchar)
}

/// The line starting at `at`, without its CRLF, and where the next starts; `Err` on a CR or
/// LF that is not part of a CRLF.
fn line(buf: &[u8], at: usize) -> Result<Option<(&[u8], usize)>, &'static str> {
    let mut i = at;
    while i < buf.len() {
        match buf[i] {
            b'\r' => {
                return match buf.get(i + 1) {
                    Some(b'\n') => Ok(Some((&buf[at..i], i + 2))),
                    Some(_) => Err("bare CR"),
                    None => Ok(None),
                };
            }
            b'\n' => return Err("bare LF"),
            _ => i += 1,
        }
    }
    Ok(None)
}

struct Head<'a> {
    start: &'a [u8],
    fields: Vec<(Vec<u8>, &'a [u8])>,
    len: usize,
}

fn head(buf: &[u8], skip_empty: bool) -> Result<Option<Head<'_>>, &'static str> {
    let mut at = 0;
    let start = loop {
        let Some((l, next)) = line(buf, at)? else {
            return Ok(None);
        };
        at = next;
        if !(l.is_empty() && skip_empty) {
            break l;
        }
    };
    let mut fields = Vec::new();
    loop {
        let Some((l, next)) = line(buf, at)? else {
            return Ok(None);
        };
        at = next;
        if l.is_empty() {
            return Ok(Some(Head {
                start,
                fields,
                len: at,
            }));
        }
        let colon = l
            .iter()
            .position(|&b| b == b':')
            .ok_or("field without colon")?;
        let name = &l[..colon];
        if !token(name) {
            return Err("field name not a token");
        }
        let value = l[colon + 1..].trim_ascii();
        if value.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
            return Err("control character in a field value");
        }
        if value.first().is_some_and(|b| b.is_ascii_whitespace())
            || value.last().is_some_and(|b| b.is_ascii_whitespace())
        {
            return Err("whitespace other than SP/HTAB around a value");
        }
        fields.push((name.to_ascii_lowercase(), value));
    }
}

fn framing(fields: &[(Vec<u8>, &[u8])], http10: bool) -> Result<Body, &'static str> {
    let lengths: Vec<_> = fields.iter().filter(|f| f.0 == b"content-length").collect();
    let codings: Vec<_> = fields
        .iter()
        .filter(|f| f.0 == b"transfer-encoding")
        .collect();
    if lengths.len() > 1 || codings.len() > 1 {
        return Err("repeated framing field");
    }
    match (lengths.first(), codings.first()) {
        (Some(_), Some(_)) => Err("both framing fields"),
        (None, Some(te)) if te.1.eq_ignore_ascii_case(b"chunked") && !http10 => Ok(Body::Chunked),
        (None, Some(_)) => Err("unsupported transfer coding"),
        (Some(cl), None) => {
            let v = cl.1;
            if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
                return Err("bad content-length");
            }
            Ok(Body::Length(
                std::str::from_utf8(v)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .ok_or("bad content-length")?,
            ))
        }
        (None, None) => Ok(Body::Close),
    }
}

/// Reads a chunked body at the start of `buf`: payload and length used.
fn chunked(buf: &[u8]) -> Result<Option<(Vec<u8>, usize)>, &'static str> {
    let mut at = 0;
    let mut payload = Vec::new();
    loop {
        let Some((l, next)) = line(buf, at)? else {
            return Ok(None);
        };
        let digits = l.iter().take_while(|b| b.is_ascii_hexdigit()).count();
        if digits == 0 || digits > 16 {
            return Err("bad chunk size");
        }
        chunk_extensions(&l[digits..])?;
        let size = u64::from_str_radix(std::str::from_utf8(&l[..digits]).unwrap_or("x"), 16)
            .map_err(|_| "bad chunk size")?;
        at = next;
        if size == 0 {
            break;
        }
        let size = usize::try_from(size).map_err(|_| "chunk too large")?;
        if buf.len() < at + size + 2 {
            // Not all here: incomplete, unless what is here already breaks the rules.
            if buf.len() > at + size && buf[at + size] != b'\r' {
                return Err("chunk data not followed by CRLF");
            }
            return Ok(None);
        }
        payload.extend_from_slice(&buf[at..at + size]);
        if &buf[at + size..at + size + 2] != b"\r\n" {
            return Err("chunk data not followed by CRLF");
        }
        at += size + 2;
    }
    // Trailer section.
    loop {
        let Some((l, next)) = line(buf, at)? else {
            return Ok(None);
        };
        at = next;
        if l.is_empty() {
            return Ok(Some((payload, at)));
        }
        let colon = l
            .iter()
            .position(|&b| b == b':')
            .ok_or("trailer without colon")?;
        if !token(&l[..colon]) {
            return Err("trailer name not a token");
        }
        let name = l[..colon].to_ascii_lowercase();
        if [&b"content-length"[..], b"transfer-encoding", b"host"].contains(&name.as_slice()) {
            return Err("framing field in trailers");
        }
        if l[colon + 1..]
            .iter()
            .any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f)
        {
            return Err("control character in a trailer");
        }
    }
}

/// `*( ";" token [ "=" ( token / quoted-string ) ] )` with no whitespace.
fn chunk_extensions(mut s: &[u8]) -> Result<(), &'static str> {
    while !s.is_empty() {
        s = s.strip_prefix(b";").ok_or("bad chunk extension")?;
        let name = s.iter().take_while(|&&b| tchar(b)).count();
        if name == 0 {
            return Err("bad chunk extension");
        }
        s = &s[name..];
        if let Some(rest) = s.strip_prefix(b"=") {
            s = rest;
            if let Some(rest) = s.strip_prefix(b"\"") {
                let mut i = 0;
                loop {
                    match rest.get(i) {
                        None => return Err("unterminated quoted extension"),
                        Some(b'"') => break,
                        Some(b'\\') => match rest.get(i + 1) {
                            Some(&b) if b == b'\t' || (b >= 0x20 && b != 0x7f) => i += 2,
                            _ => return Err("bad quoted pair"),
                        },
                        Some(&b) if b == b'\t' || (b >= 0x20 && b != 0x7f) => i += 1,
                        Some(_) => return Err("bad quoted extension"),
                    }
                }
                if i >= rest.len() {
                    return Err("unterminated quoted extension");
                }
                s = &rest[i + 1..];
            } else {
                let v = s.iter().take_while(|&&b| tchar(b)).count();
                if v == 0 {
                    return Err("bad chunk extension");
                }
                s = &s[v..];
            }
        }
    }
    Ok(())
}

fn host(fields: &[(Vec<u8>, &[u8])]) -> Result<Option<Vec<u8>>, &'static str> {
    let hosts: Vec<_> = fields.iter().filter(|f| f.0 == b"host").collect();
    match hosts.as_slice() {
        [] => Ok(None),
        [h] => Ok(Some(h.1.to_vec())),
        _ => Err("more than one Host"),
    }
}

/// The request at the start of `buf`.
pub fn request(buf: &[u8]) -> Step {
    let h = match head(buf, true) {
        Ok(Some(h)) => h,
        Ok(None) => return Step::Incomplete,
        Err(why) => return Step::Invalid(why),
    };
    let parts: Vec<&[u8]> = h.start.split(|&b| b == b' ').collect();
    let [method, target, version] = parts.as_slice() else {
        return Step::Invalid("request line is not three words");
    };
    let http10 = match *version {
        b"HTTP/1.1" => false,
        b"HTTP/1.0" => true,
        _ => return Step::Invalid("version"),
    };
    if !token(method) || target.is_empty() || target.iter().any(|&b| b <= 0x20 || b >= 0x7f) {
        return Step::Invalid("request line");
    }
    let host = match host(&h.fields) {
        Ok(host) => host,
        Err(why) => return Step::Invalid(why),
    };
    if host.is_none() && !http10 {
        return Step::Invalid("no Host");
    }
    let body = match framing(&h.fields, http10) {
        Ok(Body::Close) => Body::Length(0),
        Ok(body) => body,
        Err(why) => return Step::Invalid(why),
    };
    let m = Message {
        head: buf[..h.len].to_vec(),
        method: method.to_vec(),
        target: target.to_vec(),
        status: 0,
        host,
        body: Vec::new(),
    };
    body_then(h.len, buf, body, false, chunked, m)
}

fn response(buf: &[u8], asked: Asked, eof: bool) -> Step {
    let h = match head(buf, false) {
        Ok(Some(h)) => h,
        Ok(None) => return Step::Incomplete,
        Err(why) => return Step::Invalid(why),
    };
    let start = h.start;
    let http10 = match start.get(..9) {
        Some(b"HTTP/1.1 ") => false,
        Some(b"HTTP/1.0 ") => true,
        _ => return Step::Invalid("status line"),
    };
    let code = &start[9..];
    if code.len() < 3
        || !code[..3].iter().all(u8::is_ascii_digit)
        || code.get(3).is_some_and(|&b| b != b' ')
    {
        return Step::Invalid("status code");
    }
    let status = u16::from(code[0] - b'0') * 100
        + u16::from(code[1] - b'0') * 10
        + u16::from(code[2] - b'0');
    if !(100..=599).contains(&status) {
        return Step::Invalid("status code");
    }
    let body = if bodiless(status, asked) {
        Body::Length(0)
    } else {
        match framing(&h.fields, http10) {
            Ok(body) => body,
            Err(why) => return Step::Invalid(why),
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
