//! The request path for what hyper serves: every HTTP/2 stream (from the activator or a
//! client), and, for an `h2c` revision, HTTP/1.1 requests too. The same rules as the HTTP/1.1
//! path ([`crate::forward`]), per stream: probes, drain bookkeeping, in-flight stats (a
//! stream counts until its response body ends), the breaker, the time to the response's
//! start, head rewriting; then the user process over HTTP/2 (an `h2c` revision) or pooled
//! HTTP/1.1 (any other).

use std::net::SocketAddr;
use std::sync::Arc;

use http::header::{CONNECTION, UPGRADE};
use http::{HeaderValue, Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use sluice_api::contract::UserProtocol;
use sluice_relay::h2::body::Idle;
use sluice_relay::h2::{self, Body, Guarded, Hop, Protocol, Rewind, SendError};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::State;
use crate::breaker::QueueFull;

/// Most streams at once on one client connection: the activator multiplexes every request
/// for this replica onto one, and the breaker (not the stream count) bounds what reaches the
/// user process.
const MAX_STREAMS: u32 = 10_000;

/// Serves one client connection with hyper until it ends.
pub(crate) async fn serve(
    state: Arc<State>,
    io: Rewind,
    protocol: Protocol,
    peer: SocketAddr,
    closing: watch::Receiver<bool>,
) {
    let peer_ip: Arc<str> = peer.ip().to_string().into();
    let limits = state.cfg.limits;
    h2::serve(io, protocol, limits, MAX_STREAMS, closing, move |req| {
        let state = state.clone();
        let peer_ip = peer_ip.clone();
        async move { handle(&state, &peer_ip, req).await }
    })
    .await;
}

/// One request (stream) and its response.
async fn handle(state: &State, peer_ip: &str, mut req: Request<Incoming>) -> Response<Body> {
    let grpc = h2::is_grpc(&req);
    if let Some(probe) = req.headers().get("k-network-probe") {
        let (status, text) = state.probe(probe.as_bytes() == b"queue").await;
        return h2::answer(status, text, grpc);
    }
    state.touch();
    let in_flight = state.stats.begin();
    let deadline = Instant::now() + state.cfg.timeout;
    let slot = match &state.breaker {
        None => None,
        Some(breaker) => match tokio::time::timeout_at(deadline, breaker.acquire()).await {
            Ok(Ok(slot)) => Some(slot),
            Ok(Err(QueueFull)) => return h2::answer(503, "pending request queue full", grpc),
            Err(_) => return h2::answer(503, "request timed out waiting in the queue", grpc),
        },
    };
    // An HTTP/1.1 request that switches protocols (a WebSocket) stays HTTP/1.1 to the user
    // process even for an `h2c` revision, as with Knative's queue-proxy (whose transport
    // follows the request's version): HTTP/2 has no `Upgrade`.
    let upgrade = upgrade_to(&req);
    let h2_user = state.cfg.user_protocol == UserProtocol::H2c && upgrade.is_none();
    let hop = Hop::ToUser {
        peer_ip,
        default_host: &state.user_host,
    };
    if let Err(why) = h2::edit(&mut req, &hop, h2_user) {
        return h2::answer(400, why, grpc);
    }
    // The response starts within the response-start timeout and the idle timeout (no byte
    // yet is idle too, as in Knative's timeout handler), and within the revision's timeout.
    let now = Instant::now();
    let start_by = [state.cfg.response_start_timeout, state.cfg.idle_timeout]
        .into_iter()
        .flatten()
        .fold(deadline, |by, limit| by.min(now + limit));
    if let Some(upgrade) = upgrade {
        // Boxed: rare, and large.
        return Box::pin(tunnel(
            state,
            req,
            upgrade,
            (in_flight, slot),
            start_by,
            deadline,
        ))
        .await;
    }
    let sent = async {
        if h2_user {
            state
                .h2_user
                .send(state.user_addr, req)
                .await
                .map(|resp| resp.map(h2::body::boxed))
        } else {
            state.h1_user.send(req).await
        }
    };
    match tokio::time::timeout_at(start_by, sent).await {
        Ok(Ok(mut resp)) => {
            // Only this queue-proxy says a request was unreached, never its user process.
            h2::take_unreached(&mut resp);
            let idle = state.cfg.idle_timeout;
            resp.map(|body| match idle {
                // Then no more than the idle timeout between frames of it.
                Some(limit) => {
                    h2::body::boxed(Guarded::new(Idle::new(body, limit), (in_flight, slot)))
                }
                None => h2::body::boxed(Guarded::new(body, (in_flight, slot))),
            })
        }
        Ok(Err(error)) => failed(error, grpc),
        Err(_) => h2::answer(504, "request timeout", grpc),
    }
}

/// The answer to a request the user process did not answer.
fn failed(error: SendError, grpc: bool) -> Response<Body> {
    match error {
        // Nothing reached the user process: the activator may send it to another replica.
        SendError::Connect(_) => h2::answer_unreached(
            502,
            "error reaching the user process: connection refused",
            grpc,
        ),
        SendError::Http(error) => {
            tracing::debug!(%error, "The user process failed the request.");
            h2::answer(
                502,
                "error reaching the user process: connection closed or invalid response",
                grpc,
            )
        }
    }
}

/// What an HTTP/1.1 request asks to switch to (`Upgrade`, named in `Connection`), unless it is
/// HTTP/2's own upgrade, which is answered in HTTP/1.1 instead.
fn upgrade_to<B>(req: &Request<B>) -> Option<HeaderValue> {
    if req.version() != Version::HTTP_11 {
        return None;
    }
    let named = req
        .headers()
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    let upgrade = req.headers().get(UPGRADE)?;
    let h2c = upgrade
        .to_str()
        .is_ok_and(|v| v.split(',').any(|p| p.trim().eq_ignore_ascii_case("h2c")));
    (named && !h2c).then(|| upgrade.clone())
}

/// Sends a request that switches protocols to the user process over HTTP/1.1, on a
/// connection of its own; on `101` the client's connection and the user process's are
/// joined until either ends or the revision's timeout (from the request's start) passes, as
/// in Knative (no close frame is sent). `held` (its in-flight count and breaker slot) is
/// kept for the tunnel's whole life: a WebSocket is one request.
async fn tunnel(
    state: &State,
    mut req: Request<Incoming>,
    upgrade: HeaderValue,
    held: impl Send + Sync + 'static,
    start_by: Instant,
    deadline: Instant,
) -> Response<Body> {
    let client = hyper::upgrade::on(&mut req);
    let headers = req.headers_mut();
    headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(UPGRADE, upgrade);
    match tokio::time::timeout_at(start_by, state.h1_user.send_upgrade(req)).await {
        Ok(Ok(mut resp)) => {
            h2::take_unreached(&mut resp);
            if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
                return resp.map(|body| h2::body::boxed(Guarded::new(body, held)));
            }
            let user = hyper::upgrade::on(&mut resp);
            tokio::spawn(async move {
                let _held = held;
                let joined = h2::splice(client, user);
                match tokio::time::timeout_at(deadline, joined).await {
                    Ok(Err(error)) => tracing::debug!(%error, "A tunnel ended with an error."),
                    Err(_) => tracing::debug!("A tunnel reached the revision's timeout."),
                    Ok(Ok(())) => {}
                }
            });
            resp.map(h2::body::boxed)
        }
        Ok(Err(error)) => failed(error, false),
        Err(_) => h2::answer(504, "request timeout", false),
    }
}
