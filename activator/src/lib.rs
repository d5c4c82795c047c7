//! Sluice's activator: the front door. It maps the request's host to a route's split (an O(1)
//! lookup on an immutable table swapped atomically, no per-request locks), picks a revision by
//! percent and a replica with room, and forwards to that replica's queue-proxy. A request for
//! a revision with no ready replica, or (while the revision is buffered) no free slot, is held
//! in a bounded per-revision queue until a slot opens or the revision timeout passes, and the
//! autoscaler hears of it at once. Unknown hosts get 404.
//!
//! Owns the front door. Depends on the seams' routing types only: never on SQLite, kube-rs or
//! the controllers (the routing snapshot comes from a source it is given).

mod h2;
pub mod report;
pub mod source;
pub mod table;

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use sluice_platform::RevisionKey;
use sluice_platform::routing::RoutingUpdate;
use sluice_relay::{Deadlines, Downstream, Edit, Failure, Limits, Pool, Refusal, RequestHead};
use sluice_runtime::accept::Acceptor;
use sluice_runtime::env::{EnvError, ProcessEnv, parse_or};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::table::{EndpointLoad, Revision, Table};

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
        self.swap(next);
    }

    /// Installs a routing stream's line: a whole snapshot, or what changed since the last.
    pub fn apply(&self, update: &RoutingUpdate) {
        match update {
            RoutingUpdate::Full(snapshot) => self.install(snapshot),
            RoutingUpdate::Delta(delta) => {
                let next = self.table.load().apply(delta);
                self.swap(next);
            }
        }
    }

    fn swap(&self, next: Table) {
        // The old table is dropped here unless requests still hold it; dropping what a
        // change replaced costs what the change touched, as the rest is shared.
        self.table.store(Arc::new(next));
        self.changed.send_modify(|v| *v += 1);
    }

    /// Resolves once a snapshot has been installed.
    pub async fn installed(&self) {
        let _ = self.changed.subscribe().wait_for(|n| *n > 0).await;
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
    /// The relay's limits on client connections.
    pub limits: Limits,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            queue_depth: DEFAULT_QUEUE_DEPTH,
            pokes: None,
            limits: Limits::default(),
        }
    }
}

struct State {
    routes: Arc<Routes>,
    pool: Pool,
    /// HTTP/2 connections to queue-proxies, one per replica, for HTTP/2 clients.
    h2_pool: sluice_relay::h2::H2Conns<sluice_relay::h2::Body>,
    options: Options,
}

/// A `Host` value without port or trailing dot, lowercased; borrowed unless it had uppercase
/// letters.
fn normalize_host(raw: &str) -> std::borrow::Cow<'_, str> {
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

/// Why an exchange stopped early.
enum Failed {
    /// Nothing has been written to the client yet: answer with this status and text.
    Answer(u16, String),
    /// The client's request is refused (its body stalled or was malformed): answered once the
    /// replica slot is free again, and the connection closed.
    Refused(Refusal),
    /// The client connection cannot be used any more.
    Close,
}

/// Serves one client connection until it closes, fails, or the activator shuts down while it
/// is idle.
async fn serve_connection(
    state: Arc<State>,
    stream: TcpStream,
    peer: SocketAddr,
    closing: watch::Receiver<bool>,
) {
    let mut down = Downstream::new(stream, closing.clone(), state.options.limits);
    match down.sniff().await {
        None => return,
        Some(sluice_relay::h2::Protocol::Http2) => {
            return h2::serve(state, down.into_io(), peer, closing).await;
        }
        Some(sluice_relay::h2::Protocol::Http1) => {}
    }
    let peer_ip = peer.ip().to_string();
    while let Some(req) = down.next_request(None).await {
        let keep = match exchange(&state, &mut down, &peer_ip, &req).await {
            Ok(keep) => keep && !down.is_closing(),
            Err(Failed::Answer(status, body)) => down.answer(&req, status, &body).await,
            Err(Failed::Refused(refusal)) => {
                down.refuse(&refusal).await;
                false
            }
            Err(Failed::Close) => false,
        };
        if !keep {
            return;
        }
    }
}

/// Chooses the revision for a request from its host (and `Knative-Serving-Tag`).
fn route(state: &State, down: &Downstream, req: &RequestHead) -> Result<Arc<Revision>, Failed> {
    let text = |range: &Option<std::ops::Range<usize>>| {
        range
            .clone()
            .and_then(|r| std::str::from_utf8(&down.buf[r]).ok())
    };
    route_host(state, text(&req.host).unwrap_or_default(), text(&req.tag))
        .map_err(|(status, text)| Failed::Answer(status, text))
}

