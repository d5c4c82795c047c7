//! The activator in-process on loopback: host routing, 404s, retries past a dead replica,
//! and holding a request until its revision has a ready replica.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use sluice_activator::{Routes, run};
use sluice_platform::RevisionKey;
use sluice_platform::routing::{HostRoute, RevisionBackends, RoutingSnapshot, WeightedTarget};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A replica stand-in that answers every request with `body`.
async fn upstream(body: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 {
                        return;
                    }
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if s.write_all(resp.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// An address nothing listens on.
async fn dead() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap()
}

fn snapshot(endpoints: Vec<SocketAddr>) -> RoutingSnapshot {
    let rev = RevisionKey::new("default", "hello-00001");
    let mut s = RoutingSnapshot::default();
    s.hosts.insert(
        "hello.default.localhost".into(),
        HostRoute {
            route: "default/hello".into(),
            targets: vec![WeightedTarget {
                revision: rev.clone(),
                percent: 100,
            }],
            tags: Default::default(),
        },
    );
    s.revisions.insert(
        rev.to_string(),
        RevisionBackends {
            container_concurrency: 0,
            timeout_seconds: 5,
            endpoints,
        },
    );
    s
}

async fn activator(routes: Arc<Routes>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(run(listener, routes, std::future::pending()));
    addr
}

async fn get(addr: SocketAddr, host: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    (
        out[9..12].parse().unwrap(),
        out.split("\r\n\r\n").nth(1).unwrap_or("").to_owned(),
    )
}

#[tokio::test]
async fn unknown_hosts_get_404_naming_them() {
    let routes = Routes::new();
    routes.install(&snapshot(vec![upstream("ok").await]));
    let addr = activator(routes).await;
    assert_eq!(
        get(addr, "hello.default.localhost:8080").await,
        (200, "ok".to_owned())
    );
    let (status, body) = get(addr, "other.default.localhost").await;
    assert_eq!(status, 404);
    assert!(body.contains("other.default.localhost"), "{body}");
}

#[tokio::test]
async fn a_dead_replica_is_skipped_for_requests_without_a_body() {
    let routes = Routes::new();
    routes.install(&snapshot(vec![dead().await, upstream("alive").await]));
    let addr = activator(routes).await;
    for _ in 0..30 {
        assert_eq!(
            get(addr, "hello.default.localhost").await,
            (200, "alive".to_owned())
        );
    }
}

#[tokio::test]
async fn a_request_is_held_until_a_replica_is_ready() {
    let routes = Routes::new();
    routes.install(&snapshot(vec![]));
    let addr = activator(routes.clone()).await;
    let held = tokio::spawn(get(addr, "hello.default.localhost"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!held.is_finished(), "answered without a replica");
    routes.install(&snapshot(vec![upstream("woke").await]));
    assert_eq!(held.await.unwrap(), (200, "woke".to_owned()));
}
