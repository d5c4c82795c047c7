//! The small HTTP/1.1 server behind admin ports (`/metrics`, `/healthz`, `/readyz`), the
//! controller's stats endpoint and the local daemon's socket: hyper, connections accepted
//! through an [`Acceptor`] (bounded, with backoff), and a 30 s limit on reading each request
//! head. It is not on the request path; the proxies' own relay is.

use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::accept::{Acceptor, Listener};

/// How long a client may take to send a request head (hyper's default once a timer is set).
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves every connection `acceptor` takes with `handle`, forever; stop it by dropping (or
/// aborting) the task.
pub async fn serve<L, F, Fut, B>(mut acceptor: Acceptor<L>, handle: F)
where
    L: Listener,
    L::Io: AsyncRead + AsyncWrite + Unpin,
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<B>> + Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    loop {
        let (io, _, place) = acceptor.accept().await;
        let handle = handle.clone();
        let svc = service_fn(move |req| {
            let answer = handle(req);
            async move { Ok::<_, Infallible>(answer.await) }
        });
        tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEAD_TIMEOUT)
                .serve_connection(TokioIo::new(io), svc)
                .await;
            drop(place);
        });
    }
}

/// A plain-text response.
pub fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// Prometheus text exposition of `body`.
pub fn metrics(body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut resp = text(StatusCode::OK, body);
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    resp
}
