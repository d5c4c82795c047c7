//! HTTP/1.1 over the daemon's Unix socket: the client side used by the CLI and the activator.

use std::path::Path;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;

/// Why a request over the socket failed.
#[derive(Debug, thiserror::Error)]
pub enum UdsError {
    /// Nothing listens on the socket (no daemon running).
    #[error("cannot connect to {path}: {source}")]
    Connect {
        /// The socket path.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The HTTP exchange failed.
    #[error("admin API: {0}")]
    Http(#[from] hyper::Error),
}

/// Sends one request on a fresh connection to the socket at `path`.
pub async fn request(
    path: &Path,
    req: Request<Full<Bytes>>,
) -> Result<Response<Incoming>, UdsError> {
    let stream = UnixStream::connect(path)
        .await
        .map_err(|source| UdsError::Connect {
            path: path.display().to_string(),
            source,
        })?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    Ok(sender.send_request(req).await?)
}
