//! What must not wait for a full pass, run beside it: a new scale goes to the workloads, and a
//! replica that turns ready goes into the routing snapshot, at once (a cold start waits on
//! both). The one writer of workloads: the pass and the autoscaler's decisions both ensure
//! through [`FastPath::ensure`], which remembers what it asked for.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use sluice_platform::routing::RoutingFeed;
use sluice_platform::{RevisionKey, WorkloadSpec, Workloads};

use crate::autoscaling::Autoscaler;

pub(super) struct FastPath<W> {
    pub(super) workloads: Arc<W>,
    pub(super) autoscaler: Arc<Autoscaler>,
    /// Where routing goes; unpublished until the first full pass, so the activator never
    /// serves from an empty placeholder.
    pub(super) routing: Arc<RoutingFeed>,
    /// Every revision's workload as last ensured.
    ensured: Mutex<HashMap<RevisionKey, WorkloadSpec>>,
}

impl<W: Workloads> FastPath<W> {
    pub(super) fn new(
        workloads: Arc<W>,
        autoscaler: Arc<Autoscaler>,
        routing: Arc<RoutingFeed>,
    ) -> Self {
        Self {
            workloads,
            autoscaler,
            routing,
            ensured: Mutex::default(),
        }
    }

    /// Applies the autoscaler's current decisions to the workloads: of every revision, or of
    /// those in `only`.
    pub(super) async fn apply_scales(&self, only: Option<&[RevisionKey]>) {
        let changed: Vec<WorkloadSpec> = {
            let ensured = self.ensured.lock().expect("ensured lock");
            let rescale = |(key, spec): (&RevisionKey, &WorkloadSpec)| {
                let desired = self.autoscaler.scale(key)?.desired;
                (desired != spec.replicas).then(|| WorkloadSpec {
                    replicas: desired,
                    ..spec.clone()
                })
            };
            match only {
                None => ensured.iter().filter_map(rescale).collect(),
                Some(keys) => keys
                    .iter()
                    .filter_map(|k| ensured.get_key_value(k))
                    .filter_map(rescale)
                    .collect(),
            }
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

    /// Sets the current ready endpoints of every routed revision (or of those in `only`),
    /// without reading the store: a replica that turns ready serves at once.
    pub(super) fn refresh_endpoints(&self, only: Option<&[RevisionKey]>) {
        self.routing.refresh_endpoints(only, |key| {
            let status = self.workloads.status(key);
            status.map(|s| s.endpoints).unwrap_or_default()
        });
    }

    /// Follows the workloads and the autoscaler, looking only at the revisions they say
    /// changed (at all of them when they cannot say).
    pub(super) async fn follow(&self) {
        let mut workload_changes = self.workloads.changes();
        let mut scale_changes = self.autoscaler.changes();
        let mut workloads_seen = *workload_changes.borrow_and_update();
        let mut scales_seen = *scale_changes.borrow_and_update();
        loop {
            tokio::select! {
                r = workload_changes.changed() => {
                    if r.is_err() { return; }
                    let now = *workload_changes.borrow_and_update();
                    let keys = self.workloads.changed_since(workloads_seen);
                    workloads_seen = now;
                    self.refresh_endpoints(keys.as_deref());
                }
                r = scale_changes.changed() => {
                    if r.is_err() { return; }
                    let now = *scale_changes.borrow_and_update();
                    let keys = self.autoscaler.changed_since(scales_seen);
                    scales_seen = now;
                    self.apply_scales(keys.as_deref()).await;
                }
            }
        }
    }
}
