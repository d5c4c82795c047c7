//! Loopback helpers shared by the benchmark programs.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

/// A free loopback port.
pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// One `GET /` with `Host: host` on a fresh connection, waiting at most `wait` for the
/// answer; its status, or `None` when nothing answered.
pub fn get(target: SocketAddr, host: &str, wait: Duration) -> Option<u16> {
    let mut s = TcpStream::connect_timeout(&target, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(wait)).ok()?;
    let req = format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    std::str::from_utf8(raw.get(9..12)?).ok()?.parse().ok()
}
