//! [`Store`] on a Kubernetes API server: the four Knative kinds as custom resources. Specs are
//! replaced with PUT (resourceVersion checked when given); statuses are written with
//! server-side apply under one field manager, so only fields Sluice owns change. A watch on
//! every kind drives reconciles.

use std::fmt::Debug;

use futures_util::StreamExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::core::NamespaceResourceScope;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sluice_api::{Configuration, Object, ObjectKind, Revision, Route, Service};
use tokio::sync::watch;

use sluice_platform::store::{Store, StoreError};

/// The field manager of everything Sluice writes.
pub const FIELD_MANAGER: &str = "sluice";

/// Objects on a Kubernetes API server.
#[derive(Clone)]
pub struct KubeStore {
    client: Client,
    changes: watch::Sender<u64>,
}

impl KubeStore {
    /// A store over `client`. Call [`KubeStore::watch`] to have [`Store::changes`] fire.
    pub fn new(client: Client) -> Self {
        Self {
            client,
            changes: watch::channel(0).0,
        }
    }

    /// Follows every kind until the process ends, bumping the change signal on each event;
    /// a failed watch is retried with backoff.
    pub fn watch(&self) {
        fn follow<K: Knative>(store: &KubeStore) {
            let api: Api<K> = Api::all(store.client.clone());
            let changes = store.changes.clone();
            tokio::spawn(async move {
                let mut events = watcher(api, watcher::Config::default())
                    .default_backoff()
                    .boxed();
                while let Some(event) = events.next().await {
                    match event {
                        Ok(_) => changes.send_modify(|v| *v += 1),
                        Err(error) => tracing::warn!(%error, "Watch failed; retrying."),
                    }
                }
            });
        }
        follow::<Service>(self);
        follow::<Configuration>(self);
        follow::<Route>(self);
        follow::<Revision>(self);
    }
}

fn backend(e: impl Into<sluice_platform::store::BoxError>) -> StoreError {
    StoreError::Backend(e.into())
}

fn status_code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}

/// One of the Knative kinds, as the store handles it.
trait Knative:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + DeserializeOwned
    + Serialize
    + Debug
    + Send
    + Sync
    + 'static
{
    fn into_object(self) -> Object;
}

macro_rules! knative {
    ($($t:ident),*) => {$(
        impl Knative for $t {
            fn into_object(self) -> Object {
                Object::$t(self)
            }
        }
    )*};
}
knative!(Service, Configuration, Route, Revision);

fn api<K: Knative>(client: &Client, namespace: Option<&str>) -> Api<K> {
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// One kind's operations, typed.
struct Kind<'a> {
    client: &'a Client,
    kind: ObjectKind,
}

impl Kind<'_> {
    fn not_found(&self, namespace: &str, name: &str) -> StoreError {
        StoreError::NotFound {
            kind: self.kind,
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }
    }

    /// A failed write as a store error; `have` is the resourceVersion an update sent (`None`
    /// for a create, where 409 means the name is taken).
    fn map_write(
        &self,
        e: kube::Error,
        namespace: &str,
        name: &str,
        have: Option<&str>,
    ) -> StoreError {
        match (status_code(&e), have) {
            (Some(404), _) => self.not_found(namespace, name),
            (Some(409), None) => StoreError::AlreadyExists {
                kind: self.kind,
                namespace: namespace.to_owned(),
                name: name.to_owned(),
            },
            (Some(409), Some(have)) => StoreError::Conflict {
                kind: self.kind,
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                have: have.to_owned(),
                stored: "a newer one".to_owned(),
            },
            _ => backend(e),
        }
    }

    async fn get<K: Knative>(&self, namespace: &str, name: &str) -> Result<Option<K>, StoreError> {
        api::<K>(self.client, Some(namespace))
            .get_opt(name)
            .await
            .map_err(backend)
    }

    async fn list<K: Knative>(&self, namespace: Option<&str>) -> Result<Vec<K>, StoreError> {
        let mut items = api::<K>(self.client, namespace)
            .list(&ListParams::default())
            .await
            .map_err(backend)?
            .items;
        items.sort_by(|a, b| {
            let key = |o: &K| (o.meta().namespace.clone(), o.meta().name.clone());
            key(a).cmp(&key(b))
        });
        Ok(items)
    }

    async fn create<K: Knative>(&self, obj: &K) -> Result<K, StoreError> {
        let (ns, name) = names(obj);
        api::<K>(self.client, Some(&ns))
            .create(&PostParams::default(), obj)
            .await
            .map_err(|e| self.map_write(e, &ns, &name, None))
    }

    async fn update<K: Knative>(&self, obj: &K) -> Result<K, StoreError> {
        let (ns, name) = names(obj);
        let have = obj.meta().resource_version.clone();
        let api = api::<K>(self.client, Some(&ns));
        let mut obj = obj.clone();
        if have.is_none() {
            // Unconditional: replace what is stored now.
            let stored = api
                .get_opt(&name)
                .await
                .map_err(backend)?
                .ok_or_else(|| self.not_found(&ns, &name))?;
            obj.meta_mut().resource_version = stored.meta().resource_version.clone();
        }
        api.replace(&name, &PostParams::default(), &obj)
            .await
            .map_err(|e| self.map_write(e, &ns, &name, Some(have.as_deref().unwrap_or("(none)"))))
    }

    async fn update_status<K: Knative>(&self, obj: &K) -> Result<K, StoreError> {
        let (ns, name) = names(obj);
        let status = serde_json::to_value(obj).map_err(backend)?["status"].take();
        let patch = serde_json::json!({
            "apiVersion": K::api_version(&()),
            "kind": K::kind(&()),
            "status": status,
        });
        api::<K>(self.client, Some(&ns))
            .patch_status(
                &name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .await
            .map_err(|e| self.map_write(e, &ns, &name, Some("(status)")))
    }

    async fn delete<K: Knative>(&self, namespace: &str, name: &str) -> Result<bool, StoreError> {
        match api::<K>(self.client, Some(namespace))
            .delete(name, &DeleteParams::background())
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if status_code(&e) == Some(404) => Ok(false),
            Err(e) => Err(backend(e)),
        }
    }
}

