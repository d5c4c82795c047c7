//! Revision: an immutable snapshot of a Configuration's template.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::condition::Condition;
use crate::template::Container;

/// The spec of a revision, as written in `spec.template.spec`.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "serving.knative.dev",
    version = "v1",
    kind = "Revision",
    namespaced,
    status = "RevisionStatus",
    shortname = "rev",
    category = "all",
    category = "knative",
    category = "serving",
    derive = "PartialEq",
    printcolumn = r#"{"name":"Config Name","type":"string","jsonPath":".metadata.labels['serving\\.knative\\.dev/configuration']"}"#,
    printcolumn = r#"{"name":"Generation","type":"string","jsonPath":".metadata.labels['serving\\.knative\\.dev/configurationGeneration']"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type=='Ready')].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type=='Ready')].reason"}"#,
    printcolumn = r#"{"name":"Actual Replicas","type":"integer","jsonPath":".status.actualReplicas"}"#,
    printcolumn = r#"{"name":"Desired Replicas","type":"integer","jsonPath":".status.desiredReplicas"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct RevisionSpec {
    /// The containers; exactly one of them serves (Sluice runs one).
    #[serde(default)]
    pub containers: Vec<Container>,
    /// Hard limit of in-flight requests per replica; 0 means no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_concurrency: Option<i64>,
    /// Maximum duration of a request, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<i64>,
    /// Maximum time until the first response byte, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_start_timeout_seconds: Option<i64>,
    /// Maximum time between response bytes, in seconds; 0 means infinite.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout_seconds: Option<i64>,
    /// The service account (Kubernetes only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    /// Whether Kubernetes service links are injected (Knative defaults it to false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_service_links: Option<bool>,
}

/// The observed state of a revision.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RevisionStatus {
    /// The generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready, ResourcesAvailable, ContainerHealthy, Active.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Where the revision's logs are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_url: Option<String>,
    /// Replicas ready now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actual_replicas: Option<i32>,
    /// Replicas wanted now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired_replicas: Option<i32>,
}

impl RevisionSpec {
    /// The serving container (the one with a port, else the first).
    pub fn serving_container(&self) -> Option<&Container> {
        self.containers
            .iter()
            .find(|c| !c.ports.is_empty())
            .or_else(|| self.containers.first())
    }

    /// `containerConcurrency`, 0 when unset.
    pub fn concurrency(&self) -> u32 {
        self.container_concurrency
            .and_then(|c| u32::try_from(c).ok())
            .unwrap_or(0)
    }
}

impl Revision {
    /// The `serving.knative.dev/configurationGeneration` label as a number.
    pub fn configuration_generation(&self) -> Option<i64> {
        self.metadata
            .labels
            .as_ref()?
            .get(crate::keys::CONFIGURATION_GENERATION)?
            .parse()
            .ok()
    }

    /// Whether the Ready condition is True.
    pub fn is_ready(&self) -> bool {
        self.status
            .as_ref()
            .is_some_and(|s| crate::condition::is_ready(&s.conditions))
    }

    /// The Ready condition, if computed.
    pub fn ready_condition(&self) -> Option<&Condition> {
        crate::condition::find(&self.status.as_ref()?.conditions, "Ready")
    }
}
