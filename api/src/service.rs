//! Service: a Configuration and a Route under one name, the object users write.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::condition::Condition;
use crate::configuration::ConfigurationStatusFields;
use crate::route::{RouteStatusFields, TrafficTarget};
use crate::template::RevisionTemplateSpec;

/// The desired state of a service: a template and a traffic block.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "serving.knative.dev",
    version = "v1",
    kind = "Service",
    namespaced,
    status = "ServiceStatus",
    shortname = "kservice",
    shortname = "ksvc",
    category = "all",
    category = "knative",
    category = "serving",
    derive = "PartialEq",
    printcolumn = r#"{"name":"URL","type":"string","jsonPath":".status.url"}"#,
    printcolumn = r#"{"name":"LatestCreated","type":"string","jsonPath":".status.latestCreatedRevisionName"}"#,
    printcolumn = r#"{"name":"LatestReady","type":"string","jsonPath":".status.latestReadyRevisionName"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type=='Ready')].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type=='Ready')].reason"}"#
)]
pub struct ServiceSpec {
    /// The template of the next revision.
    #[serde(default)]
    pub template: RevisionTemplateSpec,
    /// The traffic targets; defaults to 100% on the latest ready revision.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub traffic: Vec<TrafficTarget>,
}

/// The observed state of a service: its own conditions plus its children's status fields.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceStatus {
    /// The generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready, ConfigurationsReady, RoutesReady.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// From the Configuration.
    #[serde(flatten)]
    pub configuration: ConfigurationStatusFields,
    /// From the Route.
    #[serde(flatten)]
    pub route: RouteStatusFields,
}

impl Service {
    /// Whether the Ready condition is True.
    pub fn is_ready(&self) -> bool {
        self.status
            .as_ref()
            .is_some_and(|s| crate::condition::is_ready(&s.conditions))
    }
}
