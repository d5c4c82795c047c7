//! The revision template (`spec.template`) and the container shape Sluice runs.
//!
//! Knative inlines a Kubernetes PodSpec here. Sluice keeps every field Knative's API has, core
//! and behind config-features flags, with Knative's names and Kubernetes' own types for the
//! sub-objects (volume mounts, security contexts, resources); validation refuses what Knative
//! refuses, naming the flag to enable. Only the fields Knative itself drops (a container's
//! `lifecycle`, `stdin`, `tty`, `volumeDevices`, ...) are pruned on the way in, as a Kubernetes
//! API server prunes fields outside a structural schema.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    ContainerPort, EnvFromSource, EnvVar, ResourceRequirements, SecurityContext, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::revision::RevisionSpec;

/// `spec.template` of a Service or Configuration: the metadata and spec of the next revision.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RevisionTemplateSpec {
    /// Name (BYO revision name), labels and annotations of the revision to stamp.
    #[serde(default, skip_serializing_if = "TemplateMeta::is_empty")]
    pub metadata: TemplateMeta,
    /// The revision spec.
    #[serde(default)]
    pub spec: RevisionSpec,
}

/// The metadata a template may carry.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TemplateMeta {
    /// A bring-your-own revision name; must start with `<parent>-`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Labels copied onto the revision.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Annotations copied onto the revision (autoscaling knobs live here).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl TemplateMeta {
    /// Whether nothing is set (so it is left out of the output).
    pub fn is_empty(&self) -> bool {
        self.name.is_none() && self.labels.is_empty() && self.annotations.is_empty()
    }
}

/// A container of a revision (`containers[]`, and `initContainers[]`). The serving container
/// is the one with a port (or the only one); the others are sidecars. On the local platform
/// `command` is what runs.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Container {
    /// Defaulted to `user-container` (config-defaults `container-name-template`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The image (required on Kubernetes; informational on the local platform).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// The program and its leading arguments (required on the local platform).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// Further arguments.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Environment variables.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    /// Environment from config maps and secrets (Kubernetes only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env_from: Vec<EnvFromSource>,
    /// The working directory of the process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// At most one port, on the serving container only: the one the process serves on
    /// (`$PORT`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<ContainerPort>,
    /// Readiness probe: the serving container's HTTP and TCP probes are run by the
    /// queue-proxy; exec and gRPC probes, and sidecars' probes, by the kubelet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness_probe: Option<Probe>,
    /// Liveness probe (Kubernetes only); port 0 or absent means the serving port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub liveness_probe: Option<Probe>,
    /// Startup probe (Kubernetes only); port 0 or absent means the serving port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub startup_probe: Option<Probe>,
    /// CPU and memory requests and limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Security context.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_context: Option<SecurityContext>,
    /// Volume mounts (Kubernetes only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volume_mounts: Vec<VolumeMount>,
    /// Image pull policy (Kubernetes only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<String>,
    /// Where the container writes its termination message (Kubernetes only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub termination_message_path: Option<String>,
    /// `File` or `FallbackToLogsOnError` (Knative's default on the pod).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub termination_message_policy: Option<String>,
}

/// A probe as Knative accepts it (`tcpSocket: {}` means the serving port).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Probe {
    /// HTTP GET probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_get: Option<HttpGetAction>,
    /// TCP connect probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_socket: Option<TcpSocketAction>,
    /// Command probe (Kubernetes: run in the container; local: treated as TCP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<ExecAction>,
    /// gRPC health-check probe (Kubernetes: run by the kubelet; local: treated as TCP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc: Option<GrpcAction>,
    /// Seconds before the first probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_delay_seconds: Option<i32>,
    /// 0 means Knative's aggressive probing (every 50 ms until ready).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period_seconds: Option<i32>,
    /// Timeout of one attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<i32>,
    /// Consecutive successes needed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_threshold: Option<i32>,
    /// Consecutive failures tolerated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_threshold: Option<i32>,
    /// Grace period of a pod killed by a failing liveness or startup probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub termination_grace_period_seconds: Option<i64>,
}

