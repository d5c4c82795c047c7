//! The driver in-process: a real store (SQLite in memory), a workloads seam that reports
//! what it was asked for, and a clock that moves only when a test says. Each test runs passes
//! by hand and reads what they wrote.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sluice_api::config::{Configs, GcConfig};
use sluice_api::manifest::parse_documents;
use sluice_api::{Configuration, Object, ObjectKind, Revision, Route, Service};
use sluice_platform::routing::{RoutingFeed, RoutingSnapshot};
use sluice_platform::workloads::WorkloadError;
use sluice_platform::{
    ManualClock, RevisionChanges, RevisionKey, Store, WorkloadSpec, WorkloadStatus, Workloads,
};
use sluice_platform_local::sqlite::SqliteStore;
use tokio::sync::watch;

use super::Controller;
use crate::autoscaling::Autoscaler;

/// Runs what it is asked to at once: every replica asked for is ready, unless a test holds
/// readiness back. Names the revisions that changed, as the local supervisor does.
#[derive(Default)]
struct InstantWorkloads {
    specs: Mutex<HashMap<RevisionKey, WorkloadSpec>>,
    changes: RevisionChanges,
    not_ready: std::sync::atomic::AtomicBool,
}

impl InstantWorkloads {
    fn replicas(&self, ns: &str, name: &str) -> Option<u32> {
        let specs = self.specs.lock().unwrap();
        specs.get(&RevisionKey::new(ns, name)).map(|s| s.replicas)
    }
}

impl Workloads for InstantWorkloads {
    async fn ensure(&self, spec: WorkloadSpec) -> Result<(), WorkloadError> {
        let key = spec.key.clone();
        self.specs.lock().unwrap().insert(key.clone(), spec);
        self.changes.touch(&key);
        Ok(())
    }

    async fn delete(&self, key: &RevisionKey) -> Result<(), WorkloadError> {
        self.specs.lock().unwrap().remove(key);
        self.changes.touch(key);
        Ok(())
    }

    fn status(&self, key: &RevisionKey) -> Option<WorkloadStatus> {
        let specs = self.specs.lock().unwrap();
        let spec = specs.get(key)?;
        let ready = if self.not_ready.load(std::sync::atomic::Ordering::Relaxed) {
            0
        } else {
            spec.replicas
        };
        let endpoints: Vec<SocketAddr> = (0..ready)
            .map(|i| SocketAddr::from(([127, 0, 0, 1], 20_000 + u16::try_from(i).unwrap())))
            .collect();
        Some(WorkloadStatus {
            desired: spec.replicas,
            metrics: endpoints.clone(),
            endpoints,
            ..WorkloadStatus::default()
        })
    }

    fn keys(&self) -> Vec<RevisionKey> {
        self.specs.lock().unwrap().keys().cloned().collect()
    }

    fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn changed_since(&self, seen: u64) -> Option<Vec<RevisionKey>> {
        self.changes.since(seen)
    }
}

struct World {
    store: Arc<SqliteStore>,
    workloads: Arc<InstantWorkloads>,
    autoscaler: Arc<Autoscaler>,
    clock: Arc<ManualClock>,
    routing: Arc<RoutingFeed>,
    controller: Controller<SqliteStore, InstantWorkloads>,
}

impl World {
    fn snapshot(&self) -> RoutingSnapshot {
        self.routing.snapshot()
    }

    fn new(configs: Configs) -> Self {
        let store = Arc::new(SqliteStore::in_memory().unwrap());
        let workloads = Arc::new(InstantWorkloads::default());
        // The store stamps creation with the wall clock; the driven clock starts there too.
        let clock = Arc::new(ManualClock::new(jiff::Timestamp::now()));
        let autoscaler = Autoscaler::new(clock.clone());
        let routing = Arc::new(RoutingFeed::new());
        let (_settings_tx, settings) = watch::channel(Arc::new(configs));
        let controller = Controller::new(
            store.clone(),
            workloads.clone(),
            autoscaler.clone(),
            settings,
            routing.clone(),
            clock.clone(),
        );
        Self {
            store,
            workloads,
            autoscaler,
            clock,
            routing,
            controller,
        }
    }

