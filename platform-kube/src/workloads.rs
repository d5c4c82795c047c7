//! [`Workloads`] on Kubernetes: a revision runs as the Deployment `<revision>-deployment` (the
//! user container plus the queue-proxy sidecar on Knative's ports) behind the Service
//! `<revision>-private` that selects its pods, both owned by the Revision. Scale changes go
//! through the Deployment's `/scale` subresource. Ready replicas come from the Service's
//! EndpointSlices, as Knative's activator and autoscaler find them.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EnvVar, EnvVarSource, HTTPGetAction, HTTPHeader, ObjectFieldSelector,
    PodSpec, PodTemplateSpec, Probe, Service, ServicePort, ServiceSpec,
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

pub use crate::endpoints::{QUEUE_METRICS_PORT, QUEUE_SERVING_PORT, REVISION_LABEL};
use crate::endpoints::{SliceEndpoints, ready_endpoints, revision_of as key_of};
use sluice_api::contract::{self, QueueProxyEnv, user_env};
use sluice_api::keys;
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
    format!("{revision}-deployment")
}

/// The name of the Service that selects a revision's pods.
pub fn private_service_name(revision: &str) -> String {
    format!("{revision}-private")
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

    /// Follows Deployments and EndpointSlices of revisions until the process ends.
    pub fn watch(&self) {
        let selector = watcher::Config::default().labels(REVISION_LABEL);
        let deployments: Api<Deployment> = Api::all(self.client.clone());
        let this = self.clone();
        let config = selector.clone();
        tokio::spawn(async move {
            let mut events = watcher(deployments, config).default_backoff().boxed();
            while let Some(event) = events.next().await {
                match event {
                    Ok(e) => this.on_deployment(e),
                    Err(error) => tracing::warn!(%error, "Deployment watch failed; retrying."),
                }
            }
        });
        let slices: Api<EndpointSlice> = Api::all(self.client.clone());
        let this = self.clone();
        tokio::spawn(async move {
            let mut events = watcher(slices, selector).default_backoff().boxed();
            while let Some(event) = events.next().await {
                match event {
                    Ok(e) => this.on_slice(e),
                    Err(error) => tracing::warn!(%error, "EndpointSlice watch failed; retrying."),
                }
            }
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
                    o.desired
                        .insert(key, u32::try_from(replicas).unwrap_or_default());
                }
            }
            watcher::Event::Delete(d) => {
                if let Some(key) = key_of(&d.metadata) {
                    o.desired.remove(&key);
                }
            }
            watcher::Event::Init | watcher::Event::InitDone => {}
        }
        drop(o);
        self.changed();
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

    /// The Deployment that runs `spec` (Knative's `MakeDeployment`, in outline).
    pub fn deployment(&self, spec: &WorkloadSpec) -> Result<Deployment, WorkloadError> {
        let mut declared = serde_json::to_value(&spec.container)
            .map_err(|e| WorkloadError::Unsupported(format!("container: {e}")))?;
        // Knative's default name; Go clients (kn, client-go) send `name: ""` when unset.
        if let Some(fields) = declared.as_object_mut()
            && fields
                .get("name")
                .and_then(|n| n.as_str())
                .is_none_or(str::is_empty)
        {
            fields.insert("name".into(), "user-container".into());
        }
        let mut user: Container = serde_json::from_value(declared)
            .map_err(|e| WorkloadError::Unsupported(format!("container: {e}")))?;
        if user.image.is_none() {
            return Err(WorkloadError::Unsupported(format!(
                "revision {}: its container has no image, which Kubernetes needs",
                spec.key
            )));
        }
        let user_port = user
            .ports
            .as_ref()
            .and_then(|p| p.first())
            .map_or(8080, |p| p.container_port);
        user.ports = Some(vec![ContainerPort {
            name: Some("user-port".into()),
            container_port: user_port,
            ..ContainerPort::default()
        }]);
        let env = user.env.get_or_insert_with(Vec::new);
        let literal = |name: &str, value: &str| EnvVar {
            name: name.into(),
            value: Some(value.into()),
            value_from: None,
        };
        env.push(literal(user_env::PORT, &user_port.to_string()));
        env.push(literal(user_env::REVISION, &spec.key.name));
        env.push(literal(user_env::CONFIGURATION, &spec.configuration));
        env.push(literal(user_env::SERVICE, &spec.service));
        // Readiness is the queue-proxy's: it probes the user container itself.
        user.readiness_probe = None;

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
                ContainerPort {
                    name: Some("http".into()),
                    container_port: i32::from(QUEUE_SERVING_PORT),
                    ..ContainerPort::default()
                },
                ContainerPort {
                    name: Some("http-usermetric".into()),
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
        let labels = Self::labels(spec);
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
                        containers: vec![user, queue],
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
                    port("http", 80, QUEUE_SERVING_PORT),
                    port("http-usermetric", QUEUE_METRICS_PORT, QUEUE_METRICS_PORT),
                ]),
                ..ServiceSpec::default()
            }),
            ..Service::default()
        }
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
            failure: o.refused.get(key).cloned(),
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

    use sluice_api::template::Container;
    use sluice_platform::workloads::Probe;

    use super::*;

    fn spec(container: Container) -> WorkloadSpec {
        WorkloadSpec {
            key: RevisionKey::new("default", "hello-00001"),
            service: "hello".into(),
            configuration: "hello".into(),
            uid: "u1".into(),
            container,
            replicas: 1,
            container_concurrency: 0,
            timeout: Duration::from_secs(300),
            response_start_timeout: None,
            idle_timeout: None,
            readiness: Probe::Tcp,
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
            let container = Container {
                name: name.clone(),
                image: Some("ghcr.io/knative/helloworld-go".into()),
                ..Container::default()
            };
            let deployment = workloads.deployment(&spec(container)).unwrap();
            let pod = deployment.spec.template.spec.unwrap();
            assert_eq!(pod.containers[0].name, "user-container", "name {name:?}");
            assert_eq!(pod.containers[1].name, "queue-proxy");
        }
    }
}
