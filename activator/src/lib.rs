//! Sluice's activator: the front door. It maps the request's host to a route's split (an O(1)
//! lookup on an immutable table swapped atomically, no per-request locks), picks a revision by
//! percent and a replica with room, and forwards to that replica's queue-proxy. A request for
//! a revision with no ready replica, or (while the revision is buffered) no free slot, is held
//! in a bounded per-revision queue until a slot opens or the revision timeout passes, and the
//! autoscaler hears of it at once. Unknown hosts get 404.

pub mod report;
pub mod source;
pub mod table;

use std::convert::Infallible;
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use http::header::{HOST, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Either, Empty};
use hyper::body::Body as _;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::graceful::GracefulShutdown;
use sluice_platform::RevisionKey;
use sluice_queue_proxy::body::GuardedBody;
use sluice_queue_proxy::{Body, terminate_signal, text};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::table::{EndpointLoad, Revision, Table};

const K_NETWORK_PROBE: HeaderName = HeaderName::from_static("k-network-probe");
const K_PROXY_REQUEST: HeaderName = HeaderName::from_static("k-proxy-request");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const KNATIVE_SERVING_REVISION: HeaderName = HeaderName::from_static("knative-serving-revision");
const KNATIVE_SERVING_NAMESPACE: HeaderName = HeaderName::from_static("knative-serving-namespace");
const KNATIVE_SERVING_TAG: HeaderName = HeaderName::from_static("knative-serving-tag");

/// The current routing table, shared by every request, plus a signal for held requests.
pub struct Routes {
    table: ArcSwap<Table>,
    changed: watch::Sender<u64>,
}

impl Routes {
    /// No routes yet.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            table: ArcSwap::from_pointee(Table::default()),
            changed: watch::channel(0).0,
        })
    }

    /// Installs a new snapshot.
    pub fn install(&self, snapshot: &sluice_platform::RoutingSnapshot) {
        let next = Table::build(snapshot, &self.table.load());
        self.table.store(Arc::new(next));
        self.changed.send_modify(|v| *v += 1);
    }

    /// The current table.
    pub fn table(&self) -> Arc<Table> {
        self.table.load_full()
    }
}

/// Knative's per-revision queue depth in the activator.
pub const DEFAULT_QUEUE_DEPTH: usize = 10_000;

/// How the activator holds requests and whom it tells.
#[derive(Clone, Debug)]
pub struct Options {
    /// Most requests held per revision; more get 503.
    pub queue_depth: usize,
    /// Where to send a revision's key the moment a request is held for it with no replica
    /// ready (the autoscaler's poke).
    pub pokes: Option<mpsc::UnboundedSender<RevisionKey>>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            queue_depth: DEFAULT_QUEUE_DEPTH,
            pokes: None,
        }
    }
}

struct State {
    routes: Arc<Routes>,
    client: Client<HttpConnector, UpstreamBody>,
    options: Options,
}

/// The request's host without port or trailing dot, lowercased; borrowed unless it had
/// uppercase letters.
fn request_host(req: &Request<Incoming>) -> std::borrow::Cow<'_, str> {
    let raw = req
        .headers()
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().host())
        .unwrap_or("");
    let without_port = match raw.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => raw,
    };
    let host = without_port.trim_end_matches('.');
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        std::borrow::Cow::Owned(host.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(host)
    }
}

/// Why a request was not forwarded.
enum Refused {
    QueueFull(usize),
    Timeout,
    Unrouted,
}

/// A replica slot for the request: at once if one is free, else held in the revision's
/// bounded queue until a replica turns ready or a slot frees, up to `deadline`.
async fn acquire(
    state: &State,
    mut rev: Arc<Revision>,
    deadline: Instant,
) -> Result<(Arc<Revision>, SocketAddr, EndpointLoad), Refused> {
    // The common case: a slot is free now, and nothing else is set up.
    if let Some((addr, load)) = rev.pick() {
        return Ok((rev, addr, load));
    }
    let mut changed = state.routes.changed.subscribe();
    // The table may have changed before the subscription: wait on the current one.
    rev = state
        .routes
        .table()
        .revision(&rev.key)
        .ok_or(Refused::Unrouted)?
        .clone();
    let mut held = None;
    loop {
        // Listen for a freed slot before looking, so a release in between is not missed.
        let demand = rev.demand.clone();
        let freed = demand.freed();
        tokio::pin!(freed);
        freed.as_mut().enable();
        if let Some((addr, load)) = rev.pick() {
            return Ok((rev, addr, load));
        }
        if held.is_none() {
            let depth = state.options.queue_depth;
            held = Some(
                rev.demand
                    .hold(depth)
                    .map_err(|_| Refused::QueueFull(depth))?,
            );
        }
        if rev.endpoints.is_empty()
            && rev.demand.first_poke()
            && let Some(pokes) = &state.options.pokes
        {
            let _ = pokes.send(rev.key.clone());
        }
        tokio::select! {
            () = tokio::time::sleep_until(deadline) => return Err(Refused::Timeout),
            () = freed => {}
            r = changed.changed() => {
                r.map_err(|_| Refused::Unrouted)?;
                rev = state.routes.table().revision(&rev.key).ok_or(Refused::Unrouted)?.clone();
            }
        }
    }
}

