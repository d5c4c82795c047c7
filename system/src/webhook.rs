//! Admission on a cluster: the defaulting (mutating) and validating webhooks the API server
//! calls for every write of a Service, Configuration or Route, whichever client sent it
//! (kubectl, kn, Argo CD, Flux, Go clients). Both call `sluice_api::admission`, the same
//! functions the CLI and the local daemon run, so every client gets Knative's defaults and
//! Knative's field errors.
//!
//! The webhooks serve HTTPS with a certificate the controller manages itself: a CA and a
//! serving certificate for the `sluice-webhook` Service, kept in the Secret
//! `sluice-webhook-certs` (so every replica serves the same one, and a restart keeps it),
//! renewed a month before it expires, and written into the webhook configurations'
//! `caBundle`. Every controller replica serves the webhooks, leader or not: the Service
//! publishes not-ready addresses, since admission needs no lease.
//!
//! The defaulting webhook answers with a JSON patch that only adds and replaces: fields
//! Sluice does not model are never removed, and defaulting a defaulted object yields an empty
//! patch (so a GitOps resync sees no diff).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration, WebhookClientConfig,
};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DynamicObject, ObjectMeta, PostParams};
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sluice_api::admission::{self, Platform};
use sluice_api::config::Configs;
use sluice_api::{Object, ObjectKind};
use sluice_runtime::accept::Acceptor;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

/// The MutatingWebhookConfiguration (and its one webhook) that defaults.
pub const DEFAULTING: &str = "defaulting.webhook.serving.sluice.dev";
/// The ValidatingWebhookConfiguration (and its one webhook) that validates.
pub const VALIDATION: &str = "validation.webhook.serving.sluice.dev";
/// The Secret holding the webhook's CA and serving certificate.
pub const SECRET: &str = "sluice-webhook-certs";
/// The Service the API server calls the webhooks through.
pub const SERVICE: &str = "sluice-webhook";

const CA_KEY: &str = "ca.crt";
const CERT_KEY: &str = "tls.crt";
const KEY_KEY: &str = "tls.key";
const EXPIRES: &str = "serving.sluice.dev/expires";
const HOSTS: &str = "serving.sluice.dev/hosts";
/// How long a certificate is valid, and how long before its end it is renewed.
const VALIDITY_DAYS: i64 = 365;
const RENEW_BEFORE_DAYS: i64 = 30;
/// How often the Secret and the webhook configurations are checked.
const RESYNC: Duration = Duration::from_secs(60);
/// Bounds on what a caller may hold: connections, handshake and head time, body size.
const CONNECTIONS: usize = 256;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// The API server sends objects of at most 3 MiB (etcd's limit), wrapped in a review with the
/// old object: twice that, and some.
const MAX_BODY: usize = 8 << 20;

/// Options of the admission webhooks.
#[derive(Clone, Debug, clap::Args)]
pub struct WebhookArgs {
    /// Where the admission webhooks listen (HTTPS); without it none are served.
    #[arg(long, env = "SLUICE_WEBHOOK_ADDRESS")]
    pub webhook_address: Option<SocketAddr>,
    /// More names the webhook certificate is valid for, comma-separated DNS names or IP
    /// addresses (the sluice-webhook Service's names are always in it).
    #[arg(long, env = "SLUICE_WEBHOOK_HOSTS", value_delimiter = ',')]
    pub webhook_hosts: Vec<String>,
}

/// A certificate as stored in the Secret.
#[derive(Clone, Debug, PartialEq)]
struct Certs {
    ca: String,
    cert: String,
    key: String,
    expires: jiff::Timestamp,
    hosts: String,
}

fn hosts(namespace: &str, extra: &[String]) -> Vec<String> {
    let mut all = vec![
        format!("{SERVICE}.{namespace}.svc"),
        format!("{SERVICE}.{namespace}.svc.cluster.local"),
        format!("{SERVICE}.{namespace}"),
    ];
    all.extend(extra.iter().filter(|h| !h.is_empty()).cloned());
    all
}

