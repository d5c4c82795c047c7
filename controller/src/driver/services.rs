//! Services: their Configuration and Route kept as the service says, objects whose owner is
//! gone deleted, and each service's status from its children.

use std::collections::{HashMap, HashSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use sluice_api::config::DefaultsConfig;
use sluice_api::{Configuration, Object, ObjectKind, Route, Service};
use sluice_platform::{Store, StoreError, Workloads};

use super::scope::Objects;
use super::{Controller, typed};
use crate::{plan, rollout, service};

fn same_metadata(a: &ObjectMeta, b: &ObjectMeta) -> bool {
    a.labels == b.labels
        && a.annotations == b.annotations
        && a.owner_references == b.owner_references
}

/// Puts `obj` in place of the same-named one in `objs` (found through `at`), or adds it.
fn upsert<T>(
    objs: &mut Vec<T>,
    at: &HashMap<(String, String), usize>,
    obj: T,
    meta: impl Fn(&T) -> &ObjectMeta,
) {
    match at.get(&id(meta(&obj))) {
        Some(&i) => objs[i] = obj,
        None => objs.push(obj),
    }
}

/// Where each object of `objs` is, by namespace and name.
fn positions<T>(objs: &[T], meta: impl Fn(&T) -> &ObjectMeta) -> HashMap<(String, String), usize> {
    objs.iter()
        .enumerate()
        .map(|(i, o)| (id(meta(o)), i))
        .collect()
}

fn id(m: &ObjectMeta) -> (String, String) {
    (
        m.namespace.clone().unwrap_or_else(|| "default".to_owned()),
        m.name.clone().unwrap_or_default(),
    )
}

impl<S: Store, W: Workloads> Controller<S, W> {
    /// Creates or updates every service's configuration and route, in the store and in `objs`.
    pub(super) async fn sync_service_children(
        &self,
        objs: &mut Objects,
        defaults: &DefaultsConfig,
    ) -> Result<(), StoreError> {
        let configurations = positions(&objs.configurations, |c| &c.metadata);
        let routes = positions(&objs.routes, |r| &r.metadata);
        let mut written_configurations = Vec::new();
        let mut written_routes = Vec::new();
        for svc in &objs.services {
            let key = id(&svc.metadata);
            let want = service::desired_configuration(svc, defaults);
            let have = configurations.get(&key).map(|&i| &objs.configurations[i]);
            match have {
                None => {
                    written_configurations
                        .push(self.store.create(Object::Configuration(want)).await?);
                }
                Some(have)
                    if have.spec != want.spec || !same_metadata(&have.metadata, &want.metadata) =>
                {
                    let mut next = want;
                    next.metadata.resource_version = have.metadata.resource_version.clone();
                    written_configurations
                        .push(self.store.update(Object::Configuration(next)).await?);
                }
                Some(_) => {}
            }
            let mut want = service::desired_route(svc);
            let have = routes.get(&key).map(|&i| &objs.routes[i]);
            // The rollout in progress is the route's own state, not the service's intent.
            if let Some(have) = have
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
                    written_routes.push(self.store.create(Object::Route(want)).await?);
                }
                Some(have)
                    if have.spec != want.spec || !same_metadata(&have.metadata, &want.metadata) =>
                {
                    let mut next = want;
                    next.metadata.resource_version = have.metadata.resource_version.clone();
                    written_routes.push(self.store.update(Object::Route(next)).await?);
                }
                Some(_) => {}
            }
        }
        for c in typed!(written_configurations, Configuration) {
            upsert(&mut objs.configurations, &configurations, c, |c| {
                &c.metadata
            });
        }
        for r in typed!(written_routes, Route) {
            upsert(&mut objs.routes, &routes, r, |r| &r.metadata);
        }
        Ok(())
    }

    /// Deletes objects whose controlling owner is gone (Kubernetes' garbage collector), from
    /// the store and from `objs`.
    pub(super) async fn delete_orphans(&self, objs: &mut Objects) -> Result<(), StoreError> {
        let orphans = plan::orphans(
            &objs.services,
            &objs.configurations,
            &objs.routes,
            &objs.revisions,
        );
        for orphan in &orphans {
            let owner = if orphan.kind == ObjectKind::Revision {
                "Configuration"
            } else {
                "Service"
            };
            tracing::info!(kind = ?orphan.kind, namespace = %orphan.namespace, name = %orphan.name, "Deleting: its {owner} is gone.");
            self.store
                .delete(orphan.kind, &orphan.namespace, &orphan.name)
                .await?;
        }
        let gone: HashSet<(ObjectKind, (String, String))> = orphans
            .into_iter()
            .map(|o| (o.kind, (o.namespace, o.name)))
            .collect();
        let kept = |kind, meta: &ObjectMeta| !gone.contains(&(kind, id(meta)));
        objs.configurations
            .retain(|c| kept(ObjectKind::Configuration, &c.metadata));
        objs.routes.retain(|r| kept(ObjectKind::Route, &r.metadata));
        objs.revisions
            .retain(|r| kept(ObjectKind::Revision, &r.metadata));
        Ok(())
    }

    /// Each service's status from its configuration and route (in its own namespace).
    pub(super) async fn sync_service_status(
        &self,
        services: &[Service],
        configurations: &[Configuration],
        routes: &[Route],
    ) -> Result<(), StoreError> {
        let now = self.clock.now();
        let id = |m: &'_ ObjectMeta| (m.namespace.clone(), m.name.clone());
        let configurations: HashMap<_, _> = configurations
            .iter()
            .map(|c| (id(&c.metadata), c))
            .collect();
        let routes: HashMap<_, _> = routes.iter().map(|r| (id(&r.metadata), r)).collect();
        for svc in services {
            let key = id(&svc.metadata);
            let cfg = configurations.get(&key).copied();
            let rt = routes.get(&key).copied();
            let status = service::status(svc, cfg, rt, now);
            if svc.status.as_ref() != Some(&status) {
                let mut next = svc.clone();
                next.status = Some(status);
                self.store.update_status(Object::Service(next)).await?;
            }
        }
        Ok(())
    }
}
