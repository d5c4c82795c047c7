//! WebSockets end to end on the local platform, through both hops (activator, queue-proxy),
//! with tungstenite as the client and the server: echo, close codes both ways, one connection
//! counted as one request for its whole life, a connection that outlives a rollout on its old
//! revision, and the revision's timeoutSeconds closing it as Knative's proxies do.

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use tungstenite::client::IntoClientRequest;
use tungstenite::protocol::CloseFrame;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::{Message, WebSocket};

use crate::harness::{Platform, service_yaml};

pub type Ws = WebSocket<TcpStream>;

/// A WebSocket to `host` through the activator on 127.0.0.1:`port`.
fn connect(port: u16, host: &str) -> Ws {
    connect_at(SocketAddr::from((Ipv4Addr::LOCALHOST, port)), host)
}

/// A WebSocket to `host` through the activator at `addr`.
pub fn connect_at(addr: SocketAddr, host: &str) -> Ws {
    let stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let request = format!("ws://{host}/").into_client_request().unwrap();
    let (ws, response) = tungstenite::client(request, stream).expect("a WebSocket handshake");
    assert_eq!(response.status(), 101);
    ws
}

/// Sends `text` and returns the app's answer.
pub fn say(ws: &mut Ws, text: &str) -> String {
    ws.send(Message::text(text)).unwrap();
    match ws.read().unwrap() {
        Message::Text(reply) => reply.to_string(),
        other => panic!("answered {other:?} to {text:?}"),
    }
}

/// Reads until the connection ends: the close frame's (code, reason), if one came.
pub fn closed(ws: &mut Ws) -> Option<(CloseCode, String)> {
    let mut frame = None;
    loop {
        match ws.read() {
            Ok(Message::Close(Some(f))) => frame = Some((f.code, f.reason.to_string())),
            Ok(_) => {}
            Err(_) => return frame,
        }
    }
}

#[test]
fn websockets_echo_close_count_as_one_request_and_outlive_a_rollout() {
    let p = Platform::start();
    // One request at a time on one replica: a second connection must wait for the first.
    let yaml = service_yaml(
        "ws",
        "ws",
        "m-ws-echo",
        "v1",
        "      containerConcurrency: 1\n",
    )
    .replace(
        "  template:\n    spec:\n",
        "  template:\n    metadata:\n      annotations:\n        autoscaling.knative.dev/max-scale: \"1\"\n    spec:\n",
    );
    let out = p.apply(&yaml);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    p.eventually(Duration::from_secs(20), "ws ready", || p.is_ready("ws"));
    let host = "ws.default.localhost";

    let mut first = connect(p.port, host);
    assert_eq!(say(&mut first, "hello"), "ws-00001 v1 hello");
    first.send(Message::binary(vec![0u8, 1, 2, 255])).unwrap();
    assert_eq!(first.read().unwrap(), Message::binary(vec![0u8, 1, 2, 255]));

    // The open WebSocket holds the revision's one slot: a second handshake waits for it.
    let port = p.port;
    let second = std::thread::spawn(move || {
        let mut ws = connect(port, host);
        let answer = say(&mut ws, "second");
        (ws, answer, Instant::now())
    });
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        !second.is_finished(),
        "a second connection was served while the first held containerConcurrency 1"
    );
    // The app closes with the code it was asked for; the client sees it.
    first.send(Message::text("close 4001")).unwrap();
    let closed_at = Instant::now();
    assert_eq!(
        closed(&mut first),
        Some((CloseCode::from(4001), "asked".to_owned()))
    );
    let (mut second, answer, answered_at) = second.join().unwrap();
    assert_eq!(answer, "ws-00001 v1 second");
    assert!(
        answered_at >= closed_at,
        "the second connection waited for the first"
    );
    // A client's close is answered with the same code.
    second
        .close(Some(CloseFrame {
            code: CloseCode::Away,
            reason: "bye".into(),
        }))
        .unwrap();
    assert_eq!(
        closed(&mut second),
        Some((CloseCode::Away, "bye".to_owned()))
    );

    // A connection open across a rollout stays on its revision; new ones reach the new one.
    let mut long = connect(p.port, host);
    assert_eq!(say(&mut long, "before"), "ws-00001 v1 before");
    p.ok(&["service", "update", "ws", "--env", "TARGET=v2"]);
    p.eventually(Duration::from_secs(20), "ws-00002 ready", || {
        p.is_ready("ws")
    });
    let mut fresh = connect(p.port, host);
    assert_eq!(say(&mut fresh, "new"), "ws-00002 v2 new");
    assert_eq!(say(&mut long, "after"), "ws-00001 v1 after");
    long.close(None).unwrap();
    fresh.close(None).unwrap();
    closed(&mut long);
    closed(&mut fresh);
}

