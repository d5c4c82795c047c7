//! Sluice's HTTP/1.1 relay, the one forwarding path of the activator and the queue-proxy: a
//! task per client connection reads a request head, the proxy decides where it goes, and
//! [`exchange`] relays it over a pooled keep-alive connection and streams the response back.
//! No byte goes on that the relay has not read as RFC 9112 says, in the one way every
//! parser reads it.
//!
//! # Rules
//!
//! Requests (refused with the status shown, and the connection closed):
//!
//! - every line of a head ends in CRLF; a bare LF or CR anywhere is 400. Obsolete line
//!   folding, whitespace before a colon, and control characters in a field are 400;
//! - only HTTP/1.0 and HTTP/1.1 (505); more than 100 fields, or a head over
//!   [`Limits::max_head`], is 431;
//! - `Content-Length` is `1*DIGIT` and fits in 64 bits; a second `Content-Length` or
//!   `Transfer-Encoding` line is 400; both together are 400;
//! - `Transfer-Encoding` must be exactly `chunked`: a list that does not end in a single
//!   `chunked` is 400, other codings before it are 501; in HTTP/1.0 it is 400;
//! - chunked bodies are read strictly ([`chunked`]): CRLF only, 1–16 hex digits, extensions by
//!   the grammar without whitespace, and well-formed trailers with no framing, routing or
//!   trusted fields; anything else is 400 (or, once the head has gone on, the upstream
//!   connection is closed mid-body, never reused);
//! - exactly one valid `Host` in HTTP/1.1 (400 otherwise). An absolute-form target is routed
//!   by its own authority, which becomes `Host`, and goes on in origin form with its query;
//!   user information in it, a fragment, or a scheme other than http(s) is 400. `*` is for
//!   `OPTIONS` only. `CONNECT` is 501;
//! - `Expect` other than `100-continue` is 417; `100-continue` is answered by the relay when
//!   it starts reading the body, and ignored in HTTP/1.0, as are upgrades;
//! - the relay writes the one framing field itself (`content-length: N` or
//!   `transfer-encoding: chunked`), removes hop-by-hop fields and those named in
//!   `Connection`, and removes every field only Sluice sets ([`fields::TRUSTED`]), matched in
//!   any case and with `_` for `-`, before the proxy reads the request.
//!
//! Responses from the upstream get the same rules, and a response that breaks them is a 502
//! with the upstream connection closed: both length fields, a second one, a coding other than
//! `chunked`, a status outside 100–599, a body on 1xx or 204, a 101 to a request that asked
//! for no upgrade. HTTP/1.0 clients get no 1xx and no chunked body (the relay decodes it and
//! closes the connection after).
//!
//! # Limits
//!
//! Time and space per connection are bounded by [`Limits`] (head, keep-alive and body
//! timeouts; head size; how much body is read before the request takes a replica slot), and
//! the number of connections by the proxy's [`sluice_runtime::accept::Acceptor`]. An idle
//! keep-alive connection gives its buffers back after a second.
//!
//! Owns HTTP/1.1 on the request path. Must not depend on the control plane (objects, stores,
//! the platform); the proxies tell it where a request goes.

pub mod body;
pub mod chunked;
mod downstream;
mod exchange;
pub mod fields;
pub mod h2;
mod limits;
mod pool;
pub mod request;
pub mod response;

pub use downstream::{Downstream, text_response};
pub use exchange::{Deadlines, Failure, exchange};
pub use limits::Limits;
pub use pool::{Conn, Pool};
pub use request::{Edit, Refusal, RequestHead, parse_request};
pub use response::{BadResponse, ResponseHead, parse_response};

/// How much is read at a time while a body streams.
pub const READ_CHUNK: usize = 16 * 1024;

/// How a body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// No body, and no framing field.
    Empty,
    /// `Content-Length` bytes (perhaps `Content-Length: 0`, which is written as such).
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Everything until the sender closes (responses only).
    UntilClose,
}

impl Framing {
    /// Whether the body is known to be empty.
    pub fn is_empty(self) -> bool {
        matches!(self, Framing::Empty | Framing::Length(0))
    }
}
