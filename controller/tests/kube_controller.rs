//! The controllers on a real Kubernetes API server (etcd plus kube-apiserver on loopback; see
//! `sluice_test_support::apiserver`): the same reconcilers as the local platform, over the
//! Kubernetes Store and Workloads. There is no kubelet or endpoint controller here, so where a
//! revision's pods would turn ready this test writes the EndpointSlice they would produce.

use sluice_test_support::{apiserver, eventually_async};

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service as KubeService;
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Client;
use kube::api::{Api, PostParams};
use sluice_api::config::{Configs, DefaultsConfig};
use sluice_api::{Object, ObjectKind, Revision, manifest};
use sluice_controller::{Autoscaler, Controller};
use sluice_platform::routing::RoutingFeed;
use sluice_platform::{Clock, Store, SystemClock};
use sluice_platform_kube::{KubeStore, KubeWorkloads, KubeWorkloadsConfig};
use tokio::sync::watch;

fn hello(target: &str) -> Object {
    let yaml = format!(
        "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata:\n  name: hello\n  namespace: default\nspec:\n  template:\n    spec:\n      containers:\n        - image: ghcr.io/knative/helloworld-go:latest\n          ports:\n            - containerPort: 8080\n          env:\n            - name: TARGET\n              value: {target}\n"
    );
    let mut obj = manifest::parse_documents(&yaml).unwrap().remove(0);
    obj.set_defaults(&DefaultsConfig::default());
    obj
}

/// What the endpoints controller would write once the revision's pod is ready.
async fn pod_ready(client: &Client, revision: &str, ip: &str) {
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    let slice = EndpointSlice {
        metadata: ObjectMeta {
            name: Some(format!("{revision}-private-abcde")),
            labels: Some(BTreeMap::from([
                (
                    "kubernetes.io/service-name".to_owned(),
                    format!("{revision}-private"),
                ),
                (
                    "serving.knative.dev/revision".to_owned(),
                    revision.to_owned(),
                ),
            ])),
            ..ObjectMeta::default()
        },
        address_type: "IPv4".into(),
        endpoints: Some(vec![Endpoint {
            addresses: vec![ip.to_owned()],
            conditions: Some(EndpointConditions {
                ready: Some(true),
                ..EndpointConditions::default()
            }),
            ..Endpoint::default()
        }]),
        ..EndpointSlice::default()
    };
    slices.create(&PostParams::default(), &slice).await.unwrap();
}

async fn revision(store: &KubeStore, name: &str) -> Option<Revision> {
    match store
        .get(ObjectKind::Revision, "default", name)
        .await
        .unwrap()
    {
        Some(Object::Revision(r)) => Some(r),
        _ => None,
    }
}

fn controlled_by(meta: &ObjectMeta, kind: &str, name: &str) -> bool {
    meta.owner_references
        .iter()
        .flatten()
        .any(|o| o.kind == kind && o.name == name && o.controller == Some(true))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "Kubernetes tier: run tests/kube/run"]
