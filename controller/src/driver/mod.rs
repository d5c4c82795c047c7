//! The driver: reads objects through the [`Store`], asks the [`plan`](crate::plan) and the
//! pure reconcilers what they should be, writes back only what changed, keeps workloads in
//! step with revisions, and publishes the routing snapshot. Level-triggered: any change to
//! objects, replicas or config runs a full pass. Time comes from its [`Clock`].
//!
//! A pass goes one way, kind by kind: [`services`] (children, orphans), [`revisions`]
//! (create, routing state, workloads, status, config-gc, configuration status), [`routes`]
//! (rollouts, status), services' status, then the routing snapshot.

mod fast;
mod revisions;
mod routes;
mod services;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sluice_api::config::Configs;
use sluice_api::{Object, ObjectKind};
use sluice_platform::routing::RoutingSnapshot;
use sluice_platform::{Clock, Store, StoreError, Workloads};
use tokio::sync::watch;

use crate::autoscaling::Autoscaler;
use crate::routing;
use fast::FastPath;

/// Runs the reconcilers over a store and a workload runner.
pub struct Controller<S, W> {
    store: Arc<S>,
    workloads: Arc<W>,
    autoscaler: Arc<Autoscaler>,
    settings: watch::Receiver<Arc<Configs>>,
    clock: Arc<dyn Clock>,
    fast: Arc<FastPath<W>>,
    /// Whether the last pass saw a revision still deploying (its progress deadline is timed).
    deploying: AtomicBool,
}

/// The next pass with nothing timed, while a revision deploys: its progress deadline and
/// status are time-driven.
const DEPLOYING_REQUEUE: Duration = Duration::from_secs(5);

/// The next pass with nothing timed and nothing deploying: every other change (objects,
/// replicas, scale, config) wakes the driver itself, so this is only a safety net, and an idle
/// daemon with many Services does not re-read them all every few seconds.
const IDLE_REQUEUE: Duration = Duration::from_secs(60);

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
    /// A controller publishing routing snapshots to `snapshot`, reading time from `clock`.
    pub fn new(
        store: Arc<S>,
        workloads: Arc<W>,
        autoscaler: Arc<Autoscaler>,
        settings: watch::Receiver<Arc<Configs>>,
        snapshot: watch::Sender<Arc<RoutingSnapshot>>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let fast = Arc::new(FastPath::new(
            workloads.clone(),
            autoscaler.clone(),
            snapshot,
        ));
        Self {
            store,
            workloads,
            autoscaler,
            settings,
            clock,
            fast,
            deploying: AtomicBool::new(false),
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
                Ok(requeue) => requeue.unwrap_or(if self.deploying.load(Ordering::Relaxed) {
                    DEPLOYING_REQUEUE
                } else {
                    IDLE_REQUEUE
                }),
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
        let services = typed!(self.store.list(ObjectKind::Service, None).await?, Service);
        self.sync_service_children(&services, &settings.defaults)
            .await?;
        self.delete_orphans(&services).await?;

        let scaled = self.sync_revisions(&settings).await?;
        let mut routes = typed!(self.store.list(ObjectKind::Route, None).await?, Route);
        let requeue = self
            .sync_routes(
                &mut routes,
                &scaled.configurations,
                &scaled.revisions,
                &settings,
            )
            .await?;
        self.sync_service_status(&services, &scaled.configurations, &routes)
            .await?;

        let deploying = scaled.revisions.iter().any(|r| {
            r.ready_condition()
                .is_none_or(|c| c.status == sluice_api::ConditionStatus::Unknown)
        });
        self.deploying.store(deploying, Ordering::Relaxed);

        let tag_headers = settings.features.tag_header_based_routing;
        let snapshot = routing::snapshot(&routes, &scaled.revisions, tag_headers, |key| {
            let endpoints = self.workloads.status(key).map(|s| s.endpoints);
            (endpoints.unwrap_or_default(), scaled.buffered.contains(key))
        });
        self.fast.publish(snapshot);
        // A replica may have turned ready (or gone) since the endpoints above were read.
        self.fast.refresh_endpoints();
        Ok(requeue)
    }
}

#[cfg(test)]
mod tests;
