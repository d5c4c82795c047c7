//! The driver: reads objects through the [`Store`], asks the [`plan`](crate::plan) and the
//! pure reconcilers what they should be, writes back only what changed, keeps workloads in
//! step with revisions, and publishes the routing snapshot. Level-triggered over what changed:
//! a change to objects (the store's journal names them), to a revision's replicas or scale, or
//! timed work (a rollout step, a progress deadline) runs a pass over the [`scope`] it touches;
//! a change of config, a failed pass, a store without a journal and a periodic resync run a
//! pass over everything. Time comes from its [`Clock`].
//!
//! A pass goes one way, kind by kind: [`services`] (children, orphans), [`revisions`]
//! (create, routing state, workloads, status, config-gc, configuration status), [`routes`]
//! (rollouts, status), services' status, then the routing snapshot.

mod fast;
mod revisions;
mod routes;
mod scope;
mod services;

use std::collections::{BTreeSet, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sluice_api::config::Configs;
use sluice_api::{Object, ObjectKind};
use sluice_platform::routing::RoutingFeed;
use sluice_platform::{Clock, RevisionKey, Store, StoreError, Workloads};
use tokio::sync::watch;

use crate::autoscaling::Autoscaler;
use crate::routing;
use fast::FastPath;
use scope::{Group, Index, Objects, Observed};

/// Runs the reconcilers over a store and a workload runner.
pub struct Controller<S, W> {
    store: Arc<S>,
    workloads: Arc<W>,
    autoscaler: Arc<Autoscaler>,
    settings: watch::Receiver<Arc<Configs>>,
    clock: Arc<dyn Clock>,
    fast: Arc<FastPath<W>>,
    state: Mutex<State>,
}

/// What the driver keeps between passes.
#[derive(Default)]
struct State {
    index: Index,
    /// The store's version the last pass read from; `None` until a pass over everything.
    cursor: Option<u64>,
    /// When (on the clock's monotonic time) the last pass over everything ran.
    last_full: Option<Duration>,
    /// When deploying groups were last looked at.
    last_deploying: Option<Duration>,
    /// The next pass must read everything: the settings changed or a pass failed.
    full_needed: bool,
    /// What the last pass read.
    last_pass: PassReport,
    /// The workloads' and the autoscaler's change versions the last look saw.
    looked: (u64, u64),
}

/// What one pass read: for tests and logs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PassReport {
    /// Whether it read every object.
    pub full: bool,
    /// The groups (a Service, its Configuration, Route and Revisions) it read.
    pub groups: usize,
}

/// How often a deploying revision's group is looked at again: its progress deadline and
/// status are time-driven.
const DEPLOYING_REQUEUE: Duration = Duration::from_secs(5);

/// How often a pass reads everything even when nothing says so: config-gc's ages and
/// anything a change signal missed. Every change wakes a pass over what it touched, so an idle
/// daemon with many Services does not re-read them all.
const FULL_RESYNC: Duration = Duration::from_secs(600);

/// The objects of one kind, typed.
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
use typed;