/// Makes `params` valid from the day of `from` to the day of `to` (UTC).
fn validity(
    params: &mut rcgen::CertificateParams,
    from: jiff::Timestamp,
    to: jiff::Timestamp,
) -> anyhow::Result<()> {
    let day = |t: jiff::Timestamp| -> anyhow::Result<(i32, u8, u8)> {
        let d = t.to_zoned(jiff::tz::TimeZone::UTC).date();
        Ok((
            i32::from(d.year()),
            u8::try_from(d.month())?,
            u8::try_from(d.day())?,
        ))
    };
    let (y, m, d) = day(from)?;
    params.not_before = rcgen::date_time_ymd(y, m, d);
    let (y, m, d) = day(to)?;
    params.not_after = rcgen::date_time_ymd(y, m, d);
    Ok(())
}

/// A new CA and a serving certificate for `hosts` signed by it.
fn generate(hosts: &[String], now: jiff::Timestamp) -> anyhow::Result<Certs> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    let from = now - jiff::SignedDuration::from_hours(24);
    let expires = now + jiff::SignedDuration::from_hours(24 * VALIDITY_DAYS);

    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.distinguished_name
        .push(DnType::CommonName, "sluice-webhook-ca");
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    validity(&mut ca, from, expires)?;
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);

    let key = KeyPair::generate()?;
    let mut leaf = CertificateParams::new(hosts.to_vec())?;
    leaf.distinguished_name.push(DnType::CommonName, &hosts[0]);
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    validity(&mut leaf, from, expires)?;
    let cert = leaf.signed_by(&key, &issuer)?;
    Ok(Certs {
        ca: ca_cert.pem(),
        cert: cert.pem(),
        key: key.serialize_pem(),
        expires,
        hosts: hosts.join(","),
    })
}

fn from_secret(secret: &Secret) -> Option<Certs> {
    let data = secret.data.as_ref()?;
    let text = |k: &str| String::from_utf8(data.get(k)?.0.clone()).ok();
    let annotations = secret.metadata.annotations.as_ref()?;
    Some(Certs {
        ca: text(CA_KEY)?,
        cert: text(CERT_KEY)?,
        key: text(KEY_KEY)?,
        expires: annotations.get(EXPIRES)?.parse().ok()?,
        hosts: annotations.get(HOSTS)?.clone(),
    })
}

fn to_secret(certs: &Certs, namespace: &str, resource_version: Option<String>) -> Secret {
    let bytes = |s: &str| ByteString(s.as_bytes().to_vec());
    Secret {
        metadata: ObjectMeta {
            name: Some(SECRET.into()),
            namespace: Some(namespace.into()),
            resource_version,
            labels: Some([("app.kubernetes.io/part-of".into(), "sluice".into())].into()),
            annotations: Some(
                [
                    (EXPIRES.into(), certs.expires.to_string()),
                    (HOSTS.into(), certs.hosts.clone()),
                ]
                .into(),
            ),
            ..ObjectMeta::default()
        },
        type_: Some("kubernetes.io/tls".into()),
        data: Some(
            [
                (CA_KEY.into(), bytes(&certs.ca)),
                (CERT_KEY.into(), bytes(&certs.cert)),
                (KEY_KEY.into(), bytes(&certs.key)),
            ]
            .into(),
        ),
        ..Secret::default()
    }
}

/// The certificate in the Secret, made (or renewed) first when it is missing, unreadable,
/// for other names, or within a month of its end. Replicas racing to make it settle on one:
/// a create or update that loses gets the winner's on the next read.
async fn certificates(
    secrets: &Api<Secret>,
    namespace: &str,
    hosts: &[String],
) -> anyhow::Result<Certs> {
    let joined = hosts.join(",");
    for _ in 0..5 {
        let now = jiff::Timestamp::now();
        let existing = secrets
            .get_opt(SECRET)
            .await
            .context("cannot read the webhook Secret")?;
        if let Some(certs) = existing.as_ref().and_then(from_secret)
            && certs.hosts == joined
            && certs.expires > now + jiff::SignedDuration::from_hours(24 * RENEW_BEFORE_DAYS)
        {
            return Ok(certs);
        }
        let certs = generate(hosts, now)?;
        let written = match existing {
            None => {
                secrets
                    .create(&PostParams::default(), &to_secret(&certs, namespace, None))
                    .await
            }
            Some(old) => {
                let rv = old.metadata.resource_version.clone();
                secrets
                    .replace(
                        SECRET,
                        &PostParams::default(),
                        &to_secret(&certs, namespace, rv),
                    )
                    .await
            }
        };
        match written {
            Ok(_) => {
                tracing::info!(expires = %certs.expires, "Webhook certificate written.");
                return Ok(certs);
            }
            Err(kube::Error::Api(e)) if e.code == 409 => continue,
            Err(e) => return Err(e).context("cannot write the webhook Secret"),
        }
    }
    anyhow::bail!("the webhook Secret kept changing under five attempts to write it")
}

