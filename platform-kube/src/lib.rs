//! The Kubernetes side of the seams, over kube-rs: objects are the `serving.knative.dev`
//! custom resources on the API server, revisions run as Deployments, ready endpoints come
//! from EndpointSlices, leadership from a Lease, and operator settings from Knative's config
//! maps.
//!
//! Owns everything that talks to an API server. Must not depend on the local platform or on
//! the controllers.

pub mod cluster;
pub mod endpoints;
pub mod lease;
pub mod route_services;
pub mod store;
pub mod workloads;

pub use cluster::{CLUSTER_DOMAIN, SYSTEM_NAMESPACE, connect, settings};
pub use lease::{Elector, LeaseTimings};
pub use store::KubeStore;
pub use workloads::{KubeWorkloads, KubeWorkloadsConfig};

use std::fmt::Debug;
use std::hash::Hash;

use futures_util::StreamExt;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::watch;

/// Follows one kind into a cache (an informer), bumping `changed` on every event; a failed
/// watch is retried with backoff.
pub fn inform<K>(api: Api<K>, config: watcher::Config, changed: watch::Sender<u64>) -> Store<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone + Send + Sync,
{
    let (reader, writer) = reflector::store();
    tokio::spawn(async move {
        let mut events = watcher(api, config)
            .default_backoff()
            .reflect(writer)
            .boxed();
        while let Some(event) = events.next().await {
            match event {
                Ok(_) => changed.send_modify(|v| *v += 1),
                Err(error) => tracing::warn!(%error, "Watch failed; retrying."),
            }
        }
    });
    reader
}
