//! Connections to the next hop for requests hyper serves: one multiplexed HTTP/2 connection
//! per address (made again when it closes), and pooled HTTP/1.1 connections to one address,
//! each lent to one request until its response body has ended.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;

use super::body::{Body, Guarded, boxed};

/// Why a request could not be sent.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// No connection could be made; nothing was sent.
    #[error("{0}")]
    Connect(io::Error),
    /// The connection failed or the next hop answered what HTTP does not allow.
    #[error("{0}")]
    Http(#[from] hyper::Error),
}

/// How long a connection may take to be made.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How often an HTTP/2 connection is pinged while streams are open, and how long the answer
/// may take: a next hop that stopped answering is found within both.
const KEEPALIVE: Duration = Duration::from_secs(20);

async fn connect(addr: SocketAddr) -> Result<TcpStream, SendError> {
    let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| {
            SendError::Connect(io::Error::new(
                io::ErrorKind::TimedOut,
                "connection timed out",
            ))
        })?
        .map_err(SendError::Connect)?;
    let _ = tcp.set_nodelay(true);
    Ok(tcp)
}

/// One HTTP/2 connection per address, shared by every request to it; requests carry bodies
/// of type `B` (what hyper received, or a boxed body for a request that may be sent again).
pub struct H2Conns<B = Incoming> {
    conns: Mutex<HashMap<SocketAddr, http2::SendRequest<B>>>,
}

impl<B> Default for H2Conns<B> {
    fn default() -> Self {
        Self {
            conns: Mutex::new(HashMap::new()),
        }
    }
}

impl<B> H2Conns<B>
where
    B: http_body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    /// No connections yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// A sender on the connection to `addr`, made now if there is none open.
    pub async fn sender(&self, addr: SocketAddr) -> Result<http2::SendRequest<B>, SendError> {
        if let Some(sender) = self.lock().get(&addr).filter(|s| !s.is_closed()) {
            return Ok(sender.clone());
        }
        // Boxed: connecting is rare, and its future is large; every request's future would
        // carry (and every task spawn copy) its size otherwise.
        Box::pin(self.open(addr)).await
    }

    async fn open(&self, addr: SocketAddr) -> Result<http2::SendRequest<B>, SendError> {
        let tcp = connect(addr).await?;
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .keep_alive_interval(KEEPALIVE)
            .keep_alive_timeout(KEEPALIVE)
            .handshake(TokioIo::new(tcp))
            .await?;
        tokio::spawn(async move {
            if let Err(error) = conn.await {
                tracing::debug!(%addr, %error, "HTTP/2 connection ended.");
            }
        });
        let mut conns = self.lock();
        // Another request may have connected meanwhile: keep one connection.
        conns.retain(|_, s| !s.is_closed());
        Ok(conns.entry(addr).or_insert(sender).clone())
    }

    /// Sends `req` to `addr`.
    pub async fn send(
        &self,
        addr: SocketAddr,
        req: Request<B>,
    ) -> Result<Response<Incoming>, SendError> {
        let mut sender = self.sender(addr).await?;
        Ok(sender.send_request(req).await?)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, http2::SendRequest<B>>> {
        self.conns
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Whether the next hop refused the stream (`REFUSED_STREAM`, RFC 9113 §8.7: it did not
/// process it, so it may be sent again), directly or by a GOAWAY that came before it.
pub fn refused_stream(error: &hyper::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if let Some(h2) = e.downcast_ref::<h2::Error>() {
            return h2.reason() == Some(h2::Reason::REFUSED_STREAM);
        }
        source = e.source();
    }
    false
}

/// Carries bytes both ways between two connections hyper switched to another protocol (the
/// client's and the next hop's, after a `101`), until either side ends; both are shut down
/// then.
pub async fn splice(
    client: hyper::upgrade::OnUpgrade,
    next: hyper::upgrade::OnUpgrade,
) -> io::Result<()> {
    let (client, next) = tokio::try_join!(client, next).map_err(io::Error::other)?;
    let (mut client, mut next) = (TokioIo::new(client), TokioIo::new(next));
    tokio::io::copy_bidirectional(&mut client, &mut next).await?;
    Ok(())
}

/// HTTP/1.1 connections to one address: each carries one request at a time, and goes back to
/// the pool when its response body has ended.
pub struct H1Conns {
    addr: SocketAddr,
    idle: Mutex<Vec<http1::SendRequest<Incoming>>>,
    max_idle: usize,
}

/// A connection lent to one exchange: back to the pool when dropped, if it can be reused.
struct Lease {
    pool: Arc<H1Conns>,
    sender: Option<http1::SendRequest<Incoming>>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(sender) = self.sender.take()
            && !sender.is_closed()
        {
            let mut idle = self
                .pool
                .idle
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if idle.len() < self.pool.max_idle {
                idle.push(sender);
            }
        }
    }
}

impl H1Conns {
    /// A pool for `addr` keeping at most `max_idle` idle connections.
    pub fn new(addr: SocketAddr, max_idle: usize) -> Arc<Self> {
        Arc::new(Self {
            addr,
            idle: Mutex::new(Vec::new()),
            max_idle,
        })
    }

    async fn take(&self) -> Result<http1::SendRequest<Incoming>, SendError> {
        loop {
            let next = self
                .idle
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .pop();
            let Some(mut sender) = next else { break };
            // A connection whose last response was cut short closes; one that finished is
            // ready at once.
            if sender.ready().await.is_ok() {
                return Ok(sender);
            }
        }
        // Boxed, as in `H2Conns::sender`.
        Box::pin(self.open()).await
    }

    async fn open(&self) -> Result<http1::SendRequest<Incoming>, SendError> {
        let tcp = connect(self.addr).await?;
        let (sender, conn) = http1::Builder::new().handshake(TokioIo::new(tcp)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender)
    }

    /// Sends `req`, which asks to switch protocols (a WebSocket's `Upgrade`), on a connection
    /// of its own: one answered `101` becomes the tunnel (`hyper::upgrade::on` the response),
    /// so it never goes back to the pool.
    pub async fn send_upgrade(
        &self,
        req: Request<Incoming>,
    ) -> Result<Response<Incoming>, SendError> {
        let tcp = connect(self.addr).await?;
        let (mut sender, conn) = http1::Builder::new().handshake(TokioIo::new(tcp)).await?;
        tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
        });
        Ok(sender.send_request(req).await?)
    }

    /// Sends `req` on a pooled connection; its response body holds the connection.
    pub async fn send(
        self: &Arc<Self>,
        req: Request<Incoming>,
    ) -> Result<Response<Body>, SendError> {
        let mut sender = self.take().await?;
        let resp = sender.send_request(req).await?;
        let lease = Lease {
            pool: self.clone(),
            sender: Some(sender),
        };
        Ok(resp.map(|body| boxed(Guarded::new(body, lease))))
    }
}