#[test]
fn a_websocket_is_closed_at_the_revisions_timeout_seconds() {
    let p = Platform::start();
    let out = p.apply(&service_yaml(
        "wst",
        "ws",
        "m-ws-timeout",
        "t",
        "      timeoutSeconds: 3\n",
    ));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    p.eventually(Duration::from_secs(20), "wst ready", || p.is_ready("wst"));
    let opened = Instant::now();
    let mut ws = connect(p.port, "wst.default.localhost");
    assert_eq!(say(&mut ws, "one"), "wst-00001 t one");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        say(&mut ws, "two"),
        "wst-00001 t two",
        "open past the response's start"
    );
    // Knative's timeout handler ends the request at timeoutSeconds and its proxy closes the
    // hijacked connection with it: no close frame.
    assert_eq!(closed(&mut ws), None);
    let lived = opened.elapsed();
    eprintln!("websocket under timeoutSeconds 3 closed after {lived:?}");
    assert!(
        lived >= Duration::from_millis(2900) && lived < Duration::from_secs(10),
        "closed after {lived:?}"
    );
}

/// A revision whose port is named `h2c` gets HTTP/2 at its app, but HTTP/2 has no `Upgrade`:
/// a WebSocket's handshake stays HTTP/1.1 to the app, as Knative's queue-proxy chooses the
/// user process's protocol by the request's version. Still one request for its whole life,
/// and ended at timeoutSeconds.
#[test]
fn a_websocket_to_an_h2c_revision_reaches_its_app_in_http1() {
    let p = Platform::start();
    let yaml = service_yaml(
        "wsh",
        "ws",
        "m-ws-h2c",
        "h",
        "      containerConcurrency: 1\n      timeoutSeconds: 4\n",
    )
    .replace("- containerPort: 8080", "- name: h2c\n              containerPort: 8080")
    .replace(
        "  template:\n    spec:\n",
        "  template:\n    metadata:\n      annotations:\n        autoscaling.knative.dev/max-scale: \"1\"\n    spec:\n",
    );
    let out = p.apply(&yaml);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    p.eventually(Duration::from_secs(20), "wsh ready", || p.is_ready("wsh"));
    let host = "wsh.default.localhost";

    let mut first = connect(p.port, host);
    assert_eq!(say(&mut first, "hello"), "wsh-00001 h hello");
    first.send(Message::binary(vec![7u8, 0, 255])).unwrap();
    assert_eq!(first.read().unwrap(), Message::binary(vec![7u8, 0, 255]));
    let port = p.port;
    let asked = Instant::now();
    let second = std::thread::spawn(move || {
        let mut ws = connect(port, host);
        let answer = say(&mut ws, "second");
        (ws, answer)
    });
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        !second.is_finished(),
        "a second WebSocket was served while the first held containerConcurrency 1"
    );
    first.send(Message::text("close 4002")).unwrap();
    assert_eq!(
        closed(&mut first),
        Some((CloseCode::from(4002), "asked".to_owned()))
    );
    let (mut second, answer) = second.join().unwrap();
    assert_eq!(answer, "wsh-00001 h second");
    // Its timeout counts from when it reached the queue-proxy (waiting there for the slot
    // counts, as under Knative's timeout handler), which is after it was asked for.
    assert_eq!(
        closed(&mut second),
        None,
        "cut at timeoutSeconds, no close frame"
    );
    let lived = asked.elapsed();
    assert!(
        lived >= Duration::from_millis(3900) && lived < Duration::from_secs(12),
        "closed {lived:?} after it was asked for"
    );
}