async fn handle(
    state: Arc<State>,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    if req
        .headers()
        .get(K_NETWORK_PROBE)
        .is_some_and(|v| v == "activator")
    {
        return Ok(text(StatusCode::OK, "activator"));
    }
    let host = request_host(&req);
    let table = state.routes.table();
    let Some(route) = table.host(&host) else {
        return Ok(text(
            StatusCode::NOT_FOUND,
            format!("no service serves host {host:?}\n"),
        ));
    };
    let header_tag = req
        .headers()
        .get(KNATIVE_SERVING_TAG)
        .and_then(|v| v.to_str().ok());
    let tagged = header_tag.and_then(|tag| route.tagged(tag));
    let Some(rev) = tagged.or_else(|| route.choose()).cloned() else {
        return Ok(text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "route {} has no ready revision to send {host:?} to\n",
                route.route
            ),
        ));
    };
    drop(table);
    let started = Instant::now();
    let deadline = started + rev.timeout;
    let key = rev.key.clone();
    let (rev, addr, load) = match acquire(&state, rev, deadline).await {
        Ok(acquired) => acquired,
        Err(why) => {
            let why = match why {
                Refused::QueueFull(depth) => format!(
                    "revision {key} is overloaded: {depth} requests are already waiting for a replica\n"
                ),
                Refused::Timeout => format!(
                    "revision {key} had no replica free to serve the request within its {}s timeout\n",
                    started.elapsed().as_secs()
                ),
                Refused::Unrouted => {
                    format!("revision {key} stopped receiving traffic while the request waited\n")
                }
            };
            return Ok(text(StatusCode::SERVICE_UNAVAILABLE, why));
        }
    };
    let (mut parts, body) = req.into_parts();
    let path_and_query = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let path = path_and_query.as_str();
    parts.uri = Uri::builder()
        .scheme("http")
        .authority(addr.to_string())
        .path_and_query(path)
        .build()
        .unwrap_or_else(|_| Uri::from_static("/"));
    let h = &mut parts.headers;
    h.insert(K_PROXY_REQUEST, HeaderValue::from_static("activator"));
    h.insert(KNATIVE_SERVING_REVISION, rev.headers.0.clone());
    h.insert(KNATIVE_SERVING_NAMESPACE, rev.headers.1.clone());
    let client_ip = peer.ip().to_string();
    let xff = match h.get(X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(prev) => format!("{prev}, {client_ip}"),
        None => client_ip,
    };
    if let Ok(v) = HeaderValue::from_str(&xff) {
        h.insert(X_FORWARDED_FOR, v);
    }
    if !h.contains_key(X_FORWARDED_PROTO) {
        h.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
    }
    // A request without a body can go to another replica when no connection could be made:
    // nothing of it was sent.
    let retry_head = body
        .is_end_stream()
        .then(|| (parts.method.clone(), parts.version, parts.headers.clone()));
    let mut req = Request::from_parts(parts, Either::Left(body));
    let (mut addr, mut load, mut tried) = (addr, load, Vec::new());
    loop {
        let result = tokio::time::timeout_at(deadline, state.client.request(req)).await;
        let Ok(Err(error)) = &result else {
            break finish(result, &key, addr, load, deadline);
        };
        let Some((method, version, headers)) = retry_head.as_ref().filter(|_| error.is_connect())
        else {
            break finish(result, &key, addr, load, deadline);
        };
        tried.push(addr);
        let Some(next) = rev
            .pick_excluding(&tried)
            .filter(|_| tried.len() <= CONNECT_RETRIES)
        else {
            break finish(result, &key, addr, load, deadline);
        };
        tracing::warn!(revision = %key, %addr, %error, "Cannot connect to a replica; trying another.");
        (addr, load) = next;
        let uri = Uri::builder()
            .scheme("http")
            .authority(addr.to_string())
            .path_and_query(path_and_query.as_str())
            .build();
        let mut retry = Request::new(Either::Right(Empty::new()));
        *retry.method_mut() = method.clone();
        *retry.version_mut() = *version;
        *retry.headers_mut() = headers.clone();
        *retry.uri_mut() = uri.unwrap_or_else(|_| Uri::from_static("/"));
        req = retry;
    }
}