    /// Passes as the running driver makes them (the first over everything, then over what
    /// changed) until one writes nothing (the level is reached), at most ten; the last pass's
    /// requeue.
    async fn settle(&self) -> Duration {
        let mut requeue = Duration::ZERO;
        for _ in 0..10 {
            let before = *self.store.changes().borrow();
            requeue = self.controller.reconcile().await.unwrap();
            if *self.store.changes().borrow() == before {
                return requeue;
            }
        }
        panic!("ten passes and still writing; last requeue {requeue:?}")
    }

    /// Applies a service as the daemon's admission does: defaults, then create or update.
    async fn apply(&self, yaml: &str) {
        let mut obj = parse_documents(yaml).unwrap().remove(0);
        obj.set_defaults(&Default::default());
        let existing = self
            .store
            .get(obj.kind(), obj.namespace(), obj.name())
            .await
            .unwrap();
        match existing {
            None => {
                self.store.create(obj).await.unwrap();
            }
            Some(have) => {
                obj.meta_mut()
                    .resource_version
                    .clone_from(&have.meta().resource_version);
                self.store.update(obj).await.unwrap();
            }
        }
    }

    async fn get(&self, kind: ObjectKind, ns: &str, name: &str) -> Option<Object> {
        self.store.get(kind, ns, name).await.unwrap()
    }

    async fn service(&self, ns: &str, name: &str) -> Service {
        match self.get(ObjectKind::Service, ns, name).await {
            Some(Object::Service(s)) => s,
            other => panic!("no service {ns}/{name}: {other:?}"),
        }
    }

    async fn configuration(&self, ns: &str, name: &str) -> Configuration {
        match self.get(ObjectKind::Configuration, ns, name).await {
            Some(Object::Configuration(c)) => c,
            other => panic!("no configuration {ns}/{name}: {other:?}"),
        }
    }

    async fn route(&self, ns: &str, name: &str) -> Route {
        match self.get(ObjectKind::Route, ns, name).await {
            Some(Object::Route(r)) => r,
            other => panic!("no route {ns}/{name}: {other:?}"),
        }
    }

    async fn revisions(&self, ns: &str) -> Vec<String> {
        let all = self
            .store
            .list(ObjectKind::Revision, Some(ns))
            .await
            .unwrap();
        all.iter().map(|o| o.name().to_owned()).collect()
    }
}

fn service_yaml(ns: &str, name: &str, target: &str, annotations: &str) -> String {
    format!(
        "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: {ns}\n  annotations: {{{annotations}}}\nspec:\n  template:\n    spec:\n      containers:\n        - command: [hello]\n          env: [{{name: TARGET, value: {target}}}]\n"
    )
}

fn ready(conditions: &[sluice_api::Condition]) -> (String, String) {
    let c = sluice_api::condition::find(conditions, "Ready").expect("a Ready condition");
    (
        format!("{:?}", c.status),
        c.reason.clone().unwrap_or_default(),
    )
}

