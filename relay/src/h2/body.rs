//! Response bodies on the HTTP/2 path: one boxed type for relayed and generated bodies, a
//! body that holds something (a replica slot, an in-flight count, a pooled connection) until
//! it ends, and the proxies' own answers, in gRPC's form for gRPC requests.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body::{Frame, SizeHint};
use http_body_util::{BodyExt, Empty, Full};

/// Why a body ended early: hyper's error, or the proxy's own limit.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The connection or the peer failed.
    #[error(transparent)]
    Http(#[from] hyper::Error),
    /// No frame came for this long (the revision's `idleTimeoutSeconds`).
    #[error("no byte of the response for {0:?}: the revision's idle timeout")]
    Idle(std::time::Duration),
}

/// Every response body the HTTP/2 path sends.
pub type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, BodyError>;

/// `body`, boxed.
pub fn boxed<B>(body: B) -> Body
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BodyError>,
{
    body.map_err(Into::into).boxed_unsync()
}

/// An empty body.
pub fn empty() -> Body {
    boxed(Empty::new().map_err(BodyError::from))
}

impl From<Infallible> for BodyError {
    fn from(never: Infallible) -> Self {
        match never {}
    }
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

pin_project_lite::pin_project! {
    /// `inner`, ended with [`BodyError::Idle`] when no frame of it comes for `limit` (so
    /// hyper resets the stream, or closes an HTTP/1.1 connection, rather than wait).
    pub struct Idle<B> {
        #[pin]
        inner: B,
        limit: Duration,
        #[pin]
        timer: tokio::time::Sleep,
    }
}

impl<B> Idle<B> {
    /// `inner`, allowed `limit` between frames, starting now.
    pub fn new(inner: B, limit: Duration) -> Self {
        Self {
            inner,
            limit,
            timer: tokio::time::sleep(limit),
        }
    }
}

impl<B> http_body::Body for Idle<B>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BodyError>,
{
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.project();
        match this.inner.poll_frame(cx) {
            Poll::Ready(frame) => {
                this.timer.reset(tokio::time::Instant::now() + *this.limit);
                Poll::Ready(frame.map(|r| r.map_err(Into::into)))
            }
            Poll::Pending => match this.timer.poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(BodyError::Idle(*this.limit)))),
                Poll::Pending => Poll::Pending,
            },
        }
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
        Full::new(Bytes::copy_from_slice(text.as_bytes())).map_err(BodyError::from),
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

    /// Frames sent on a channel, as a body.
    struct Frames(tokio::sync::mpsc::Receiver<Bytes>);

    impl http_body::Body for Frames {
        type Data = Bytes;
        type Error = Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            self.0.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_body_ends_in_an_error_a_limit_after_its_last_frame() {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let limit = Duration::from_secs(1);
        let mut body = std::pin::pin!(Idle::new(Frames(rx), limit));
        let start = tokio::time::Instant::now();
        for i in 0..5u64 {
            // Each frame comes 900 ms after the one before: never idle for the limit.
            tokio::time::sleep(Duration::from_millis(900)).await;
            tx.send(Bytes::from(i.to_string())).await.unwrap();
            let frame = body.frame().await.unwrap().unwrap();
            assert_eq!(frame.into_data().unwrap(), i.to_string());
        }
        let last = tokio::time::Instant::now();
        assert_eq!(last - start, Duration::from_millis(4500));
        // Then nothing: an error exactly the limit after the last frame.
        let end = body.frame().await.unwrap();
        assert!(
            matches!(end, Err(BodyError::Idle(l)) if l == limit),
            "{end:?}"
        );
        assert_eq!(tokio::time::Instant::now() - last, limit);
        // A body that ends is not an error.
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1);
        drop(tx);
        let mut body = std::pin::pin!(Idle::new(Frames(rx), limit));
        assert!(body.frame().await.is_none());
    }

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
