//! Revisions and configurations: each configuration's current revision created, Knative's
//! routing-state label kept, every revision's workload in step with its autoscaler, revision
//! status from what the workload reports, config-gc, and configuration status.

use std::collections::{HashMap, HashSet};

use sluice_api::config::Configs;
use sluice_api::{Object, ObjectKind, Revision, keys};
use sluice_platform::{RevisionKey, Store, StoreError, Workloads};

use super::Controller;
use super::scope::Objects;
use crate::meta::transition_time;
use crate::{configuration, gc, plan, revision};

impl<S: Store, W: Workloads> Controller<S, W> {
    /// Creates missing revisions, keeps routing state, workloads, status and config-gc of the
    /// revisions in `objs`, and the configurations' status, in the store and in `objs`.
    /// `before` holds the revisions a scoped pass's groups had before it (`None`: a pass over
    /// everything, which stops any workload or scaler no revision has). Returns the revisions
    /// whose spare capacity is below their burst capacity: the activator buffers for them.
    pub(super) async fn sync_revisions(
        &self,
        objs: &mut Objects,
        before: Option<&HashSet<RevisionKey>>,
        settings: &Configs,
    ) -> Result<HashSet<RevisionKey>, StoreError> {
        let Objects {
            configurations,
            routes,
            revisions,
            ..
        } = objs;
        for want in plan::missing_revisions(configurations, revisions) {
            tracing::info!(revision = %revision::key(&want), "Creating revision.");
            match self.store.create(Object::Revision(want)).await? {
                Object::Revision(r) => revisions.push(r),
                _ => unreachable!("store returns the kind it was given"),
            }
        }

        let routed = plan::routed(routes);
        let reachable = plan::reachable(&routed, configurations);
        self.mark_routing_state(revisions, &routed).await?;

        // Reachable revisions scale on demand; unreachable ones stop at once (nothing can
        // send them a request any more), whatever their min-scale.
        let now = self.clock.now();
        let mut scaled = HashSet::new();
        let mut buffered = HashSet::new();
        for rev in revisions.iter_mut() {
            let key = revision::key(rev);
            let scale = reachable.contains(&key).then(|| {
                let spec = revision::scaler_spec(rev, &settings.autoscaler);
                let before = rev
                    .status
                    .as_ref()
                    .and_then(|s| s.desired_replicas)
                    .and_then(|d| u32::try_from(d).ok());
                self.autoscaler.sync(&key, spec, before)
            });
            if let Some(scale) = scale {
                scaled.insert(key.clone());
                if scale.excess_burst_capacity < 0.0 {
                    buffered.insert(key.clone());
                }
            }
            let spec = revision::workload_spec(rev, scale.map_or(0, |s| s.desired));
            self.fast.ensure_if_changed(spec).await;
            let status = revision::status(
                rev,
                self.workloads.status(&key).as_ref(),
                scale.map(|s| s.activity),
                now,
            );
            if rev.status.as_ref() != Some(&status) {
                rev.status = Some(status);
                self.store
                    .update_status(Object::Revision(rev.clone()))
                    .await?;
            }
        }

        let garbage = plan::garbage(configurations, revisions, &routed, &settings.gc, now);
        for key in &garbage {
            tracing::info!(revision = %key, "Garbage-collecting revision (config-gc).");
            self.store
                .delete(ObjectKind::Revision, &key.namespace, &key.name)
                .await?;
        }
        revisions.retain(|r| !garbage.contains(&revision::key(r)));
        let live: HashSet<RevisionKey> = revisions.iter().map(revision::key).collect();
        scaled.retain(|k| live.contains(k));
        match before {
            None => {
                self.fast.keep_only(&live).await;
                self.autoscaler.retain(&scaled);
            }
            Some(before) => {
                let gone: Vec<RevisionKey> = before.difference(&live).cloned().collect();
                self.fast.stop(&gone).await;
                let unscaled: Vec<RevisionKey> = before
                    .union(&live)
                    .filter(|k| !scaled.contains(*k))
                    .cloned()
                    .collect();
                self.autoscaler.forget(&unscaled);
            }
        }

        // Each configuration's own revisions, found in one pass over them.
        let mut owned: HashMap<(String, String), Vec<&Revision>> = HashMap::new();
        for rev in revisions.iter() {
            if let Some(owner) = rev
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(keys::CONFIGURATION))
            {
                let ns = rev.metadata.namespace.clone().unwrap_or_default();
                owned.entry((ns, owner.clone())).or_default().push(rev);
            }
        }
        for cfg in configurations.iter_mut() {
            let id = (
                cfg.metadata.namespace.clone().unwrap_or_default(),
                cfg.metadata.name.clone().unwrap_or_default(),
            );
            let own = owned.get(&id).map_or(&[][..], Vec::as_slice);
            let status = configuration::status(cfg, own.iter().copied(), now);
            if cfg.status.as_ref() != Some(&status) {
                cfg.status = Some(status);
                self.store
                    .update_status(Object::Configuration(cfg.clone()))
                    .await?;
            }
        }
        Ok(buffered)
    }

    /// Keeps Knative's `routingState` label and the time it last changed, which config-gc
    /// reads as the last-active time.
    async fn mark_routing_state(
        &self,
        revisions: &mut [Revision],
        routed: &HashSet<RevisionKey>,
    ) -> Result<(), StoreError> {
        for rev in revisions.iter_mut() {
            let want = plan::routing_state(rev, routed);
            if plan::has_routing_state(rev, want) {
                continue;
            }
            rev.metadata
                .labels
                .get_or_insert_with(Default::default)
                .insert(keys::ROUTING_STATE.to_owned(), want.to_owned());
            rev.metadata
                .annotations
                .get_or_insert_with(Default::default)
                .insert(
                    gc::ROUTING_STATE_MODIFIED.to_owned(),
                    transition_time(self.clock.now()),
                );
            let mut next = rev.clone();
            next.metadata.resource_version = None;
            if let Object::Revision(stored) = self.store.update(Object::Revision(next)).await? {
                *rev = stored;
            }
        }
        Ok(())
    }
}