fn tls_config(certs: &Certs) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let chain = CertificateDer::pem_slice_iter(certs.cert.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .context("webhook certificate")?;
    let key = PrivateKeyDer::from_pem_slice(certs.key.as_bytes()).context("webhook key")?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Writes `ca` into every webhook of both configurations, where it is not already. A missing
/// configuration is reported: without it the API server never calls the webhook.
async fn publish_ca(client: &kube::Client, ca: &str) {
    let bundle = ByteString(ca.as_bytes().to_vec());
    publish_to(
        Api::<MutatingWebhookConfiguration>::all(client.clone()),
        DEFAULTING,
        &bundle,
        |cfg| {
            cfg.webhooks
                .iter_mut()
                .flatten()
                .map(|h| &mut h.client_config)
                .collect()
        },
    )
    .await;
    publish_to(
        Api::<ValidatingWebhookConfiguration>::all(client.clone()),
        VALIDATION,
        &bundle,
        |cfg| {
            cfg.webhooks
                .iter_mut()
                .flatten()
                .map(|h| &mut h.client_config)
                .collect()
        },
    )
    .await;
}

/// Writes `bundle` into the client configs `hooks` finds in the webhook configuration
/// `name`, replacing it only when one differed.
async fn publish_to<K>(
    api: Api<K>,
    name: &str,
    bundle: &ByteString,
    hooks: impl for<'a> Fn(&'a mut K) -> Vec<&'a mut WebhookClientConfig>,
) where
    K: kube::Resource
        + Clone
        + k8s_openapi::serde::de::DeserializeOwned
        + k8s_openapi::serde::Serialize
        + std::fmt::Debug,
{
    match api.get_opt(name).await {
        Ok(Some(mut cfg)) => {
            let mut changed = false;
            for config in hooks(&mut cfg) {
                if config.ca_bundle.as_ref() != Some(bundle) {
                    config.ca_bundle = Some(bundle.clone());
                    changed = true;
                }
            }
            if changed && let Err(error) = api.replace(name, &PostParams::default(), &cfg).await {
                tracing::warn!(%error, "Cannot write the caBundle of {name}; retrying.");
            }
        }
        Ok(None) => tracing::warn!(
            "Webhook configuration {name} is missing: admission does not run (apply config/)."
        ),
        Err(error) => tracing::warn!(%error, "Cannot read {name}; retrying."),
    }
}

/// Which webhook a request is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Hook {
    Defaulting,
    Validation,
}

/// The JSON patch from `before` to `after` with only its additions and replacements (of
/// anything but status): defaulting adds, it never takes away what a client sent.
fn additions(before: &serde_json::Value, after: &serde_json::Value) -> json_patch::Patch {
    use json_patch::PatchOperation;
    let ops = json_patch::diff(before, after)
        .0
        .into_iter()
        .filter(|op| match op {
            PatchOperation::Add(a) => !a.path.as_str().starts_with("/status"),
            PatchOperation::Replace(r) => !r.path.as_str().starts_with("/status"),
            _ => false,
        })
        .collect();
    json_patch::Patch(ops)
}

