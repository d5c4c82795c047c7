//! The same head rules as the HTTP/1.1 relay, for requests hyper has parsed: the authority a
//! request is for (refused when two fields disagree), hop-by-hop fields and every field only
//! Sluice may set removed, `X-Forwarded-For`, `Forwarded` and the activator's revision fields
//! written, and the target in the form the next hop's protocol wants.

use http::header::{self, HeaderName};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, HeaderValue, Request, Response, Uri};

use crate::fields::is_trusted;

/// How a request is rewritten for the next hop (as [`crate::Edit`] for HTTP/1.1).
pub enum Hop<'a> {
    /// The activator's, toward a revision's queue-proxy.
    ToRevision {
        /// The client's address, appended to `X-Forwarded-For`.
        peer_ip: &'a str,
        /// `Knative-Serving-Revision`.
        revision: &'a [u8],
        /// `Knative-Serving-Namespace`.
        namespace: &'a [u8],
    },
    /// The queue-proxy's, toward the user process.
    ToUser {
        /// The client's address, appended to `X-Forwarded-For`.
        peer_ip: &'a str,
        /// The authority for requests that came without one.
        default_host: &'a str,
    },
}

/// The authority a request is for: the target's (HTTP/2's `:authority`, or an absolute-form
/// target), else `Host`. Two `Host` fields, or a `Host` that differs from the target's
/// authority, are refused: the next hop might read either.
pub fn authority<B>(req: &Request<B>) -> Result<Option<Authority>, &'static str> {
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err("more than one Host field");
    }
    let host = match host {
        None => None,
        Some(v) => Some(
            Authority::try_from(v.as_bytes()).map_err(|_| "the Host field is not a valid host")?,
        ),
    };
    match (req.uri().authority(), host) {
        (Some(target), Some(host)) if !target.as_str().eq_ignore_ascii_case(host.as_str()) => {
            Err("the Host field and the request's authority differ")
        }
        (Some(target), _) => Ok(Some(target.clone())),
        (None, host) => Ok(host),
    }
}

/// Fields never forwarded: hop-by-hop ones (RFC 9110 §7.6.1) and HTTP/2's upgrade fields.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::TE,
    HeaderName::from_static("http2-settings"),
    header::HOST,
];

