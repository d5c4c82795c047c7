//! Sluice on a real single-node cluster (kubelet, containerd, runc, CNI, kube-proxy, CoreDNS),
//! installed from `config/` as the README tells a user: the CLI drives it with a kubeconfig,
//! requests go through the sluice-activator Service's NodePort on the node IP, and every
//! replica is a real pod (user container plus queue-proxy). `tests/node/run` brings the node
//! up, installs Sluice, runs this with `KUBECONFIG`, `SLUICE_NODE_IP` and
//! `SLUICE_NODE_ACTIVATOR_PORT` set, and tears it all down.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams};

use crate::harness::{http_get_at, ready_for_its_generation, sluice_bin, with_stdin};

const IMAGE: &str = "dev.local/sluice-testapp:0.1.0";
const NAME: &str = "node-hello";
const NS: &str = "default";

fn setting(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: this test runs on the real node, from tests/node/run")
    })
}

struct Node {
    kubeconfig: String,
    ingress: SocketAddr,
    client: kube::Client,
    rt: tokio::runtime::Runtime,
}

impl Node {
    fn connect() -> Self {
        let kubeconfig = setting("KUBECONFIG");
        let ingress = format!(
            "{}:{}",
            setting("SLUICE_NODE_IP"),
            setting("SLUICE_NODE_ACTIVATOR_PORT")
        )
        .parse()
        .expect("SLUICE_NODE_IP and SLUICE_NODE_ACTIVATOR_PORT make an address");
        let rt = tokio::runtime::Runtime::new().unwrap();
        let client = rt.block_on(async {
            let file = kube::config::Kubeconfig::read_from(&kubeconfig).unwrap();
            let config = kube::Config::from_custom_kubeconfig(file, &Default::default())
                .await
                .unwrap();
            kube::Client::try_from(config).unwrap()
        });
        Self {
            kubeconfig,
            ingress,
            client,
            rt,
        }
    }

    fn sluice(&self, args: &[&str]) -> Output {
        Command::new(sluice_bin())
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .env_remove("SLUICE_HOME")
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.sluice(args);
        assert!(
            out.status.success(),
            "sluice {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn get(&self, host: &str) -> (u16, String) {
        http_get_at(self.ingress, host, "/")
    }

    fn pods(&self, revision: &str) -> Vec<Pod> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), NS);
        let select =
            ListParams::default().labels(&format!("serving.knative.dev/revision={revision}"));
        self.rt.block_on(pods.list(&select)).unwrap().items
    }

    fn replicas(&self, deployment: &str) -> Option<i32> {
        let deployments: Api<Deployment> = Api::namespaced(self.client.clone(), NS);
        self.rt
            .block_on(deployments.get_opt(deployment))
            .unwrap()
            .and_then(|d| d.spec.replicas)
    }

    fn autoscaler(&self, data: serde_json::Value) {
        let maps: Api<ConfigMap> = Api::namespaced(self.client.clone(), "sluice-system");
        let patch = serde_json::json!({ "data": data });
        self.rt
            .block_on(maps.patch(
                "config-autoscaler",
                &PatchParams::default(),
                &Patch::Merge(&patch),
            ))
            .unwrap();
    }
}

