//! [`Workloads`] on Kubernetes: a revision runs as the Deployment `<revision>-deployment` (the
//! revision's pod as Knative builds it: its containers, init containers, volumes and pod
//! fields, plus the queue-proxy sidecar on Knative's ports) behind the Service
//! `<revision>-private` that selects its pods, both owned by the Revision. The pod comes from
//! the Revision as stored, read when its Deployment is created. Scale changes go
//! through the Deployment's `/scale` subresource. Ready replicas come from the Service's
//! EndpointSlices, as Knative's activator and autoscaler find them.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EnvVar, EnvVarSource, ExecAction, GRPCAction, HTTPGetAction,
    HTTPHeader, Lifecycle, LifecycleHandler, ObjectFieldSelector, Pod, PodSpec, PodTemplateSpec,
    Probe, Service, ServicePort, ServiceSpec, TCPSocketAction,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Client;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::watch;

use sluice_platform::routing::RevisionKey;
use sluice_platform::workloads::{
    ReplicaFailure, WorkloadError, WorkloadSpec, WorkloadStatus, Workloads,
};

use crate::endpoints::{
    H2C_APP_PROTOCOL, METRICS_PORT_NAME, SERVING_PORT_NAMES, SliceEndpoints, ready_endpoints,
    revision_of as key_of,
};
pub use crate::endpoints::{QUEUE_METRICS_PORT, QUEUE_SERVING_PORT, REVISION_LABEL};
use sluice_api::contract::{self, QueueProxyEnv, UserProtocol, user_env};
use sluice_api::template::{Container as ApiContainer, Probe as ApiProbe};
use sluice_api::{RevisionSpec, keys};
/// The label EndpointSlices carry naming their Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// How revisions run on the cluster.
#[derive(Clone, Debug)]
pub struct KubeWorkloadsConfig {
    /// The image of the queue-proxy sidecar.
    pub queue_proxy_image: String,
}

/// Revisions as Deployments.
#[derive(Clone)]
pub struct KubeWorkloads {
    client: Client,
    cfg: Arc<KubeWorkloadsConfig>,
    observed: Arc<Mutex<Observed>>,
    changes: Arc<watch::Sender<u64>>,
}

#[derive(Default)]
struct Observed {
    /// Replicas wanted, per Deployment we run.
    desired: HashMap<RevisionKey, u32>,
    /// Ready queue-proxies per revision, from EndpointSlices (keyed by slice name).
    slices: HashMap<RevisionKey, BTreeMap<String, SliceEndpoints>>,
    /// Revisions whose Deployment cannot be made or was refused by the API server, and why:
    /// reported as the revision's failure until a later ensure succeeds.
    refused: HashMap<RevisionKey, ReplicaFailure>,
    /// Why each failing pod of a revision fails (keyed by pod name), from its container
    /// statuses: a crash, an image that cannot be pulled, a container that cannot be made.
    pods: HashMap<RevisionKey, BTreeMap<String, ReplicaFailure>>,
    /// The image digests a revision's running pods report, per user container.
    digests: HashMap<RevisionKey, Vec<(String, String)>>,
    /// Deployments that gave up progressing (`ProgressDeadlineExceeded`), and what they said.
    stalled: HashMap<RevisionKey, ReplicaFailure>,
}

/// Waiting reasons that mean the container will not start without a change (Knative reports
/// these on the revision).
const FATAL_WAITING: [&str; 6] = [
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "ErrImageNeverPull",
    "CreateContainerConfigError",
    "CreateContainerError",
];

/// Why `pod` fails, as Knative words it: a user container that exited non-zero
/// (`ExitCodeN`, "Container failed with: ..." and its termination message, which is the tail
/// of its log under FallbackToLogsOnError), or one that cannot start (the kubelet's reason,
/// e.g. `ImagePullBackOff`, and its message). The queue-proxy's own state is not the user's.
pub fn pod_failure(pod: &Pod) -> Option<ReplicaFailure> {
    let status = pod.status.as_ref()?;
    let statuses = status
        .init_container_statuses
        .iter()
        .flatten()
        .chain(status.container_statuses.iter().flatten())
        .filter(|c| c.name != "queue-proxy");
    for c in statuses {
        let state = c.state.as_ref();
        if let Some(w) = state.and_then(|s| s.waiting.as_ref())
            && let Some(reason) = w.reason.as_deref()
            && FATAL_WAITING.contains(&reason)
        {
            return Some(ReplicaFailure {
                reason: reason.to_owned(),
                message: w.message.clone().unwrap_or_else(|| reason.to_owned()),
            });
        }
        let terminated = state
            .and_then(|s| s.terminated.as_ref())
            .or_else(|| c.last_state.as_ref()?.terminated.as_ref());
        if let Some(t) = terminated
            && t.exit_code != 0
        {
            let why = t
                .message
                .as_deref()
                .map(str::trim)
                .filter(|m| !m.is_empty())
                .or(t.reason.as_deref())
                .unwrap_or("no message");
            return Some(ReplicaFailure {
                reason: format!("ExitCode{}", t.exit_code),
                message: format!("Container failed with: {why}"),
            });
        }
    }
    None
}

/// The digest each user container of `pod` runs, from its `imageID` (`REPO@sha256:...`), in
/// the pod's order; empty until every user container has one.
pub fn image_digests(pod: &Pod) -> Vec<(String, String)> {
    let Some(statuses) = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
    else {
        return Vec::new();
    };
    let user: Vec<_> = statuses
        .iter()
        .filter(|c| c.name != "queue-proxy")
        .collect();
    let digests: Vec<(String, String)> = user
        .iter()
        .filter(|c| c.image_id.contains("@sha256:"))
        .map(|c| {
            let id = c.image_id.trim_start_matches("docker-pullable://");
            (c.name.clone(), id.to_owned())
        })
        .collect();
    if digests.len() == user.len() {
        digests
    } else {
        Vec::new()
    }
}

/// A Deployment that stopped progressing: Knative's `ProgressDeadlineExceeded`.
fn stalled(d: &Deployment) -> Option<ReplicaFailure> {
    d.status
        .as_ref()?
        .conditions
        .iter()
        .flatten()
        .find(|c| {
            c.type_.as_deref() == Some("Progressing")
                && c.status.as_deref() == Some("False")
                && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
        })
        .map(|c| ReplicaFailure {
            reason: "ProgressDeadlineExceeded".into(),
            message: c
                .message
                .clone()
                .unwrap_or_else(|| "Initial scale was never achieved".into()),
        })
}

