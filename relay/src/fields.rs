//! Rules for single header fields, shared by request and response heads: tokens, the framing
//! fields' grammar (RFC 9112 §6), hosts (RFC 9110 §7.2), connection options, and which fields
//! only Sluice may set.

/// `tchar` of RFC 9110 §5.6.2.
pub(crate) fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A non-empty `token`.
pub(crate) fn is_token(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|&b| is_tchar(b))
}

/// Whether a head has a line feed that is not part of CRLF. httparse accepts a bare LF as a
/// line end (RFC 9112 §2.2 allows that leniency); a proxy must not, since the next hop may
/// not read the lines the same way.
pub(crate) fn has_bare_lf(head: &[u8]) -> bool {
    let mut prev = 0u8;
    for &b in head {
        if b == b'\n' && prev != b'\r' {
            return true;
        }
        prev = b;
    }
    false
}

/// `Content-Length = 1*DIGIT`, as a u64: no sign, no whitespace inside, no list.
pub(crate) fn content_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() || value.len() > 20 {
        return None;
    }
    let mut n: u64 = 0;
    for &b in value {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    Some(n)
}

/// What a `Transfer-Encoding` value asks for.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Coding {
    /// Exactly `chunked`: the one coding the relay implements.
    Chunked,
    /// `chunked` last, after codings the relay does not implement (501).
    Unsupported,
    /// Not a list of codings ending in a single `chunked` (400).
    Invalid,
}

/// Classifies a `Transfer-Encoding` value (RFC 9112 §6.1, §6.3).
pub(crate) fn transfer_coding(value: &[u8]) -> Coding {
    let mut codings = 0;
    let mut chunked_at = None;
    let mut last_chunked = false;
    for element in value.split(|&b| b == b',') {
        let element = element.trim_ascii();
        if element.is_empty() {
            // Empty list elements are legal but say nothing; in a framing field they only
            // invite two readings.
            return Coding::Invalid;
        }
        // A coding may carry parameters (`gzip;q=1`); only its name matters here.
        let name = element
            .split(|&b| b == b';')
            .next()
            .unwrap_or_default()
            .trim_ascii();
        if !is_token(name) {
            return Coding::Invalid;
        }
        last_chunked = name.eq_ignore_ascii_case(b"chunked");
        if last_chunked {
            if chunked_at.is_some() || name.len() != element.len() {
                return Coding::Invalid;
            }
            chunked_at = Some(codings);
        }
        codings += 1;
    }
    match (last_chunked, codings) {
        (true, 1) => Coding::Chunked,
        (true, _) => Coding::Unsupported,
        (false, _) => Coding::Invalid,
    }
}

/// The elements of a comma-separated list, trimmed, empty ones skipped.
pub(crate) fn list(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|e| !e.is_empty())
}

/// `uri-host [ ":" port ]` (RFC 9110 §7.2); empty is allowed (a target with no authority).
pub(crate) fn is_host(value: &[u8]) -> bool {
    let (host, port) = if let Some(rest) = value.strip_prefix(b"[") {
        // IP-literal: only the characters an IPv6 or IPvFuture address can have.
        let Some(close) = rest.iter().position(|&b| b == b']') else {
            return false;
        };
        let literal = &rest[..close];
        if literal.is_empty()
            || !literal
                .iter()
                .all(|&b| b.is_ascii_hexdigit() || b":.vV".contains(&b) || is_unreserved(b))
        {
            return false;
        }
        match &rest[close + 1..] {
            [] => (&[][..], None),
            [b':', port @ ..] => (&[][..], Some(port)),
            _ => return false,
        }
    } else {
        match value.iter().rposition(|&b| b == b':') {
            Some(i) => (&value[..i], Some(&value[i + 1..])),
            None => (value, None),
        }
    };
    let mut i = 0;
    while i < host.len() {
        let b = host[i];
        if b == b'%' {
            if !host
                .get(i + 1..i + 3)
                .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit))
            {
                return false;
            }
            i += 3;
            continue;
        }
        if !is_unreserved(b) && !b"!$&'()*+,;=".contains(&b) {
            return false;
        }
        i += 1;
    }
    port.is_none_or(|p| p.iter().all(u8::is_ascii_digit))
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~".contains(&b)
}

/// Whether `name` (as sent) equals `lower` (lowercase), ignoring case and taking `_` for `-`,
/// since CGI-style servers (WSGI, Rack, PHP) read `K_Original_Host` as `K-Original-Host`.
fn same_name(name: &[u8], lower: &[u8]) -> bool {
    name.len() == lower.len()
        && name.iter().zip(lower).all(|(&a, &b)| {
            let a = a.to_ascii_lowercase();
            a == b || (a == b'_' && b == b'-')
        })
}

/// Fields about one connection, or framing the relay writes itself: never copied from one hop
/// to the next.
pub(crate) const HOP_BY_HOP: [&str; 6] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "transfer-encoding",
    "content-length",
];

/// Whether `name` is one of `names` (lowercase), in any case.
pub(crate) fn is_one_of(name: &str, names: &[&str]) -> bool {
    names.iter().any(|n| name.eq_ignore_ascii_case(n))
}

/// A field whose name is `Content-Length` or `Transfer-Encoding` with `_` for `-`: a CGI-style
/// server reads it as the framing field the relay did not frame by.
pub(crate) fn is_disguised_framing(name: &[u8]) -> bool {
    name.contains(&b'_')
        && (same_name(name, b"content-length") || same_name(name, b"transfer-encoding"))
}