/// Chooses the revision for `host` (a `Host` value) and `tag`; an unrouted host is 404, a
/// route with nothing ready to send to is 503.
fn route_host(
    state: &State,
    host: &str,
    tag: Option<&str>,
) -> Result<Arc<Revision>, (u16, String)> {
    let host = normalize_host(host);
    let table = state.routes.table();
    let Some(route) = table.host(&host) else {
        return Err((404, format!("no service serves host {host:?}\n")));
    };
    let tagged = tag.and_then(|tag| route.tagged(tag));
    tagged.or_else(|| route.choose()).cloned().ok_or_else(|| {
        (
            503,
            format!(
                "route {} has no ready revision to send {host:?} to\n",
                route.route
            ),
        )
    })
}

/// What a client is told when no replica slot could be had for `key`.
fn refused(why: &Refused, key: &RevisionKey, started: Instant) -> String {
    match why {
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
    }
}

/// One request: route it by host, take a replica slot (holding the request while there is
/// none), and relay the exchange to that replica's queue-proxy. `Ok(keep)` says whether the
/// client connection can carry another request.
async fn exchange(
    state: &State,
    down: &mut Downstream,
    peer_ip: &str,
    req: &RequestHead,
) -> Result<bool, Failed> {
    if req
        .probe
        .clone()
        .is_some_and(|at| down.buf[at] == *b"activator")
    {
        return Err(Failed::Answer(200, "activator".into()));
    }
    let rev = route(state, down, req)?;
    // A small body is read whole before the request takes a replica slot, so a slow client
    // never holds a replica while it sends one.
    if !down.read_body_ahead(req).await {
        return Err(Failed::Close);
    }
    let started = Instant::now();
    let deadline = started + rev.timeout;
    // For messages: the revision asked for (an `Arc` clone; its key is not copied).
    let requested = Arc::clone(&rev);
    let key = &requested.key;
    let (rev, mut addr, mut load) = acquire(state, rev, deadline)
        .await
        .map_err(|why| Failed::Answer(503, refused(&why, key, started)))?;
    // The head for the queue-proxy, written now that the revision is known.
    down.rewrite_head(&Edit::ToRevision {
        peer_ip,
        revision: rev.headers.0.as_bytes(),
        namespace: rev.headers.1.as_bytes(),
    });
    down.consume_head();

    // A bodiless request goes to another replica when no connection can be made, or when
    // the queue-proxy answers that its user process refused it: nothing of it reached a user
    // process either way.
    let mut tried = Vec::new();
    let relayed = loop {
        let up = match state.pool.take(addr).await {
            Ok(up) => up,
            Err(error) => {
                tried.push(addr);
                let next = rev
                    .pick_excluding(&tried)
                    .filter(|_| req.framing.is_empty() && tried.len() <= CONNECT_RETRIES);
                let Some(next) = next else {
                    tracing::warn!(revision = %key, %addr, %error, "Error reaching the queue-proxy.");
                    return Err(Failed::Answer(
                        502,
                        format!("error reaching revision {key}: {error}\n"),
                    ));
                };
                tracing::warn!(revision = %key, %addr, %error, "Cannot connect to a replica; trying another.");
                (addr, load) = next;
                continue;
            }
        };
        let deadlines = Deadlines::response_start(deadline, deadline, None);
        let relayed =
            sluice_relay::exchange(&state.pool, addr, up, down, req, deadlines, true).await;
        if !matches!(relayed, Err(Failure::Unreached)) {
            break relayed;
        }
        tried.push(addr);
        let next = rev
            .pick_excluding(&tried)
            .filter(|_| tried.len() <= CONNECT_RETRIES);
        let Some(next) = next else {
            tracing::warn!(revision = %key, %addr, "No replica's user process took the request.");
            return Err(Failed::Answer(
                502,
                format!("error reaching revision {key}: the user process refused the connection\n"),
            ));
        };
        tracing::warn!(revision = %key, %addr, "A replica's user process refused the request; trying another.");
        (addr, load) = next;
    };
    drop(load);
    match relayed {
        Ok(keep) => Ok(keep),
        Err(Failure::Timeout) => Err(Failed::Answer(504, "request timeout".into())),
        Err(Failure::Upstream | Failure::Unreached) => {
            tracing::warn!(revision = %key, %addr, "The queue-proxy closed the connection or answered invalid HTTP.");
            Err(Failed::Answer(
                502,
                format!("error reaching revision {key}: connection closed or invalid response\n"),
            ))
        }
        Err(Failure::Refused(refusal)) => Err(Failed::Refused(refusal)),
        Err(Failure::Close) => Err(Failed::Close),
    }
}