/// The failure a refused Deployment reports: the API server's reason (`Invalid`, say) as
/// `Deployment{reason}`, and its message, which names the field.
fn refusal(spec: &WorkloadSpec, error: &WorkloadError) -> Option<ReplicaFailure> {
    let (reason, why) = match error {
        WorkloadError::Unsupported(why) => ("DeploymentUnsupported".to_owned(), why.clone()),
        WorkloadError::Runtime(cause) => match cause.downcast_ref::<kube::Error>() {
            Some(kube::Error::Api(s)) if (400..500).contains(&s.code) && s.code != 409 => {
                (format!("Deployment{}", s.reason), s.message.clone())
            }
            // Not the spec's fault (the API server away, a conflict): retried, not reported.
            _ => return None,
        },
    };
    Some(ReplicaFailure {
        reason,
        message: format!(
            "The API server refused Deployment {}: {why}",
            deployment_name(&spec.key.name)
        ),
    })
}

/// The Deployment's name for a revision.
pub fn deployment_name(revision: &str) -> String {
    sluice_api::names::child_name(revision, "-deployment")
}

/// The name of the Service that selects a revision's pods. Like every child name it is
/// Knative's `kmeta.ChildName`: a revision name near the 63-character limit gets a shortened
/// name with a hash, since a Service name is a DNS label.
pub fn private_service_name(revision: &str) -> String {
    sluice_api::names::child_name(revision, "-private")
}

/// Watches every `K` labelled with a revision, handing each event to `on`; a failed watch is
/// logged and retried with backoff.
fn follow<K>(client: Client, what: &'static str, on: impl Fn(watcher::Event<K>) + Send + 'static)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
    K::DynamicType: Default,
{
    let api: Api<K> = Api::all(client);
    let config = watcher::Config::default().labels(REVISION_LABEL);
    tokio::spawn(async move {
        let mut events = watcher(api, config).default_backoff().boxed();
        while let Some(event) = events.next().await {
            match event {
                Ok(e) => on(e),
                Err(error) => tracing::warn!(%error, "{what} watch failed; retrying."),
            }
        }
    });
}

impl KubeWorkloads {
    /// Workloads on `client`; call [`KubeWorkloads::watch`] to observe the cluster.
    pub fn new(client: Client, cfg: KubeWorkloadsConfig) -> Self {
        Self {
            client,
            cfg: Arc::new(cfg),
            observed: Arc::default(),
            changes: Arc::new(watch::channel(0).0),
        }
    }

    /// Follows Deployments, Pods and EndpointSlices of revisions until the process ends.
    pub fn watch(&self) {
        let this = self.clone();
        follow(self.client.clone(), "Deployment", move |e| {
            this.on_deployment(e)
        });
        let this = self.clone();
        follow(self.client.clone(), "Pod", move |e| this.on_pod(e));
        let this = self.clone();
        follow(self.client.clone(), "EndpointSlice", move |e| {
            this.on_slice(e)
        });
    }

    fn changed(&self) {
        self.changes.send_modify(|v| *v += 1);
    }

    fn on_deployment(&self, event: watcher::Event<Deployment>) {
        let mut o = self.observed.lock().expect("observed lock");
        match event {
            watcher::Event::Apply(d) | watcher::Event::InitApply(d) => {
                if let Some(key) = key_of(&d.metadata) {
                    let replicas = d.spec.replicas.unwrap_or(1);
                    match stalled(&d) {
                        Some(f) => o.stalled.insert(key.clone(), f),
                        None => o.stalled.remove(&key),
                    };
                    o.desired
                        .insert(key, u32::try_from(replicas).unwrap_or_default());
                }
            }
            watcher::Event::Delete(d) => {
                if let Some(key) = key_of(&d.metadata) {
                    o.stalled.remove(&key);
                    o.desired.remove(&key);
                    o.digests.remove(&key);
                }
            }
            watcher::Event::Init | watcher::Event::InitDone => {}
        }
        drop(o);
        self.changed();
    }

    fn on_pod(&self, event: watcher::Event<Pod>) {
        let (pod, gone) = match event {
            watcher::Event::Apply(p) | watcher::Event::InitApply(p) => (p, false),
            watcher::Event::Delete(p) => (p, true),
            watcher::Event::Init | watcher::Event::InitDone => return,
        };
        let (Some(key), Some(name)) = (key_of(&pod.metadata), pod.metadata.name.clone()) else {
            return;
        };
        let failure = if gone { None } else { pod_failure(&pod) };
        let digests = if gone {
            Vec::new()
        } else {
            image_digests(&pod)
        };
        let mut o = self.observed.lock().expect("observed lock");
        let new_digests = !digests.is_empty() && o.digests.get(&key) != Some(&digests);
        if new_digests {
            o.digests.insert(key.clone(), digests);
        }
        let pods = o.pods.entry(key.clone()).or_default();
        let changed = match failure {
            Some(f) => pods.insert(name, f.clone()) != Some(f),
            None => pods.remove(&name).is_some(),
        };
        if pods.is_empty() {
            o.pods.remove(&key);
        }
        drop(o);
        if changed || new_digests {
            self.changed();
        }
    }

    fn on_slice(&self, event: watcher::Event<EndpointSlice>) {
        let mut o = self.observed.lock().expect("observed lock");
        match event {
            watcher::Event::Apply(s) | watcher::Event::InitApply(s) => {
                if let Some((key, ready)) = ready_endpoints(&s) {
                    let name = s.metadata.name.clone().unwrap_or_default();
                    o.slices.entry(key).or_default().insert(name, ready);
                }
            }
            watcher::Event::Delete(s) => {
                if let Some(key) = key_of(&s.metadata)
                    && let Some(slices) = o.slices.get_mut(&key)
                {
                    slices.remove(s.metadata.name.as_deref().unwrap_or_default());
                }
            }
            watcher::Event::Init | watcher::Event::InitDone => {}
        }
        drop(o);
        self.changed();
    }

