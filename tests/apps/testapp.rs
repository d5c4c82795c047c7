//! A user program for end-to-end tests, like Knative's test images. Listens on `$PORT`.
//!
//! - `testapp env`: answers with the Knative runtime variables it was given.
//! - `testapp overlap`: takes 100 ms per request and answers 500 if requests overlap
//!   (Knative's `singlethreaded` image), 200 otherwise.
//! - `testapp sleep`: sleeps `?ms=N` milliseconds, then answers 200.
//! - `testapp ws`: a WebSocket server (tungstenite, as Knative's `wsserver` image): each text
//!   message `M` is answered with `$K_REVISION $TARGET M`, binary messages are echoed, and the
//!   text `close CODE` makes the app close with that code and the reason `asked`.
//!
//! Any further arguments are ignored (tests use one as a marker to find the process).

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

fn main() {
    exit_on_sigterm();
    let mode = std::env::args().nth(1).unwrap_or_else(|| "env".into());
    // `--port=N` (given as `--port=$(PORT)` in a manifest) wins over $PORT.
    let port = std::env::args()
        .find_map(|a| a.strip_prefix("--port=").map(str::to_owned))
        .unwrap_or_else(|| std::env::var("PORT").expect("PORT is set by the platform"));
    let listener = TcpListener::bind(("127.0.0.1", port.parse::<u16>().expect("PORT is a number")))
        .expect("bind $PORT");
    let active = Arc::new(AtomicUsize::new(0));
    for stream in listener.incoming().flatten() {
        let (mode, active) = (mode.clone(), active.clone());
        if mode == "ws" {
            std::thread::spawn(move || websocket(stream));
            continue;
        }
        std::thread::spawn(move || serve(stream, &mode, &active));
    }
}

/// Exits on SIGTERM, as Knative's test images do: as a container's first process it would
/// otherwise ignore the signal (the kernel gives PID 1 no default action) and hold its pod for
/// the whole grace period. The platform sends it only once the queue-proxy has drained.
fn exit_on_sigterm() {
    std::thread::spawn(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .expect("a signal runtime");
        rt.block_on(async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("a SIGTERM handler");
            term.recv().await;
        });
        std::process::exit(0);
    });
}

fn serve(stream: TcpStream, mode: &str, active: &AtomicUsize) {
    let mut reader = BufReader::new(stream.try_clone().expect("clone stream"));
    let mut writer = stream;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let mut close = false;
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            if header.to_ascii_lowercase().starts_with("connection: close") {
                close = true;
            }
            if header == "\r\n" {
                break;
            }
        }
        let (status, body) = answer(mode, &request_line, active);
        let resp = format!(
            "HTTP/1.1 {status}\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        if writer.write_all(resp.as_bytes()).is_err() || close {
            return;
        }
    }
}

fn answer(mode: &str, request_line: &str, active: &AtomicUsize) -> (&'static str, String) {
    match mode {
        "overlap" => {
            let overlapped = active.fetch_add(1, Ordering::SeqCst) > 0;
            std::thread::sleep(Duration::from_millis(100));
            // Leave before answering, so the next request cannot see this one.
            active.fetch_sub(1, Ordering::SeqCst);
            if overlapped {
                ("500 Internal Server Error", "overlap\n".into())
            } else {
                ("200 OK", "alone\n".into())
            }
        }
        "sleep" => {
            let ms = request_line
                .split("ms=")
                .nth(1)
                .and_then(|r| r.split([' ', '&']).next())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            std::thread::sleep(Duration::from_millis(ms));
            ("200 OK", format!("slept {ms}ms\n"))
        }
        _ => {
            let var = |k: &str| std::env::var(k).unwrap_or_default();
            let body = [
                "PORT",
                "K_SERVICE",
                "K_CONFIGURATION",
                "K_REVISION",
                "TARGET",
            ]
            .iter()
            .map(|k| format!("{k}={}\n", var(k)))
            .collect();
            ("200 OK", body)
        }
    }
}

fn websocket(stream: TcpStream) {
    use tungstenite::Message;
    use tungstenite::protocol::CloseFrame;
    use tungstenite::protocol::frame::coding::CloseCode;
    let Ok(mut ws) = tungstenite::accept(stream) else {
        return;
    };
    let var = |k: &str| std::env::var(k).unwrap_or_default();
    let me = format!("{} {}", var("K_REVISION"), var("TARGET"));
    loop {
        let reply = match ws.read() {
            Ok(Message::Text(text)) => match text.strip_prefix("close ") {
                Some(code) => {
                    let code = code.trim().parse::<u16>().unwrap_or(1000);
                    let _ = ws.close(Some(CloseFrame {
                        code: CloseCode::from(code),
                        reason: "asked".into(),
                    }));
                    continue;
                }
                None => Message::text(format!("{me} {text}")),
            },
            Ok(Message::Binary(data)) => Message::Binary(data),
            Ok(_) => continue,
            // Closed (the close handshake done by tungstenite) or broken.
            Err(_) => return,
        };
        if ws.send(reply).is_err() {
            return;
        }
    }
}
