//! Sluice's queue-proxy: the process beside every replica. It proxies requests to the user
//! process on loopback, holds them to `containerConcurrency` with a bounded queue, answers 504
//! past the revision timeout, answers readiness probes from its own probing of the user
//! process, reports load on its admin port, and drains on SIGTERM.
//!
//! The request path ([`forward`]), in order: head read and checked by the relay
//! ([`sluice_relay`]) → probe answering → drain bookkeeping → small body read ahead → in-flight
//! stats → breaker → timeout → head rewriting → pooled HTTP/1.1 connections to the user
//! process. The admin port is [`sluice_runtime::admin`].
//!
//! Owns the sidecar's contract with its replica. Must not depend on the control plane.

pub mod breaker;
pub mod config;
mod forward;
mod h2;
pub mod probe;
pub mod stats;

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use sluice_api::contract::UserProtocol;
use sluice_relay::Pool;
use sluice_runtime::accept::Acceptor;
use sluice_runtime::admin;
use tokio::net::TcpListener;

use crate::breaker::Breaker;
use crate::config::Config;
use crate::probe::Readiness;
use crate::stats::Stats;

/// How long the queue-proxy keeps serving after SIGTERM once requests stop arriving.
#[derive(Clone, Copy, Debug)]
pub struct DrainPolicy {
    /// Serve until no request has arrived for this long.
    pub quiet_period: Duration,
    /// Then wait at most this long for in-flight requests.
    pub grace: Duration,
}

struct State {
    cfg: Config,
    user_addr: SocketAddr,
    /// `user_addr` as the authority of requests that came without one.
    user_host: String,
    upstream: Pool,
    /// The user process over HTTP/2, for an `h2c` revision.
    h2_user: sluice_relay::h2::H2Conns,
    /// The user process over hyper's HTTP/1.1, for HTTP/2 streams to any other revision.
    h1_user: Arc<sluice_relay::h2::H1Conns>,
    breaker: Option<Arc<Breaker>>,
    stats: Arc<Stats>,
    readiness: Arc<Readiness>,
    draining: Arc<AtomicBool>,
    /// True once draining has finished: `/wait-for-drain` (the user containers' preStop
    /// hook) answers then, so the user process gets SIGTERM only after its last request.
    drained: tokio::sync::watch::Sender<bool>,
    started: std::time::Instant,
    last_request_ms: AtomicU64,
}

impl State {
    fn touch(&self) {
        let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_request_ms.store(ms, Ordering::Release);
    }

    fn idle_for(&self) -> Duration {
        let now = self.started.elapsed().as_millis();
        let last = u128::from(self.last_request_ms.load(Ordering::Acquire));
        Duration::from_millis(u64::try_from(now.saturating_sub(last)).unwrap_or(u64::MAX))
    }

    /// Knative's probe contract: `K-Network-Probe: queue` gets 200 `queue` when ready. Until
    /// the user process is first seen ready, each probe also checks it on the spot (as
    /// Knative's queue-proxy does), so readiness is not delayed by the probe period.
    async fn probe(&self, for_queue: bool) -> (u16, &'static str) {
        if !for_queue {
            return (400, "unexpected probe header value: want queue");
        }
        let draining = self.draining.load(Ordering::Acquire);
        if !draining && !self.readiness.is_ready() {
            self.readiness
                .check_now(self.user_addr, &self.cfg.readiness)
                .await;
        }
        if draining {
            (503, "shutting down")
        } else if self.readiness.is_ready() {
            (200, "queue")
        } else {
            (503, "user process not ready")
        }
    }
}

/// The admin port: `/metrics`, `/healthz`, `/readyz`, and `/wait-for-drain` (answered in
/// [`run`]).
fn answer_admin(state: &State, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    match req.uri().path() {
        "/metrics" => {
            let labels = format!(
                "destination_namespace=\"{}\",destination_revision=\"{}\",destination_pod=\"{}\"",
                state.cfg.namespace, state.cfg.revision, state.cfg.pod
            );
            admin::metrics(state.stats.render(&labels))
        }
        "/healthz" => admin::text(StatusCode::OK, "ok"),
        "/readyz" if state.readiness.is_ready() => admin::text(StatusCode::OK, "ready"),
        "/readyz" => admin::text(StatusCode::SERVICE_UNAVAILABLE, "not ready"),
        _ => admin::text(StatusCode::NOT_FOUND, "not found"),
    }
}

/// How many admin connections (the autoscaler's scrapes, probes) may be open at once.
const ADMIN_CONNECTIONS: usize = 64;

/// Serves one client connection: HTTP/2 (told by its preface) and, for an `h2c` revision,
/// every request through hyper; HTTP/1.1 to an HTTP/1.1 revision through the relay.
async fn serve(
    state: Arc<State>,
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    closing: tokio::sync::watch::Receiver<bool>,
) {
    use sluice_relay::h2::Protocol;
    let mut down = sluice_relay::Downstream::new(stream, closing.clone(), state.cfg.limits);
    match down.sniff().await {
        None => {}
        Some(Protocol::Http1) if state.cfg.user_protocol == UserProtocol::Http1 => {
            forward::serve(state, down, peer).await;
        }
        Some(protocol) => h2::serve(state, down.into_io(), protocol, peer, closing).await,
    }
}

/// How soon after a user container's preStop hook the queue-proxy must itself be told to
/// stop for the hook to wait for its drain.
const PRESTOP_STOP_WITHIN: Duration = Duration::from_secs(1);

