//! HTTP/1.1 framing through the queue-proxy's own forwarding path, on loopback sockets, with a
//! hyper server as the user process: bodies of every framing, keep-alive, pipelining, HEAD,
//! `Expect: 100-continue`, and a user process that closes idle connections.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use common::queue_proxy;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A body of two frames with no length, so hyper sends it chunked.
struct TwoFrames(Vec<Bytes>);

impl Body for TwoFrames {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(if self.0.is_empty() {
            None
        } else {
            Some(Ok(Frame::data(self.0.remove(0))))
        })
    }
}

type AnyBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// The user process: `/chunked` streams `abc` then `def`; a request with a body gets it back;
/// anything else gets its path. `keep_alive: false` closes each connection after one answer.
async fn user_process(keep_alive: bool) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let svc = service_fn(|req: Request<Incoming>| async move {
                    let path = req.uri().path().to_owned();
                    let body: AnyBody = if path == "/chunked" {
                        AnyBody::new(TwoFrames(vec![
                            Bytes::from_static(b"abc"),
                            Bytes::from_static(b"def"),
                        ]))
                    } else {
                        let sent = req.into_body().collect().await.unwrap().to_bytes();
                        let echo = if sent.is_empty() {
                            Bytes::from(path)
                        } else {
                            sent
                        };
                        AnyBody::new(Full::new(echo))
                    };
                    Ok::<_, Infallible>(Response::new(body))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .keep_alive(keep_alive)
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

/// A hyper client on one connection to `addr`.
async fn client(addr: SocketAddr) -> hyper::client::conn::http1::SendRequest<AnyBody> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    send
}

async fn exchange(
    send: &mut hyper::client::conn::http1::SendRequest<AnyBody>,
    method: &str,
    path: &str,
    body: AnyBody,
) -> (u16, String) {
    send.ready().await.unwrap();
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "hello.default.localhost")
        .body(body)
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

fn empty() -> AnyBody {
    AnyBody::new(Full::new(Bytes::new()))
}

#[tokio::test]
async fn bodies_of_every_framing_pass_through_on_one_connection() {
    let qp = queue_proxy(user_process(true).await, &[]).await;
    let mut send = client(qp).await;
    assert_eq!(
        exchange(
            &mut send,
            "POST",
            "/",
            AnyBody::new(Full::new(Bytes::from("hello")))
        )
        .await,
        (200, "hello".into())
    );
    let chunked = AnyBody::new(TwoFrames(vec![Bytes::from("wiki"), Bytes::from("pedia")]));
    assert_eq!(
        exchange(&mut send, "POST", "/", chunked).await,
        (200, "wikipedia".into())
    );
    assert_eq!(
        exchange(&mut send, "GET", "/chunked", empty()).await,
        (200, "abcdef".into())
    );
    let big = Bytes::from(vec![b'x'; 1 << 20]);
    let (status, echoed) =
        exchange(&mut send, "PUT", "/", AnyBody::new(Full::new(big.clone()))).await;
    assert_eq!((status, echoed.len()), (200, big.len()));
    assert_eq!(
        exchange(&mut send, "HEAD", "/a", empty()).await,
        (200, String::new())
    );
    assert_eq!(
        exchange(&mut send, "GET", "/after-head", empty()).await,
        (200, "/after-head".into())
    );
}

#[tokio::test]
async fn a_user_process_that_closes_idle_connections_is_reconnected() {
    let qp = queue_proxy(user_process(false).await, &[]).await;
    let mut send = client(qp).await;
    for path in ["/one", "/two", "/three"] {
        assert_eq!(
            exchange(&mut send, "GET", path, empty()).await,
            (200, path.into())
        );
    }
}

async fn read_until(stream: &mut TcpStream, needle: &str) -> String {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains(needle) {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .expect("an answer within 5 s")
            .unwrap();
        assert!(
            n > 0,
            "closed before {needle:?}: {}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&seen).into_owned()
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let qp = queue_proxy(user_process(true).await, &[]).await;
    let mut stream = TcpStream::connect(qp).await.unwrap();
    stream
        .write_all(
            b"GET /first HTTP/1.1\r\nHost: h\r\n\r\nGET /second HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
        )
        .await
        .unwrap();
    let mut all = String::new();
    stream.read_to_string(&mut all).await.unwrap();
    let first = all.find("/first").expect("first answered");
    let second = all.find("/second").expect("second answered");
    assert!(first < second, "{all}");
    assert_eq!(all.matches("HTTP/1.1 200 OK").count(), 2, "{all}");
}

#[tokio::test]
async fn expect_continue_is_answered_before_the_body() {
    let qp = queue_proxy(user_process(true).await, &[]).await;
    let mut stream = TcpStream::connect(qp).await.unwrap();
    stream
        .write_all(
            b"PUT / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
        )
        .await
        .unwrap();
    read_until(&mut stream, "HTTP/1.1 100 Continue\r\n\r\n").await;
    stream.write_all(b"hello").await.unwrap();
    let answer = read_until(&mut stream, "hello").await;
    assert!(answer.contains("HTTP/1.1 200 OK"), "{answer}");
}

#[tokio::test]
async fn malformed_requests_get_400_and_a_closed_connection() {
    let qp = queue_proxy(user_process(true).await, &[]).await;
    let mut stream = TcpStream::connect(qp).await.unwrap();
    stream
        .write_all(
            b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        )
        .await
        .unwrap();
    let mut all = String::new();
    stream.read_to_string(&mut all).await.unwrap();
    assert!(all.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{all}");
    assert!(all.contains("more than one Content-Length"), "{all}");
}

#[tokio::test]
async fn answers_the_proxy_makes_itself_keep_pipelined_requests_in_order() {
    // A user port with nothing listening: every request gets the proxy's own 502.
    let closed = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let qp = queue_proxy(closed, &[]).await;
    let mut stream = TcpStream::connect(qp).await.unwrap();
    stream
        .write_all(
            b"GET /a HTTP/1.1\r\nHost: h\r\n\r\nGET /b HTTP/1.1\r\nHost: h\r\nK-Network-Probe: queue\r\n\r\n\
              GET /c HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
        )
        .await
        .unwrap();
    let mut all = String::new();
    stream.read_to_string(&mut all).await.unwrap();
    let statuses: Vec<&str> = all
        .match_indices("HTTP/1.1 ")
        .map(|(i, _)| &all[i + 9..i + 12])
        .collect();
    assert_eq!(statuses, ["502", "503", "502"], "{all}");
}