async fn a_service_becomes_knative_objects_and_a_deployment() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
    let server = tokio::task::spawn_blocking(apiserver::ApiServer::start)
        .await
        .unwrap();
    let client = server.client();
    apiserver::install_crds(&client).await;

    let store = Arc::new(KubeStore::new(client.clone()));
    store.watch();
    let workloads = Arc::new(KubeWorkloads::new(
        client.clone(),
        KubeWorkloadsConfig {
            queue_proxy_image: "ghcr.io/sluice/queue-proxy:test".into(),
        },
    ));
    workloads.watch();
    let (_settings_tx, settings) = watch::channel(Arc::new(Configs::default()));
    let routing = Arc::new(RoutingFeed::new());
    let clock: Arc<dyn Clock> = Arc::new(SystemClock::new());
    let autoscaler = Autoscaler::new(clock.clone());
    let controller = Controller::new(
        store.clone(),
        workloads.clone(),
        autoscaler.clone(),
        settings,
        routing,
        clock,
    );
    let (stop_tx, mut stop) = watch::channel(false);
    let mut stop_scaling = stop.clone();
    let running = tokio::spawn(controller.run(async move {
        let _ = stop.wait_for(|s| *s).await;
    }));
    let scaling = tokio::spawn(sluice_controller::autoscaling::run(
        autoscaler,
        workloads,
        async move {
            let _ = stop_scaling.wait_for(|s| *s).await;
        },
    ));

    store.create(hello("World")).await.unwrap();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let services: Api<KubeService> = Api::namespaced(client.clone(), "default");
    eventually_async(
        Duration::from_secs(30),
        "hello-00001 and its Deployment",
        || async {
            deployments
                .get_opt("hello-00001-deployment")
                .await
                .unwrap()
                .is_some()
        },
    )
    .await;

    // Knative's names, labels and owners.
    let Some(Object::Configuration(cfg)) = store
        .get(ObjectKind::Configuration, "default", "hello")
        .await
        .unwrap()
    else {
        panic!("no Configuration hello")
    };
    assert!(controlled_by(&cfg.metadata, "Service", "hello"));
    let Some(Object::Route(route)) = store
        .get(ObjectKind::Route, "default", "hello")
        .await
        .unwrap()
    else {
        panic!("no Route hello")
    };
    assert!(controlled_by(&route.metadata, "Service", "hello"));
    let first = revision(&store, "hello-00001").await.unwrap();
    assert!(controlled_by(&first.metadata, "Configuration", "hello"));
    let labels = first.metadata.labels.clone().unwrap_or_default();
    assert_eq!(labels["serving.knative.dev/service"], "hello");
    assert_eq!(labels["serving.knative.dev/configuration"], "hello");
    let d = deployments.get("hello-00001-deployment").await.unwrap();
    assert!(controlled_by(&d.metadata, "Revision", "hello-00001"));
    assert_eq!(d.spec.replicas, Some(1));
    let pod = d.spec.template.spec.clone().unwrap();
    let names: Vec<&str> = pod.containers.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["user-container", "queue-proxy"]);
    let user = &pod.containers[0];
    assert_eq!(
        user.image.as_deref(),
        Some("ghcr.io/knative/helloworld-go:latest")
    );
    let env: BTreeMap<String, String> = user
        .env
        .iter()
        .flatten()
        .filter_map(|e| Some((e.name.clone(), e.value.clone()?)))
        .collect();
    assert_eq!(env["TARGET"], "World");
    assert_eq!(env["K_REVISION"], "hello-00001");
    assert_eq!(env["PORT"], "8080");
    let qp_ports: Vec<i32> = pod.containers[1]
        .ports
        .iter()
        .flatten()
        .map(|p| p.container_port)
        .collect();
    assert_eq!(qp_ports, [8012, 9090]);
    let svc = services.get("hello-00001-private").await.unwrap();
    assert!(controlled_by(&svc.metadata, "Revision", "hello-00001"));
    assert_eq!(
        svc.spec.unwrap().selector.unwrap()["serving.knative.dev/revision"],
        "hello-00001"
    );

    // Ready once its pod is.
    assert!(!first.is_ready());
    pod_ready(&client, "hello-00001", "10.1.0.1").await;
    eventually_async(Duration::from_secs(30), "service hello Ready", || async {
        matches!(
            store.get(ObjectKind::Service, "default", "hello").await.unwrap(),
            Some(Object::Service(s)) if s.is_ready()
        )
    })
    .await;
    let first = revision(&store, "hello-00001").await.unwrap();
    assert_eq!(first.status.as_ref().unwrap().actual_replicas, Some(1));

    // A template change: a new Revision and Deployment; the old ones keep their spec.
    let Some(Object::Service(mut svc)) = store
        .get(ObjectKind::Service, "default", "hello")
        .await
        .unwrap()
    else {
        unreachable!()
    };
    let Object::Service(next) = hello("Sluice") else {
        unreachable!()
    };
    svc.spec = next.spec;
    store.update(Object::Service(svc)).await.unwrap();
    eventually_async(
        Duration::from_secs(30),
        "hello-00002-deployment",
        || async {
            deployments
                .get_opt("hello-00002-deployment")
                .await
                .unwrap()
                .is_some()
        },
    )
    .await;
    pod_ready(&client, "hello-00002", "10.1.0.2").await;
    let old_template = d.spec.template.clone();
    // Traffic moves to hello-00002, so hello-00001 is unreachable: the scale to zero lands on
    // its Deployment's /scale.
    eventually_async(
        Duration::from_secs(30),
        "hello-00001 scaled to 0 through /scale",
        || async {
            let scale = deployments
                .get_scale("hello-00001-deployment")
                .await
                .unwrap();
            // The API server omits a zero replica count.
            scale.spec.and_then(|s| s.replicas).unwrap_or(0) == 0
        },
    )
    .await;
    let old = deployments.get("hello-00001-deployment").await.unwrap();
    assert_eq!(old.spec.replicas, Some(0));
    assert_eq!(old.spec.template, old_template, "old Deployment unchanged");
    assert_eq!(
        revision(&store, "hello-00001").await.unwrap().spec,
        first.spec,
        "old Revision unchanged"
    );

    // A Service as kn or kubectl writes it, past Sluice's admission (no defaults: container
    // name "", no traffic), whose Deployment the API server refuses: requests above limits.
    // The revision says why, with the API server's own field error.
    let bad = "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata: {name: bad, namespace: default}\nspec:\n  template:\n    spec:\n      containers:\n        - name: ''\n          image: ghcr.io/knative/helloworld-go:latest\n          resources: {requests: {cpu: '2'}, limits: {cpu: '1'}}\n";
    store
        .create(manifest::parse_documents(bad).unwrap().remove(0))
        .await
        .unwrap();
    eventually_async(
        Duration::from_secs(30),
        "bad-00001 Ready=False with the API server's reason",
        || async {
            let Some(rev) = revision(&store, "bad-00001").await else {
                return false;
            };
            let conditions = rev.status.map(|s| s.conditions).unwrap_or_default();
            sluice_api::condition::find(&conditions, "Ready").is_some_and(|c| {
                let message = c.message.as_deref().unwrap_or_default();
                c.status == sluice_api::ConditionStatus::False
                    && c.reason.as_deref() == Some("DeploymentInvalid")
                    && message.contains("resources")
                    && !message.contains("name")
            })
        },
    )
    .await;
    store
        .delete(ObjectKind::Service, "default", "bad")
        .await
        .unwrap();

    // Deleting the Service deletes everything under it.
    store
        .delete(ObjectKind::Service, "default", "hello")
        .await
        .unwrap();
    eventually_async(
        Duration::from_secs(30),
        "everything under hello deleted",
        || async {
            let revisions = store.list(ObjectKind::Revision, None).await.unwrap();
            let routes = store.list(ObjectKind::Route, None).await.unwrap();
            let deps = deployments.list(&Default::default()).await.unwrap().items;
            let svcs: Vec<_> = services
                .list(&Default::default())
                .await
                .unwrap()
                .items
                .into_iter()
                .filter(|s| s.metadata.name.as_deref() != Some("kubernetes"))
                .collect();
            revisions.is_empty() && routes.is_empty() && deps.is_empty() && svcs.is_empty()
        },
    )
    .await;

    stop_tx.send_replace(true);
    running.await.unwrap();
    scaling.await.unwrap();
}