/// Removes the hop-by-hop fields, those named in `Connection`, and every field only Sluice
/// sets. `TE: trailers` is kept for an HTTP/2 next hop (gRPC servers ask for it).
fn strip(headers: &mut HeaderMap, h2_next: bool) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    let trailers = h2_next
        && headers
            .get_all(header::TE)
            .iter()
            .any(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
    for name in HOP_BY_HOP.iter().chain(&named) {
        headers.remove(name);
    }
    let trusted: Vec<HeaderName> = headers
        .keys()
        .filter(|n| is_trusted(n.as_str().as_bytes()))
        .cloned()
        .collect();
    for name in &trusted {
        headers.remove(name);
    }
    if trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

/// Rewrites `req` for the next hop, which speaks HTTP/2 when `h2_next`: the target carries
/// the authority (HTTP/2) or becomes origin-form with a `Host` field (HTTP/1.1). Refused when
/// the request's authority is ambiguous.
pub fn edit<B>(req: &mut Request<B>, hop: &Hop<'_>, h2_next: bool) -> Result<(), &'static str> {
    let authority = authority(req)?;
    let proto_given = req.headers().contains_key("x-forwarded-proto");
    let forwarded_given = req.headers().contains_key("forwarded");
    let proto = req
        .headers()
        .get("x-forwarded-proto")
        .map(|v| v.as_bytes().to_vec());
    let headers = req.headers_mut();
    strip(headers, h2_next);
    // X-Forwarded-For: what came, then the client.
    let (peer_ip, default_host) = match *hop {
        Hop::ToRevision { peer_ip, .. } => (peer_ip, ""),
        Hop::ToUser {
            peer_ip,
            default_host,
        } => (peer_ip, default_host),
    };
    let mut xff = Vec::new();
    for v in headers.get_all("x-forwarded-for") {
        if !v.is_empty() {
            xff.extend_from_slice(v.as_bytes());
            xff.extend_from_slice(b", ");
        }
    }
    xff.extend_from_slice(peer_ip.as_bytes());
    let host = authority
        .as_ref()
        .map(Authority::as_str)
        .unwrap_or(default_host);
    match *hop {
        Hop::ToRevision {
            revision,
            namespace,
            ..
        } => {
            headers.insert("k-proxy-request", HeaderValue::from_static("activator"));
            insert(headers, "knative-serving-revision", revision);
            insert(headers, "knative-serving-namespace", namespace);
            if !proto_given {
                headers.insert("x-forwarded-proto", HeaderValue::from_static("http"));
            }
        }
        Hop::ToUser { .. } if !forwarded_given => {
            let mut out = xff.clone();
            let len = out.len();
            let host = (!host.is_empty()).then_some(host.as_bytes());
            crate::request::forwarded_field(&mut out, 0..len, host, proto.as_deref());
            // `forwarded_field` writes `forwarded: VALUE` after the list.
            let value = out[len + b"forwarded: ".len()..].trim_ascii_end();
            insert(headers, "forwarded", value);
        }
        Hop::ToUser { .. } => {}
    }
    insert(headers, "x-forwarded-for", &xff);
    let path = req
        .uri()
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    if h2_next {
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(Scheme::HTTP);
        parts.authority = Authority::try_from(host).ok();
        parts.path_and_query = Some(path);
        // Without an authority there is none to give (an HTTP/1.0 request without Host).
        if parts.authority.is_none() {
            parts.scheme = None;
        }
        *req.uri_mut() = Uri::from_parts(parts).map_err(|_| "the request target is invalid")?;
        *req.version_mut() = http::Version::HTTP_2;
    } else {
        *req.uri_mut() = Uri::from(path);
        insert(req.headers_mut(), "host", host.as_bytes());
        *req.version_mut() = http::Version::HTTP_11;
    }
    Ok(())
}

/// Removes the mark by which a queue-proxy tells the activator that its user process never
/// got the request ([`crate::response::UNREACHED`]), saying whether it was there. Every hop
/// removes it from what it relays, so only the queue-proxy's own answer can carry it.
pub fn take_unreached<B>(resp: &mut Response<B>) -> bool {
    resp.headers_mut()
        .remove(crate::response::UNREACHED)
        .is_some()
}

/// Sets `name` to `value`; a value that is not a valid field value (it cannot be: each comes
/// from valid fields or Sluice's own names) is left out.
fn insert(headers: &mut HeaderMap, name: &'static str, value: &[u8]) {
    if let Ok(v) = HeaderValue::from_bytes(value) {
        headers.insert(name, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(uri: &str, fields: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::builder().uri(uri);
        for (n, v) in fields {
            b = b.header(*n, *v);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn the_authority_comes_from_the_target_or_host_and_must_agree() {
        let req = request("http://a.example.com/x", &[]);
        assert_eq!(authority(&req).unwrap().unwrap(), "a.example.com");
        let req = request("/x", &[("host", "b.example.com")]);
        assert_eq!(authority(&req).unwrap().unwrap(), "b.example.com");
        let req = request("http://A.example.com/x", &[("host", "a.example.com")]);
        assert!(authority(&req).is_ok());
        let req = request("http://a.example.com/x", &[("host", "evil.example.com")]);
        assert!(authority(&req).unwrap_err().contains("differ"));
        let req = request("/x", &[("host", "a"), ("host", "b")]);
        assert!(authority(&req).unwrap_err().contains("more than one"));
        let req = request("/x", &[("host", "a b")]);
        assert!(authority(&req).is_err());
    }

    #[test]
    fn toward_a_revision_the_activators_fields_replace_what_clients_sent() {
        let mut req = request(
            "http://hello.default.example.com/p?q=1",
            &[
                ("knative-serving-revision", "forged"),
                ("k-network-probe", "queue"),
                ("K_Proxy_Request", "forged"),
                ("x-forwarded-for", "10.0.0.1"),
                ("connection", "x-secret"),
                ("x-secret", "1"),
                ("te", "trailers"),
                ("grpc-timeout", "5S"),
            ],
        );
        let hop = Hop::ToRevision {
            peer_ip: "192.0.2.7",
            revision: b"hello-00001",
            namespace: b"default",
        };
        edit(&mut req, &hop, true).unwrap();
        let h = req.headers();
        assert_eq!(h["knative-serving-revision"], "hello-00001");
        assert_eq!(h["knative-serving-namespace"], "default");
        assert_eq!(h["k-proxy-request"], "activator");
        assert!(!h.contains_key("k-network-probe"));
        assert!(!h.contains_key("k_proxy_request"));
        assert!(!h.contains_key("x-secret"));
        assert!(!h.contains_key("connection"));
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 192.0.2.7");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["te"], "trailers");
        assert_eq!(h["grpc-timeout"], "5S");
        assert!(!h.contains_key("host"));
        assert_eq!(req.uri(), "http://hello.default.example.com/p?q=1");
    }

    #[test]
    fn toward_an_http1_user_process_the_target_is_origin_form_with_host() {
        let mut req = request(
            "http://hello.example.com/p",
            &[("te", "trailers"), ("x-forwarded-proto", "https")],
        );
        let hop = Hop::ToUser {
            peer_ip: "127.0.0.1",
            default_host: "127.0.0.1:8080",
        };
        edit(&mut req, &hop, false).unwrap();
        assert_eq!(req.uri(), "/p");
        let h = req.headers();
        assert_eq!(h["host"], "hello.example.com");
        assert!(!h.contains_key("te"));
        assert_eq!(
            h["forwarded"],
            "for=127.0.0.1;host=hello.example.com;proto=https"
        );
        // Without any authority the user process gets its own address as Host.
        let mut req = request("/p", &[]);
        edit(&mut req, &hop, false).unwrap();
        assert_eq!(req.headers()["host"], "127.0.0.1:8080");
        let mut req = request("/p", &[("host", "a"), ("host", "b")]);
        assert!(edit(&mut req, &hop, true).is_err());
    }
}
