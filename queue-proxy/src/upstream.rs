//! Keep-alive connections to the user process. There is one destination, so the pool is a
//! stack of idle connections: a request takes the most recently used one (or connects), and
//! gives it back when the exchange ended cleanly with both sides keeping it.

use std::net::SocketAddr;
use std::sync::Mutex;

use bytes::BytesMut;
use tokio::net::TcpStream;

/// One connection to the user process, with bytes read past the last response.
pub struct Conn {
    /// The socket.
    pub stream: TcpStream,
    /// Bytes read and not yet used.
    pub buf: BytesMut,
    /// Whether it came from the pool (so it may have been closed by the user process while
    /// idle).
    pub reused: bool,
}

/// Pooled connections to one address.
pub struct Upstream {
    addr: SocketAddr,
    max_idle: usize,
    idle: Mutex<Vec<Conn>>,
}

impl Upstream {
    /// A pool for `addr` keeping at most `max_idle` idle connections.
    pub fn new(addr: SocketAddr, max_idle: usize) -> Self {
        Self {
            addr,
            max_idle,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// The most recently used idle connection that the user process has not closed, or a new
    /// one.
    pub async fn take(&self) -> std::io::Result<Conn> {
        loop {
            let Some(conn) = self.idle.lock().expect("pool lock").pop() else {
                break;
            };
            // An idle connection has nothing to read; EOF or data means it is unusable.
            let mut probe = [0u8; 1];
            match conn.stream.try_read(&mut probe) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    return Ok(Conn {
                        reused: true,
                        ..conn
                    });
                }
                _ => continue,
            }
        }
        self.connect().await
    }

    /// A new connection.
    pub async fn connect(&self) -> std::io::Result<Conn> {
        let stream = TcpStream::connect(self.addr).await?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            buf: BytesMut::with_capacity(8 * 1024),
            reused: false,
        })
    }

    /// Returns a connection whose last exchange ended cleanly.
    pub fn put_back(&self, conn: Conn) {
        if !conn.buf.is_empty() {
            return;
        }
        let mut idle = self.idle.lock().expect("pool lock");
        if idle.len() < self.max_idle {
            idle.push(conn);
        }
    }
}
