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

use crate::harness::{http_get_at, sluice_bin};

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
