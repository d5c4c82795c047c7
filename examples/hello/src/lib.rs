//! Knative's helloworld sample: every request gets `Hello {TARGET}!` (TARGET defaults to
//! `World`). Kept dependency-free beyond tokio so it starts in milliseconds.
//!
//! Owns the sample quickstart deploys. Must not depend on any Sluice crate.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// The greeting for a target.
pub fn greeting(target: &str) -> String {
    format!("Hello {target}!\n")
}

/// Serves the greeting on `listener` forever, HTTP/1.1 with keep-alive.
pub async fn serve(listener: TcpListener, target: String) -> std::io::Result<()> {
    let body = greeting(&target);
    loop {
        let (mut stream, _) = listener.accept().await?;
        let body = body.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 8192];
            let mut filled = 0;
            loop {
                let Ok(n) = stream.read(&mut buf[filled..]).await else {
                    return;
                };
                if n == 0 {
                    return;
                }
                filled += n;
                // Answer each complete request head; bodies of requests are not expected.
                while let Some(end) = buf[..filled].windows(4).position(|w| w == b"\r\n\r\n") {
                    let close = String::from_utf8_lossy(&buf[..end])
                        .to_ascii_lowercase()
                        .contains("connection: close");
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if stream.write_all(resp.as_bytes()).await.is_err() || close {
                        return;
                    }
                    buf.copy_within(end + 4..filled, 0);
                    filled -= end + 4;
                }
                if filled == buf.len() {
                    return;
                }
            }
        });
    }
}

/// Runs the sample as a process does: `$PORT` (8080) on all interfaces, `$TARGET`.
pub fn main_from_env() -> std::process::ExitCode {
    let port: u16 = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(8080);
    let target = std::env::var("TARGET").unwrap_or_else(|_| "World".to_owned());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = runtime.block_on(async {
        let listener = TcpListener::bind(("127.0.0.1", port)).await?;
        eprintln!("hello: listening on port {port}");
        serve(listener, target).await
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("hello: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}
