//! `sluice system controller`: the control plane on a cluster. Candidates elect one leader
//! with a Lease; the leader runs the reconcilers over the API server (KubeStore, KubeWorkloads)
//! and the KPA autoscaler, which scrapes queue-proxies at their pod IPs and scales through
//! `/scale`. Every candidate serves the stats endpoint the activators report to, and only the
//! leader is ready, so the `sluice-autoscaler` Service sends reports to the leader alone.
//! Every candidate serves the admission webhooks (see [`crate::webhook`]).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use sluice_controller::{Autoscaler, Controller};
use sluice_platform::routing::RoutingFeed;
use sluice_platform::{ActivatorStat, Clock, SystemClock};
use sluice_platform_kube::{Elector, KubeStore, KubeWorkloads, KubeWorkloadsConfig, LeaseTimings};
use sluice_runtime::accept::Acceptor;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// The Lease the controllers elect their leader with.
pub const LEASE_NAME: &str = "sluice-controller";

/// Options of `sluice system controller`.
#[derive(Debug, clap::Args)]
pub struct ControllerArgs {
    /// Namespace of the Lease and of Sluice's config maps.
    #[arg(long, env = "SYSTEM_NAMESPACE", default_value = sluice_platform_kube::SYSTEM_NAMESPACE)]
    pub system_namespace: String,
    /// Image of the queue-proxy sidecar (the Sluice image).
    #[arg(
        long,
        env = "SLUICE_QUEUE_PROXY_IMAGE",
        default_value = "ghcr.io/sluice-dev/sluice:0.1.0"
    )]
    pub queue_proxy_image: String,
    /// Where activators report (`POST /v1/stats`); also `/healthz`, `/readyz` (leader only)
    /// and `/metrics`.
    #[arg(long, env = "SLUICE_STATS_ADDRESS", default_value = "127.0.0.1:8080")]
    pub stats_address: SocketAddr,
    /// This candidate's name in the Lease (default: the host name and process id).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Seconds a leader's lease holds without renewal (renewal every duration/7, and the
    /// leader gives up after 2/3 of it without one).
    #[arg(long, default_value_t = 15)]
    pub lease_seconds: u64,
    /// Where each Route's placeholder Service points (ExternalName): the front door's
    /// Service (default `sluice-activator.SYSTEM_NAMESPACE.svc.cluster.local`).
    #[arg(long, env = "SLUICE_INGRESS_HOST")]
    pub ingress_host: Option<String>,
    /// The admission webhooks (every candidate serves them, leader or not).
    #[command(flatten)]
    pub webhook: crate::webhook::WebhookArgs,
}

fn identity(args: &ControllerArgs) -> String {
    args.identity.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| "sluice".into());
        format!("{host}-{}", std::process::id())
    })
}

/// What the stats endpoint serves from.
struct Stats {
    autoscaler: Arc<Autoscaler>,
    leader: AtomicBool,
    identity: String,
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    resp
}

impl Stats {
    async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
    ) -> Result<Response<Full<Bytes>>, Infallible> {
        let leader = self.leader.load(Ordering::Relaxed);
        Ok(match (req.method().clone(), req.uri().path()) {
            (Method::POST, "/v1/stats") => {
                let body = match req.into_body().collect().await {
                    Ok(b) => b.to_bytes(),
                    Err(e) => return Ok(text(StatusCode::BAD_REQUEST, e.to_string())),
                };
                match serde_json::from_slice::<Vec<ActivatorStat>>(&body) {
                    Ok(stats) if leader => {
                        for stat in &stats {
                            self.autoscaler.report(stat);
                        }
                        text(StatusCode::OK, "{}")
                    }
                    Ok(_) => text(
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!("{} is not the leader\n", self.identity),
                    ),
                    Err(e) => text(
                        StatusCode::BAD_REQUEST,
                        format!("body is not activator stats: {e}\n"),
                    ),
                }
            }
            (Method::GET, "/healthz") => text(StatusCode::OK, "ok\n"),
            (Method::GET, "/readyz") if leader => text(StatusCode::OK, "ok\n"),
            (Method::GET, "/readyz") => text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("{} is waiting for the lease\n", self.identity),
            ),
            (Method::GET, "/metrics") => text(
                StatusCode::OK,
                format!(
                    "# HELP sluice_controller_leader Whether this controller holds the lease.\n# TYPE sluice_controller_leader gauge\nsluice_controller_leader {}\n",
                    u8::from(leader)
                ),
            ),
            _ => text(StatusCode::NOT_FOUND, "no such endpoint\n"),
        })
    }
}