/// The answer to one admission request.
fn decide(
    hook: Hook,
    req: &AdmissionRequest<DynamicObject>,
    configs: &Configs,
) -> AdmissionResponse {
    let resp = AdmissionResponse::from(req);
    if !matches!(req.operation, Operation::Create | Operation::Update) {
        return resp;
    }
    let Some(kind) = ObjectKind::parse(&req.kind.kind) else {
        return resp;
    };
    // Revisions are the controller's to write; users cannot apply them (the CLI says so).
    if kind == ObjectKind::Revision {
        return resp;
    }
    let Some(object) = &req.object else {
        return resp;
    };
    let read = |o: &DynamicObject| -> Result<(serde_json::Value, Object), String> {
        let mut raw = serde_json::to_value(o).map_err(|e| e.to_string())?;
        if let (Some(ns), Some(meta)) = (&req.namespace, raw.get_mut("metadata"))
            && meta.get("namespace").is_none()
        {
            meta["namespace"] = serde_json::Value::String(ns.clone());
        }
        let obj = Object::from_json(kind, raw.clone()).map_err(|e| e.to_string())?;
        Ok((raw, obj))
    };
    let (raw, obj) = match read(object) {
        Ok(read) => read,
        Err(e) => {
            return resp.deny(format!(
                "{kind} {}/{} cannot be read: {e}",
                req.namespace.as_deref().unwrap_or("default"),
                req.name
            ));
        }
    };
    let old = req
        .old_object
        .as_ref()
        .and_then(|o| read(o).ok())
        .map(|(_, o)| o);
    match hook {
        Hook::Defaulting => {
            let user = req.user_info.username.as_deref().unwrap_or("");
            let mut defaulted = obj;
            admission::default(&mut defaulted, old.as_ref(), &configs.defaults, user);
            let patch = additions(&raw, &defaulted.to_json());
            if patch.0.is_empty() {
                return resp;
            }
            match AdmissionResponse::from(req).with_patch(patch) {
                Ok(patched) => patched,
                Err(e) => resp.deny(format!("cannot write the defaults: {e}")),
            }
        }
        Hook::Validation => {
            match admission::validate_with(
                &obj,
                old.as_ref(),
                &configs.defaults,
                &configs.features.pod_spec,
                Platform::Kubernetes,
            ) {
                Ok(()) => resp,
                Err(invalid) => resp.deny(invalid.to_string()),
            }
        }
    }
}

fn json(status: StatusCode, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    resp
}

async fn handle(
    req: Request<Incoming>,
    configs: watch::Receiver<Arc<Configs>>,
) -> Response<Full<Bytes>> {
    let hook = match (req.method(), req.uri().path()) {
        (&Method::POST, "/defaulting") => Hook::Defaulting,
        (&Method::POST, "/validation") => Hook::Validation,
        _ => {
            return sluice_runtime::admin::text(
                StatusCode::NOT_FOUND,
                "admission webhooks: POST /defaulting or /validation\n",
            );
        }
    };
    let body = match tokio::time::timeout(
        READ_TIMEOUT,
        Limited::new(req.into_body(), MAX_BODY).collect(),
    )
    .await
    {
        Ok(Ok(body)) => body.to_bytes(),
        Ok(Err(e)) => {
            return sluice_runtime::admin::text(
                StatusCode::BAD_REQUEST,
                format!("cannot read the body: {e}\n"),
            );
        }
        Err(_) => {
            return sluice_runtime::admin::text(
                StatusCode::REQUEST_TIMEOUT,
                "the body took too long\n",
            );
        }
    };
    let review: AdmissionReview<DynamicObject> = match serde_json::from_slice(&body) {
        Ok(review) => review,
        Err(e) => {
            return sluice_runtime::admin::text(
                StatusCode::BAD_REQUEST,
                format!("not an AdmissionReview: {e}\n"),
            );
        }
    };
    let request: AdmissionRequest<DynamicObject> = match review.try_into() {
        Ok(request) => request,
        Err(e) => {
            return sluice_runtime::admin::text(
                StatusCode::BAD_REQUEST,
                format!("not an AdmissionReview request: {e}\n"),
            );
        }
    };
    let configs = configs.borrow().clone();
    let answer = decide(hook, &request, &configs);
    if !answer.allowed {
        tracing::info!(kind = %request.kind.kind, name = %request.name, message = %answer.result.message, "Admission refused.");
    }
    match serde_json::to_vec(&answer.into_review()) {
        Ok(body) => json(StatusCode::OK, body),
        Err(e) => sluice_runtime::admin::text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
    }
}

