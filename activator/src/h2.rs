//! The front door for HTTP/2 clients (prior-knowledge h2c): each stream is routed, held and
//! forwarded as an HTTP/1.1 request is ([`crate::exchange`]), to the replica's queue-proxy
//! over one multiplexed HTTP/2 connection per replica. The queue-proxy then speaks to the
//! user process in the revision's own protocol.

use std::net::SocketAddr;
use std::sync::Arc;

use http::{Request, Response};
use hyper::body::Incoming;
use sluice_relay::h2::{self, Body, Guarded, Hop, Protocol, Rewind, SendError};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::{CONNECT_RETRIES, State, acquire, refused, route_host};

/// Most streams at once on one client connection (Go's and nginx's default is 100–250;
/// gRPC clients open one connection and multiplex on it).
const MAX_STREAMS: u32 = 1000;

/// Serves one HTTP/2 client connection until it ends.
pub(crate) async fn serve(
    state: Arc<State>,
    io: Rewind,
    peer: SocketAddr,
    closing: watch::Receiver<bool>,
) {
    let peer_ip: Arc<str> = peer.ip().to_string().into();
    let limits = state.options.limits;
    h2::serve(
        io,
        Protocol::Http2,
        limits,
        MAX_STREAMS,
        closing,
        move |req| {
            let state = state.clone();
            let peer_ip = peer_ip.clone();
            async move { handle(&state, &peer_ip, req).await }
        },
    )
    .await;
}

/// One stream: route it by authority (and tag), take a replica slot (holding the stream while
/// there is none), and send it on to that replica's queue-proxy. The slot is held until the
/// response body ends.
async fn handle(state: &State, peer_ip: &str, mut req: Request<Incoming>) -> Response<Body> {
    let grpc = h2::is_grpc(&req);
    let headers = req.headers();
    if headers
        .get("k-network-probe")
        .is_some_and(|v| v.as_bytes() == b"activator")
    {
        return h2::answer(200, "activator", grpc);
    }
    let authority = match h2::headers::authority(&req) {
        Ok(a) => a,
        Err(why) => return h2::answer(400, why, grpc),
    };
    let mut tags = headers.get_all("knative-serving-tag").iter();
    let tag = tags.next().map(|v| v.to_str());
    if tags.next().is_some() || matches!(tag, Some(Err(_))) {
        return h2::answer(
            400,
            "more than one Knative-Serving-Tag, or one not text",
            grpc,
        );
    }
    let host = authority.as_ref().map_or("", |a| a.as_str());
    let rev = match route_host(state, host, tag.and_then(Result::ok)) {
        Ok(rev) => rev,
        Err((status, text)) => return h2::answer(status, &text, grpc),
    };
    let started = Instant::now();
    let deadline = started + rev.timeout;
    let requested = Arc::clone(&rev);
    let key = &requested.key;
    let (rev, mut addr, mut load) = match acquire(state, rev, deadline).await {
        Ok(picked) => picked,
        Err(why) => return h2::answer(503, &refused(&why, key, started), grpc),
    };
    let hop = Hop::ToRevision {
        peer_ip,
        revision: rev.headers.0.as_bytes(),
        namespace: rev.headers.1.as_bytes(),
    };
    if let Err(why) = h2::edit(&mut req, &hop, true) {
        return h2::answer(400, why, grpc);
    }
    // A stream without a body goes to another replica when no connection can be made to
    // this one (nothing of it was sent).
    let bodiless = http_body::Body::is_end_stream(req.body());
    let mut tried = Vec::new();
    let mut sender = loop {
        match state.h2_pool.sender(addr).await {
            Ok(sender) => break sender,
            Err(error) => {
                tried.push(addr);
                let next = rev
                    .pick_excluding(&tried)
                    .filter(|_| bodiless && tried.len() <= CONNECT_RETRIES);
                let Some(next) = next else {
                    tracing::warn!(revision = %key, %addr, %error, "Error reaching the queue-proxy.");
                    return h2::answer(
                        502,
                        &format!("error reaching revision {key}: {error}\n"),
                        grpc,
                    );
                };
                tracing::warn!(revision = %key, %addr, %error, "Cannot connect to a replica; trying another.");
                (addr, load) = next;
            }
        }
    };
    match tokio::time::timeout_at(deadline, sender.send_request(req)).await {
        Ok(Ok(resp)) => resp.map(|body| h2::body::boxed(Guarded::new(body, load))),
        Ok(Err(error)) => {
            let error = SendError::from(error);
            tracing::warn!(revision = %key, %addr, %error, "The queue-proxy failed the stream.");
            h2::answer(
                502,
                &format!("error reaching revision {key}: connection closed or invalid response\n"),
                grpc,
            )
        }
        Err(_) => h2::answer(504, "request timeout", grpc),
    }
}
