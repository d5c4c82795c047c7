//! Readiness of the user process: probed aggressively (every 50 ms) until it first answers,
//! then once a second; the result answers `K-Network-Probe: queue` health checks.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::config::ReadinessProbe;

/// Knative's aggressive probe period.
const AGGRESSIVE: Duration = Duration::from_millis(50);
/// Knative's per-attempt timeout.
const ATTEMPT_TIMEOUT: Duration = Duration::from_millis(100);

/// The user process's readiness as last probed.
#[derive(Debug, Default)]
pub struct Readiness {
    ready: AtomicBool,
}

impl Readiness {
    /// Whether the last probe passed.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Checks the user process once now and records the result if it is ready.
    pub async fn check_now(&self, target: SocketAddr, probe: &ReadinessProbe) {
        if check(target, probe).await {
            self.ready.store(true, Ordering::Release);
        }
    }

    /// Marks not ready (draining).
    pub fn set_not_ready(&self) {
        self.ready.store(false, Ordering::Release);
    }

    /// Probes `target` forever, updating readiness; stop by dropping the task.
    pub async fn run(
        self: Arc<Self>,
        target: SocketAddr,
        probe: ReadinessProbe,
        draining: Arc<AtomicBool>,
    ) {
        loop {
            let ok = check(target, &probe).await && !draining.load(Ordering::Acquire);
            self.ready.store(ok, Ordering::Release);
            tokio::time::sleep(if ok {
                Duration::from_secs(1)
            } else {
                AGGRESSIVE
            })
            .await;
        }
    }
}

/// One probe attempt.
pub async fn check(target: SocketAddr, probe: &ReadinessProbe) -> bool {
    let attempt = async {
        let mut stream = TcpStream::connect(target).await.ok()?;
        let ReadinessProbe::Http(path) = probe else {
            return Some(true);
        };
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {target}\r\nUser-Agent: kube-probe/sluice\r\nConnection: close\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).await.ok()?;
        Some(head.starts_with(b"HTTP/1.") && head[9] == b'2')
    };
    tokio::time::timeout(ATTEMPT_TIMEOUT, attempt)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}
