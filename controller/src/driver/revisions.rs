//! Revisions and configurations: each configuration's current revision created, Knative's
//! routing-state label kept, every revision's workload in step with its autoscaler, revision
//! status from what the workload reports, config-gc, and configuration status.

use std::collections::{HashMap, HashSet};

use sluice_api::config::Configs;
use sluice_api::{Configuration, Object, ObjectKind, Revision, keys};
use sluice_platform::{RevisionKey, Store, StoreError, Workloads};

use super::{Controller, typed};
use crate::meta::transition_time;
use crate::{configuration, gc, plan, revision};

/// What the rest of a pass needs from this part of it.
pub(super) struct Revisions {
    /// Every configuration, its status as written.
    pub(super) configurations: Vec<Configuration>,
    /// Every revision left after config-gc, its status as written.
    pub(super) revisions: Vec<Revision>,
    /// Revisions whose spare capacity is below their burst capacity: the activator buffers.
    pub(super) buffered: HashSet<RevisionKey>,
}

impl<S: Store, W: Workloads> Controller<S, W> {
    pub(super) async fn sync_revisions(&self, settings: &Configs) -> Result<Revisions, StoreError> {
        let mut configurations: Vec<Configuration> = typed!(
            self.store.list(ObjectKind::Configuration, None).await?,
            Configuration
        );
        let mut revisions: Vec<Revision> =
            typed!(self.store.list(ObjectKind::Revision, None).await?, Revision);
        for want in plan::missing_revisions(&configurations, &revisions) {
            tracing::info!(revision = %revision::key(&want), "Creating revision.");
            match self.store.create(Object::Revision(want)).await? {
                Object::Revision(r) => revisions.push(r),
                _ => unreachable!("store returns the kind it was given"),
            }
        }

        let routes = typed!(self.store.list(ObjectKind::Route, None).await?, Route);
        let routed = plan::routed(&routes);
        let reachable = plan::reachable(&routed, &configurations);
        self.mark_routing_state(&mut revisions, &routed).await?;
        let live: HashSet<RevisionKey> = revisions.iter().map(revision::key).collect();
        self.fast.keep_only(&live).await;

        // Reachable revisions scale on demand; unreachable ones stop at once (nothing can
        // send them a request any more), whatever their min-scale.
        let now = self.clock.now();
        let mut scaled = HashSet::new();
        let mut buffered = HashSet::new();
        for rev in &mut revisions {
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
        self.autoscaler.retain(&scaled);

        let garbage = plan::garbage(&configurations, &revisions, &routed, &settings.gc, now);
        for key in &garbage {
            tracing::info!(revision = %key, "Garbage-collecting revision (config-gc).");
            self.store
                .delete(ObjectKind::Revision, &key.namespace, &key.name)
                .await?;
        }
        revisions.retain(|r| !garbage.contains(&revision::key(r)));

        // Each configuration's own revisions, found in one pass over them.
        let mut owned: HashMap<(String, String), Vec<&Revision>> = HashMap::new();
        for rev in &revisions {
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
        for cfg in &mut configurations {
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
        Ok(Revisions {
            configurations,
            revisions,
            buffered,
        })
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