    fn owner(spec: &WorkloadSpec) -> Vec<OwnerReference> {
        if spec.uid.is_empty() {
            return Vec::new();
        }
        vec![OwnerReference {
            api_version: "serving.knative.dev/v1".into(),
            kind: "Revision".into(),
            name: spec.key.name.clone(),
            uid: spec.uid.clone(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }]
    }

    fn labels(spec: &WorkloadSpec) -> BTreeMap<String, String> {
        let mut labels = BTreeMap::from([
            (REVISION_LABEL.to_owned(), spec.key.name.clone()),
            ("app".to_owned(), spec.key.name.clone()),
            (
                "app.kubernetes.io/managed-by".to_owned(),
                "sluice".to_owned(),
            ),
        ]);
        if !spec.configuration.is_empty() {
            labels.insert(keys::CONFIGURATION.into(), spec.configuration.clone());
        }
        if !spec.service.is_empty() {
            labels.insert(keys::SERVICE.into(), spec.service.clone());
        }
        labels
    }

    /// The Deployment that runs `spec`'s revision, from the revision spec it carries.
    pub fn deployment(&self, spec: &WorkloadSpec) -> Result<Deployment, WorkloadError> {
        self.revision_deployment(spec, &spec.pod)
    }

    /// The Deployment that runs `spec`'s revision, whose spec is `revision` (Knative's
    /// `MakeDeployment`, in outline): the revision's pod fields as written; its containers with
    /// Knative's additions (the serving container's one `user-port` and `PORT`, `K_SERVICE`,
    /// `K_CONFIGURATION` and `K_REVISION` on each, `terminationMessagePolicy:
    /// FallbackToLogsOnError` unless set); the queue-proxy beside them.
    pub fn revision_deployment(
        &self,
        spec: &WorkloadSpec,
        revision: &RevisionSpec,
    ) -> Result<Deployment, WorkloadError> {
        let serving = revision.serving_index().ok_or_else(|| {
            WorkloadError::Unsupported(format!("revision {}: it has no containers", spec.key))
        })?;
        let user_port = revision.containers[serving]
            .ports
            .first()
            .map(|p| p.container_port)
            .filter(|p| *p != 0)
            .unwrap_or(8080);
        let literal = |name: &str, value: &str| EnvVar {
            name: name.into(),
            value: Some(value.into()),
            value_from: None,
        };
        let knative_env = [
            literal(user_env::REVISION, &spec.key.name),
            literal(user_env::CONFIGURATION, &spec.configuration),
            literal(user_env::SERVICE, &spec.service),
        ];
        let many = revision.containers.len() > 1;
        let mut containers = Vec::with_capacity(revision.containers.len() + 1);
        for (i, declared) in revision.containers.iter().enumerate() {
            // Knative's default names; Go clients (kn, client-go) send `name: ""` when unset.
            let name = if many {
                format!("user-container-{i}")
            } else {
                "user-container".to_owned()
            };
            let is_serving = i == serving;
            let mut c = container(declared, name, is_serving.then_some(user_port));
            if c.image.is_none() {
                return Err(WorkloadError::Unsupported(format!(
                    "revision {}: its container {:?} has no image, which Kubernetes needs",
                    spec.key, c.name
                )));
            }
            let env = c.env.get_or_insert_with(Vec::new);
            if is_serving {
                c.ports = Some(vec![ContainerPort {
                    name: Some("user-port".into()),
                    container_port: user_port,
                    ..ContainerPort::default()
                }]);
                env.push(literal(user_env::PORT, &user_port.to_string()));
                // Readiness over HTTP or TCP is the queue-proxy's: it probes the user
                // container itself. Exec and gRPC probes it cannot run stay for the kubelet.
                if c.readiness_probe
                    .as_ref()
                    .is_some_and(|p| p.http_get.is_some() || p.tcp_socket.is_some())
                {
                    c.readiness_probe = None;
                }
            }
            env.extend(knative_env.iter().cloned());
            c.termination_message_policy
                .get_or_insert_with(|| "FallbackToLogsOnError".into());
            // Knative's drain: the kubelet sends SIGTERM to a user container only once its
            // queue-proxy has answered every request it took (`/wait-for-drain` returns when
            // draining is done), so a scale-down or delete loses no request.
            c.lifecycle = Some(Lifecycle {
                pre_stop: Some(LifecycleHandler {
                    http_get: Some(HTTPGetAction {
                        path: Some("/wait-for-drain".into()),
                        port: IntOrString::Int(i32::from(QUEUE_METRICS_PORT)),
                        ..HTTPGetAction::default()
                    }),
                    ..LifecycleHandler::default()
                }),
                ..Lifecycle::default()
            });
            containers.push(c);
        }
        let init_many = revision.init_containers.len() > 1;
        let init_containers: Vec<Container> = revision
            .init_containers
            .iter()
            .enumerate()
            .map(|(i, declared)| {
                let name = if init_many {
                    format!("init-container-{i}")
                } else {
                    "init-container".to_owned()
                };
                container(declared, name, None)
            })
            .collect();

        let pod_name = EnvVar {
            name: contract::env::POD.into(),
            value: None,
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: "metadata.name".into(),
                    ..ObjectFieldSelector::default()
                }),
                ..EnvVarSource::default()
            }),
        };
        // Validation keeps containerPort within 1..=65535.
        let user_port = u16::try_from(user_port).map_err(|_| {
            WorkloadError::Unsupported(format!("containerPort {user_port} is out of range"))
        })?;
        // The admin port serves the metrics the autoscaler scrapes, on Knative's port; the
        // pod's name comes from the downward API below.
        let queue_env = QueueProxyEnv {
            bind_address: Some("0.0.0.0".into()),
            ..spec.queue_proxy_env(QUEUE_SERVING_PORT, QUEUE_METRICS_PORT, user_port)
        };
        let mut queue_vars: Vec<EnvVar> = queue_env
            .vars()
            .into_iter()
            .map(|(name, value)| literal(name, &value))
            .collect();
        queue_vars.push(pod_name);
        let queue = Container {
            name: "queue-proxy".into(),
            image: Some(self.cfg.queue_proxy_image.clone()),
            // The Sluice image's entrypoint is `sluice`; every component is a subcommand.
            args: Some(vec!["queue-proxy".into()]),
            ports: Some(vec![
                // Knative's names: the one serving port takes HTTP/1.1 and h2c alike.
                ContainerPort {
                    name: Some("queue-port".into()),
                    container_port: i32::from(QUEUE_SERVING_PORT),
                    ..ContainerPort::default()
                },
                ContainerPort {
                    name: Some(METRICS_PORT_NAME.into()),
                    container_port: i32::from(QUEUE_METRICS_PORT),
                    ..ContainerPort::default()
                },
            ]),
            env: Some(queue_vars),
            readiness_probe: Some(Probe {
                http_get: Some(HTTPGetAction {
                    path: Some("/".into()),
                    port: IntOrString::Int(i32::from(QUEUE_SERVING_PORT)),
                    http_headers: Some(vec![HTTPHeader {
                        name: "K-Network-Probe".into(),
                        value: "queue".into(),
                    }]),
                    ..HTTPGetAction::default()
                }),
                period_seconds: Some(1),
                ..Probe::default()
            }),
            ..Container::default()
        };
        containers.push(queue);
        let labels = Self::labels(spec);
        let r = revision;
        Ok(Deployment {
            metadata: ObjectMeta {
                name: Some(deployment_name(&spec.key.name)),
                namespace: Some(spec.key.namespace.clone()),
                labels: Some(labels.clone()),
                owner_references: Some(Self::owner(spec)),
                ..ObjectMeta::default()
            },
            spec: DeploymentSpec {
                replicas: Some(i32::try_from(spec.replicas).unwrap_or(i32::MAX)),
                selector: LabelSelector {
                    match_labels: Some(BTreeMap::from([(
                        REVISION_LABEL.to_owned(),
                        spec.key.name.clone(),
                    )])),
                    ..LabelSelector::default()
                },
                template: PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some(labels),
                        ..ObjectMeta::default()
                    }),
                    spec: Some(PodSpec {
                        containers,
                        init_containers: some_vec(init_containers),
                        volumes: some_vec(r.volumes.clone()),
                        image_pull_secrets: some_vec(r.image_pull_secrets.clone()),
                        service_account_name: r.service_account_name.clone(),
                        automount_service_account_token: r.automount_service_account_token,
                        // Knative's default (config-defaults enable-service-links: false).
                        enable_service_links: Some(r.enable_service_links.unwrap_or(false)),
                        affinity: r.affinity.clone(),
                        node_selector: (!r.node_selector.is_empty())
                            .then(|| r.node_selector.clone()),
                        tolerations: some_vec(r.tolerations.clone()),
                        topology_spread_constraints: some_vec(
                            r.topology_spread_constraints.clone(),
                        ),
                        security_context: r.security_context.clone(),
                        runtime_class_name: r.runtime_class_name.clone(),
                        priority_class_name: r.priority_class_name.clone(),
                        scheduler_name: r.scheduler_name.clone(),
                        dns_policy: r.dns_policy.clone(),
                        dns_config: r.dns_config.clone(),
                        host_aliases: some_vec(r.host_aliases.clone()),
                        share_process_namespace: r.share_process_namespace,
                        host_ipc: r.host_ipc,
                        host_pid: r.host_pid,
                        host_network: r.host_network,
                        termination_grace_period_seconds: Some(
                            i64::try_from(spec.timeout.as_secs()).unwrap_or(300),
                        ),
                        ..PodSpec::default()
                    }),
                },
                ..DeploymentSpec::default()
            },
            ..Deployment::default()
        })
    }

    /// The Service selecting the revision's pods (Knative's `<revision>-private`).
    pub fn private_service(spec: &WorkloadSpec) -> Service {
        let port = |name: &str, port: u16, target: u16| ServicePort {
            name: Some(name.into()),
            port: i32::from(port),
            target_port: Some(IntOrString::Int(i32::from(target))),
            ..ServicePort::default()
        };
        // As Knative names the serving port by the revision's protocol, so that a mesh or
        // gateway reading the Service speaks HTTP/2 to an `h2c` revision.
        let serving = match spec.container.user_protocol() {
            UserProtocol::Http1 => port(SERVING_PORT_NAMES[0], 80, QUEUE_SERVING_PORT),
            UserProtocol::H2c => ServicePort {
                app_protocol: Some(H2C_APP_PROTOCOL.into()),
                ..port(SERVING_PORT_NAMES[1], 80, QUEUE_SERVING_PORT)
            },
        };
        Service {
            metadata: ObjectMeta {
                name: Some(private_service_name(&spec.key.name)),
                namespace: Some(spec.key.namespace.clone()),
                labels: Some(Self::labels(spec)),
                owner_references: Some(Self::owner(spec)),
                ..ObjectMeta::default()
            },
            spec: Some(ServiceSpec {
                selector: Some(BTreeMap::from([(
                    REVISION_LABEL.to_owned(),
                    spec.key.name.clone(),
                )])),
                ports: Some(vec![
                    serving,
                    port(METRICS_PORT_NAME, QUEUE_METRICS_PORT, QUEUE_METRICS_PORT),
                ]),
                ..ServiceSpec::default()
            }),
            ..Service::default()
        }
    }
}

