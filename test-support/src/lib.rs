//! What Sluice's test crates share, so no test carries its own copy: a free loopback port,
//! waits that poll a condition until a deadline (and then fail naming it), the repository's
//! root, and [`apiserver`], a real Kubernetes API server for the Kubernetes tier. Tests that
//! need it are `#[ignore = "Kubernetes tier: run tests/kube/run"]`, which runs exactly those.
//!
//! Owns test harness code. A dev-dependency only: nothing in a shipped binary depends on it,
//! and it must not depend on Sluice's crates (tests bring their own).

pub mod apiserver;

use std::future::Future;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// The repository's root directory.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("test-support is one level below the root")
        .to_path_buf()
}

/// Polls `check` every 100 ms until it holds; past `limit`, panics naming `what` and adding
/// `context()` (logs, say).
pub fn eventually_or(
    limit: Duration,
    what: &str,
    context: impl FnOnce() -> String,
    mut check: impl FnMut() -> bool,
) {
    let start = Instant::now();
    while start.elapsed() < limit {
        if check() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{what}: not true after {limit:?}\n{}", context());
}

/// Polls `check` every 100 ms until it holds; past `limit`, panics naming `what`.
pub fn eventually(limit: Duration, what: &str, check: impl FnMut() -> bool) {
    eventually_or(limit, what, String::new, check);
}

/// [`eventually`] for async checks, on the caller's runtime.
pub async fn eventually_async<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < limit, "{what}: not true after {limit:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
