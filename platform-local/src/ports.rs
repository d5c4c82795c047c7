//! Free loopback ports for replicas.

use std::net::{Ipv4Addr, TcpListener};

/// Asks the kernel for a free port on 127.0.0.1. The port is released before it is returned,
/// so a process started right after can bind it.
pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}
