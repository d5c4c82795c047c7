//! The gRPC service of the gRPC test app (`grpcapp`), shared with the tests that call it: its
//! messages, written out as `prost` derives (what `protoc` would generate from the proto below;
//! the machine has no `protoc`), and its method paths.
//!
//! ```proto
//! package sluice.test;
//! service Echo {
//!   rpc Unary(EchoRequest) returns (EchoReply);
//!   rpc ServerStream(EchoRequest) returns (stream EchoReply);
//!   rpc ClientStream(stream EchoRequest) returns (EchoReply);
//!   rpc Bidi(stream EchoRequest) returns (stream EchoReply);
//! }
//! ```

/// A call's input.
#[derive(Clone, PartialEq, prost::Message)]
pub struct EchoRequest {
    /// Echoed back.
    #[prost(string, tag = "1")]
    pub message: String,
    /// ServerStream: how many replies.
    #[prost(uint32, tag = "2")]
    pub count: u32,
    /// Milliseconds the app waits before each reply.
    #[prost(uint32, tag = "3")]
    pub delay_ms: u32,
    /// Non-zero: the app fails the call with this gRPC status code instead of replying.
    #[prost(int32, tag = "4")]
    pub fail_code: i32,
}

/// A call's output.
#[derive(Clone, PartialEq, prost::Message)]
pub struct EchoReply {
    /// The request's message (ClientStream: the messages joined by spaces).
    #[prost(string, tag = "1")]
    pub message: String,
    /// `$K_REVISION` of the replica that answered.
    #[prost(string, tag = "2")]
    pub revision: String,
    /// The reply's place in its stream, from 0 (ClientStream: how many messages came).
    #[prost(uint32, tag = "3")]
    pub index: u32,
    /// `$TARGET` of the replica that answered.
    #[prost(string, tag = "4")]
    pub target: String,
    /// The HTTP version the app heard the call in ("HTTP/2.0").
    #[prost(string, tag = "5")]
    pub http_version: String,
}

/// `sluice.test.Echo`.
pub const SERVICE: &str = "sluice.test.Echo";
/// Unary: one reply to one request.
pub const UNARY: &str = "/sluice.test.Echo/Unary";
/// Server stream: `count` replies to one request, `delay_ms` apart.
pub const SERVER_STREAM: &str = "/sluice.test.Echo/ServerStream";
/// Client stream: one reply to all the requests.
pub const CLIENT_STREAM: &str = "/sluice.test.Echo/ClientStream";
/// Bidirectional: a reply to each request as it comes.
pub const BIDI: &str = "/sluice.test.Echo/Bidi";
