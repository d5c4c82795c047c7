//! HTTP/2 through both hops, in-process on loopback: the activator and a queue-proxy in
//! front of a user process served by hyper. Prior-knowledge h2c from clients beside HTTP/1.1
//! on one port; the revision's protocol (a port named `h2c`) decides what the user process
//! hears, whatever the client spoke; streams multiplexed on one connection, trailers,
//! bidirectional streaming, containerConcurrency counting streams, streams held while a
//! revision has no replica, gRPC's form for the proxies' own errors, streams that reached
//! no user process sent to another replica, and the idle timeout per stream.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body_util::{BodyExt, Channel, Empty, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use sluice_activator::{Options, Routes, run};
use sluice_platform::RevisionKey;
use sluice_platform::routing::{HostRoute, RevisionBackends, RoutingSnapshot, WeightedTarget};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const HOST: &str = "hello.default.localhost";

/// What the user process saw, and how it answers: `/echo` streams the request body back
/// frame by frame and ends with a `grpc-status: 0` trailer; `/slow` takes 100 ms and records
/// the most requests it had at once; anything else answers `VERSION METHOD PATH` and the
/// fields it got.
struct User {
    addr: SocketAddr,
    peak: Arc<AtomicU32>,
}

type UserBody = http_body_util::combinators::BoxBody<Bytes, hyper::Error>;

