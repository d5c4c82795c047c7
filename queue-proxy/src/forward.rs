//! The request path: one task per client connection reads a request head (checked by the
//! relay), applies the queue-proxy's rules (probe, small body read ahead, in-flight stats,
//! breaker, timeouts, header rewriting), and relays the exchange through a pooled connection
//! to the user process, with no task hops and buffers reused across the requests of a
//! connection.

use std::net::SocketAddr;
use std::sync::Arc;

use sluice_relay::{Deadlines, Downstream, Edit, Failure, Refusal, RequestHead};
use tokio::time::Instant;

use crate::State;
use crate::breaker::QueueFull;

/// Why an exchange did not relay the request.
enum Failed {
    /// Nothing has been written to the client yet: answer with this status and text (also
    /// how probes are answered).
    Answer(u16, &'static str),
    /// As `Answer`, marked as having reached no user process (the activator may retry it
    /// on another replica).
    Unreached(u16, &'static str),
    /// The client's request is refused (its body stalled or was malformed): answered once
    /// the replica slot is free again, and the connection closed.
    Refused(Refusal),
    /// The client connection cannot be used any more (any answer has been written).
    Close,
}

/// Serves one client connection until it closes, fails, or the proxy shuts down while it is
/// idle.
pub(crate) async fn serve(state: Arc<State>, mut down: Downstream, peer: SocketAddr) {
    let peer_ip = peer.ip().to_string();
    let edit = Edit::ToUser {
        peer_ip: &peer_ip,
        default_host: &state.user_host,
    };
    while let Some(req) = down.next_request(Some(&edit)).await {
        // Whether a probe asks for the queue-proxy (the value lives in the head).
        let probe = req.probe.clone().map(|at| down.buf[at] == *b"queue");
        down.consume_head();
        let keep = match exchange(&state, &mut down, &req, probe).await {
            Ok(keep) => keep && !down.is_closing(),
            Err(Failed::Answer(status, body)) => down.answer(&req, status, body).await,
            Err(Failed::Unreached(status, body)) => down.answer_unreached(&req, status, body).await,
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

/// One request and its response. `Ok(keep)` says whether the client connection can carry
/// another request.
async fn exchange(
    state: &State,
    down: &mut Downstream,
    req: &RequestHead,
    probe: Option<bool>,
) -> Result<bool, Failed> {
    if let Some(for_queue) = probe {
        let (status, body) = state.probe(for_queue).await;
        return Err(Failed::Answer(status, body));
    }
    state.touch();
    // A small body is read whole before the request takes a slot, so a slow client never
    // holds the user process while it sends one.
    if !down.read_body_ahead(req).await {
        return Err(Failed::Close);
    }
    let _in_flight = state.stats.begin();
    let now = Instant::now();
    let deadline = now + state.cfg.timeout;
    let _slot = match &state.breaker {
        None => None,
        Some(breaker) => match tokio::time::timeout_at(deadline, breaker.acquire()).await {
            Ok(Ok(slot)) => Some(slot),
            Ok(Err(QueueFull)) => return Err(Failed::Answer(503, "pending request queue full")),
            Err(_) => {
                return Err(Failed::Answer(
                    503,
                    "request timed out waiting in the queue",
                ));
            }
        },
    };
    // The head comes within the response-start timeout and the idle timeout (no byte yet is
    // idle too, as in Knative's timeout handler), and within the revision's timeout.
    let now = Instant::now();
    let head_by = [state.cfg.response_start_timeout, state.cfg.idle_timeout]
        .into_iter()
        .flatten()
        .fold(deadline, |by, limit| by.min(now + limit));
    let deadlines = Deadlines::response_start(head_by, deadline, state.cfg.idle_timeout);
    let up = state.upstream.take(state.user_addr).await.map_err(|_| {
        Failed::Unreached(502, "error reaching the user process: connection refused")
    })?;
    let relayed = sluice_relay::exchange(
        &state.upstream,
        state.user_addr,
        up,
        down,
        req,
        deadlines,
        false,
    );
    match relayed.await {
        Ok(keep) => Ok(keep),
        Err(Failure::Timeout) => Err(Failed::Answer(504, "request timeout")),
        // (Unreached only comes when asked for.)
        Err(Failure::Upstream | Failure::Unreached) => Err(Failed::Answer(
            502,
            "error reaching the user process: connection closed or invalid response",
        )),
        Err(Failure::Refused(refusal)) => Err(Failed::Refused(refusal)),
        Err(Failure::Close) => Err(Failed::Close),
    }
}
