//! The activator's routing source on Kubernetes: informers on Routes, Revisions, the
//! revisions' EndpointSlices and `config-features`, and the same [`snapshot`] function the
//! local daemon publishes from. Every change recomputes the snapshot; an unchanged one is not
//! republished.
//!
//! On the cluster the activator does not hear the autoscaler's excess-burst-capacity verdict,
//! so a revision with a containerConcurrency limit is always buffered: requests wait in the
//! activator for a free slot instead of in a queue-proxy (Knative with
//! `target-burst-capacity: -1`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use kube::{Api, Client};
use sluice_api::config::FeaturesConfig;
use sluice_api::{Revision, Route};
use sluice_platform::RevisionKey;
use sluice_platform::routing::RoutingSnapshot;
use sluice_platform_kube::endpoints::{REVISION_LABEL, ready_endpoints};
use sluice_platform_kube::inform;
use tokio::sync::watch;

use sluice_controller::routing::snapshot;

/// Publishes routing snapshots from the cluster into `tx` until the process ends. The first
/// snapshot is published once every informer has listed its objects, so an activator that
/// starts listening after it never answers 404 for a host that exists.
pub async fn follow(
    client: Client,
    system_namespace: &str,
    tx: watch::Sender<Arc<RoutingSnapshot>>,
) {
    let (changed_tx, mut changed) = watch::channel(0u64);
    let routes = inform(
        Api::<Route>::all(client.clone()),
        watcher::Config::default(),
        changed_tx.clone(),
    );
    let revisions = inform(
        Api::<Revision>::all(client.clone()),
        watcher::Config::default(),
        changed_tx.clone(),
    );
    let slices = inform(
        Api::<EndpointSlice>::all(client.clone()),
        watcher::Config::default().labels(REVISION_LABEL),
        changed_tx.clone(),
    );
    let features = inform(
        Api::<ConfigMap>::namespaced(client, system_namespace),
        watcher::Config::default().fields("metadata.name=config-features"),
        changed_tx,
    );
    for ready in [
        routes.wait_until_ready().await,
        revisions.wait_until_ready().await,
        slices.wait_until_ready().await,
        features.wait_until_ready().await,
    ] {
        if ready.is_err() {
            return;
        }
    }
    let mut first = true;
    loop {
        changed.borrow_and_update();
        let next = build(&routes, &revisions, &slices, &features);
        tx.send_if_modified(|current| {
            if **current == next && !first {
                return false;
            }
            *current = Arc::new(next);
            true
        });
        first = false;
        if changed.changed().await.is_err() {
            return;
        }
    }
}

fn build(
    routes: &Store<Route>,
    revisions: &Store<Revision>,
    slices: &Store<EndpointSlice>,
    features: &Store<ConfigMap>,
) -> RoutingSnapshot {
    let routes: Vec<Route> = routes.state().iter().map(|r| (**r).clone()).collect();
    let revisions: Vec<Revision> = revisions.state().iter().map(|r| (**r).clone()).collect();
    let mut endpoints: HashMap<RevisionKey, Vec<SocketAddr>> = HashMap::new();
    for slice in slices.state() {
        if let Some((key, ready)) = ready_endpoints(&slice) {
            endpoints.entry(key).or_default().extend(ready.serving);
        }
    }
    for list in endpoints.values_mut() {
        list.sort();
        list.dedup();
    }
    let tag_headers = features
        .state()
        .first()
        .and_then(|cm| cm.data.as_ref())
        .map(|data| match FeaturesConfig::parse(data) {
            Ok(f) => f.tag_header_based_routing,
            Err(error) => {
                tracing::error!(%error, "config-features rejected; tag headers stay off.");
                false
            }
        })
        .unwrap_or(false);
    let limited: HashMap<RevisionKey, bool> = revisions
        .iter()
        .map(|r| {
            let key = RevisionKey::new(
                r.metadata.namespace.as_deref().unwrap_or("default"),
                r.metadata.name.as_deref().unwrap_or_default(),
            );
            (key, r.spec.concurrency() > 0)
        })
        .collect();
    snapshot(&routes, &revisions, tag_headers, |key| {
        let ready = endpoints.get(key).cloned().unwrap_or_default();
        (ready, limited.get(key).copied().unwrap_or(false))
    })
}
