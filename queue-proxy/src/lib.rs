//! Sluice's queue-proxy: the process beside every replica. It proxies requests to the user
//! process on loopback, holds them to `containerConcurrency` with a bounded queue, answers 504
//! past the revision timeout, answers readiness probes from its own probing of the user
//! process, reports load on its admin port, and drains on SIGTERM.
//!
//! The request path ([`forward`]), in order: probe answering → drain bookkeeping → in-flight
//! stats → breaker → timeout → head rewriting ([`h1`]) → pooled HTTP/1.1 connections to the
//! user process ([`relay`]). It is Sluice's own HTTP/1.1 forwarding rather than hyper's
//! server and client: one task per client connection, no channel between tasks, bodies passed
//! through unchanged. The admin port stays on hyper.

pub mod breaker;
pub mod config;
mod forward;
pub mod h1;
pub mod probe;
pub mod relay;
pub mod stats;

use std::convert::Infallible;
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::header::HeaderValue;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::breaker::Breaker;
use crate::config::Config;
use crate::probe::Readiness;
use crate::stats::Stats;

/// Boxed error of a response body.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The response body type.
pub type Body = BoxBody<Bytes, BoxError>;

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
    upstream: relay::Pool,
    breaker: Option<Arc<Breaker>>,
    stats: Arc<Stats>,
    readiness: Arc<Readiness>,
    draining: Arc<AtomicBool>,
    started: std::time::Instant,
    last_request_ms: AtomicU64,
}

/// A plain-text response (the body of every error Sluice's proxies answer themselves).
pub fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut resp = Response::new(
        Full::new(body.into())
            .map_err(|never| match never {})
            .boxed(),
    );
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
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
    async fn probe(&self, value: &[u8]) -> (u16, &'static str) {
        if value != b"queue" {
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

async fn admin(state: Arc<State>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    Ok(match req.uri().path() {
        "/metrics" => {
            let labels = format!(
                "destination_namespace=\"{}\",destination_revision=\"{}\",destination_pod=\"{}\"",
                state.cfg.namespace, state.cfg.revision, state.cfg.pod
            );
            let mut resp = text(StatusCode::OK, state.stats.render(&labels));
            resp.headers_mut().insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            resp
        }
        "/healthz" => text(StatusCode::OK, "ok"),
        "/readyz" if state.readiness.is_ready() => text(StatusCode::OK, "ready"),
        "/readyz" => text(StatusCode::SERVICE_UNAVAILABLE, "not ready"),
        _ => text(StatusCode::NOT_FOUND, "not found"),
    })
}

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
    let state = Arc::new(State {
        breaker: Breaker::for_concurrency(cfg.container_concurrency),
        cfg,
        user_addr,
        upstream: relay::Pool::new(idle),
        stats: Arc::new(Stats::new()),
        readiness: Arc::new(Readiness::default()),
        draining: Arc::new(AtomicBool::new(false)),
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
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = admin_listener.accept().await else {
                    continue;
                };
                let state = state.clone();
                let svc = service_fn(move |req| admin(state.clone(), req));
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc),
                );
            }
        })
    };

    // Connections close once idle after `closing` turns true.
    let (closing, closed) = tokio::sync::watch::channel(false);
    let mut conns = tokio::task::JoinSet::new();
    let mut accept = |stream: tokio::net::TcpStream, peer: SocketAddr| {
        let _ = stream.set_nodelay(true);
        while conns.try_join_next().is_some() {}
        conns.spawn(forward::serve(state.clone(), stream, peer, closed.clone()));
    };
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            conn = listener.accept() => match conn {
                Ok((stream, peer)) => accept(stream, peer),
                Err(error) => tracing::warn!(%error, "Accept failed."),
            },
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
            conn = listener.accept() => if let Ok((stream, peer)) = conn { accept(stream, peer) },
            () = tokio::time::sleep(drain.quiet_period - idle) => {}
        }
    }
    drop(listener);
    let _ = closing.send(true);
    let _ = tokio::time::timeout(drain.grace, async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    conns.abort_all();
    prober.abort();
    ticker.abort();
    admin_task.abort();
    Ok(())
}

/// Entry point of the `queue-proxy` binary (and `sluice queue-proxy`): config from the
/// environment, listeners on loopback unless `QUEUE_BIND_ADDRESS` says otherwise, SIGTERM or
/// SIGINT to drain.
pub fn main_from_env() -> std::process::ExitCode {
    init_logging();
    let cfg = match Config::from_env(&config::ProcessEnv) {
        Ok(cfg) => cfg,
        Err(error) => {
            eprintln!("{error}");
            return std::process::ExitCode::from(2);
        }
    };
    let bind: std::net::IpAddr = std::env::var("QUEUE_BIND_ADDRESS")
        .ok()
        .and_then(|a| a.parse().ok())
        .unwrap_or(Ipv4Addr::LOCALHOST.into());
    let quiet = std::env::var("QUEUE_DRAIN_QUIET_MILLISECONDS")
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
        let listener = TcpListener::bind((bind, cfg.serving_port)).await?;
        let admin = TcpListener::bind((bind, cfg.admin_port)).await?;
        run(cfg, listener, admin, drain, terminate_signal()).await
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("queue-proxy: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Logs to stderr, filtered by `$SLUICE_LOG` (default `info`), plain when not a terminal.
/// Every Sluice binary logs this way.
pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SLUICE_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// Resolves on SIGTERM or SIGINT.
pub async fn terminate_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
