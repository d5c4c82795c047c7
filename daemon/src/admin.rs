//! The admin API on the daemon's Unix socket: objects in and out as JSON, admission on every
//! write, the routing snapshot stream the activator follows, and the activator's reports to
//! the autoscaler.
//!
//! ```text
//! GET    /v1/info                          domain, HTTP port, home
//! GET    /v1/objects/{kind}[?namespace=ns] list
//! GET    /v1/objects/{kind}/{ns}/{name}    get
//! POST   /v1/apply[?dryRun=true]           create or replace (body: object)
//! POST   /v1/create                        create only (body: object)
//! DELETE /v1/objects/{kind}/{ns}/{name}    delete (children follow)
//! GET    /v1/routing/watch                 JSON lines: the snapshot, then what changed
//! POST   /v1/stats                         the activator's per-revision reports
//! ```

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use serde_json::{Value, json};
use sluice_api::config::Configs;
use sluice_api::{Object, ObjectKind};
use sluice_controller::Autoscaler;
use sluice_platform::routing::RoutingFeed;
use sluice_platform::{ActivatorStat, Store, StoreError};
use sluice_platform_local::SqliteStore;
use tokio::sync::{mpsc, watch};

use sluice_platform::admission::{Platform, WriteError, Writer, write};

/// Response body of the admin API.
pub type Body = BoxBody<Bytes, Infallible>;

/// What the admin API serves from.
pub struct Admin {
    /// The object store.
    pub store: Arc<SqliteStore>,
    /// Current operator settings.
    pub settings: watch::Receiver<Arc<Configs>>,
    /// Current routing and its changes.
    pub routing: Arc<RoutingFeed>,
    /// Revisions' autoscalers, fed by the activator's reports.
    pub autoscaler: Arc<Autoscaler>,
    /// Who writes (for creator / lastModifier).
    pub user: String,
    /// `/v1/info` contents.
    pub info: Value,
}

/// An API failure with its HTTP status.
struct ApiError {
    status: StatusCode,
    body: Value,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            body: json!({ "message": message.into() }),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        // `reason` as in a Kubernetes Status, so clients tell a stale write from a taken name.
        let (status, reason) = match e {
            StoreError::NotFound { .. } => (StatusCode::NOT_FOUND, "NotFound"),
            StoreError::AlreadyExists { .. } => (StatusCode::CONFLICT, "AlreadyExists"),
            StoreError::Conflict { .. } => (StatusCode::CONFLICT, "Conflict"),
            StoreError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "StorageUnavailable"),
            StoreError::Backend(_) => (StatusCode::INTERNAL_SERVER_ERROR, "InternalError"),
        };
        Self {
            status,
            body: json!({ "message": e.to_string(), "reason": reason }),
        }
    }
}

fn json_response(status: StatusCode, value: &Value) -> Response<Body> {
    json_bytes_response(status, Bytes::from(value.to_string()))
}

/// A response whose body is JSON already.
fn json_bytes_response(status: StatusCode, json: Bytes) -> Response<Body> {
    let mut resp = Response::new(Full::new(json).boxed());
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    resp
}

struct ChannelBody(mpsc::Receiver<Bytes>);

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|b| Ok(Frame::data(b))))
    }
}

