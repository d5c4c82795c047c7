//! Routes: each route's gradual rollout started, stepped or ended, and its status from the
//! traffic it resolves.

use std::time::Duration;

use sluice_api::config::{Configs, NetworkConfig};
use sluice_api::{Configuration, Object, Revision, Route};
use sluice_platform::{Store, StoreError, Workloads};

use super::Controller;
use crate::{plan, rollout, route};

impl<S: Store, W: Workloads> Controller<S, W> {
    /// Rolls and resolves every route; returns how soon the next rollout step is due.
    pub(super) async fn sync_routes(
        &self,
        routes: &mut [Route],
        configurations: &[Configuration],
        revisions: &[Revision],
        settings: &Configs,
    ) -> Result<Option<Duration>, StoreError> {
        let mut requeue: Option<Duration> = None;
        for rt in routes.iter_mut() {
            let domain = settings
                .domain
                .domain_for(&crate::meta::labels(&rt.metadata))
                .to_owned();
            let now = self.clock.now();
            let rolling = self
                .sync_rollout(rt, configurations, &settings.network, now)
                .await?;
            if let Some(step) = rolling.as_ref().and_then(|r| r.next_step(now)) {
                requeue = Some(requeue.map_or(step, |d: Duration| d.min(step)));
            }
            let status = route::status(
                rt,
                configurations,
                revisions,
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
        Ok(requeue)
    }

    /// Starts, keeps or ends the route's gradual rollout, recording it on the route.
    async fn sync_rollout(
        &self,
        rt: &mut Route,
        configurations: &[Configuration],
        net: &NetworkConfig,
        now: jiff::Timestamp,
    ) -> Result<Option<rollout::Rollout>, StoreError> {
        let recorded = rollout::recorded(rt);
        let target = plan::rollout_target(rt, configurations);
        let next = match (&target.configuration, &target.latest_ready) {
            (Some(cfg), Some(latest)) => rollout::next(
                recorded.clone(),
                cfg,
                target.previous.as_deref(),
                latest,
                rollout::duration(rt, net),
                now,
            ),
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
}
