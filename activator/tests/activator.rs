//! The activator in-process on loopback: host routing, 404s, retries past a dead replica,
//! holding a request until its revision has a ready replica (and telling the autoscaler),
//! never more than containerConcurrency per replica while buffered, the queue bound; fields
//! only Sluice sets removed from clients' requests, absolute targets routed by their own
//! authority, and no request smuggled through both hops to a strict user process.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use sluice_activator::{Options, Routes, run};
use sluice_platform::RevisionKey;
use sluice_platform::routing::{HostRoute, RevisionBackends, RoutingSnapshot, WeightedTarget};
use sluice_relay_differential::upstream::{Heard, Upstream};
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

/// A replica stand-in that takes 100 ms per request and records the most requests it ever had
/// at once.
async fn slow_upstream(peak: Arc<AtomicU32>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let now = Arc::new(AtomicU32::new(0));
    tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            let (now, peak) = (now.clone(), peak.clone());
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 {
                        return;
                    }
                    let in_flight = now.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(in_flight, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    now.fetch_sub(1, Ordering::SeqCst);
                    let resp = "HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nslow";
                    if s.write_all(resp.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

fn snapshot(endpoints: Vec<SocketAddr>) -> RoutingSnapshot {
    buffered_snapshot(endpoints, 0, false)
}

fn buffered_snapshot(endpoints: Vec<SocketAddr>, cc: u32, buffered: bool) -> RoutingSnapshot {
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
        rev.clone(),
        RevisionBackends {
            container_concurrency: cc,
            timeout_seconds: 5,
            endpoints,
            buffered,
        },
    );
    s
}

async fn activator(routes: Arc<Routes>) -> SocketAddr {
    activator_with(routes, Options::default()).await
}

async fn activator_with(routes: Arc<Routes>, options: Options) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(run(listener, routes, options, std::future::pending()));
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

/// Waits until the activator holds `n` requests for hello-00001 (bounded).
async fn until_held(routes: &Routes, n: u32) {
    let key = RevisionKey::new("default", "hello-00001");
    for _ in 0..500 {
        if routes.table().revision(&key).unwrap().demand.held() == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the activator never held {n} requests");
}

#[tokio::test]
async fn a_request_is_held_until_a_replica_is_ready() {
    let routes = Routes::new();
    routes.install(&snapshot(vec![]));
    let addr = activator(routes.clone()).await;
    let held = tokio::spawn(get(addr, "hello.default.localhost"));
    until_held(&routes, 1).await;
    assert!(!held.is_finished(), "answered without a replica");
    routes.install(&snapshot(vec![upstream("woke").await]));
    assert_eq!(held.await.unwrap(), (200, "woke".to_owned()));
}

#[tokio::test]
async fn a_request_at_zero_pokes_the_autoscaler_once_per_period() {
    let routes = Routes::new();
    routes.install(&snapshot(vec![]));
    let (pokes, mut poked) = tokio::sync::mpsc::unbounded_channel();
    let options = Options {
        pokes: Some(pokes),
        ..Options::default()
    };
    let addr = activator_with(routes.clone(), options).await;
    let first = tokio::spawn(get(addr, "hello.default.localhost"));
    let second = tokio::spawn(get(addr, "hello.default.localhost"));
    let key = tokio::time::timeout(Duration::from_secs(2), poked.recv())
        .await
        .expect("no poke")
        .unwrap();
    assert_eq!(key, RevisionKey::new("default", "hello-00001"));
    until_held(&routes, 2).await;
    assert!(poked.try_recv().is_err(), "one poke per reporting period");
    // The periodic report carries the held requests.
    let stats = sluice_activator::report::collect(&routes);
    assert_eq!(stats.len(), 1);
    assert!(stats[0].held > 0.0 && stats[0].held <= 2.0, "{stats:?}");
    assert_eq!(stats[0].held_requests, 2.0);
    routes.install(&snapshot(vec![upstream("up").await]));
    assert_eq!(first.await.unwrap().0, 200);
    assert_eq!(second.await.unwrap().0, 200);
}

#[tokio::test]
async fn buffered_replicas_never_get_more_than_their_concurrency() {
    for cc in [1, 2, 5] {
        let peaks: Vec<Arc<AtomicU32>> = (0..2).map(|_| Arc::default()).collect();
        let mut endpoints = Vec::new();
        for p in &peaks {
            endpoints.push(slow_upstream(p.clone()).await);
        }
        let routes = Routes::new();
        routes.install(&buffered_snapshot(endpoints, cc, true));
        let addr = activator(routes).await;
        let clients: Vec<_> = (0..30)
            .map(|_| tokio::spawn(get(addr, "hello.default.localhost")))
            .collect();
        for c in clients {
            assert_eq!(c.await.unwrap(), (200, "slow".to_owned()));
        }
        for p in &peaks {
            let peak = p.load(Ordering::SeqCst);
            assert!(
                peak >= 1 && peak <= cc,
                "cc {cc}: a replica had {peak} at once"
            );
        }
    }
}

#[tokio::test]
async fn past_the_queue_bound_requests_get_503_naming_the_revision() {
    let routes = Routes::new();
    routes.install(&snapshot(vec![]));
    let options = Options {
        queue_depth: 2,
        ..Options::default()
    };
    let addr = activator_with(routes.clone(), options).await;
    let held: Vec<_> = (0..2)
        .map(|_| tokio::spawn(get(addr, "hello.default.localhost")))
        .collect();
    until_held(&routes, 2).await;
    let (status, body) = get(addr, "hello.default.localhost").await;
    assert_eq!(status, 503);
    assert!(
        body.contains("default/hello-00001") && body.contains("2 requests are already waiting"),
        "{body}"
    );
    routes.install(&snapshot(vec![upstream("ok").await]));
    for h in held {
        assert_eq!(h.await.unwrap().0, 200);
    }
}

/// Sends `raw` on a new connection to `addr` and reads until it closes.
async fn send(addr: SocketAddr, raw: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(raw).await.unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn fields_only_sluice_sets_are_removed_from_client_requests() {
    let replica = Upstream::start().await;
    let routes = Routes::new();
    routes.install(&snapshot(vec![replica.addr]));
    let addr = activator(routes).await;
    let answer = send(
        addr,
        b"GET /t HTTP/1.1\r\nHost: hello.default.localhost\r\nK-Original-Host: evil\r\n\
          K_Original_Host: evil\r\nKnative-Serving-Revision: evil\r\nknative-serving-namespace: evil\r\n\
          K-Proxy-Request: evil\r\nK-Network-Probe: queue\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(!answer.contains("evil"), "{answer}");
    assert!(
        !answer.to_ascii_lowercase().contains("k-network-probe"),
        "{answer}"
    );
    for field in [
        "k-proxy-request: activator\r\n",
        "knative-serving-revision: hello-00001\r\n",
        "knative-serving-namespace: default\r\n",
    ] {
        assert!(answer.contains(field), "{field} missing: {answer}");
    }
}

#[tokio::test]
async fn an_absolute_target_is_routed_by_its_own_authority() {
    let replica = Upstream::start().await;
    let routes = Routes::new();
    routes.install(&snapshot(vec![replica.addr]));
    let addr = activator(routes).await;
    let answer = send(
        addr,
        b"GET http://hello.default.localhost/x?y=1 HTTP/1.1\r\nHost: other.default.localhost\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(
        answer.contains("GET /x?y=1 host=hello.default.localhost"),
        "{answer}"
    );
    let answer = send(
        addr,
        b"GET http://other.default.localhost/ HTTP/1.1\r\nHost: hello.default.localhost\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
    let answer = send(
        addr,
        b"GET / HTTP/1.1\r\nHost: other.default.localhost\r\nHost: hello.default.localhost\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert_eq!(replica.targets(), ["/x?y=1"]);
}

/// The activator in front of an in-process queue-proxy in front of `user`.
async fn two_hops(user: SocketAddr) -> SocketAddr {
    let env: std::collections::HashMap<String, String> =
        [("USER_PORT".to_owned(), user.port().to_string())].into();
    let cfg = sluice_queue_proxy::config::Config::from_env(&env).unwrap();
    let qp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let qp_addr = qp.local_addr().unwrap();
    let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let drain = sluice_queue_proxy::DrainPolicy {
        quiet_period: Duration::from_millis(100),
        grace: Duration::from_secs(1),
    };
    tokio::spawn(sluice_queue_proxy::run(
        cfg,
        qp,
        admin,
        drain,
        std::future::pending(),
    ));
    let routes = Routes::new();
    routes.install(&snapshot(vec![qp_addr]));
    activator(routes).await
}

#[tokio::test]
async fn a_smuggled_request_never_crosses_both_hops() {
    let user = Upstream::start().await;
    let front = two_hops(user.addr).await;
    let head =
        b"POST / HTTP/1.1\r\nHost: hello.default.localhost\r\nTransfer-Encoding: chunked\r\n\r\n";
    let smuggled = b"0\n\r\nGET /smuggled HTTP/1.1\r\nHost: hello.default.localhost\r\n\r\n";
    // Within what is read ahead: refused before either hop forwards a byte.
    let mut small = head.to_vec();
    small.extend_from_slice(b"5\r\nhello\r\n");
    small.extend_from_slice(smuggled);
    let answer = send(front, &small).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    // Past it: the head has crossed both hops, and the bad chunk cuts both connections.
    let mut big = head.to_vec();
    for _ in 0..20 {
        big.extend_from_slice(b"400\r\n");
        big.extend_from_slice(&[b'x'; 1024]);
        big.extend_from_slice(b"\r\n");
    }
    big.extend_from_slice(smuggled);
    let answer = send(front, &big).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    for _ in 0..3 {
        let victim = send(
            front,
            b"GET /victim HTTP/1.1\r\nHost: hello.default.localhost\r\nCookie: mine\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(
            victim.contains("GET /victim host=hello.default.localhost"),
            "{victim}"
        );
        assert!(victim.contains("Cookie: mine"), "{victim}");
    }
    assert_eq!(user.targets(), ["/victim"; 3], "{:?}", user.heard());
    assert!(
        user.heard().iter().any(|h| matches!(h, Heard::Cut { .. })),
        "the user process's connection was not cut: {:?}",
        user.heard()
    );
}
