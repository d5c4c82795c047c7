//! Where routing comes from. Locally: a stream of JSON lines from the daemon's admin socket
//! (`GET /v1/routing/watch`), the whole snapshot and then what changed, followed forever with
//! reconnects (each starting from the whole snapshot again).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::Request;
use http_body_util::{BodyExt, Full};
use sluice_platform::routing::RoutingUpdate;
use sluice_runtime::uds;

use crate::Routes;

/// Follows the daemon's routing stream, installing every line; reconnects on failure.
pub async fn follow_local(socket: PathBuf, routes: Arc<Routes>) {
    let mut backoff = Duration::from_millis(50);
    loop {
        match stream_once(&socket, &routes).await {
            Ok(()) => backoff = Duration::from_millis(50),
            Err(error) => tracing::warn!(%error, "Routing stream failed; reconnecting."),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

async fn stream_once(
    socket: &std::path::Path,
    routes: &Routes,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let req = Request::get("/v1/routing/watch")
        .header("host", "sluice")
        .body(Full::new(Bytes::new()))?;
    let resp = uds::request(socket, req).await?;
    if !resp.status().is_success() {
        return Err(format!("routing stream answered {}", resp.status()).into());
    }
    let mut body = resp.into_body();
    let mut buf = BytesMut::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            buf.extend_from_slice(&data);
        }
        while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
            let line = buf.split_to(pos + 1);
            let update: RoutingUpdate = serde_json::from_slice(line.chunk())?;
            routes.apply(&update);
        }
    }
    Ok(())
}
