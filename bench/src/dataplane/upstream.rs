//! The upstream every path ends at, run as a child process of the benchmark (`dataplane
//! upstream PORT`): `GET /` answers `Hello World!` at once, `GET /slow` after 100 ms (the shape
//! of Knative's dataplane-probe `sleep` service). HTTP/1.1 keep-alive.

use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// The path that answers after [`SLOW_DELAY`].
pub const SLOW_PATH: &str = "/slow";
/// How long `/slow` waits before it answers.
pub const SLOW_DELAY: Duration = Duration::from_millis(100);

const BODY: &[u8] = b"Hello World!\n";

async fn serve(port: u16) -> std::io::Result<()> {
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
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

/// Serves on one thread until killed.
pub fn main(port: u16) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(serve(port))
}
