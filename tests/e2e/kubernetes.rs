//! Sluice on a real Kubernetes API server (etcd plus kube-apiserver on loopback; see
//! `sluice_test_support::apiserver`), driven by the real binaries: `sluice system
//! controller` (two candidates, one Lease), `sluice system activator`, and the `sluice` CLI
//! with a kubeconfig. The components authenticate as their ServiceAccounts (impersonated), so
//! the RBAC in `config/` is what they run with.
//!
//! There is no kubelet, scheduler or endpoint controller here. A stand-in kubelet in this test
//! does their part: for each revision Deployment it runs `spec.replicas` pods, each the
//! Deployment's user command and `sluice queue-proxy` with the env the Deployment gives them,
//! the queue-proxy on its own loopback address 127.0.0.N on Knative's ports 8012 and 9090.
//! The API server refuses loopback addresses in EndpointSlices, so slices carry the pod IP
//! 10.244.0.N and the components are told, with `SLUICE_POD_ADDRESS_MAP`, that it is reached
//! at 127.0.0.N. The user port is remapped to a free port, since pods here share one network
//! namespace. A pod joins its revision's EndpointSlice once the queue-proxy answers the
//! Deployment's readiness probe, and leaves it before it is killed.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Container};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Client;
use kube::api::{Api, ListParams, Patch, PatchParams};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::apiserver::{self, ApiServer};
use crate::harness::{free_port, http_get, sluice_bin, testapp};

const HOST: &str = "hello.default.svc.cluster.local";