async fn user_process() -> User {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let peak = Arc::new(AtomicU32::new(0));
    let now = Arc::new(AtomicU32::new(0));
    let seen = peak.clone();
    tokio::spawn(async move {
        loop {
            let (s, _) = listener.accept().await.unwrap();
            let (now, peak) = (now.clone(), seen.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let (now, peak) = (now.clone(), peak.clone());
                    async move { Ok::<_, Infallible>(answer(req, &now, &peak).await) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    User { addr, peak }
}

async fn answer(req: Request<Incoming>, now: &AtomicU32, peak: &AtomicU32) -> Response<UserBody> {
    match req.uri().path() {
        "/echo" => {
            let (tx, body) = Channel::<Bytes, hyper::Error>::new(4);
            let mut incoming = req.into_body();
            let mut tx = tx;
            tokio::spawn(async move {
                while let Some(Ok(frame)) = incoming.frame().await {
                    if let Ok(data) = frame.into_data()
                        && tx.send_data(data).await.is_err()
                    {
                        return;
                    }
                }
                let mut trailers = HeaderMap::new();
                trailers.insert("grpc-status", "0".parse().unwrap());
                let _ = tx.send_trailers(trailers).await;
            });
            Response::new(body.boxed())
        }
        "/slow" => {
            let in_flight = now.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(in_flight, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(100)).await;
            now.fetch_sub(1, Ordering::SeqCst);
            Response::new(full("slow"))
        }
        _ => {
            let mut text = format!("{:?} {} {}\n", req.version(), req.method(), req.uri());
            for (name, value) in req.headers() {
                text.push_str(&format!("{name}: {}\n", value.to_str().unwrap_or("?")));
            }
            Response::new(full(&text))
        }
    }
}

fn full(text: &str) -> UserBody {
    Full::new(Bytes::copy_from_slice(text.as_bytes()))
        .map_err(|never| match never {})
        .boxed()
}

fn snapshot(endpoints: Vec<SocketAddr>, cc: u32) -> RoutingSnapshot {
    let rev = RevisionKey::new("default", "hello-00001");
    let mut s = RoutingSnapshot::default();
    s.hosts.insert(
        HOST.into(),
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
        rev,
        RevisionBackends {
            container_concurrency: cc,
            timeout_seconds: 5,
            endpoints,
            buffered: false,
        },
    );
    s
}

/// A queue-proxy in front of `user`, which speaks `protocol` (`h2c` or `http1`).
async fn queue_proxy(user: SocketAddr, protocol: &str, cc: u32) -> SocketAddr {
    queue_proxy_with(user, protocol, cc, &[]).await
}

/// As [`queue_proxy`], with more of the queue-proxy's environment.
async fn queue_proxy_with(
    user: SocketAddr,
    protocol: &str,
    cc: u32,
    more: &[(&str, &str)],
) -> SocketAddr {
    let mut env: std::collections::HashMap<String, String> = [
        ("USER_PORT".to_owned(), user.port().to_string()),
        ("USER_PROTOCOL".to_owned(), protocol.to_owned()),
        ("CONTAINER_CONCURRENCY".to_owned(), cc.to_string()),
    ]
    .into();
    env.extend(more.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    let cfg = sluice_queue_proxy::config::Config::from_env(&env).unwrap();
    let qp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = qp.local_addr().unwrap();
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
    addr
}

async fn activator(routes: Arc<Routes>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(run(
        listener,
        routes,
        Options::default(),
        std::future::pending(),
    ));
    addr
}

/// The activator and a queue-proxy in front of a new user process of `protocol`.
async fn two_hops(protocol: &str, cc: u32) -> (SocketAddr, User, Arc<Routes>) {
    let user = user_process().await;
    let qp = queue_proxy(user.addr, protocol, cc).await;
    let routes = Routes::new();
    routes.install(&snapshot(vec![qp], cc));
    (activator(routes.clone()).await, user, routes)
}

/// An HTTP/2 client connection (prior knowledge) to `addr`.
async fn h2_client<B>(addr: SocketAddr) -> hyper::client::conn::http2::SendRequest<B>
where
    B: hyper::body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    sender
}

fn get(path: &str) -> Request<Empty<Bytes>> {
    Request::get(format!("http://{HOST}{path}"))
        .body(Empty::new())
        .unwrap()
}

async fn text(resp: Response<Incoming>) -> (u16, String) {
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// An HTTP/1.1 GET through `addr`: the status and body.
async fn http1_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    (
        out[9..12].parse().unwrap(),
        out.split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default(),
    )
}

#[tokio::test]
async fn an_h2c_revision_hears_http2_whatever_the_client_spoke() {
    let (front, _user, _) = two_hops("h2c", 0).await;
    let mut client = h2_client(front).await;
    let mut req = get("/p?q=1");
    req.headers_mut()
        .insert("knative-serving-revision", "forged".parse().unwrap());
    req.headers_mut()
        .insert("k-proxy-request", "forged".parse().unwrap());
    let (status, body) = text(client.send_request(req).await.unwrap()).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.starts_with("HTTP/2.0 GET http://hello.default.localhost/p?q=1\n"),
        "{body}"
    );
    assert!(body.contains("x-forwarded-for: 127.0.0.1"), "{body}");
    assert!(body.contains("forwarded: for=127.0.0.1"), "{body}");
    assert!(!body.contains("forged"), "{body}");
    assert!(!body.contains("knative-serving-revision"), "{body}");
    // Knative's conformance test asks over HTTP/1.1 and wants HTTP/2.0 at the container.
    let (status, body) = http1_get(front, "/p").await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.starts_with("HTTP/2.0 GET http://hello.default.localhost/p\n"),
        "{body}"
    );
}

#[tokio::test]
async fn an_http1_revision_hears_http1_from_an_http2_client() {
    let (front, _user, _) = two_hops("http1", 0).await;
    let mut client = h2_client(front).await;
    let (status, body) = text(client.send_request(get("/p")).await.unwrap()).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("HTTP/1.1 GET /p\n"), "{body}");
    assert!(body.contains("host: hello.default.localhost"), "{body}");
    // And HTTP/1.1 clients keep the relay's path.
    let (status, body) = http1_get(front, "/p").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("HTTP/1.1 GET /p\n"), "{body}");
}

#[tokio::test]
async fn streams_multiplex_on_one_connection() {
    let (front, _user, _) = two_hops("h2c", 0).await;
    let client = h2_client(front).await;
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..200 {
        let mut client = client.clone();
        calls.spawn(async move {
            let resp = client.send_request(get(&format!("/n{i}"))).await.unwrap();
            let (status, body) = text(resp).await;
            assert_eq!(status, 200);
            assert!(body.contains(&format!("/n{i}\n")), "{body}");
        });
    }
    while let Some(done) = calls.join_next().await {
        done.unwrap();
    }
}

#[tokio::test]
async fn bidirectional_streams_flow_both_ways_at_once_and_keep_trailers() {
    for protocol in ["h2c", "http1"] {
        let (front, _user, _) = two_hops(protocol, 0).await;
        let mut client = h2_client(front).await;
        let (mut tx, body) = Channel::<Bytes, Infallible>::new(1);
        let req = Request::post(format!("http://{HOST}/echo"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(body)
            .unwrap();
        let resp = client.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        let mut resp = resp.into_body();
        // Each message comes back before the next is sent: both directions are open at once.
        for i in 0..5 {
            let msg = Bytes::from(format!("message {i}"));
            tx.send_data(msg.clone()).await.unwrap();
            let frame = tokio::time::timeout(Duration::from_secs(5), resp.frame())
                .await
                .unwrap_or_else(|_| panic!("{protocol}: message {i} did not come back"))
                .unwrap()
                .unwrap();
            assert_eq!(frame.into_data().unwrap(), msg, "{protocol}");
        }
        drop(tx);
        let mut trailers = None;
        while let Some(frame) = resp.frame().await {
            if let Ok(t) = frame.unwrap().into_trailers() {
                trailers = Some(t);
            }
        }
        if protocol == "h2c" {
            assert_eq!(trailers.expect("trailers")["grpc-status"], "0");
        }
    }
}

#[tokio::test]
async fn container_concurrency_counts_streams() {
    let (front, user, _) = two_hops("h2c", 1).await;
    let client = h2_client(front).await;
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..5 {
        let mut client = client.clone();
        calls.spawn(async move { text(client.send_request(get("/slow")).await.unwrap()).await });
    }
    while let Some(done) = calls.join_next().await {
        assert_eq!(done.unwrap(), (200, "slow".to_owned()));
    }
    assert_eq!(user.peak.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_stream_is_held_until_its_revision_has_a_replica() {
    let user = user_process().await;
    let qp = queue_proxy(user.addr, "h2c", 0).await;
    let routes = Routes::new();
    routes.install(&snapshot(vec![], 0));
    let front = activator(routes.clone()).await;
    let mut client = h2_client(front).await;
    let call =
        tokio::spawn(async move { text(client.send_request(get("/held")).await.unwrap()).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!call.is_finished(), "answered with no replica");
    routes.install(&snapshot(vec![qp], 0));
    let (status, body) = call.await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("/held"), "{body}");
}

#[tokio::test]
async fn grpc_calls_get_the_proxies_errors_as_grpc_status() {
    let (front, _user, _) = two_hops("h2c", 0).await;
    let mut client = h2_client(front).await;
    let req = Request::post("http://nobody.default.localhost/pkg.Svc/Call")
        .header("content-type", "application/grpc")
        .body(Full::new(Bytes::from_static(b"\0\0\0\0\0")))
        .unwrap();
    let resp = client.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["grpc-status"], "12");
    let message = resp.headers()["grpc-message"].to_str().unwrap().to_owned();
    assert!(message.contains("no service serves host"), "{message}");
    // The same for a plain client is a 404 naming the host.
    let (status, body) = text(
        client
            .send_request(
                Request::get("http://nobody.default.localhost/")
                    .body(Full::new(Bytes::new()))
                    .unwrap(),
            )
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 404);
    assert!(body.contains("nobody.default.localhost"), "{body}");
}

#[tokio::test]
async fn an_ambiguous_authority_is_refused() {
    let (front, _user, _) = two_hops("h2c", 0).await;
    let mut client = h2_client(front).await;
    let req = Request::get(format!("http://{HOST}/"))
        .header("host", "other.default.localhost")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let (status, body) = text(client.send_request(req).await.unwrap()).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("differ"), "{body}");
}

#[tokio::test]
async fn an_h2c_upgrade_is_answered_in_http1() {
    let (front, _user, _) = two_hops("http1", 0).await;
    let mut s = TcpStream::connect(front).await.unwrap();
    let req = format!(
        "GET /up HTTP/1.1\r\nHost: {HOST}\r\nConnection: Upgrade, HTTP2-Settings, close\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    let lower = out.to_ascii_lowercase();
    assert!(
        !lower.contains("upgrade: h2c") && !lower.contains("http2-settings"),
        "{out}"
    );
}

/// A port nothing listens on.
fn closed_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// An HTTP/2 server that refuses every stream (`REFUSED_STREAM`), as a replica over its
/// stream limit or going away does.
async fn refusing_replica() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (s, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let Ok(mut conn) = h2::server::handshake(s).await else {
                    return;
                };
                while let Some(Ok((_, mut respond))) = conn.accept().await {
                    respond.send_reset(h2::Reason::REFUSED_STREAM);
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn streams_that_reached_no_user_process_go_to_another_replica() {
    for protocol in ["h2c", "http1"] {
        let user = user_process().await;
        let live = queue_proxy(user.addr, protocol, 0).await;
        // A replica whose user process is gone: its queue-proxy is refused.
        let dead = queue_proxy(closed_port(), protocol, 0).await;
        let routes = Routes::new();
        routes.install(&snapshot(vec![live, dead, refusing_replica().await], 0));
        let front = activator(routes.clone()).await;
        let mut client = h2_client(front).await;
        for i in 0..60 {
            let (status, body) =
                text(client.send_request(get(&format!("/{i}"))).await.unwrap()).await;
            assert_eq!(status, 200, "{protocol}, stream {i}: {body}");
            assert!(body.contains(&format!("/{i}")), "{body}");
        }
        // With no replica to try, the queue-proxy's answer comes through, without its mark.
        routes.install(&snapshot(vec![dead], 0));
        let resp = client.send_request(get("/alone")).await.unwrap();
        assert!(!resp.headers().contains_key("k-sluice-unreached"));
        let (status, body) = text(resp).await;
        assert_eq!(status, 502, "{body}");
        assert!(body.contains("connection refused"), "{body}");
        // A stream with a body is never sent twice.
        let post = Request::post(format!("http://{HOST}/posted"))
            .body(Full::new(Bytes::from_static(b"once")))
            .unwrap();
        let mut poster = h2_client(front).await;
        let (status, _) = text(poster.send_request(post).await.unwrap()).await;
        assert_eq!(status, 502);
    }
}

#[tokio::test]
async fn a_stream_idle_past_the_revisions_idle_timeout_is_reset_and_others_go_on() {
    for protocol in ["h2c", "http1"] {
        let user = user_process().await;
        let qp = queue_proxy_with(
            user.addr,
            protocol,
            0,
            &[("REVISION_IDLE_TIMEOUT_SECONDS", "1")],
        )
        .await;
        let routes = Routes::new();
        routes.install(&snapshot(vec![qp], 0));
        let front = activator(routes).await;
        let mut client = h2_client(front).await;
        // A stream that sends a frame every 300 ms for 2 s is never idle for 1 s.
        let (mut tx, body) = Channel::<Bytes, hyper::Error>::new(4);
        let mut resp = client
            .send_request(
                Request::post(format!("http://{HOST}/echo"))
                    .body(body)
                    .unwrap(),
            )
            .await
            .unwrap()
            .into_body();
        for i in 0..7 {
            tx.send_data(Bytes::from(format!("frame {i}")))
                .await
                .unwrap();
            let frame = resp.frame().await.unwrap().unwrap().into_data().unwrap();
            assert_eq!(frame, format!("frame {i}"), "{protocol}");
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        // Then silence: the stream is reset, not left hanging (the user process still holds
        // it open), and the connection carries other streams.
        let next = tokio::time::timeout(Duration::from_secs(10), resp.frame())
            .await
            .expect("an idle stream was left hanging");
        assert!(matches!(next, Some(Err(_))), "{protocol}: {next:?}");
        let after = Request::get(format!("http://{HOST}/after"))
            .body(Channel::new(1).1)
            .unwrap();
        let (status, body) = text(client.send_request(after).await.unwrap()).await;
        assert_eq!(status, 200, "{protocol}: {body}");
        drop(tx);
    }
}
