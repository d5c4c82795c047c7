//! The relay's rules through the queue-proxy, over loopback, with a user process that reads
//! requests strictly (CRLF only, as gunicorn does): what could be framed two ways is refused
//! before the user process sees a byte, a smuggled request never becomes a request, a pooled
//! connection carries the next client's request intact, responses that could be read two
//! ways become 502, and fields only Sluice sets never reach the user process.

mod common;

use common::{exchange, queue_proxy, read_until, statuses};
use sluice_relay_differential::upstream::{Heard, Upstream};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const SMUGGLE: &[u8] = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n\
    5\nhello\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n";

#[tokio::test]
async fn a_chunk_ended_by_a_bare_lf_is_refused_and_the_next_client_gets_its_own_answer() {
    let user = Upstream::start().await;
    let qp = queue_proxy(user.addr, &[]).await;
    let answer = exchange(qp, SMUGGLE).await;
    assert_eq!(statuses(&answer), [400], "{answer}");
    assert!(answer.contains("bare LF"), "{answer}");
    let victim = exchange(
        qp,
        b"GET /victim HTTP/1.1\r\nHost: a\r\nCookie: secret\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(victim.contains("GET /victim host=a body="), "{victim}");
    assert_eq!(user.targets(), ["/victim"], "{:?}", user.heard());
}

#[tokio::test]
async fn a_bad_chunk_past_the_read_ahead_cuts_the_upstream_connection_it_started_on() {
    let user = Upstream::start().await;
    let qp = queue_proxy(user.addr, &[]).await;
    // 20 KiB of good chunks (more than is read ahead), then a bare LF and a smuggled request.
    let mut attack =
        b"POST /big HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..20 {
        attack.extend_from_slice(b"400\r\n");
        attack.extend_from_slice(&[b'x'; 1024]);
        attack.extend_from_slice(b"\r\n");
    }
    attack.extend_from_slice(b"0\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n");
    let answer = exchange(qp, &attack).await;
    assert_eq!(statuses(&answer), [400], "{answer}");
    for _ in 0..3 {
        let victim = exchange(
            qp,
            b"GET /victim HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(victim.contains("GET /victim host=a"), "{victim}");
    }
    let heard = user.heard();
    assert_eq!(user.targets(), ["/victim"; 3], "{heard:?}");
    let cut: Vec<usize> = heard
        .iter()
        .filter_map(|h| match h {
            Heard::Cut { conn } => Some(*conn),
            _ => None,
        })
        .collect();
    assert_eq!(
        cut.len(),
        1,
        "the attacker's upstream connection was not cut: {heard:?}"
    );
    assert!(
        heard
            .iter()
            .all(|h| !matches!(h, Heard::Request { conn, .. } if *conn == cut[0])),
        "a victim's request went on the attacker's connection: {heard:?}"
    );
}

#[tokio::test]
async fn a_pooled_connection_carries_the_next_clients_request_intact() {
    let user = Upstream::start().await;
    let qp = queue_proxy(user.addr, &[]).await;
    let first = exchange(
        qp,
        b"POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
          3;e=\"v\"\r\nabc\r\n0\r\nX-Trailer: t\r\n\r\n",
    )
    .await;
    assert!(first.contains("POST /a host=a body=abc"), "{first}");
    let second = exchange(
        qp,
        b"GET /b HTTP/1.1\r\nHost: b\r\nCookie: mine\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(second.contains("GET /b host=b body="), "{second}");
    assert!(second.contains("Cookie: mine"), "{second}");
    let heard = user.heard();
    let conns: Vec<usize> = heard
        .iter()
        .map(|h| match h {
            Heard::Request { conn, .. } => *conn,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(conns.len(), 2, "{heard:?}");
    assert_eq!(
        conns[0], conns[1],
        "the second did not reuse the pooled connection: {heard:?}"
    );
}

#[tokio::test]
async fn every_framing_ambiguity_is_refused_before_the_user_process() {
    let user = Upstream::start().await;
    let qp = queue_proxy(user.addr, &[]).await;
    let cases: &[(&[u8], u16)] = &[
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
        (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n0\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\nabc", 400),
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc", 400),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501),
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent_Length: 3\r\n\r\nabc", 400),
        (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\n\r\n", 400),
        (b"GET / HTTP/1.1\nHost: a\n\n", 400),
        (b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n", 400),
        (b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n", 501),
        (b"GET http://u@a/ HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5 ;x\r\nhello\r\n0\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;x\rhello\r\n0\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nContent-Length: 5\r\n\r\n", 400),
    ];
    for (raw, status) in cases {
        let answer = exchange(qp, raw).await;
        assert_eq!(
            statuses(&answer),
            [*status],
            "{:?} → {answer}",
            String::from_utf8_lossy(raw)
        );
        assert!(answer.contains("connection: close"), "{answer}");
    }
    assert_eq!(
        user.heard(),
        [],
        "the user process saw part of a refused request"
    );
}

#[tokio::test]
async fn fields_only_sluice_sets_never_reach_the_user_process() {
    let user = Upstream::start().await;
    let qp = queue_proxy(user.addr, &[]).await;
    let answer = exchange(
        qp,
        b"GET /t HTTP/1.1\r\nHost: hello.default.localhost\r\nK-Original-Host: evil\r\n\
          K_Original_Host: evil\r\nKnative-Serving-Revision: evil\r\nK-Proxy-Request: evil\r\n\
          Connection: close\r\n\r\n",
    )
    .await;
    assert!(answer.contains("host=hello.default.localhost"), "{answer}");
    assert!(!answer.contains("evil"), "{answer}");
}

#[tokio::test]
async fn an_absolute_target_keeps_its_query_and_names_the_host() {
    let user = Upstream::start().await;
    let qp = queue_proxy(user.addr, &[]).await;
    let answer = exchange(
        qp,
        b"GET http://h.example?x=1 HTTP/1.1\r\nHost: other\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.contains("GET /?x=1 host=h.example"), "{answer}");
}

#[tokio::test]
async fn responses_that_could_be_read_two_ways_are_502_and_their_connection_is_dropped() {
    let user = Upstream::answering(|m| {
        let raw: &[u8] = match m.target.as_slice() {
            b"/both" => b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            b"/twice" => b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
            b"/gzip" => b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nxx",
            b"/lf" => b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok",
            b"/switch" => b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\n",
            _ => b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ngood",
        };
        (raw.to_vec(), false)
    })
    .await;
    let qp = queue_proxy(user.addr, &[]).await;
    for path in ["/both", "/twice", "/gzip", "/lf", "/switch"] {
        let answer = exchange(
            qp,
            format!("GET {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await;
        assert_eq!(statuses(&answer), [502], "{path}: {answer}");
        let good = exchange(
            qp,
            b"GET /ok HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(good.ends_with("good"), "after {path}: {good}");
    }
}

#[tokio::test]
async fn an_http10_client_gets_no_interim_answer_and_a_decoded_body() {
    let user = Upstream::answering(|_| {
        (
            b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n\
              HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
                .to_vec(),
            false,
        )
    })
    .await;
    let qp = queue_proxy(user.addr, &[]).await;
    let old = exchange(qp, b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").await;
    assert_eq!(statuses(&old), [200], "{old}");
    assert!(
        !old.to_ascii_lowercase().contains("transfer-encoding"),
        "{old}"
    );
    assert!(old.ends_with("\r\n\r\nabcde"), "{old}");
    let mut new = TcpStream::connect(qp).await.unwrap();
    new.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let answer = read_until(&mut new, "0\r\n\r\n").await;
    assert_eq!(statuses(&answer), [103, 200], "{answer}");
}