/// Runs the queue-proxy on bound listeners until `shutdown` resolves, then drains.
pub async fn run(
    cfg: Config,
    listener: TcpListener,
    admin_listener: TcpListener,
    drain: DrainPolicy,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let user_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, cfg.user_port));
    let idle = if cfg.container_concurrency == 0 {
        1000
    } else {
        cfg.container_concurrency as usize
    };
    let limits = cfg.limits;
    let state = Arc::new(State {
        breaker: Breaker::for_concurrency(cfg.container_concurrency),
        user_addr,
        user_host: user_addr.to_string(),
        upstream: Pool::new(idle, cfg.limits.pool_idle),
        h2_user: sluice_relay::h2::H2Conns::new(),
        h1_user: sluice_relay::h2::H1Conns::new(user_addr, idle),
        cfg,
        stats: Arc::new(Stats::new()),
        readiness: Arc::new(Readiness::default()),
        draining: Arc::new(AtomicBool::new(false)),
        drained: tokio::sync::watch::Sender::new(false),
        started: std::time::Instant::now(),
        last_request_ms: AtomicU64::new(0),
    });
    let prober = tokio::spawn(state.readiness.clone().run(
        user_addr,
        state.cfg.readiness.clone(),
        state.draining.clone(),
    ));
    let ticker = {
        let stats = state.stats.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(1));
            loop {
                every.tick().await;
                stats.tick();
            }
        })
    };
    let admin_task = {
        let state = state.clone();
        let acceptor = Acceptor::new(admin_listener, ADMIN_CONNECTIONS, "queue-proxy admin");
        tokio::spawn(admin::serve(acceptor, move |req| {
            // Knative's preStop contract: block until this queue-proxy has drained.
            let wait = (req.uri().path() == "/wait-for-drain").then(|| state.drained.subscribe());
            let answer = answer_admin(&state, &req);
            let draining = state.draining.clone();
            async move {
                let Some(mut drained) = wait else {
                    return answer;
                };
                // As Knative's: a queue-proxy not told to stop within a second of the hook is
                // not being stopped. The kubelet is restarting the user container alone (its
                // liveness probe failed), and that restart must not wait for a drain that
                // will not come (it would take the pod's whole termination grace period).
                let waited = tokio::time::timeout(PRESTOP_STOP_WITHIN, async {
                    let _ = drained.wait_for(|d| *d).await;
                })
                .await;
                if waited.is_err() {
                    if !draining.load(Ordering::Acquire) {
                        return admin::text(StatusCode::OK, "not stopping");
                    }
                    let _ = drained.wait_for(|d| *d).await;
                }
                admin::text(StatusCode::OK, "drained")
            }
        }))
    };

    // Connections close once idle after `closing` turns true.
    let (closing, closed) = tokio::sync::watch::channel(false);
    let mut conns = tokio::task::JoinSet::new();
    let mut acceptor = Acceptor::new(listener, limits.max_connections, "queue-proxy");
    let mut accept = |(stream, peer, place): (tokio::net::TcpStream, SocketAddr, _)| {
        let _ = stream.set_nodelay(true);
        while conns.try_join_next().is_some() {}
        let state = state.clone();
        let closed = closed.clone();
        conns.spawn(async move {
            serve(state, stream, peer, closed).await;
            drop(place);
        });
    };
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            conn = acceptor.accept() => accept(conn),
            () = &mut shutdown => break,
        }
    }
    // Draining: probes fail so no new traffic is routed here; keep serving until quiet.
    state.draining.store(true, Ordering::Release);
    state.readiness.set_not_ready();
    tracing::info!(revision = %state.cfg.revision, "Draining.");
    loop {
        let idle = state.idle_for();
        if idle >= drain.quiet_period {
            break;
        }
        tokio::select! {
            conn = acceptor.accept() => accept(conn),
            () = tokio::time::sleep(drain.quiet_period - idle) => {}
        }
    }
    drop(acceptor);
    let _ = closing.send(true);
    let _ = tokio::time::timeout(drain.grace, async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    conns.abort_all();
    // Release the preStop hooks waiting on the admin port before it closes.
    // Their answers are written by the admin connections' own tasks: give those a moment.
    let waiting = state.drained.receiver_count() > 0;
    state.drained.send_replace(true);
    if waiting {
        let _ = tokio::time::timeout(Duration::from_millis(500), state.drained.closed()).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    prober.abort();
    ticker.abort();
    admin_task.abort();
    Ok(())
}

/// Entry point of the `queue-proxy` binary (and `sluice queue-proxy`): config from the
/// environment, listeners on loopback unless `QUEUE_BIND_ADDRESS` says otherwise, SIGTERM or
/// SIGINT to drain.
pub fn main_from_env() -> std::process::ExitCode {
    sluice_runtime::init_logging();
    if let Err(error) = sluice_runtime::raise_fd_limit() {
        tracing::warn!(%error, "Cannot raise the open-file limit.");
    }
    let cfg = match Config::from_env(&config::ProcessEnv) {
        Ok(cfg) => cfg,
        Err(error) => {
            eprintln!("{error}");
            return std::process::ExitCode::from(2);
        }
    };
    let bind: std::net::IpAddr = std::env::var(sluice_api::contract::env::BIND_ADDRESS)
        .ok()
        .and_then(|a| a.parse().ok())
        .unwrap_or(Ipv4Addr::LOCALHOST.into());
    let quiet = std::env::var(sluice_api::contract::env::DRAIN_QUIET_MILLISECONDS)
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(Duration::from_secs(30), Duration::from_millis);
    let drain = DrainPolicy {
        quiet_period: quiet,
        grace: cfg.timeout,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = runtime.block_on(async {
        let listener = sluice_runtime::listen(SocketAddr::new(bind, cfg.serving_port))?;
        let admin = TcpListener::bind((bind, cfg.admin_port)).await?;
        run(
            cfg,
            listener,
            admin,
            drain,
            sluice_runtime::terminate_signal(),
        )
        .await
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("queue-proxy: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}