fn eventually(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn target(body: &str) -> String {
    body.lines()
        .find_map(|l| l.strip_prefix("TARGET="))
        .unwrap_or("?")
        .to_owned()
}

#[test]
#[ignore = "real node tier: run tests/node/run"]
fn sluice_on_a_real_node() {
    let node = Node::connect();
    let host = format!("{NAME}.{NS}.svc.cluster.local");
    // A short grace period, so scale-to-zero fits in a test; restored at the end.
    node.autoscaler(serde_json::json!({"scale-to-zero-grace-period": "2s"}));
    let _ = node.sluice(&["service", "delete", NAME]);

    let started = Instant::now();
    let created = node.ok(&[
        "service",
        "create",
        NAME,
        "--image",
        IMAGE,
        "--env",
        "TARGET=v1",
        "--scale-window",
        "6s",
        "--wait-timeout",
        "120",
    ]);
    println!("create → Ready: {:?}", started.elapsed());
    assert!(created.contains(&format!("http://{host}")), "{created}");
    let pods = node.pods(&format!("{NAME}-00001"));
    assert_eq!(pods.len(), 1, "one pod while serving");
    let containers: Vec<String> = pods[0]
        .spec
        .as_ref()
        .unwrap()
        .containers
        .iter()
        .map(|c| c.name.clone())
        .collect();
    assert_eq!(containers, ["user-container", "queue-proxy"]);
    let (status, body) = node.get(&host);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(&format!("K_REVISION={NAME}-00001")), "{body}");
    assert_eq!(target(&body), "v1");

    // Idle: to zero, and the pod goes.
    let idle = Instant::now();
    eventually(Duration::from_secs(90), "scaled to zero", || {
        node.replicas(&format!("{NAME}-00001-deployment")) == Some(0)
    });
    eventually(Duration::from_secs(60), "its pod is gone", || {
        node.pods(&format!("{NAME}-00001")).is_empty()
    });
    println!("idle → no pods: {:?}", idle.elapsed());

    // From zero: the activator holds the request until a new pod is ready.
    let cold = Instant::now();
    let (status, body) = node.get(&host);
    println!("served from zero in {:?}", cold.elapsed());
    assert_eq!(status, 200, "{body}");
    assert_eq!(target(&body), "v1");

    // Update: a second revision takes the traffic.
    node.ok(&[
        "service",
        "update",
        NAME,
        "--env",
        "TARGET=v2",
        "--wait-timeout",
        "120",
    ]);
    let (status, body) = node.get(&host);
    assert_eq!(status, 200, "{body}");
    assert_eq!(target(&body), "v2");

    // Split 50/50 and tag the first revision.
    let first = format!("{NAME}-00001");
    let second = format!("{NAME}-00002");
    node.ok(&[
        "service",
        "update",
        NAME,
        "--traffic",
        &format!("{first}=50,{second}=50"),
        "--tag",
        &format!("{first}=old"),
        "--wait-timeout",
        "120",
    ]);
    let mut counts = BTreeMap::<String, usize>::new();
    for _ in 0..100 {
        let (status, body) = node.get(&host);
        assert_eq!(status, 200, "{body}");
        *counts.entry(target(&body)).or_default() += 1;
    }
    assert!(
        counts.get("v1") >= Some(&25) && counts.get("v2") >= Some(&25),
        "50/50 gave {counts:?}"
    );
    let (status, body) = node.get(&format!("old-{host}"));
    assert_eq!(status, 200, "{body}");
    assert_eq!(target(&body), "v1");

    // Delete: the Deployments go, and the host is no longer served.
    node.ok(&["service", "delete", NAME]);
    eventually(
        Duration::from_secs(60),
        "the Deployments are deleted",
        || {
            node.replicas(&format!("{first}-deployment")).is_none()
                && node.replicas(&format!("{second}-deployment")).is_none()
        },
    );
    eventually(Duration::from_secs(30), "the host is gone", || {
        node.get(&host).0 == 404
    });
    node.autoscaler(serde_json::json!({"scale-to-zero-grace-period": null}));
}

const GRPC_IMAGE: &str = "dev.local/sluice-grpcapp:0.1.0";

/// The host of a Knative Service's `status.url`.
fn url_host(node: &Node, name: &str) -> String {
    let svc: serde_json::Value =
        serde_json::from_str(&node.ok(&["service", "describe", name, "-o", "json"])).unwrap();
    let url = svc["status"]["url"]
        .as_str()
        .expect("status.url")
        .to_owned();
    url.split("://")
        .nth(1)
        .unwrap()
        .trim_end_matches('/')
        .to_owned()
}

