//! Response bodies on the HTTP/2 path: one boxed type for relayed and generated bodies, a
//! body that holds something (a replica slot, an in-flight count, a pooled connection) until
//! it ends, and the proxies' own answers, in gRPC's form for gRPC requests.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body::{Frame, SizeHint};
use http_body_util::{BodyExt, Empty, Full};

/// Every response body the HTTP/2 path sends.
pub type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, hyper::Error>;

/// `body`, boxed.
pub fn boxed<B>(body: B) -> Body
where
    B: http_body::Body<Data = Bytes, Error = hyper::Error> + Send + 'static,
{
    body.boxed_unsync()
}

/// An empty body.
pub fn empty() -> Body {
    boxed(Empty::new().map_err(never))
}

fn never(never: Infallible) -> hyper::Error {
    match never {}
}

pin_project_lite::pin_project! {
    /// `inner`, holding `guard` until the body has ended or is dropped.
    pub struct Guarded<B, G> {
        #[pin]
        inner: B,
        guard: Option<G>,
    }
}

impl<B, G> Guarded<B, G> {
    /// `inner` holding `guard`.
    pub fn new(inner: B, guard: G) -> Self {
        Self {
            inner,
            guard: Some(guard),
        }
    }
}

impl<B: http_body::Body, G> http_body::Body for Guarded<B, G> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = this.inner.poll_frame(cx);
        if matches!(frame, Poll::Ready(None | Some(Err(_)))) {
            this.guard.take();
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Whether a request is a gRPC call (`content-type: application/grpc` or `application/grpc+…`).
pub fn is_grpc<B>(req: &Request<B>) -> bool {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            let v = v.as_bytes();
            v.len() >= 16
                && v[..16].eq_ignore_ascii_case(b"application/grpc")
                && matches!(v.get(16), None | Some(b'+' | b';'))
        })
}

/// The gRPC status code for a proxy's own HTTP status (gRPC's HTTP-to-status mapping, with
/// 504 as `DEADLINE_EXCEEDED`).
fn grpc_code(status: u16) -> u8 {
    match status {
        400 => 13,             // INTERNAL
        401 => 16,             // UNAUTHENTICATED
        403 => 7,              // PERMISSION_DENIED
        404 => 12,             // UNIMPLEMENTED
        429 | 502 | 503 => 14, // UNAVAILABLE
        504 => 4,              // DEADLINE_EXCEEDED
        _ => 2,                // UNKNOWN
    }
}

/// `grpc-message`'s percent-encoding: printable ASCII but `%` stays, the rest is `%XX`.
fn grpc_message(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for &b in text.trim_end().as_bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The proxy's own answer: `status` with `text`, or, for a gRPC call, gRPC's trailers-only
/// response (HTTP 200 with `grpc-status` and `grpc-message`), which gRPC clients read as the
/// call's status.
pub fn answer(status: u16, text: &str, grpc: bool) -> Response<Body> {
    if grpc {
        let mut resp = Response::new(empty());
        let headers = resp.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        headers.insert(
            "grpc-status",
            HeaderValue::from(u16::from(grpc_code(status))),
        );
        if let Ok(message) = HeaderValue::from_str(&grpc_message(text)) {
            headers.insert("grpc-message", message);
        }
        return resp;
    }
    let mut resp = Response::new(boxed(
        Full::new(Bytes::copy_from_slice(text.as_bytes())).map_err(never),
    ));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// As [`answer`], marked [`UNREACHED`](crate::response::UNREACHED): the queue-proxy's answer
/// for a request its user process never got, which the activator may send to another replica.
pub fn answer_unreached(status: u16, text: &str, grpc: bool) -> Response<Body> {
    let mut resp = answer(status, text, grpc);
    resp.headers_mut()
        .insert(crate::response::UNREACHED, HeaderValue::from_static("1"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(content_type: &str) -> Request<()> {
        Request::builder()
            .header("content-type", content_type)
            .body(())
            .unwrap()
    }

    #[test]
    fn grpc_is_told_by_its_content_type() {
        assert!(is_grpc(&request("application/grpc")));
        assert!(is_grpc(&request("application/grpc+proto")));
        assert!(is_grpc(&request("Application/GRPC;charset=utf-8")));
        assert!(!is_grpc(&request("application/grpc-web")));
        assert!(!is_grpc(&request("application/json")));
        assert!(!is_grpc(&Request::new(())));
    }

    #[test]
    fn grpc_calls_get_their_status_in_a_trailers_only_response() {
        let resp = answer(503, "revision x is overloaded: 100% busy\n", true);
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["grpc-status"], "14");
        assert_eq!(
            resp.headers()["grpc-message"],
            "revision x is overloaded: 100%25 busy"
        );
        assert!(http_body::Body::is_end_stream(resp.body()));
        assert_eq!(
            answer(504, "request timeout", true).headers()["grpc-status"],
            "4"
        );
        assert_eq!(
            answer(404, "no service", true).headers()["grpc-status"],
            "12"
        );
        let plain = answer(502, "error", false);
        assert_eq!(plain.status(), 502);
        assert_eq!(plain.headers()["content-type"], "text/plain; charset=utf-8");
    }
}