fn some_vec<T>(v: Vec<T>) -> Option<Vec<T>> {
    (!v.is_empty()).then_some(v)
}

/// A revision's container as a pod's: the fields Knative passes, probes with Kubernetes'
/// required ports. `serving_port` is the serving container's port, which its probes' absent,
/// zero or named ports mean (the serving port is renamed `user-port` on the pod).
fn container(c: &ApiContainer, default_name: String, serving_port: Option<i32>) -> Container {
    let probe = |p: &Option<ApiProbe>| p.as_ref().map(|p| probe(p, serving_port));
    Container {
        name: c
            .name
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or(default_name),
        image: c.image.clone(),
        command: some_vec(c.command.clone()),
        args: some_vec(c.args.clone()),
        env: some_vec(c.env.clone()),
        env_from: some_vec(c.env_from.clone()),
        working_dir: c.working_dir.clone(),
        ports: some_vec(c.ports.clone()),
        readiness_probe: probe(&c.readiness_probe),
        liveness_probe: probe(&c.liveness_probe),
        startup_probe: probe(&c.startup_probe),
        resources: c.resources.clone(),
        security_context: c.security_context.clone(),
        volume_mounts: some_vec(c.volume_mounts.clone()),
        image_pull_policy: c.image_pull_policy.clone(),
        termination_message_path: c.termination_message_path.clone(),
        termination_message_policy: c.termination_message_policy.clone(),
        ..Container::default()
    }
}

fn probe(p: &ApiProbe, serving_port: Option<i32>) -> Probe {
    let port = |port: Option<&IntOrString>| match (port, serving_port) {
        (Some(IntOrString::Int(n)), _) if *n != 0 => IntOrString::Int(*n),
        (Some(IntOrString::String(name)), None) => IntOrString::String(name.clone()),
        (_, Some(serving)) => IntOrString::Int(serving),
        (_, None) => IntOrString::Int(0),
    };
    Probe {
        http_get: p.http_get.as_ref().map(|h| HTTPGetAction {
            host: h.host.clone(),
            path: h.path.clone(),
            port: port(h.port.as_ref()),
            scheme: h.scheme.clone(),
            http_headers: some_vec(
                h.http_headers
                    .iter()
                    .map(|h| HTTPHeader {
                        name: h.name.clone(),
                        value: h.value.clone(),
                    })
                    .collect(),
            ),
            ..HTTPGetAction::default()
        }),
        tcp_socket: p.tcp_socket.as_ref().map(|t| TCPSocketAction {
            host: t.host.clone(),
            port: port(t.port.as_ref()),
        }),
        exec: p.exec.as_ref().map(|e| ExecAction {
            command: some_vec(e.command.clone()),
        }),
        grpc: p.grpc.as_ref().map(|g| GRPCAction {
            port: match (g.port, serving_port) {
                (Some(n), _) if n != 0 => n,
                (_, serving) => serving.unwrap_or(0),
            },
            service: g.service.clone(),
            ..GRPCAction::default()
        }),
        initial_delay_seconds: p.initial_delay_seconds,
        period_seconds: p.period_seconds,
        timeout_seconds: p.timeout_seconds,
        success_threshold: p.success_threshold,
        failure_threshold: p.failure_threshold,
        termination_grace_period_seconds: p.termination_grace_period_seconds,
    }
}

fn runtime(e: kube::Error) -> WorkloadError {
    WorkloadError::Runtime(e.into())
}

