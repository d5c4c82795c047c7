//! What must not wait for a full pass, run beside it: a new scale goes to the workloads, and a
//! replica that turns ready goes into the routing snapshot, at once (a cold start waits on
//! both). The one writer of workloads: the pass and the autoscaler's decisions both ensure
//! through [`FastPath::ensure`], which remembers what it asked for.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use sluice_platform::routing::RoutingSnapshot;
use sluice_platform::{RevisionKey, WorkloadSpec, Workloads};
use tokio::sync::watch;

use crate::autoscaling::Autoscaler;

pub(super) struct FastPath<W> {
    pub(super) workloads: Arc<W>,
    pub(super) autoscaler: Arc<Autoscaler>,
    pub(super) snapshot: watch::Sender<Arc<RoutingSnapshot>>,
    /// Whether a full pass has published: until then the snapshot is only the empty
    /// placeholder, which the activator must not serve from.
    published: AtomicBool,
    /// Every revision's workload as last ensured.
    ensured: Mutex<HashMap<RevisionKey, WorkloadSpec>>,
}

impl<W: Workloads> FastPath<W> {
    pub(super) fn new(
        workloads: Arc<W>,
        autoscaler: Arc<Autoscaler>,
        snapshot: watch::Sender<Arc<RoutingSnapshot>>,
    ) -> Self {
        Self {
            workloads,
            autoscaler,
            snapshot,
            published: AtomicBool::new(false),
            ensured: Mutex::default(),
        }
    }

    /// Applies the autoscaler's current decisions to the workloads.
    pub(super) async fn apply_scales(&self) {
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

    /// Runs `spec` unless the workload already runs that many replicas; records it either way.
    pub(super) async fn ensure_if_changed(&self, spec: WorkloadSpec) {
        let current = self.workloads.status(&spec.key);
        if current.as_ref().is_none_or(|s| s.desired != spec.replicas) {
            self.ensure(spec).await;
        } else {
            self.remember(spec);
        }
    }

    async fn ensure(&self, spec: WorkloadSpec) {
        let result = self.workloads.ensure(spec.clone()).await;
        if let Err(error) = result {
            tracing::warn!(revision = %spec.key, %error, "Cannot run revision.");
        }
        self.remember(spec);
    }

    fn remember(&self, spec: WorkloadSpec) {
        self.ensured
            .lock()
            .expect("ensured lock")
            .insert(spec.key.clone(), spec);
    }

    /// Forgets and stops every workload whose revision is not in `live`.
    pub(super) async fn keep_only(&self, live: &HashSet<RevisionKey>) {
        self.ensured
            .lock()
            .expect("ensured lock")
            .retain(|k, _| live.contains(k));
        for key in self.workloads.keys() {
            if !live.contains(&key)
                && let Err(error) = self.workloads.delete(&key).await
            {
                tracing::warn!(revision = %key, %error, "Cannot stop revision.");
            }
        }
    }

    /// Forgets and stops the workloads of `gone` (revisions deleted by a scoped pass).
    pub(super) async fn stop(&self, gone: &[RevisionKey]) {
        {
            let mut ensured = self.ensured.lock().expect("ensured lock");
            for key in gone {
                ensured.remove(key);
            }
        }
        for key in gone {
            if let Err(error) = self.workloads.delete(key).await {
                tracing::warn!(revision = %key, %error, "Cannot stop revision.");
            }
        }
    }

    /// Publishes a scoped pass's part of the snapshot: the hosts of routes `in_scope` says
    /// the pass read, and their revisions, are replaced by `part`'s.
    pub(super) fn publish_part(&self, part: RoutingSnapshot, in_scope: impl Fn(&str) -> bool) {
        let current = self.snapshot.borrow().clone();
        let mut next = (*current).clone();
        next.hosts.retain(|_, h| !in_scope(&h.route));
        // What the other routes name is outside the scope (a scope holds every route naming
        // its revisions), so it stays as it was; the scope's revisions come from `part`.
        let named: HashSet<&RevisionKey> = next
            .hosts
            .values()
            .flat_map(|h| h.targets.iter().map(|t| &t.revision).chain(h.tags.values()))
            .collect();
        let mut revisions = std::mem::take(&mut next.revisions);
        revisions.retain(|k, _| named.contains(k));
        revisions.extend(part.revisions);
        next.revisions = revisions;
        next.hosts.extend(part.hosts);
        self.publish(next);
    }

    /// Publishes `next` if it differs from the current snapshot, and always the first time
    /// (an empty first table is still news: the activator waits for it).
    pub(super) fn publish(&self, next: RoutingSnapshot) {
        let first = !self.published.swap(true, Ordering::AcqRel);
        self.snapshot.send_if_modified(|current| {
            if **current == next && !first {
                return false;
            }
            *current = Arc::new(next);
            true
        });
    }

    /// Republishes the routing snapshot with every revision's current ready endpoints, without
    /// reading the store: a replica that turns ready serves at once.
    pub(super) fn refresh_endpoints(&self) {
        self.snapshot.send_if_modified(|current| {
            let mut next = (**current).clone();
            for (key, backends) in &mut next.revisions {
                let status = self.workloads.status(key);
                backends.endpoints = status.map(|s| s.endpoints).unwrap_or_default();
            }
            if next == **current {
                return false;
            }
            *current = Arc::new(next);
            true
        });
    }

    pub(super) async fn follow(&self) {
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
