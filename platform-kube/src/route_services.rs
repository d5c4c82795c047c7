//! Each Route's placeholder Service, as Knative makes it: a core/v1 Service named after the
//! Route, of type ExternalName pointing at the front door (the `sluice-activator` Service), with
//! the Route's labels (plus `serving.knative.dev/route`) and annotations, owned by the Route.
//! So `NAME.NAMESPACE.svc.cluster.local`, the default route host, resolves inside the cluster
//! and reaches the activator, which routes by that host; and tools that look for the Route's
//! Service (Knative's conformance tests, dashboards) find it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::watcher;
use kube::{Client, Resource};
use sluice_api::{Route, keys};
use tokio::sync::watch;

use crate::inform;

/// How often every placeholder is applied again, repairing any deleted or edited by hand.
const RESYNC: Duration = Duration::from_secs(300);

/// Annotations that describe the Route object itself, not what it routes.
const NOT_COPIED: [&str; 1] = ["kubectl.kubernetes.io/last-applied-configuration"];

/// The placeholder Service of `route`, pointing at `ingress` (a DNS name).
pub fn placeholder(route: &Route, ingress: &str) -> Option<Service> {
    let name = route.metadata.name.clone()?;
    let mut labels: BTreeMap<String, String> = route.metadata.labels.clone().unwrap_or_default();
    labels.insert(keys::ROUTE.to_owned(), name.clone());
    let annotations: BTreeMap<String, String> = route
        .metadata
        .annotations
        .iter()
        .flatten()
        .filter(|(k, _)| !NOT_COPIED.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let owner = OwnerReference {
        api_version: Route::api_version(&()).into_owned(),
        kind: Route::kind(&()).into_owned(),
        name: name.clone(),
        uid: route.metadata.uid.clone()?,
        controller: Some(true),
        block_owner_deletion: Some(true),
    };
    Some(Service {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: route.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: Some(annotations),
            owner_references: Some(vec![owner]),
            ..ObjectMeta::default()
        },
        spec: Some(ServiceSpec {
            type_: Some("ExternalName".into()),
            external_name: Some(ingress.to_owned()),
            session_affinity: Some("None".into()),
            // Knative's: the front door takes HTTP/1.1 and h2c on its one port.
            ports: Some(vec![ServicePort {
                name: Some("http2".into()),
                app_protocol: Some(crate::endpoints::H2C_APP_PROTOCOL.into()),
                port: 80,
                target_port: Some(IntOrString::Int(80)),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    })
}

/// Adds to `want` the labels and annotations `existing` has that it lacks.
fn keep_existing(want: &mut Service, existing: &Service) {
    let union = |want: &mut Option<BTreeMap<String, String>>,
                 have: &Option<BTreeMap<String, String>>| {
        let want = want.get_or_insert_with(BTreeMap::new);
        for (k, v) in have.iter().flatten() {
            want.entry(k.clone()).or_insert_with(|| v.clone());
        }
    };
    union(&mut want.metadata.labels, &existing.metadata.labels);
    union(
        &mut want.metadata.annotations,
        &existing.metadata.annotations,
    );
}

/// Keeps every Route's placeholder Service applied until `stop` resolves: on every change of
/// a Route, and every five minutes for all of them. Deletion follows the owner reference.
pub async fn run(client: Client, ingress: String, stop: impl std::future::Future<Output = ()>) {
    let (changed_tx, mut changed) = watch::channel(0u64);
    let routes = inform(
        Api::<Route>::all(client.clone()),
        watcher::Config::default(),
        changed_tx,
    );
    let mut applied: HashMap<(String, String), Service> = HashMap::new();
    let mut resync = tokio::time::interval(RESYNC);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => return,
            r = changed.changed() => if r.is_err() { return },
            _ = resync.tick() => applied.clear(),
        }
        let mut live = HashSet::new();
        for route in routes.state() {
            let Some(mut want) = placeholder(&route, &ingress) else {
                continue;
            };
            let ns = want.metadata.namespace.clone().unwrap_or_default();
            let name = want.metadata.name.clone().unwrap_or_default();
            let key = (ns.clone(), name.clone());
            live.insert(key.clone());
            if applied.get(&key) == Some(&want) {
                continue;
            }
            let services: Api<Service> = Api::namespaced(client.clone(), &ns);
            // As Knative does, labels and annotations only ever join the placeholder: one
            // removed from the Route stays on its Service.
            let desired = want.clone();
            if let Ok(Some(existing)) = services.get_opt(&name).await {
                keep_existing(&mut want, &existing);
            }
            let patch = PatchParams::apply(crate::store::FIELD_MANAGER).force();
            match services.patch(&name, &patch, &Patch::Apply(&want)).await {
                Ok(_) => {
                    applied.insert(key, desired);
                }
                Err(error) => {
                    tracing::warn!(route = %format!("{ns}/{name}"), %error, "Cannot apply the Route's Service; retrying.");
                }
            }
        }
        applied.retain(|k, _| live.contains(k));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_placeholder_carries_the_routes_labels_and_annotations_and_points_at_the_activator() {
        let mut route = Route::new("hello", Default::default());
        route.metadata.namespace = Some("default".into());
        route.metadata.uid = Some("u1".into());
        route.metadata.labels = Some([(keys::SERVICE.to_owned(), "hello".to_owned())].into());
        route.metadata.annotations = Some(
            [
                ("juicy".to_owned(), "jamba".to_owned()),
                (NOT_COPIED[0].to_owned(), "{}".to_owned()),
            ]
            .into(),
        );
        let svc = placeholder(&route, "sluice-activator.sluice-system.svc.cluster.local").unwrap();
        let labels = svc.metadata.labels.unwrap();
        assert_eq!(labels[keys::ROUTE], "hello");
        assert_eq!(labels[keys::SERVICE], "hello");
        let annotations = svc.metadata.annotations.unwrap();
        assert_eq!(annotations["juicy"], "jamba");
        assert!(!annotations.contains_key(NOT_COPIED[0]));
        let spec = svc.spec.unwrap();
        assert_eq!(spec.type_.as_deref(), Some("ExternalName"));
        assert_eq!(
            spec.external_name.as_deref(),
            Some("sluice-activator.sluice-system.svc.cluster.local")
        );
        let owner = &svc.metadata.owner_references.unwrap()[0];
        assert_eq!((owner.kind.as_str(), owner.uid.as_str()), ("Route", "u1"));
        assert!(
            placeholder(&Route::new("x", Default::default()), "a").is_none(),
            "no uid yet: nothing to own it"
        );
        let mut next = placeholder(
            &Route {
                metadata: ObjectMeta {
                    annotations: None,
                    ..route.metadata.clone()
                },
                ..route.clone()
            },
            "a",
        )
        .unwrap();
        let before = placeholder(&route, "a").unwrap();
        keep_existing(&mut next, &before);
        assert_eq!(
            next.metadata.annotations.unwrap()["juicy"],
            "jamba",
            "a removed annotation stays, as on Knative"
        );
    }
}