impl Workloads for KubeWorkloads {
    async fn ensure(&self, spec: WorkloadSpec) -> Result<(), WorkloadError> {
        let ns = &spec.key.namespace;
        let name = deployment_name(&spec.key.name);
        let deployments: Api<Deployment> = Api::namespaced(self.client.clone(), ns);
        let apply = PatchParams::apply(crate::store::FIELD_MANAGER).force();
        let exists = deployments.get_opt(&name).await.map_err(runtime)?;
        match exists {
            None => {
                let created = match self.deployment(&spec) {
                    Ok(d) => deployments
                        .patch(&name, &apply, &Patch::Apply(&d))
                        .await
                        .map(|_| ())
                        .map_err(runtime),
                    Err(e) => Err(e),
                };
                if let Err(error) = created {
                    if let Some(failure) = refusal(&spec, &error) {
                        let mut o = self.observed.lock().expect("observed lock");
                        o.desired.insert(spec.key.clone(), spec.replicas);
                        o.refused.insert(spec.key.clone(), failure);
                        drop(o);
                        self.changed();
                    }
                    return Err(error);
                }
            }
            Some(d) => {
                let have = d.spec.replicas.unwrap_or(1);
                let want = i32::try_from(spec.replicas).unwrap_or(i32::MAX);
                if have != want {
                    let scale = serde_json::json!({ "spec": { "replicas": want } });
                    deployments
                        .patch_scale(&name, &PatchParams::default(), &Patch::Merge(&scale))
                        .await
                        .map_err(runtime)?;
                }
            }
        }
        let services: Api<Service> = Api::namespaced(self.client.clone(), ns);
        let svc = Self::private_service(&spec);
        services
            .patch(
                &private_service_name(&spec.key.name),
                &apply,
                &Patch::Apply(&svc),
            )
            .await
            .map_err(runtime)?;
        let mut o = self.observed.lock().expect("observed lock");
        o.desired.insert(spec.key.clone(), spec.replicas);
        o.refused.remove(&spec.key);
        drop(o);
        self.changed();
        Ok(())
    }

    async fn delete(&self, key: &RevisionKey) -> Result<(), WorkloadError> {
        let dp = DeleteParams::background();
        let deployments: Api<Deployment> = Api::namespaced(self.client.clone(), &key.namespace);
        let services: Api<Service> = Api::namespaced(self.client.clone(), &key.namespace);
        for result in [
            deployments
                .delete(&deployment_name(&key.name), &dp)
                .await
                .map(|_| ()),
            services
                .delete(&private_service_name(&key.name), &dp)
                .await
                .map(|_| ()),
        ] {
            match result {
                Ok(()) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(runtime(e)),
            }
        }
        let mut o = self.observed.lock().expect("observed lock");
        o.desired.remove(key);
        o.slices.remove(key);
        o.refused.remove(key);
        drop(o);
        self.changed();
        Ok(())
    }

    fn status(&self, key: &RevisionKey) -> Option<WorkloadStatus> {
        let o = self.observed.lock().expect("observed lock");
        let desired = *o.desired.get(key)?;
        let mut endpoints: Vec<(SocketAddr, SocketAddr)> = o
            .slices
            .get(key)
            .into_iter()
            .flat_map(|s| s.values())
            .flat_map(|e| e.serving.iter().copied().zip(e.metrics.iter().copied()))
            .collect();
        endpoints.sort();
        endpoints.dedup();
        Some(WorkloadStatus {
            desired,
            endpoints: endpoints.iter().map(|e| e.0).collect(),
            metrics: endpoints.iter().map(|e| e.1).collect(),
            failure: o
                .refused
                .get(key)
                .or_else(|| o.pods.get(key).and_then(|p| p.values().next()))
                .or_else(|| o.stalled.get(key))
                .cloned(),
            image_digests: o.digests.get(key).cloned().unwrap_or_default(),
        })
    }

    fn keys(&self) -> Vec<RevisionKey> {
        let o = self.observed.lock().expect("observed lock");
        o.desired.keys().cloned().collect()
    }

    fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use sluice_platform::workloads::Probe as ReadinessProbe;

    use super::*;

    fn spec(container: ApiContainer) -> WorkloadSpec {
        WorkloadSpec {
            key: RevisionKey::new("default", "hello-00001"),
            service: "hello".into(),
            configuration: "hello".into(),
            uid: "u1".into(),
            pod: RevisionSpec {
                containers: vec![container.clone()],
                ..RevisionSpec::default()
            },
            container,
            replicas: 1,
            container_concurrency: 0,
            timeout: Duration::from_secs(300),
            response_start_timeout: None,
            idle_timeout: None,
            readiness: ReadinessProbe::Tcp,
        }
    }

    #[tokio::test]
    async fn ports_carry_knatives_names_and_h2c_its_app_protocol() {
        for (port_name, serving, app_protocol) in [
            (None, "http", None),
            (Some("h2c"), "http2", Some("kubernetes.io/h2c")),
        ] {
            let container: ApiContainer = serde_json::from_value(serde_json::json!({
                "image": "example.com/app",
                "ports": [{"containerPort": 8080, "name": port_name}],
            }))
            .unwrap();
            let revision = RevisionSpec {
                containers: vec![container.clone()],
                ..RevisionSpec::default()
            };
            let s = spec(container);
            let deployment = workloads().revision_deployment(&s, &revision).unwrap();
            let pod = deployment.spec.template.spec.unwrap();
            let queue = pod.containers.iter().find(|c| c.name == "queue-proxy");
            let ports: Vec<_> = queue
                .unwrap()
                .ports
                .iter()
                .flatten()
                .map(|p| (p.name.clone().unwrap(), p.container_port))
                .collect();
            assert_eq!(
                ports,
                [
                    ("queue-port".into(), 8012),
                    ("http-autometric".into(), 9090)
                ]
            );
            let svc = KubeWorkloads::private_service(&s).spec.unwrap();
            let ports: Vec<_> = svc
                .ports
                .iter()
                .flatten()
                .map(|p| {
                    (
                        p.name.as_deref().unwrap(),
                        p.port,
                        p.app_protocol.as_deref(),
                    )
                })
                .collect();
            assert_eq!(
                ports,
                [(serving, 80, app_protocol), ("http-autometric", 9090, None)],
                "port named {port_name:?}"
            );
        }
    }

    #[tokio::test]
    async fn a_container_named_empty_by_a_go_client_gets_knatives_name() {
        // A client that never talks to a server: building a Deployment is pure.
        let client =
            Client::try_from(kube::Config::new("http://127.0.0.1:9".parse().unwrap())).unwrap();
        let workloads = KubeWorkloads::new(
            client,
            KubeWorkloadsConfig {
                queue_proxy_image: "sluice:test".into(),
            },
        );
        for name in [None, Some(String::new())] {
            let container = ApiContainer {
                name: name.clone(),
                image: Some("ghcr.io/knative/helloworld-go".into()),
                ..ApiContainer::default()
            };
            let deployment = workloads.deployment(&spec(container)).unwrap();
            let pod = deployment.spec.template.spec.unwrap();
            assert_eq!(pod.containers[0].name, "user-container", "name {name:?}");
            assert_eq!(pod.containers[1].name, "queue-proxy");
        }
    }

