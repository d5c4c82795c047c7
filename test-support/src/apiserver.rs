//! A real Kubernetes API server for tests: Debian's etcd plus a kube-apiserver built from Go
//! modules by `tests/kube/build-apiserver.sh` (cached outside the repository), on loopback
//! ports, authenticated by a static admin token. There is no kubelet, scheduler or
//! controller-manager: tests that need what those would write (ready endpoints, say) write it
//! themselves and say so.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kube::Client;

use crate::{free_port, repo_root};

/// A running etcd and kube-apiserver; both are killed on drop.
pub struct ApiServer {
    etcd: Child,
    apiserver: Child,
    /// `https://127.0.0.1:PORT`.
    pub url: String,
    /// The admin bearer token.
    pub token: String,
    dir: tempfile::TempDir,
}

/// The kube-apiserver binary: `$SLUICE_KUBE_APISERVER`, or built (once) by the harness script.
fn apiserver_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("SLUICE_KUBE_APISERVER") {
        return path.into();
    }
    let script = repo_root().join("tests/kube/build-apiserver.sh");
    let out = Command::new("bash")
        .arg(&script)
        .stderr(Stdio::inherit())
        .output()
        .expect("run tests/kube/build-apiserver.sh");
    assert!(
        out.status.success(),
        "tests/kube/build-apiserver.sh failed; see its output above"
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

fn spawn(cmd: &mut Command, log: &Path) -> Child {
    let file = std::fs::File::create(log).unwrap();
    cmd.stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e} (is etcd-server installed?)"))
}

