//! The CLI's client: of the local daemon's admin API, or of a Kubernetes API server (where
//! the CLI admits objects itself, with the cluster's config-defaults, before writing them).

use std::path::PathBuf;

use anyhow::{Context, anyhow};
use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use k8s_openapi::api::core::v1::ConfigMap;
use serde_json::Value;
use sluice_api::config::{DefaultsConfig, FeaturesConfig};
use sluice_api::{Object, ObjectKind, Revision, Route, Service, keys};
use sluice_platform::{Store, StoreError};
use sluice_platform_kube::KubeStore;
use sluice_runtime::uds::{self, UdsError};

use sluice_platform::admission::{Platform, WriteError, Writer, write};
use sluice_platform_local::Home;

/// Talks to the daemon of one home, or to a cluster.
pub struct Client {
    backend: Backend,
}

enum Backend {
    Local {
        socket: PathBuf,
        home: PathBuf,
    },
    Kube {
        store: KubeStore,
        client: kube::Client,
    },
}

/// A write based on a resourceVersion that is no longer the stored one: read the object
/// again and re-apply the change.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Conflict(pub String);

/// The outcome of an apply.
pub struct Applied {
    /// `created`, `configured`, `unchanged` or `validated`.
    pub action: String,
    /// The object as stored.
    pub object: Object,
}

impl Client {
    /// A client of the daemon on `home`.
    pub fn new(home: &Home) -> Self {
        Self {
            backend: Backend::Local {
                socket: home.socket(),
                home: home.root().to_owned(),
            },
        }
    }