    fn pod_with(statuses: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "labels": {"serving.knative.dev/revision": "r"}},
            "status": {"containerStatuses": statuses}
        }))
        .unwrap()
    }

    #[test]
    fn a_crashing_or_unpullable_user_container_is_a_failure_in_knatives_words() {
        let crashed = pod_with(serde_json::json!([
            {"name": "user-container", "image": "i", "imageID": "", "ready": false, "restartCount": 3,
             "state": {"waiting": {"reason": "CrashLoopBackOff"}},
             "lastState": {"terminated": {"exitCode": 5, "reason": "Error", "message": "no database\n"}}},
            {"name": "queue-proxy", "image": "q", "imageID": "", "ready": false, "restartCount": 0}
        ]));
        assert_eq!(
            pod_failure(&crashed),
            Some(ReplicaFailure {
                reason: "ExitCode5".into(),
                message: "Container failed with: no database".into()
            })
        );
        let unpullable = pod_with(serde_json::json!([
            {"name": "user-container", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
             "state": {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image \"i\""}}}
        ]));
        assert_eq!(pod_failure(&unpullable).unwrap().reason, "ImagePullBackOff");
        let starting = pod_with(serde_json::json!([
            {"name": "user-container", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
             "state": {"waiting": {"reason": "ContainerCreating"}}},
            {"name": "queue-proxy", "image": "q", "imageID": "", "ready": false, "restartCount": 1,
             "lastState": {"terminated": {"exitCode": 1}}}
        ]));
        assert_eq!(
            pod_failure(&starting),
            None,
            "starting, and the queue-proxy's own restarts are not the user's"
        );
    }

    #[test]
    fn image_digests_come_from_the_user_containers_image_ids() {
        let running = pod_with(serde_json::json!([
            {"name": "user-container", "image": "dev.local/app:1", "ready": true, "restartCount": 0,
             "imageID": "dev.local/app@sha256:0123"},
            {"name": "queue-proxy", "image": "q", "ready": true, "restartCount": 0, "imageID": "q@sha256:9"}
        ]));
        assert_eq!(
            image_digests(&running),
            [(
                "user-container".to_owned(),
                "dev.local/app@sha256:0123".to_owned()
            )]
        );
        let pulling = pod_with(serde_json::json!([
            {"name": "user-container", "image": "dev.local/app:1", "ready": false, "restartCount": 0, "imageID": ""}
        ]));
        assert!(image_digests(&pulling).is_empty());
    }

    #[test]
    fn child_names_of_long_revisions_stay_dns_labels() {
        let long = "probe-runtime-after-startup-period-second-hsaqtpdj-00001";
        for name in [private_service_name(long), deployment_name(long)] {
            assert!(name.len() <= 63, "{name}");
        }
        assert_eq!(private_service_name("hello-00001"), "hello-00001-private");
        assert_eq!(deployment_name("hello-00001"), "hello-00001-deployment");
    }

    #[tokio::test]
    async fn user_containers_stop_only_once_their_queue_proxy_has_drained() {
        let d = workloads()
            .deployment(&spec(ApiContainer {
                image: Some("example.com/app:1".into()),
                ..ApiContainer::default()
            }))
            .unwrap();
        let pod = d.spec.template.spec.unwrap();
        let hook = pod.containers[0]
            .lifecycle
            .as_ref()
            .and_then(|l| l.pre_stop.as_ref())
            .and_then(|p| p.http_get.as_ref())
            .expect("a preStop httpGet on the user container");
        assert_eq!(hook.path.as_deref(), Some("/wait-for-drain"));
        let admin = pod.containers[1]
            .env
            .iter()
            .flatten()
            .find(|e| e.name == sluice_api::contract::env::ADMIN_PORT)
            .and_then(|e| e.value.clone());
        assert_eq!(
            Some(hook.port.clone()),
            admin.map(|p| IntOrString::Int(p.parse().unwrap()))
        );
        assert!(
            pod.containers[1].lifecycle.is_none(),
            "the queue-proxy drains on SIGTERM"
        );
    }

    fn workloads() -> KubeWorkloads {
        // A client that never talks to a server: building a Deployment is pure.
        let client =
            Client::try_from(kube::Config::new("http://127.0.0.1:9".parse().unwrap())).unwrap();
        KubeWorkloads::new(
            client,
            KubeWorkloadsConfig {
                queue_proxy_image: "sluice:test".into(),
            },
        )
    }

    /// The revision spec of the one Service in `yaml`, admitted for Kubernetes by `admit`.
    fn admitted(
        yaml: &str,
        admit: impl FnOnce(sluice_api::Object) -> sluice_api::Object,
    ) -> RevisionSpec {
        let obj = sluice_api::manifest::parse_documents(yaml)
            .unwrap()
            .remove(0);
        match admit(obj) {
            sluice_api::Object::Service(s) => s.spec.template.spec,
            other => panic!("not a Service: {other:?}"),
        }
    }

    /// The pod of `revision`'s Deployment, its workload spec built as the controller does.
    fn pod(revision: &RevisionSpec) -> PodSpec {
        let mut s = spec(revision.serving_container().cloned().unwrap());
        if let Some(get) = s
            .container
            .readiness_probe
            .as_ref()
            .and_then(|p| p.http_get.as_ref())
        {
            s.readiness = ReadinessProbe::Http(get.path.clone().unwrap_or_default());
        }
        let deployment = workloads().revision_deployment(&s, revision).unwrap();
        // What is sent to the API server reads back as the same pod.
        let json = serde_json::to_value(&deployment).unwrap();
        let back: Deployment = serde_json::from_value(json).unwrap();
        assert_eq!(back, deployment);
        deployment.spec.template.spec.unwrap()
    }

    fn env(c: &Container) -> BTreeMap<String, String> {
        c.env
            .iter()
            .flatten()
            .filter_map(|e| Some((e.name.clone(), e.value.clone()?)))
            .collect()
    }

    fn names<T>(items: &Option<Vec<T>>, name: impl Fn(&T) -> &str) -> Vec<String> {
        items.iter().flatten().map(|i| name(i).to_owned()).collect()
    }

    const CORE: &str = r#"