fn traffic(route: &Route) -> Vec<(String, i64)> {
    let st = route.status.as_ref().expect("route status");
    st.fields
        .traffic
        .iter()
        .map(|t| {
            (
                t.revision_name.clone().unwrap_or_default(),
                t.percent.unwrap_or(0),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_service_becomes_ready_and_routed() {
    let w = World::new(Configs::default());
    w.apply(&service_yaml("default", "hello", "a", "")).await;
    w.settle().await;
    let svc = w.service("default", "hello").await;
    let st = svc.status.as_ref().unwrap();
    assert_eq!(ready(&st.conditions), ("True".into(), String::new()));
    assert_eq!(w.workloads.replicas("default", "hello-00001"), Some(1));
    let route = w.route("default", "hello").await;
    assert_eq!(traffic(&route), [("hello-00001".to_owned(), 100)]);
    let snapshot = w.snapshot();
    let host = &snapshot.hosts["hello.default.svc.cluster.local"];
    assert_eq!(
        host.targets[0].revision,
        RevisionKey::new("default", "hello-00001")
    );
    let backends = snapshot
        .revision(&RevisionKey::new("default", "hello-00001"))
        .unwrap();
    assert_eq!(backends.endpoints.len(), 1, "the ready replica is routed");
}

#[tokio::test]
async fn same_named_services_in_two_namespaces_stay_apart() {
    let configs = Configs {
        gc: GcConfig {
            retain_since_create_time: None,
            retain_since_last_active_time: None,
            min_non_active_revisions: 0,
            max_non_active_revisions: Some(0),
        },
        ..Configs::default()
    };
    let w = World::new(configs);
    w.apply(&service_yaml("e1", "same", "a", "")).await;
    w.apply(&service_yaml("e2", "same", "a", "")).await;
    w.settle().await;
    // Only e1 moves to a second revision.
    w.apply(&service_yaml("e1", "same", "b", "")).await;
    w.settle().await;

    let e1 = w.configuration("e1", "same").await;
    let e2 = w.configuration("e2", "same").await;
    let latest = |c: &Configuration| {
        let f = &c.status.as_ref().unwrap().fields;
        (
            f.latest_created_revision_name.clone().unwrap(),
            f.latest_ready_revision_name.clone().unwrap(),
        )
    };
    assert_eq!(latest(&e1), ("same-00002".into(), "same-00002".into()));
    assert_eq!(
        latest(&e2),
        ("same-00001".into(), "same-00001".into()),
        "e2 never takes e1's revision"
    );
    for ns in ["e1", "e2"] {
        let svc = w.service(ns, "same").await;
        assert_eq!(
            ready(&svc.status.as_ref().unwrap().conditions),
            ("True".into(), String::new()),
            "{ns}/same"
        );
    }
    assert_eq!(
        traffic(&w.route("e1", "same").await),
        [("same-00002".into(), 100)]
    );
    assert_eq!(
        traffic(&w.route("e2", "same").await),
        [("same-00001".into(), 100)]
    );
    let e2_url = w
        .route("e2", "same")
        .await
        .status
        .unwrap()
        .fields
        .url
        .unwrap();
    assert_eq!(e2_url, "http://same.e2.svc.cluster.local");

    // config-gc keeps nothing non-active: e1's first revision goes, e2's (routed) stays.
    assert_eq!(w.revisions("e1").await, ["same-00002"]);
    assert_eq!(w.revisions("e2").await, ["same-00001"]);
    assert_eq!(w.workloads.replicas("e1", "same-00001"), None);
    assert_eq!(w.workloads.replicas("e2", "same-00001"), Some(1));

    let snapshot = w.snapshot();
    let target = |host: &str| snapshot.hosts[host].targets[0].revision.clone();
    assert_eq!(
        target("same.e1.svc.cluster.local"),
        RevisionKey::new("e1", "same-00002")
    );
    assert_eq!(
        target("same.e2.svc.cluster.local"),
        RevisionKey::new("e2", "same-00001")
    );

    // Deleting e1's service takes its children with it, and nothing of e2's.
    w.store
        .delete(ObjectKind::Service, "e1", "same")
        .await
        .unwrap();
    w.settle().await;
    assert!(
        w.get(ObjectKind::Configuration, "e1", "same")
            .await
            .is_none()
    );
    assert!(w.get(ObjectKind::Route, "e1", "same").await.is_none());
    assert!(w.revisions("e1").await.is_empty());
    assert_eq!(w.workloads.replicas("e1", "same-00002"), None);
    assert_eq!(w.revisions("e2").await, ["same-00001"]);
    assert_eq!(w.workloads.replicas("e2", "same-00001"), Some(1));
    assert!(w.snapshot().hosts.contains_key("same.e2.svc.cluster.local"));
    assert!(!w.snapshot().hosts.contains_key("same.e1.svc.cluster.local"));
}

#[tokio::test]
async fn an_unrouted_older_revision_stops_at_once() {
    let w = World::new(Configs::default());
    w.apply(&service_yaml("default", "hello", "a", "")).await;
    w.settle().await;
    w.apply(&service_yaml("default", "hello", "b", "")).await;
    w.settle().await;
    assert_eq!(w.workloads.replicas("default", "hello-00002"), Some(1));
    assert_eq!(
        w.workloads.replicas("default", "hello-00001"),
        Some(0),
        "nothing can reach it, so it runs no replica"
    );
    let rev = match w.get(ObjectKind::Revision, "default", "hello-00001").await {
        Some(Object::Revision(r)) => r,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        crate::meta::label(&rev.metadata, sluice_api::keys::ROUTING_STATE),
        Some("reserve")
    );
}

#[tokio::test]
async fn a_gradual_rollout_steps_on_the_driven_clock() {
    let w = World::new(Configs::default());
    let rollout = "serving.knative.dev/rollout-duration: 100s";
    w.apply(&service_yaml("default", "hello", "a", rollout))
        .await;
    w.settle().await;
    w.apply(&service_yaml("default", "hello", "b", rollout))
        .await;
    let requeue = w.settle().await;
    let split = |r: &Route| {
        let mut t = traffic(r);
        t.sort();
        t
    };
    assert_eq!(
        split(&w.route("default", "hello").await),
        [("hello-00001".into(), 99), ("hello-00002".into(), 1)]
    );
    assert!(requeue <= Duration::from_secs(2), "{requeue:?}");

    w.clock.advance(Duration::from_secs(50));
    w.settle().await;
    let half = split(&w.route("default", "hello").await);
    assert_eq!(half[0].0, "hello-00001");
    assert!((45..=55).contains(&half[1].1), "{half:?} at half time");

    w.clock.advance(Duration::from_secs(51));
    let requeue = w.settle().await;
    assert_eq!(
        split(&w.route("default", "hello").await),
        [("hello-00002".into(), 100)]
    );
    assert!(
        requeue > Duration::from_secs(60),
        "nothing timed is left: {requeue:?}"
    );
}

#[tokio::test]
async fn config_gc_ages_revisions_on_the_driven_clock() {
    let hour = Duration::from_secs(3600);
    let configs = Configs {
        gc: GcConfig {
            retain_since_create_time: Some(hour),
            retain_since_last_active_time: Some(hour),
            min_non_active_revisions: 0,
            max_non_active_revisions: None,
        },
        ..Configs::default()
    };
    let w = World::new(configs);
    for target in ["a", "b", "c"] {
        w.apply(&service_yaml("default", "hello", target, "")).await;
        w.settle().await;
    }
    assert_eq!(
        w.revisions("default").await,
        ["hello-00001", "hello-00002", "hello-00003"],
        "young revisions are kept"
    );
    w.clock.advance(hour + Duration::from_secs(1));
    w.settle().await;
    assert_eq!(w.revisions("default").await, ["hello-00003"]);
    let cfg = w.configuration("default", "hello").await;
    assert_eq!(
        cfg.status
            .unwrap()
            .fields
            .latest_ready_revision_name
            .as_deref(),
        Some("hello-00003")
    );
}

#[tokio::test]
async fn transition_times_come_from_the_clock() {
    let w = World::new(Configs::default());
    // Ten days ahead of the machine's clock: a time read from the machine would show.
    w.clock.advance(Duration::from_secs(10 * 86_400));
    w.apply(&service_yaml("default", "hello", "a", "")).await;
    w.settle().await;
    let rev: Revision = match w.get(ObjectKind::Revision, "default", "hello-00001").await {
        Some(Object::Revision(r)) => r,
        other => panic!("{other:?}"),
    };
    let written = sluice_api::condition::find(&rev.status.unwrap().conditions, "Ready")
        .and_then(|c| c.last_transition_time.clone())
        .expect("a transition time");
    assert_eq!(
        written,
        crate::meta::transition_time(sluice_platform::Clock::now(w.clock.as_ref()))
    );
}

#[tokio::test]
async fn a_replica_turning_ready_is_routed_without_a_pass() {
    let w = World::new(Configs::default());
    w.apply(&service_yaml("default", "hello", "a", "")).await;
    w.settle().await;
    let key = RevisionKey::new("default", "hello-00001");
    let endpoints = |w: &World| w.snapshot().revision(&key).unwrap().endpoints.len();
    assert_eq!(endpoints(&w), 1);
    let version = *w.store.changes().borrow();
    let ready = |yes: bool| {
        w.workloads
            .not_ready
            .store(!yes, std::sync::atomic::Ordering::Relaxed);
        // What the fast path does when the workloads signal a change.
        w.controller.fast.refresh_endpoints(None);
    };
    ready(false);
    assert_eq!(
        endpoints(&w),
        0,
        "a replica that stops being ready leaves at once"
    );
    ready(true);
    assert_eq!(
        endpoints(&w),
        1,
        "and one that turns ready is routed at once"
    );
    assert_eq!(
        *w.store.changes().borrow(),
        version,
        "neither waited for a pass"
    );
}

#[tokio::test]
async fn a_request_at_zero_scales_the_workload_without_a_pass() {
    let mut configs = Configs::default();
    configs.autoscaler.allow_zero_initial_scale = true;
    configs.autoscaler.initial_scale = 0;
    let w = World::new(configs);
    w.apply(&service_yaml("default", "hello", "a", "")).await;
    w.settle().await;
    assert_eq!(w.workloads.replicas("default", "hello-00001"), Some(0));
    // The activator holds a request for it and says so.
    w.autoscaler.report(&sluice_platform::ActivatorStat {
        revision: RevisionKey::new("default", "hello-00001"),
        held: 1.0,
        in_flight: 0.0,
        held_requests: 1.0,
    });
    // What the fast path does when the autoscaler signals a change.
    w.controller.fast.apply_scales(None).await;
    assert_eq!(w.workloads.replicas("default", "hello-00001"), Some(1));
}

#[tokio::test]
async fn a_change_reads_only_its_service_and_matches_a_full_pass() {
    let w = World::new(Configs::default());
    for i in 0..20 {
        w.apply(&service_yaml("default", &format!("s{i}"), "a", ""))
            .await;
    }
    w.settle().await;
    w.apply(&service_yaml("default", "s7", "b", "")).await;
    w.settle().await;
    assert_eq!(
        w.controller.last_pass(),
        super::PassReport {
            full: false,
            groups: 1
        },
        "an update of one service reads that service's objects only"
    );
    assert_eq!(
        traffic(&w.route("default", "s7").await),
        [("s7-00002".to_owned(), 100)]
    );
    let scoped = w.snapshot();
    assert_eq!(
        scoped.hosts.len(),
        20,
        "every other service is still routed"
    );
    assert_eq!(
        scoped.hosts["s7.default.svc.cluster.local"].targets[0]
            .revision
            .name,
        "s7-00002"
    );

    // A pass over everything finds nothing the scoped passes left undone.
    let version = *w.store.changes().borrow();
    w.controller.reconcile_all().await.unwrap();
    assert_eq!(*w.store.changes().borrow(), version, "a full pass wrote");
    assert_eq!(w.snapshot(), scoped);
}

#[tokio::test]
async fn a_route_naming_another_services_revision_follows_its_deletion() {
    let w = World::new(Configs::default());
    w.apply(&service_yaml("default", "a", "a", "")).await;
    w.settle().await;
    let b = "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata:\n  name: b\n  namespace: default\nspec:\n  template:\n    spec:\n      containers:\n        - command: [hello]\n  traffic:\n    - revisionName: a-00001\n      percent: 100\n";
    w.apply(b).await;
    w.settle().await;
    assert_eq!(
        traffic(&w.route("default", "b").await),
        [("a-00001".to_owned(), 100)]
    );
    assert_eq!(
        w.snapshot().hosts["b.default.svc.cluster.local"].targets[0]
            .revision
            .name,
        "a-00001"
    );

    // Deleting a orphans its revision; b's route, in another group, must see it go.
    w.store
        .delete(ObjectKind::Service, "default", "a")
        .await
        .unwrap();
    w.settle().await;
    assert!(!w.controller.last_pass().full);
    assert_eq!(w.revisions("default").await, ["b-00001"]);
    let route = w.route("default", "b").await;
    let st = route.status.as_ref().unwrap();
    assert_eq!(ready(&st.conditions).0, "False", "{:?}", st.conditions);
    let snapshot = w.snapshot();
    assert!(
        !snapshot
            .revisions
            .contains_key(&RevisionKey::new("default", "a-00001")),
        "the deleted revision is not routed"
    );
    assert!(!snapshot.hosts.contains_key("a.default.svc.cluster.local"));
    assert_eq!(w.workloads.replicas("default", "a-00001"), None);
}
