//! Sluice's activator: the front door. It maps the request's host to a route's split (an O(1)
//! lookup on an immutable table swapped atomically, no per-request locks), picks a revision by
//! percent and a replica with room, and forwards to that replica's queue-proxy. A request for
//! a revision with no ready replica, or (while the revision is buffered) no free slot, is held
//! in a bounded per-revision queue until a slot opens or the revision timeout passes, and the
//! autoscaler hears of it at once. Unknown hosts get 404.

pub mod report;
pub mod source;
pub mod table;

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::{Buf, BytesMut};
use sluice_platform::RevisionKey;
use sluice_queue_proxy::h1::{self, Framing, RequestHead};
use sluice_queue_proxy::relay::{self, Pool, ReadError, SendError};
use sluice_queue_proxy::terminate_signal;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
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
    pool: Pool,
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
    /// The client connection cannot be used any more.
    Close,
}

/// Serves one client connection until it closes, fails, or the activator shuts down while it
/// is idle.
async fn serve_connection(
    state: Arc<State>,
    mut client: TcpStream,
    peer: SocketAddr,
    mut closing: watch::Receiver<bool>,
) {
    let peer_ip = peer.ip().to_string();
    let mut buf = BytesMut::with_capacity(8 * 1024);
    let (mut head, mut resp_head) = (Vec::with_capacity(1024), Vec::with_capacity(1024));
    loop {
        let req = loop {
            if !buf.is_empty() {
                match h1::parse_request(&buf, None, &mut head) {
                    Ok(Some(req)) => break req,
                    Ok(None) => {}
                    Err(error) => {
                        let status = match error {
                            h1::HeadError::TooLarge => 431,
                            h1::HeadError::Malformed(_) => 400,
                        };
                        relay::text_response(&mut resp_head, status, &error.to_string(), true);
                        let _ = client.write_all(&resp_head).await;
                        return;
                    }
                }
            }
            buf.reserve(relay::READ_CHUNK);
            let read = if buf.is_empty() {
                tokio::select! {
                    r = client.read_buf(&mut buf) => r,
                    _ = closing.wait_for(|down| *down) => return,
                }
            } else {
                client.read_buf(&mut buf).await
            };
            if !matches!(read, Ok(n) if n > 0) {
                return;
            }
        };
        let outcome = exchange(
            &state,
            &mut client,
            &mut buf,
            &peer_ip,
            &mut head,
            &mut resp_head,
            &req,
        )
        .await;
        let keep = match outcome {
            Ok(keep) => keep,
            Err(Failed::Answer(status, body)) => {
                // The request body may be unread: keep the connection only if there was none.
                let keep = req.keep_alive && req.framing == Framing::Empty;
                relay::text_response(&mut resp_head, status, &body, !keep);
                client.write_all(&resp_head).await.is_ok() && keep
            }
            Err(Failed::Close) => false,
        };
        if !keep || *closing.borrow() {
            return;
        }
    }
}