impl Probe {
    /// The handlers set, by field name (exactly one is valid).
    pub fn handlers(&self) -> Vec<&'static str> {
        [
            ("httpGet", self.http_get.is_some()),
            ("tcpSocket", self.tcp_socket.is_some()),
            ("exec", self.exec.is_some()),
            ("grpc", self.grpc.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, set)| set.then_some(name))
        .collect()
    }
}

/// HTTP GET probe action.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpGetAction {
    /// Path to request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Port, by number or name; 0 or absent means the serving port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<IntOrString>,
    /// Host to connect to (the pod's IP when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// `HTTP` (default) or `HTTPS`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    /// Extra request headers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http_headers: Vec<HttpHeader>,
}

/// A header sent by an HTTP probe.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct HttpHeader {
    /// Header name.
    pub name: String,
    /// Header value.
    pub value: String,
}

/// TCP probe action.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TcpSocketAction {
    /// Port, by number or name; 0 or absent means the serving port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<IntOrString>,
    /// Host to connect to (the pod's IP when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

/// gRPC probe action (the gRPC health-checking protocol).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct GrpcAction {
    /// Port; 0 or absent means the serving port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,
    /// The service name sent in the health check request (Knative defaults it to "").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
}

/// Exec probe action.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ExecAction {
    /// The command to run.
    #[serde(default)]
    pub command: Vec<String>,
}

/// Knative's default user port when a container declares none.
pub const DEFAULT_USER_PORT: u16 = 8080;

impl Container {
    /// The port the process serves on: `ports[0].containerPort`, else 8080.
    pub fn user_port(&self) -> u16 {
        self.ports
            .first()
            .and_then(|p| u16::try_from(p.container_port).ok())
            .filter(|p| *p != 0)
            .unwrap_or(DEFAULT_USER_PORT)
    }

    /// The protocol the process serves on its port (`h2c` when the port is named so).
    pub fn user_protocol(&self) -> crate::contract::UserProtocol {
        crate::contract::UserProtocol::of_port(self.ports.first().and_then(|p| p.name.as_deref()))
    }

    /// The value of an environment variable given literally.
    pub fn env_value(&self, name: &str) -> Option<&str> {
        self.env
            .iter()
            .find(|e| e.name == name)
            .and_then(|e| e.value.as_deref())
    }
}

/// Expands `$(NAME)` references in a container's `command` and `args` as the kubelet does:
/// `$(NAME)` becomes the value of the environment variable `NAME` when `lookup` knows it and
/// stays as written otherwise; `$$` is a literal `$` (so `$$(NAME)` stays `$(NAME)`). This is
/// how a manifest passes the port Knative gives the container (`args: ["--port=$(PORT)"]`).
pub fn expand_env_refs(text: &str, lookup: impl Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('(')
            && let Some(end) = inner.find(')')
            && let Some(value) = lookup(&inner[..end])
        {
            out.push_str(&value);
            rest = &inner[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod expand_tests {
    use super::expand_env_refs;

    fn expand(text: &str) -> String {
        expand_env_refs(text, |name| match name {
            "PORT" => Some("38745".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        })
    }

    #[test]
    fn references_expand_as_the_kubelet_expands_them() {
        assert_eq!(expand("--port=$(PORT)"), "--port=38745");
        assert_eq!(expand("$(PORT)$(PORT)"), "3874538745");
        assert_eq!(expand("a$(EMPTY)b"), "ab");
        // Unknown names, escapes and unfinished references stay as written.
        assert_eq!(expand("$(NOPE)"), "$(NOPE)");
        assert_eq!(expand("$$(PORT)"), "$(PORT)");
        assert_eq!(expand("$$$(PORT)"), "$38745");
        assert_eq!(expand("cost: $5 $(PORT"), "cost: $5 $(PORT");
        assert_eq!(expand("$"), "$");
        assert_eq!(expand("$PORT ${PORT}"), "$PORT ${PORT}");
    }
}
