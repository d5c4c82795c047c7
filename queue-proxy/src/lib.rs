//! Sluice's queue-proxy: the process beside every replica. It proxies requests to the user
//! process on loopback, holds them to `containerConcurrency` with a bounded queue, answers 504
//! past the revision timeout, answers readiness probes from its own probing of the user
//! process, reports load on its admin port, and drains on SIGTERM.
//!
//! The layers, outermost first: probe answering → drain bookkeeping → in-flight stats →
//! breaker → timeout → header rewriting → pooled HTTP/1.1 connections to the user process
//! ([`upstream`]).

pub mod body;
pub mod breaker;
pub mod config;
pub mod probe;
pub mod stats;
pub mod upstream;

use std::convert::Infallible;
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::header::{HOST, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::time::Instant;

use crate::body::GuardedBody;
use crate::breaker::{Breaker, QueueFull};
use crate::config::Config;
use crate::probe::Readiness;
use crate::stats::Stats;

/// Boxed error of a response body.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The response body type.
pub type Body = BoxBody<Bytes, BoxError>;

const K_NETWORK_PROBE: HeaderName = HeaderName::from_static("k-network-probe");
const K_ORIGINAL_HOST: HeaderName = HeaderName::from_static("k-original-host");
const FORWARDED: HeaderName = HeaderName::from_static("forwarded");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const KNATIVE_SERVING_REVISION: HeaderName = HeaderName::from_static("knative-serving-revision");
const KNATIVE_SERVING_NAMESPACE: HeaderName = HeaderName::from_static("knative-serving-namespace");

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
    /// `Host` for requests that came without one.
    user_host: HeaderValue,
    upstream: Arc<upstream::Upstream>,
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
    async fn probe(&self, req: &Request<Incoming>) -> Option<Response<Body>> {
        let value = req.headers().get(K_NETWORK_PROBE)?;
        if value != "queue" {
            return Some(text(
                StatusCode::BAD_REQUEST,
                format!("unexpected probe header value: {value:?}"),
            ));
        }
        let draining = self.draining.load(Ordering::Acquire);
        if !draining && !self.readiness.is_ready() {
            self.readiness
                .check_now(self.user_addr, &self.cfg.readiness)
                .await;
        }
        Some(if draining {
            text(StatusCode::SERVICE_UNAVAILABLE, "shutting down")
        } else if self.readiness.is_ready() {
            text(StatusCode::OK, "queue")
        } else {
            text(StatusCode::SERVICE_UNAVAILABLE, "user process not ready")
        })
    }

    /// The request as the user process gets it: origin-form target, `K-Original-Host` as
    /// `Host`, Knative's routing headers removed, the peer appended to `X-Forwarded-For`, and
    /// `Forwarded` derived from the `X-Forwarded-*` headers when absent.
    fn rewrite(&self, req: Request<Incoming>, peer_ip: &HeaderValue) -> Request<Incoming> {
        let (mut parts, body) = req.into_parts();
        if parts.uri.scheme().is_some() || parts.uri.authority().is_some() {
            parts.uri = parts
                .uri
                .path_and_query()
                .and_then(|p| Uri::try_from(p.as_str()).ok())
                .unwrap_or_else(|| Uri::from_static("/"));
        }
        let h = &mut parts.headers;
        if let Some(original) = h.remove(K_ORIGINAL_HOST) {
            h.insert(HOST, original);
        } else if !h.contains_key(HOST) {
            h.insert(HOST, self.user_host.clone());
        }
        h.remove(KNATIVE_SERVING_REVISION);
        h.remove(KNATIVE_SERVING_NAMESPACE);
        let xff = match h.get(X_FORWARDED_FOR) {
            Some(prev) => {
                let mut joined = Vec::with_capacity(prev.len() + 2 + peer_ip.len());
                joined.extend_from_slice(prev.as_bytes());
                joined.extend_from_slice(b", ");
                joined.extend_from_slice(peer_ip.as_bytes());
                HeaderValue::from_bytes(&joined).unwrap_or_else(|_| peer_ip.clone())
            }
            None => peer_ip.clone(),
        };
        if !h.contains_key(FORWARDED) {
            // RFC 7239 from the X-Forwarded-* headers, as Knative's forwarded shim does.
            let xff_text = xff.to_str().unwrap_or("");
            let mut fwd = String::with_capacity(64);
            for (i, node) in xff_text.split(',').enumerate() {
                if i > 0 {
                    fwd.push_str(", ");
                }
                fwd.push_str("for=");
                push_node(&mut fwd, node.trim());
            }
            if let Some(host) = h.get(HOST).and_then(|v| v.to_str().ok()) {
                fwd.push_str(";host=");
                fwd.push_str(host);
            }
            let proto = h
                .get(X_FORWARDED_PROTO)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("http");
            fwd.push_str(";proto=");
            fwd.push_str(proto);
            if let Ok(v) = HeaderValue::from_str(&fwd) {
                h.insert(FORWARDED, v);
            }
        }
        h.insert(X_FORWARDED_FOR, xff);
        Request::from_parts(parts, body)
    }
}

