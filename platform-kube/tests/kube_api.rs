//! The Kubernetes platform against a real API server (etcd plus kube-apiserver on loopback;
//! see `sluice_test_support::apiserver`). One server serves every scenario of this file, in turn.

use sluice_test_support::apiserver;

use std::path::Path;
use std::time::Duration;

use kube::Client;
use kube::api::{Api, DynamicObject, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use sluice_api::config::DefaultsConfig;
use sluice_api::{Object, ObjectKind, manifest};
use sluice_platform::{Store, StoreError};
use sluice_platform_kube::KubeStore;

fn fixtures() -> Vec<(String, Vec<Object>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../api/tests/fixtures");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let objs = manifest::parse_documents(&text).unwrap();
        out.push((
            path.file_name().unwrap().to_string_lossy().into_owned(),
            objs,
        ));
    }
    out
}

fn services(client: &Client) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("serving.knative.dev", "v1", "Service");
    Api::namespaced_with(client.clone(), "default", &ApiResource::from_gvk(&gvk))
}

/// The API server's answer to creating `yaml` as a Service (dry run): Ok, or its message.
async fn dry_run(client: &Client, yaml: &str) -> Result<(), String> {
    let obj: DynamicObject = serde_yaml::from_str(yaml).unwrap();
    let pp = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    services(client)
        .create(&pp, &obj)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

async fn schema_accepts_knative_examples_and_rejects_bad_fields(client: &Client) {
    for (file, objs) in fixtures() {
        for mut obj in objs {
            obj.set_defaults(&DefaultsConfig::default());
            let value = obj.to_json();
            let kind = obj.kind();
            let gvk = GroupVersionKind::gvk("serving.knative.dev", "v1", kind.as_str());
            let api: Api<DynamicObject> =
                Api::namespaced_with(client.clone(), "default", &ApiResource::from_gvk(&gvk));
            let dynamic: DynamicObject = serde_json::from_value(value).unwrap();
            let pp = PostParams {
                dry_run: true,
                ..PostParams::default()
            };
            if let Err(e) = api.create(&pp, &dynamic).await {
                panic!("{file}: the API server refused {kind}: {e}");
            }
        }
    }
    let bad = [
        (
            "containerConcurrency: many",
            "spec.template.spec.containerConcurrency",
        ),
        ("timeoutSeconds: soon", "spec.template.spec.timeoutSeconds"),
    ];
    for (line, field) in bad {
        let yaml = format!(
            "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata:\n  name: bad\nspec:\n  template:\n    spec:\n      {line}\n      containers:\n        - image: example.com/app\n"
        );
        let err = dry_run(client, &yaml)
            .await
            .expect_err("a bad field was accepted");
        assert!(err.contains(field), "{line}: {err}");
    }
    let traffic = "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata:\n  name: bad\nspec:\n  template:\n    spec:\n      containers:\n        - image: example.com/app\n  traffic:\n    - latestRevision: true\n      percent: lots\n";
    let err = dry_run(client, traffic).await.expect_err("percent: lots");
    assert!(err.contains("spec.traffic[0].percent"), "{err}");
}

async fn store_round_trip(client: &Client) {
    let store = KubeStore::new(client.clone());
    store.watch();
    let mut changes = store.changes();
    let mut objs = manifest::parse_documents(
        "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata:\n  name: hello\nspec:\n  template:\n    spec:\n      containers:\n        - image: example.com/hello\n",
    )
    .unwrap();
    let mut svc = objs.remove(0);
    svc.set_defaults(&DefaultsConfig::default());

    let created = store.create(svc.clone()).await.unwrap();
    assert_eq!(created.meta().generation, Some(1));
    assert!(created.meta().uid.is_some());
    assert!(matches!(
        store.create(svc.clone()).await,
        Err(StoreError::AlreadyExists { .. })
    ));
    tokio::time::timeout(Duration::from_secs(10), changes.changed())
        .await
        .expect("the watch saw the create")
        .unwrap();

    // A spec change bumps generation; a stale resourceVersion is a conflict.
    let Object::Service(mut next) = created.clone() else {
        unreachable!()
    };
    next.spec.template.spec.container_concurrency = Some(3);
    let updated = store.update(Object::Service(next.clone())).await.unwrap();
    assert_eq!(updated.meta().generation, Some(2));
    assert!(matches!(
        store.update(Object::Service(next.clone())).await,
        Err(StoreError::Conflict { .. })
    ));

    // Status goes through the status subresource (server-side apply) and leaves spec alone.
    let Object::Service(mut with_status) = updated else {
        unreachable!()
    };
    with_status.status = Some(sluice_api::ServiceStatus {
        observed_generation: Some(2),
        ..Default::default()
    });
    with_status.spec.template.spec.container_concurrency = Some(9);
    store
        .update_status(Object::Service(with_status))
        .await
        .unwrap();
    let Some(Object::Service(read)) = store
        .get(ObjectKind::Service, "default", "hello")
        .await
        .unwrap()
    else {
        panic!("hello is gone")
    };
    assert_eq!(read.status.unwrap().observed_generation, Some(2));
    assert_eq!(read.spec.template.spec.container_concurrency, Some(3));

    let listed = store.list(ObjectKind::Service, None).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert!(
        store
            .delete(ObjectKind::Service, "default", "hello")
            .await
            .unwrap()
    );
    assert!(
        !store
            .delete(ObjectKind::Service, "default", "hello")
            .await
            .unwrap()
    );
    assert!(
        store
            .get(ObjectKind::Service, "default", "hello")
            .await
            .unwrap()
            .is_none()
    );
}

/// Ten read-modify-writes racing through admission on one Service, as ten `sluice service
/// update --env` would: the stale ones are refused as conflicts and re-applied on a fresh
/// read, so every change is stored; a write without a resourceVersion still replaces.
async fn concurrent_writes_all_land(client: &Client) {
    use sluice_platform::admission::{Platform, WriteError, Writer, write};
    let store = KubeStore::new(client.clone());
    let defaults = DefaultsConfig::default();
    let features = sluice_api::validation::PodSpecFeatures::default();
    let writer = Writer {
        defaults: &defaults,
        features: &features,
        user: "tester",
        platform: Platform::Kubernetes,
    };
    let manifest = "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata:\n  name: racer\nspec:\n  template:\n    spec:\n      containers:\n        - image: example.com/racer\n";
    let svc = manifest::parse_documents(manifest).unwrap().remove(0);
    let (action, _) = write(&store, svc.clone(), true, false, writer)
        .await
        .unwrap();
    assert_eq!(action, "created");

    let read = || async {
        match store
            .get(ObjectKind::Service, "default", "racer")
            .await
            .unwrap()
        {
            Some(Object::Service(s)) => s,
            other => panic!("racer: {other:?}"),
        }
    };
    let env_names = |s: &sluice_api::Service| -> Vec<String> {
        s.spec.template.spec.containers[0]
            .env
            .iter()
            .map(|e| e.name.clone())
            .collect()
    };
    let (mut conflicts, mut landed) = (0, Vec::new());
    let (store, read) = (&store, &read);
    let racing = (0..10).map(|i| async move {
        let mut conflicts = 0;
        loop {
            let mut svc = read().await;
            svc.spec.template.spec.containers[0]
                .env
                .push(k8s_openapi::api::core::v1::EnvVar {
                    name: format!("RACER_{i}"),
                    value: Some("x".into()),
                    ..Default::default()
                });
            svc.status = None;
            match write(store, Object::Service(svc), false, false, writer).await {
                Ok(_) => return (conflicts, format!("RACER_{i}")),
                Err(WriteError::Store(StoreError::Conflict { .. })) if conflicts < 50 => {
                    conflicts += 1;
                }
                Err(e) => panic!("RACER_{i}: {e}"),
            }
        }
    });
    for (c, name) in futures_util::future::join_all(racing).await {
        conflicts += c;
        landed.push(name);
    }
    let stored = env_names(&read().await);
    for name in &landed {
        assert!(
            stored.contains(name),
            "{name} was acknowledged but is not stored: {stored:?}"
        );
    }
    assert_eq!(stored.len(), 10, "{stored:?}");
    assert!(
        conflicts > 0,
        "ten racing writers never conflicted: the race was not run"
    );

    // No resourceVersion: a replace of whatever is stored.
    let (action, replaced) = write(store, svc, false, false, writer).await.unwrap();
    assert_eq!(action, "configured");
    let Object::Service(replaced) = replaced else {
        unreachable!()
    };
    assert!(env_names(&replaced).is_empty());
    assert!(
        store
            .delete(ObjectKind::Service, "default", "racer")
            .await
            .unwrap()
    );
}

/// Applies every top-level manifest in `config/` (the CRDs are installed separately).
/// Whether the API server's RBAC lets `service_account` (in sluice-system) do `verb` on
/// `group/resource[/subresource]`.
async fn allowed(client: &Client, service_account: &str, verb: &str, resource: &str) -> bool {
    use k8s_openapi::api::authorization::v1::{
        ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
    };
    let (group, rest) = resource.split_once('/').unwrap();
    let (resource, subresource) = match rest.split_once('/') {
        Some((r, s)) => (r, Some(s.to_owned())),
        None => (rest, None),
    };
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(format!(
                "system:serviceaccount:sluice-system:{service_account}"
            )),
            resource_attributes: Some(ResourceAttributes {
                group: Some(group.to_owned()),
                resource: Some(resource.to_owned()),
                subresource,
                verb: Some(verb.to_owned()),
                namespace: Some("default".to_owned()),
                ..ResourceAttributes::default()
            }),
            ..SubjectAccessReviewSpec::default()
        },
        ..SubjectAccessReview::default()
    };
    let answer = Api::<SubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .unwrap();
    answer.status.is_some_and(|s| s.allowed)
}

