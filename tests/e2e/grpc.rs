//! gRPC end to end on the local platform: a tonic service on a port named `h2c`, called
//! through `sluice local up`'s front door with tonic's own client (HTTP/2 with prior
//! knowledge): the four call kinds, gRPC errors, a call that wakes the revision from zero, a
//! 90/10 split over 1,000 unary calls, and a rollout under load that fails no call.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};
use tonic_prost::ProstCodec;

use crate::harness::{Platform, example, processes_with};

#[path = "../apps/echo_grpc.rs"]
#[allow(dead_code)]
pub mod echo;
pub use echo::{EchoReply, EchoRequest};

/// The gRPC test program (a cargo example of this package, built by `cargo test`).
pub fn grpcapp() -> PathBuf {
    example("grpcapp")
}

/// A Knative Service running the gRPC app on a port named h2c, idle after a 6 s window.
fn grpc_service(name: &str, marker: &str, target: &str) -> String {
    format!(
        r#"apiVersion: serving.knative.dev/v1
kind: Service
metadata:
  name: {name}
spec:
  template:
    metadata:
      annotations:
        autoscaling.knative.dev/window: 6s
    spec:
      containers:
        - image: example.com/grpcapp
          command: ["{app}", "{marker}"]
          ports:
            - name: h2c
              containerPort: 8080
          env:
            - name: TARGET
              value: "{target}"
"#,
        app = grpcapp().display()
    )
}

/// config-autoscaler with a short grace period, so idleness is seen within seconds.
const SHORT_GRACE: (&str, &str) = (
    "config-autoscaler.yaml",
    "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: config-autoscaler\ndata:\n  scale-to-zero-grace-period: 2s\n",
);

/// tonic's client for `sluice.test.Echo`, connected to 127.0.0.1:`port` with `host` as the
/// calls' authority (how the activator routes them).
#[derive(Clone)]
pub struct EchoClient(tonic::client::Grpc<Channel>);

fn codec() -> ProstCodec<EchoRequest, EchoReply> {
    ProstCodec::default()
}

pub fn request(message: &str) -> EchoRequest {
    EchoRequest {
        message: message.to_owned(),
        ..EchoRequest::default()
    }
}

impl EchoClient {
    pub async fn connect(port: u16, host: &str) -> Self {
        Self::connect_at(SocketAddr::from((Ipv4Addr::LOCALHOST, port)), host).await
    }

    /// Connects to `addr` with `host` as the calls' authority.
    pub async fn connect_at(addr: SocketAddr, host: &str) -> Self {
        let channel = Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .origin(format!("http://{host}").parse().unwrap())
            .connect()
            .await
            .expect("connect to the activator");
        Self(tonic::client::Grpc::new(channel))
    }

    async fn ready(&mut self) -> Result<(), Status> {
        self.0
            .ready()
            .await
            .map_err(|e| Status::unavailable(e.to_string()))
    }

    pub async fn unary(&mut self, req: EchoRequest) -> Result<EchoReply, Status> {
        self.ready().await?;
        let path = PathAndQuery::from_static(echo::UNARY);
        let reply = self
            .0
            .unary(tonic::Request::new(req), path, codec())
            .await?;
        Ok(reply.into_inner())
    }

    pub async fn server_stream(&mut self, req: EchoRequest) -> Result<Vec<EchoReply>, Status> {
        self.ready().await?;
        let path = PathAndQuery::from_static(echo::SERVER_STREAM);
        let mut replies = self
            .0
            .server_streaming(tonic::Request::new(req), path, codec())
            .await?
            .into_inner();
        let mut all = Vec::new();
        while let Some(reply) = replies.message().await? {
            all.push(reply);
        }
        Ok(all)
    }

    pub async fn client_stream(&mut self, reqs: Vec<EchoRequest>) -> Result<EchoReply, Status> {
        self.ready().await?;
        let path = PathAndQuery::from_static(echo::CLIENT_STREAM);
        let stream = tokio_stream::iter(reqs);
        let reply = self
            .0
            .client_streaming(tonic::Request::new(stream), path, codec())
            .await?;
        Ok(reply.into_inner())
    }