fn names<K: Resource>(obj: &K) -> (String, String) {
    let m = obj.meta();
    (
        m.namespace.clone().unwrap_or_else(|| "default".to_owned()),
        m.name.clone().unwrap_or_default(),
    )
}

/// Runs `$body` with `$T` bound to the Rust type of `$kind`.
macro_rules! by_kind {
    ($kind:expr, $T:ident => $body:expr) => {
        match $kind {
            ObjectKind::Service => {
                type $T = Service;
                $body
            }
            ObjectKind::Configuration => {
                type $T = Configuration;
                $body
            }
            ObjectKind::Route => {
                type $T = Route;
                $body
            }
            ObjectKind::Revision => {
                type $T = Revision;
                $body
            }
        }
    };
}

impl Store for KubeStore {
    async fn get(
        &self,
        kind: ObjectKind,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Object>, StoreError> {
        let k = Kind {
            client: &self.client,
            kind,
        };
        by_kind!(kind, T => Ok(k.get::<T>(namespace, name).await?.map(Knative::into_object)))
    }

    async fn list(
        &self,
        kind: ObjectKind,
        namespace: Option<&str>,
    ) -> Result<Vec<Object>, StoreError> {
        let k = Kind {
            client: &self.client,
            kind,
        };
        by_kind!(kind, T => Ok(k.list::<T>(namespace).await?.into_iter().map(Knative::into_object).collect()))
    }

    async fn create(&self, obj: Object) -> Result<Object, StoreError> {
        let k = Kind {
            client: &self.client,
            kind: obj.kind(),
        };
        Ok(match obj {
            Object::Service(o) => k.create(&o).await?.into_object(),
            Object::Configuration(o) => k.create(&o).await?.into_object(),
            Object::Route(o) => k.create(&o).await?.into_object(),
            Object::Revision(o) => k.create(&o).await?.into_object(),
        })
    }

    async fn update(&self, obj: Object) -> Result<Object, StoreError> {
        let k = Kind {
            client: &self.client,
            kind: obj.kind(),
        };
        Ok(match obj {
            Object::Service(o) => k.update(&o).await?.into_object(),
            Object::Configuration(o) => k.update(&o).await?.into_object(),
            Object::Route(o) => k.update(&o).await?.into_object(),
            Object::Revision(o) => k.update(&o).await?.into_object(),
        })
    }

    async fn update_status(&self, obj: Object) -> Result<Object, StoreError> {
        let k = Kind {
            client: &self.client,
            kind: obj.kind(),
        };
        Ok(match obj {
            Object::Service(o) => k.update_status(&o).await?.into_object(),
            Object::Configuration(o) => k.update_status(&o).await?.into_object(),
            Object::Route(o) => k.update_status(&o).await?.into_object(),
            Object::Revision(o) => k.update_status(&o).await?.into_object(),
        })
    }

    async fn delete(
        &self,
        kind: ObjectKind,
        namespace: &str,
        name: &str,
    ) -> Result<bool, StoreError> {
        let k = Kind {
            client: &self.client,
            kind,
        };
        by_kind!(kind, T => k.delete::<T>(namespace, name).await)
    }

    fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }
}
