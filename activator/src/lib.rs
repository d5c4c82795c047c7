//! Sluice's activator: the front door. It maps the request's host to a route's split (an O(1)
//! lookup on an immutable table swapped atomically, no per-request locks), picks a revision by
//! percent and a ready replica by power of two choices, and forwards to that replica's
//! queue-proxy. A request for a revision with no ready replica is held until one is ready or
//! the revision timeout passes. Unknown hosts get 404.

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
use sluice_queue_proxy::body::GuardedBody;
use sluice_queue_proxy::{Body, terminate_signal, text};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::table::{Revision, Table};

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

struct State {
    routes: Arc<Routes>,
    client: Client<HttpConnector, UpstreamBody>,
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

/// Waits until `rev` has a ready endpoint in the current table, up to `deadline`.
async fn ready_revision(
    state: &State,
    mut rev: Arc<Revision>,
    deadline: Instant,
) -> Option<Arc<Revision>> {
    let mut changed = state.routes.changed.subscribe();
    loop {
        if !rev.endpoints.is_empty() {
            return Some(rev);
        }
        tokio::time::timeout_at(deadline, changed.changed())
            .await
            .ok()?
            .ok()?;
        rev = state.routes.table().revision(&rev.key)?.clone();
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
    let Some(rev) = ready_revision(&state, rev, deadline).await else {
        return Ok(text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "revision {key} has no ready replica after {}s\n",
                started.elapsed().as_secs()
            ),
        ));
    };
    let Some((addr, load)) = rev.pick() else {
        return Ok(text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("revision {key} has no ready replica\n"),
        ));
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
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(1000)
        .pool_idle_timeout(Duration::from_secs(90))
        .build(connector);
    let state = Arc::new(State { routes, client });
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

/// Entry point of the `activator` binary (and `sluice activator`): routing snapshots from
/// `SLUICE_ROUTING_SOCKET`, listening on `ACTIVATOR_PORT` (8080) at `ACTIVATOR_BIND_ADDRESS`
/// (127.0.0.1).
pub fn main_from_env() -> std::process::ExitCode {
    sluice_queue_proxy::init_logging();
    let Some(socket) = std::env::var_os("SLUICE_ROUTING_SOCKET") else {
        eprintln!(
            "activator: environment variable SLUICE_ROUTING_SOCKET: missing (the daemon's admin socket)"
        );
        return std::process::ExitCode::from(2);
    };
    let port: u16 = std::env::var("ACTIVATOR_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(8080);
    let bind: std::net::IpAddr = std::env::var("ACTIVATOR_BIND_ADDRESS")
        .ok()
        .and_then(|a| a.parse().ok())
        .unwrap_or(Ipv4Addr::LOCALHOST.into());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = runtime.block_on(async {
        let listener = TcpListener::bind((bind, port)).await?;
        let routes = Routes::new();
        tokio::spawn(source::follow_local(socket.into(), routes.clone()));
        run(listener, routes, terminate_signal()).await
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("activator: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}
