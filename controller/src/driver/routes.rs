//! Routes: each route's gradual rollout started, stepped or ended, and its status from the
//! traffic it resolves.

use std::collections::HashMap;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use sluice_api::config::{Configs, NetworkConfig};
use sluice_api::{Configuration, Object, Revision, Route};
use sluice_platform::{Store, StoreError, Workloads};

use super::Controller;
use super::scope::Group;
use crate::{plan, rollout, route};

impl<S: Store, W: Workloads> Controller<S, W> {
    /// Rolls and resolves every route; returns each rolling route's group with how soon its
    /// next rollout step is due.
    pub(super) async fn sync_routes(
        &self,
        routes: &mut [Route],
        configurations: &[Configuration],
        revisions: &[Revision],
        settings: &Configs,
    ) -> Result<Vec<(Group, Duration)>, StoreError> {
        let mut steps = Vec::new();
        let id = |m: &ObjectMeta| {
            (
                m.namespace.clone().unwrap_or_else(|| "default".to_owned()),
                m.name.clone().unwrap_or_default(),
            )
        };
        let config_index: HashMap<_, _> = configurations
            .iter()
            .map(|c| (id(&c.metadata), c))
            .collect();
        let revision_index: HashMap<_, _> =
            revisions.iter().map(|r| (id(&r.metadata), r)).collect();
        for rt in routes.iter_mut() {
            // What this route can reach: the configurations its traffic names and the
            // revisions its traffic or their status names (a pass stays linear in objects).
            let (configurations, revisions) = reachable_from(rt, &config_index, &revision_index);
            let (configurations, revisions) = (&configurations[..], &revisions[..]);
            let domain = settings
                .domain
                .domain_for(&crate::meta::labels(&rt.metadata))
                .to_owned();
            let now = self.clock.now();
            let rolling = self
                .sync_rollout(rt, configurations, &settings.network, now)
                .await?;
            if let Some(step) = rolling.as_ref().and_then(|r| r.next_step(now)) {
                steps.push((id(&rt.metadata), step));
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
        Ok(steps)
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

type Index<'a, T> = HashMap<(String, String), &'a T>;

/// The configurations `rt`'s traffic names, and the revisions named by its traffic or as
/// those configurations' latest created and latest ready, all in its namespace.
fn reachable_from(
    rt: &Route,
    configurations: &Index<'_, Configuration>,
    revisions: &Index<'_, Revision>,
) -> (Vec<Configuration>, Vec<Revision>) {
    let ns = rt
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".to_owned());
    let key = |name: &str| (ns.clone(), name.to_owned());
    let configs: Vec<Configuration> = rt
        .spec
        .traffic
        .iter()
        .filter_map(|t| t.configuration_name.as_deref())
        .filter_map(|name| configurations.get(&key(name)).map(|c| (*c).clone()))
        .collect();
    let mut names: Vec<&str> = rt
        .spec
        .traffic
        .iter()
        .filter_map(|t| t.revision_name.as_deref())
        .collect();
    for c in &configs {
        if let Some(st) = &c.status {
            names.extend(st.fields.latest_created_revision_name.as_deref());
            names.extend(st.fields.latest_ready_revision_name.as_deref());
        }
    }
    names.sort_unstable();
    names.dedup();
    let revs = names
        .into_iter()
        .filter_map(|name| revisions.get(&key(name)).map(|r| (*r).clone()))
        .collect();
    (configs, revs)
}
