//! The queue-proxy binary as a process, for what only a process shows: its descriptor limit
//! (accept backs off, logs a line a second at most, and serves again once descriptors free
//! up), and its memory and backlog while thousands of clients at once send oversized heads.

mod common;

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{exchange, read_to_close};
use sluice_relay_differential::upstream::Upstream;
use sluice_test_support::free_port;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::time::Instant;

/// The queue-proxy binary in front of `user`, under `ulimit -n` when given, its stderr lines
/// collected.
async fn spawn(
    user: SocketAddr,
    nofile: Option<u32>,
) -> (Child, SocketAddr, Arc<Mutex<Vec<String>>>) {
    let port = free_port();
    let ulimit = nofile.map_or(String::new(), |n| format!("ulimit -n {n} && "));
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!("{ulimit}exec \"$0\""))
        .arg(env!("CARGO_BIN_EXE_queue-proxy"))
        .env("USER_PORT", user.port().to_string())
        .env("QUEUE_SERVING_PORT", port.to_string())
        .env("QUEUE_ADMIN_PORT", free_port().to_string())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn queue-proxy");
    let lines = Arc::new(Mutex::new(Vec::new()));
    let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
    let sink = lines.clone();
    tokio::spawn(async move {
        while let Ok(Some(line)) = stderr.next_line().await {
            sink.lock().unwrap().push(line);
        }
    });
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let start = Instant::now();
    while TcpStream::connect(addr).await.is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "queue-proxy did not listen"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (child, addr, lines)
}

const GET: &[u8] = b"GET /ok HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_descriptor_limit_accept_backs_off_and_serves_again() {
    let user = Upstream::start().await;
    let (_child, qp, log) = spawn(user.addr, Some(48)).await;
    // Far more connections than descriptors: the rest wait in the backlog while accept fails.
    let mut held = Vec::new();
    for _ in 0..150 {
        held.push(TcpStream::connect(qp).await.unwrap());
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let failures = log
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains("Accept failed"))
        .count();
    assert!(
        (1..=5).contains(&failures),
        "{failures} accept-failure lines in 3 s; want 1 to 4 (one a second)"
    );
    drop(held);
    // Serving again, and saying so: the recovery line is rate-limited like the failures, so it
    // may come with a later connection than the first one served.
    let start = Instant::now();
    loop {
        let served = tokio::time::timeout(Duration::from_secs(1), exchange(qp, GET)).await;
        let said = log
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("Accepting connections again"));
        if said && served.is_ok_and(|a| a.contains("GET /ok")) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "not serving, or not saying so, 10 s after descriptors came back: {:?}",
            log.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_oversized_heads_are_refused_within_a_bounded_memory() {
    const CLIENTS: usize = 2000;
    // This test holds a connection per client too.
    sluice_runtime::raise_fd_limit().unwrap();
    let user = Upstream::start().await;
    let (child, qp, _) = spawn(user.addr, None).await;
    let pid = child.id().unwrap();
    let base = rss_kib(pid);
    let peak = Arc::new(Mutex::new(base));
    let sampling = {
        let peak = peak.clone();
        tokio::spawn(async move {
            loop {
                let now = rss_kib(pid);
                {
                    let mut p = peak.lock().unwrap();
                    *p = (*p).max(now);
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    // Each client sends most of a 40 KB head (over the 32 KiB limit) and keeps the connection.
    let mut head = b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: ".to_vec();
    head.resize(40 * 1000, b'a');
    let head = Arc::new(head);
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..CLIENTS {
        let head = head.clone();
        clients.spawn(async move {
            let mut s = TcpStream::connect(qp).await.unwrap();
            let _ = s.write_all(&head).await;
            read_to_close(&mut s).await
        });
    }
    // Meanwhile another client is served.
    let other = exchange(qp, GET).await;
    assert!(other.contains("GET /ok"), "{other}");
    let mut refused = 0;
    while let Some(answer) = clients.join_next().await {
        if answer.unwrap().starts_with("HTTP/1.1 431") {
            refused += 1;
        }
    }
    sampling.abort();
    let grown = peak.lock().unwrap().saturating_sub(base);
    assert_eq!(refused, CLIENTS, "every oversized head gets 431");
    // The head limit (32 KiB) and a few KiB of connection state each, at most.
    let bound = CLIENTS as u64 * 40;
    assert!(
        grown <= bound,
        "RSS grew {grown} KiB for {CLIENTS} oversized heads; bound {bound} KiB"
    );
    assert!(user.targets() == ["/ok"], "{:?}", user.heard());
}
