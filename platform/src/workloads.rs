//! The workloads seam: run a revision as N replicas, each a user process behind its own
//! queue-proxy, and report which replicas are ready and why the others are not.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::sync::watch;

use crate::routing::RevisionKey;

/// Everything needed to run the replicas of one revision.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkloadSpec {
    /// The revision.
    pub key: RevisionKey,
    /// `K_SERVICE` (empty without a Service).
    pub service: String,
    /// `K_CONFIGURATION`.
    pub configuration: String,
    /// The revision's uid (owner of what a cluster creates for it).
    pub uid: String,
    /// The serving container as the revision declares it: a cluster runs it as a pod's
    /// container, the local platform runs its command, args, literal env and working dir.
    pub container: sluice_api::template::Container,
    /// The revision's whole spec: a cluster makes the pod from it (sidecars, init
    /// containers, volumes, pod fields).
    pub pod: sluice_api::RevisionSpec,
    /// Replicas wanted.
    pub replicas: u32,
    /// containerConcurrency (0 = unlimited).
    pub container_concurrency: u32,
    /// Revision request timeout.
    pub timeout: Duration,
    /// Time allowed until the first response byte, if limited.
    pub response_start_timeout: Option<Duration>,
    /// Time allowed between response bytes, if limited.
    pub idle_timeout: Option<Duration>,
    /// How the queue-proxy decides the user process is ready.
    pub readiness: Probe,
}

pub use sluice_api::contract::Probe;
use sluice_api::contract::QueueProxyEnv;

impl WorkloadSpec {
    /// The environment of this revision's queue-proxies on the given ports; the platform
    /// fills in what only it knows (bind address, pod name, drain timing).
    pub fn queue_proxy_env(
        &self,
        serving_port: u16,
        admin_port: u16,
        user_port: u16,
    ) -> QueueProxyEnv {
        QueueProxyEnv {
            serving_port,
            admin_port,
            bind_address: None,
            user_port,
            user_protocol: self.container.user_protocol(),
            container_concurrency: self.container_concurrency,
            timeout_seconds: self.timeout.as_secs(),
            response_start_timeout_seconds: self.response_start_timeout.map(|d| d.as_secs()),
            idle_timeout_seconds: self.idle_timeout.map(|d| d.as_secs()),
            namespace: self.key.namespace.clone(),
            service: self.service.clone(),
            configuration: self.configuration.clone(),
            revision: self.key.name.clone(),
            pod: None,
            probe: self.readiness.clone(),
            drain_quiet_milliseconds: None,
        }
    }
}

/// The observed state of one revision's replicas.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WorkloadStatus {
    /// Replicas wanted.
    pub desired: u32,
    /// Ready queue-proxy endpoints.
    pub endpoints: Vec<SocketAddr>,
    /// The metrics (admin) address of each ready endpoint, in the same order.
    pub metrics: Vec<SocketAddr>,
    /// Why replicas are failing, while none is ready.
    pub failure: Option<ReplicaFailure>,
    /// The image digest each user container runs (container name to `REPO@sha256:...`), as
    /// the platform resolved it; empty where images are not pulled.
    pub image_digests: Vec<(String, String)>,
}

/// Why a revision's replicas fail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaFailure {
    /// CamelCase reason, e.g. `ExitCode3`.
    pub reason: String,
    /// For humans: what happened, with the tail of the process's stderr.
    pub message: String,
}

/// Why a workload operation failed.
#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    /// The spec cannot be run on this platform.
    #[error("{0}")]
    Unsupported(String),
    /// Starting or stopping replicas failed; the cause is kept.
    #[error("workload: {0}")]
    Runtime(#[source] crate::store::BoxError),
}

/// Runs revisions.
pub trait Workloads: Send + Sync + 'static {
    /// Makes the revision's replicas match `spec` (starting or stopping replicas).
    fn ensure(&self, spec: WorkloadSpec) -> impl Future<Output = Result<(), WorkloadError>> + Send;

    /// Stops and forgets every replica of a revision.
    fn delete(&self, key: &RevisionKey) -> impl Future<Output = Result<(), WorkloadError>> + Send;

    /// The current state of a revision's replicas, if it has a workload.
    fn status(&self, key: &RevisionKey) -> Option<WorkloadStatus>;

    /// Every revision with a workload.
    fn keys(&self) -> Vec<RevisionKey>;

    /// The status of every revision with a ready replica: what the autoscaler scrapes each
    /// second. The default looks at every revision; a platform that can skip those at zero
    /// should (10,000 lookups a second were most of an idle daemon's CPU).
    fn ready(&self) -> Vec<(RevisionKey, WorkloadStatus)> {
        self.keys()
            .into_iter()
            .filter_map(|key| {
                let status = self.status(&key)?;
                (!status.endpoints.is_empty()).then_some((key, status))
            })
            .collect()
    }

    /// A signal that changes whenever any replica changes state.
    fn changes(&self) -> watch::Receiver<u64>;

    /// The revisions whose status changed after the [`Workloads::changes`] value `seen`, or
    /// `None` when the platform cannot say: then every revision may have changed.
    fn changed_since(&self, seen: u64) -> Option<Vec<RevisionKey>> {
        let _ = seen;
        None
    }
}
