//! The relay's time and space limits through the queue-proxy, on tokio's paused clock (time
//! moves only when every task waits, straight to the next timer), over loopback: a head sent
//! a line a second, an idle keep-alive connection, a stalled body holding (or not) a
//! `containerConcurrency: 1` slot, half-sent heads beside a working client, and the bound on
//! open connections.

mod common;

use std::time::Duration;

use common::{exchange, queue_proxy, read_to_close, read_until, statuses};
use sluice_relay_differential::upstream::Upstream;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

const GET_B: &[u8] = b"GET /b HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";

/// `wait`, failing the test if it has not finished after 10 minutes of (paused) time, so a
/// limit that does not hold fails rather than hangs.
async fn within<T>(wait: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(600), wait)
        .await
        .expect("no answer within 600 s")
}

#[tokio::test(start_paused = true)]
async fn a_head_sent_a_line_a_second_gets_408_at_the_head_timeout() {
    let user = Upstream::start().await;
    let qp = queue_proxy(user.addr, &[]).await;
    let start = Instant::now();
    let (mut rd, mut wr) = TcpStream::connect(qp).await.unwrap().into_split();
    wr.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n")
        .await
        .unwrap();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if wr.write_all(b"X-Slow: a\r\n").await.is_err() {
                return;
            }
        }
    });
    let answer = within(read_until(&mut rd, "request not received in time")).await;
    let took = start.elapsed();
    assert_eq!(statuses(&answer), [408], "{answer}");
    assert!(
        (Duration::from_secs(60)..Duration::from_secs(61)).contains(&took),
        "closed after {took:?}, want the 60 s head timeout"
    );
    read_to_close(&mut rd).await;
    assert_eq!(user.heard(), []);
}

#[tokio::test(start_paused = true)]
async fn an_idle_keep_alive_connection_closes_at_the_keep_alive_timeout() {
    let user = Upstream::start().await;
    let qp = queue_proxy(
        user.addr,
        &[("SLUICE_HTTP_KEEPALIVE_TIMEOUT_SECONDS", "30")],
    )
    .await;
    let mut stream = TcpStream::connect(qp).await.unwrap();
    stream
        .write_all(b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    read_until(&mut stream, "GET /a").await;
    let idle = Instant::now();
    let rest = within(read_to_close(&mut stream)).await;
    let took = idle.elapsed();
    assert_eq!(rest, "", "nothing is sent on an idle connection");
    assert!(
        (Duration::from_secs(30)..Duration::from_secs(31)).contains(&took),
        "closed after {took:?} idle, want 30 s"
    );
}

#[tokio::test(start_paused = true)]
async fn a_stalled_small_body_never_takes_the_only_slot() {
    let user = Upstream::start().await;
    let qp = queue_proxy(user.addr, &[("CONTAINER_CONCURRENCY", "1")]).await;
    let start = Instant::now();
    let mut stalled = TcpStream::connect(qp).await.unwrap();
    stalled
        .write_all(b"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 10000000000\r\n\r\n0123456789")
        .await
        .unwrap();
    let other = exchange(qp, GET_B).await;
    assert!(other.contains("GET /b"), "{other}");
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "the other client waited {:?}",
        start.elapsed()
    );
    let answer = within(read_to_close(&mut stalled)).await;
    assert_eq!(statuses(&answer), [408], "{answer}");
    assert!(start.elapsed() >= Duration::from_secs(60));
    assert_eq!(
        user.targets(),
        ["/b"],
        "the stalled request reached the user process"
    );
}

#[tokio::test(start_paused = true)]
async fn a_body_that_stalls_while_streaming_gets_408_and_frees_its_slot() {
    let user = Upstream::start().await;
    let qp = queue_proxy(
        user.addr,
        &[
            ("CONTAINER_CONCURRENCY", "1"),
            ("REVISION_TIMEOUT_SECONDS", "300"),
        ],
    )
    .await;
    let start = Instant::now();
    let mut stalled = TcpStream::connect(qp).await.unwrap();
    // More than is read ahead, so the request takes the slot and starts streaming.
    stalled
        .write_all(b"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 10000000000\r\n\r\n")
        .await
        .unwrap();
    stalled.write_all(&[b'x'; 20 * 1024]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    let other = tokio::spawn(async move { (exchange(qp, GET_B).await, start.elapsed()) });
    let answer = within(read_to_close(&mut stalled)).await;
    assert_eq!(statuses(&answer), [408], "{answer}");
    let (other, waited) = other.await.unwrap();
    assert!(other.contains("GET /b"), "{other}");
    assert!(
        (Duration::from_secs(60)..Duration::from_secs(61)).contains(&waited),
        "the other client was served after {waited:?}; want right after the 60 s body timeout, \
         not the 300 s revision timeout"
    );
}

#[tokio::test(start_paused = true)]
async fn half_sent_heads_do_not_keep_others_waiting() {
    let user = Upstream::start().await;
    let qp = queue_proxy(user.addr, &[]).await;
    let mut half = Vec::new();
    for _ in 0..500 {
        let mut s = TcpStream::connect(qp).await.unwrap();
        let mut head = b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: ".to_vec();
        head.resize(20 * 1024, b'a');
        s.write_all(&head).await.unwrap();
        half.push(s);
    }
    let start = Instant::now();
    let other = exchange(qp, GET_B).await;
    assert!(other.contains("GET /b"), "{other}");
    assert!(start.elapsed() < Duration::from_secs(1));
    // And every half-sent head is answered 408 at the head timeout.
    for s in &mut half {
        let mut buf = [0u8; 12];
        s.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"HTTP/1.1 408");
    }
    assert!(start.elapsed() >= Duration::from_secs(59));
}

#[tokio::test(start_paused = true)]
async fn connections_past_the_bound_wait_until_one_closes() {
    let user = Upstream::start().await;
    let qp = queue_proxy(user.addr, &[("SLUICE_HTTP_MAX_CONNECTIONS", "2")]).await;
    let mut open = Vec::new();
    for path in ["/1", "/2"] {
        let mut s = TcpStream::connect(qp).await.unwrap();
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes())
            .await
            .unwrap();
        read_until(&mut s, path).await;
        open.push(s);
    }
    let mut third = TcpStream::connect(qp).await.unwrap();
    third.write_all(GET_B).await.unwrap();
    let mut byte = [0u8; 1];
    let waited = tokio::time::timeout(Duration::from_secs(10), third.read(&mut byte)).await;
    assert!(
        waited.is_err(),
        "a third connection was served past the bound of 2"
    );
    drop(open.remove(0));
    let answer = read_to_close(&mut third).await;
    assert!(answer.contains("GET /b"), "{answer}");
}
