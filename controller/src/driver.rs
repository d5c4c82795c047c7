//! The driver: reads objects through the [`Store`], calls the pure reconcilers, writes back
//! only what changed, keeps workloads in step with revisions, and publishes the routing
//! snapshot. Level-triggered: any change to objects, replicas or config runs a full pass.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sluice_crds::config::{Configs, GcConfig};
use sluice_crds::{Configuration, Object, ObjectKind, Revision, Route, Service, keys};
use sluice_platform::routing::RoutingSnapshot;
use sluice_platform::{RevisionKey, Store, StoreError, WorkloadSpec, Workloads};
use tokio::sync::watch;

use crate::autoscaling::Autoscaler;
use crate::meta::controller_of;
use crate::{configuration, gc, revision, rollout, route, routing, service};

/// The time written into condition transitions.
pub fn now() -> String {
    jiff::Timestamp::now()
        .round(jiff::Unit::Second)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// Operator settings the controllers read.
pub type Settings = Configs;

/// Runs the reconcilers over a store and a workload runner.
pub struct Controller<S, W> {
    store: Arc<S>,
    workloads: Arc<W>,
    autoscaler: Arc<Autoscaler>,
    settings: watch::Receiver<Arc<Settings>>,
    fast: Arc<FastPath<W>>,
}

/// What must not wait for a full pass, run beside it: a new scale goes to the workloads, and a
/// replica that turns ready goes into the routing snapshot, at once (a cold start waits on
/// both).
struct FastPath<W> {
    workloads: Arc<W>,
    autoscaler: Arc<Autoscaler>,
    snapshot: watch::Sender<Arc<RoutingSnapshot>>,
    /// Every revision's workload as last ensured.
    ensured: Mutex<HashMap<RevisionKey, WorkloadSpec>>,
}

macro_rules! typed {
    ($objs:expr, $variant:ident) => {
        $objs
            .into_iter()
            .filter_map(|o| match o {
                Object::$variant(x) => Some(x),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
}

fn same_metadata(
    a: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    b: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> bool {
    a.labels == b.labels
        && a.annotations == b.annotations
        && a.owner_references == b.owner_references
}

impl<W: Workloads> FastPath<W> {
    /// Applies the autoscaler's current decisions to the workloads.
    async fn apply_scales(&self) {
        let changed: Vec<WorkloadSpec> = {
            let ensured = self.ensured.lock().expect("ensured lock");
            ensured
                .iter()
                .filter_map(|(key, spec)| {
                    let desired = self.autoscaler.scale(key)?.desired;
                    (desired != spec.replicas).then(|| WorkloadSpec {
                        replicas: desired,
                        ..spec.clone()
                    })
                })
                .collect()
        };
        for spec in changed {
            self.ensure(spec).await;
        }
    }

    async fn ensure(&self, spec: WorkloadSpec) {
        let key = spec.key.clone();
        let result = self.workloads.ensure(spec.clone()).await;
        if let Err(error) = result {
            tracing::warn!(revision = %key, %error, "Cannot run revision.");
        }
        self.ensured.lock().expect("ensured lock").insert(key, spec);
    }

    /// Republishes the routing snapshot with every revision's current ready endpoints, without
    /// reading the store: a replica that turns ready serves at once.
    fn refresh_endpoints(&self) {
        self.snapshot.send_if_modified(|current| {
            let mut next = (**current).clone();
            for (key, backends) in &mut next.revisions {
                let Some((ns, name)) = key.split_once('/') else {
                    continue;
                };
                let status = self.workloads.status(&RevisionKey::new(ns, name));
                backends.endpoints = status.map(|s| s.endpoints).unwrap_or_default();
            }
            if next == **current {
                return false;
            }
            *current = Arc::new(next);
            true
        });
    }

    async fn follow(&self) {
        let mut workload_changes = self.workloads.changes();
        let mut scale_changes = self.autoscaler.changes();
        loop {
            tokio::select! {
                r = workload_changes.changed() => {
                    if r.is_err() { return; }
                    self.refresh_endpoints();
                }
                r = scale_changes.changed() => {
                    if r.is_err() { return; }
                    self.apply_scales().await;
                }
            }
        }
    }
}

impl<S: Store, W: Workloads> Controller<S, W> {
    /// A controller publishing routing snapshots to `snapshot`.
    pub fn new(
        store: Arc<S>,
        workloads: Arc<W>,
        autoscaler: Arc<Autoscaler>,
        settings: watch::Receiver<Arc<Settings>>,
        snapshot: watch::Sender<Arc<RoutingSnapshot>>,
    ) -> Self {
        let fast = Arc::new(FastPath {
            workloads: workloads.clone(),
            autoscaler: autoscaler.clone(),
            snapshot,
            ensured: Mutex::default(),
        });
        Self {
            store,
            workloads,
            autoscaler,
            settings,
            fast,
        }
    }

    /// Reconciles until `shutdown` resolves.
    pub async fn run(mut self, shutdown: impl std::future::Future<Output = ()>) {
        let mut store_changes = self.store.changes();
        let mut workload_changes = self.workloads.changes();
        let mut scale_changes = self.autoscaler.changes();
        let fast = self.fast.clone();
        let follower = tokio::spawn(async move { fast.follow().await });
        tokio::pin!(shutdown);
        loop {
            let requeue = match self.reconcile_all().await {
                Ok(requeue) => requeue.unwrap_or(Duration::from_secs(5)),
                Err(error) => {
                    tracing::warn!(%error, "Reconcile pass failed; retrying.");
                    Duration::from_secs(1)
                }
            };
            tokio::select! {
                () = &mut shutdown => {
                    follower.abort();
                    return;
                }
                _ = store_changes.changed() => {}
                _ = workload_changes.changed() => {}
                _ = scale_changes.changed() => {}
                _ = self.settings.changed() => {}
                () = tokio::time::sleep(requeue) => {}
            }
            // Coalesce a burst of changes into one pass.
            tokio::time::sleep(Duration::from_millis(2)).await;
            store_changes.mark_unchanged();
            workload_changes.mark_unchanged();
            scale_changes.mark_unchanged();
        }
    }

    /// One full pass over every object; returns how soon a timed change (a rollout step) needs
    /// the next pass.
    pub async fn reconcile_all(&self) -> Result<Option<Duration>, StoreError> {
        let settings = self.settings.borrow().clone();
        let services: Vec<Service> =
            typed!(self.store.list(ObjectKind::Service, None).await?, Service);
        self.sync_service_children(&services).await?;
        self.collect_garbage(&services).await?;

        let configs: Vec<Configuration> = typed!(
            self.store.list(ObjectKind::Configuration, None).await?,
            Configuration
        );
        let mut revisions: Vec<Revision> =
            typed!(self.store.list(ObjectKind::Revision, None).await?, Revision);
        for cfg in &configs {
            let want = configuration::desired_revision(cfg);
            let exists = revisions.iter().any(|r| {
                r.metadata.name == want.metadata.name
                    && r.metadata.namespace == want.metadata.namespace
            });
            if !exists {
                tracing::info!(
                    revision = want.metadata.name.as_deref().unwrap_or(""),
                    "Creating revision."
                );
                match self.store.create(Object::Revision(want)).await? {
                    Object::Revision(r) => revisions.push(r),
                    _ => unreachable!("store returns the kind it was given"),
                }
            }
        }

        // Revisions: workloads in step, status from what they report. A revision is reachable
        // while a route sends it traffic or it is its configuration's newest.
        let routes_now: Vec<Route> = typed!(self.store.list(ObjectKind::Route, None).await?, Route);
        let routed: HashSet<(String, String)> = routes_now
            .iter()
            .flat_map(|r| {
                let ns = r.metadata.namespace.clone().unwrap_or_default();
                r.status
                    .iter()
                    .flat_map(|s| s.fields.traffic.iter())
                    .filter_map(move |t| Some((ns.clone(), t.revision_name.clone()?)))
            })
            .collect();
        let mut reachable = routed.clone();
        for cfg in &configs {
            let ns = cfg.metadata.namespace.clone().unwrap_or_default();
            reachable.insert((ns, configuration::revision_name(cfg)));
        }
        self.mark_routing_state(&mut revisions, &routed).await?;
        let live: HashSet<_> = revisions.iter().map(revision::key).collect();
        self.fast
            .ensured
            .lock()
            .expect("ensured lock")
            .retain(|k, _| live.contains(k));
        for key in self.workloads.keys() {
            if !live.contains(&key) {
                let _ = self.workloads.delete(&key).await;
            }
        }
        // Reachable revisions scale on demand; unreachable ones stop at once (nothing can
        // send them a request any more), whatever their min-scale.
        let mut scaled = HashSet::new();
        let mut buffered = HashSet::new();
        for rev in &mut revisions {
            let id = (
                rev.metadata.namespace.clone().unwrap_or_default(),
                rev.metadata.name.clone().unwrap_or_default(),
            );
            let key = revision::key(rev);
            let scale = reachable.contains(&id).then(|| {
                let spec = revision::scaler_spec(rev, &settings.autoscaler);
                self.autoscaler.sync(&key, spec)
            });
            if let Some(scale) = scale {
                scaled.insert(key.clone());
                if scale.excess_burst_capacity < 0.0 {
                    buffered.insert(key.clone());
                }
            }
            let spec = revision::workload_spec(rev, scale.map_or(0, |s| s.desired));
            let current = self.workloads.status(&key);
            if current.as_ref().is_none_or(|s| s.desired != spec.replicas) {
                self.fast.ensure(spec).await;
            } else {
                self.fast
                    .ensured
                    .lock()
                    .expect("ensured lock")
                    .insert(key.clone(), spec);
            }
            let status = revision::status(
                rev,
                self.workloads.status(&key).as_ref(),
                scale.map(|s| s.activity),
            );
            if rev.status.as_ref() != Some(&status) {
                rev.status = Some(status);
                self.store
                    .update_status(Object::Revision(rev.clone()))
                    .await?;
            }
        }

        self.autoscaler.retain(&scaled);

        let mut configs = configs;
        self.collect_old_revisions(&configs, &revisions, &routed, &settings.gc)
            .await?;
        for cfg in &mut configs {
            let status = configuration::status(cfg, &revisions);
            if cfg.status.as_ref() != Some(&status) {
                cfg.status = Some(status);
                self.store
                    .update_status(Object::Configuration(cfg.clone()))
                    .await?;
            }
        }

        let mut routes: Vec<Route> = typed!(self.store.list(ObjectKind::Route, None).await?, Route);
        let mut requeue: Option<Duration> = None;
        for rt in &mut routes {
            let domain = settings
                .domain
                .domain_for(&crate::meta::labels(&rt.metadata))
                .to_owned();
            let now = jiff::Timestamp::now();
            let rolling = self
                .sync_rollout(rt, &configs, &settings.network, now)
                .await?;
            if let Some(step) = rolling.as_ref().and_then(|r| r.next_step(now)) {
                requeue = Some(requeue.map_or(step, |d: Duration| d.min(step)));
            }
            let status = route::status(
                rt,
                &configs,
                &revisions,
                &settings.network,
                &domain,
                rolling.as_ref(),
                now,
            );
            if rt.status.as_ref() != Some(&status) {
                rt.status = Some(status);
                self.store.update_status(Object::Route(rt.clone())).await?;
            }
        }

        for svc in &services {
            let (ns, name) = (
                svc.metadata.namespace.as_deref(),
                svc.metadata.name.as_deref(),
            );
            let cfg = configs.iter().find(|c| {
                c.metadata.namespace.as_deref() == ns && c.metadata.name.as_deref() == name
            });
            let rt = routes.iter().find(|r| {
                r.metadata.namespace.as_deref() == ns && r.metadata.name.as_deref() == name
            });
            let status = service::status(svc, cfg, rt);
            if svc.status.as_ref() != Some(&status) {
                let mut next = svc.clone();
                next.status = Some(status);
                self.store.update_status(Object::Service(next)).await?;
            }
        }

        let tag_headers = settings.features.tag_header_based_routing;
        let snapshot = routing::snapshot(&routes, &revisions, tag_headers, |key| {
            let endpoints = self.workloads.status(key).map(|s| s.endpoints);
            (endpoints.unwrap_or_default(), buffered.contains(key))
        });
        self.fast.snapshot.send_if_modified(|current| {
            if **current == snapshot {
                return false;
            }
            *current = Arc::new(snapshot);
            true
        });
        // A replica may have turned ready (or gone) since the endpoints above were read.
        self.fast.refresh_endpoints();
        Ok(requeue)
    }

    /// Starts, keeps or ends the route's gradual rollout, recording it on the route.
    async fn sync_rollout(
        &self,
        rt: &mut Route,
        configs: &[Configuration],
        net: &sluice_crds::config::NetworkConfig,
        now: jiff::Timestamp,
    ) -> Result<Option<rollout::Rollout>, StoreError> {
        let recorded = rollout::recorded(rt);
        let ns = rt.metadata.namespace.clone();
        let target = rt
            .spec
            .traffic
            .iter()
            .find_map(|t| t.configuration_name.clone());
        let latest = target.as_ref().and_then(|name| {
            configs
                .iter()
                .find(|c| c.metadata.namespace == ns && c.metadata.name.as_ref() == Some(name))
                .and_then(|c| c.status.as_ref()?.fields.latest_ready_revision_name.clone())
        });
        let next = match (&target, &latest) {
            (Some(cfg), Some(latest)) => {
                let status_traffic = rt
                    .status
                    .as_ref()
                    .map(|s| s.fields.traffic.as_slice())
                    .unwrap_or(&[]);
                let previous = status_traffic
                    .iter()
                    .find(|t| t.latest_revision == Some(true))
                    .and_then(|t| t.revision_name.as_deref());
                rollout::next(
                    recorded.clone(),
                    cfg,
                    previous,
                    latest,
                    rollout::duration(rt, net),
                    now,
                )
            }
            _ => None,
        };
        if next != recorded {
            let annotations = rt.metadata.annotations.get_or_insert_with(Default::default);
            match &next {
                Some(r) => {
                    tracing::info!(route = rt.metadata.name.as_deref().unwrap_or(""), from = %r.from, to = %r.to, seconds = r.duration_seconds, "Gradual rollout.");
                    annotations.insert(
                        rollout::ANNOTATION.to_owned(),
                        serde_json::to_string(r).expect("rollouts serialize"),
                    );
                }
                None => {
                    annotations.remove(rollout::ANNOTATION);
                }
            }
            let mut update = rt.clone();
            update.metadata.resource_version = None;
            if let Object::Route(stored) = self.store.update(Object::Route(update)).await? {
                *rt = stored;
            }
        }
        Ok(next)
    }

    /// Keeps Knative's `routingState` label (`active` while a route sends traffic, else
    /// `reserve`) and the time it last changed, which GC reads as the last-active time.
    async fn mark_routing_state(
        &self,
        revisions: &mut [Revision],
        routed: &HashSet<(String, String)>,
    ) -> Result<(), StoreError> {
        for rev in revisions.iter_mut() {
            let id = (
                rev.metadata.namespace.clone().unwrap_or_default(),
                rev.metadata.name.clone().unwrap_or_default(),
            );
            let want = if routed.contains(&id) {
                "active"
            } else {
                "reserve"
            };
            let labels = rev.metadata.labels.get_or_insert_with(Default::default);
            if labels.get(keys::ROUTING_STATE).map(String::as_str) == Some(want) {
                continue;
            }
            labels.insert(keys::ROUTING_STATE.to_owned(), want.to_owned());
            rev.metadata
                .annotations
                .get_or_insert_with(Default::default)
                .insert(gc::ROUTING_STATE_MODIFIED.to_owned(), now());
            let mut next = rev.clone();
            next.metadata.resource_version = None;
            if let Object::Revision(stored) = self.store.update(Object::Revision(next)).await? {
                *rev = stored;
            }
        }
        Ok(())
    }

    /// Deletes each configuration's revisions that config-gc says are garbage.
    async fn collect_old_revisions(
        &self,
        configs: &[Configuration],
        revisions: &[Revision],
        routed: &HashSet<(String, String)>,
        cfg: &GcConfig,
    ) -> Result<(), StoreError> {
        for config in configs {
            let ns = config.metadata.namespace.clone().unwrap_or_default();
            let own: Vec<Revision> = revisions
                .iter()
                .filter(|r| {
                    configuration::owns(config, r) && r.metadata.namespace.as_deref() == Some(&ns)
                })
                .cloned()
                .collect();
            let mut protected: HashSet<String> = own
                .iter()
                .filter_map(|r| r.metadata.name.clone())
                .filter(|n| routed.contains(&(ns.clone(), n.clone())))
                .collect();
            protected.insert(configuration::revision_name(config));
            let st = config.status.clone().unwrap_or_default();
            protected.extend(st.fields.latest_ready_revision_name);
            protected.extend(st.fields.latest_created_revision_name);
            for name in gc::collect(&own, &protected, cfg, jiff::Timestamp::now()) {
                tracing::info!(revision = %name, "Garbage-collecting revision (config-gc).");
                self.store.delete(ObjectKind::Revision, &ns, &name).await?;
            }
        }
        Ok(())
    }

    async fn sync_service_children(&self, services: &[Service]) -> Result<(), StoreError> {
        for svc in services {
            let ns = svc.metadata.namespace.as_deref().unwrap_or("default");
            let name = svc.metadata.name.as_deref().unwrap_or_default();
            let want = service::desired_configuration(svc);
            match self.store.get(ObjectKind::Configuration, ns, name).await? {
                None => {
                    self.store.create(Object::Configuration(want)).await?;
                }
                Some(Object::Configuration(have))
                    if have.spec != want.spec || !same_metadata(&have.metadata, &want.metadata) =>
                {
                    let mut next = want;
                    next.metadata.resource_version = have.metadata.resource_version;
                    self.store.update(Object::Configuration(next)).await?;
                }
                Some(_) => {}
            }
            let mut want = service::desired_route(svc);
            let have = self.store.get(ObjectKind::Route, ns, name).await?;
            // The rollout in progress is the route's own state, not the service's intent.
            if let Some(Object::Route(have)) = &have
                && let Some(r) = have
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(rollout::ANNOTATION))
            {
                want.metadata
                    .annotations
                    .get_or_insert_with(Default::default)
                    .insert(rollout::ANNOTATION.to_owned(), r.clone());
            }
            match have {
                None => {
                    self.store.create(Object::Route(want)).await?;
                }
                Some(Object::Route(have))
                    if have.spec != want.spec || !same_metadata(&have.metadata, &want.metadata) =>
                {
                    let mut next = want;
                    next.metadata.resource_version = have.metadata.resource_version;
                    self.store.update(Object::Route(next)).await?;
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// Deletes objects whose controlling owner is gone (Kubernetes' garbage collector).
    async fn collect_garbage(&self, services: &[Service]) -> Result<(), StoreError> {
        let svc_names: HashSet<(String, String)> = services
            .iter()
            .map(|s| {
                (
                    s.metadata.namespace.clone().unwrap_or_default(),
                    s.metadata.name.clone().unwrap_or_default(),
                )
            })
            .collect();
        let mut configs_left = HashSet::new();
        for kind in [ObjectKind::Configuration, ObjectKind::Route] {
            for obj in self.store.list(kind, None).await? {
                let ns = obj.namespace().to_owned();
                let orphan = matches!(controller_of(obj.meta()), Some(("Service", owner)) if !svc_names.contains(&(ns.clone(), owner.to_owned())));
                if orphan {
                    tracing::info!(object = %obj.describe(), "Deleting: its Service is gone.");
                    self.store.delete(kind, &ns, obj.name()).await?;
                } else if kind == ObjectKind::Configuration {
                    configs_left.insert((ns, obj.name().to_owned()));
                }
            }
        }
        for obj in self.store.list(ObjectKind::Revision, None).await? {
            let ns = obj.namespace().to_owned();
            let orphan = matches!(controller_of(obj.meta()), Some(("Configuration", owner)) if !configs_left.contains(&(ns.clone(), owner.to_owned())));
            if orphan {
                tracing::info!(object = %obj.describe(), "Deleting: its Configuration is gone.");
                self.store
                    .delete(ObjectKind::Revision, &ns, obj.name())
                    .await?;
            }
        }
        Ok(())
    }
}
