//! Keep-alive connections to upstreams, a stack per address: a request takes the most
//! recently used one (or connects), and gives it back when its exchange ended cleanly with
//! both sides keeping it. Connections idle past the pool's idle time are dropped, on `take`
//! and in a sweep at most every 10 s, together with the stacks of addresses no longer used.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use bytes::BytesMut;
use tokio::net::TcpStream;
use tokio::time::Instant;

/// One connection to an upstream, with bytes read past the last response.
pub struct Conn {
    /// The socket.
    pub stream: TcpStream,
    /// Bytes read and not yet used.
    pub buf: BytesMut,
    /// Whether it came from the pool (so the upstream may have closed it while idle), until
    /// the upstream answers on it.
    pub reused: bool,
    idle_since: Instant,
}

/// The longest a new connection may take: an address that drops packets (a pod that went
/// away) fails here instead of after the kernel's two minutes of SYN retries.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How often, at most, the pool sweeps out idle connections when one comes back.
const SWEEP_EVERY: Duration = Duration::from_secs(10);

/// Idle keep-alive connections by address.
pub struct Pool {
    max_idle: usize,
    idle_for: Duration,
    idle: Mutex<Idle>,
}

struct Idle {
    by_addr: HashMap<SocketAddr, Vec<Conn>>,
    swept: Instant,
}

impl Pool {
    /// A pool keeping at most `max_idle` idle connections per address, each at most
    /// `idle_for`.
    pub fn new(max_idle: usize, idle_for: Duration) -> Self {
        Self {
            max_idle,
            idle_for,
            idle: Mutex::new(Idle {
                by_addr: HashMap::new(),
                swept: Instant::now(),
            }),
        }
    }

    /// The most recently used idle connection to `addr` that the upstream has not closed, or
    /// a new one.
    pub async fn take(&self, addr: SocketAddr) -> std::io::Result<Conn> {
        let now = Instant::now();
        loop {
            let popped = self
                .idle
                .lock()
                .expect("pool lock")
                .by_addr
                .get_mut(&addr)
                .and_then(Vec::pop);
            let Some(conn) = popped else {
                break;
            };
            if now.saturating_duration_since(conn.idle_since) >= self.idle_for {
                continue;
            }
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
        Self::connect(addr).await
    }

    /// A new connection to `addr`, within [`CONNECT_TIMEOUT`].
    pub async fn connect(addr: SocketAddr) -> std::io::Result<Conn> {
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            buf: BytesMut::with_capacity(8 * 1024),
            reused: false,
            idle_since: Instant::now(),
        })
    }

    /// Returns a connection to `addr` whose last exchange ended cleanly.
    pub fn put_back(&self, addr: SocketAddr, mut conn: Conn) {
        if !conn.buf.is_empty() {
            return;
        }
        let now = Instant::now();
        conn.idle_since = now;
        let mut idle = self.idle.lock().expect("pool lock");
        if now.saturating_duration_since(idle.swept) >= SWEEP_EVERY {
            idle.swept = now;
            let idle_for = self.idle_for;
            idle.by_addr.retain(|_, stack| {
                stack.retain(|c| now.saturating_duration_since(c.idle_since) < idle_for);
                !stack.is_empty()
            });
        }
        let stack = idle.by_addr.entry(addr).or_default();
        if stack.len() < self.max_idle {
            stack.push(conn);
        }
    }
}
