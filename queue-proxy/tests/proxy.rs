//! The queue-proxy in-process on loopback sockets, in front of a real HTTP upstream.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use sluice_queue_proxy::config::Config;
use sluice_queue_proxy::{DrainPolicy, run};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

/// An upstream that answers `overlap` with 500 if another request is in flight, sleeps
/// `?ms=N` milliseconds before answering, and with `?after=N` sends its head at once and its
/// body N milliseconds later.
async fn upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let active = Arc::new(AtomicUsize::new(0));
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            let active = active.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                loop {
                    let Ok(n) = stream.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    let head = String::from_utf8_lossy(&buf[..n]).to_string();
                    let overlapped = active.fetch_add(1, Ordering::SeqCst) > 0;
                    let ms: u64 = head
                        .split("ms=")
                        .nth(1)
                        .and_then(|r| r.split(' ').next())
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    active.fetch_sub(1, Ordering::SeqCst);
                    let forwarded = head
                        .lines()
                        .find(|l| l.to_ascii_lowercase().starts_with("forwarded:"))
                        .unwrap_or("")
                        .to_owned();
                    let (status, body) = if overlapped {
                        ("500 Internal Server Error", "overlap".to_owned())
                    } else {
                        ("200 OK", forwarded)
                    };
                    let after: Option<u64> = head
                        .split("after=")
                        .nth(1)
                        .and_then(|r| r.split(' ').next())
                        .and_then(|v| v.parse().ok());
                    let body = if after.is_some() {
                        "late body".to_owned()
                    } else {
                        body
                    };
                    let resp_head = format!(
                        "HTTP/1.1 {status}\r\ncontent-length: {}\r\n\r\n",
                        body.len()
                    );
                    if stream.write_all(resp_head.as_bytes()).await.is_err() {
                        return;
                    }
                    if let Some(ms) = after {
                        tokio::time::sleep(Duration::from_millis(ms)).await;
                    }
                    if stream.write_all(body.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

struct QueueProxy {
    addr: SocketAddr,
    admin: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    done: tokio::task::JoinHandle<std::io::Result<()>>,
}

async fn queue_proxy(user: SocketAddr, vars: &[(&str, &str)]) -> QueueProxy {
    let mut env: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| ((*k).into(), (*v).into()))
        .collect();
    env.insert("USER_PORT".into(), user.port().to_string());
    let cfg = Config::from_env(&env).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (addr, admin_addr) = (listener.local_addr().unwrap(), admin.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    let drain = DrainPolicy {
        quiet_period: Duration::from_millis(100),
        grace: Duration::from_secs(5),
    };
    let done = tokio::spawn(run(cfg, listener, admin, drain, async {
        let _ = stopped.await;
    }));
    let qp = QueueProxy {
        addr,
        admin: admin_addr,
        stop: Some(stop),
        done,
    };
    for _ in 0..100 {
        if get(qp.addr, "/healthz", &[("K-Network-Probe", "queue")])
            .await
            .0
            == 200
        {
            return qp;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("queue-proxy never became ready");
}

/// One HTTP/1.1 request on a fresh connection: (status, body).
async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: hello.default.localhost\r\n{extra}Connection: close\r\n\r\n"
    );
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    stream.read_to_string(&mut out).await.unwrap();
    let status = out.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = out.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
    (status, body)
}

#[tokio::test]
async fn proxies_and_adds_forwarded() {
    let qp = queue_proxy(upstream().await, &[]).await;
    let (status, body) = get(qp.addr, "/", &[]).await;
    assert_eq!(status, 200);
    assert!(
        body.starts_with("forwarded: for=127.0.0.1;host=hello.default.localhost;proto=http"),
        "{body}"
    );
    let (status, metrics) = get(qp.admin, "/metrics", &[]).await;
    assert_eq!(status, 200);
    assert!(metrics.contains("queue_requests_total{"), "{metrics}");
}

#[tokio::test]
async fn concurrency_one_never_overlaps() {
    let qp = queue_proxy(upstream().await, &[("CONTAINER_CONCURRENCY", "1")]).await;
    let clients: Vec<_> = (0..5)
        .map(|_| tokio::spawn(get(qp.addr, "/?ms=20", &[])))
        .collect();
    for c in clients {
        assert_eq!(c.await.unwrap().0, 200);
    }
}

#[tokio::test]
async fn full_queue_answers_503() {
    // CC 1 allows 1 in flight + 10 queued; the 12th is refused at once.
    let qp = queue_proxy(upstream().await, &[("CONTAINER_CONCURRENCY", "1")]).await;
    let held: Vec<_> = (0..11)
        .map(|_| tokio::spawn(get(qp.addr, "/?ms=400", &[])))
        .collect();
    tokio::time::sleep(Duration::from_millis(150)).await;
    let (status, body) = get(qp.addr, "/", &[]).await;
    assert_eq!((status, body.as_str()), (503, "pending request queue full"));
    for h in held {
        assert_eq!(h.await.unwrap().0, 200);
    }
}

#[tokio::test]
async fn revision_timeout_answers_504() {
    let qp = queue_proxy(upstream().await, &[("REVISION_TIMEOUT_SECONDS", "1")]).await;
    let (status, body) = get(qp.addr, "/?ms=3000", &[]).await;
    assert_eq!((status, body.as_str()), (504, "request timeout"));
}

#[tokio::test]
async fn the_prestop_hook_returns_once_draining_is_done() {
    let mut qp = queue_proxy(upstream().await, &[]).await;
    let hook = tokio::spawn(get(qp.admin, "/wait-for-drain", &[]));
    let slow = tokio::spawn(get(qp.addr, "/?ms=300", &[]));
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        !hook.is_finished(),
        "the hook waits while the queue-proxy serves"
    );
    qp.stop.take().unwrap().send(()).unwrap();
    let (status, body) = hook.await.unwrap();
    assert_eq!((status, body.as_str()), (200, "drained"));
    assert!(
        slow.is_finished(),
        "the in-flight request was answered first"
    );
    assert_eq!(slow.await.unwrap().0, 200);
}

#[tokio::test(start_paused = true)]
async fn a_prestop_hook_without_a_stop_returns_so_a_liveness_restart_is_not_held() {
    // The kubelet restarts the user container alone when its liveness probe fails: the
    // queue-proxy is not stopped, so the hook returns after a second and serving goes on.
    let qp = queue_proxy(upstream().await, &[]).await;
    let hook = tokio::spawn(get(qp.admin, "/wait-for-drain", &[]));
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert!(!hook.is_finished(), "the hook waits a second for a stop");
    let (status, body) = tokio::time::timeout(Duration::from_secs(2), hook)
        .await
        .expect("the hook returns without a stop")
        .unwrap();
    assert_eq!((status, body.as_str()), (200, "not stopping"));
    assert_eq!(get(qp.addr, "/", &[]).await.0, 200, "still serving");
}

#[tokio::test]
async fn a_response_that_started_in_time_is_not_cut_by_the_revision_timeout() {
    // Knative's timeoutSeconds bounds the wait for the response to start; once it has, the
    // body streams to its end (idleTimeoutSeconds bounds silences).
    let qp = queue_proxy(upstream().await, &[("REVISION_TIMEOUT_SECONDS", "1")]).await;
    let (status, body) = get(qp.addr, "/?after=1500", &[]).await;
    assert_eq!((status, body.as_str()), (200, "late body"));
}

#[tokio::test]
async fn drain_finishes_in_flight_requests_then_exits() {
    let mut qp = queue_proxy(upstream().await, &[]).await;
    let slow = tokio::spawn(get(qp.addr, "/?ms=300", &[]));
    tokio::time::sleep(Duration::from_millis(50)).await;
    qp.stop.take().unwrap().send(()).unwrap();
    let (status, _) = get(qp.addr, "/healthz", &[("K-Network-Probe", "queue")]).await;
    assert_eq!(status, 503, "probes fail while draining");
    assert_eq!(slow.await.unwrap().0, 200);
    tokio::time::timeout(Duration::from_secs(5), qp.done)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}
