//! What the queue-proxy's loopback tests share: the proxy in-process in front of a user
//! process, and a raw client.

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use sluice_queue_proxy::config::Config;
use sluice_queue_proxy::{DrainPolicy, run};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Starts a queue-proxy in front of `user`, with the environment `vars`.
pub async fn queue_proxy(user: SocketAddr, vars: &[(&str, &str)]) -> SocketAddr {
    let mut env: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    env.insert("USER_PORT".into(), user.port().to_string());
    let cfg = Config::from_env(&env).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let drain = DrainPolicy {
        quiet_period: Duration::from_millis(100),
        grace: Duration::from_secs(5),
    };
    tokio::spawn(run(cfg, listener, admin, drain, std::future::pending()));
    addr
}

/// Sends `raw` on a new connection and reads until the proxy closes it.
pub async fn exchange(addr: SocketAddr, raw: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(raw).await.unwrap();
    read_to_close(&mut stream).await
}

/// Everything until the peer closes (a reset counts as a close).
pub async fn read_to_close(stream: &mut (impl AsyncRead + Unpin)) -> String {
    let mut all = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => all.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&all).into_owned()
}

/// Reads until `marker` has been seen.
pub async fn read_until(stream: &mut (impl AsyncRead + Unpin), marker: &str) -> String {
    let mut all = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&all).contains(marker) {
        let n = stream.read(&mut buf).await.unwrap();
        assert!(
            n > 0,
            "closed before {marker:?}: {}",
            String::from_utf8_lossy(&all)
        );
        all.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&all).into_owned()
}

/// The status codes of the responses in `all`, in order.
pub fn statuses(all: &str) -> Vec<u16> {
    all.match_indices("HTTP/1.1 ")
        .filter_map(|(i, _)| all.get(i + 9..i + 12)?.parse().ok())
        .collect()
}