async fn serve(
    listener: TcpListener,
    tls: Arc<ArcSwap<rustls::ServerConfig>>,
    configs: watch::Receiver<Arc<Configs>>,
) {
    let mut acceptor = Acceptor::new(listener, CONNECTIONS, "admission webhooks");
    loop {
        let (io, _, place) = acceptor.accept().await;
        let tls = TlsAcceptor::from(tls.load_full());
        let configs = configs.clone();
        tokio::spawn(async move {
            let Ok(Ok(stream)) = tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(io)).await
            else {
                return;
            };
            let svc = service_fn(move |req| {
                let configs = configs.clone();
                async move { Ok::<_, std::convert::Infallible>(handle(req, configs).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), svc)
                .await;
            drop(place);
        });
    }
}

/// Makes or loads the certificate, publishes its CA, and serves the webhooks on
/// `args.webhook_address` (nothing when it is unset); then keeps the certificate and the
/// configurations' `caBundle` current. Returns once the webhooks are listening.
pub async fn start(
    client: kube::Client,
    namespace: &str,
    args: &WebhookArgs,
    configs: watch::Receiver<Arc<Configs>>,
) -> anyhow::Result<()> {
    let Some(address) = args.webhook_address else {
        return Ok(());
    };
    let hosts = hosts(namespace, &args.webhook_hosts);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let mut certs = certificates(&secrets, namespace, &hosts).await?;
    let tls = Arc::new(ArcSwap::new(tls_config(&certs)?));
    let listener = TcpListener::bind(address)
        .await
        .with_context(|| format!("cannot listen on {address} for the admission webhooks"))?;
    tokio::spawn(serve(listener, tls.clone(), configs));
    publish_ca(&client, &certs.ca).await;
    tracing::info!(%address, "Admission webhooks serving.");
    let namespace = namespace.to_owned();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(RESYNC).await;
            match certificates(&secrets, &namespace, &hosts).await {
                Ok(next) if next != certs => match tls_config(&next) {
                    Ok(config) => {
                        tls.store(config);
                        certs = next;
                        tracing::info!(expires = %certs.expires, "Webhook certificate reloaded.");
                    }
                    Err(error) => {
                        tracing::error!(%error, "The webhook Secret holds an unusable certificate; keeping the current one.")
                    }
                },
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(%error, "Cannot check the webhook certificate; retrying.")
                }
            }
            publish_ca(&client, &certs.ca).await;
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn configs() -> Configs {
        Configs::parse(|_| Default::default(), "svc.cluster.local").unwrap()
    }

    fn review(
        op: &str,
        object: serde_json::Value,
        old: Option<serde_json::Value>,
    ) -> AdmissionRequest<DynamicObject> {
        let kind = object["kind"].as_str().unwrap().to_owned();
        let text = json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "7b0e3c2a",
                "kind": {"group": "serving.knative.dev", "version": "v1", "kind": kind},
                "resource": {"group": "serving.knative.dev", "version": "v1", "resource": "services"},
                "name": object["metadata"]["name"],
                "namespace": "team-a",
                "operation": op,
                "userInfo": {"username": "alice@example.com"},
                "object": object,
                "oldObject": old,
                "dryRun": false
            }
        });
        let review: AdmissionReview<DynamicObject> = serde_json::from_value(text).unwrap();
        review.try_into().unwrap()
    }

    /// What a Go client (kn, the conformance tests) sends: an empty container name, a null
    /// creation timestamp, no traffic, and a field Sluice does not model.
    fn go_client_service() -> serde_json::Value {
        json!({
            "apiVersion": "serving.knative.dev/v1",
            "kind": "Service",
            "metadata": {"name": "hello", "creationTimestamp": null},
            "spec": {"template": {
                "metadata": {"creationTimestamp": null},
                "spec": {"containers": [{"name": "", "image": "kind.local/helloworld:e2e", "resources": {}, "futureField": 1}]}
            }},
            "status": {}
        })
    }

    fn patched(raw: &serde_json::Value, resp: &AdmissionResponse) -> serde_json::Value {
        let mut out = raw.clone();
        if let Some(bytes) = &resp.patch {
            let patch: json_patch::Patch = serde_json::from_slice(bytes).unwrap();
            json_patch::patch(&mut out, &patch).unwrap();
        }
        out
    }

    #[test]
    fn defaulting_gives_a_go_clients_service_knatives_defaults_and_removes_nothing() {
        let raw = go_client_service();
        let resp = decide(
            Hook::Defaulting,
            &review("CREATE", raw.clone(), None),
            &configs(),
        );
        assert!(resp.allowed, "{}", resp.result.message);
        let out = patched(&raw, &resp);
        let c = &out["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["name"], "user-container");
        assert_eq!(c["futureField"], 1, "fields Sluice does not model are kept");
        assert_eq!(c["resources"], json!({}));
        assert_eq!(
            out["spec"]["traffic"],
            json!([{"latestRevision": true, "percent": 100}])
        );
        assert_eq!(out["spec"]["template"]["spec"]["timeoutSeconds"], 300);
        let a = &out["metadata"]["annotations"];
        assert_eq!(a["serving.knative.dev/creator"], "alice@example.com");
        assert_eq!(a["serving.knative.dev/lastModifier"], "alice@example.com");
        assert_ne!(
            out["metadata"]["namespace"], "default",
            "the request's namespace is the one"
        );

        // Defaulting what was defaulted: no patch at all (a GitOps resync sees no diff).
        let again = decide(
            Hook::Defaulting,
            &review("UPDATE", out.clone(), Some(out.clone())),
            &configs(),
        );
        assert!(again.allowed);
        assert_eq!(again.patch, None, "a defaulted object needs no patch");
    }

    #[test]
    fn validation_refuses_with_knatives_field_errors() {
        let mut raw = go_client_service();
        raw["spec"]["template"]["spec"]["containerConcurrency"] = json!(5000);
        raw["spec"]["traffic"] = json!([{"latestRevision": true, "percent": 60}]);
        let resp = decide(Hook::Validation, &review("CREATE", raw, None), &configs());
        assert!(!resp.allowed);
        let message = &resp.result.message;
        assert!(
            message.contains("spec.template.spec.containerConcurrency"),
            "{message}"
        );
        assert!(message.contains("spec.traffic"), "{message}");
    }

    #[test]
    fn an_unreadable_object_is_refused_naming_what_is_wrong() {
        let mut raw = go_client_service();
        raw["spec"]["template"]["spec"]["containerConcurrency"] = json!("lots");
        for hook in [Hook::Defaulting, Hook::Validation] {
            let resp = decide(hook, &review("CREATE", raw.clone(), None), &configs());
            assert!(!resp.allowed);
            assert!(
                resp.result
                    .message
                    .contains("Service team-a/hello cannot be read"),
                "{}",
                resp.result.message
            );
        }
    }

    #[test]
    fn a_resync_by_another_user_keeps_the_last_modifier() {
        let raw = go_client_service();
        let created = patched(
            &raw,
            &decide(
                Hook::Defaulting,
                &review("CREATE", raw.clone(), None),
                &configs(),
            ),
        );
        let mut update = review("UPDATE", created.clone(), Some(created.clone()));
        update.user_info.username =
            Some("system:serviceaccount:argocd:argocd-application-controller".into());
        let out = patched(&created, &decide(Hook::Defaulting, &update, &configs()));
        assert_eq!(
            out["metadata"]["annotations"]["serving.knative.dev/lastModifier"],
            "alice@example.com"
        );
    }

    #[tokio::test]
    async fn the_webhook_serves_tls_a_client_trusting_the_ca_accepts() {
        let certs = generate(
            &hosts("sluice-system", &["127.0.0.1".into()]),
            jiff::Timestamp::now(),
        )
        .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (_tx, rx) = watch::channel(Arc::new(configs()));
        tokio::spawn(serve(
            listener,
            Arc::new(ArcSwap::new(tls_config(&certs).unwrap())),
            rx,
        ));

        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(certs.ca.as_bytes()) {
            roots.add(cert.unwrap()).unwrap();
        }
        let client = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let mut tls = connector.connect(name, tcp).await.unwrap();
        let body = serde_json::to_vec(&json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": "1", "kind": {"group": "serving.knative.dev", "version": "v1", "kind": "Service"},
                "resource": {"group": "serving.knative.dev", "version": "v1", "resource": "services"},
                "name": "hello", "namespace": "default", "operation": "CREATE", "userInfo": {"username": "bob"},
                "object": go_client_service()}
        })).unwrap();
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let head = format!(
            "POST /defaulting HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        );
        tls.write_all(head.as_bytes()).await.unwrap();
        tls.write_all(&body).await.unwrap();
        let mut answer = Vec::new();
        let _ = tls.read_to_end(&mut answer).await;
        let text = String::from_utf8_lossy(&answer);
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        assert!(text.contains("\"patchType\":\"JSONPatch\""), "{text}");
        assert!(text.contains("\"uid\":\"1\""), "{text}");
    }

    #[test]
    fn certificates_round_trip_through_the_secret() {
        let certs = generate(&hosts("sluice-system", &[]), jiff::Timestamp::now()).unwrap();
        let secret = to_secret(&certs, "sluice-system", None);
        assert_eq!(from_secret(&secret), Some(certs.clone()));
        assert!(certs.hosts.starts_with("sluice-webhook.sluice-system.svc,"));
        tls_config(&certs).unwrap();
    }
}