    /// A bidirectional stream where each request is sent only once the previous reply came:
    /// both directions are open at once for the whole call.
    pub async fn ping_pong(&mut self, messages: &[&str]) -> Result<Vec<EchoReply>, Status> {
        self.ready().await?;
        let path = PathAndQuery::from_static(echo::BIDI);
        let (tx, rx) = mpsc::channel(1);
        tx.send(request(messages[0])).await.unwrap();
        let mut replies = self
            .0
            .streaming(tonic::Request::new(ReceiverStream::new(rx)), path, codec())
            .await?
            .into_inner();
        let mut all = Vec::new();
        for next in messages[1..].iter().map(Some).chain([None]) {
            let reply = replies
                .message()
                .await?
                .ok_or_else(|| Status::internal("the stream ended before its reply"))?;
            all.push(reply);
            match next {
                Some(message) => tx.send(request(message)).await.unwrap(),
                None => break,
            }
        }
        drop(tx);
        if let Some(extra) = replies.message().await? {
            return Err(Status::internal(format!("an extra reply {extra:?}")));
        }
        Ok(all)
    }
}

/// `callers` callers of `calls` unary calls each, sharing `client`'s connection: how many
/// replies came from each `$TARGET`. Every call must succeed.
pub async fn split(client: &EchoClient, callers: usize, calls: usize) -> BTreeMap<String, usize> {
    let mut tasks = tokio::task::JoinSet::new();
    for caller in 0..callers {
        let mut client = client.clone();
        tasks.spawn(async move {
            let mut counts = BTreeMap::<String, usize>::new();
            for i in 0..calls {
                let reply = client
                    .unary(request(&format!("{caller}-{i}")))
                    .await
                    .expect("a unary call during the split");
                *counts.entry(reply.target).or_default() += 1;
            }
            counts
        });
    }
    let mut total = BTreeMap::<String, usize>::new();
    while let Some(counts) = tasks.join_next().await {
        for (target, n) in counts.unwrap() {
            *total.entry(target).or_default() += n;
        }
    }
    total
}