impl<S: Store, W: Workloads> Controller<S, W> {
    /// A controller publishing routing to `routing`, reading time from `clock`.
    pub fn new(
        store: Arc<S>,
        workloads: Arc<W>,
        autoscaler: Arc<Autoscaler>,
        settings: watch::Receiver<Arc<Configs>>,
        routing: Arc<RoutingFeed>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let fast = Arc::new(FastPath::new(
            workloads.clone(),
            autoscaler.clone(),
            routing,
        ));
        Self {
            store,
            workloads,
            autoscaler,
            settings,
            clock,
            fast,
            state: Mutex::default(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("driver state lock")
    }

    /// What the last pass read.
    pub fn last_pass(&self) -> PassReport {
        self.state().last_pass
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
            let requeue = match self.reconcile().await {
                Ok(requeue) => requeue,
                Err(error) => {
                    tracing::warn!(%error, "Reconcile pass failed; retrying.");
                    self.state().full_needed = true;
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
                _ = self.settings.changed() => self.state().full_needed = true,
                () = tokio::time::sleep(requeue) => {}
            }
            // Coalesce a burst of changes into one pass.
            tokio::time::sleep(Duration::from_millis(2)).await;
            store_changes.mark_unchanged();
            workload_changes.mark_unchanged();
            scale_changes.mark_unchanged();
        }
    }

    /// One pass over what changed since the last one: the groups of the objects the store's
    /// journal names, of revisions whose workload or scale changed and of timed work, with
    /// their closure. Everything when the store keeps no journal, the settings changed, a pass
    /// failed, or a periodic resync is due. Returns how soon the next timed pass is due.
    pub async fn reconcile(&self) -> Result<Duration, StoreError> {
        let now = self.clock.elapsed();
        let (cursor, full_due) = {
            let st = self.state();
            let due = st.full_needed
                || st
                    .last_full
                    .is_none_or(|t| now.saturating_sub(t) >= FULL_RESYNC);
            (st.cursor, due)
        };
        let changes = match cursor {
            Some(c) if !full_due => self.store.changed_since(c),
            _ => None,
        };
        let Some(changes) = changes else {
            return self.reconcile_all().await;
        };
        let mut seeds: HashSet<Group> = HashSet::new();
        for changed in &changes.objects {
            let known = match changed.kind {
                ObjectKind::Revision => self
                    .state()
                    .index
                    .group_of_revision(&changed.namespace, &changed.name),
                _ => None,
            };
            if let Some(g) = known {
                seeds.insert(g);
                continue;
            }
            match self
                .store
                .get(changed.kind, &changed.namespace, &changed.name)
                .await?
            {
                Some(obj) => {
                    seeds.insert(self.state().index.note(&obj));
                }
                // Gone before it was seen: only its own name can hold what it left.
                None if changed.kind != ObjectKind::Revision => {
                    seeds.insert((changed.namespace.clone(), changed.name.clone()));
                }
                None => {}
            }
        }
        seeds.extend(self.timed_groups(now));
        seeds.extend(self.observe(false));
        self.state().cursor = Some(changes.version);
        if seeds.is_empty() {
            return Ok(self.requeue());
        }
        let scope = self.state().index.closure(seeds);
        let objs = self.load(&scope).await?;
        self.pass(objs, Some(&scope)).await?;
        Ok(self.requeue())
    }

    /// Groups whose timed work is due: rollout steps, and deploying revisions every
    /// [`DEPLOYING_REQUEUE`].
    fn timed_groups(&self, now: Duration) -> Vec<Group> {
        let wall = self.clock.now();
        let mut st = self.state();
        let mut out: Vec<Group> = st
            .index
            .rolling
            .iter()
            .filter(|(_, due)| **due <= wall)
            .map(|(g, _)| g.clone())
            .collect();
        let look = st
            .last_deploying
            .is_none_or(|t| now.saturating_sub(t) >= DEPLOYING_REQUEUE);
        if look && !st.index.deploying.is_empty() {
            out.extend(st.index.deploying.iter().cloned());
            st.last_deploying = Some(now);
        }
        out
    }

    /// The groups of revisions whose workload or scale changed since the last look: a look
    /// at the revisions the workloads and the autoscaler name as changed, or at all of them
    /// (`everything`, or when either cannot say).
    fn observe(&self, everything: bool) -> HashSet<Group> {
        let now = (
            *self.workloads.changes().borrow(),
            self.autoscaler.version(),
        );
        let mut st = self.state();
        let (workloads, scales) = st.looked;
        let changed = match (
            self.workloads.changed_since(workloads),
            self.autoscaler.changed_since(scales),
        ) {
            (Some(mut keys), Some(more)) if !everything => {
                keys.extend(more);
                Some(keys)
            }
            _ => None,
        };
        st.looked = now;
        st.index.observe(changed.as_deref(), |key| Observed {
            workload: self.workloads.status(key),
            scale: self
                .autoscaler
                .scale(key)
                .map(|s| (s.desired, s.activity, s.excess_burst_capacity < 0.0)),
        })
    }

    /// How soon a timed pass is due: the next rollout step, a deploying revision's next look,
    /// the periodic resync.
    fn requeue(&self) -> Duration {
        let now = self.clock.elapsed();
        let wall = self.clock.now();
        let st = self.state();
        let mut next = st
            .last_full
            .map_or(Duration::ZERO, |t| (t + FULL_RESYNC).saturating_sub(now));
        if !st.index.deploying.is_empty() {
            next = next.min(DEPLOYING_REQUEUE);
        }
        for due in st.index.rolling.values() {
            let left = wall
                .duration_until(*due)
                .try_into()
                .unwrap_or(Duration::ZERO);
            next = next.min(left);
        }
        next
    }

    /// Reads the objects of the groups in `scope`.
    async fn load(&self, scope: &BTreeSet<Group>) -> Result<Objects, StoreError> {
        let mut objs = Objects::default();
        for g in scope {
            let (ns, name) = (g.0.as_str(), g.1.as_str());
            if let Some(Object::Service(s)) = self.store.get(ObjectKind::Service, ns, name).await? {
                objs.services.push(s);
            }
            if let Some(Object::Configuration(c)) =
                self.store.get(ObjectKind::Configuration, ns, name).await?
            {
                objs.configurations.push(c);
            }
            if let Some(Object::Route(r)) = self.store.get(ObjectKind::Route, ns, name).await? {
                objs.routes.push(r);
            }
            let revisions: Vec<String> = self.state().index.revisions(g).cloned().collect();
            for r in revisions {
                if let Some(Object::Revision(r)) =
                    self.store.get(ObjectKind::Revision, ns, &r).await?
                {
                    objs.revisions.push(r);
                }
            }
        }
        Ok(objs)
    }

    /// One pass over every object. Returns how soon the next timed pass is due.
    pub async fn reconcile_all(&self) -> Result<Duration, StoreError> {
        let now = self.clock.elapsed();
        let cursor = *self.store.changes().borrow();
        let objs = Objects {
            services: typed!(self.store.list(ObjectKind::Service, None).await?, Service),
            configurations: typed!(
                self.store.list(ObjectKind::Configuration, None).await?,
                Configuration
            ),
            routes: typed!(self.store.list(ObjectKind::Route, None).await?, Route),
            revisions: typed!(self.store.list(ObjectKind::Revision, None).await?, Revision),
        };
        // What the pass reads of workloads and scales is the baseline later looks compare to.
        self.observe(true);
        self.pass(objs, None).await?;
        {
            let mut st = self.state();
            st.cursor = Some(cursor);
            st.last_full = Some(now);
            st.full_needed = false;
        }
        Ok(self.requeue())
    }

    /// Reconciles `objs`: every object (`scope` is `None`) or the closure `scope`.
    async fn pass(
        &self,
        mut objs: Objects,
        scope: Option<&BTreeSet<Group>>,
    ) -> Result<(), StoreError> {
        let settings = self.settings.borrow().clone();
        let before = scope.map(|s| self.state().index.revision_keys(s));
        self.sync_service_children(&mut objs, &settings.defaults)
            .await?;
        self.delete_orphans(&mut objs).await?;
        let buffered = self
            .sync_revisions(&mut objs, before.as_ref(), &settings)
            .await?;
        let steps = self
            .sync_routes(
                &mut objs.routes,
                &objs.configurations,
                &objs.revisions,
                &settings,
            )
            .await?;
        self.sync_service_status(&objs.services, &objs.configurations, &objs.routes)
            .await?;

        let tag_headers = settings.features.tag_header_based_routing;
        let snapshot = routing::snapshot(&objs.routes, &objs.revisions, tag_headers, |key| {
            let endpoints = self.workloads.status(key).map(|s| s.endpoints);
            (endpoints.unwrap_or_default(), buffered.contains(key))
        });
        match scope {
            None => self.fast.routing.publish(snapshot),
            Some(scope) => {
                let routes: Vec<String> = scope
                    .iter()
                    .map(|(ns, name)| format!("{ns}/{name}"))
                    .collect();
                // The hosts of the routes this pass read, and what they name, are replaced.
                let routes = routes.iter().map(String::as_str);
                self.fast.routing.publish_routes(routes, snapshot);
            }
        }
        // A replica may have turned ready (or gone) since the endpoints above were read.
        let read: Option<Vec<RevisionKey>> =
            scope.map(|_| objs.revisions.iter().map(crate::revision::key).collect());
        self.fast.refresh_endpoints(read.as_deref());

        let wall = self.clock.now();
        let mut st = self.state();
        st.index.record(scope, &objs);
        for rev in &objs.revisions {
            let deploying = rev
                .ready_condition()
                .is_none_or(|c| c.status == sluice_api::ConditionStatus::Unknown);
            if deploying {
                st.index.deploying.insert(scope::revision_group(rev));
            }
        }
        for (g, step) in steps {
            let due = wall.checked_add(step).unwrap_or(wall);
            st.index.rolling.insert(g, due);
        }
        st.last_pass = PassReport {
            full: scope.is_none(),
            groups: scope.map_or(0, BTreeSet::len),
        };
        Ok(())
    }
}

#[cfg(test)]
mod tests;