/// `sluice apply -f -` on the node.
fn apply(node: &Node, yaml: &str) {
    let mut cmd = Command::new(sluice_bin());
    cmd.arg("--kubeconfig")
        .arg(&node.kubeconfig)
        .args(["apply", "-f", "-"])
        .env_remove("SLUICE_HOME");
    let out = with_stdin(cmd, yaml);
    assert!(
        out.status.success(),
        "sluice apply: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
#[ignore = "real node tier: run tests/node/run"]
fn grpc_and_websockets_on_a_real_node() {
    use crate::grpc::{EchoClient, EchoRequest, request, split, under_load};
    use crate::websocket::{closed, connect_at, say};

    let node = Node::connect();
    node.autoscaler(serde_json::json!({"scale-to-zero-grace-period": "2s"}));
    let _ = node.sluice(&["service", "delete", "node-grpc"]);
    let _ = node.sluice(&["service", "delete", "node-ws"]);
    apply(
        &node,
        &format!(
            r#"apiVersion: serving.knative.dev/v1
kind: Service
metadata:
  name: node-grpc
  namespace: {NS}
spec:
  template:
    metadata:
      annotations:
        autoscaling.knative.dev/window: 6s
    spec:
      containers:
        - image: {GRPC_IMAGE}
          ports:
            - name: h2c
              containerPort: 8080
          env:
            - {{name: TARGET, value: stable}}
"#
        ),
    );
    eventually(Duration::from_secs(120), "node-grpc Ready", || {
        is_ready(&node, "node-grpc")
    });
    let host = url_host(&node, "node-grpc");
    let ingress = node.ingress;
    let rt = &node.rt;
    let mut client = rt.block_on(EchoClient::connect_at(ingress, &host));

    // The four call kinds, in HTTP/2 all the way to the app.
    let reply = rt.block_on(client.unary(request("hello"))).unwrap();
    assert_eq!(
        (&*reply.revision, &*reply.target, &*reply.http_version),
        ("node-grpc-00001", "stable", "HTTP/2.0")
    );
    let stream = rt
        .block_on(client.server_stream(EchoRequest {
            count: 3,
            ..request("tick")
        }))
        .unwrap();
    assert_eq!(stream.len(), 3);
    let joined = rt
        .block_on(client.client_stream(["a", "b"].map(request).to_vec()))
        .unwrap();
    assert_eq!(joined.message, "a b");
    let pongs = rt.block_on(client.ping_pong(&["x", "y"])).unwrap();
    assert_eq!(pongs.len(), 2);
    drop(client);

    // From zero: a gRPC call waits in the activator for a new pod.
    eventually(Duration::from_secs(90), "node-grpc at zero", || {
        node.replicas("node-grpc-00001-deployment") == Some(0)
            && node.pods("node-grpc-00001").is_empty()
    });
    let cold = Instant::now();
    let reply = rt
        .block_on(async {
            EchoClient::connect_at(ingress, &host)
                .await
                .unary(request("wake"))
                .await
        })
        .expect("a gRPC call from zero");
    println!("gRPC call served from zero in {:?}", cold.elapsed());
    assert_eq!(reply.revision, "node-grpc-00001");

    // 90/10 over 1,000 unary calls.
    node.ok(&[
        "service",
        "update",
        "node-grpc",
        "--env",
        "TARGET=canary",
        "--traffic",
        "node-grpc-00001=90,@latest=10",
        "--wait-timeout",
        "120",
    ]);
    let counts = rt.block_on(async {
        let client = EchoClient::connect_at(ingress, &host).await;
        split(&client, 10, 100).await
    });
    println!("gRPC 90/10 over 1000 calls: {counts:?}");
    let canary = counts.get("canary").copied().unwrap_or(0);
    assert!((60..=140).contains(&canary), "{counts:?}");

    // A rollout under 4 callers: no failed call while the old pods drain.
    let client = rt.block_on(EchoClient::connect_at(ingress, &host));
    let load = rt.spawn(under_load(client, 4, Duration::from_secs(40)));
    std::thread::sleep(Duration::from_secs(3));
    node.ok(&[
        "service",
        "update",
        "node-grpc",
        "--env",
        "TARGET=v3",
        "--traffic",
        "@latest=100",
        "--wait-timeout",
        "120",
    ]);
    let (ok, failed, targets) = rt.block_on(load).unwrap();
    println!(
        "gRPC rollout on the node: {ok} ok, {} failed, targets {targets:?}",
        failed.len()
    );
    assert!(
        failed.is_empty(),
        "failed calls: {:?}",
        &failed[..failed.len().min(3)]
    );
    assert!(targets.contains("v3"), "{targets:?}");

    // WebSockets through the activator and the queue-proxy of a real pod.
    apply(
        &node,
        &format!(
            r#"apiVersion: serving.knative.dev/v1
kind: Service
metadata:
  name: node-ws
  namespace: {NS}
spec:
  template:
    spec:
      containers:
        - image: {IMAGE}
          args: [ws]
          env:
            - {{name: TARGET, value: v1}}
"#
        ),
    );
    eventually(Duration::from_secs(120), "node-ws Ready", || {
        is_ready(&node, "node-ws")
    });
    let ws_host = url_host(&node, "node-ws");
    let mut long = connect_at(ingress, &ws_host);
    assert_eq!(say(&mut long, "hello"), "node-ws-00001 v1 hello");
    let mut closing = connect_at(ingress, &ws_host);
    closing
        .send(tungstenite::Message::text("close 4002"))
        .unwrap();
    assert_eq!(
        closed(&mut closing),
        Some((
            tungstenite::protocol::frame::coding::CloseCode::from(4002),
            "asked".to_owned()
        ))
    );
    node.ok(&[
        "service",
        "update",
        "node-ws",
        "--env",
        "TARGET=v2",
        "--wait-timeout",
        "120",
    ]);
    let mut fresh = connect_at(ingress, &ws_host);
    assert_eq!(say(&mut fresh, "new"), "node-ws-00002 v2 new");
    assert_eq!(
        say(&mut long, "after"),
        "node-ws-00001 v1 after",
        "an open WebSocket stays on its pod across the rollout"
    );
    long.close(None).unwrap();
    fresh.close(None).unwrap();
    closed(&mut long);
    closed(&mut fresh);

    node.ok(&["service", "delete", "node-grpc"]);
    node.ok(&["service", "delete", "node-ws"]);
    node.autoscaler(serde_json::json!({"scale-to-zero-grace-period": null}));
}

/// Whether a Knative Service is Ready for its generation.
fn is_ready(node: &Node, name: &str) -> bool {
    let out = node.sluice(&["service", "describe", name, "-o", "json"]);
    serde_json::from_slice(&out.stdout).is_ok_and(|svc| ready_for_its_generation(&svc))
}
