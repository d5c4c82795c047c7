//! The front door for HTTP/2 clients (prior-knowledge h2c): each stream is routed, held and
//! forwarded as an HTTP/1.1 request is ([`crate::exchange`]), to the replica's queue-proxy
//! over one multiplexed HTTP/2 connection per replica. The queue-proxy then speaks to the
//! user process in the revision's own protocol.

use std::net::SocketAddr;
use std::sync::Arc;

use http::{Method, Request, Response};
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
    // A stream that reached no user process goes again: one hyper hands back unsent (its
    // connection closed first) to any replica, and a bodiless one to another replica when no
    // connection can be made, when the replica refuses the stream, or when its queue-proxy
    // answers that its user process refused the connection. A bodiless stream's head is
    // kept for that; a stream with a body cannot be sent twice once its body is taken.
    let bodiless = http_body::Body::is_end_stream(req.body()) && req.method() != Method::CONNECT;
    let again = bodiless.then(|| Again::of(&req));
    let mut next = Some(req.map(h2::body::boxed));
    let mut tried = Vec::new();
    let mut resends = 0;
    // Another replica, if this stream may go to one.
    let other = |tried: &mut Vec<SocketAddr>, addr: SocketAddr, may: bool| {
        tried.push(addr);
        rev.pick_excluding(tried)
            .filter(|_| may && tried.len() <= CONNECT_RETRIES)
    };
    loop {
        // Sent again only when bodiless, so a head is kept whenever this is empty.
        let Some(req) = next.take().or_else(|| again.as_ref().map(Again::request)) else {
            return h2::answer(
                502,
                &format!("error reaching revision {key}: the stream was lost\n"),
                grpc,
            );
        };
        let mut sender = match state.h2_pool.sender(addr).await {
            Ok(sender) => sender,
            Err(error) => {
                let Some(picked) = other(&mut tried, addr, bodiless) else {
                    tracing::warn!(revision = %key, %addr, %error, "Error reaching the queue-proxy.");
                    return h2::answer(
                        502,
                        &format!("error reaching revision {key}: {error}\n"),
                        grpc,
                    );
                };
                tracing::warn!(revision = %key, %addr, %error, "Cannot connect to a replica; trying another.");
                (addr, load) = picked;
                next = Some(req);
                continue;
            }
        };
        match tokio::time::timeout_at(deadline, sender.try_send_request(req)).await {
            Ok(Ok(mut resp)) => {
                if h2::take_unreached(&mut resp)
                    && let Some(picked) = other(&mut tried, addr, bodiless)
                {
                    tracing::warn!(revision = %key, %addr, "A replica's user process refused the stream; trying another.");
                    (addr, load) = picked;
                    continue;
                }
                return resp.map(|body| h2::body::boxed(Guarded::new(body, load)));
            }
            Ok(Err(mut failed)) => {
                let unsent = failed.take_message();
                let error = failed.into_error();
                if resends < CONNECT_RETRIES
                    && let Some(req) = unsent
                {
                    // The connection closed (a draining replica's GOAWAY) before the stream
                    // was taken: a new connection, to this replica if it still listens.
                    resends += 1;
                    tracing::debug!(revision = %key, %addr, %error, "A stream was not taken; sending it again.");
                    next = Some(req);
                    continue;
                }
                if h2::refused_stream(&error)
                    && let Some(picked) = other(&mut tried, addr, bodiless)
                {
                    tracing::debug!(revision = %key, %addr, "A replica refused the stream; trying another.");
                    (addr, load) = picked;
                    continue;
                }
                let error = SendError::from(error);
                tracing::warn!(revision = %key, %addr, %error, "The queue-proxy failed the stream.");
                return h2::answer(
                    502,
                    &format!(
                        "error reaching revision {key}: connection closed or invalid response\n"
                    ),
                    grpc,
                );
            }
            Err(_) => return h2::answer(504, "request timeout", grpc),
        }
    }
}

/// The head of a bodiless stream, to send it again.
struct Again {
    method: Method,
    uri: http::Uri,
    version: http::Version,
    headers: http::HeaderMap,
}

impl Again {
    fn of<B>(req: &Request<B>) -> Self {
        Self {
            method: req.method().clone(),
            uri: req.uri().clone(),
            version: req.version(),
            headers: req.headers().clone(),
        }
    }

    fn request(&self) -> Request<Body> {
        let mut req = Request::new(h2::body::empty());
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.version_mut() = self.version;
        *req.headers_mut() = self.headers.clone();
        req
    }
}