impl ApiServer {
    /// Starts etcd and kube-apiserver and waits until `/readyz` answers ok.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let (client_port, peer_port, api_port) = (free_port(), free_port(), free_port());
        let etcd_url = format!("http://127.0.0.1:{client_port}");
        let etcd = spawn(
            Command::new("etcd")
                .arg("--data-dir")
                .arg(d.join("etcd"))
                .args(["--listen-client-urls", &etcd_url])
                .args(["--advertise-client-urls", &etcd_url])
                .args([
                    "--listen-peer-urls",
                    &format!("http://127.0.0.1:{peer_port}"),
                ])
                .args(["--log-level", "warn"]),
            &d.join("etcd.log"),
        );
        let key = d.join("sa.key");
        let pubkey = d.join("sa.pub");
        let ok = Command::new("openssl")
            .args(["genrsa", "-out"])
            .arg(&key)
            .arg("2048")
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success()
            && Command::new("openssl")
                .args(["rsa", "-pubout", "-in"])
                .arg(&key)
                .arg("-out")
                .arg(&pubkey)
                .stderr(Stdio::null())
                .status()
                .unwrap()
                .success();
        assert!(ok, "openssl could not make the service-account key");
        let token = format!("sluice-test-{}", fastrand::u64(..));
        std::fs::write(
            d.join("tokens.csv"),
            format!("{token},admin,admin,system:masters\n"),
        )
        .unwrap();
        let apiserver = spawn(
            Command::new(apiserver_binary())
                .args(["--etcd-servers", &etcd_url])
                .args(["--bind-address", "127.0.0.1"])
                .args(["--advertise-address", "127.0.0.1"])
                .args(["--secure-port", &api_port.to_string()])
                .arg("--cert-dir")
                .arg(d.join("certs"))
                .arg("--token-auth-file")
                .arg(d.join("tokens.csv"))
                .args(["--authorization-mode", "RBAC"])
                .args([
                    "--service-account-issuer",
                    "https://kubernetes.default.svc.cluster.local",
                ])
                .arg("--service-account-key-file")
                .arg(&pubkey)
                .arg("--service-account-signing-key-file")
                .arg(&key)
                .args(["--service-cluster-ip-range", "10.96.0.0/16"])
                .args(["--enable-priority-and-fairness=false"]),
            &d.join("apiserver.log"),
        );
        let server = Self {
            etcd,
            apiserver,
            url: format!("https://127.0.0.1:{api_port}"),
            token,
            dir,
        };
        server.wait_ready();
        server
    }

    fn wait_ready(&self) {
        let start = Instant::now();
        loop {
            let out = Command::new("curl")
                .args(["-sk", "-m", "2", "-H"])
                .arg(format!("Authorization: Bearer {}", self.token))
                .arg(format!("{}/readyz", self.url))
                .output()
                .expect("curl");
            if out.stdout == b"ok" {
                return;
            }
            if start.elapsed() > Duration::from_secs(90) {
                let log = std::fs::read_to_string(self.dir.path().join("apiserver.log"))
                    .unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(30).collect();
                panic!(
                    "kube-apiserver not ready after 90 s; last log lines:\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// A kube-rs client as the admin. The API server's certificate is self-signed on loopback,
    /// so it is not verified.
    pub fn client(&self) -> Client {
        let mut config = kube::Config::new(self.url.parse().unwrap());
        config.accept_invalid_certs = true;
        config.auth_info.token = Some(self.token.clone().into());
        config.default_namespace = "default".into();
        Client::try_from(config).unwrap()
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        let _ = self.apiserver.kill();
        let _ = self.apiserver.wait();
        let _ = self.etcd.kill();
        let _ = self.etcd.wait();
    }
}

/// Installs Sluice's generated CRDs from `config/crds` and waits until they are established.
pub async fn install_crds(client: &Client) {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::api::{Api, PostParams};
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut names = Vec::new();
    for entry in std::fs::read_dir(repo_root().join("config/crds")).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        let crd: CustomResourceDefinition = serde_yaml::from_str(&text).unwrap();
        names.push(crd.metadata.name.clone().unwrap());
        api.create(&PostParams::default(), &crd).await.unwrap();
    }
    let start = Instant::now();
    for name in names {
        loop {
            let crd = api.get(&name).await.unwrap();
            let established = crd
                .status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True");
            if established {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "CRD {name} not established"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Applies every manifest in `config/` (namespace, RBAC, config maps, the components'
/// Deployments and Services, the admission webhooks) as `kubectl apply -f config/` would
/// create them, failing on any document the API server refuses.
pub async fn apply_config_manifests(client: &Client) {
    apply_config_manifests_with(client, |_| {}).await;
}

/// [`apply_config_manifests`], with `edit` applied to each object first (to point the
/// webhook configurations at a controller on loopback, say).
pub async fn apply_config_manifests_with(
    client: &Client,
    edit: impl Fn(&mut kube::api::DynamicObject),
) {
    use kube::api::{Api, DynamicObject, PostParams};
    use kube::core::GroupVersionKind;
    use serde::Deserialize;
    let dir = repo_root().join("config");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let mut obj: DynamicObject = DynamicObject::deserialize(doc).unwrap();
            edit(&mut obj);
            let types = obj.types.clone().expect("apiVersion and kind");
            let (group, version) = types
                .api_version
                .split_once('/')
                .unwrap_or(("", types.api_version.as_str()));
            let gvk = GroupVersionKind::gvk(group, version, &types.kind);
            let (resource, caps) = kube::discovery::pinned_kind(client, &gvk)
                .await
                .unwrap_or_else(|e| panic!("{}: unknown kind {gvk:?}: {e}", file.display()));
            let api: Api<DynamicObject> = match caps.scope {
                kube::discovery::Scope::Cluster => Api::all_with(client.clone(), &resource),
                kube::discovery::Scope::Namespaced => Api::namespaced_with(
                    client.clone(),
                    obj.metadata.namespace.as_deref().unwrap_or("default"),
                    &resource,
                ),
            };
            if let Err(e) = api.create(&PostParams::default(), &obj).await {
                panic!("{}: {} refused: {e}", file.display(), types.kind);
            }
        }
    }
}
