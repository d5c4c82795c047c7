//! A gRPC user program for end-to-end tests (tonic, cleartext HTTP/2 only, as Knative's
//! `grpc-ping` test image): serves `sluice.test.Echo` (see `echo_grpc.rs`) on `$PORT`, with a
//! unary call, a server stream, a client stream and a bidirectional stream. Every reply names
//! `$K_REVISION`, `$TARGET` and the HTTP version the call came in. Stops gracefully on SIGTERM
//! (GOAWAY, then in-flight calls finish).
//!
//! Any arguments are ignored (tests use one as a marker to find the process).

use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codegen::{BoxFuture, Service, http};
use tonic::server::{
    ClientStreamingService, Grpc, NamedService, ServerStreamingService, StreamingService,
    UnaryService,
};
use tonic::{Request, Response, Status, Streaming};
use tonic_prost::ProstCodec;

#[path = "echo_grpc.rs"]
mod echo;
use echo::{EchoReply, EchoRequest};

#[tokio::main]
async fn main() {
    let port: u16 = std::env::var("PORT")
        .expect("PORT is set by the platform")
        .parse()
        .expect("PORT is a number");
    let app = Echo(Arc::new(Replica {
        revision: std::env::var("K_REVISION").unwrap_or_default(),
        target: std::env::var("TARGET").unwrap_or_default(),
    }));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("a SIGTERM handler");
    tonic::transport::Server::builder()
        .add_service(app)
        .serve_with_shutdown(SocketAddr::from((Ipv4Addr::LOCALHOST, port)), async move {
            term.recv().await;
        })
        .await
        .expect("serve $PORT");
}

struct Replica {
    revision: String,
    target: String,
}

impl Replica {
    fn reply(&self, message: String, index: u32, version: http::Version) -> EchoReply {
        EchoReply {
            message,
            revision: self.revision.clone(),
            index,
            target: self.target.clone(),
            http_version: format!("{version:?}"),
        }
    }
}

/// The request's wait, then its asked-for failure.
async fn before_reply(req: &EchoRequest) -> Result<(), Status> {
    if req.delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(req.delay_ms.into())).await;
    }
    match req.fail_code {
        0 => Ok(()),
        code => Err(Status::new(
            tonic::Code::from_i32(code),
            format!("failed as asked: {}", req.message),
        )),
    }
}

/// The service: routes the four methods by path (what tonic-build generates, by hand).
#[derive(Clone)]
struct Echo(Arc<Replica>);

impl NamedService for Echo {
    const NAME: &'static str = echo::SERVICE;
}

impl Service<http::Request<tonic::body::Body>> for Echo {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let method = Method(self.0.clone(), req.version());
        Box::pin(async move {
            let mut grpc = Grpc::new(ProstCodec::<EchoReply, EchoRequest>::default());
            Ok(match req.uri().path() {
                echo::UNARY => grpc.unary(method, req).await,
                echo::SERVER_STREAM => grpc.server_streaming(method, req).await,
                echo::CLIENT_STREAM => grpc.client_streaming(method, req).await,
                echo::BIDI => grpc.streaming(method, req).await,
                other => Status::unimplemented(format!("no method {other}")).into_http(),
            })
        })
    }
}

/// One call: the replica and the HTTP version the call came in.
struct Method(Arc<Replica>, http::Version);

type Replies = ReceiverStream<Result<EchoReply, Status>>;

impl UnaryService<EchoRequest> for Method {
    type Response = EchoReply;
    type Future = BoxFuture<Response<EchoReply>, Status>;

    fn call(&mut self, req: Request<EchoRequest>) -> Self::Future {
        let (replica, version) = (self.0.clone(), self.1);
        Box::pin(async move {
            let req = req.into_inner();
            before_reply(&req).await?;
            Ok(Response::new(replica.reply(req.message, 0, version)))
        })
    }
}

impl ServerStreamingService<EchoRequest> for Method {
    type Response = EchoReply;
    type ResponseStream = Replies;
    type Future = BoxFuture<Response<Replies>, Status>;

    fn call(&mut self, req: Request<EchoRequest>) -> Self::Future {
        let (replica, version) = (self.0.clone(), self.1);
        Box::pin(async move {
            let req = req.into_inner();
            let (tx, rx) = mpsc::channel(4);
            tokio::spawn(async move {
                for index in 0..req.count {
                    let reply = before_reply(&req)
                        .await
                        .map(|()| replica.reply(req.message.clone(), index, version));
                    let failed = reply.is_err();
                    if tx.send(reply).await.is_err() || failed {
                        break;
                    }
                }
            });
            Ok(Response::new(ReceiverStream::new(rx)))
        })
    }
}

impl ClientStreamingService<EchoRequest> for Method {
    type Response = EchoReply;
    type Future = BoxFuture<Response<EchoReply>, Status>;

    fn call(&mut self, req: Request<Streaming<EchoRequest>>) -> Self::Future {
        let (replica, version) = (self.0.clone(), self.1);
        Box::pin(async move {
            let mut stream = req.into_inner();
            let (mut messages, mut count) = (Vec::new(), 0);
            while let Some(req) = stream.next().await {
                let req = req?;
                before_reply(&req).await?;
                messages.push(req.message);
                count += 1;
            }
            Ok(Response::new(replica.reply(
                messages.join(" "),
                count,
                version,
            )))
        })
    }
}

impl StreamingService<EchoRequest> for Method {
    type Response = EchoReply;
    type ResponseStream = Replies;
    type Future = BoxFuture<Response<Replies>, Status>;

    fn call(&mut self, req: Request<Streaming<EchoRequest>>) -> Self::Future {
        let (replica, version) = (self.0.clone(), self.1);
        Box::pin(async move {
            let mut stream = req.into_inner();
            let (tx, rx) = mpsc::channel(4);
            tokio::spawn(async move {
                let mut index = 0;
                while let Some(req) = stream.next().await {
                    let reply = match req {
                        Ok(req) => before_reply(&req)
                            .await
                            .map(|()| replica.reply(req.message, index, version)),
                        Err(status) => Err(status),
                    };
                    let failed = reply.is_err();
                    if tx.send(reply).await.is_err() || failed {
                        break;
                    }
                    index += 1;
                }
            });
            Ok(Response::new(ReceiverStream::new(rx)))
        })
    }
}