/// Fields only Sluice sets. A client's copy is removed by the activator before anything else
/// reads it, and the queue-proxy removes every copy before the user process sees the request:
/// `K-Original-Host`, `K-Proxy-Request`, `K-Network-Probe` (answered, never forwarded),
/// `K-Network-Hash`, `K-Kubelet-Probe`, `K-Passthrough-Lb` and every `Knative-Serving-*`.
pub const TRUSTED: [&str; 6] = [
    "k-original-host",
    "k-proxy-request",
    "k-network-probe",
    "k-network-hash",
    "k-kubelet-probe",
    "k-passthrough-lb",
];

/// The prefix of Knative's routing fields (`Knative-Serving-Revision`, `-Namespace`, `-Tag`).
pub const TRUSTED_PREFIX: &str = "knative-serving-";

/// Whether `name` is one of the fields only Sluice sets (see [`TRUSTED`]).
pub fn is_trusted(name: &[u8]) -> bool {
    let prefix = TRUSTED_PREFIX.as_bytes();
    (name.len() > prefix.len() && same_name(&name[..prefix.len()], prefix))
        || TRUSTED.iter().any(|t| same_name(name, t.as_bytes()))
}

/// Fields that cannot come in a trailer section: framing, routing and the fields only Sluice
/// sets (RFC 9110 §6.5.1). `name` is lowercase.
pub(crate) fn forbidden_in_trailers(lower: &[u8]) -> bool {
    [
        &b"content-length"[..],
        b"transfer-encoding",
        b"host",
        b"connection",
        b"keep-alive",
        b"upgrade",
        b"te",
        b"trailer",
        b"expect",
    ]
    .contains(&lower)
        || is_trusted(lower)
}

/// Names listed in `Connection` other than `close`, `keep-alive` and `upgrade`: these fields
/// are hop-by-hop and not forwarded (RFC 9110 §7.6.1). Only so many are kept per head.
#[derive(Default)]
pub(crate) struct ConnectionOptions<'a> {
    names: [&'a [u8]; MAX_OPTIONS],
    len: usize,
}

/// The most connection options a head may list.
const MAX_OPTIONS: usize = 16;

impl<'a> ConnectionOptions<'a> {
    /// Adds `name`; false when there are too many.
    pub(crate) fn push(&mut self, name: &'a [u8]) -> bool {
        if self.len == MAX_OPTIONS {
            return false;
        }
        self.names[self.len] = name;
        self.len += 1;
        true
    }

    /// Whether a field called `name` is listed.
    pub(crate) fn lists(&self, name: &str) -> bool {
        self.names[..self.len]
            .iter()
            .any(|n| n.eq_ignore_ascii_case(name.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_length_is_digits_only() {
        assert_eq!(content_length(b"0"), Some(0));
        assert_eq!(content_length(b"0012"), Some(12));
        assert_eq!(content_length(b"18446744073709551615"), Some(u64::MAX));
        for bad in [
            &b""[..],
            b"+3",
            b"-1",
            b" 3",
            b"3 ",
            b"3,3",
            b"0x10",
            b"18446744073709551616",
            "３".as_bytes(),
        ] {
            assert_eq!(
                content_length(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn only_a_single_chunked_is_implemented() {
        assert_eq!(transfer_coding(b"chunked"), Coding::Chunked);
        assert_eq!(transfer_coding(b"Chunked"), Coding::Chunked);
        assert_eq!(transfer_coding(b"gzip, chunked"), Coding::Unsupported);
        assert_eq!(transfer_coding(b"gzip"), Coding::Invalid);
        assert_eq!(transfer_coding(b"chunked, gzip"), Coding::Invalid);
        assert_eq!(transfer_coding(b"chunked, chunked"), Coding::Invalid);
        assert_eq!(transfer_coding(b"chunked;x=1"), Coding::Invalid);
        assert_eq!(transfer_coding(b""), Coding::Invalid);
        assert_eq!(transfer_coding(b"\"chunked\""), Coding::Invalid);
        assert_eq!(transfer_coding(b"chunked,"), Coding::Invalid);
        assert_eq!(transfer_coding(b", chunked"), Coding::Invalid);
    }

    #[test]
    fn hosts() {
        for good in [
            &b"hello.default.example.com"[..],
            b"h:8080",
            b"127.0.0.1:80",
            b"[::1]:8080",
            b"[::1]",
            b"",
            b"a%20b",
        ] {
            assert!(is_host(good), "{:?}", String::from_utf8_lossy(good));
        }
        for bad in [
            &b"a b"[..],
            b"a/b",
            b"a@b",
            b"a:80x",
            b"[::1",
            b"[::1]x",
            b"a\"b",
            b"a%2",
            b"a\\b",
        ] {
            assert!(!is_host(bad), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn trusted_fields_match_in_any_case_and_with_underscores() {
        for name in [
            &b"K-Original-Host"[..],
            b"k_original_host",
            b"KNATIVE-SERVING-REVISION",
            b"Knative_Serving_Namespace",
            b"knative-serving-tag",
            b"K-Network-Probe",
        ] {
            assert!(is_trusted(name), "{:?}", String::from_utf8_lossy(name));
        }
        for name in [&b"K-Original"[..], b"knative-serving-", b"x-original-host"] {
            assert!(!is_trusted(name), "{:?}", String::from_utf8_lossy(name));
        }
    }

    #[test]
    fn bare_line_feeds_are_found() {
        assert!(!has_bare_lf(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"));
        assert!(has_bare_lf(b"GET / HTTP/1.1\nHost: a\r\n\r\n"));
        assert!(has_bare_lf(b"GET / HTTP/1.1\r\nHost: a\r\n\n"));
        assert!(has_bare_lf(b"\nGET / HTTP/1.1\r\n\r\n"));
    }
}
