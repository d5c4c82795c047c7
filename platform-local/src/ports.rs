//! Loopback ports for replicas.
//!
//! A port the kernel picks for `bind(0)` comes from its ephemeral range, and is released
//! before the child binds it: meanwhile any outgoing connection on the machine (the daemon's
//! own scrapes and probes among them) may take it, and the child fails with `Address already
//! in use`. So replicas get ports from a [`PortPool`] outside the ephemeral range, which the
//! kernel never hands out on its own, and the pool never gives a port held by a running
//! replica to another. Only a process that binds a fixed port in that range can still take
//! one; the supervisor's probe catches that (a probe counts only from the replica's own
//! process tree).

use std::collections::HashSet;
use std::net::{Ipv4Addr, TcpListener};
use std::sync::{Arc, Mutex};

/// Where pooled ports start when the ephemeral range leaves room below it.
const POOL_FLOOR: u16 = 10_000;

/// The fewest ports worth pooling; with less room the kernel's own choice is used.
const POOL_MIN: u32 = 1_000;

/// Asks the kernel for a free port on 127.0.0.1. The port is released before it is returned,
/// so a process started right after can bind it (and so can anything else).
pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

/// Ports handed to replicas, from a range the kernel does not use for ephemeral ports.
#[derive(Clone)]
pub struct PortPool {
    state: Arc<Mutex<PoolState>>,
}

struct PoolState {
    /// The pool's range, inclusive; `None` when the machine leaves no room (kernel's choice).
    range: Option<(u16, u16)>,
    next: u16,
    held: HashSet<u16>,
}

/// A port taken from the pool, given back when dropped.
pub struct PooledPort {
    port: u16,
    pool: Option<Arc<Mutex<PoolState>>>,
}

impl PooledPort {
    /// The port number.
    pub fn get(&self) -> u16 {
        self.port
    }
}

impl Drop for PooledPort {
    fn drop(&mut self) {
        if let Some(pool) = &self.pool {
            pool.lock().expect("port pool lock").held.remove(&self.port);
        }
    }
}

/// The kernel's ephemeral port range (`net.ipv4.ip_local_port_range`).
fn ephemeral_range() -> (u16, u16) {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| {
            let mut parts = text.split_whitespace().map(str::parse::<u16>);
            Some((parts.next()?.ok()?, parts.next()?.ok()?))
        })
        .unwrap_or((32_768, 60_999))
}

/// A range outside `ephemeral` with room for at least [`POOL_MIN`] ports.
fn pool_range(ephemeral: (u16, u16)) -> Option<(u16, u16)> {
    let (lo, hi) = ephemeral;
    if u32::from(lo).saturating_sub(u32::from(POOL_FLOOR)) >= POOL_MIN {
        return Some((POOL_FLOOR, lo - 1));
    }
    if u32::from(u16::MAX).saturating_sub(u32::from(hi)) >= POOL_MIN {
        return Some((hi + 1, u16::MAX));
    }
    None
}

impl Default for PortPool {
    fn default() -> Self {
        Self::new()
    }
}

impl PortPool {
    /// A pool below (or above) this machine's ephemeral range.
    pub fn new() -> Self {
        Self::with_range(pool_range(ephemeral_range()))
    }

    /// A pool over `range` (inclusive); `None` leaves the choice to the kernel.
    pub fn with_range(range: Option<(u16, u16)>) -> Self {
        Self {
            state: Arc::new(Mutex::new(PoolState {
                range,
                // From a random point: daemons of several homes on one machine each go round
                // the range from elsewhere, rarely offering the same port at the same time.
                next: range.map_or(0, |(lo, hi)| fastrand::u16(lo..=hi)),
                held: HashSet::new(),
            })),
        }
    }

    /// A port no replica holds and nothing on 127.0.0.1 listens on now. Ports are handed out
    /// round the range, so one just given back is the last to be used again.
    pub fn take(&self) -> std::io::Result<PooledPort> {
        let mut state = self.state.lock().expect("port pool lock");
        let Some((lo, hi)) = state.range else {
            return free_port().map(|port| PooledPort { port, pool: None });
        };
        for _ in 0..=u32::from(hi - lo) {
            let port = state.next;
            state.next = if port >= hi { lo } else { port + 1 };
            if state.held.contains(&port) {
                continue;
            }
            if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
                state.held.insert(port);
                return Ok(PooledPort {
                    port,
                    pool: Some(self.state.clone()),
                });
            }
        }
        Err(std::io::Error::new(
            std::io::ErrorKind::AddrInUse,
            format!("every loopback port from {lo} to {hi} is in use"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pool_lies_outside_the_ephemeral_range() {
        assert_eq!(pool_range((32_768, 60_999)), Some((10_000, 32_767)));
        assert_eq!(pool_range((1_024, 60_999)), Some((61_000, 65_535)));
        assert_eq!(pool_range((1_024, 65_000)), None);
    }

    #[test]
    fn held_ports_are_not_handed_out_twice_and_come_back_when_dropped() {
        // A small range high in the pool's space, so the test rarely meets a real listener.
        let pool = PortPool::with_range(Some((31_000, 31_002)));
        let ports: Vec<PooledPort> = (0..3).filter_map(|_| pool.take().ok()).collect();
        let numbers: HashSet<u16> = ports.iter().map(PooledPort::get).collect();
        assert_eq!(numbers.len(), ports.len(), "a port was handed out twice");
        if ports.len() == 3 {
            assert!(pool.take().is_err(), "a fourth port from a range of three");
        }
        drop(ports);
        let again = pool.take().unwrap();
        assert!((31_000..=31_002).contains(&again.get()));
        assert!(pool.state.lock().unwrap().held.contains(&again.get()));
    }

    #[test]
    fn a_port_something_listens_on_is_skipped() {
        let busy = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = busy.local_addr().unwrap().port();
        let pool = PortPool::with_range(Some((port, port)));
        assert!(pool.take().is_err());
        drop(busy);
        assert_eq!(pool.take().unwrap().get(), port);
    }
}