    /// A client of the cluster behind `client`.
    pub fn kube(client: kube::Client) -> Self {
        Self {
            backend: Backend::Kube {
                store: KubeStore::new(client.clone()),
                client,
            },
        }
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<(http::StatusCode, Value)> {
        let (status, body) = self.call_bytes(method, path, body).await?;
        let value = if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&body).context("admin API answered non-JSON")?
        };
        Ok((status, value))
    }

    /// [`Client::call`], the answer's body left as bytes.
    async fn call_bytes(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<(http::StatusCode, Bytes)> {
        let Backend::Local { socket, home } = &self.backend else {
            unreachable!("only the local platform has an admin API");
        };
        let bytes = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "sluice")
            .header("content-type", "application/json")
            .body(Full::new(bytes))?;
        let resp = uds::request(socket, req).await.map_err(|e| match e {
            UdsError::Connect { .. } => anyhow!(
                "no local platform is running on home {}; start it with `sluice local up` (or pass --home / set SLUICE_HOME), or pass --kubeconfig to use a cluster",
                home.display()
            ),
            other => anyhow!(other),
        })?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .context("reading the admin API's answer")?
            .to_bytes();
        Ok((status, body))
    }

    fn error(value: &Value) -> anyhow::Error {
        anyhow!(
            "{}",
            value
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("the admin API refused the request")
        )
    }

    /// Objects of a kind, in one namespace or all.
    pub async fn list(
        &self,
        kind: ObjectKind,
        namespace: Option<&str>,
    ) -> anyhow::Result<Vec<Object>> {
        if let Backend::Kube { store, .. } = &self.backend {
            return Ok(store.list(kind, namespace).await?);
        }
        let path = format!(
            "/v1/objects/{}?namespace={}",
            kind.plural(),
            namespace.unwrap_or("")
        );
        let (status, body) = self.call_bytes(Method::GET, &path, None).await?;
        if !status.is_success() {
            let value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            return Err(Self::error(&value));
        }
        Object::list_from_slice(kind, &body).context("admin API answered a list that is not one")
    }

    /// Services in a namespace.
    pub async fn services(&self, namespace: &str) -> anyhow::Result<Vec<Service>> {
        let objs = self.list(ObjectKind::Service, Some(namespace)).await?;
        Ok(objs
            .into_iter()
            .filter_map(|o| {
                if let Object::Service(x) = o {
                    Some(x)
                } else {
                    None
                }
            })
            .collect())
    }

    /// Revisions in a namespace, of one service when `service` is given.
    pub async fn revisions(
        &self,
        namespace: &str,
        service: Option<&str>,
    ) -> anyhow::Result<Vec<Revision>> {
        let objs = self.list(ObjectKind::Revision, Some(namespace)).await?;
        Ok(objs
            .into_iter()
            .filter_map(|o| {
                if let Object::Revision(x) = o {
                    Some(x)
                } else {
                    None
                }
            })
            .filter(|r| {
                service.is_none_or(|s| {
                    r.metadata
                        .labels
                        .as_ref()
                        .and_then(|l| l.get(keys::SERVICE))
                        .map(String::as_str)
                        == Some(s)
                })
            })
            .collect())
    }

    /// Routes in a namespace.
    pub async fn routes(&self, namespace: &str) -> anyhow::Result<Vec<Route>> {
        let objs = self.list(ObjectKind::Route, Some(namespace)).await?;
        Ok(objs
            .into_iter()
            .filter_map(|o| {
                if let Object::Route(x) = o {
                    Some(x)
                } else {
                    None
                }
            })
            .collect())
    }

    /// One object, if it exists.
    pub async fn get(
        &self,
        kind: ObjectKind,
        namespace: &str,
        name: &str,
    ) -> anyhow::Result<Option<Object>> {
        if let Backend::Kube { store, .. } = &self.backend {
            return Ok(store.get(kind, namespace, name).await?);
        }
        let path = format!("/v1/objects/{}/{namespace}/{name}", kind.plural());
        let (status, value) = self.call(Method::GET, &path, None).await?;
        match status {
            s if s.is_success() => Ok(Some(Object::from_json(kind, value)?)),
            http::StatusCode::NOT_FOUND => Ok(None),
            _ => Err(Self::error(&value)),
        }
    }

    /// Creates (`create_only`) or creates-or-replaces an object; `dry_run` only admits it.
    pub async fn apply(
        &self,
        obj: &Object,
        create_only: bool,
        dry_run: bool,
    ) -> anyhow::Result<Applied> {
        if let Backend::Kube { store, client } = &self.backend {
            let (defaults, features) = cluster_settings(client).await?;
            let user = sluice_runtime::user_name();
            let (action, object) = write(
                store,
                obj.clone(),
                create_only,
                dry_run,
                Writer {
                    defaults: &defaults,
                    features: &features.pod_spec,
                    user: &user,
                    platform: Platform::Kubernetes,
                },
            )
            .await
            .map_err(|e| match e {
                WriteError::Store(e @ StoreError::Conflict { .. }) => {
                    Conflict(e.to_string()).into()
                }
                other => anyhow::Error::from(other),
            })?;
            return Ok(Applied {
                action: action.to_owned(),
                object,
            });
        }
        let op = if create_only { "create" } else { "apply" };
        let path = if dry_run {
            format!("/v1/{op}?dryRun=true")
        } else {
            format!("/v1/{op}")
        };
        let (status, value) = self.call(Method::POST, &path, Some(&obj.to_json())).await?;
        if status == http::StatusCode::CONFLICT
            && value.get("reason").and_then(Value::as_str) == Some("Conflict")
        {
            return Err(Conflict(Self::error(&value).to_string()).into());
        }
        if !status.is_success() {
            return Err(Self::error(&value));
        }
        let action = value
            .get("action")
            .and_then(Value::as_str)
            .unwrap_or("configured")
            .to_owned();
        let object =
            Object::from_json(obj.kind(), value.get("object").cloned().unwrap_or_default())?;
        Ok(Applied { action, object })
    }

    /// Deletes an object; false when it did not exist.
    pub async fn delete(
        &self,
        kind: ObjectKind,
        namespace: &str,
        name: &str,
    ) -> anyhow::Result<bool> {
        if let Backend::Kube { store, .. } = &self.backend {
            return Ok(store.delete(kind, namespace, name).await?);
        }
        let path = format!("/v1/objects/{}/{namespace}/{name}", kind.plural());
        let (status, value) = self.call(Method::DELETE, &path, None).await?;
        match status {
            s if s.is_success() => Ok(true),
            http::StatusCode::NOT_FOUND => Ok(false),
            _ => Err(Self::error(&value)),
        }
    }

    /// The daemon's `/v1/info` (empty on a cluster: URLs are used as routes report them).
    pub async fn info(&self) -> anyhow::Result<Value> {
        if let Backend::Kube { .. } = &self.backend {
            return Ok(Value::Object(Default::default()));
        }
        let (status, value) = self.call(Method::GET, "/v1/info", None).await?;
        if !status.is_success() {
            return Err(Self::error(&value));
        }
        Ok(value)
    }
}

/// The cluster's config-defaults (Knative's defaults when it has none).
async fn cluster_settings(
    client: &kube::Client,
) -> anyhow::Result<(DefaultsConfig, FeaturesConfig)> {
    let maps: kube::Api<ConfigMap> =
        kube::Api::namespaced(client.clone(), sluice_platform_kube::SYSTEM_NAMESPACE);
    let data = |name: &'static str| {
        let maps = maps.clone();
        async move {
            anyhow::Ok(
                maps.get_opt(name)
                    .await
                    .with_context(|| format!("reading {name}"))?
                    .and_then(|cm| cm.data)
                    .unwrap_or_default(),
            )
        }
    };
    Ok((
        DefaultsConfig::parse(&data(DefaultsConfig::NAME).await?)?,
        FeaturesConfig::parse(&data(FeaturesConfig::NAME).await?)?,
    ))
}