apiVersion: serving.knative.dev/v1
kind: Service
metadata: {name: hello}
spec:
  template:
    spec:
      serviceAccountName: app
      imagePullSecrets: [{name: registry}]
      automountServiceAccountToken: false
      containers:
        - name: app
          image: example.com/app
          ports: [{containerPort: 9000}]
          env: [{name: TARGET, value: World}]
          resources: {requests: {cpu: 100m}, limits: {memory: 256Mi}}
          readinessProbe: {httpGet: {path: /ready}}
          livenessProbe: {httpGet: {path: /healthz}, periodSeconds: 10, failureThreshold: 3}
          startupProbe: {grpc: {}, periodSeconds: 2, failureThreshold: 30}
          securityContext: {runAsNonRoot: true, allowPrivilegeEscalation: false, capabilities: {drop: [ALL]}}
          terminationMessagePath: /dev/app-termination
          volumeMounts:
            - {name: config, mountPath: /etc/config}
            - {name: creds, mountPath: /etc/creds}
            - {name: both, mountPath: /etc/both}
            - {name: scratch, mountPath: /scratch}
        - name: logger
          image: example.com/logger
          volumeMounts: [{name: scratch, mountPath: /logs}]
      volumes:
        - {name: config, configMap: {name: app-config}}
        - {name: creds, secret: {secretName: app-creds}}
        - name: both
          projected: {sources: [{configMap: {name: app-config}}, {secret: {name: app-creds}}]}
        - {name: scratch, emptyDir: {}}
"#;

    #[tokio::test]
    async fn knatives_core_pod_fields_reach_the_pod() {
        let revision = admitted(CORE, |obj| {
            sluice_api::admission::admit(
                obj,
                None,
                &sluice_api::config::DefaultsConfig::default(),
                "me",
                sluice_api::admission::Platform::Kubernetes,
            )
            .unwrap()
        });
        let pod = pod(&revision);
        assert_eq!(pod.service_account_name.as_deref(), Some("app"));
        assert_eq!(names(&pod.image_pull_secrets, |s| &s.name), ["registry"]);
        assert_eq!(pod.automount_service_account_token, Some(false));
        assert_eq!(pod.enable_service_links, Some(false));
        assert_eq!(pod.termination_grace_period_seconds, Some(300));
        assert_eq!(
            names(&pod.volumes, |v| &v.name),
            ["config", "creds", "both", "scratch"]
        );
        let volumes = pod.volumes.clone().unwrap();
        assert_eq!(volumes[0].config_map.as_ref().unwrap().name, "app-config");
        assert_eq!(
            volumes[1].secret.as_ref().unwrap().secret_name.as_deref(),
            Some("app-creds")
        );
        assert_eq!(
            volumes[2]
                .projected
                .as_ref()
                .unwrap()
                .sources
                .as_ref()
                .unwrap()
                .len(),
            2
        );
        assert!(volumes[3].empty_dir.is_some());
        let containers: Vec<&str> = pod.containers.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(containers, ["app", "logger", "queue-proxy"]);

        let app = &pod.containers[0];
        let ports: Vec<_> = names(&app.ports, |p| p.name.as_deref().unwrap_or_default());
        assert_eq!(ports, ["user-port"]);
        assert_eq!(app.ports.as_ref().unwrap()[0].container_port, 9000);
        let e = env(app);
        assert_eq!(
            (
                e["TARGET"].as_str(),
                e["PORT"].as_str(),
                e["K_REVISION"].as_str()
            ),
            ("World", "9000", "hello-00001")
        );
        assert_eq!(
            (e["K_CONFIGURATION"].as_str(), e["K_SERVICE"].as_str()),
            ("hello", "hello")
        );
        assert_eq!(app.readiness_probe, None, "the queue-proxy probes /ready");
        let liveness = app.liveness_probe.as_ref().unwrap();
        let get = liveness.http_get.as_ref().unwrap();
        assert_eq!(
            (get.path.as_deref(), &get.port),
            (Some("/healthz"), &IntOrString::Int(9000))
        );
        assert_eq!(
            (liveness.period_seconds, liveness.failure_threshold),
            (Some(10), Some(3))
        );
        let startup = app.startup_probe.as_ref().unwrap();
        let grpc = startup.grpc.as_ref().unwrap();
        assert_eq!((grpc.port, grpc.service.as_deref()), (9000, Some("")));
        assert_eq!(startup.failure_threshold, Some(30));
        let resources = app.resources.as_ref().unwrap();
        assert_eq!(resources.requests.as_ref().unwrap()["cpu"].0, "100m");
        assert_eq!(resources.limits.as_ref().unwrap()["memory"].0, "256Mi");
        let sc = app.security_context.as_ref().unwrap();
        assert_eq!(
            (sc.run_as_non_root, sc.allow_privilege_escalation),
            (Some(true), Some(false))
        );
        assert_eq!(
            app.termination_message_path.as_deref(),
            Some("/dev/app-termination")
        );
        assert_eq!(
            app.termination_message_policy.as_deref(),
            Some("FallbackToLogsOnError")
        );
        let mounts: Vec<_> = app
            .volume_mounts
            .iter()
            .flatten()
            .map(|m| (m.name.as_str(), m.mount_path.as_str(), m.read_only))
            .collect();
        assert_eq!(
            mounts,
            [
                ("config", "/etc/config", Some(true)),
                ("creds", "/etc/creds", Some(true)),
                ("both", "/etc/both", Some(true)),
                ("scratch", "/scratch", None),
            ]
        );

        let logger = &pod.containers[1];
        assert_eq!(logger.ports, None, "a sidecar has no port");
        let e = env(logger);
        assert!(!e.contains_key("PORT"), "{e:?}");
        assert_eq!(e["K_REVISION"], "hello-00001");
        assert_eq!(names(&logger.volume_mounts, |m| &m.mount_path), ["/logs"]);
        assert_eq!(
            logger.termination_message_policy.as_deref(),
            Some("FallbackToLogsOnError")
        );

        // The queue-proxy as before: it probes the user port on the readiness path.
        let queue = env(&pod.containers[2]);
        assert_eq!(queue["USER_PORT"], "9000");
        assert_eq!(queue["SERVING_READINESS_PROBE"], "http");
        assert_eq!(queue["SERVING_READINESS_PATH"], "/ready");
    }

    const GATED: &str = r#"
apiVersion: serving.knative.dev/v1
kind: Service
metadata: {name: hello}
spec:
  template:
    spec:
      initContainers:
        - image: example.com/migrate
          command: [./migrate]
          volumeMounts: [{name: data, mountPath: /data, readOnly: true}]
      containers:
        - image: example.com/app
          ports: [{containerPort: 8080}]
          readinessProbe: {exec: {command: [./ready]}, periodSeconds: 5}
          env:
            - name: NODE
              valueFrom: {fieldRef: {fieldPath: spec.nodeName}}
          volumeMounts: [{name: data, mountPath: /data, readOnly: true}]
        - image: example.com/sidecar
          readinessProbe: {httpGet: {path: /up, port: 8090}}
          livenessProbe: {tcpSocket: {port: 8090}}
      volumes:
        - {name: data, persistentVolumeClaim: {claimName: data, readOnly: true}}
      affinity:
        podAntiAffinity:
          preferredDuringSchedulingIgnoredDuringExecution:
            - weight: 100
              podAffinityTerm: {topologyKey: kubernetes.io/hostname}
      nodeSelector: {disk: ssd}
      tolerations: [{key: dedicated, operator: Equal, value: serving, effect: NoSchedule}]
      topologySpreadConstraints: [{maxSkew: 1, topologyKey: zone, whenUnsatisfiable: ScheduleAnyway}]
      securityContext: {runAsUser: 1000, fsGroup: 2000}
      runtimeClassName: gvisor
      priorityClassName: high
      schedulerName: custom
      dnsPolicy: None
      dnsConfig: {nameservers: [1.1.1.1], searches: [svc.local]}
      hostAliases: [{ip: 10.0.0.1, hostnames: [db.local]}]
      shareProcessNamespace: true
