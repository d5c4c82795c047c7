//! The activator's reports to the autoscaler: every second, each revision's held and in-flight
//! averages; at once, a revision that just got a request while it has no replica ready
//! (Knative's poke, so scale-from-zero does not wait for the next tick). They are
//! `POST /v1/stats`: locally on the daemon's admin socket, on a cluster to the autoscaler's
//! Service.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use sluice_platform::{ActivatorStat, RevisionKey};
use sluice_runtime::uds;
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

/// Where reports go.
#[derive(Clone, Debug)]
pub enum Sink {
    /// The local daemon's admin socket.
    Socket(PathBuf),
    /// The autoscaler's HTTP endpoint on a cluster, e.g.
    /// `http://sluice-autoscaler.sluice-system.svc:8080`.
    Http(String),
}

/// Reports to `sink` until the process ends.
pub async fn report(
    sink: Sink,
    routes: Arc<Routes>,
    mut pokes: mpsc::UnboundedReceiver<RevisionKey>,
) {
    let http = Client::builder(TokioExecutor::new()).build(HttpConnector::new());
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
        let sent = match &sink {
            Sink::Socket(socket) => send_local(socket, &stats).await,
            Sink::Http(base) => send_http(&http, base, &stats).await,
        };
        if let Err(error) = sent {
            tracing::warn!(%error, "Cannot report to the autoscaler.");
        }
    }
}

type Error = Box<dyn std::error::Error + Send + Sync>;

fn stats_request(uri: &str, stats: &[ActivatorStat]) -> Result<Request<Full<Bytes>>, Error> {
    let body = serde_json::to_vec(stats)?;
    Ok(Request::post(uri)
        .header("host", "sluice")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))?)
}

async fn send_local(socket: &Path, stats: &[ActivatorStat]) -> Result<(), Error> {
    let resp = uds::request(socket, stats_request("/v1/stats", stats)?).await?;
    if !resp.status().is_success() {
        return Err(format!("the daemon answered {}", resp.status()).into());
    }
    Ok(())
}

async fn send_http(
    client: &Client<HttpConnector, Full<Bytes>>,
    base: &str,
    stats: &[ActivatorStat],
) -> Result<(), Error> {
    let uri = format!("{}/v1/stats", base.trim_end_matches('/'));
    let mut req = stats_request(&uri, stats)?;
    req.headers_mut().remove(http::header::HOST);
    let resp = client.request(req).await?;
    if !resp.status().is_success() {
        return Err(format!("the autoscaler at {base} answered {}", resp.status()).into());
    }
    Ok(())
}