async fn manifests_install_with_least_privilege_rbac(client: &Client) {
    apiserver::apply_config_manifests(client).await;
    for (verb, resource) in [
        ("patch", "apps/deployments/scale"),
        ("create", "apps/deployments"),
        ("patch", "serving.knative.dev/revisions/status"),
        ("watch", "discovery.k8s.io/endpointslices"),
    ] {
        assert!(
            allowed(client, "sluice-controller", verb, resource).await,
            "the controller may not {verb} {resource}"
        );
    }
    for (account, verb, resource) in [
        ("sluice-controller", "get", "/secrets"),
        ("sluice-controller", "create", "/pods"),
        ("sluice-activator", "create", "serving.knative.dev/services"),
        ("sluice-activator", "patch", "apps/deployments/scale"),
    ] {
        assert!(
            !allowed(client, account, verb, resource).await,
            "{account} may {verb} {resource}, which it does not need"
        );
    }
    assert!(
        allowed(
            client,
            "sluice-activator",
            "watch",
            "serving.knative.dev/routes"
        )
        .await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "Kubernetes tier: run tests/kube/run"]
async fn kubernetes_api_server() {
    let server = tokio::task::spawn_blocking(apiserver::ApiServer::start)
        .await
        .unwrap();
    let client = server.client();
    apiserver::install_crds(&client).await;
    revisions_print_knatives_columns(&client).await;
    schema_accepts_knative_examples_and_rejects_bad_fields(&client).await;
    store_round_trip(&client).await;
    concurrent_writes_all_land(&client).await;
    manifests_install_with_least_privilege_rbac(&client).await;
    one_leader_at_a_time(&client).await;
}

/// The Revision columns kubectl shows are Knative's, as the API server stored them.
async fn revisions_print_knatives_columns(client: &Client) {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = crds.get("revisions.serving.knative.dev").await.unwrap();
    let columns: Vec<String> = crd.spec.versions[0]
        .additional_printer_columns
        .iter()
        .flatten()
        .map(|c| c.name.clone())
        .collect();
    assert_eq!(
        columns,
        [
            "Config Name",
            "Generation",
            "Ready",
            "Reason",
            "Actual Replicas",
            "Desired Replicas"
        ]
    );
}

/// Two candidates for one Lease: one leads, the other waits; a released lease passes at once,
/// and an abandoned one passes once it has gone unrenewed for its duration.
async fn one_leader_at_a_time(client: &Client) {
    use k8s_openapi::api::coordination::v1::Lease;
    use sluice_platform_kube::{Elector, LeaseTimings};
    let timings = LeaseTimings {
        duration: Duration::from_secs(1),
        renew_deadline: Duration::from_millis(800),
        retry_period: Duration::from_millis(100),
    };
    let candidate = |id: &str| {
        Elector::new(
            client.clone(),
            "default",
            "sluice-test",
            id,
            timings.clone(),
        )
    };
    let (mut a, mut b) = (candidate("a"), candidate("b"));
    assert!(
        a.try_acquire_or_renew().await.unwrap(),
        "a takes a free lease"
    );
    assert!(!b.try_acquire_or_renew().await.unwrap(), "b must wait");
    assert_eq!(b.holder().as_deref(), Some("a"));
    assert!(a.try_acquire_or_renew().await.unwrap(), "a renews");
    assert!(
        !b.try_acquire_or_renew().await.unwrap(),
        "a renewed, so b still waits"
    );

    a.release().await;
    assert!(
        b.try_acquire_or_renew().await.unwrap(),
        "a released, b takes it at once"
    );
    assert!(!a.try_acquire_or_renew().await.unwrap(), "now a waits");

    // b stops renewing (as a crashed leader would); a takes over once b's record has not
    // changed for the lease duration, as a observed it.
    let start = std::time::Instant::now();
    tokio::time::timeout(Duration::from_secs(20), a.acquire())
        .await
        .expect("a takes the abandoned lease");
    assert!(
        start.elapsed() >= timings.duration,
        "a must not take a lease before it expires"
    );
    let lease = Api::<Lease>::namespaced(client.clone(), "default")
        .get("sluice-test")
        .await
        .unwrap()
        .spec
        .unwrap();
    assert_eq!(lease.holder_identity.as_deref(), Some("a"));
    assert_eq!(lease.lease_transitions, Some(2), "a -> b -> a");
    // A deposed leader sees it on its next renewal.
    assert!(!b.try_acquire_or_renew().await.unwrap());
}