/// `callers` callers making 20 ms unary calls one after another for `lasting`: the calls
/// answered, the failures, and the `$TARGET`s that answered.
pub async fn under_load(
    client: EchoClient,
    callers: usize,
    lasting: Duration,
) -> (usize, Vec<Status>, BTreeSet<String>) {
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..callers {
        let mut client = client.clone();
        tasks.spawn(async move {
            let (mut ok, mut failed, mut targets) = (0usize, Vec::new(), BTreeSet::new());
            let start = Instant::now();
            while start.elapsed() < lasting {
                let call = EchoRequest {
                    delay_ms: 20,
                    ..request("load")
                };
                match client.unary(call).await {
                    Ok(reply) => {
                        ok += 1;
                        targets.insert(reply.target);
                    }
                    Err(status) => failed.push(status),
                }
            }
            (ok, failed, targets)
        });
    }
    let mut total = (0, Vec::new(), BTreeSet::new());
    while let Some(caller) = tasks.join_next().await {
        let (ok, failed, targets) = caller.unwrap();
        total.0 += ok;
        total.1.extend(failed);
        total.2.extend(targets);
    }
    total
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// The revision's actualReplicas.
fn actual_replicas(p: &Platform, revision: &str) -> i64 {
    let out = p.ok(&["revision", "describe", revision, "-o", "json"]);
    let rev: serde_json::Value = serde_json::from_str(&out).unwrap();
    rev["status"]["actualReplicas"].as_i64().unwrap_or(-1)
}

#[test]
fn grpc_calls_of_all_four_kinds_wake_from_zero_and_split_90_10() {
    let p = Platform::start_with_config(&[SHORT_GRACE]);
    let out = p.apply(&grpc_service("grpc", "m-grpc-kinds", "stable"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    p.eventually(Duration::from_secs(20), "grpc ready", || p.is_ready("grpc"));
    let rt = runtime();
    let mut client = rt.block_on(EchoClient::connect(p.port, "grpc.default.localhost"));

    let reply = rt.block_on(client.unary(request("hello"))).unwrap();
    assert_eq!(
        (
            &*reply.message,
            &*reply.revision,
            &*reply.target,
            &*reply.http_version
        ),
        ("hello", "grpc-00001", "stable", "HTTP/2.0"),
        "the app hears HTTP/2 on an h2c port"
    );
    let stream = rt
        .block_on(client.server_stream(EchoRequest {
            count: 5,
            delay_ms: 20,
            ..request("tick")
        }))
        .unwrap();
    assert_eq!(
        stream.iter().map(|r| r.index).collect::<Vec<_>>(),
        [0, 1, 2, 3, 4]
    );
    let joined = rt
        .block_on(client.client_stream(["a", "b", "c"].map(request).to_vec()))
        .unwrap();
    assert_eq!((&*joined.message, joined.index), ("a b c", 3));
    let pongs = rt
        .block_on(client.ping_pong(&["one", "two", "three"]))
        .unwrap();
    assert_eq!(
        pongs
            .iter()
            .map(|r| (r.message.as_str(), r.index))
            .collect::<Vec<_>>(),
        [("one", 0), ("two", 1), ("three", 2)]
    );
    let failed = rt
        .block_on(client.unary(EchoRequest {
            fail_code: Code::NotFound as i32,
            ..request("lost")
        }))
        .unwrap_err();
    assert_eq!(
        (failed.code(), failed.message()),
        (Code::NotFound, "failed as asked: lost"),
        "the app's grpc-status and grpc-message reach the client"
    );
    // grpc-timeout is the caller's: a 1.5 s call under a 10 s deadline is not cut short.
    let mut slow = tonic::Request::new(EchoRequest {
        delay_ms: 1500,
        ..request("slow")
    });
    slow.set_timeout(Duration::from_secs(10));
    let path = PathAndQuery::from_static(echo::UNARY);
    rt.block_on(async {
        client.ready().await.unwrap();
        client.0.unary(slow, path, codec()).await
    })
    .expect("a slow call within its deadline");
    drop(client);

    // Idle: to zero; the next call is held in the activator and answered.
    let idle = Instant::now();
    p.eventually(Duration::from_secs(40), "grpc at zero", || {
        actual_replicas(&p, "grpc-00001") == 0 && processes_with("m-grpc-kinds").is_empty()
    });
    eprintln!("grpc: zero after {:?}", idle.elapsed());
    let woke = Instant::now();
    let reply = rt
        .block_on(async {
            let mut client = EchoClient::connect(p.port, "grpc.default.localhost").await;
            client.unary(request("wake")).await
        })
        .expect("a call to a revision at zero");
    eprintln!(
        "grpc: first call from zero answered in {:?}",
        woke.elapsed()
    );
    assert_eq!(reply.revision, "grpc-00001");

    // 90/10: the split chooses per call, over one multiplexed connection.
    p.ok(&[
        "service",
        "update",
        "grpc",
        "--env",
        "TARGET=canary",
        "--traffic",
        "grpc-00001=90,@latest=10",
    ]);
    p.eventually(Duration::from_secs(20), "canary ready", || {
        p.is_ready("grpc")
    });
    let counts = rt.block_on(async {
        let client = EchoClient::connect(p.port, "grpc.default.localhost").await;
        split(&client, 10, 100).await
    });
    eprintln!("grpc 90/10 over 1000 unary calls: {counts:?}");
    let canary = counts.get("canary").copied().unwrap_or(0);
    assert_eq!(counts.values().sum::<usize>(), 1000, "{counts:?}");
    // 1,000 draws at 10%: a standard deviation of 9.5, so 60..=140 is four of them.
    assert!(
        (60..=140).contains(&canary),
        "canary got {canary} of 1000: {counts:?}"
    );
}

#[test]
fn grpc_calls_under_load_survive_two_rollouts() {
    let p = Platform::start();
    let out = p.apply(&grpc_service("steady", "m-grpc-steady", "v1"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    p.eventually(Duration::from_secs(20), "steady ready", || {
        p.is_ready("steady")
    });
    let rt = runtime();
    let client = rt.block_on(EchoClient::connect(p.port, "steady.default.localhost"));
    // 4 callers of 20 ms calls and one server stream of 60 replies 100 ms apart, while two
    // updates replace the revision; each caller stops after 20 s.
    let load = rt.spawn(under_load(client.clone(), 4, Duration::from_secs(20)));
    let stream = rt.spawn({
        let mut client = client.clone();
        async move {
            client
                .server_stream(EchoRequest {
                    count: 60,
                    delay_ms: 100,
                    ..request("long")
                })
                .await
        }
    });
    std::thread::sleep(Duration::from_secs(3));
    p.ok(&["service", "update", "steady", "--env", "TARGET=v2"]);
    std::thread::sleep(Duration::from_secs(4));
    p.ok(&["service", "update", "steady", "--env", "TARGET=v3"]);
    let (ok, failed, targets) = rt.block_on(load).unwrap();
    let stream = rt.block_on(stream).unwrap();
    eprintln!(
        "grpc rollout under load: {ok} ok, {} failed, targets {targets:?}",
        failed.len()
    );
    assert!(
        failed.is_empty(),
        "{} failed calls, e.g. {:?}",
        failed.len(),
        &failed[..failed.len().min(3)]
    );
    assert!(ok >= 1000, "only {ok} calls in 20 s from 4 callers");
    assert!(
        targets.contains("v1") && targets.contains("v3"),
        "{targets:?}"
    );
    let stream = stream.expect("the long stream outlives the rollout");
    assert_eq!(stream.len(), 60);
    assert!(
        stream.iter().all(|r| r.target == "v1"),
        "a stream stays on the replica it started on"
    );
}