/// An RFC 7239 node: IPv6 addresses are bracketed and quoted.
fn push_node(out: &mut String, addr: &str) {
    if addr.contains(':') {
        out.push_str("\"[");
        out.push_str(addr);
        out.push_str("]\"");
    } else {
        out.push_str(addr);
    }
}

async fn handle(
    state: Arc<State>,
    peer_ip: HeaderValue,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    if let Some(resp) = state.probe(&req).await {
        return Ok(resp);
    }
    state.touch();
    let in_flight = state.stats.begin();
    let started = Instant::now();
    let deadline = started + state.cfg.timeout;
    let slot = match &state.breaker {
        None => None,
        Some(breaker) => match tokio::time::timeout_at(deadline, breaker.acquire()).await {
            Ok(Ok(slot)) => Some(slot),
            Ok(Err(QueueFull)) => {
                return Ok(text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "pending request queue full",
                ));
            }
            Err(_) => {
                return Ok(text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "request timed out waiting in the queue",
                ));
            }
        },
    };
    let head_deadline = match state.cfg.response_start_timeout {
        Some(rs) => deadline.min(Instant::now() + rs),
        None => deadline,
    };
    let req = state.rewrite(req, &peer_ip);
    match tokio::time::timeout_at(head_deadline, state.upstream.send(req)).await {
        Err(_) => Ok(text(StatusCode::GATEWAY_TIMEOUT, "request timeout")),
        Ok(Err(error)) => {
            tracing::warn!(revision = %state.cfg.revision, %error, "Error reaching the user process.");
            Ok(text(
                StatusCode::BAD_GATEWAY,
                format!("error reaching the user process: {error}"),
            ))
        }
        Ok(Ok(resp)) => Ok(resp.map(|body| {
            GuardedBody::new(body, (slot, in_flight), deadline, state.cfg.idle_timeout).boxed()
        })),
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
    let user_host = HeaderValue::from_str(&user_addr.to_string()).expect("an address is a header");
    let state = Arc::new(State {
        breaker: Breaker::for_concurrency(cfg.container_concurrency),
        cfg,
        user_addr,
        user_host,
        upstream: upstream::Upstream::new(user_addr, idle),
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

    let graceful = GracefulShutdown::new();
    let http = hyper::server::conn::http1::Builder::new();
    let accept = |stream: tokio::net::TcpStream, peer: SocketAddr| {
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        let peer_ip =
            HeaderValue::from_str(&peer.ip().to_string()).expect("an address is a header");
        let svc = service_fn(move |req| handle(state.clone(), peer_ip.clone(), req));
        let conn = http.serve_connection(TokioIo::new(stream), svc);
        tokio::spawn(graceful.watch(conn));
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
    let _ = tokio::time::timeout(drain.grace, graceful.shutdown()).await;
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
