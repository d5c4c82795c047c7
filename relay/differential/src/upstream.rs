//! A strict HTTP/1.1 server on loopback for the proxies' tests: it reads requests with
//! [`crate::strict`] (CRLF only, as gunicorn or h11 do), so a request smuggled inside another
//! shows up as a request of its own, records everything it reads, and answers each request
//! with a line naming it (or whatever the test's answer function writes).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::message::{Message, Step};
use crate::strict;

/// What the upstream read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Heard {
    /// A whole request, on the `conn`th connection.
    Request {
        /// Which connection (0, 1, … in accept order).
        conn: usize,
        /// The request.
        message: Message,
    },
    /// Bytes the strict parser rejects; the connection was answered 400 and closed.
    Invalid {
        /// Which connection.
        conn: usize,
        /// Why.
        why: &'static str,
    },
    /// The connection closed in the middle of a request.
    Cut {
        /// Which connection.
        conn: usize,
    },
}

/// An answer: the bytes to write, and whether to close the connection after them.
pub type Answer = (Vec<u8>, bool);

/// A running upstream.
pub struct Upstream {
    /// Where it listens.
    pub addr: SocketAddr,
    heard: Arc<Mutex<Vec<Heard>>>,
}

/// The default answer: 200, `METHOD TARGET host=HOST body=BODY`, and the request's fields
/// that Sluice's proxies set or remove.
pub fn describe(m: &Message) -> Answer {
    let text = format!(
        "{} {} host={} body={}\n{}",
        String::from_utf8_lossy(&m.method),
        String::from_utf8_lossy(&m.target),
        String::from_utf8_lossy(m.host.as_deref().unwrap_or(b"-")),
        String::from_utf8_lossy(&m.body),
        String::from_utf8_lossy(&m.head),
    );
    (
        format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{text}",
            text.len()
        )
        .into_bytes(),
        false,
    )
}

impl Upstream {
    /// Starts one that answers with [`describe`].
    pub async fn start() -> Self {
        Self::answering(describe).await
    }

    /// Starts one that answers each request with `answer`.
    pub async fn answering(answer: impl Fn(&Message) -> Answer + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let heard = Arc::new(Mutex::new(Vec::new()));
        let answer = Arc::new(answer);
        let conns = Arc::new(AtomicUsize::new(0));
        let log = heard.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let conn = conns.fetch_add(1, Ordering::SeqCst);
                let (log, answer) = (log.clone(), answer.clone());
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 16 * 1024];
                    loop {
                        match strict::request(&buf) {
                            Step::Message(message, n) if !buf.is_empty() => {
                                buf.drain(..n);
                                let (bytes, close) = answer(&message);
                                log.lock()
                                    .expect("log")
                                    .push(Heard::Request { conn, message });
                                if stream.write_all(&bytes).await.is_err() || close {
                                    return;
                                }
                                continue;
                            }
                            Step::Invalid(why) => {
                                log.lock().expect("log").push(Heard::Invalid { conn, why });
                                let _ = stream
                                    .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                                    .await;
                                return;
                            }
                            _ => {}
                        }
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => {
                                if !buf.is_empty() {
                                    log.lock().expect("log").push(Heard::Cut { conn });
                                }
                                return;
                            }
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                });
            }
        });
        Self { addr, heard }
    }

    /// Everything heard so far.
    pub fn heard(&self) -> Vec<Heard> {
        self.heard.lock().expect("log").clone()
    }

    /// The targets of the whole requests heard so far.
    pub fn targets(&self) -> Vec<String> {
        self.heard()
            .into_iter()
            .filter_map(|h| match h {
                Heard::Request { message, .. } => {
                    Some(String::from_utf8_lossy(&message.target).into_owned())
                }
                _ => None,
            })
            .collect()
    }
}