/// How many other replicas a bodiless request tries when a connection cannot be made.
const CONNECT_RETRIES: usize = 2;

/// Runs the activator on a bound listener until `shutdown`, then finishes in-flight requests.
pub async fn run(
    listener: TcpListener,
    routes: Arc<Routes>,
    options: Options,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let limits = options.limits;
    let state = Arc::new(State {
        routes,
        pool: Pool::new(1000, limits.pool_idle),
        h2_pool: sluice_relay::h2::H2Conns::new(),
        options,
    });
    // Connections close once idle after `closing` turns true.
    let (closing, closed) = watch::channel(false);
    let mut conns = tokio::task::JoinSet::new();
    let mut acceptor = Acceptor::new(listener, limits.max_connections, "activator");
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            (stream, peer, place) = acceptor.accept() => {
                let _ = stream.set_nodelay(true);
                while conns.try_join_next().is_some() {}
                let serve = serve_connection(state.clone(), stream, peer, closed.clone());
                conns.spawn(async move {
                    serve.await;
                    drop(place);
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(acceptor);
    let _ = closing.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(30), async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    conns.abort_all();
    Ok(())
}

/// Where the activator listens, how deep its queues are and the relay's limits, from the
/// environment: `ACTIVATOR_BIND_ADDRESS` (127.0.0.1), `ACTIVATOR_PORT` (8080),
/// `SLUICE_ACTIVATOR_FD` (a listening socket passed by the supervisor, used instead of
/// binding), `ACTIVATOR_QUEUE_DEPTH` (10000), and [`Limits`]' `SLUICE_HTTP_*`.
#[derive(Clone, Debug)]
pub struct Env {
    /// The listening address.
    pub bind: SocketAddr,
    /// The descriptor of a listening socket to serve instead of binding `bind`.
    pub listen_fd: Option<i32>,
    /// Most requests held per revision.
    pub queue_depth: usize,
    /// The relay's limits.
    pub limits: Limits,
}

impl Env {
    /// Reads the process environment; unset values take their defaults.
    pub fn read() -> Result<Self, EnvError> {
        Self::from(&ProcessEnv)
    }

    /// Reads `env`; unset values take their defaults.
    pub fn from(env: &impl sluice_runtime::env::Env) -> Result<Self, EnvError> {
        let port: u16 = parse_or(env, "ACTIVATOR_PORT", 8080)?;
        let ip: std::net::IpAddr =
            parse_or(env, "ACTIVATOR_BIND_ADDRESS", Ipv4Addr::LOCALHOST.into())?;
        Ok(Self {
            bind: SocketAddr::new(ip, port),
            listen_fd: match env.get("SLUICE_ACTIVATOR_FD") {
                Some(_) => Some(parse_or(env, "SLUICE_ACTIVATOR_FD", 0)?),
                None => None,
            },
            queue_depth: parse_or(env, "ACTIVATOR_QUEUE_DEPTH", DEFAULT_QUEUE_DEPTH)?,
            limits: Limits::from_env(env)?,
        })
    }
}

/// Runs the activator on `env` with `routes` fed by someone else, reporting to `sink`, until
/// SIGTERM or SIGINT.
pub async fn serve(env: Env, routes: Arc<Routes>, sink: report::Sink) -> std::io::Result<()> {
    let listener = match env.listen_fd {
        Some(fd) => sluice_runtime::adopt_listener(fd)?,
        None => sluice_runtime::listen(env.bind)?,
    };
    let (pokes, poked) = mpsc::unbounded_channel();
    tokio::spawn(report::report(sink, routes.clone(), poked));
    let options = Options {
        queue_depth: env.queue_depth,
        pokes: Some(pokes),
        limits: env.limits,
    };
    run(
        listener,
        routes,
        options,
        sluice_runtime::terminate_signal(),
    )
    .await
}

/// Entry point of the `activator` binary (and `sluice activator`) on the local platform:
/// routing snapshots from and reports to `SLUICE_ROUTING_SOCKET`; see [`Env`] for the rest.
pub fn main_from_env() -> std::process::ExitCode {
    sluice_runtime::init_logging();
    if let Err(error) = sluice_runtime::raise_fd_limit() {
        tracing::warn!(%error, "Cannot raise the open-file limit.");
    }
    let env = match Env::read() {
        Ok(env) => env,
        Err(error) => {
            eprintln!("activator: {error}");
            return std::process::ExitCode::from(2);
        }
    };
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
        // Accept nothing before the first table: a request now would be refused as
        // unrouted. With a passed socket, clients wait in its accept queue meanwhile.
        routes.installed().await;
        serve(env, routes, report::Sink::Socket(socket)).await
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("activator: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}
