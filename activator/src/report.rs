//! The activator's reports to the autoscaler: every second, each revision's held and in-flight
//! averages; at once, a revision that just got a request while it has no replica ready
//! (Knative's poke, so scale-from-zero does not wait for the next tick). Locally they are
//! `POST /v1/stats` on the daemon's admin socket.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use sluice_platform::local::uds;
use sluice_platform::{ActivatorStat, RevisionKey};
use tokio::sync::mpsc;

use crate::Routes;

/// Knative's activator reporting period.
pub const REPORT_PERIOD: Duration = Duration::from_secs(1);

/// Every revision's stat for the period that just ended (revisions with no activity are left
/// out).
pub fn collect(routes: &Routes) -> Vec<ActivatorStat> {
    routes
        .table()
        .revisions()
        .filter_map(|r| r.demand.report(&r.key, r.in_flight()))
        .collect()
}

/// What a poke says: one request waiting for a revision with nothing ready.
pub fn poke(revision: RevisionKey) -> ActivatorStat {
    ActivatorStat {
        revision,
        held: 1.0,
        in_flight: 0.0,
        held_requests: 1.0,
    }
}

/// Reports to the local daemon until the process ends.
pub async fn report_local(
    socket: PathBuf,
    routes: Arc<Routes>,
    mut pokes: mpsc::UnboundedReceiver<RevisionKey>,
) {
    let mut period = tokio::time::interval(REPORT_PERIOD);
    period.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let stats = tokio::select! {
            _ = period.tick() => collect(&routes),
            Some(key) = pokes.recv() => vec![poke(key)],
        };
        if stats.is_empty() {
            continue;
        }
        if let Err(error) = send(&socket, &stats).await {
            tracing::warn!(%error, "Cannot report to the autoscaler.");
        }
    }
}

async fn send(
    socket: &Path,
    stats: &[ActivatorStat],
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let body = serde_json::to_vec(stats)?;
    let req = Request::post("/v1/stats")
        .header("host", "sluice")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))?;
    let resp = uds::request(socket, req).await?;
    if !resp.status().is_success() {
        return Err(format!("the daemon answered {}", resp.status()).into());
    }
    Ok(())
}