"#;

    #[tokio::test]
    async fn flag_gated_pod_fields_reach_the_pod_when_their_flags_are_on() {
        let revision = admitted(GATED, |mut obj| {
            let defaults = sluice_api::config::DefaultsConfig::default();
            sluice_api::admission::default(&mut obj, None, &defaults, "me");
            let features = sluice_api::validation::PodSpecFeatures::all();
            sluice_api::validation::object(&obj, &defaults, &features).unwrap();
            // Off, as by default, each is refused instead.
            assert!(obj.validate(&defaults).is_err());
            obj
        });
        let pod = pod(&revision);
        let init = pod.init_containers.as_ref().unwrap();
        assert_eq!(init.len(), 1);
        assert_eq!(init[0].name, "init-container");
        assert_eq!(
            init[0].command.as_deref(),
            Some(&["./migrate".to_owned()][..])
        );
        assert_eq!(names(&init[0].volume_mounts, |m| &m.name), ["data"]);
        assert_eq!(
            pod.volumes.as_ref().unwrap()[0]
                .persistent_volume_claim
                .as_ref()
                .map(|p| p.claim_name.as_str()),
            Some("data")
        );
        let anti = pod
            .affinity
            .as_ref()
            .unwrap()
            .pod_anti_affinity
            .as_ref()
            .unwrap();
        assert_eq!(
            anti.preferred_during_scheduling_ignored_during_execution
                .as_ref()
                .unwrap()[0]
                .weight,
            100
        );
        assert_eq!(pod.node_selector.as_ref().unwrap()["disk"], "ssd");
        assert_eq!(
            pod.tolerations.as_ref().unwrap()[0].key.as_deref(),
            Some("dedicated")
        );
        assert_eq!(
            pod.topology_spread_constraints.as_ref().unwrap()[0].max_skew,
            1
        );
        let sc = pod.security_context.as_ref().unwrap();
        assert_eq!((sc.run_as_user, sc.fs_group), (Some(1000), Some(2000)));
        assert_eq!(pod.runtime_class_name.as_deref(), Some("gvisor"));
        assert_eq!(pod.priority_class_name.as_deref(), Some("high"));
        assert_eq!(pod.scheduler_name.as_deref(), Some("custom"));
        assert_eq!(pod.dns_policy.as_deref(), Some("None"));
        assert_eq!(
            pod.dns_config.as_ref().unwrap().nameservers.as_deref(),
            Some(&["1.1.1.1".to_owned()][..])
        );
        assert_eq!(pod.host_aliases.as_ref().unwrap()[0].ip, "10.0.0.1");
        assert_eq!(pod.share_process_namespace, Some(true));

        let names: Vec<&str> = pod.containers.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            ["user-container-0", "user-container-1", "queue-proxy"]
        );
        let serving = &pod.containers[0];
        // An exec probe is the kubelet's: the queue-proxy only dials the port.
        let ready = serving.readiness_probe.as_ref().unwrap();
        assert_eq!(
            ready.exec.as_ref().unwrap().command.as_deref(),
            Some(&["./ready".to_owned()][..])
        );
        let node = serving
            .env
            .iter()
            .flatten()
            .find(|e| e.name == "NODE")
            .unwrap();
        assert_eq!(
            node.value_from
                .as_ref()
                .unwrap()
                .field_ref
                .as_ref()
                .unwrap()
                .field_path,
            "spec.nodeName"
        );
        // A sidecar's probes stay on the sidecar, on its own port.
        let sidecar = &pod.containers[1];
        let get = sidecar
            .readiness_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap();
        assert_eq!(
            (get.path.as_deref(), &get.port),
            (Some("/up"), &IntOrString::Int(8090))
        );
        let tcp = sidecar
            .liveness_probe
            .as_ref()
            .unwrap()
            .tcp_socket
            .as_ref()
            .unwrap();
        assert_eq!(tcp.port, IntOrString::Int(8090));
        assert_eq!(env(&pod.containers[2])["SERVING_READINESS_PROBE"], "tcp");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "Kubernetes tier: run tests/kube/run"]
    async fn a_revisions_pod_survives_the_api_server_into_its_deployment() {
        use kube::api::PostParams;
        use sluice_test_support::apiserver;
        let server = tokio::task::spawn_blocking(apiserver::ApiServer::start)
            .await
            .unwrap();
        let client = server.client();
        apiserver::install_crds(&client).await;
        let workloads = KubeWorkloads::new(
            client.clone(),
            KubeWorkloadsConfig {
                queue_proxy_image: "sluice:test".into(),
            },
        );
        let defaults = sluice_api::config::DefaultsConfig::default();
        let revisions: Api<sluice_api::Revision> = Api::namespaced(client.clone(), "default");
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
        for (name, yaml) in [("core-00001", CORE), ("gated-00001", GATED)] {
            let declared = admitted(yaml, |mut obj| {
                sluice_api::admission::default(&mut obj, None, &defaults, "me");
                obj
            });
            let mut rev = sluice_api::Revision::new(name, declared.clone());
            rev.metadata.namespace = Some("default".into());
            let stored = revisions
                .create(&PostParams::default(), &rev)
                .await
                .unwrap();
            assert_eq!(
                stored.spec, declared,
                "{name}: the CRD schema pruned a field"
            );
            let mut s = spec(declared.serving_container().cloned().unwrap());
            s.pod = declared.clone();
            s.key = RevisionKey::new("default", name);
            s.uid = stored.metadata.uid.clone().unwrap();
            // The API server validates the pod of the Deployment it is sent.
            workloads.ensure(s).await.unwrap();
            let d = deployments.get(&deployment_name(name)).await.unwrap();
            let pod = d.spec.template.spec.unwrap();
            let want = self::pod(&declared);
            // Compared by name: the API server defaults modes and the like.
            assert_eq!(
                names(&pod.volumes, |v| &v.name),
                names(&want.volumes, |v| &v.name),
                "{name}"
            );
            assert_eq!(
                pod.init_containers.map(|c| c.len()),
                want.init_containers.map(|c| c.len()),
                "{name}"
            );
            assert_eq!(pod.affinity.is_some(), want.affinity.is_some(), "{name}");
            assert_eq!(pod.dns_config, want.dns_config, "{name}");
            assert_eq!(
                pod.service_account_name, want.service_account_name,
                "{name}"
            );
            assert_eq!(pod.containers.len(), want.containers.len(), "{name}");
        }
    }
}