/// Pod IPs 10.244.0.N to the loopback addresses 127.0.0.N the stand-in kubelet's pods use.
fn pod_network() -> String {
    (2..64)
        .map(|n| format!("10.244.0.{n}=127.0.0.{n}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// A kubeconfig for the test server, acting as `user` when given.
fn kubeconfig(dir: &Path, name: &str, server: &ApiServer, user: Option<&str>) -> String {
    let act_as = user.map_or(String::new(), |u| {
        format!("\n    as: {u}\n    as-groups: [system:authenticated]")
    });
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {}\n    insecure-skip-tls-verify: true\nusers:\n- name: u\n  user:\n    token: {}{act_as}\ncontexts:\n- name: test\n  context: {{cluster: test, user: u, namespace: default}}\ncurrent-context: test\n",
        server.url, server.token
    );
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// A component process, killed on drop; its output goes to a file in the test's directory.
struct Component {
    child: Child,
    log: std::path::PathBuf,
}

impl Component {
    fn start(dir: &Path, name: &str, args: &[&str], env: &[(&str, String)]) -> Self {
        let log = dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new(sluice_bin());
        cmd.args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file);
        for (k, v) in env {
            cmd.env(k, v);
        }
        Self {
            child: cmd.spawn().unwrap(),
            log,
        }
    }
}

impl Drop for Component {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One pod of the stand-in kubelet.
struct Pod {
    /// The "pod IP" the EndpointSlice carries (the API server refuses loopback addresses).
    pod_ip: String,
    /// Where its queue-proxy listens.
    ip: String,
    user: Child,
    queue: Child,
    ready: bool,
}

impl Drop for Pod {
    fn drop(&mut self) {
        for child in [&mut self.user, &mut self.queue] {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs revision Deployments' pods on loopback, as described at the top of this file.
#[derive(Default)]
struct Kubelet {
    pods: HashMap<String, Vec<Pod>>,
    next_ip: u8,
    /// Ready addresses last written per revision.
    written: HashMap<String, Vec<String>>,
    /// Most pods ever running at once, per revision.
    peak: HashMap<String, usize>,
}

fn literal_env(container: &Container) -> Vec<(String, String)> {
    container
        .env
        .iter()
        .flatten()
        .filter_map(|e| Some((e.name.clone(), e.value.clone()?)))
        .collect()
}

impl Kubelet {
    fn start_pod(&mut self, dir: &Path, revision: &str, d: &Deployment) -> Pod {
        self.next_ip += 1;
        let ip = format!("127.0.0.{}", self.next_ip + 1);
        let containers = &d.spec.template.spec.as_ref().unwrap().containers;
        let user = containers
            .iter()
            .find(|c| c.name == "user-container")
            .unwrap();
        let queue = containers.iter().find(|c| c.name == "queue-proxy").unwrap();
        assert_eq!(queue.args.as_deref(), Some(&["queue-proxy".to_owned()][..]));
        let port = free_port().to_string();
        let command = user.command.clone().unwrap_or_default();
        let log = |name: &str| {
            let f = std::fs::File::create(dir.join(format!("{revision}-{ip}-{name}.log"))).unwrap();
            (f.try_clone().unwrap(), f)
        };
        let (out, err) = log("user");
        let user_child = Command::new(&command[0])
            .args(&command[1..])
            .args(user.args.iter().flatten())
            .envs(literal_env(user))
            .env("PORT", &port)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap();
        let (out, err) = log("queue");
        let queue_child = Command::new(sluice_bin())
            .arg("queue-proxy")
            .envs(literal_env(queue))
            .env("QUEUE_BIND_ADDRESS", &ip)
            .env("USER_PORT", &port)
            .env("SERVING_POD", format!("{revision}-pod-{}", self.next_ip))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap();
        Pod {
            pod_ip: format!("10.244.0.{}", self.next_ip + 1),
            ip,
            user: user_child,
            queue: queue_child,
            ready: false,
        }
    }

    async fn sync(&mut self, client: &Client, dir: &Path) {
        let api: Api<Deployment> = Api::namespaced(client.clone(), "default");
        let list = match api
            .list(&ListParams::default().labels("serving.knative.dev/revision"))
            .await
        {
            Ok(list) => list,
            Err(e) => {
                eprintln!("stand-in kubelet: cannot list Deployments: {e}");
                return;
            }
        };
        let mut seen = Vec::new();
        for d in &list.items {
            let revision =
                d.metadata.labels.as_ref().unwrap()["serving.knative.dev/revision"].clone();
            seen.push(revision.clone());
            let want = usize::try_from(d.spec.replicas.unwrap_or(1)).unwrap();
            let have = self.pods.get(&revision).map_or(0, Vec::len);
            if have < want {
                let pod = self.start_pod(dir, &revision, d);
                self.pods.entry(revision.clone()).or_default().push(pod);
            } else if have > want {
                // Out of the slice first, then killed.
                let pods = self.pods.get_mut(&revision).unwrap();
                pods.last_mut().unwrap().ready = false;
                self.write_slice(client, &revision).await;
                self.pods.get_mut(&revision).unwrap().pop();
            }
            for pod in self.pods.get_mut(&revision).into_iter().flatten() {
                if !pod.ready {
                    pod.ready = probe(&pod.ip).await;
                    if !pod.ready {
                        eprintln!(
                            "probe {} failed; queue exited: {:?}, user exited: {:?}",
                            pod.ip,
                            pod.queue.try_wait(),
                            pod.user.try_wait()
                        );
                    }
                }
            }
            let running = self.pods.get(&revision).map_or(0, Vec::len);
            let peak = self.peak.entry(revision.clone()).or_default();
            *peak = (*peak).max(running);
            self.write_slice(client, &revision).await;
        }
        // Deployments deleted: their pods go.
        self.pods.retain(|rev, _| seen.contains(rev));
    }

    async fn write_slice(&mut self, client: &Client, revision: &str) {
        let ready: Vec<String> = self
            .pods
            .get(revision)
            .into_iter()
            .flatten()
            .filter(|p| p.ready)
            .map(|p| p.pod_ip.clone())
            .collect();
        if self.written.get(revision) == Some(&ready) {
            return;
        }
        let name = format!("{revision}-private-stand-in");
        let slice = EndpointSlice {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some("default".into()),
                labels: Some(BTreeMap::from([
                    (
                        "serving.knative.dev/revision".to_owned(),
                        revision.to_owned(),
                    ),
                    (
                        "kubernetes.io/service-name".to_owned(),
                        format!("{revision}-private"),
                    ),
                ])),
                ..ObjectMeta::default()
            },
            address_type: "IPv4".into(),
            endpoints: Some(
                ready
                    .iter()
                    .map(|ip| Endpoint {
                        addresses: vec![ip.clone()],
                        conditions: Some(EndpointConditions {
                            ready: Some(true),
                            ..EndpointConditions::default()
                        }),
                        ..Endpoint::default()
                    })
                    .collect(),
            ),
            ports: Some(vec![
                EndpointPort {
                    name: Some("http".into()),
                    port: Some(8012),
                    ..EndpointPort::default()
                },
                EndpointPort {
                    name: Some("http-autometric".into()),
                    port: Some(9090),
                    ..EndpointPort::default()
                },
            ]),
        };
        let api: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
        let params = PatchParams::apply("stand-in-kubelet").force();
        match api.patch(&name, &params, &Patch::Apply(&slice)).await {
            Ok(_) => {
                self.written.insert(revision.to_owned(), ready);
            }
            Err(e) => eprintln!("stand-in kubelet: cannot write {name}: {e}"),
        }
    }
}

/// The Deployment's readiness probe: `GET /` with `K-Network-Probe: queue` on port 8012.
async fn probe(ip: &str) -> bool {
    let Ok(mut s) = tokio::net::TcpStream::connect((ip, 8012)).await else {
        return false;
    };
    let req =
        "GET / HTTP/1.1\r\nHost: probe\r\nK-Network-Probe: queue\r\nConnection: close\r\n\r\n";
    if s.write_all(req.as_bytes()).await.is_err() {
        return false;
    }
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut answer)).await;
    answer.starts_with(b"HTTP/1.1 200")
}

/// Every log in the components' directory (theirs and the stand-in kubelet's pods').
fn dump(components: &[&Component]) -> String {
    let Some(dir) = components.first().and_then(|c| c.log.parent()) else {
        return String::new();
    };
    let mut out = String::new();
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    for path in files
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
    {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let text: String = text
            .lines()
            .filter(|l| !l.contains("Server cert bypassed"))
            .map(|l| format!("{l}\n"))
            .collect();
        out.push_str(&format!("--- {}\n{text}", path.display()));
    }
    out
}

fn cli(kubeconfig: &str, args: &[&str]) -> Output {
    Command::new(sluice_bin())
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .env_remove("SLUICE_HOME")
        .output()
        .unwrap()
}

fn ok(kubeconfig: &str, args: &[&str]) -> String {
    ok_or_logs(kubeconfig, args, &[])
}

/// Runs the CLI; on failure panics with its output and the components' logs.
fn ok_or_logs(kubeconfig: &str, args: &[&str], logs: &[&Component]) -> String {
    let out = cli(kubeconfig, args);
    if !out.status.success() {
        let logs = dump(logs);
        panic!(
            "sluice {args:?} failed:\n{}{}\ncomponent logs:\n{logs}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8(out.stdout).unwrap()
}

fn eventually(limit: Duration, what: &str, logs: &[&Component], check: impl FnMut() -> bool) {
    sluice_test_support::eventually_or(
        limit,
        what,
        || {
            format!(
                "component logs:
{}",
                dump(logs)
            )
        },
        check,
    );
}

/// Clients other than the CLI (a Go client, kubectl, GitOps tools) write straight to the API
/// server; the webhooks give them Knative's defaults and errors too.
fn admission_for_every_client(rt: &tokio::runtime::Runtime, admin: &Client) {
    use kube::api::{DynamicObject, PostParams};
    use kube::core::{ApiResource, GroupVersionKind};
    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(
        "serving.knative.dev",
        "v1",
        "Service",
    ));
    let services: Api<DynamicObject> = Api::namespaced_with(admin.clone(), "default", &resource);
    let dry_run = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    // What a Go client sends: an empty container name and no traffic block.
    let go_client = |extra: serde_json::Value| -> DynamicObject {
        let mut spec = serde_json::json!({"containers": [{"name": "", "image": "registry.example/testapp:1"}]});
        json_merge(&mut spec, extra);
        serde_json::from_value(serde_json::json!({
            "apiVersion": "serving.knative.dev/v1",
            "kind": "Service",
            "metadata": {"name": "from-go", "creationTimestamp": null},
            "spec": {"template": {"spec": spec}}
        }))
        .unwrap()
    };
    let stored = rt
        .block_on(services.create(&dry_run, &go_client(serde_json::json!({}))))
        .unwrap();
    let spec = &stored.data["spec"];
    assert_eq!(
        spec["template"]["spec"]["containers"][0]["name"], "user-container",
        "{spec}"
    );
    assert_eq!(
        spec["traffic"],
        serde_json::json!([{"latestRevision": true, "percent": 100}]),
        "{spec}"
    );
    assert_eq!(spec["template"]["spec"]["timeoutSeconds"], 300, "{spec}");
    let annotations = stored.metadata.annotations.clone().unwrap_or_default();
    assert!(
        annotations.contains_key("serving.knative.dev/creator"),
        "{annotations:?}"
    );

    let refused = rt
        .block_on(services.create(
            &dry_run,
            &go_client(serde_json::json!({"containerConcurrency": 5000})),
        ))
        .unwrap_err();
    let message = refused.to_string();
    assert!(
        message.contains("validation.webhook.serving.sluice.dev"),
        "{message}"
    );
    assert!(
        message.contains("spec.template.spec.containerConcurrency"),
        "{message}"
    );

    // A resync that changes nothing writes nothing: defaulting is idempotent.
    let hello = rt.block_on(services.get("hello")).unwrap();
    let again = rt
        .block_on(services.replace("hello", &PostParams::default(), &hello))
        .unwrap();
    assert_eq!(
        again.metadata.resource_version,
        hello.metadata.resource_version
    );
}

fn json_merge(into: &mut serde_json::Value, from: serde_json::Value) {
    if let (Some(into), serde_json::Value::Object(from)) = (into.as_object_mut(), from) {
        into.extend(from);
    }
}

fn status_of(port: u16, path: &str) -> u16 {
    http_get(port, "controller", path).0
}

#[test]
#[ignore = "Kubernetes tier: run tests/kube/run"]
fn sluice_on_a_real_api_server() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = ApiServer::start();
    let admin = {
        let _entered = rt.enter();
        server.client()
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // controller-b serves the admission webhooks on loopback (in a cluster, every replica
    // does, behind the sluice-webhook Service).
    let webhook_port = free_port();
    rt.block_on(async {
        apiserver::install_crds(&admin).await;
        apiserver::apply_config_manifests_with(&admin, |obj| {
            let kind = obj
                .types
                .as_ref()
                .map(|t| t.kind.clone())
                .unwrap_or_default();
            if kind.ends_with("WebhookConfiguration") {
                for hook in obj.data["webhooks"].as_array_mut().unwrap() {
                    let path = hook["clientConfig"]["service"]["path"].clone();
                    let url = format!("https://127.0.0.1:{webhook_port}{}", path.as_str().unwrap());
                    hook["clientConfig"] = serde_json::json!({ "url": url });
                }
            }
        })
        .await;
        // A short grace period, so scale-to-zero fits in a test.
        let maps: Api<ConfigMap> = Api::namespaced(admin.clone(), "sluice-system");
        let patch = serde_json::json!({"data": {"scale-to-zero-grace-period": "2s"}});
        maps.patch(
            "config-autoscaler",
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .unwrap();
    });
    let as_admin = kubeconfig(d, "admin.yaml", &server, None);
    let as_controller = kubeconfig(
        d,
        "controller.yaml",
        &server,
        Some("system:serviceaccount:sluice-system:sluice-controller"),
    );
    let as_activator = kubeconfig(
        d,
        "activator.yaml",
        &server,
        Some("system:serviceaccount:sluice-system:sluice-activator"),
    );

    // Two controller candidates: the first leads, the second waits (and is not ready).
    let (stats_a, stats_b) = (free_port(), free_port());
    let controller = |name: &str, port: u16, webhook: Option<u16>| {
        let address = format!("127.0.0.1:{port}");
        let mut env = vec![("SLUICE_POD_ADDRESS_MAP", pod_network())];
        if let Some(webhook) = webhook {
            env.push(("SLUICE_WEBHOOK_ADDRESS", format!("127.0.0.1:{webhook}")));
            env.push(("SLUICE_WEBHOOK_HOSTS", "127.0.0.1".to_owned()));
        }
        Component::start(
            d,
            name,
            &[
                "--kubeconfig",
                &as_controller,
                "system",
                "controller",
                "--identity",
                name,
                "--stats-address",
                &address,
                "--lease-seconds",
                "3",
            ],
            &env,
        )
    };
    let mut leader = controller("controller-a", stats_a, None);
    eventually(
        Duration::from_secs(30),
        "controller-a leads",
        &[&leader],
        || status_of(stats_a, "/readyz") == 200,
    );
    let standby = controller("controller-b", stats_b, Some(webhook_port));
    eventually(
        Duration::from_secs(10),
        "controller-b serves",
        &[&standby],
        || status_of(stats_b, "/healthz") == 200,
    );
    assert_eq!(
        status_of(stats_b, "/readyz"),
        503,
        "only the leader is ready"
    );
    // The standby made the webhooks' certificate and published its CA.
    let mutating: Api<MutatingWebhookConfiguration> = Api::all(admin.clone());
    eventually(
        Duration::from_secs(20),
        "the webhook CA is published",
        &[&leader, &standby],
        || {
            rt.block_on(mutating.get("defaulting.webhook.serving.sluice.dev"))
                .unwrap()
                .webhooks
                .unwrap_or_default()
                .iter()
                .all(|w| w.client_config.ca_bundle.is_some())
        },
    );

    let http_port = free_port();
    let activator = Component::start(
        d,
        "activator",
        &["--kubeconfig", &as_activator, "system", "activator"],
        &[
            ("ACTIVATOR_PORT", http_port.to_string()),
            ("SLUICE_POD_ADDRESS_MAP", pod_network()),
            // The sluice-autoscaler Service would pick the ready leader; here it is a.
            (
                "SLUICE_AUTOSCALER_URL",
                format!("http://127.0.0.1:{stats_a}"),
            ),
        ],
    );
    macro_rules! logs {
        () => {
            &[&leader, &standby, &activator]
        };
    }
    eventually(
        Duration::from_secs(30),
        "the activator listens",
        logs!(),
        || http_get(http_port, "nothing.example", "/").0 == 404,
    );

    let kubelet = Arc::new(Mutex::new(Kubelet::default()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let run_kubelet = {
        let (kubelet, stop, client, dir) =
            (kubelet.clone(), stop.clone(), admin.clone(), d.to_owned());
        rt.spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let mut k = std::mem::take(&mut *kubelet.lock().unwrap());
                k.sync(&client, &dir).await;
                *kubelet.lock().unwrap() = k;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };

    // Create with the CLI, as locally: it waits, printing progress, until Ready.
    let app = testapp().display().to_string();
    let created = ok_or_logs(
        &as_admin,
        &[
            "service",
            "create",
            "hello",
            "--image",
            "registry.example/testapp:1",
            "--cmd",
            &app,
            "--env",
            "TARGET=cluster",
            "--scale-window",
            "6s",
            "--wait-timeout",
            "60",
        ],
        logs!(),
    );
    assert!(created.contains(&format!("http://{HOST}")), "{created}");
    let listed = ok(&as_admin, &["service", "list"]);
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with("hello ") && l.contains("True")),
        "{listed}"
    );
    let (status, body) = http_get(http_port, HOST, "/");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("K_REVISION=hello-00001"), "{body}");
    assert!(body.contains("K_SERVICE=hello"), "{body}");
    assert!(body.contains("TARGET=cluster"), "{body}");

    // Idle: the leader's autoscaler takes hello-00001 to zero through /scale (6 s window,
    // 2 s grace), and the kubelet's pod goes.
    let deployments: Api<Deployment> = Api::namespaced(admin.clone(), "default");
    let replicas = |name: &str| {
        rt.block_on(deployments.get_opt(name))
            .unwrap()
            .and_then(|d| d.spec.replicas)
    };
    eventually(
        Duration::from_secs(60),
        "hello-00001 scales to zero",
        logs!(),
        || replicas("hello-00001-deployment") == Some(0),
    );
    eventually(Duration::from_secs(10), "its pod is gone", logs!(), || {
        kubelet
            .lock()
            .unwrap()
            .pods
            .get("hello-00001")
            .is_none_or(Vec::is_empty)
    });
    let described = ok(
        &as_admin,
        &["revision", "describe", "hello-00001", "-o", "json"],
    );
    assert!(described.contains("NoTraffic"), "{described}");

    // From zero: the activator holds the request, pokes the autoscaler, which scales to 1;
    // the pod turns ready and the held request is answered.
    let (status, body) = http_get(http_port, HOST, "/");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("K_REVISION=hello-00001"), "{body}");
    assert_eq!(replicas("hello-00001-deployment"), Some(1));

    // The leader dies; the standby takes the lease and carries on.
    let _ = leader.child.kill();
    let _ = leader.child.wait();
    eventually(
        Duration::from_secs(30),
        "controller-b takes over",
        logs!(),
        || status_of(stats_b, "/readyz") == 200,
    );
    let updated = ok(
        &as_admin,
        &["service", "update", "hello", "--env", "TARGET=v2"],
    );
    assert!(updated.contains("hello-00002"), "{updated}");
    let (status, body) = http_get(http_port, HOST, "/");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("K_REVISION=hello-00002"), "{body}");
    assert!(body.contains("TARGET=v2"), "{body}");
    let revisions = ok(&as_admin, &["revision", "list"]);
    assert!(
        revisions.contains("hello-00001") && revisions.contains("hello-00002"),
        "{revisions}"
    );

    // Bad input is refused by name and nothing is stored.
    let refused = cli(
        &as_admin,
        &[
            "service",
            "create",
            "bad",
            "--image",
            "x",
            "--concurrency-limit",
            "5000",
        ],
    );
    assert!(!refused.status.success());
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(message.contains("containerConcurrency"), "{message}");
    assert!(!ok(&as_admin, &["service", "list"]).contains("bad"));
    admission_for_every_client(&rt, &admin);

    // Delete: every object under the Service goes, and the host is no longer served.
    ok(&as_admin, &["service", "delete", "hello"]);
    eventually(
        Duration::from_secs(30),
        "the Deployments are deleted",
        logs!(),
        || {
            rt.block_on(deployments.list(&ListParams::default()))
                .unwrap()
                .items
                .is_empty()
        },
    );
    eventually(Duration::from_secs(10), "the host is gone", logs!(), || {
        http_get(http_port, HOST, "/").0 == 404
    });

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    rt.block_on(run_kubelet).unwrap();
    let peak = kubelet.lock().unwrap().peak.clone();
    assert_eq!(peak.get("hello-00001"), Some(&1), "{peak:?}");
    let _ = std::io::stderr().flush();
}
