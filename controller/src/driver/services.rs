//! Services: their Configuration and Route kept as the service says, objects whose owner is
//! gone deleted, and each service's status from its children.

use std::collections::HashMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use sluice_api::config::DefaultsConfig;
use sluice_api::{Configuration, Object, ObjectKind, Revision, Route, Service};
use sluice_platform::{Store, StoreError, Workloads};

use super::{Controller, typed};
use crate::{plan, rollout, service};

fn same_metadata(a: &ObjectMeta, b: &ObjectMeta) -> bool {
    a.labels == b.labels
        && a.annotations == b.annotations
        && a.owner_references == b.owner_references
}

impl<S: Store, W: Workloads> Controller<S, W> {
    /// Creates or updates every service's configuration and route.
    pub(super) async fn sync_service_children(
        &self,
        services: &[Service],
        defaults: &DefaultsConfig,
    ) -> Result<(), StoreError> {
        for svc in services {
            let ns = svc.metadata.namespace.as_deref().unwrap_or("default");
            let name = svc.metadata.name.as_deref().unwrap_or_default();
            let want = service::desired_configuration(svc, defaults);
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
    pub(super) async fn delete_orphans(&self, services: &[Service]) -> Result<(), StoreError> {
        let configurations: Vec<Configuration> = typed!(
            self.store.list(ObjectKind::Configuration, None).await?,
            Configuration
        );
        let routes: Vec<Route> = typed!(self.store.list(ObjectKind::Route, None).await?, Route);
        let revisions: Vec<Revision> =
            typed!(self.store.list(ObjectKind::Revision, None).await?, Revision);
        for orphan in plan::orphans(services, &configurations, &routes, &revisions) {
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
