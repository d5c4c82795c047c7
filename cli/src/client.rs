//! The CLI's client of the local daemon's admin API.

use std::path::PathBuf;

use anyhow::{Context, anyhow};
use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use serde_json::Value;
use sluice_crds::{Object, ObjectKind, Revision, Route, Service, keys};
use sluice_platform::local::uds::{self, UdsError};

use crate::home::Home;

/// Talks to the daemon of one home.
pub struct Client {
    socket: PathBuf,
    home: PathBuf,
}

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
            socket: home.socket(),
            home: home.root().to_owned(),
        }
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<(http::StatusCode, Value)> {
        let bytes = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "sluice")
            .header("content-type", "application/json")
            .body(Full::new(bytes))?;
        let resp = uds::request(&self.socket, req).await.map_err(|e| match e {
            UdsError::Connect { .. } => anyhow!(
                "no local platform is running on home {}; start it with `sluice local up` (or pass --home / set SLUICE_HOME)",
                self.home.display()
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
        let value = if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&body).context("admin API answered non-JSON")?
        };
        Ok((status, value))
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
        let path = format!(
            "/v1/objects/{}?namespace={}",
            kind.plural(),
            namespace.unwrap_or("")
        );
        let (status, value) = self.call(Method::GET, &path, None).await?;
        if !status.is_success() {
            return Err(Self::error(&value));
        }
        let items = value
            .get("items")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        items
            .into_iter()
            .map(|v| Object::from_json(kind, v).map_err(Into::into))
            .collect()
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
        let op = if create_only { "create" } else { "apply" };
        let path = if dry_run {
            format!("/v1/{op}?dryRun=true")
        } else {
            format!("/v1/{op}")
        };
        let (status, value) = self.call(Method::POST, &path, Some(&obj.to_json())).await?;
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
        let path = format!("/v1/objects/{}/{namespace}/{name}", kind.plural());
        let (status, value) = self.call(Method::DELETE, &path, None).await?;
        match status {
            s if s.is_success() => Ok(true),
            http::StatusCode::NOT_FOUND => Ok(false),
            _ => Err(Self::error(&value)),
        }
    }

    /// The daemon's `/v1/info`.
    pub async fn info(&self) -> anyhow::Result<Value> {
        let (status, value) = self.call(Method::GET, "/v1/info", None).await?;
        if !status.is_success() {
            return Err(Self::error(&value));
        }
        Ok(value)
    }
}