/// How many connections the stats endpoint holds at once (activators' reports, probes).
const STATS_CONNECTIONS: usize = 1024;

async fn serve_stats(listener: TcpListener, stats: Arc<Stats>) {
    let acceptor = Acceptor::new(listener, STATS_CONNECTIONS, "controller stats");
    sluice_runtime::admin::serve(acceptor, move |req| {
        let stats = stats.clone();
        async move {
            match stats.handle(req).await {
                Ok(resp) => resp,
                Err(never) => match never {},
            }
        }
    })
    .await;
}

/// Runs until `shutdown`, or fails when leadership is lost (the process restarts and
/// becomes a candidate again, as Kubernetes controllers do).
pub async fn run(
    client: kube::Client,
    args: ControllerArgs,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let identity = identity(&args);
    let clock: Arc<dyn Clock> = Arc::new(SystemClock::new());
    let autoscaler = Autoscaler::new(clock.clone());
    let stats = Arc::new(Stats {
        autoscaler: autoscaler.clone(),
        leader: AtomicBool::new(false),
        identity: identity.clone(),
    });
    let listener = TcpListener::bind(args.stats_address)
        .await
        .with_context(|| format!("cannot listen on {}", args.stats_address))?;
    tokio::spawn(serve_stats(listener, stats.clone()));
    let settings = sluice_platform_kube::settings(client.clone(), &args.system_namespace).await?;
    crate::webhook::start(
        client.clone(),
        &args.system_namespace,
        &args.webhook,
        settings.clone(),
    )
    .await?;

    let duration = Duration::from_secs(args.lease_seconds.max(1));
    let timings = LeaseTimings {
        duration,
        renew_deadline: duration * 2 / 3,
        retry_period: duration / 7,
    };
    let mut elector = Elector::new(
        client.clone(),
        &args.system_namespace,
        LEASE_NAME,
        &identity,
        timings,
    );
    tokio::pin!(shutdown);
    tokio::select! {
        () = elector.acquire() => {}
        () = &mut shutdown => return Ok(()),
    }
    stats.leader.store(true, Ordering::Relaxed);

    let store = Arc::new(KubeStore::new(client.clone()));
    store.watch();
    let workloads = Arc::new(KubeWorkloads::new(
        client.clone(),
        KubeWorkloadsConfig {
            queue_proxy_image: args.queue_proxy_image,
        },
    ));
    workloads.watch();
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let scaling = tokio::spawn(sluice_controller::autoscaling::run(
        autoscaler.clone(),
        workloads.clone(),
        stopped(stop_rx.clone()),
    ));
    // The activators build their own snapshots from the cluster; this feed is unread.
    let routing = Arc::new(RoutingFeed::new());
    let controller = Controller::new(store, workloads, autoscaler, settings, routing, clock);
    let ingress = args.ingress_host.clone().unwrap_or_else(|| {
        format!(
            "sluice-activator.{}.svc.cluster.local",
            args.system_namespace
        )
    });
    let placeholders = tokio::spawn(sluice_platform_kube::route_services::run(
        client.clone(),
        ingress,
        stopped(stop_rx.clone()),
    ));
    let reconciling = tokio::spawn(controller.run(stopped(stop_rx)));
    tracing::info!(%identity, "Controller and autoscaler running.");

    let lost = tokio::select! {
        () = elector.hold() => true,
        () = &mut shutdown => false,
    };
    stats.leader.store(false, Ordering::Relaxed);
    stop_tx.send_replace(true);
    let _ = reconciling.await;
    let _ = scaling.await;
    let _ = placeholders.await;
    if lost {
        anyhow::bail!("lost the {LEASE_NAME} lease; exiting so a new leader can take over");
    }
    elector.release().await;
    Ok(())
}