/// One request: route it by host, take a replica slot (holding the request while there is
/// none), and relay the exchange to that replica's queue-proxy. `Ok(keep)` says whether the
/// client connection can carry another request. `buf` starts with the request's head.
async fn exchange(
    state: &State,
    client: &mut TcpStream,
    buf: &mut BytesMut,
    peer_ip: &str,
    head: &mut Vec<u8>,
    resp_head: &mut Vec<u8>,
    req: &RequestHead,
) -> Result<bool, Failed> {
    let text_of = |range: &Option<std::ops::Range<usize>>| {
        range
            .clone()
            .and_then(|r| std::str::from_utf8(&buf[r]).ok())
            .map(str::to_owned)
    };
    if req.probe.as_deref() == Some(b"activator") {
        buf.advance(req.len);
        relay::text_response(resp_head, 200, "activator", !req.keep_alive);
        client
            .write_all(resp_head)
            .await
            .map_err(|_| Failed::Close)?;
        return Ok(req.keep_alive && req.framing == Framing::Empty);
    }
    let raw_host = text_of(&req.host).unwrap_or_default();
    let host = normalize_host(&raw_host);
    let tag = text_of(&req.tag);
    let table = state.routes.table();
    let Some(route) = table.host(&host) else {
        buf.advance(req.len);
        return Err(Failed::Answer(
            404,
            format!("no service serves host {host:?}\n"),
        ));
    };
    let tagged = tag.as_deref().and_then(|tag| route.tagged(tag));
    let Some(rev) = tagged.or_else(|| route.choose()).cloned() else {
        buf.advance(req.len);
        return Err(Failed::Answer(
            503,
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
    let acquired = acquire(state, rev, deadline).await;
    let (rev, mut addr, mut load) = match acquired {
        Ok(acquired) => acquired,
        Err(why) => {
            buf.advance(req.len);
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
            return Err(Failed::Answer(503, why));
        }
    };
    // The head for the queue-proxy, written now that the revision is known.
    let edit = h1::Edit::ToRevision {
        peer_ip,
        revision: rev.headers.0.as_bytes(),
        namespace: rev.headers.1.as_bytes(),
    };
    let _ = h1::parse_request(buf, Some(&edit), head);
    buf.advance(req.len);
    if req.expect_continue {
        client
            .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
            .await
            .map_err(|_| Failed::Close)?;
    }

    // A bodiless request goes to another replica when no connection can be made (nothing of
    // it was sent), or again on a new connection when a pooled one turns out closed.
    let bodiless = req.framing == Framing::Empty;
    let mut tried = Vec::new();
    let refused = |key: &sluice_platform::RevisionKey, error: &dyn std::fmt::Display| {
        Failed::Answer(502, format!("error reaching revision {key}: {error}\n"))
    };
    let mut up = loop {
        match state.pool.take(addr).await {
            Ok(up) => break up,
            Err(error) => {
                tried.push(addr);
                let next = rev
                    .pick_excluding(&tried)
                    .filter(|_| bodiless && tried.len() <= CONNECT_RETRIES);
                let Some(next) = next else {
                    tracing::warn!(revision = %key, %addr, %error, "Error reaching the queue-proxy.");
                    return Err(refused(&key, &error));
                };
                tracing::warn!(revision = %key, %addr, %error, "Cannot connect to a replica; trying another.");
                (addr, load) = next;
            }
        }
    };
    let mut resp = loop {
        let sent = tokio::time::timeout_at(
            deadline,
            relay::send_request(&mut up, client, buf, head, req),
        )
        .await
        .unwrap_or(Err(SendError::Client));
        let outcome = match sent {
            Ok(()) => relay::read_response_head(&mut up, req, resp_head, deadline).await,
            Err(SendError::Client) => return Err(Failed::Close),
            Err(SendError::Upstream) => Err(ReadError::Upstream),
        };
        match outcome {
            Ok(resp) => break resp,
            Err(ReadError::Timeout) => return Err(Failed::Answer(504, "request timeout".into())),
            Err(ReadError::Upstream) if up.reused && bodiless => {
                up = Pool::connect(addr).await.map_err(|e| refused(&key, &e))?;
            }
            Err(ReadError::Upstream) => {
                tracing::warn!(revision = %key, %addr, "The queue-proxy closed the connection.");
                return Err(refused(&key, &"connection closed"));
            }
        }
    };

    // Informational answers go to the client as they come; 101 hands both sockets over.
    loop {
        if resp.status == 101 && req.upgrade {
            resp_head.extend_from_slice(b"\r\n");
            client
                .write_all(resp_head)
                .await
                .map_err(|_| Failed::Close)?;
            let pending = up.buf.split();
            client
                .write_all(&pending)
                .await
                .map_err(|_| Failed::Close)?;
            if !buf.is_empty() {
                let early = buf.split();
                up.stream
                    .write_all(&early)
                    .await
                    .map_err(|_| Failed::Close)?;
            }
            let _ = tokio::io::copy_bidirectional(client, &mut up.stream).await;
            return Ok(false);
        }
        if !(100..200).contains(&resp.status) {
            break;
        }
        resp_head.extend_from_slice(b"\r\n");
        client
            .write_all(resp_head)
            .await
            .map_err(|_| Failed::Close)?;
        resp = relay::read_response_head(&mut up, req, resp_head, deadline)
            .await
            .map_err(|_| Failed::Close)?;
    }
    let keep_client = req.keep_alive && resp.framing != Framing::UntilClose;
    if !keep_client {
        resp_head.extend_from_slice(b"connection: close\r\n");
    } else if req.http10 {
        resp_head.extend_from_slice(b"connection: keep-alive\r\n");
    }
    resp_head.extend_from_slice(b"\r\n");
    let done = tokio::time::timeout_at(
        deadline,
        relay::send_body(resp.framing, &mut up, client, resp_head, None),
    )
    .await;
    drop(load);
    match done {
        Ok(Ok(())) => {
            if resp.keep_alive && resp.framing != Framing::UntilClose {
                state.pool.put_back(addr, up);
            }
            Ok(keep_client)
        }
        // Cut mid-body: the status line has gone out, so closing is the only signal left.
        _ => Err(Failed::Close),
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
    let state = Arc::new(State {
        routes,
        pool: Pool::new(1000),
        options,
    });
    // Connections close once idle after `closing` turns true.
    let (closing, closed) = watch::channel(false);
    let mut conns = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            conn = listener.accept() => match conn {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    while conns.try_join_next().is_some() {}
                    conns.spawn(serve_connection(state.clone(), stream, peer, closed.clone()));
                }
                Err(error) => tracing::warn!(%error, "Accept failed."),
            },
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    let _ = closing.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(30), async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    conns.abort_all();
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