/// How many other replicas a bodiless request tries when a connection cannot be made.
const CONNECT_RETRIES: usize = 2;

/// The request body sent upstream: the client's, or empty on a retry.
type UpstreamBody = Either<Incoming, Empty<bytes::Bytes>>;

fn finish(
    result: Result<
        Result<Response<Incoming>, hyper_util::client::legacy::Error>,
        tokio::time::error::Elapsed,
    >,
    key: &sluice_platform::RevisionKey,
    addr: SocketAddr,
    load: table::EndpointLoad,
    deadline: Instant,
) -> Result<Response<Body>, Infallible> {
    match result {
        Err(_) => Ok(text(StatusCode::GATEWAY_TIMEOUT, "request timeout")),
        Ok(Err(error)) => {
            tracing::warn!(revision = %key, %addr, %error, "Error reaching the queue-proxy.");
            Ok(text(
                StatusCode::BAD_GATEWAY,
                format!("error reaching revision {key}: {error}\n"),
            ))
        }
        Ok(Ok(resp)) => Ok(resp.map(|b| GuardedBody::new(b, load, deadline, None).boxed())),
    }
}

/// Runs the activator on a bound listener until `shutdown`, then finishes in-flight requests.
pub async fn run(
    listener: TcpListener,
    routes: Arc<Routes>,
    options: Options,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(1000)
        .pool_idle_timeout(Duration::from_secs(90))
        .build(connector);
    let state = Arc::new(State {
        routes,
        client,
        options,
    });
    let graceful = GracefulShutdown::new();
    let http = hyper::server::conn::http1::Builder::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            conn = listener.accept() => match conn {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let state = state.clone();
                    let svc = service_fn(move |req| handle(state.clone(), peer, req));
                    tokio::spawn(graceful.watch(http.serve_connection(TokioIo::new(stream), svc)));
                }
                Err(error) => tracing::warn!(%error, "Accept failed."),
            },
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    let _ = tokio::time::timeout(Duration::from_secs(30), graceful.shutdown()).await;
    Ok(())
}

/// Where the activator listens and how deep its queues are, from the environment:
/// `ACTIVATOR_BIND_ADDRESS` (127.0.0.1), `ACTIVATOR_PORT` (8080), `ACTIVATOR_QUEUE_DEPTH`
/// (10000).
#[derive(Clone, Debug)]
pub struct Env {
    /// The listening address.
    pub bind: SocketAddr,
    /// Most requests held per revision.
    pub queue_depth: usize,
}

impl Env {
    /// Reads the environment; unset or unparsable values take their defaults.
    pub fn read() -> Self {
        let var = |name: &str| std::env::var(name).ok();
        let port: u16 = var("ACTIVATOR_PORT")
            .and_then(|p| p.parse().ok())
            .unwrap_or(8080);
        let ip: std::net::IpAddr = var("ACTIVATOR_BIND_ADDRESS")
            .and_then(|a| a.parse().ok())
            .unwrap_or(Ipv4Addr::LOCALHOST.into());
        Self {
            bind: SocketAddr::new(ip, port),
            queue_depth: var("ACTIVATOR_QUEUE_DEPTH")
                .and_then(|d| d.parse().ok())
                .unwrap_or(DEFAULT_QUEUE_DEPTH),
        }
    }
}

/// Runs the activator on `env` with `routes` fed by someone else, reporting to `sink`, until
/// SIGTERM or SIGINT.
pub async fn serve(env: Env, routes: Arc<Routes>, sink: report::Sink) -> std::io::Result<()> {
    let listener = TcpListener::bind(env.bind).await?;
    let (pokes, poked) = mpsc::unbounded_channel();
    tokio::spawn(report::report(sink, routes.clone(), poked));
    let options = Options {
        queue_depth: env.queue_depth,
        pokes: Some(pokes),
    };
    run(listener, routes, options, terminate_signal()).await
}

/// Entry point of the `activator` binary (and `sluice activator`) on the local platform:
/// routing snapshots from and reports to `SLUICE_ROUTING_SOCKET`; see [`Env`] for the rest.
pub fn main_from_env() -> std::process::ExitCode {
    sluice_queue_proxy::init_logging();
    let Some(socket) = std::env::var_os("SLUICE_ROUTING_SOCKET") else {
        eprintln!(
            "activator: environment variable SLUICE_ROUTING_SOCKET: missing (the daemon's admin socket)"
        );
        return std::process::ExitCode::from(2);
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = runtime.block_on(async {
        let routes = Routes::new();
        let socket = std::path::PathBuf::from(socket);
        tokio::spawn(source::follow_local(socket.clone(), routes.clone()));
        serve(Env::read(), routes, report::Sink::Socket(socket)).await
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("activator: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}
