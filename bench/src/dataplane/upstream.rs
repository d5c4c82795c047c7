//! The upstream every path ends at, run as a child process of the benchmark (`dataplane
//! upstream PORT`): `GET /` answers `Hello World!` at once, `GET /slow` after 100 ms (the shape
//! of Knative's dataplane-probe `sleep` service). HTTP/1.1 keep-alive, or cleartext HTTP/2
//! with prior knowledge (`dataplane upstream PORT h2c`), as a container port named h2c.

use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

/// The path that answers after [`SLOW_DELAY`].
pub const SLOW_PATH: &str = "/slow";
/// How long `/slow` waits before it answers.
pub const SLOW_DELAY: Duration = Duration::from_millis(100);

const BODY: &[u8] = b"Hello World!\n";

async fn serve(port: u16, h2c: bool) -> std::io::Result<()> {
    let listener = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port))).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let svc = service_fn(
                move |req: http::Request<hyper::body::Incoming>| async move {
                    if req.uri().path() == SLOW_PATH {
                        tokio::time::sleep(SLOW_DELAY).await;
                    }
                    Ok::<_, Infallible>(
                        Response::builder()
                            .status(StatusCode::OK)
                            .header("content-type", "text/plain")
                            .body(Full::new(Bytes::from_static(BODY)))
                            .expect("static response"),
                    )
                },
            );
            if h2c {
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .max_concurrent_streams(10_000)
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            } else {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            }
        });
    }
}

/// Serves on one thread until killed, in HTTP/2 only when `h2c`.
pub fn main(port: u16, h2c: bool) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(serve(port, h2c))
}
