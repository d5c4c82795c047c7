//! Keep-alive HTTP/1.1 connections to the user process. There is one destination, so the
//! pool is a stack of idle connections: a request takes the most recently used one (or
//! connects), and its connection goes back on the stack when the response body has been read
//! to the end. A connection whose response was abandoned is closed instead.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Why the user process could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// No connection could be made.
    #[error("connect to {0}: {1}")]
    Connect(SocketAddr, std::io::Error),
    /// The exchange failed.
    #[error(transparent)]
    Http(#[from] hyper::Error),
}

/// Pooled connections to one address.
pub struct Upstream {
    addr: SocketAddr,
    max_idle: usize,
    idle: Mutex<Vec<SendRequest<Incoming>>>,
}

impl Upstream {
    /// A pool for `addr` keeping at most `max_idle` idle connections.
    pub fn new(addr: SocketAddr, max_idle: usize) -> Arc<Self> {
        Arc::new(Self {
            addr,
            max_idle,
            idle: Mutex::new(Vec::new()),
        })
    }

    /// The most recently used idle connection that is still open, once it is ready for
    /// another request.
    async fn take_idle(&self) -> Option<SendRequest<Incoming>> {
        loop {
            let mut conn = self.idle.lock().expect("pool lock").pop()?;
            if !conn.is_closed() && conn.ready().await.is_ok() {
                return Some(conn);
            }
        }
    }

    fn put_back(&self, conn: SendRequest<Incoming>) {
        let mut idle = self.idle.lock().expect("pool lock");
        if idle.len() < self.max_idle {
            idle.push(conn);
        }
    }

    async fn connect(&self) -> Result<SendRequest<Incoming>, UpstreamError> {
        let stream = TcpStream::connect(self.addr)
            .await
            .map_err(|e| UpstreamError::Connect(self.addr, e))?;
        let _ = stream.set_nodelay(true);
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(send)
    }

    /// Sends `req` on an idle connection, or a new one; a request that an idle connection
    /// closed under before it was sent goes out again on a new connection.
    pub async fn send(
        self: &Arc<Self>,
        req: Request<Incoming>,
    ) -> Result<Response<PooledBody>, UpstreamError> {
        let mut req = req;
        if let Some(mut conn) = self.take_idle().await {
            match conn.try_send_request(req).await {
                Ok(resp) => return Ok(self.wrap(resp, conn)),
                Err(mut e) => match e.take_message() {
                    Some(unsent) => req = unsent,
                    None => return Err(e.into_error().into()),
                },
            }
        }
        let mut conn = self.connect().await?;
        let resp = conn.send_request(req).await?;
        Ok(self.wrap(resp, conn))
    }

    fn wrap(
        self: &Arc<Self>,
        resp: Response<Incoming>,
        conn: SendRequest<Incoming>,
    ) -> Response<PooledBody> {
        resp.map(|body| {
            let done = body.is_end_stream();
            let mut pooled = PooledBody {
                inner: body,
                conn: Some((conn, self.clone())),
            };
            if done {
                pooled.release();
            }
            pooled
        })
    }
}

/// A response body that returns its connection to the pool once read to the end.
pub struct PooledBody {
    inner: Incoming,
    conn: Option<(SendRequest<Incoming>, Arc<Upstream>)>,
}

impl PooledBody {
    fn release(&mut self) {
        if let Some((conn, pool)) = self.conn.take() {
            pool.put_back(conn);
        }
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => self.release(),
            Poll::Ready(Some(Ok(_))) if self.inner.is_end_stream() => self.release(),
            Poll::Ready(Some(Err(_))) => self.conn = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