impl Admin {
    /// Serves one request.
    pub async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
    ) -> Result<Response<Body>, Infallible> {
        let result = self.route(req).await;
        Ok(result.unwrap_or_else(|e| json_response(e.status, &e.body)))
    }

    async fn route(&self, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
        let path: Vec<String> = req
            .uri()
            .path()
            .trim_matches('/')
            .split('/')
            .map(str::to_owned)
            .collect();
        let query = req.uri().query().unwrap_or("").to_owned();
        let parts: Vec<&str> = path.iter().map(String::as_str).collect();
        match (req.method().clone(), parts.as_slice()) {
            (Method::GET, ["v1", "info"]) => Ok(json_response(StatusCode::OK, &self.info)),
            (Method::GET, ["v1", "routing", "watch"]) => Ok(self.routing_stream()),
            (Method::GET, ["v1", "objects", kind]) => {
                let kind = parse_kind(kind)?;
                let ns = query
                    .split('&')
                    .find_map(|kv| kv.strip_prefix("namespace="))
                    .filter(|n| !n.is_empty());
                // The stored JSON as it is: decoding and encoding 10,000 Services again took
                // most of the answer's time.
                let bodies = self.store.list_json(kind, ns).await?;
                let mut list =
                    Vec::with_capacity(bodies.iter().map(|b| b.len() + 1).sum::<usize>() + 16);
                list.extend_from_slice(b"{\"items\":[");
                for (i, body) in bodies.iter().enumerate() {
                    if i > 0 {
                        list.push(b',');
                    }
                    list.extend_from_slice(body.as_bytes());
                }
                list.extend_from_slice(b"]}");
                Ok(json_bytes_response(StatusCode::OK, Bytes::from(list)))
            }
            (Method::GET, ["v1", "objects", kind, ns, name]) => {
                let kind = parse_kind(kind)?;
                let obj = self.store.get(kind, ns, name).await?.ok_or_else(|| {
                    ApiError::new(
                        StatusCode::NOT_FOUND,
                        format!(
                            "{} '{name}' not found in namespace '{ns}'",
                            kind.as_str().to_lowercase()
                        ),
                    )
                })?;
                Ok(json_response(StatusCode::OK, &obj.to_json()))
            }
            (Method::DELETE, ["v1", "objects", kind, ns, name]) => {
                let kind = parse_kind(kind)?;
                if self.store.delete(kind, ns, name).await? {
                    Ok(json_response(StatusCode::OK, &json!({ "deleted": true })))
                } else {
                    Err(ApiError::new(
                        StatusCode::NOT_FOUND,
                        format!(
                            "{} '{name}' not found in namespace '{ns}'",
                            kind.as_str().to_lowercase()
                        ),
                    ))
                }
            }
            (Method::POST, ["v1", op @ ("apply" | "create")]) => {
                let create_only = *op == "create";
                let dry_run = query.split('&').any(|kv| kv == "dryRun=true");
                let value: Value = json_body(req, "JSON").await?;
                self.write(value, create_only, dry_run).await
            }
            (Method::POST, ["v1", "stats"]) => {
                let stats: Vec<ActivatorStat> = json_body(req, "activator stats").await?;
                for stat in &stats {
                    self.autoscaler.report(stat);
                }
                Ok(json_response(StatusCode::OK, &json!({})))
            }
            _ => Err(ApiError::new(StatusCode::NOT_FOUND, "no such endpoint")),
        }
    }

    async fn write(
        &self,
        value: Value,
        create_only: bool,
        dry_run: bool,
    ) -> Result<Response<Body>, ApiError> {
        let kind_text = value
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let kind = ObjectKind::parse(kind_text).ok_or_else(|| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("kind: unknown kind {kind_text:?}"),
            )
        })?;
        let obj = Object::from_json(kind, value)
            .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()))?;
        let settings = self.settings.borrow().clone();
        let written = write(
            &*self.store,
            obj,
            create_only,
            dry_run,
            Writer {
                defaults: &settings.defaults,
                features: &settings.features.pod_spec,
                user: &self.user,
                platform: Platform::Local,
            },
        )
        .await;
        match written {
            Ok((action, stored)) => Ok(json_response(
                StatusCode::OK,
                &json!({ "action": action, "object": stored.to_json() }),
            )),
            Err(WriteError::Exists(message)) => Err(ApiError {
                status: StatusCode::CONFLICT,
                body: json!({ "message": message, "reason": "AlreadyExists" }),
            }),
            Err(WriteError::Store(e)) => Err(e.into()),
            Err(WriteError::Invalid(e)) => Err(ApiError {
                status: StatusCode::UNPROCESSABLE_ENTITY,
                body: json!({
                    "message": e.to_string(),
                    "errors": e.errors.iter().map(|f| json!({"field": f.path, "message": f.message})).collect::<Vec<_>>(),
                }),
            }),
        }
    }

    /// The whole snapshot once the controller's first full pass published it (an activator
    /// serving from the empty placeholder would refuse every host), then one line per change
    /// with only what changed; the whole snapshot again if this reader fell behind.
    fn routing_stream(&self) -> Response<Body> {
        let (tx, rx) = mpsc::channel::<Bytes>(4);
        let routing = self.routing.clone();
        tokio::spawn(async move {
            let mut versions = routing.subscribe();
            let mut seen = 0;
            loop {
                versions.borrow_and_update();
                if let Some((version, update)) = routing.update_since(seen) {
                    let mut line = serde_json::to_vec(&update).expect("routing updates serialize");
                    line.push(b'\n');
                    if tx.send(Bytes::from(line)).await.is_err() {
                        return;
                    }
                    seen = version;
                }
                if versions.changed().await.is_err() {
                    return;
                }
            }
        });
        let mut resp = Response::new(ChannelBody(rx).boxed());
        resp.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/x-ndjson"),
        );
        resp
    }
}

/// The request body as `T`; a 400 naming `what` was expected otherwise.
async fn json_body<T: serde::de::DeserializeOwned>(
    req: Request<Incoming>,
    what: &str,
) -> Result<T, ApiError> {
    let body = req
        .into_body()
        .collect()
        .await
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.to_string()))?
        .to_bytes();
    serde_json::from_slice(&body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("body is not {what}: {e}")))
}

fn parse_kind(text: &str) -> Result<ObjectKind, ApiError> {
    ObjectKind::parse(text)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("unknown kind {text:?}")))
}
